//! Integration tests of the HTTP side, in one binary (link time matters):
//! real HTTP on loopback, a manual clock, real files in temporary folders.
#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod console;
mod http;
mod mobile;
mod remote;

/// Sends `method url` with `Authorization: Bearer <bearer>` and an optional JSON
/// body; returns the status and the JSON answer (`Null` when there is none).
pub(crate) async fn send_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    bearer: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut req = http.request(method, url).bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or_default())
}
