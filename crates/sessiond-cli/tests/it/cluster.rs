//! Persistence and several nodes: `kill -9` keeps every acknowledged write (embedded
//! store); two nodes on one Redis share sessions, privileges, drops, atomic counters
//! and mobile sessions; Redis going away gives 503 and service comes back by itself.

use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sessiond_store::conformance::RedisServer;

use crate::{Running, start};

const KEY: &str = "cluster-key";
const ADMIN: &str = "cluster-admin-pw";
const IOS: &str = r#"{"email":"","application":{"name":"Contact","id":"com.contactApp.Contact"},"team":{"id":"UTT7VDX8W5"},"device":{"id":"D1","description":"iPhone X","os":"iOS"}}"#;

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SESSIOND_API_KEY", KEY),
        ("SESSIOND_ADMIN_PASSWORD", ADMIN),
    ]
}

fn cookie_of(resp: &reqwest::blocking::Response) -> String {
    let raw = resp.headers()["set-cookie"].to_str().unwrap();
    raw.split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string()
}

fn own(http: &Client, run: &Running, cookie: &str) -> Value {
    http.get(format!("{}/api/session", run.base))
        .header("cookie", format!("4DSID_sessiond={cookie}"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

fn service(
    http: &Client,
    run: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{}/service/v1{path}", run.base))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or(Value::Null))
}

/// Polls `check` for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_keeps_every_acknowledged_session_and_storage_write() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let http = Client::new();
    let mut sessions = Vec::new();
    {
        let run = start(dir.path(), &[], &env());
        for i in 0..20 {
            let resp = http
                .get(format!("{}/api/session", run.base))
                .send()
                .unwrap();
            let cookie = cookie_of(&resp);
            let id = resp.json::<Value>().unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            for _ in 0..10 {
                let (st, _) = service(
                    &http,
                    &run,
                    Method::POST,
                    &format!("/sessions/{id}/storage/increment"),
                    Some(json!({"path": "n", "by": 1})),
                );
                assert_eq!(st, 200);
            }
            if i % 2 == 0 {
                service(
                    &http,
                    &run,
                    Method::PUT,
                    &format!("/sessions/{id}/privileges"),
                    Some(json!({"privileges": "WebAdmin", "userName": format!("user{i}")})),
                );
            }
            sessions.push((id, cookie, i));
        }
        // `run` drops here: SIGKILL, no graceful shutdown.
    }
    let run = start(dir.path(), &[], &env());
    for (id, cookie, i) in &sessions {
        let (st, v) = service(
            &http,
            &run,
            Method::GET,
            &format!("/sessions/{id}/storage"),
            None,
        );
        assert_eq!((st, &v["storage"]["n"]), (200, &json!(10)), "session {i}");
        let (_, p) = service(&http, &run, Method::GET, &format!("/sessions/{id}"), None);
        if i % 2 == 0 {
            assert_eq!(p["userName"], format!("user{i}"));
            assert_eq!(p["privileges"], json!(["WebAdmin"]));
        }
        // A raise (new userName) ended the cookie: only the others still open their session.
        if i % 2 == 1 {
            assert_eq!(
                own(&http, &run, cookie)["id"],
                id.as_str(),
                "the browser's cookie still works after the restart"
            );
        }
    }
}

#[test]
fn two_nodes_on_one_redis_share_everything() {
    use reqwest::Method;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = redis.url();
    std::fs::write(dir.path().join("a.toml"), "node_name = \"node-a\"\n").unwrap();
    std::fs::write(dir.path().join("b.toml"), "node_name = \"node-b\"\n").unwrap();
    let a = start(
        dir.path(),
        &["--store", &store, "--config", "a.toml"],
        &env(),
    );
    let b = start(
        dir.path(),
        &["--store", &store, "--config", "b.toml"],
        &env(),
    );
    let http = Client::new();
    // A cookie obtained from node A works on node B.
    let resp = http.get(format!("{}/api/session", a.base)).send().unwrap();
    let cookie = cookie_of(&resp);
    let id = resp.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(own(&http, &b, &cookie)["id"], id.as_str());
    // 4 writers spread over 2 nodes × 1,000 increments → exactly 4,000.
    std::thread::scope(|s| {
        for w in 0..4 {
            let node = if w % 2 == 0 { &a } else { &b };
            let (http, id) = (http.clone(), id.clone());
            s.spawn(move || {
                for _ in 0..1000 {
                    let (st, _) = service(
                        &http,
                        node,
                        Method::POST,
                        &format!("/sessions/{id}/storage/increment"),
                        Some(json!({"path": "n", "by": 1})),
                    );
                    assert_eq!(st, 200);
                }
            });
        }
    });
    let (_, v) = service(
        &http,
        &b,
        Method::GET,
        &format!("/sessions/{id}/storage"),
        None,
    );
    assert_eq!(v["storage"]["n"], 4000);
    // A privilege change on A is what B answers; the raise ended the browser's cookie
    // on every node at once, and the fresh one works on B.
    let (_, change) = service(
        &http,
        &a,
        Method::PUT,
        &format!("/sessions/{id}/privileges"),
        Some(json!("WebAdmin")),
    );
    assert_ne!(own(&http, &b, &cookie)["id"], id.as_str());
    let cookie = change["cookie"]["value"].as_str().unwrap().to_string();
    assert_eq!(own(&http, &b, &cookie)["id"], id.as_str());
    let (_, p) = service(
        &http,
        &b,
        Method::GET,
        &format!("/sessions/{id}/privileges/webadmin"),
        None,
    );
    assert_eq!(p["granted"], true);
    let (_, act) = service(&http, &b, Method::GET, "/activity?kind=web", None);
    assert!(
        act["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["ID"] == id.as_str())
    );
    // A drop on A: B answers as for an unknown session.
    let (st, _) = service(&http, &a, Method::DELETE, &format!("/sessions/{id}"), None);
    assert_eq!(st, 200);
    let (st, _) = service(&http, &b, Method::GET, &format!("/sessions/{id}"), None);
    assert_eq!(st, 404);
    assert_ne!(own(&http, &b, &cookie)["id"], id.as_str());
    // Mobile: a login on A is usable on B; a hold pushed on A is applied on B.
    let login: Value = http
        .post(format!("{}/mobileapp/$authenticate", a.base))
        .header("content-type", "application/json")
        .body(IOS)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    let mid = login["id"].as_str().unwrap().to_string();
    let check = |node: &Running| {
        http.get(format!("{}/mobileapp/$licensecheck", node.base))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    eventually("node B learns the new mobile session", || check(&b) == 200);
    let resp = http
        .put(format!("{}/admin/api/mobile/apps/UTT7VDX8W5.com.contactApp.Contact/sessions/{mid}/status?apply=true", a.base))
        .bearer_auth(ADMIN)
        .json(&json!({"status": "pending"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(check(&a), 401);
    eventually("node B applies the push", || check(&b) == 401);
    // A remote client connected to B, dropped on A: B tells its client.
    crate::add_user(dir.path(), "ann", "ann-secret-pw", &[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("{}/remote", b.base.replace("http://", "ws://"));
    let client = rt
        .block_on(sessiond_client::RemoteClient::connect(
            sessiond_client::ClientConfig::new(&url, "ann", "ann-secret-pw"),
        ))
        .unwrap();
    let rid = client.id().to_string();
    let (_, act) = service(&http, &a, Method::GET, "/activity?kind=remote", None);
    assert_eq!(
        act["sessions"][0]["ID"],
        rid.as_str(),
        "A lists B's remote session"
    );
    assert_eq!(act["sessions"][0]["node"], "node-b");
    let (st, _) = service(&http, &a, Method::DELETE, &format!("/sessions/{rid}"), None);
    assert_eq!(st, 200);
    let reason = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), client.closed())
            .await
            .expect("B closes the connection")
    });
    assert_eq!(reason, Some(sessiond_core::protocol::CloseReason::Dropped));
}

#[test]
fn redis_down_answers_503_and_service_recovers_without_a_restart() {
    let redis = RedisServer::start();
    let port = redis.port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sessiond.toml"), "store_timeout_ms = 500\n").unwrap();
    let node = start(dir.path(), &["--store", &redis.url()], &env());
    let http = Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(
        http.get(format!("{}/api/session", node.base))
            .send()
            .unwrap()
            .status(),
        200
    );
    drop(redis);
    let started = Instant::now();
    let resp = http
        .get(format!("{}/api/session", node.base))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by the store timeout"
    );
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"], "store_unavailable");
    assert!(body["message"].is_string());
    let _redis = RedisServer::start_on(port);
    eventually("service recovers once Redis is back", || {
        http.get(format!("{}/api/session", node.base))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
}
