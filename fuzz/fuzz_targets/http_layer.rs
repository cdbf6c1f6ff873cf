//! The request parts the session layer reads: `Cookie` headers (the private cookie
//! reader `layer::cookie_value` is reached through the public `SessionLayer`), the
//! `?$4DSID=<otp>` query, `X-Forwarded-For` / `X-Forwarded-Proto` (trusted or not),
//! and `Authorization: Bearer` (`sessiond_server::routes::bearer`).
//!
//! Input: `\n`-separated parts: cookie headers (several separated by `\x01`), query
//! string, X-Forwarded-For, X-Forwarded-Proto, Authorization, flags (first byte:
//! bit 0 trust proxy headers, bit 1 `https` request URI). The text `TOKEN` in a
//! cookie header is replaced by the real cookie value of the one stored session,
//! `OTP` in the query by its real OTP.
//!
//! Properties: every request is answered 200 with a session; the stored session
//! opens only when its real cookie value or OTP was sent; any other request gets a
//! new guest and exactly one `Set-Cookie` that opens that guest, with `Secure`
//! exactly on TLS; a guest's IP is the trusted proxy's last `X-Forwarded-For` entry.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use sessiond_core::{
    CookieToken, ManualClock, OtpToken, Roles, SessionId, SessionPolicy, Timestamp,
};
use sessiond_fuzz::{block_on, split, substitute};
use sessiond_server::routes::bearer;
use sessiond::{CookieConfig, Session, SessionLayer};
use sessiond_store::{MemoryStore, Resolved, Sessions};
use tower::ServiceExt as _;

const COOKIE: &str = "4DSID_Fuzz";
const PEER: [u8; 4] = [192, 0, 2, 1];

struct Fixture {
    sessions: Sessions,
    clock: ManualClock,
    apps: [Router; 2],
    cookie: CookieToken,
    otp: OtpToken,
}

fn fixture() -> Fixture {
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    // The server's defaults: lazy guests (a new guest's cookie is a guest ticket).
    let sessions = Sessions::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Roles::default()),
        Arc::new(clock.clone()),
        SessionPolicy::default(),
    );
    let app = |trust: bool| {
        Router::new()
            .fallback(|s: Session| async move {
                let current = Session::current().map(|c| c.id());
                assert_eq!(
                    current,
                    Some(s.id()),
                    "Session::current() is the request's session"
                );
                let ip = s
                    .snapshot()
                    .record
                    .ip
                    .map_or_else(|| "-".to_string(), |ip| ip.to_string());
                format!("{} {ip}", s.id())
            })
            .layer(
                SessionLayer::new(sessions.clone(), CookieConfig::for_app("Fuzz"))
                    .trust_proxy_headers(trust),
            )
    };
    let apps = [app(false), app(true)];
    block_on(async {
        let (snapshot, cookie) = sessions.create_web(None).await.unwrap();
        let otp = sessions
            .create_otp(&snapshot.record.id, None)
            .await
            .unwrap()
            .expect("a web session creates OTPs");
        Fixture {
            sessions,
            clock,
            apps,
            cookie,
            otp,
        }
    })
}

