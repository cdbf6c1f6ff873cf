#!/usr/bin/env python3
"""A backend in Python that drives sessiond's service API (standard library only).

The browser holds sessiond's cookie; this backend receives it (from its own request)
and uses the service API to find the session, log the user in, keep a cart in the
session's storage and hand out a one-time token for a payment callback.

    python3 examples/python/backend.py http://127.0.0.1:8044 "$SESSIOND_API_KEY" ann

It creates a browser-like guest first (GET /api/session), then prints each step as one
JSON line. Exit status 0 when every step answered as documented.
"""

import json
import sys
import urllib.error
import urllib.request


class ServiceApi:
    """`/service/v1` with the API key; every error is `{"error", "message"}`."""

    def __init__(self, base, api_key):
        self.base = base.rstrip("/")
        self.api_key = api_key

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + "/service/v1" + path, data=data, method=method)
        req.add_header("Authorization", "Bearer " + self.api_key)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)


def browser_cookie(base):
    """What a browser gets on its first request: the session cookie's value."""
    with urllib.request.urlopen(base.rstrip("/") + "/api/session", timeout=10) as resp:
        set_cookie = resp.headers["Set-Cookie"]
    name_value = set_cookie.split(";", 1)[0]
    return name_value.split("=", 1)[1]


def step(name, status, answer, ok):
    print(json.dumps({"step": name, "status": status, "answer": answer}))
    if not ok:
        sys.exit(f"{name}: unexpected answer {status} {answer}")


def main():
    base, api_key, user = sys.argv[1], sys.argv[2], sys.argv[3]
    api = ServiceApi(base, api_key)
    cookie = browser_cookie(base)

    # The browser's cookie, sent in a body (never in a URL): which session is it?
    status, session = api.call("POST", "/sessions/resolve", {"cookie": cookie})
    step("resolve", status, session, status == 200 and session["isGuest"])
    sid = session["id"]

    # The backend checked the user's password itself: give the session its rights.
    # A raise ends every other cookie of the session and returns the fresh one,
    # which the backend hands to the browser.
    status, granted = api.call("PUT", f"/sessions/{sid}/privileges",
                               {"privileges": ["WebAdmin"], "userName": user})
    step("login", status, granted,
         status == 200 and granted["userName"] == user and granted["cookie"] is not None)

    # A cart in the session's storage: a merge patch, then an atomic increment.
    status, stored = api.call("PATCH", f"/sessions/{sid}/storage", {"cart": {"items": 1}})
    step("cart", status, stored, status == 200)
    status, counted = api.call("POST", f"/sessions/{sid}/storage/increment",
                               {"path": "cart.items", "by": 2})
    step("add", status, counted, status == 200 and counted["value"] == 3)

    # A write that expects a version that moved on is refused (optimistic locking).
    stale = str(stored["version"])
    status, refused = api.call("PATCH", f"/sessions/{sid}/storage", {"cart": None},
                               headers={"If-Match": stale})
    step("stale write", status, refused, status == 409 and refused["error"] == "version_mismatch")

    # A one-time token for a payment provider's callback URL.
    status, otp = api.call("POST", f"/sessions/{sid}/otp", {"lifespan": 600})
    step("otp", status, otp, status == 200 and len(otp["token"]) > 0)

    status, info = api.call("GET", f"/sessions/{sid}/storage")
    step("storage", status, info, status == 200 and info["storage"]["cart"]["items"] == 3)


if __name__ == "__main__":
    main()
