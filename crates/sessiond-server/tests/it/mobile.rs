//! `/mobileapp/` as the iOS and Android QMobile clients speak it: the test vectors
//! of spec §6, file round trips with refresh, restart, and bad input.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::routing::any;
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_core::{ManualClock, PrivilegeInput, Roles, SessionPolicy, Timestamp};
use sessiond_mobile::{AuthHook, HookResult, IdMode, MobileConfig, MobileSessions, Relogin};
use sessiond_server::contract::mobile::{Authenticated, Done, Failed};
use sessiond_store::Sessions;
use tokio::net::TcpListener;

use crate::exactly;
use crate::http::{serve_router, sessions};

const IOS: &str = r#"{"email":"","send":"link","application":{"name":"Contact","id":"com.contactApp.Contact","version":"1"},"team":{"id":"UTT7VDX8W5"},"device":{"id":"0DC5132E-1EF4-407C-A832-5FE33D818AF3","description":"iPhone X","version":"11.3","os":"iOS","simulator":true},"language":{"id":"en_US","code":"en","region":"US"}}"#;
const ANDROID: &str = r#"{"email":"a@b.com","password":"","application":{"id":"com.company.app","name":"App","version":"1.0"},"device":{"id":"9774d56d682e549c","simulator":false,"description":"SM-G950F","version":"28 (Android P)","os":"Android"},"language":{"id":"en_US","code":"en","region":"US"},"parameters":{}}"#;
const IOS_TOKEN_4D: &str = "eyJhcHBOYW1lSUQiOiJjb20uY29udGFjdEFwcC5Db250YWN0IiwiaWQiOiI3MDIzZDkyMDUwNzQxOTlkMWMxNmZjMDBkMjQzNTRlNzc4MTM3Njc1IiwidGVhbUlEIjoiVVRUN1ZEWDhXNSJ9";
const ADMIN: &str = "admin-password";
const IOS_ID_4D: &str = "7023d9205074199d1c16fc00d24354e778137675";

/// A hook whose answer the test sets, counting its calls.
#[derive(Default)]
struct TestHook {
    answer: Mutex<HookResult>,
    calls: AtomicUsize,
    seen: Mutex<Option<Value>>,
    /// A device whose callout hangs (3 s).
    hang: Mutex<Option<String>>,
}

#[async_trait]
impl AuthHook for TestHook {
    async fn authenticate(&self, info: &Value) -> HookResult {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.seen.lock() = Some(info.clone());
        let hangs = self.hang.lock().as_deref() == info["device"]["id"].as_str();
        if hangs {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        self.answer.lock().clone()
    }
}

struct Harness {
    base: String,
    root: PathBuf,
    hook: Arc<TestHook>,
    store: Arc<MobileSessions>,
    sessions: Sessions,
    clock: ManualClock,
    http: reqwest::Client,
    _dir: Option<tempfile::TempDir>,
}

/// An upstream that echoes what it received.
async fn echo_upstream() -> http::Uri {
    let app = Router::new().fallback(any(|req: axum::extract::Request| async move {
        if req.uri().path().contains("slow") {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap_or(""))))
            .collect();
        axum::Json(json!({"method": req.method().as_str(), "uri": req.uri().to_string(), "headers": headers}))
    }));
    serve_router(app).await.parse().unwrap()
}

impl Harness {
    async fn start(ids: IdMode, localhost_accept: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Self::start_in(&path, ids, localhost_accept, Some(dir)).await
    }

