//! Integration tests of the HTTP side, in one binary (link time matters):
//! real HTTP on loopback, a manual clock, real files in temporary folders.
#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod console;
mod http;
mod mobile;
mod openapi;
mod remote;

/// `v` is exactly what `T` reads and writes back: no member missing, none added.
/// Returns the typed value.
pub(crate) fn exactly<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &serde_json::Value,
) -> T {
    let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), v);
    typed
}

/// The validated settings of a test node: memory store, an ephemeral port, data in
/// `data`, application `app_name`, and any further `sessiond.toml` lines.
pub(crate) fn node_config(
    data: &std::path::Path,
    app_name: &str,
    toml: &str,
) -> sessiond_server::settings::NodeConfig {
    let text = format!(
        "listen = \"127.0.0.1:0\"\nstore = \"memory\"\napp_name = {app_name:?}\ndata = {:?}\n{toml}",
        data.display().to_string()
    );
    sessiond_server::settings::Settings::parse(&text)
        .unwrap()
        .validate()
        .unwrap()
}

/// Waits until the node at `base` (`http://host:port`) answers `/healthz`:
/// [`sessiond_server::Server::serve`] loads the mobile sessions before it accepts.
pub(crate) async fn until_up(base: &str) {
    for _ in 0..500 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{base} did not come up");
}

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
