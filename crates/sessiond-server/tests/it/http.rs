//! Browser and service API: cookie life cycle, expiry, OTP, login, errors, concurrency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_core::{ManualClock, PrivilegeInput, Roles, SessionPolicy, Timestamp};
use sessiond_server::users::Users;
use sessiond_server::{CookieConfig, Session, SessionLayer};
use sessiond_store::{MemoryStore, SessionStore, Sessions};
use tokio::net::TcpListener;

pub(crate) const KEY: &str = "test-api-key";
pub(crate) const ROLES: &str = r#"{
  "privileges": [{"privilege": "a"}, {"privilege": "b"}, {"privilege": "p"},
                 {"privilege": "simple"}, {"privilege": "medium", "includes": ["simple"]}],
  "roles": [{"role": "Medium", "privileges": ["medium"]},
            {"role": "Clerk", "privileges": ["a"]}, {"role": "Boss", "privileges": ["b"]}],
  "permissions": {"allowed": []}
}"#;

pub(crate) struct Server {
    base: String,
    clock: ManualClock,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub(crate) fn sessions(clock: &ManualClock) -> Sessions {
    sessions_over(Arc::new(MemoryStore::new()), clock)
}

fn sessions_over(store: Arc<dyn SessionStore>, clock: &ManualClock) -> Sessions {
    let roles = Roles::parse(ROLES, "roles.json").unwrap();
    Sessions::new(
        store,
        Arc::new(roles),
        Arc::new(clock.clone()),
        SessionPolicy::default(),
    )
}

pub(crate) async fn serve_router(router: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

impl Server {
    pub(crate) async fn start() -> Self {
        Self::over(Arc::new(MemoryStore::new())).await
    }

    /// A server whose sessions live in `store`.
    async fn over(store: Arc<dyn SessionStore>) -> Self {
        let clock = ManualClock::new(Timestamp(1_800_000_000_000));
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        Users::add(
            &users,
            "ann",
            "ann-password",
            vec!["Medium".into()],
            vec!["a".into()],
        )
        .unwrap();
        let node = sessiond_server::Server::builder(crate::node_config(dir.path(), "TestApp", ""))
            .store(store)
            .roles(Roles::parse(ROLES, "roles.json").unwrap())
            .clock(Arc::new(clock.clone()))
            .secrets(Some(KEY.into()), None)
            .without_mobile()
            .build()
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(node.serve(listener, std::future::pending()));
        Self {
            base: format!("http://{addr}"),
            clock,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    pub(crate) fn http_client(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET /api/session with an optional cookie; returns (status, body, new cookie).
    pub(crate) async fn own(&self, cookie: Option<&str>) -> (Value, Option<String>) {
        let mut req = self.http.get(self.url("/api/session"));
        if let Some(c) = cookie {
            req = req.header("cookie", format!("4DSID_TestApp={c}"));
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let cookie = set_cookie(&resp);
        let body: Value = resp.json().await.unwrap();
        crate::exactly::<sessiond_server::contract::SessionView>(&body);
        (body, cookie)
    }

    pub(crate) async fn service(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = self.url(&format!("/service/v1{path}"));
        crate::send_json(&self.http, method, url, KEY, body).await
    }
}

fn set_cookie(resp: &reqwest::Response) -> Option<String> {
    let raw = resp.headers().get("set-cookie")?.to_str().unwrap();
    let value = raw.split(';').next().unwrap().split_once('=').unwrap().1;
    Some(value.to_string())
}

fn raw_set_cookie(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

use reqwest::Method;

#[tokio::test]
async fn case_01_guest_on_first_request() {
    let s = Server::start().await;
    let resp = s.http.get(s.url("/api/session")).send().await.unwrap();
    let header = raw_set_cookie(&resp);
    assert!(header.starts_with("4DSID_TestApp="), "{header}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(header.contains(attr), "{header} lacks {attr}");
    }
    assert!(!header.contains("Secure"), "plain HTTP: no Secure");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["isGuest"], true);
    assert_eq!(body["userName"], "");
    assert_eq!(body["id"].as_str().unwrap().len(), 32);
    assert_eq!(body["info"]["type"], "web");
    let (_, storage) = s
        .service(
            Method::GET,
            &format!("/sessions/{}/storage", body["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(storage["storage"], json!({}));
    let value = header.split(';').next().unwrap().split_once('=').unwrap().1;
    assert!(
        !value.contains(body["id"].as_str().unwrap()),
        "the cookie is not the public id"
    );
}

#[tokio::test]
async fn case_02_cookie_reuse() {
    let s = Server::start().await;
    let (first, cookie) = s.own(None).await;
    let cookie = cookie.unwrap();
    let id = first["id"].as_str().unwrap();
    let (st, _) = s
        .service(
            Method::PATCH,
            &format!("/sessions/{id}/storage"),
            Some(json!({"x": "1"})),
        )
        .await;
    assert_eq!(st, 200);
    let (second, again) = s.own(Some(&cookie)).await;
    assert_eq!(second["id"], first["id"]);
    assert!(again.is_none(), "a known cookie is not re-issued");
    let (_, storage) = s
        .service(Method::GET, &format!("/sessions/{id}/storage"), None)
        .await;
    assert_eq!(storage["storage"]["x"], "1");
}

#[tokio::test]
async fn case_03_no_session_context_means_none() {
    assert!(Session::current().is_none());
    let clock = ManualClock::new(Timestamp(0));
    let app = Router::new()
        .route(
            "/with",
            get(|| async { Session::current().is_some().to_string() }),
        )
        .layer(SessionLayer::new(
            sessions(&clock),
            CookieConfig::for_app("A"),
        ))
        .route(
            "/without",
            get(|| async { Session::current().is_some().to_string() }),
        );
    let base = serve_router(app).await;
    assert_eq!(
        reqwest::get(format!("{base}/with"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "true"
    );
    assert_eq!(
        reqwest::get(format!("{base}/without"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "false"
    );
}

#[tokio::test]
async fn case_06_expiry_gives_a_new_guest_with_empty_storage() {
    let s = Server::start().await;
    let (first, cookie) = s.own(None).await;
    let cookie = cookie.unwrap();
    let id = first["id"].as_str().unwrap();
    s.service(
        Method::PATCH,
        &format!("/sessions/{id}/storage"),
        Some(json!({"x": 1})),
    )
    .await;
    s.clock.advance(Duration::from_secs(59 * 60));
    let (same, _) = s.own(Some(&cookie)).await;
    assert_eq!(
        same["id"], first["id"],
        "activity before the deadline keeps the session"
    );
    s.clock.advance(Duration::from_secs(60 * 60));
    let (fresh, new_cookie) = s.own(Some(&cookie)).await;
    assert_ne!(fresh["id"], first["id"]);
    assert_eq!(fresh["isGuest"], true);
    assert!(new_cookie.is_some_and(|c| c != cookie));
    let (_, storage) = s
        .service(
            Method::GET,
            &format!("/sessions/{}/storage", fresh["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(storage["storage"], json!({}));
    let (st, body) = s
        .service(Method::GET, &format!("/sessions/{id}"), None)
        .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
}

/// A test app whose handlers use the `Session` API the way 4D code does.
async fn handler_app() -> (String, Sessions) {
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let sessions = sessions(&clock);
    let app = Router::new()
        .route(
            "/otp",
            get(|| async {
                let s = Session::current().unwrap();
                s.update_storage(|m| {
                    m.insert("owner".into(), "creator".into());
                    Ok(())
                })
                .await
                .unwrap();
                s.set_privileges(&PrivilegeInput::names(["a"])).await.unwrap();
                s.create_otp(None).await.unwrap()
            }),
        )
        .route(
            "/whoami",
            get(|s: Session| async move {
                let storage = s.storage().await.unwrap();
                json!({"id": s.id().to_string(), "a": s.has_privilege("a"), "owner": storage.get("owner")}).to_string()
            }),
        )
        .route(
            "/restore/{token}",
            get(|s: Session, axum::extract::Path(t): axum::extract::Path<String>| async move {
                let before = s.id();
                let ok = s.restore(&t).await.unwrap();
                json!({"ok": ok, "before": before.to_string(), "after": s.id().to_string()}).to_string()
            }),
        )
        .layer(SessionLayer::new(sessions.clone(), CookieConfig::for_app("A")));
    (serve_router(app).await, sessions)
}

fn cookie_of(resp: &reqwest::Response) -> String {
    set_cookie(resp).unwrap()
}

/// GET a handler app URL (cookie `4DSID_A`), its body parsed as JSON.
async fn get_json(url: &str, cookie: Option<&str>) -> Value {
    let mut req = reqwest::Client::new().get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("4DSID_A={c}"));
    }
    serde_json::from_str(&req.send().await.unwrap().text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn case_15_otp_restores_the_session_once() {
    let (base, _) = handler_app().await;
    let http = reqwest::Client::new();
    let resp = http.get(format!("{base}/otp")).send().await.unwrap();
    let creator_cookie = cookie_of(&resp);
    let otp = resp.text().await.unwrap();
    assert_eq!(otp.len(), 32);
    let creator: Value = get_json(&format!("{base}/whoami"), Some(&creator_cookie)).await;
    // Another browser (no cookie) arrives with $4DSID.
    let resp = http
        .get(format!("{base}/whoami?%244DSID={otp}"))
        .send()
        .await
        .unwrap();
    let restored_cookie = cookie_of(&resp);
    let other: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(other["id"], creator["id"]);
    assert_eq!(other["a"], true);
    assert_eq!(other["owner"], "creator");
    // The re-issued cookie keeps working, and the creator's cookie still works.
    for c in [&restored_cookie, &creator_cookie] {
        let v: Value = get_json(&format!("{base}/whoami"), Some(c)).await;
        assert_eq!(v["id"], creator["id"]);
    }
    // Second use: not restored; a fresh guest session is used.
    let again: Value = get_json(&format!("{base}/whoami?$4DSID={otp}"), None).await;
    assert_ne!(again["id"], creator["id"]);
}

#[tokio::test]
async fn case_16_restore_unknown_token_is_false_and_keeps_the_session() {
    let (base, _) = handler_app().await;
    let v: Value = get_json(&format!("{base}/restore/unknown"), None).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["before"], v["after"]);
    let v: Value = get_json(
        &format!("{base}/restore/3C81A8D7AFE64C2E9CCFFCDC35DC52F5"),
        None,
    )
    .await;
    assert_eq!(v["ok"], false);
}

#[tokio::test]
async fn restore_in_a_handler_switches_session_and_reissues_cookie() {
    let (base, _) = handler_app().await;
    let http = reqwest::Client::new();
    let otp = http
        .get(format!("{base}/otp"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = http
        .get(format!("{base}/restore/{otp}"))
        .send()
        .await
        .unwrap();
    let cookie = cookie_of(&resp);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    assert_ne!(v["before"], v["after"]);
    let me: Value = get_json(&format!("{base}/whoami"), Some(&cookie)).await;
    assert_eq!(me["id"], v["after"]);
}

#[tokio::test]
async fn case_14_promotion_is_invisible_to_a_concurrent_request() {
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let sessions = sessions(&clock);
    let gate = Arc::new(tokio::sync::Notify::new());
    let promoted = Arc::new(tokio::sync::Notify::new());
    let (g1, p1) = (gate.clone(), promoted.clone());
    let app = Router::new()
        .route(
            "/promote",
            get(move |s: Session| {
                let (gate, promoted) = (g1.clone(), p1.clone());
                async move {
                    let id = s.promote("p");
                    promoted.notify_one();
                    gate.notified().await;
                    let held = s.has_privilege("p");
                    s.demote(id);
                    json!({"id": id, "held": held, "after_demote": s.has_privilege("p"), "listed": s.get_privileges()}).to_string()
                }
            }),
        )
        .route("/check", get(|s: Session| async move { s.has_privilege("p").to_string() }))
        .layer(SessionLayer::new(sessions, CookieConfig::for_app("A")));
    let base = serve_router(app).await;
    let http = reqwest::Client::new();
    let cookie = cookie_of(&http.get(format!("{base}/check")).send().await.unwrap());
    let c = cookie.clone();
    let h = http.clone();
    let b = base.clone();
    let first = tokio::spawn(async move {
        h.get(format!("{b}/promote"))
            .header("cookie", format!("4DSID_A={c}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    promoted.notified().await;
    let other = http
        .get(format!("{base}/check"))
        .header("cookie", format!("4DSID_A={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        other.text().await.unwrap(),
        "false",
        "another request of the same session does not see it"
    );
    gate.notify_one();
    let v: Value = serde_json::from_str(&first.await.unwrap()).unwrap();
    assert!(v["id"].as_u64().unwrap() > 0);
    assert_eq!(v["held"], true);
    assert_eq!(v["after_demote"], false);
    assert_eq!(
        v["listed"],
        json!([]),
        "getPrivileges excludes promoted privileges"
    );
}

#[tokio::test]
async fn case_21_session_storage_by_id() {
    let s = Server::start().await;
    let (me, _) = s.own(None).await;
    let id = me["id"].as_str().unwrap();
    s.service(
        Method::PATCH,
        &format!("/sessions/{id}/storage"),
        Some(json!({"k": "v"})),
    )
    .await;
    let (st, body) = s
        .service(Method::GET, &format!("/sessions/{id}/storage"), None)
        .await;
    assert_eq!((st, &body["storage"]["k"]), (StatusCode::OK, &json!("v")));
    let (st, body) = s
        .service(
            Method::GET,
            "/sessions/3C81A8D7AFE64C2E9CCFFCDC35DC52F5/storage",
            None,
        )
        .await;
    assert_eq!(
        (st, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
}

#[tokio::test]
async fn case_22_process_activity_filter() {
    let s = Server::start().await;
    let (a, _) = s.own(None).await;
    let (_b, _) = s.own(None).await;
    let id = a["id"].as_str().unwrap();
    let (_, all) = s.service(Method::GET, "/activity", None).await;
    let mut kinds: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["storedProcedure", "web", "web"]);
    let (_, web) = s.service(Method::GET, "/activity?kind=web", None).await;
    assert_eq!(web["sessions"].as_array().unwrap().len(), 2);
    let (_, one) = s
        .service(Method::GET, &format!("/activity?session={id}"), None)
        .await;
    assert_eq!(one["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(one["sessions"][0]["ID"], id);
    let (_, procs) = s
        .service(
            Method::GET,
            &format!("/activity?session={id}&mode=processes"),
            None,
        )
        .await;
    assert!(procs.get("sessions").is_none());
    assert!(
        procs["processes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("session").is_none())
    );
    let (_, sess) = s
        .service(Method::GET, "/activity?mode=sessions&kind=web", None)
        .await;
    assert!(sess.get("processes").is_none());
    let (st, _) = s
        .service(
            Method::GET,
            "/activity?session=3C81A8D7AFE64C2E9CCFFCDC35DC52F5",
            None,
        )
        .await;
    assert_eq!(st, 404, "an unknown id gives no listing (4D: Null)");
    let (st, _) = s.service(Method::GET, "/activity?kind=martian", None).await;
    assert_eq!(st, 400);
}

#[tokio::test]
async fn login_ends_the_pre_login_cookie_at_once_and_logout_ends_the_session() {
    let s = Server::start().await;
    let (guest, cookie) = s.own(None).await;
    let cookie = cookie.unwrap();
    let resp = s
        .http
        .post(s.url("/api/login"))
        .header("cookie", format!("4DSID_TestApp={cookie}"))
        .json(&json!({"userName": "ann", "password": "ann-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let new_cookie = set_cookie(&resp).expect("a fresh cookie");
    assert_ne!(new_cookie, cookie);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(me["id"], guest["id"], "the session is kept");
    assert_eq!(me["userName"], "ann");
    assert_eq!(me["isGuest"], false);
    assert_eq!(me["privileges"], json!(["a", "simple", "medium"]));
    // The pre-login cookie never opens the logged-in session: within the grace window
    // a request with it is a guest that sets no cookie (it would replace the new one),
    // after it a new guest with its own cookie.
    let (during, set) = s.own(Some(&cookie)).await;
    assert_ne!(during["id"], guest["id"]);
    assert_eq!(
        (during["userName"].as_str(), during["isGuest"].as_bool()),
        (Some(""), Some(true))
    );
    assert!(
        set.is_none(),
        "no Set-Cookie for a request in flight with an ended token"
    );
    s.clock.advance(Duration::from_secs(31));
    let (after, set) = s.own(Some(&cookie)).await;
    assert_ne!(after["id"], guest["id"]);
    assert!(
        set.is_some(),
        "past the grace window: an ordinary new guest"
    );
    assert_eq!(s.own(Some(&new_cookie)).await.0["userName"], "ann");
    // Logout.
    let resp = s
        .http
        .post(s.url("/api/logout"))
        .header("cookie", format!("4DSID_TestApp={new_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(raw_set_cookie(&resp).contains("Max-Age=0"));
    let out: sessiond_server::contract::LoggedOut =
        crate::exactly(&resp.json::<Value>().await.unwrap());
    assert!(out.logged_out);
    let (after, _) = s.own(Some(&new_cookie)).await;
    assert_ne!(after["id"], guest["id"]);
    assert_eq!(after["isGuest"], true);
}

#[tokio::test]
async fn login_with_wrong_credentials_is_401_json() {
    let s = Server::start().await;
    for body in [
        json!({"userName": "ann", "password": "nope"}),
        json!({"userName": "zed", "password": "ann-password"}),
    ] {
        let resp = s
            .http
            .post(s.url("/api/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "invalid_credentials");
    }
    let resp = s
        .http
        .post(s.url("/api/login"))
        .json(&json!({"user": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_json");
}

#[tokio::test]
async fn service_privileges_in_all_three_forms() {
    let s = Server::start().await;
    let (me, cookie) = s.own(None).await;
    let id = me["id"].as_str().unwrap();
    let path = format!("/sessions/{id}/privileges");
    let (st, v) = s.service(Method::PUT, &path, Some(json!("a,b"))).await;
    assert_eq!(st, 200);
    assert_eq!(v["privileges"], json!(["a", "b"]));
    assert_eq!(v["cookie"]["name"], "4DSID_TestApp");
    let (_, v) = s
        .service(Method::PUT, &path, Some(json!(["a", "nope"])))
        .await;
    assert_eq!(
        (v["privileges"].clone(), v["unknown"].clone()),
        (json!(["a"]), json!(["nope"]))
    );
    let (_, v) = s
        .service(
            Method::PUT,
            &path,
            Some(json!({"roles": "Medium", "userName": "Ann"})),
        )
        .await;
    assert_eq!(v["privileges"], json!(["simple", "medium"]));
    assert_eq!(v["userName"], "Ann");
    let (_, v) = s
        .service(Method::GET, &format!("{path}/SIMPLE"), None)
        .await;
    assert_eq!(v["granted"], true);
    let (_, v) = s.service(Method::GET, &format!("{path}/a"), None).await;
    assert_eq!(v["granted"], false);
    let (_, v) = s.service(Method::GET, &path, None).await;
    assert_eq!(v["privileges"], json!(["simple", "medium"]));
    let (st, v) = s.service(Method::PUT, &path, Some(json!(42))).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_privileges"))
    );
    let (_, v) = s.service(Method::DELETE, &path, None).await;
    assert_eq!(v["privileges"], json!([]));
    assert_eq!(v["isGuest"], true);
    assert_eq!(v["cookie"], Value::Null, "a lowering issues no token");
    // The first raise ended the browser's cookie; a raise hands back a fresh cookie,
    // which keeps working.
    assert_ne!(s.own(cookie.as_deref()).await.0["id"], me["id"]);
    let (_, v) = s
        .service(
            Method::PUT,
            &path,
            Some(json!({"privileges": "a", "userName": "Bob"})),
        )
        .await;
    let new_cookie = v["cookie"]["value"].as_str().unwrap().to_string();
    s.clock.advance(Duration::from_secs(31));
    assert_eq!(s.own(Some(&new_cookie)).await.0["userName"], "Bob");
}

#[tokio::test]
async fn service_idle_timeout_otp_resolve_and_delete() {
    let s = Server::start().await;
    let (me, cookie) = s.own(None).await;
    let id = me["id"].as_str().unwrap();
    let (_, v) = s
        .service(
            Method::PUT,
            &format!("/sessions/{id}/idle-timeout"),
            Some(json!({"idleTimeout": 30})),
        )
        .await;
    assert_eq!(v["idleTimeout"], 60, "spec case 4 over HTTP");
    let (_, v) = s
        .service(
            Method::PUT,
            &format!("/sessions/{id}/idle-timeout"),
            Some(json!({"idleTimeout": 120})),
        )
        .await;
    assert_eq!(v["idleTimeout"], 120);
    let (st, _) = s
        .service(
            Method::PUT,
            &format!("/sessions/{id}/idle-timeout"),
            Some(json!({"idleTimeout": -1})),
        )
        .await;
    assert_eq!(st, 422);
    // OTP through the service API.
    let (_, otp) = s
        .service(
            Method::POST,
            &format!("/sessions/{id}/otp"),
            Some(json!({"lifespan": 3})),
        )
        .await;
    let token = otp["token"].as_str().unwrap().to_string();
    let (st, restored) = s
        .service(Method::POST, "/otp/restore", Some(json!({"token": token})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(restored["id"], id);
    let (other, _) = s.own(restored["cookie"]["value"].as_str()).await;
    assert_eq!(other["id"], id);
    let (st, v) = s
        .service(Method::POST, "/otp/restore", Some(json!({"token": token})))
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("otp_invalid")),
        "used"
    );
    let (_, otp) = s
        .service(Method::POST, &format!("/sessions/{id}/otp"), None)
        .await;
    s.clock.advance(Duration::from_secs(2 * 3600));
    let (st, _) = s.service(Method::POST, "/otp/restore", Some(otp)).await;
    assert_eq!(st, 404, "expired with its session");
    // Resolve and delete (on a new session).
    let (me, cookie2) = s.own(cookie.as_deref()).await;
    let id = me["id"].as_str().unwrap();
    let (st, v) = s
        .service(
            Method::POST,
            "/sessions/resolve",
            Some(json!({"cookie": cookie2.unwrap()})),
        )
        .await;
    assert_eq!((st, v["id"].as_str()), (StatusCode::OK, Some(id)));
    let (st, _) = s
        .service(
            Method::POST,
            "/sessions/resolve",
            Some(json!({"cookie": "garbage"})),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .service(Method::DELETE, &format!("/sessions/{id}"), None)
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .service(Method::DELETE, &format!("/sessions/{id}"), None)
        .await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn service_errors_are_json_and_change_nothing() {
    let s = Server::start().await;
    let (me, _) = s.own(None).await;
    let id = me["id"].as_str().unwrap();
    let storage = format!("/service/v1/sessions/{id}/storage");
    // Authentication.
    let resp = s.http.get(s.url(&storage)).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unauthorized");
    let resp = s
        .http
        .get(s.url(&storage))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Malformed JSON, wrong types, bad If-Match, non-object patch.
    let send = |m: Method, p: &str, body: &'static str| {
        s.http
            .request(m, s.url(p))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = send(Method::PATCH, &storage, "{not json").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "invalid_json");
    let resp = send(Method::PATCH, &storage, "[1,2]").await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_storage_update"
    );
    let (_, v) = s
        .service(Method::PATCH, &storage[11..], Some(json!({"n": "text"})))
        .await;
    assert_eq!(v["version"], 2);
    let resp = s
        .http
        .patch(s.url(&storage))
        .bearer_auth(KEY)
        .header("if-match", "1")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "version_mismatch"
    );
    let resp = s
        .http
        .patch(s.url(&storage))
        .bearer_auth(KEY)
        .header("if-match", "abc")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (st, v) = s
        .service(
            Method::POST,
            &format!("/sessions/{id}/storage/increment"),
            Some(json!({"path": "n", "by": 1})),
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_storage_update"))
    );
    let (st, _) = s
        .service(
            Method::POST,
            &format!("/sessions/{id}/storage/increment"),
            Some(json!({"path": "m", "by": "1"})),
        )
        .await;
    assert_eq!(st, 400);
    let (_, v) = s.service(Method::GET, &storage[11..], None).await;
    assert_eq!(
        v,
        json!({"version": 2, "storage": {"n": "text"}}),
        "nothing changed"
    );
    // Unknown and malformed ids, routes, methods, oversized bodies.
    let (st, v) = s.service(Method::GET, "/sessions/not-an-id", None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
    let (st, v) = s.service(Method::GET, "/nope", None).await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (st, v) = s
        .service(Method::POST, &format!("/sessions/{id}"), None)
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    let big = format!("{{\"x\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let resp = s
        .http
        .patch(s.url(&storage))
        .bearer_auth(KEY)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "body_too_large"
    );
    let (st, v) = s
        .service(
            Method::GET,
            "/sessions/3C81A8D7AFE64C2E9CCFFCDC35DC52F5/privileges/a",
            None,
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    let health: sessiond_server::contract::Health =
        crate::exactly(&resp.json::<Value>().await.unwrap());
    assert_eq!(health.status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_64_clients_x_100_increments_lose_nothing() {
    let s = Arc::new(Server::start().await);
    let (me, _) = s.own(None).await;
    let id = me["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let (st, _) = s
                    .service(
                        Method::POST,
                        &format!("/sessions/{id}/storage/increment"),
                        Some(json!({"path": "hits.n", "by": 1})),
                    )
                    .await;
                assert_eq!(st, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, v) = s
        .service(Method::GET, &format!("/sessions/{id}/storage"), None)
        .await;
    assert_eq!(v["storage"]["hits"]["n"], 6400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_64_clients_x_100_read_patch_if_match_lose_nothing() {
    let s = Arc::new(Server::start().await);
    let (me, _) = s.own(None).await;
    let id = me["id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (s, id) = (s.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            let url = s.url(&format!("/service/v1/sessions/{id}/storage"));
            for _ in 0..100 {
                let mut conflicts = 0u32;
                loop {
                    let v: Value = s
                        .http
                        .get(&url)
                        .bearer_auth(KEY)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let n = v["storage"]["n"].as_i64().unwrap_or(0);
                    let resp = s
                        .http
                        .patch(&url)
                        .bearer_auth(KEY)
                        .header("if-match", v["version"].to_string())
                        .json(&json!({"n": n + 1}))
                        .send()
                        .await
                        .unwrap();
                    match resp.status().as_u16() {
                        200 => break,
                        409 => {
                            // Randomized exponential backoff, as a well-behaved client does.
                            conflicts = (conflicts + 1).min(8);
                            let cap = 50u64 << conflicts;
                            let r = u64::from_le_bytes(sessiond_core::id::random_bytes());
                            tokio::time::sleep(Duration::from_micros(r % cap)).await;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, v) = s
        .service(Method::GET, &format!("/sessions/{id}/storage"), None)
        .await;
    assert_eq!(v["storage"]["n"], 6400);
}

#[tokio::test]
async fn repeated_failed_logins_of_a_user_get_429_until_the_window_ends_and_others_go_on() {
    use sessiond_server::passwords::{MAX_USER_FAILURES, WINDOW};
    let s = Server::start().await;
    let login = |user: &'static str, password: &'static str| {
        s.http
            .post(s.url("/api/login"))
            .json(&json!({"userName": user, "password": password}))
            .send()
    };
    // Nine wrong passwords for zed, a correct login of ann, repeated: ann's success
    // does not reset zed's count.
    let mut failures = 0;
    while failures < MAX_USER_FAILURES {
        assert_eq!(login("zed", "wrong").await.unwrap().status(), 401);
        failures += 1;
        if failures % 9 == 0 {
            assert_eq!(login("ann", "ann-password").await.unwrap().status(), 200);
        }
    }
    let resp = login("zed", "wrong").await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    for _ in 0..MAX_USER_FAILURES {
        assert_eq!(login("ann", "wrong").await.unwrap().status(), 401);
    }
    let resp = login("ann", "ann-password").await.unwrap();
    assert_eq!(resp.status(), 429, "even the right password waits");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "too_many_attempts"
    );
    s.clock.advance(WINDOW);
    assert_eq!(login("ann", "ann-password").await.unwrap().status(), 200);
}

/// GET /api/session with `cookie` and an optional `$4DSID`; (status, body, Set-Cookie value).
async fn visit(s: &Server, cookie: Option<&str>, otp: Option<&str>) -> (Value, Option<String>) {
    let url = match otp {
        Some(t) => s.url(&format!("/api/session?$4DSID={t}")),
        None => s.url("/api/session"),
    };
    let mut req = s.http.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("4DSID_TestApp={c}"));
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let set = set_cookie(&resp);
    (resp.json().await.unwrap(), set)
}

impl Server {
    async fn otp_of(&self, id: &Value) -> String {
        let (st, v) = self
            .service(
                Method::POST,
                &format!("/sessions/{}/otp", id.as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn login(&self, cookie: &str) -> String {
        let resp = self
            .http
            .post(self.url("/api/login"))
            .header("cookie", format!("4DSID_TestApp={cookie}"))
            .json(&json!({"userName": "ann", "password": "ann-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        set_cookie(&resp).expect("a fresh cookie")
    }
}

/// Issue: an attacker who shares a guest session through an OTP must not inherit the
/// victim's login — not during the grace window, not after.
#[tokio::test]
async fn otp_restore_then_login_never_hands_the_session_to_the_first_holder() {
    let s = Server::start().await;
    let (attacker_view, attacker) = visit(&s, None, None).await;
    let attacker = attacker.unwrap();
    let otp = s.otp_of(&attacker_view["id"]).await;
    let (victim_view, victim) = visit(&s, None, Some(&otp)).await;
    assert_eq!(
        victim_view["id"], attacker_view["id"],
        "the OTP shares the session"
    );
    let victim = s.login(&victim.unwrap()).await;
    for wait in [0, 1, 29, 31, 600] {
        s.clock.advance(Duration::from_secs(wait));
        let (seen, _) = visit(&s, Some(&attacker), None).await;
        assert_ne!(seen["id"], attacker_view["id"], "after {wait} s");
        assert_eq!(seen["userName"], "", "after {wait} s");
    }
    assert_eq!(visit(&s, Some(&victim), None).await.0["userName"], "ann");
}

/// Issue: a privilege raise through the service API ends every browser token at once;
/// the backend hands the new one over. A lowering ends none.
#[tokio::test]
async fn service_raise_ends_every_token_and_a_lowering_none() {
    let s = Server::start().await;
    let (view, first) = visit(&s, None, None).await;
    let first = first.unwrap();
    let otp = s.otp_of(&view["id"]).await;
    let second = visit(&s, None, Some(&otp)).await.1.unwrap();
    let path = format!("/sessions/{}/privileges", view["id"].as_str().unwrap());
    let (_, v) = s.service(Method::PUT, &path, Some(json!(["a", "b"]))).await;
    let handed = v["cookie"]["value"].as_str().unwrap().to_string();
    for c in [&first, &second] {
        let (seen, set) = visit(&s, Some(c), None).await;
        assert_ne!(seen["id"], view["id"]);
        assert!(set.is_none(), "within the grace window: no cookie");
    }
    // Lowering: everyone who holds the session keeps it.
    let third = visit(&s, None, Some(&s.otp_of(&view["id"]).await))
        .await
        .1
        .unwrap();
    let (_, v) = s.service(Method::PUT, &path, Some(json!("a"))).await;
    assert_eq!(v["cookie"], Value::Null);
    s.clock.advance(Duration::from_secs(60));
    for c in [&handed, &third] {
        let (seen, set) = visit(&s, Some(c), None).await;
        assert_eq!(
            (seen["id"].clone(), seen["privileges"].clone()),
            (view["id"].clone(), json!(["a"]))
        );
        assert!(set.is_none());
    }
}

/// Issue: no live cookie is dropped silently. 50 clients restoring OTPs of a session
/// (4D's pattern for third-party callbacks) while its creator keeps using it leave
/// the creator's cookie working; lowerings never touch a cookie.
#[tokio::test]
async fn fifty_otp_restores_leave_the_creators_cookie_working() {
    let s = Server::start().await;
    let (view, creator) = visit(&s, None, None).await;
    let creator = creator.unwrap();
    let path = format!("/sessions/{}/storage", view["id"].as_str().unwrap());
    s.service(Method::PATCH, &path, Some(json!({"cart": 3})))
        .await;
    let mut restored = Vec::new();
    for _ in 0..50 {
        let otp = s.otp_of(&view["id"]).await;
        let (seen, cookie) = visit(&s, None, Some(&otp)).await;
        assert_eq!(seen["id"], view["id"]);
        restored.push(cookie.unwrap());
        let (seen, set) = visit(&s, Some(&creator), None).await;
        assert_eq!(
            seen["id"], view["id"],
            "the creator's cookie still opens its session"
        );
        assert!(set.is_none());
    }
    // The most recent restorers still hold it too (the least recently used went).
    let last = restored.last().unwrap();
    assert_eq!(visit(&s, Some(last), None).await.0["id"], view["id"]);
    let (_, v) = s.service(Method::GET, &path, None).await;
    assert_eq!(v["storage"]["cart"], 3, "the cart is there");
    // Privilege changes that lower the rights keep every cookie, whatever their number.
    let privileges = format!("/sessions/{}/privileges", view["id"].as_str().unwrap());
    s.service(Method::PUT, &privileges, Some(json!(["a", "b", "p"])))
        .await;
    let (_, v) = s
        .service(Method::PUT, &privileges, Some(json!(["a", "b", "p"])))
        .await;
    let current = v["cookie"]["value"].as_str().map(String::from);
    assert!(current.is_none(), "the same rights again: not a raise");
    let holder = visit(&s, None, Some(&s.otp_of(&view["id"]).await))
        .await
        .1
        .unwrap();
    for names in [
        json!(["a", "b"]),
        json!("b,a"),
        json!(["B"]),
        json!([]),
        json!([]),
    ] {
        s.service(Method::PUT, &privileges, Some(names)).await;
        s.clock.advance(Duration::from_millis(30));
        assert_eq!(visit(&s, Some(&holder), None).await.0["id"], view["id"]);
    }
}

/// docs/tokens.md "Activity": service-API reads leave `expirationDate` alone;
/// resolving a browser's cookie (it stands for the browser's request) and every write
/// count as activity.
#[tokio::test]
async fn service_reads_are_not_activity_resolve_and_writes_are() {
    let s = Server::start().await;
    let (view, cookie) = visit(&s, None, None).await;
    let id = view["id"].as_str().unwrap().to_string();
    let session = format!("/sessions/{id}");
    let first = view["expirationDate"].clone();
    s.clock.advance(Duration::from_secs(600));
    for path in [
        session.clone(),
        format!("{session}/privileges"),
        format!("{session}/privileges/a"),
        format!("{session}/storage"),
        format!("/activity?session={id}"),
    ] {
        let (st, _) = s.service(Method::GET, &path, None).await;
        assert_eq!(st, 200, "{path}");
    }
    s.service(Method::POST, &format!("{session}/otp"), None)
        .await;
    assert_eq!(
        s.service(Method::GET, &session, None).await.1["expirationDate"],
        first
    );
    let (_, resolved) = s
        .service(
            Method::POST,
            "/sessions/resolve",
            Some(json!({"cookie": cookie.unwrap()})),
        )
        .await;
    let after_resolve = resolved["expirationDate"].clone();
    assert_ne!(after_resolve, first, "resolve is the browser's request");
    s.clock.advance(Duration::from_secs(600));
    s.service(
        Method::PATCH,
        &format!("{session}/storage"),
        Some(json!({"k": 1})),
    )
    .await;
    let after_write = s.service(Method::GET, &session, None).await.1["expirationDate"].clone();
    assert!(
        after_write.as_str() > after_resolve.as_str(),
        "a write is activity"
    );
}

#[tokio::test]
async fn an_ended_guest_never_comes_back_with_its_ticket_times_rewritten() {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let s = Server::start().await;
    let (guest, cookie) = s.own(None).await;
    let cookie = cookie.unwrap();
    assert_eq!(cookie.len(), 64, "a guest ticket");
    assert_eq!(s.own(Some(&cookie)).await.0["id"], guest["id"]);
    let resp = s
        .http
        .post(s.url("/api/logout"))
        .header("cookie", format!("4DSID_TestApp={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Long after the guest's tickets expired, the client writes fresh times (seconds
    // since 2020-01-01) into its ticket: creation and last activity = now.
    s.clock.advance(Duration::from_secs(3 * 3600));
    let now = u32::try_from((1_800_000_000_000u64 + 3 * 3_600_000 - 1_577_836_800_000) / 1000)
        .unwrap()
        .to_be_bytes();
    let mut raw = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
    raw[32..36].copy_from_slice(&now);
    raw[36..40].copy_from_slice(&now);
    let (after, set) = s.own(Some(&URL_SAFE_NO_PAD.encode(&raw))).await;
    assert_ne!(after["id"], guest["id"], "the ended guest came back");
    assert!(set.is_some(), "a new guest with its own cookie");
}

#[tokio::test]
async fn a_failing_store_gets_503_json_without_its_cause_and_leaves_nothing_half_written() {
    use sessiond_store::conformance::faults::{Fault, FaultyStore, INJECTED};
    let faulty = FaultyStore::new(Arc::new(MemoryStore::new()));
    let s = Server::over(faulty.clone()).await;
    let (v, cookie) = s.own(None).await;
    let cookie = cookie.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let (st, _) = s
        .service(
            Method::PATCH,
            &format!("/sessions/{id}/storage"),
            Some(json!({"cart": 1})),
        )
        .await;
    assert_eq!(st, 200);
    let storage = format!("/sessions/{id}/storage");
    let answers_503 = |status: StatusCode, body: &Value, what: &str| {
        assert_eq!(status, 503, "{what}: {body}");
        assert_eq!(body["error"], "store_unavailable", "{what}: {body}");
        assert!(
            !body.to_string().contains(INJECTED),
            "{what}: the store's own text reached the client: {body}"
        );
    };
    for fault in [Fault::Fail, Fault::Hang(Duration::from_millis(50))] {
        // Every call fails: reads, writes, the browser's own session, a login.
        faulty.fail_calls(0, u64::MAX, fault);
        let (st, body) = s
            .service(Method::PATCH, &storage, Some(json!({"cart": 2})))
            .await;
        answers_503(st, &body, "storage patch");
        let (st, body) = s.service(Method::GET, &storage, None).await;
        answers_503(st, &body, "storage read");
        let (st, body) = s
            .service(
                Method::PUT,
                &format!("/sessions/{id}/privileges"),
                Some(json!("Clerk")),
            )
            .await;
        answers_503(st, &body, "privileges");
        let resp = s
            .http
            .get(s.url("/api/session"))
            .header("cookie", format!("4DSID_TestApp={cookie}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        answers_503(status, &resp.json().await.unwrap(), "the browser's session");
        let resp = s
            .http
            .post(s.url("/api/login"))
            .header("cookie", format!("4DSID_TestApp={cookie}"))
            .json(&json!({"userName": "ann", "password": "ann-password"}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        answers_503(status, &resp.json().await.unwrap(), "login");
        faulty.heal();
        // One failing call at each step of an increment in turn: acknowledged if and only
        // if applied.
        let mut cart = cart_of(&s, &storage).await;
        for skip in 0..4 {
            faulty.fail_calls(skip, 1, fault);
            let (st, body) = s
                .service(
                    Method::POST,
                    &format!("/sessions/{id}/storage/increment"),
                    Some(json!({"path": "cart", "by": 5})),
                )
                .await;
            faulty.heal();
            let now = cart_of(&s, &storage).await;
            match st.as_u16() {
                200 => assert_eq!(now, cart + 5, "acknowledged, not applied"),
                503 => {
                    answers_503(st, &body, "increment");
                    assert_eq!(now, cart, "refused, yet applied");
                }
                other => panic!("increment with call {skip} failing: {other} {body}"),
            }
            cart = now;
        }
        // The browser's cookie still opens its session, not logged in, no privilege.
        let (v, _) = s.own(Some(&cookie)).await;
        assert_eq!(v["id"], id.as_str());
        assert_eq!(v["privileges"], json!([]));
    }
}

async fn cart_of(s: &Server, storage: &str) -> i64 {
    let (st, body) = s.service(Method::GET, storage, None).await;
    assert_eq!(st, 200, "{body}");
    body["storage"]["cart"].as_i64().unwrap()
}