    /// A harness whose logins of accepted devices follow `relogin`.
    async fn start_relogin(ids: IdMode, relogin: Relogin) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Self::start_with(&path, ids, false, Some(dir), None, relogin).await
    }

    async fn start_in(
        data: &Path,
        ids: IdMode,
        localhost_accept: bool,
        keep: Option<tempfile::TempDir>,
    ) -> Self {
        Self::start_with(data, ids, localhost_accept, keep, None, Relogin::default()).await
    }

    async fn start_with(
        data: &Path,
        ids: IdMode,
        localhost_accept: bool,
        keep: Option<tempfile::TempDir>,
        email_link_base: Option<&str>,
        relogin: Relogin,
    ) -> Self {
        let clock = ManualClock::new(Timestamp(1_800_000_000_000));
        let root = data.join("MobileApps");
        let ids = match ids {
            IdMode::Random => "random",
            IdMode::FourD => "4d",
        };
        let mut toml = format!(
            "max_body_bytes = 65536\n[mobile]\nids = {ids:?}\nlocalhost_accept = {localhost_accept}\n\
             relogin_hook = {}\nrelogin_new_token = {}\nupstream = {:?}\n\
             upstream_timeout_ms = 1000\nupstream_max_body_bytes = 262144\n",
            relogin.hook,
            relogin.new_token,
            echo_upstream().await.to_string(),
        );
        if let Some(base) = email_link_base {
            let from = "Sessions <no-reply@example.com>";
            toml = format!("{toml}[mobile.email]\nfrom = {from:?}\nlink_base = {base:?}\n");
        }
        let hook = Arc::new(TestHook::default());
        *hook.answer.lock() = HookResult::accept("Welcome");
        let node = sessiond_server::Server::builder(crate::node_config(data, "TestApp", &toml))
            .roles(Roles::parse(crate::http::ROLES, "roles.json").unwrap())
            .clock(Arc::new(clock.clone()))
            .secrets(Some("k".into()), Some(ADMIN.into()))
            .login_hook(hook.clone())
            .build()
            .await
            .unwrap();
        let sessions = node.state().sessions.clone();
        let mobile = node.state().mobile.as_ref().unwrap().sessions.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(node.serve(listener, std::future::pending()));
        crate::until_up(&format!("http://{addr}")).await;
        Self {
            base: format!("http://{addr}"),
            root,
            hook,
            store: mobile,
            sessions,
            clock,
            http: reqwest::Client::new(),
            _dir: keep,
        }
    }

    async fn post(&self, path: &str, body: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}/mobileapp/{path}", self.base))
            .header("X-QMobile", "1")
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .get(format!("{}/mobileapp/{path}", self.base))
            .header("X-QMobile", "1");
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    fn file(&self, folder: &str, id: &str) -> PathBuf {
        self.root.join(folder).join(id)
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn assert_mobile_error(v: &Value, err_code: u64) {
    exactly::<Failed>(v);
    assert_eq!(v["success"], false);
    assert!(v["statusText"].is_string());
    assert_eq!(v["__ERRORS"][0]["errCode"], err_code, "{v}");
    assert_eq!(v["__ERROR"][0]["errCode"], err_code, "{v}");
    assert!(v["error"].is_string() && v["message"].is_string());
}

#[tokio::test]
async fn every_mobile_answer_is_exactly_its_contract_type() {
    let m = Harness::start(IdMode::Random, false).await;
    let (st, v) = m.get("", None).await;
    assert_eq!((st.as_u16(), exactly::<Done>(&v).success), (200, None));
    let (st, v) = m.post("$authenticate", IOS, None).await;
    let accepted = exactly::<Authenticated>(&v);
    assert_eq!(st, 200);
    let token = accepted.token.expect("an accepted login has a token");
    assert!(accepted.user_info.is_some());
    let (st, v) = m
        .post("$verify", &json!({"token": token}).to_string(), None)
        .await;
    assert_eq!(
        (st.as_u16(), exactly::<Authenticated>(&v).id),
        (200, accepted.id)
    );
    let (st, v) = m.get("$licensecheck", Some(&token)).await;
    assert_eq!(
        (st.as_u16(), exactly::<Done>(&v).success),
        (200, Some(true))
    );
    let (st, v) = m.post("$userInfo", r#"{"a": 1}"#, Some(&token)).await;
    assert_eq!(
        (st.as_u16(), exactly::<Done>(&v).success),
        (200, Some(true))
    );
    let (st, v) = m.post("$logout", "", Some(&token)).await;
    assert_eq!((st.as_u16(), exactly::<Done>(&v).success), (200, None));
    let (st, v) = m.get("$licensecheck", Some(&token)).await;
    assert_eq!(st, 401);
    assert_mobile_error(&v, 1907);
    *m.hook.answer.lock() = HookResult::verify("Check your mail");
    let other = ios_login("0DC5132E-1EF4-407C-A832-5FE33D818AF9", "ann@example.com");
    let (st, v) = m.post("$authenticate", &other, None).await;
    let pending = exactly::<Authenticated>(&v);
    assert_eq!(
        (st.as_u16(), pending.token, pending.user_info),
        (200, None, None)
    );
}

#[tokio::test]
async fn vector_01_4d_ids_file_and_token_are_byte_compatible() {
    let m = Harness::start(IdMode::FourD, false).await;
    let (st, v) = m.post("$authenticate", IOS, None).await;
    assert_eq!(st, 200);
    assert_eq!(v["id"], IOS_ID_4D);
    assert_eq!(v["token"], IOS_TOKEN_4D);
    let file = read_json(&m.file("UTT7VDX8W5.com.contactApp.Contact", IOS_ID_4D));
    assert_eq!(file["status"], "accepted");
    assert_eq!(file["token"], IOS_TOKEN_4D);
    assert_eq!(file["session"]["id"], IOS_ID_4D);
    assert_eq!(file["session"]["ip"], "127.0.0.1");
    assert_eq!(file["send"], "link");
    assert_eq!(file["device"]["os"], "iOS");
    assert_eq!(file["language"]["region"], "US");
    let bytes = std::fs::read(m.file("UTT7VDX8W5.com.contactApp.Contact", IOS_ID_4D)).unwrap();
    assert_eq!(bytes[0], b'{', "UTF-8 without BOM, first byte {{");
}

#[tokio::test]
async fn vector_03_ios_login_accepted_then_data_is_forwarded_with_the_session_identity() {
    let m = Harness::start(IdMode::Random, false).await;
    let (st, v) = m.post("$authenticate", IOS, None).await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["statusText"].as_str(), v["success"].as_bool()),
        (Some("Welcome"), Some(true))
    );
    assert_eq!(v["userInfo"], json!({}));
    let id = v["id"].as_str().unwrap();
    assert_eq!(id.len(), 40, "random 160-bit id in 40 hex digits");
    let token = v["token"].as_str().unwrap();
    let fields = sessiond_mobile::token::decode(token).unwrap();
    assert_eq!(
        (
            fields.app_id.as_str(),
            fields.id.as_str(),
            fields.team_id.as_str()
        ),
        ("com.contactApp.Contact", id, "UTT7VDX8W5")
    );
    let resp = m
        .http
        .get(format!("{}/mobileapp/Event(12)?$filter=x", m.base))
        .bearer_auth(token)
        .header("X-Session-Privileges", "WebAdmin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["uri"], "/mobileapp/Event(12)?$filter=x");
    assert_eq!(echo["headers"]["x-session-mobile-id"], id);
    assert_eq!(echo["headers"]["x-session-app"], "com.contactApp.Contact");
    assert_eq!(echo["headers"]["x-session-email"], "");
    assert_eq!(
        echo["headers"]["x-session-privileges"], "",
        "a client cannot claim privileges"
    );
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the token stays with sessiond"
    );
    let web_id = echo["headers"]["x-session-id"].as_str().unwrap();
    assert_eq!(web_id.len(), 32, "the owned web Session's id");
    // Vector 12: licence check.
    let (st, v) = m.get("$licensecheck", Some(token)).await;
    assert_eq!((st, v["ok"].as_bool()), (StatusCode::OK, Some(true)));
    // A second login of the same user agent (a device id is no secret): the hook runs
    // again and a new token retires the old one; the web Session carries over.
    let (_, again) = m.post("$authenticate", IOS, None).await;
    assert_eq!(again["success"], true);
    assert_ne!(again["token"].as_str(), Some(token));
    assert_eq!(
        m.hook.calls.load(Ordering::SeqCst),
        2,
        "the hook runs again"
    );
    assert_eq!(
        m.get("Event", Some(token)).await.0,
        401,
        "the old token is retired"
    );
    assert!(!m.file("UTT7VDX8W5.com.contactApp.Contact", id).exists());
    let new_token = again["token"].as_str().unwrap();
    let (st, echo) = m.get("Event", Some(new_token)).await;
    assert_eq!(st, 200);
    assert_eq!(echo["headers"]["x-session-id"], web_id, "same web Session");
    let seen = m.hook.seen.lock().clone().unwrap();
    assert_eq!(
        seen["session"]["id"], again["id"],
        "the hook sees the new session"
    );
    assert_eq!(seen["device"]["description"], "iPhone X");
}

#[tokio::test]
async fn vector_04_android_login_without_team_and_send() {
    let m = Harness::start(IdMode::Random, false).await;
    let resp = m
        .http
        .post(format!("{}/mobileapp/$authenticate", m.base))
        .header("X-QMobile", "1")
        .header("Set-Cookie", "4DSID_TestApp=whatever; Path=/")
        .header("content-type", "application/json")
        .body(ANDROID)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["success"], true);
    assert!(v["token"].as_str().is_some_and(|t| !t.is_empty()));
    let file = read_json(&m.file("com.company.app", v["id"].as_str().unwrap()));
    assert_eq!(file["email"], "a@b.com");
    assert!(file.get("send").is_none() && file.get("team").is_none());
    assert!(file.get("password").is_none(), "a password is never stored");
    assert_eq!(
        sessiond_mobile::token::decode(v["token"].as_str().unwrap())
            .unwrap()
            .team_id,
        ""
    );
}