impl Fixture {
    /// A new stored session with a new cookie and OTP, in the same store (the old
    /// one, whose OTP was spent and which has one more client, goes).
    fn reseed(&mut self) {
        let sessions = self.sessions.clone();
        let old = self.cookie.session_id();
        let (cookie, otp) = block_on(async {
            assert!(sessions.remove(&old).await.unwrap());
            // An ended guest leaves a record until its tickets expire: let it expire.
            self.clock.advance(std::time::Duration::from_secs(2 * 3600));
            sessions
                .store()
                .purge_expired(sessions.now())
                .await
                .unwrap();
            let (snapshot, cookie) = sessions.create_web(None).await.unwrap();
            let otp = sessions
                .create_otp(&snapshot.record.id, None)
                .await
                .unwrap()
                .unwrap();
            (cookie, otp)
        });
        self.cookie = cookie;
        self.otp = otp;
    }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

fn check_bearer(headers: &HeaderMap) {
    let Some(token) = bearer(headers) else {
        return;
    };
    let value = headers[header::AUTHORIZATION].to_str().unwrap();
    let (scheme, _) = value.split_once(' ').unwrap();
    assert!(scheme.eq_ignore_ascii_case("bearer"));
    assert!(!token.is_empty() && token == token.trim());
    assert!(value.ends_with(token) || value.trim_end().ends_with(token));
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 6);
    let (Some(cookies), Some(query)) = (text(parts[0]), text(parts[1])) else {
        return;
    };
    let flags = parts[5].first().copied().unwrap_or(0);
    let (trust, https) = (flags & 1 == 1, flags & 2 == 2);
    FIXTURE.with_borrow_mut(|f| {
        let real_cookie = f.cookie.encode();
        let real_otp = f.otp.to_string();
        let (cookies, sent_cookie) = substitute(cookies, "TOKEN", &real_cookie);
        let (query, sent_otp) = substitute(query, "OTP", &real_otp);
        let scheme = if https { "https" } else { "http" };
        let Ok(uri) = format!("{scheme}://sessiond.test/api/session?{query}").parse::<http::Uri>()
        else {
            return;
        };
        let mut req = Request::get(uri).body(Body::empty()).unwrap();
        for c in cookies.split('\x01') {
            if let Ok(v) = HeaderValue::from_bytes(c.as_bytes()) {
                req.headers_mut().append(header::COOKIE, v);
            }
        }
        for (name, part) in [
            ("x-forwarded-for", parts[2]),
            ("x-forwarded-proto", parts[3]),
            ("authorization", parts[4]),
        ] {
            if let Ok(v) = HeaderValue::from_bytes(part) {
                if !part.is_empty() {
                    req.headers_mut().insert(name, v);
                }
            }
        }
        check_bearer(req.headers());
        let tls = https
            || (trust
                && req
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|v| v.to_str().ok())
                    == Some("https"));
        let forwarded: Option<IpAddr> = if trust {
            req.headers()
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        } else {
            None
        };
        let expected_ip = forwarded.unwrap_or(IpAddr::from(PEER));
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((PEER, 4711))));

        let app = f.apps[usize::from(trust)].clone();
        let (status, set_cookies, body) = block_on(async {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let set: Vec<String> = resp
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, set, String::from_utf8(body.to_vec()).unwrap())
        });
        assert_eq!(status, StatusCode::OK, "{body}");
        let (id, ip) = body.split_once(' ').unwrap();
        let id: SessionId = id.parse().unwrap();
        assert!(
            set_cookies.len() <= 1,
            "several Set-Cookie: {set_cookies:?}"
        );
        let stored = f.cookie.session_id();

        let restored = if id == stored {
            assert!(
                sent_cookie || sent_otp,
                "the stored session opened without its cookie or OTP"
            );
            !set_cookies.is_empty()
        } else {
            assert_eq!(set_cookies.len(), 1, "a new guest gets a cookie");
            assert_eq!(ip, expected_ip.to_string(), "the guest's IP address");
            false
        };
        if let Some(set) = set_cookies.first() {
            let rest = set
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
                .expect("the session cookie");
            let (value, attrs) = rest.split_once(';').expect("attributes");
            let token: CookieToken = value.parse().expect("Set-Cookie carries a cookie token");
            assert_eq!(token.session_id(), id);
            assert!(
                attrs.contains("HttpOnly")
                    && attrs.contains("SameSite=Strict")
                    && attrs.contains("Path=/")
            );
            assert_eq!(attrs.contains("Secure"), tls, "Secure on TLS only: {set}");
            if id != stored {
                // The guest's cookie (a guest ticket: nothing is stored) opens the guest.
                assert!(token.stamp().is_some(), "a new guest's cookie is a guest ticket");
                let opened = block_on(f.sessions.resolve_cookie(value)).unwrap();
                assert!(matches!(
                    opened,
                    Resolved::Open(ref s, _) | Resolved::Unstored { snapshot: ref s, .. } if s.record.id == id
                ));
            }
        }
        if restored {
            assert!(sent_otp);
            f.reseed();
        }
    });
});