#[tokio::test]
async fn vector_05_and_06_pending_login_has_id_and_status_text_but_no_token() {
    let m = Harness::start(IdMode::Random, false).await;
    *m.hook.answer.lock() = HookResult::verify("Check your mail");
    let (st, v) = m.post("$authenticate", IOS, None).await;
    assert_eq!(st, 200);
    assert_eq!(v["statusText"], "Check your mail");
    assert_eq!(v["success"], true);
    assert!(v.get("token").is_none());
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        read_json(&m.file("UTT7VDX8W5.com.contactApp.Contact", &id))["status"],
        "pending"
    );
    // The pending device's data requests (no token) get 401.
    let (st, _) = m.get("Event", None).await;
    assert_eq!(st, 401);
    // Logging in again re-runs the hook for a pending user agent; now accepted.
    *m.hook.answer.lock() = HookResult::accept("");
    let (_, v) = m.post("$authenticate", IOS, None).await;
    assert_eq!(v["id"], id);
    assert_eq!(v["statusText"], "", "statusText is always a string");
    assert!(v["token"].is_string());
    assert_eq!(m.hook.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn vector_07_and_08_no_usable_session_is_401_never_403() {
    let m = Harness::start(IdMode::Random, false).await;
    let (st, v) = m.get("Event(12)", None).await;
    assert_eq!(st, 401);
    assert_mobile_error(&v, 1907);
    let (st, _) = m.get("Event(12)", Some("not-a-token")).await;
    assert_eq!(st, 401);
    // A forged token for an unknown session.
    let forged = sessiond_mobile::token::encode("com.contactApp.Contact", IOS_ID_4D, "UTT7VDX8W5");
    assert_eq!(m.get("Event", Some(&forged)).await.0, 401);
    // Status flips through the file + refresh: 200 → 401 → 200; delete → 401.
    let (_, v) = m.post("$authenticate", IOS, None).await;
    let (id, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    let path = m.file("UTT7VDX8W5.com.contactApp.Contact", &id);
    assert_eq!(m.get("Event", Some(&token)).await.0, 200);
    let mut file = read_json(&path);
    file["status"] = "pending".into();
    std::fs::write(&path, file.to_string()).unwrap();
    assert_eq!(
        m.get("Event", Some(&token)).await.0,
        200,
        "edits on disk wait for a refresh"
    );
    let report = m.store.refresh().await.unwrap();
    assert_eq!(report.updated, 1);
    assert_eq!(m.get("Event", Some(&token)).await.0, 401);
    file["status"] = "accepted".into();
    std::fs::write(&path, file.to_string()).unwrap();
    m.store.refresh().await.unwrap();
    assert_eq!(m.get("Event", Some(&token)).await.0, 200);
    std::fs::remove_file(&path).unwrap();
    let report = m.store.refresh().await.unwrap();
    assert_eq!(report.evicted, 1);
    assert_eq!(m.get("Event", Some(&token)).await.0, 401);
}

#[tokio::test]
async fn refresh_reads_only_files_whose_size_times_or_inode_changed() {
    let m = Harness::start(IdMode::Random, false).await;
    let mut paths = Vec::new();
    for device in [
        "0DC5132E-1EF4-407C-A832-5FE33D818AF1",
        "0DC5132E-1EF4-407C-A832-5FE33D818AF2",
        "0DC5132E-1EF4-407C-A832-5FE33D818AF3",
    ] {
        let (st, v) = m.post("$authenticate", &ios_login(device, ""), None).await;
        assert_eq!(st, 200, "{v}");
        paths.push(m.file(
            "UTT7VDX8W5.com.contactApp.Contact",
            v["id"].as_str().unwrap(),
        ));
    }
    // Files written in the last 2 s are read at every refresh (a coarse file-system
    // clock could hide a second write): these were written an hour ago.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let age = |path: &Path| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    };
    // Session files and their sidecars.
    let dir = paths[0].parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        age(&entry.unwrap().path());
    }
    let first = m.store.refresh().await.unwrap();
    assert_eq!((first.unchanged, first.skipped), (3, 0), "{first:?}");
    let second = m.store.refresh().await.unwrap();
    assert_eq!((second.unchanged, second.skipped), (3, 3), "{second:?}");
    // The folders are watched (the default): no event, no file looked at.
    assert_eq!((first.examined, second.examined), (3, 0));
    // Same size, same modification time: edited in place (the change time tells), and
    // replaced by a rename (the inode tells).
    let pending = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(r#""accepted""#));
        text.replace(r#""accepted""#, r#""pending" "#)
    };
    let edited = pending(&paths[0]);
    std::fs::write(&paths[0], edited).unwrap();
    age(&paths[0]);
    let replaced = pending(&paths[1]);
    let tmp = paths[1].with_extension("tmp");
    std::fs::write(&tmp, replaced).unwrap();
    age(&tmp);
    std::fs::rename(&tmp, &paths[1]).unwrap();
    let third = m.store.refresh().await.unwrap();
    assert_eq!(
        (
            third.updated,
            third.unchanged,
            third.skipped,
            third.examined
        ),
        (2, 1, 1, 2),
        "{third:?}"
    );
    let fourth = m.store.refresh().await.unwrap();
    assert_eq!(
        (fourth.unchanged, fourth.skipped, fourth.examined),
        (3, 3, 0),
        "{fourth:?}"
    );
    // A file written in the last 2 s is read at every refresh.
    let same = std::fs::read(&paths[2]).unwrap();
    std::fs::write(&paths[2], same).unwrap();
    for _ in 0..2 {
        let report = m.store.refresh().await.unwrap();
        assert_eq!((report.unchanged, report.skipped), (3, 2), "{report:?}");
    }
}

#[tokio::test]
async fn vector_09_refusal_is_401_with_status_text_and_error_arrays_and_writes_nothing() {
    let m = Harness::start(IdMode::Random, false).await;
    *m.hook.answer.lock() = HookResult::deny("Not allowed");
    let (st, v) = m.post("$authenticate", IOS, None).await;
    assert_eq!(st, 401);
    assert_eq!(v["statusText"], "Not allowed");
    assert_eq!(v["__ERRORS"][0]["message"], "Not allowed");
    assert_mobile_error(&v, 1912);
    assert!(!m.root.join("UTT7VDX8W5.com.contactApp.Contact").exists());
}

#[tokio::test]
async fn vector_10_user_info_stores_the_push_token() {
    let m = Harness::start(IdMode::Random, false).await;
    let (_, v) = m.post("$authenticate", ANDROID, None).await;
    let token = v["token"].as_str().unwrap();
    let (st, r) = m
        .post(
            "$userInfo",
            r#"{"device":{"token":"abcd1234"}}"#,
            Some(token),
        )
        .await;
    assert_eq!((st, r["ok"].as_bool()), (StatusCode::OK, Some(true)));
    let file = read_json(&m.file("com.company.app", v["id"].as_str().unwrap()));
    assert_eq!(file["device"]["token"], "abcd1234");
    // Without a body: nothing to store, the documented answer.
    let (st, r) = m.post("$userInfo", "", Some(token)).await;
    assert_eq!((st, r["ok"].as_bool()), (StatusCode::OK, Some(true)));
    let (st, r) = m
        .post("$userInfo", r#"{"device":{"token":"x"}}"#, None)
        .await;
    assert_eq!(st, 401);
    assert_mobile_error(&r, 1907);
    let (st, _) = m
        .post("$userInfo", r#"{"device":{"token":5}}"#, Some(token))
        .await;
    assert_eq!(st, 400);
    // Logging in again keeps the push token (in the new session that retires the old).
    let (_, again) = m
        .post(
            "$authenticate",
            &ANDROID.replace("a@b.com", "other@b.com"),
            None,
        )
        .await;
    assert_eq!(
        read_json(&m.file("com.company.app", again["id"].as_str().unwrap()))["device"]["token"],
        "abcd1234"
    );
}

#[tokio::test]
async fn vector_11_logout_removes_memory_and_file() {
    let m = Harness::start(IdMode::Random, false).await;
    let (_, v) = m.post("$authenticate", IOS, None).await;
    let token = v["token"].as_str().unwrap();
    let (st, r) = m.post("$logout", "", Some(token)).await;
    assert_eq!((st, r["ok"].as_bool()), (StatusCode::OK, Some(true)));
    assert!(
        !m.file(
            "UTT7VDX8W5.com.contactApp.Contact",
            v["id"].as_str().unwrap()
        )
        .exists()
    );
    assert_eq!(m.get("Event", Some(token)).await.0, 401);
    assert_eq!(m.post("$logout", "", Some(token)).await.0, 401);
}

#[tokio::test]
async fn vector_13_and_round_trip_a_4d_file_placed_by_hand_is_served_after_refresh() {
    // 4D's re-login: the token comes back as it is (no new token, no hook).
    let m = Harness::start_relogin(
        IdMode::Random,
        Relogin {
            hook: false,
            new_token: false,
        },
    )
    .await;
    let dir = m.root.join("UTT7VDX8W5.com.contactApp.Contact");
    std::fs::create_dir_all(&dir).unwrap();
    let file = format!(
        r#"{{"application":{{"id":"com.contactApp.Contact","name":"Contact","version":"1.0.0"}},
 "team":{{"id":"UTT7VDX8W5"}}, "language":{{"id":"en_US","code":"en","region":"US"}}, "email":"",
 "device":{{"description":"iPhone X","version":"11.3","id":"0DC5132E-1EF4-407C-A832-5FE33D818AF3","simulator":true}},
 "send":"link", "session":{{"id":"{IOS_ID_4D}","ip":"::ffff:192.168.5.4"}}, "status":"accepted", "token":"{IOS_TOKEN_4D}"}}"#
    );
    std::fs::write(dir.join(IOS_ID_4D), file).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"application":{"id":"com.contactApp.Contact"}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("AuthKey_X.p8"), "key").unwrap();
    std::fs::write(dir.join("test_session"), "{}").unwrap();
    assert_eq!(
        m.get("Event", Some(IOS_TOKEN_4D)).await.0,
        401,
        "not before a refresh"
    );
    let report = m.store.refresh().await.unwrap();
    assert_eq!((report.loaded, report.errors.len()), (1, 0), "{report:?}");
    let (st, first) = m.get("Event", Some(IOS_TOKEN_4D)).await;
    assert_eq!(st, 200);
    let (_, second) = m.get("Event", Some(IOS_TOKEN_4D)).await;
    assert_eq!(
        first["headers"]["x-session-id"], second["headers"]["x-session-id"],
        "a file without a sidecar keeps one web session across requests"
    );
    // The same device logging in finds its session (found by user agent, not recomputed).
    let (_, v) = m.post("$authenticate", IOS, None).await;
    assert_eq!(v["token"], IOS_TOKEN_4D);
}

#[tokio::test]
async fn refresh_reports_mobi_errors_1_to_4_and_evicts_invalid_files() {
    let m = Harness::start(IdMode::Random, false).await;
    let (_, v) = m.post("$authenticate", IOS, None).await;
    let (id, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    let dir = m.root.join("UTT7VDX8W5.com.contactApp.Contact");
    let good = read_json(&dir.join(&id));
    std::fs::create_dir_all(m.root.join("com.elsewhere")).unwrap();
    std::fs::write(m.root.join("com.elsewhere").join(&id), good.to_string()).unwrap(); // mobi 1
    std::fs::write(dir.join("abc1"), "{not json").unwrap(); // mobi 2
    std::fs::write(dir.join("abc2"), r#"{"application":{"id":"x"}}"#).unwrap(); // mobi 3
    let mut bad_token = good.clone();
    bad_token["team"]["id"] = "OTHERTEAM".into();
    std::fs::write(dir.join(&id), bad_token.to_string()).unwrap(); // mobi 4, evicts the session
    let report = m.store.refresh().await.unwrap();
    let mut codes: Vec<u8> = report.errors.iter().map(|e| e.code).collect();
    codes.sort_unstable();
    assert_eq!(codes, [1, 2, 3, 4], "{report:?}");
    assert_eq!(report.evicted, 1);
    assert_eq!(m.get("Event", Some(&token)).await.0, 401);
}

#[tokio::test]
async fn restart_keeps_sessions_with_their_web_session_id_and_privileges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (token, web_id) = {
        let m = Harness::start_in(&path, IdMode::Random, false, None).await;
        let mut answer = HookResult::accept("");
        answer.privileges = Some(PrivilegeInput {
            privileges: vec!["a".into()],
            user_name: Some("ann".into()),
            ..PrivilegeInput::default()
        });
        *m.hook.answer.lock() = answer;
        let (_, v) = m.post("$authenticate", IOS, None).await;
        let token = v["token"].as_str().unwrap().to_string();
        let (_, echo) = m.get("Event", Some(&token)).await;
        assert_eq!(echo["headers"]["x-session-privileges"], "a");
        (
            token,
            echo["headers"]["x-session-id"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    // A new process: new memory, same folder.
    let clock = ManualClock::new(Timestamp(1_900_000_000_000));
    let sessions = sessions(&clock);
    let mobile = MobileSessions::new(
        MobileConfig {
            ids: IdMode::Random,
            localhost_accept: false,
            ..MobileConfig::new(path.join("MobileApps"))
        },
        sessions.clone(),
    );
    assert_eq!(mobile.refresh().await.unwrap().loaded, 1);
    let who = mobile
        .authorize(&token)
        .await
        .unwrap()
        .expect("still valid after a restart");
    assert_eq!(who.web.record.id().to_string(), web_id);
    assert_eq!(who.web.record.get_privileges(), ["a"]);
    assert_eq!(who.web.record.user_name(), "ann");
}

#[tokio::test]
async fn localhost_auto_accept_is_off_by_default_and_uses_the_real_peer() {
    let m = Harness::start(IdMode::Random, false).await;
    *m.hook.answer.lock() = HookResult::deny("no");
    assert_eq!(m.post("$authenticate", IOS, None).await.0, 401);
    let on = Harness::start(IdMode::Random, true).await;
    *on.hook.answer.lock() = HookResult::deny("no");
    let resp = on
        .http
        .post(format!("{}/mobileapp/$authenticate", on.base))
        .header("X-Forwarded-For", "203.0.113.9")
        .header("content-type", "application/json")
        .body(IOS)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the socket peer is 127.0.0.1, whatever the headers say"
    );
    assert_eq!(on.hook.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_input_gets_400_or_413_and_writes_nothing() {
    let m = Harness::start(IdMode::Random, false).await;
    let ios: Value = serde_json::from_str(IOS).unwrap();
    let with = |path: &[&str], v: Value| {
        let mut b = ios.clone();
        let mut cur = &mut b;
        for p in &path[..path.len() - 1] {
            cur = &mut cur[*p];
        }
        cur[path[path.len() - 1]] = v;
        b.to_string()
    };
    let long = "x".repeat(256);
    let cases = [
        "{not json".to_string(),
        "[1,2]".to_string(),
        with(&["application", "id"], Value::Null),
        with(&["device", "id"], Value::Null),
        with(&["device", "id"], json!(42)),
        with(&["application"], json!("com.x")),
        with(&["email"], json!(["a"])),
        with(&["team", "id"], json!("../../etc")),
        with(&["team", "id"], json!("a/b")),
        with(&["application", "id"], json!("a\\b")),
        with(&["application", "id"], json!("a\u{0}b")),
        with(&["application", "id"], json!("a\nb")),
        with(&["application", "id"], json!(long)),
        with(&["team", "id"], json!("..")),
    ];
    for body in &cases {
        let (st, v) = m.post("$authenticate", body, None).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert!(v["statusText"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(v["__ERRORS"][0]["errCode"].as_u64().is_some());
    }
    assert!(
        !m.root.exists() || std::fs::read_dir(&m.root).unwrap().next().is_none(),
        "no file written"
    );
    let big = format!(r#"{{"email":"{}"}}"#, "a".repeat(70 * 1024));
    let (st, v) = m.post("$authenticate", &big, None).await;
    assert_eq!(st, 413);
    assert_eq!(v["error"], "body_too_large");
    let resp = m
        .http
        .get(format!("{}/mobileapp/$authenticate", m.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let (st, v) = m.get("", None).await;
    assert_eq!(
        (st, v["ok"].as_bool()),
        (StatusCode::OK, Some(true)),
        "status endpoint"
    );
    assert!(
        m.sessions
            .activity(&sessiond_store::ActivityFilter {
                kind: Some(sessiond_core::SessionKind::Web),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    );
}

impl Harness {
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("{}/admin/api/mobile{path}", self.base);
        crate::send_json(&self.http, method, url, ADMIN, body).await
    }
}

#[tokio::test]
async fn admin_api_status_flip_push_and_delete_follow_the_data_answers() {
    use reqwest::Method;
    let m = Harness::start(IdMode::Random, false).await;
    let (_, v) = m.post("$authenticate", IOS, None).await;
    let (id, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    );
    m.post("$authenticate", ANDROID, None).await;
    let (st, apps) = m.admin(Method::GET, "/apps", None).await;
    assert_eq!(st, 200);
    assert_eq!(
        apps["apps"][0]["folder"],
        "UTT7VDX8W5.com.contactApp.Contact"
    );
    assert_eq!(
        apps["apps"][0]["label"],
        "Contact (UTT7VDX8W5.com.contactApp.Contact)"
    );
    assert_eq!(apps["apps"][1]["label"], "App (com.company.app)");
    let folder = "UTT7VDX8W5.com.contactApp.Contact";
    let (_, list) = m
        .admin(Method::GET, &format!("/apps/{folder}/sessions"), None)
        .await;
    let row = &list["sessions"][0];
    assert_eq!(
        (
            row["id"].as_str(),
            row["status"].as_str(),
            row["device"].as_str(),
            row["os"].as_str()
        ),
        (
            Some(&*id),
            Some("accepted"),
            Some("iPhone X"),
            Some("iOS 11.3")
        )
    );
    assert_eq!(row["ip"], "127.0.0.1");
    assert!(row["file"].as_str().unwrap().ends_with(&id));
    // Created = the first login; last seen = the last request with the token.
    assert_eq!(row["created"], 1_800_000_000_000_u64);
    m.clock.advance(std::time::Duration::from_secs(5));
    assert_eq!(m.get("$licensecheck", Some(&token)).await.0, 200);
    let (_, list) = m
        .admin(Method::GET, &format!("/apps/{folder}/sessions"), None)
        .await;
    let row = &list["sessions"][0];
    assert_eq!(row["created"], 1_800_000_000_000_u64);
    assert_eq!(row["lastSeen"], 1_800_000_005_000_u64);
    // Hold: the file says pending at once; memory after Push.
    assert_eq!(m.get("Event", Some(&token)).await.0, 200);
    let (st, r) = m
        .admin(
            Method::PUT,
            &format!("/apps/{folder}/sessions/{id}/status"),
            Some(json!({"status": "pending"})),
        )
        .await;
    assert_eq!(
        (st, r["pushNeeded"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    assert_eq!(read_json(&m.file(folder, &id))["status"], "pending");
    assert_eq!(m.get("Event", Some(&token)).await.0, 200, "not before Push");
    let (st, report) = m.admin(Method::POST, "/push", None).await;
    assert_eq!((st, report["updated"].as_u64()), (StatusCode::OK, Some(1)));
    assert_eq!(m.get("Event", Some(&token)).await.0, 401);
    // A malformed query is a JSON error, and changes nothing.
    let (st, v) = m
        .admin(
            Method::PUT,
            &format!("/apps/{folder}/sessions/{id}/status?apply=maybe"),
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request")),
        "{v}"
    );
    assert_eq!(read_json(&m.file(folder, &id))["status"], "pending");
    // Accept with apply=true: pushed at once.
    let (_, r) = m
        .admin(
            Method::PUT,
            &format!("/apps/{folder}/sessions/{id}/status?apply=true"),
            Some(json!({"status": "accepted"})),
        )
        .await;
    assert_eq!(r["pushNeeded"], false);
    assert_eq!(m.get("Event", Some(&token)).await.0, 200);
    // Edit e-mail, show the file.
    m.admin(
        Method::PUT,
        &format!("/apps/{folder}/sessions/{id}/email"),
        Some(json!({"email": "ann@example.com"})),
    )
    .await;
    let (_, shown) = m
        .admin(Method::GET, &format!("/apps/{folder}/sessions/{id}"), None)
        .await;
    assert_eq!(shown["json"]["email"], "ann@example.com");
    assert!(shown["path"].as_str().unwrap().ends_with(&id));
    // Delete + Push → 401.
    let (st, _) = m
        .admin(
            Method::DELETE,
            &format!("/apps/{folder}/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(m.get("Event", Some(&token)).await.0, 200, "not before Push");
    m.admin(Method::POST, "/push", None).await;
    assert_eq!(m.get("Event", Some(&token)).await.0, 401);
    // Bad input and authentication.
    let (st, _) = m
        .admin(
            Method::DELETE,
            &format!("/apps/{folder}/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = m.admin(Method::GET, "/apps/..%2Fetc/sessions", None).await;
    assert_eq!(st, 400);
    let (st, _) = m
        .admin(
            Method::GET,
            &format!("/apps/{folder}/sessions/not-hex"),
            None,
        )
        .await;
    assert_eq!(st, 400);
    let (st, v) = m
        .admin(
            Method::PUT,
            &format!("/apps/{folder}/sessions/abc/status"),
            Some(json!({"status": "maybe"})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let resp = m
        .http
        .get(format!("{}/admin/api/mobile/apps", m.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = m
        .http
        .get(format!("{}/admin/api/mobile/apps", m.base))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn config_hook_lists_then_callout_then_default() {
    use sessiond_mobile::hook::{Decision, Matchers, Policy};
    use sessiond_server::login_hook::{Callout, ConfigHook};
    use std::time::Duration;
    // The user's service: accepts @ok.com with privileges, pends @wait.com, refuses the rest; /slow never answers.
    let service = Router::new()
        .route(
            "/auth",
            any(|axum::Json(info): axum::Json<Value>| async move {
                let email = info["email"].as_str().unwrap_or("").to_string();
                assert!(info["session"]["id"].is_string());
                axum::Json(if email.ends_with("@ok.com") {
                    json!({"success": true, "statusText": "hi", "userInfo": {"tier": "gold"}, "privileges": {"privileges": ["a"], "userName": email}})
                } else if email.ends_with("@wait.com") {
                    json!({"success": true, "verify": true, "statusText": "wait"})
                } else {
                    json!({"success": false, "statusText": "no way"})
                })
            }),
        )
        .route("/slow", any(std::future::pending::<String>))
        .route("/broken", any(|| async { "not json" }));
    let base = serve_router(service).await;
    let callout = |path: &str| {
        Some(Callout {
            url: format!("{base}{path}").parse().unwrap(),
            timeout: Duration::from_millis(200),
        })
    };
    let policy = Policy {
        default: Decision::Accept,
        allow: Matchers {
            emails: vec!["boss@x.com".into()],
            ..Matchers::default()
        },
        deny: Matchers {
            email_domains: vec!["evil.com".into()],
            ..Matchers::default()
        },
    };
    let hook = ConfigHook::new(policy.clone(), callout("/auth"), SessionPolicy::default());
    let info = |email: &str| json!({"email": email, "application": {"id": "a.b"}, "device": {"id": "d"}, "session": {"id": "00", "ip": ""}});
    let r = hook.authenticate(&info("ann@ok.com")).await;
    assert!(r.success && !r.verify);
    assert_eq!(r.user_info["tier"], "gold");
    assert_eq!(r.privileges.unwrap().privileges, ["a"]);
    assert!(hook.authenticate(&info("bob@wait.com")).await.verify);
    assert_eq!(
        hook.authenticate(&info("eve@else.com")).await,
        HookResult {
            status_text: "no way".into(),
            ..HookResult::default()
        }
    );
    assert!(
        !hook.authenticate(&info("x@evil.com")).await.success,
        "the deny list wins without a callout"
    );
    assert!(
        hook.authenticate(&info("boss@x.com")).await.success,
        "the allow list accepts without a callout"
    );
    for path in ["/slow", "/broken", "/missing"] {
        let r = ConfigHook::new(policy.clone(), callout(path), SessionPolicy::default())
            .authenticate(&info("ann@ok.com"))
            .await;
        assert!(
            !r.success && r.status_text.contains("unavailable"),
            "{path}: {r:?}"
        );
    }
    let r = ConfigHook::new(
        Policy {
            default: Decision::Verify,
            ..Policy::default()
        },
        None,
        SessionPolicy::default(),
    )
    .authenticate(&info("z@z.com"))
    .await;
    assert!(r.success && r.verify, "no callout: the default decision");
}

fn outbox_links(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut links: Vec<String> = entries
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .filter_map(|mail| {
            mail.lines()
                .find(|l| l.contains("/activation?token="))
                .map(|l| l.trim().to_string())
        })
        .collect();
    links.sort();
    links
}

#[tokio::test]
async fn email_validation_link_accepts_a_pending_android_session_once_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let m = Harness::start_with(
        &data,
        IdMode::Random,
        false,
        None,
        Some("http://sessions.example"),
        Relogin {
            hook: false,
            new_token: false,
        },
    )
    .await;
    *m.hook.answer.lock() = HookResult::verify("");
    let (st, v) = m.post("$authenticate", ANDROID, None).await;
    assert_eq!(
        (st, v["statusText"].as_str()),
        (StatusCode::OK, Some("Verify your email address"))
    );
    let id = v["id"].as_str().unwrap().to_string();
    let links = outbox_links(&data.join("outbox"));
    assert_eq!(links.len(), 1);
    let mail = std::fs::read_dir(data.join("outbox"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mail = std::fs::read_to_string(mail).unwrap();
    assert!(
        mail.contains("To: a@b.com") && !mail.contains(&id),
        "the link never carries the session id"
    );
    // A second login within the validity sends nothing new.
    let (_, v) = m.post("$authenticate", ANDROID, None).await;
    assert!(v["statusText"].as_str().unwrap().contains("already sent"));
    assert_eq!(outbox_links(&data.join("outbox")).len(), 1);
    // Restart: the outstanding link still works.
    drop(m);
    let m = Harness::start_with(
        &data,
        IdMode::Random,
        false,
        None,
        Some("http://sessions.example"),
        Relogin {
            hook: false,
            new_token: false,
        },
    )
    .await;
    let query = links[0].split_once("/activation").unwrap().1.to_string();
    // Opening the link shows a button and changes nothing (mail scanners fetch links).
    let resp = m
        .http
        .get(format!("{}/activation{query}", m.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("method=\"post\""));
    assert_eq!(
        read_json(&m.file("com.company.app", &id))["status"],
        "pending"
    );
    let link_token = query.trim_start_matches("?token=").to_string();
    let resp = m
        .http
        .post(format!("{}/activation", m.base))
        .form(&[("token", &link_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("successfully authenticated")
    );
    assert_eq!(
        read_json(&m.file("com.company.app", &id))["status"],
        "accepted"
    );
    *m.hook.answer.lock() = HookResult::deny("the hook is not asked for an accepted device");
    let (_, v) = m.post("$authenticate", ANDROID, None).await;
    assert_eq!(v["id"], id.as_str());
    let token = v["token"].as_str().unwrap().to_string();
    assert_eq!(m.get("Event", Some(&token)).await.0, 200);
    // The link works once; a made-up one never.
    let resp = m
        .http
        .post(format!("{}/activation", m.base))
        .form(&[("token", &link_token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("expired"));
    assert_eq!(
        m.http
            .post(format!("{}/activation", m.base))
            .form(&[("token", "forged")])
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        m.http
            .post(format!("{}/activation", m.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

/// A login body of `device` with `email`, iOS-shaped.
fn ios_login(device: &str, email: &str) -> String {
    IOS.replace("0DC5132E-1EF4-407C-A832-5FE33D818AF3", device)
        .replace("\"email\":\"\"", &format!("\"email\":{}", json!(email)))
}

async fn post_activation(m: &Harness, link: &str) -> StatusCode {
    let token = link.split("token=").nth(1).unwrap().trim();
    m.http
        .post(format!("{}/activation", m.base))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .status()
}

/// Issue: a validation link proves only the mailbox it was sent to.
#[tokio::test]
async fn an_email_link_validates_only_the_address_it_was_sent_to() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let m = Harness::start_with(
        &data,
        IdMode::Random,
        false,
        None,
        Some("http://sessions.example"),
        Relogin::default(),
    )
    .await;
    *m.hook.answer.lock() = HookResult::verify("");
    let (_, v) = m
        .post("$authenticate", &ios_login("DEV-1", "me@own.example"), None)
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    assert!(v.get("token").is_none());
    let (_, v) = m
        .post(
            "$authenticate",
            &ios_login("DEV-1", "boss@victim.example"),
            None,
        )
        .await;
    assert_eq!(v["id"], id.as_str(), "the same pending session");
    let links = outbox_links(&data.join("outbox"));
    assert_eq!(links.len(), 2, "a changed address starts a new validation");
    let folder = "UTT7VDX8W5.com.contactApp.Contact";
    let mails: Vec<String> = std::fs::read_dir(data.join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let link_to = |address: &str| {
        let mail = mails
            .iter()
            .find(|m| m.contains(&format!("To: {address}")))
            .unwrap();
        mail.lines()
            .find(|l| l.contains("/activation?token="))
            .unwrap()
            .trim()
            .to_string()
    };
    // The link mailed to me@own does not validate boss@victim.
    assert_eq!(
        post_activation(&m, &link_to("me@own.example")).await,
        StatusCode::NOT_FOUND
    );
    let file = read_json(&m.file(folder, &id));
    assert_eq!(
        (file["status"].as_str(), file["email"].as_str()),
        (Some("pending"), Some("boss@victim.example"))
    );
    let (_, v) = m
        .post(
            "$authenticate",
            &ios_login("DEV-1", "boss@victim.example"),
            None,
        )
        .await;
    assert!(v.get("token").is_none(), "still pending: {v}");
    // The link that reached boss@victim does.
    assert_eq!(
        post_activation(&m, &link_to("boss@victim.example")).await,
        StatusCode::OK
    );
    assert_eq!(read_json(&m.file(folder, &id))["status"], "accepted");
}

/// Issue: six new devices with one address get the per-address mail limit, not six mails.
#[tokio::test]
async fn validation_mails_are_limited_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let m = Harness::start_with(
        &data,
        IdMode::Random,
        false,
        None,
        Some("http://sessions.example"),
        Relogin::default(),
    )
    .await;
    *m.hook.answer.lock() = HookResult::verify("");
    let mut texts = Vec::new();
    for i in 0..6 {
        let (_, v) = m
            .post(
                "$authenticate",
                &ios_login(&format!("BOMB-{i}"), "victim@example.com"),
                None,
            )
            .await;
        texts.push(v["statusText"].as_str().unwrap().to_string());
    }
    assert_eq!(outbox_links(&data.join("outbox")).len(), 3);
    assert!(
        texts[3..].iter().all(|t| t.contains("Too many")),
        "{texts:?}"
    );
}

/// Issue: the files are the administrator's truth until Push: a device's `$userInfo`
/// never undoes a hold, an e-mail edit or a deletion.
#[tokio::test]
async fn device_writes_keep_the_administrators_unpushed_edits() {
    use reqwest::Method;
    let m = Harness::start(IdMode::Random, false).await;
    let folder = "UTT7VDX8W5.com.contactApp.Contact";
    let user_info = |token: String| {
        let m = &m;
        async move {
            m.post(
                "$userInfo",
                r#"{"device":{"token":"apns-123"},"userInfo":{"k":1}}"#,
                Some(&token),
            )
            .await
        }
    };
    let login = |device: &'static str| {
        let m = &m;
        async move {
            let (_, v) = m.post("$authenticate", &ios_login(device, ""), None).await;
            (
                v["id"].as_str().unwrap().to_string(),
                v["token"].as_str().unwrap().to_string(),
            )
        }
    };
    // Hold.
    let (id, token) = login("HOLD").await;
    let (st, _) = m
        .admin(
            Method::PUT,
            &format!("/apps/{folder}/sessions/{id}/status"),
            Some(json!({"status": "pending"})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(user_info(token.clone()).await.0, 200);
    let file = read_json(&m.file(folder, &id));
    assert_eq!(file["status"], "pending", "the hold stays");
    assert_eq!(
        file["device"]["token"], "apns-123",
        "the device's own field is written"
    );
    // E-mail edit.
    let (id2, token2) = login("EMAIL").await;
    m.admin(
        Method::PUT,
        &format!("/apps/{folder}/sessions/{id2}/email"),
        Some(json!({"email": "set@by.admin"})),
    )
    .await;
    user_info(token2.clone()).await;
    assert_eq!(read_json(&m.file(folder, &id2))["email"], "set@by.admin");
    // Deletion.
    let (id3, token3) = login("GONE").await;
    m.admin(
        Method::DELETE,
        &format!("/apps/{folder}/sessions/{id3}"),
        None,
    )
    .await;
    user_info(token3.clone()).await;
    assert!(
        !m.file(folder, &id3).exists(),
        "a deleted session stays deleted"
    );
    // After Push the server follows the files.
    let (st, _) = m.admin(Method::POST, "/push", None).await;
    assert_eq!(st, 200);
    assert_eq!(m.get("Event", Some(&token)).await.0, 401);
    assert_eq!(m.get("Event", Some(&token3)).await.0, 401);
    let (st, echo) = m.get("Event", Some(&token2)).await;
    assert_eq!(
        (st, echo["headers"]["x-session-email"].as_str()),
        (StatusCode::OK, Some("set@by.admin"))
    );
}

/// Issue: one device's hanging callout holds up nobody else.
#[tokio::test]
async fn a_hanging_callout_never_delays_other_devices_or_push() {
    use reqwest::Method;
    let m = Arc::new(Harness::start(IdMode::Random, false).await);
    let (_, v) = m.post("$authenticate", &ios_login("OTHER", ""), None).await;
    let other = v["token"].as_str().unwrap().to_string();
    let (_, v) = m
        .post("$authenticate", &ios_login("LEAVING", ""), None)
        .await;
    let leaving = v["token"].as_str().unwrap().to_string();
    *m.hook.hang.lock() = Some("HANGS".into());
    let hanging = {
        let m = m.clone();
        tokio::spawn(async move { m.post("$authenticate", &ios_login("HANGS", ""), None).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut slowest = std::time::Duration::ZERO;
    let mut time = |t: std::time::Instant| slowest = slowest.max(t.elapsed());
    let t = std::time::Instant::now();
    assert_eq!(
        m.post("$authenticate", &ios_login("NEW", ""), None).await.0,
        200
    );
    time(t);
    let t = std::time::Instant::now();
    assert_eq!(
        m.post("$authenticate", &ios_login("OTHER", ""), None)
            .await
            .0,
        200
    );
    time(t);
    let t = std::time::Instant::now();
    assert_eq!(
        m.post("$userInfo", r#"{"device":{"token":"x"}}"#, Some(&other))
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "retired by the re-login"
    );
    time(t);
    let t = std::time::Instant::now();
    assert_eq!(m.post("$logout", "", Some(&leaving)).await.0, 200);
    time(t);
    let t = std::time::Instant::now();
    assert_eq!(m.admin(Method::POST, "/push", None).await.0, 200);
    time(t);
    assert!(!hanging.is_finished(), "the callout still hangs");
    assert!(
        slowest < std::time::Duration::from_millis(500),
        "slowest answer {slowest:?}"
    );
    assert_eq!(hanging.await.unwrap().0, 200);
}

/// Issue: `$verify` of a 4D file whose token has no teamID answers that token as is.
#[tokio::test]
async fn verify_answers_the_stored_token_byte_for_byte() {
    use base64::Engine as _;
    let m = Harness::start(IdMode::Random, false).await;
    let id = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";
    let token = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!(r#"{{"appNameID":"com.company.app","id":"{id}"}}"#));
    let dir = m.root.join("com.company.app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(id),
        format!(r#"{{"application":{{"id":"com.company.app"}},"email":"","device":{{"id":"d1"}},"session":{{"id":"{id}","ip":""}},"status":"accepted","token":"{token}"}}"#),
    )
    .unwrap();
    m.store.refresh().await.unwrap();
    let (st, v) = m
        .post("$verify", &json!({"token": token}).to_string(), None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(v["token"], token.as_str());
    assert_eq!(m.get("Event", v["token"].as_str()).await.0, 200);
}

/// Issue: a device id is not a secret: logging in with someone's device id never
/// hands over their token.
#[tokio::test]
async fn a_known_device_id_never_returns_the_previous_holders_token() {
    let m = Harness::start(IdMode::Random, false).await;
    let (_, victim) = m
        .post(
            "$authenticate",
            &ios_login("LEAKED-UDID", "victim@example.com"),
            None,
        )
        .await;
    let victim_token = victim["token"].as_str().unwrap().to_string();
    let (_, attacker) = m
        .post(
            "$authenticate",
            &ios_login("LEAKED-UDID", "attacker@example.com"),
            None,
        )
        .await;
    assert_ne!(attacker["token"], victim["token"]);
    assert_eq!(
        m.hook.calls.load(Ordering::SeqCst),
        2,
        "the hook decides every login"
    );
    assert_eq!(
        m.get("Event", Some(&victim_token)).await.0,
        401,
        "the previous token is retired"
    );
}

/// Issue: what an anonymous login may store, and how often.
#[tokio::test]
async fn login_size_and_rate_limits() {
    let m = Harness::start(IdMode::Random, false).await;
    let big = IOS.replace("iPhone X", &"x".repeat(10_000));
    let (st, v) = m.post("$authenticate", &big, None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        std::fs::read_dir(&m.root).map_or(true, |mut d| d.next().is_none()),
        "nothing written"
    );
    let mut last = (StatusCode::OK, Value::Null);
    for i in 0..61 {
        last = m
            .post("$authenticate", &ios_login(&format!("FLOOD-{i}"), ""), None)
            .await;
        if last.0 != StatusCode::OK {
            assert_eq!(i, 60, "60 new devices a minute pass");
        }
    }
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS);
    assert_mobile_error(&last.1, 1912);
}

/// Issue: login input follows the admin rules.
#[tokio::test]
async fn login_input_follows_the_admin_rules() {
    let m = Harness::start(IdMode::Random, false).await;
    for body in [
        IOS.replace("UTT7VDX8W5", "T."),
        IOS.replace("com.contactApp.Contact", "com.contactApp.\u{202e}Contact"),
        ios_login("D", "me\u{1}@example.com"),
        ios_login("D\u{200b}", ""),
    ] {
        let (st, v) = m.post("$authenticate", &body, None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
}

/// Sends a raw request line (paths a client library would normalize).
async fn raw_get(base: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Issue: the proxy refuses dot segments, says who the client is, and is bounded.
#[tokio::test]
async fn the_proxy_refuses_dot_segments_sets_forwarded_for_and_is_bounded() {
    let m = Harness::start(IdMode::Random, false).await;
    let (_, v) = m.post("$authenticate", IOS, None).await;
    let token = v["token"].as_str().unwrap();
    for path in [
        "/mobileapp/../../internal/admin",
        "/mobileapp/%2e%2e/%2E%2E/internal",
        "/mobileapp/a/%2e/b",
        "/mobileapp/a%2f..%2fb",
    ] {
        let answer = raw_get(&m.base, path, token).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    let answer = raw_get(&m.base, "/mobileapp/Event", token).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let echo: Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| {
        // A chunked body: the JSON sits between the chunk sizes.
        serde_json::from_str(body.lines().find(|l| l.starts_with('{')).unwrap()).unwrap()
    });
    assert_eq!(
        echo["headers"]["x-forwarded-for"], "127.0.0.1",
        "the client's claim is replaced"
    );
    let (st, _) = m.get("slow", Some(token)).await;
    assert_eq!(st, StatusCode::GATEWAY_TIMEOUT);
    let upload = m
        .http
        .post(format!("{}/mobileapp/upload", m.base))
        .bearer_auth(token)
        .body(vec![b'x'; 300 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
