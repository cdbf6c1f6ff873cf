//! Remote-client sessions over `/remote` and the stored-procedures session (spec §1.2,
//! §1.4 `info`, §4, cases 18–20 and 22): real WebSocket connections on loopback, the
//! Rust client of `sessiond-client`, raw frames for the bad inputs, a manual clock
//! for the sleeping and postponed timeouts.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_client::{ClientConfig, RemoteClient};
use sessiond_core::protocol::{CloseReason, ErrorCode};
use sessiond_core::{ManualClock, PrivilegeInput, Roles, Timestamp};
use sessiond_server::Session;
use sessiond_server::desktop::{CallError, DesktopBuilder, DesktopConfig, DesktopSessions};
use sessiond_server::users::Users;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "remote-test-key";

struct Remote {
    base: String,
    clock: ManualClock,
    desktop: DesktopSessions,
    /// What the hooks saw: `"<hook> <session id> <type>"`.
    hooks: Arc<Mutex<Vec<String>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

fn record(hooks: &Arc<Mutex<Vec<String>>>, name: &str) {
    let s = Session::current().expect("hooks run in a session");
    hooks.lock().push(format!(
        "{name} {} {}",
        s.id(),
        s.info()["type"].as_str().unwrap()
    ));
}

/// Every privilege function of the §4.5 matrix, as the session it runs in sees it.
async fn matrix(_: Value) -> Result<Value, CallError> {
    let s = Session::current().unwrap();
    let set = s
        .set_privileges(&PrivilegeInput {
            privileges: vec!["a".into()],
            roles: vec![],
            user_name: Some("changed".into()),
        })
        .await?;
    let has_a = s.has_privilege("a");
    let has_any = s.has_privilege("any");
    let get = s.get_privileges();
    let promote = s.promote("a");
    let otp = s.create_otp(None).await?;
    let restore = s.restore("whatever").await?;
    let clear = s.clear_privileges().await?;
    Ok(json!({
        "setPrivileges": set, "hasA": has_a, "hasAny": has_any, "getPrivileges": get,
        "isGuest": s.is_guest(), "promote": promote, "otp": !otp.is_empty(),
        "restore": restore, "clearPrivileges": clear, "afterClear": s.get_privileges(),
        "userName": s.user_name(),
    }))
}

impl Remote {
    async fn start(config: DesktopConfig) -> Self {
        let clock = ManualClock::new(Timestamp(1_800_000_000_000));
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users.json");
        for name in ["ann", "bob", "refused"] {
            Users::add(&users, name, &format!("{name}-password"), vec![], vec![]).unwrap();
        }
        let hooks: Arc<Mutex<Vec<String>>> = Arc::default();
        let (h1, h2, h3, h4) = (hooks.clone(), hooks.clone(), hooks.clone(), hooks.clone());
        let mut node_config = crate::node_config(dir.path(), "TestApp", "");
        node_config.remote = config;
        let register = move |b: DesktopBuilder| {
            b.function("matrix", matrix)
                .procedure("matrix", matrix)
                .procedure("restore", |params| async move {
                    // Session.restore() in a desktop session: False (4D), the OTP untouched.
                    let token = params["token"].as_str().unwrap_or_default().to_string();
                    Ok(Session::current().unwrap().restore(&token).await?.into())
                })
                .function("boom", |_| async {
                    panic!("a bug in an application function")
                })
                .on_open(move || {
                    let hooks = h1.clone();
                    async move {
                        record(&hooks, "open");
                        if Session::current().unwrap().user_name() == "refused" {
                            return Err(CallError::failed("not today"));
                        }
                        Ok(())
                    }
                })
                .on_close(move || {
                    let hooks = h2.clone();
                    async move {
                        record(&hooks, "close");
                        Ok(())
                    }
                })
                .on_startup(move || {
                    let hooks = h3.clone();
                    async move {
                        record(&hooks, "startup");
                        Ok(())
                    }
                })
                .on_shutdown(move || {
                    let hooks = h4.clone();
                    async move {
                        record(&hooks, "shutdown");
                        Ok(())
                    }
                })
        };
        let node = sessiond_server::Server::builder(node_config)
            .roles(Roles::parse(crate::http::ROLES, "roles.json").unwrap())
            .clock(Arc::new(clock.clone()))
            .secrets(Some(KEY.into()), None)
            .without_mobile()
            .functions(register)
            .build()
            .await
            .unwrap();
        let desktop = node.state().desktop.clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(node.serve(listener, async {
            let _ = stop.await;
        }));
        let this = Self {
            base: format!("127.0.0.1:{}", addr.port()),
            clock,
            desktop,
            hooks,
            shutdown: Some(shutdown),
            server,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        // The server is ready when its stored-procedures session is listed.
        this.until(|a| !a["sessions"].as_array().unwrap().is_empty(), "")
            .await;
        this
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/remote", self.base)
    }

    fn client_config(&self, user: &str) -> ClientConfig {
        let mut c = ClientConfig::new(&self.ws_url(), user, &format!("{user}-password"));
        c.machine_name = format!("{user}-laptop");
        c.system_user_name = format!("{user}-os");
        c.host_type = sessiond_core::protocol::HostType::Mac;
        c
    }

    async fn connect(&self, user: &str) -> RemoteClient {
        RemoteClient::connect(self.client_config(user))
            .await
            .unwrap()
    }

    async fn service(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!("http://{}/service/v1{path}", self.base);
        crate::send_json(&self.http, method, url, KEY, body).await
    }

    async fn activity(&self, query: &str) -> Value {
        let (status, body) = self
            .service(reqwest::Method::GET, &format!("/activity{query}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls the activity listing (`query`) until `ok` holds (5 s at most).
    async fn until(&self, ok: impl Fn(&Value) -> bool, query: &str) -> Value {
        for _ in 0..500 {
            let resp = self
                .http
                .get(format!("http://{}/service/v1/activity{query}", self.base))
                .bearer_auth(KEY)
                .send()
                .await;
            if let Ok(resp) = resp
                && resp.status() == 200
            {
                let a: Value = resp.json().await.unwrap();
                if ok(&a) {
                    return a;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the activity listing never matched");
    }

    /// The listed session `id`, if any.
    async fn listed(&self, id: &str) -> Option<Value> {
        self.activity("?mode=sessions").await["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["ID"] == id)
            .cloned()
    }

    async fn state_of(&self, id: &str) -> Option<String> {
        self.listed(id)
            .await
            .map(|s| s["state"].as_str().unwrap().to_string())
    }

    async fn wait_state(&self, id: &str, state: &str) {
        self.until(
            |a| {
                a["sessions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["ID"] == id && s["state"] == state)
            },
            "?mode=sessions",
        )
        .await;
    }

    fn hooks_of(&self, id: &str) -> Vec<String> {
        self.hooks
            .lock()
            .iter()
            .filter(|h| h.contains(id))
            .cloned()
            .collect()
    }
}

fn config() -> DesktopConfig {
    DesktopConfig {
        max_frame_bytes: 4096,
        client_builtins: sessiond_server::desktop::functions::BUILTINS
            .map(String::from)
            .to_vec(),
        ..DesktopConfig::default()
    }
}

#[tokio::test]
async fn clients_get_only_the_read_only_builtins_by_default() {
    let r = Remote::start(DesktopConfig::default()).await;
    let client = r.connect("ann").await;
    assert_eq!(
        client.call("session.info", Value::Null).await.unwrap()["userName"],
        "ann"
    );
    for f in [
        "session.setPrivileges",
        "session.patch",
        "session.increment",
        "session.wait",
    ] {
        let e = client.call(f, json!("a")).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotAllowed), "{f}");
        assert!(e.to_string().contains("client_builtins"), "{e}");
    }
    let e = client.call("session.nope", json!(1)).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownFunction));
    assert_eq!(
        client
            .call("session.hasPrivilege", json!({"privilege": "a"}))
            .await
            .unwrap(),
        false,
        "the service API's parameter name"
    );
    // Application functions are callable; stored procedures have every built-in.
    assert_eq!(
        client.call("matrix", Value::Null).await.unwrap()["hasA"],
        true
    );
    let run = r
        .desktop
        .execute_on_server("session.increment", json!({"path": "n"}))
        .await
        .unwrap();
    assert_eq!(run.result.await.unwrap(), 1);
}

#[tokio::test]
async fn case_20_remote_info_has_the_client_facts_and_a_distinct_persistent_id() {
    let r = Remote::start(config()).await;
    let client = r.connect("ann").await;
    let id = client.id().to_string();
    let info = client.info();
    assert_eq!(info["type"], "remote");
    assert_eq!(info["ID"], id);
    assert_eq!(info["userName"], "ann");
    assert_eq!(info["machineName"], "ann-laptop");
    assert_eq!(info["systemUserName"], "ann-os");
    assert_eq!(info["hostType"], "mac");
    assert_eq!(info["IPAddress"], "127.0.0.1");
    assert_eq!(info["state"], "active");
    let persistent = info["persistentID"].as_str().unwrap();
    assert_eq!(persistent.len(), 32);
    assert_ne!(persistent, id);
    assert_eq!(persistent, client.persistent_id().to_string());
    assert!(info["creationDateTime"].as_str().unwrap().ends_with('Z'));
    // Inside a server-side call, Session::current() is the caller's session.
    let inside = client.call("session.info", Value::Null).await.unwrap();
    assert_eq!(inside["id"], id);
    assert_eq!(inside["info"]["persistentID"], persistent);
    assert_eq!(
        inside["isGuest"], false,
        "desktop sessions are never guests"
    );
    // On Server Open Connection ran in the new session.
    assert_eq!(r.hooks_of(&id), [format!("open {id} remote")]);
    // Another login never reuses a persistentID.
    let again = r.connect("ann").await;
    assert_ne!(again.persistent_id(), client.persistent_id());
    assert_ne!(again.id(), client.id());
    client.goodbye().await.unwrap();
    assert_eq!(
        r.hooks_of(&id),
        [format!("open {id} remote"), format!("close {id} remote")],
        "a goodbye runs On Server Close Connection"
    );
    assert!(
        r.listed(&id).await.is_none(),
        "a goodbye ends the session at once"
    );
}

#[tokio::test]
async fn reconnect_after_a_dropped_connection_resumes_the_same_id_and_storage() {
    let r = Remote::start(config()).await;
    let mut client = r.connect("ann").await;
    let id = client.id();
    client
        .call("session.increment", json!({"path": "n"}))
        .await
        .unwrap();
    client.disconnect();
    r.wait_state(&id.to_string(), "postponed").await;
    assert!(client.reconnect().await.unwrap(), "resumed");
    assert_eq!(client.id(), id);
    assert_eq!(client.info()["state"], "active");
    assert_eq!(
        client
            .call("session.increment", json!({"path": "n"}))
            .await
            .unwrap(),
        2,
        "the storage survived the reconnection"
    );
    assert_eq!(r.state_of(&id.to_string()).await.unwrap(), "active");
}

#[tokio::test]
async fn postponed_session_closes_after_its_timeout_on_the_clock() {
    let r = Remote::start(config()).await;
    let mut client = r.connect("ann").await;
    let id = client.id().to_string();
    client.disconnect();
    r.wait_state(&id, "postponed").await;
    r.clock.advance(Duration::from_secs(14 * 60));
    r.desktop.expire_due().await;
    assert_eq!(
        r.state_of(&id).await.unwrap(),
        "postponed",
        "kept 15 minutes"
    );
    r.clock.advance(Duration::from_secs(61));
    r.desktop.expire_due().await;
    assert!(r.listed(&id).await.is_none(), "closed after 15 minutes");
    assert!(r.hooks_of(&id).contains(&format!("close {id} remote")));
    let e = client.reconnect().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownPersistentId), "{e}");
}

#[tokio::test]
async fn sleeping_session_is_kept_48_hours_and_wakes_with_its_storage() {
    let r = Remote::start(config()).await;
    let mut client = r.connect("ann").await;
    let id = client.id().to_string();
    client
        .call("session.patch", json!({"patch": {"doc": "draft"}}))
        .await
        .unwrap();
    client.sleep().await.unwrap();
    r.wait_state(&id, "sleeping").await;
    r.clock.advance(Duration::from_secs(47 * 3600));
    r.desktop.expire_due().await;
    assert_eq!(r.state_of(&id).await.unwrap(), "sleeping");
    assert!(
        client.reconnect().await.unwrap(),
        "waking resumes the session"
    );
    assert_eq!(client.info()["state"], "active");
    assert_eq!(
        client.call("session.storage", Value::Null).await.unwrap(),
        json!({"doc": "draft"})
    );
    client.sleep().await.unwrap();
    r.clock.advance(Duration::from_secs(48 * 3600 + 1));
    r.desktop.expire_due().await;
    assert!(r.listed(&id).await.is_none(), "closed after 48 h asleep");
}

#[tokio::test]
async fn two_concurrent_calls_of_one_client_lose_no_update() {
    let r = Remote::start(config()).await;
    let client = r.connect("ann").await;
    let run = || async {
        for _ in 0..1000 {
            client
                .call("session.increment", json!({"path": "n"}))
                .await
                .unwrap();
        }
    };
    tokio::join!(run(), run());
    assert_eq!(
        client.call("session.storage", Value::Null).await.unwrap(),
        json!({"n": 2000})
    );
}

#[tokio::test]
async fn case_19_stored_procedures_share_one_session() {
    let r = Remote::start(config()).await;
    let (status, first) = r
        .service(
            reqwest::Method::POST,
            "/stored-procedures/session.increment",
            Some(json!({"path": "runs"})),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["result"], 1);
    let run = r
        .desktop
        .execute_on_server("session.increment", json!({"path": "runs"}))
        .await
        .unwrap();
    assert_eq!(run.result.await.unwrap(), 2, "the same storage");
    let (_, described) = r
        .service(
            reqwest::Method::POST,
            "/stored-procedures/session.info",
            None,
        )
        .await;
    let info = &described["result"]["info"];
    assert_eq!(info["type"], "storedProcedure");
    assert_eq!(described["result"]["userName"], "Designer");
    assert_eq!(
        info["machineName"],
        gethostname::gethostname().to_string_lossy().as_ref()
    );
    let sp = r.desktop.stored_procedures_session().await.unwrap();
    assert_eq!(described["result"]["id"], sp.to_string());
    assert!(
        r.hooks_of(&sp.to_string())
            .contains(&format!("startup {sp} storedProcedure")),
        "On Server Startup runs in the stored-procedures session"
    );
    // Not waiting: 202 and the process number.
    let (status, started) = r
        .service(
            reqwest::Method::POST,
            "/stored-procedures/session.wait?wait=false",
            Some(json!({"ms": 1})),
        )
        .await;
    assert_eq!(status, 202);
    assert!(started["process"].as_u64().unwrap() > 0);
    // Bad input.
    let (s, e) = r
        .service(reqwest::Method::POST, "/stored-procedures/nope", None)
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_procedure"))
    );
    let resp = r
        .http
        .post(format!(
            "http://{}/service/v1/stored-procedures/session.info",
            r.base
        ))
        .bearer_auth(KEY)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (s, e) = r
        .service(
            reqwest::Method::POST,
            "/stored-procedures/session.increment",
            Some(json!([1])),
        )
        .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_params"))
    );
    // The stored-procedures session cannot be dropped.
    let (s, _) = r
        .service(reqwest::Method::DELETE, &format!("/sessions/{sp}"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn case_18_and_4_5_privilege_matrix_for_both_desktop_kinds() {
    let r = Remote::start(config()).await;
    // Stored procedure (4D 21 column: no-ops, always privileged; createOTP works for
    // desktop sharing, `stored_procedure_otp`).
    let sp = r
        .desktop
        .execute_on_server("matrix", Value::Null)
        .await
        .unwrap()
        .result
        .await
        .unwrap();
    assert_eq!(
        sp,
        json!({"setPrivileges": false, "hasA": true, "hasAny": true, "getPrivileges": ["WebAdmin"],
               "isGuest": false, "promote": 0, "otp": true, "restore": false,
               "clearPrivileges": true, "afterClear": ["WebAdmin"], "userName": "Designer"})
    );
    // Remote session (4D 21 column: real privileges, userName ignored, OTP works).
    let client = r.connect("ann").await;
    let rem = client.call("matrix", Value::Null).await.unwrap();
    assert_eq!(
        rem,
        json!({"setPrivileges": true, "hasA": true, "hasAny": false, "getPrivileges": ["a"],
               "isGuest": false, "promote": 0, "otp": true, "restore": false,
               "clearPrivileges": true, "afterClear": [], "userName": "ann"})
    );
}

#[tokio::test]
async fn case_22_activity_lists_desktop_sessions_and_their_running_calls() {
    let r = Remote::start(config()).await;
    let client = Arc::new(r.connect("ann").await);
    let id = client.id().to_string();
    let waiting = {
        let c = client.clone();
        tokio::spawn(async move { c.call("session.wait", json!({"ms": 3000})).await })
    };
    let all = r
        .until(|a| !a["processes"].as_array().unwrap().is_empty(), "")
        .await;
    let kinds: Vec<&str> = all["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"remote") && kinds.contains(&"storedProcedure"),
        "{kinds:?}"
    );
    let p = &all["processes"][0];
    assert_eq!(p["name"], "session.wait");
    assert_eq!(p["sessionID"], id);
    assert_eq!(p["state"], "executing");
    assert_eq!(
        p["session"]["ID"], id,
        "with sessions, each process carries its session"
    );
    // Processes only, one session: no sessions list and no `session` property.
    let only = r.activity(&format!("?mode=processes&session={id}")).await;
    assert!(only.get("sessions").is_none());
    assert_eq!(only["processes"][0]["sessionID"], id);
    assert!(only["processes"][0].get("session").is_none());
    // Sessions only.
    let sessions = r.activity("?mode=sessions&kind=remote").await;
    assert!(sessions.get("processes").is_none());
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
    // Another session's filter shows none of these calls; an unknown id is a 404.
    let sp = r.desktop.stored_procedures_session().await.unwrap();
    let other = r.activity(&format!("?mode=processes&session={sp}")).await;
    assert_eq!(other["processes"], json!([]));
    let (s, _) = r
        .service(
            reqwest::Method::GET,
            "/activity?session=00000000000000000000000000000000",
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(waiting.await.unwrap().unwrap(), 3000);
    r.until(|a| a["processes"] == json!([]), "").await;
}

#[tokio::test]
async fn admin_drop_closes_the_session_and_tells_the_client() {
    let r = Remote::start(config()).await;
    let mut client = r.connect("ann").await;
    let id = client.id().to_string();
    let (s, _) = r
        .service(reqwest::Method::DELETE, &format!("/sessions/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(client.closed().await, Some(CloseReason::Dropped));
    assert!(r.hooks_of(&id).contains(&format!("close {id} remote")));
    assert!(r.listed(&id).await.is_none());
    let e = client.reconnect().await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownPersistentId));
    // Dropping a user's sessions reaches remote sessions too.
    let bob = r.connect("bob").await;
    assert_eq!(r.desktop.drop_user("bob").await.unwrap(), 1);
    assert_eq!(bob.closed().await, Some(CloseReason::Dropped));
}

#[tokio::test]
async fn a_reconnection_replaces_a_live_connection_of_the_same_login() {
    let r = Remote::start(config()).await;
    let first = r.connect("ann").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    ws.send(hello("ann", Some(&first.persistent_id().to_string())))
        .await
        .unwrap();
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["id"], first.id().to_string());
    assert_eq!(first.closed().await, Some(CloseReason::Replaced));
}

#[tokio::test]
async fn open_hook_can_refuse_a_connection() {
    let r = Remote::start(config()).await;
    let e = RemoteClient::connect(r.client_config("refused"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Refused), "{e}");
    let remote = r.activity("?kind=remote").await;
    assert_eq!(
        remote["sessions"],
        json!([]),
        "nothing is left of a refused login"
    );
}

#[tokio::test]
async fn shutdown_closes_remote_sessions_and_runs_the_hooks_in_their_sessions() {
    let mut r = Remote::start(config()).await;
    let client = r.connect("ann").await;
    let id = client.id().to_string();
    let sp = r.desktop.stored_procedures_session().await.unwrap();
    r.shutdown.take().unwrap().send(()).unwrap();
    assert_eq!(client.closed().await, Some(CloseReason::Shutdown));
    (&mut r.server).await.unwrap().unwrap();
    assert!(r.hooks_of(&id).contains(&format!("close {id} remote")));
    assert!(
        r.hooks_of(&sp.to_string())
            .contains(&format!("shutdown {sp} storedProcedure"))
    );
}

fn hello(user: &str, persistent: Option<&str>) -> Message {
    let mut h = json!({"type": "hello", "protocol": 1, "userName": user,
        "password": format!("{user}-password"), "machineName": "m",
        "systemUserName": "s", "hostType": "linux"});
    if let Some(p) = persistent {
        h["persistentID"] = p.into();
    }
    Message::text(h.to_string())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame (pings skipped); `Null` when the server closed.
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an answer in time")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Value::Null,
            Some(Ok(_)) => {}
        }
    }
}

/// Opens a raw connection, sends `first`, returns the first answer and whether the
/// server then closed the connection.
async fn first_answer(r: &Remote, first: Message) -> (Value, bool) {
    let (mut ws, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    ws.send(first).await.unwrap();
    let answer = next_json(&mut ws).await;
    (answer, next_json(&mut ws).await.is_null())
}

fn code(v: &Value) -> &str {
    v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {v}"))
}

#[tokio::test]
async fn bad_input_gets_protocol_errors_and_other_clients_are_unaffected() {
    let r = Remote::start(config()).await;
    let bystander = r.connect("bob").await;
    // Before the hello: every error closes the connection.
    for (frame, expected) in [
        (Message::text("not json"), "bad_frame"),
        (
            Message::text(r#"{"type":"call","id":1,"function":"session.info"}"#),
            "hello_required",
        ),
        (Message::text(r#"{"type":"dance"}"#), "unknown_type"),
        (Message::binary(vec![1, 2, 3]), "bad_frame"),
        (
            Message::text(
                r#"{"type":"hello","protocol":2,"userName":"ann","password":"ann-password","machineName":"m","systemUserName":"s","hostType":"linux"}"#,
            ),
            "unsupported_protocol",
        ),
        (
            Message::text(
                r#"{"type":"hello","protocol":1,"userName":"ann","password":"wrong","machineName":"m","systemUserName":"s","hostType":"linux"}"#,
            ),
            "invalid_credentials",
        ),
        (
            Message::text(
                r#"{"type":"hello","protocol":1,"userName":"nobody","password":"x","machineName":"m","systemUserName":"s","hostType":"linux"}"#,
            ),
            "invalid_credentials",
        ),
        (
            Message::text(
                r#"{"type":"hello","protocol":1,"userName":"ann","password":"ann-password","machineName":"m\u0007","systemUserName":"s","hostType":"linux"}"#,
            ),
            "bad_frame",
        ),
        (
            hello("ann", Some(&bystander.persistent_id().to_string())),
            "unknown_persistent_id",
        ),
        (
            hello("ann", Some("0123456789ABCDEF0123456789ABCDEF")),
            "unknown_persistent_id",
        ),
        (hello("ann", Some("not-an-id")), "bad_frame"),
    ] {
        let (answer, closed) = first_answer(&r, frame.clone()).await;
        assert_eq!(code(&answer), expected, "{frame:?} → {answer}");
        assert!(closed, "{frame:?}: the connection is closed");
    }
    // After the hello: errors are answered and the connection goes on.
    let (mut ws, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    ws.send(hello("ann", None)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    for (frame, expected, id) in [
        (Message::text("{"), "bad_frame", None),
        (Message::text("x".repeat(5000)), "frame_too_large", None),
        (
            Message::text(r#"{"type":"teleport"}"#),
            "unknown_type",
            None,
        ),
        (Message::binary(vec![0; 8]), "bad_frame", None),
        (hello("ann", None), "hello_required", None),
        (
            Message::text(r#"{"type":"call","id":7,"function":"nope"}"#),
            "unknown_function",
            Some(7),
        ),
        (
            Message::text(
                r#"{"type":"call","id":8,"function":"session.increment","params":{"path":1}}"#,
            ),
            "invalid_params",
            Some(8),
        ),
        (
            Message::text(r#"{"type":"call","id":9,"function":"boom"}"#),
            "internal",
            Some(9),
        ),
        (
            Message::text(r#"{"type":"call","id":"ten","function":"session.info"}"#),
            "bad_frame",
            None,
        ),
        (
            Message::text(r#"{"type":"call","id":12,"function":7}"#),
            "bad_frame",
            Some(12),
        ),
        (
            Message::text(r#"{"type":"goodbye","now":true}"#),
            "bad_frame",
            None,
        ),
    ] {
        ws.send(frame.clone()).await.unwrap();
        let answer = next_json(&mut ws).await;
        assert_eq!(code(&answer), expected, "{frame:?} → {answer}");
        assert_eq!(answer.get("id").and_then(Value::as_u64), id, "{answer}");
    }
    ws.send(Message::text(
        r#"{"type":"call","id":11,"function":"session.increment","params":{"path":"n"}}"#,
    ))
    .await
    .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "result", "id": 11, "value": 1})
    );
    // Past four times the frame limit the connection is closed (WebSocket 1009).
    ws.send(Message::text("x".repeat(4 * 4096 + 1)))
        .await
        .unwrap();
    assert!(next_json(&mut ws).await.is_null());
    // The other client never noticed.
    assert_eq!(
        bystander
            .call("session.increment", json!({"path": "n"}))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn too_many_concurrent_calls_and_duplicate_ids_are_refused() {
    let r = Remote::start(DesktopConfig {
        max_calls_per_connection: 2,
        ..config()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    ws.send(hello("ann", None)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let call = |id: u64| {
        Message::text(
            json!({"type": "call", "id": id, "function": "session.wait", "params": {"ms": 300}})
                .to_string(),
        )
    };
    ws.send(call(1)).await.unwrap();
    ws.send(call(1)).await.unwrap();
    let dup = next_json(&mut ws).await;
    assert_eq!(
        (code(&dup), dup["id"].as_u64()),
        ("duplicate_call_id", Some(1))
    );
    ws.send(call(2)).await.unwrap();
    ws.send(call(3)).await.unwrap();
    let busy = next_json(&mut ws).await;
    assert_eq!(
        (code(&busy), busy["id"].as_u64()),
        ("too_many_calls", Some(3))
    );
    let mut done: Vec<u64> = vec![
        next_json(&mut ws).await["id"].as_u64().unwrap(),
        next_json(&mut ws).await["id"].as_u64().unwrap(),
    ];
    done.sort_unstable();
    assert_eq!(done, [1, 2]);
}

#[tokio::test]
async fn the_call_limit_is_per_session_so_reconnecting_gives_no_more_room() {
    let r = Remote::start(DesktopConfig {
        max_calls_per_connection: 2,
        ..config()
    })
    .await;
    let (mut a, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    a.send(hello("ann", None)).await.unwrap();
    let welcome = next_json(&mut a).await;
    let persistent = welcome["persistentID"].as_str().unwrap().to_string();
    for id in [1, 2] {
        let call =
            json!({"type": "call", "id": id, "function": "session.wait", "params": {"ms": 2000}});
        a.send(Message::text(call.to_string())).await.unwrap();
    }
    r.until(
        |v| v["processes"].as_array().unwrap().len() == 2,
        "?mode=processes",
    )
    .await;
    drop(a);
    let (mut b, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    b.send(hello("ann", Some(&persistent))).await.unwrap();
    assert_eq!(next_json(&mut b).await["resumed"], true);
    let call = json!({"type": "call", "id": 3, "function": "session.info"});
    b.send(Message::text(call.to_string())).await.unwrap();
    assert_eq!(code(&next_json(&mut b).await), "too_many_calls");
}

#[tokio::test]
async fn a_silent_client_is_detected_by_ping_and_postponed() {
    let r = Remote::start(DesktopConfig {
        ping_interval: Duration::from_millis(50),
        ping_timeout: Duration::from_millis(200),
        ..config()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    ws.send(hello("ann", None)).await.unwrap();
    let welcome = next_json(&mut ws).await;
    let id = welcome["id"].as_str().unwrap().to_string();
    // The client stops reading (so it never answers a ping): the server gives up on
    // the connection and keeps the session for a reconnection.
    r.wait_state(&id, "postponed").await;
    drop(ws);
    // A client that answers pings stays active.
    let alive = r.connect("bob").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(r.state_of(&alive.id().to_string()).await.unwrap(), "active");
}

#[tokio::test]
async fn sixty_four_simultaneous_correct_logins_from_one_address_all_get_in() {
    let r = Remote::start(config()).await;
    let logins = (0..64).map(|i| {
        let config = r.client_config(if i % 2 == 0 { "ann" } else { "bob" });
        tokio::spawn(async move { RemoteClient::connect(config).await })
    });
    for login in futures::future::join_all(logins).await {
        login
            .unwrap()
            .expect("a correct login behind a shared address");
    }
}

#[tokio::test]
async fn failed_passwords_are_limited_per_user_and_address() {
    let r = Remote::start(config()).await;
    let wrong = Message::text(
        r#"{"type":"hello","protocol":1,"userName":"ann","password":"wrong","machineName":"m","systemUserName":"s","hostType":"linux"}"#,
    );
    for _ in 0..10 {
        let (a, _) = first_answer(&r, wrong.clone()).await;
        assert_eq!(code(&a), "invalid_credentials");
    }
    let (a, _) = first_answer(&r, hello("ann", None)).await;
    assert_eq!(
        code(&a),
        "too_many_attempts",
        "even the right password waits"
    );
    // Only that user from that address waits: bob logs in.
    let bob = RemoteClient::connect(r.client_config("bob")).await.unwrap();
    bob.goodbye().await.unwrap();
}

#[tokio::test]
async fn start_removes_desktop_sessions_an_earlier_run_left_in_the_store() {
    use sessiond_core::{Clock as _, DesktopInfo, SessionKind, SessionRecord};
    let clock = ManualClock::new(Timestamp(1_800_000_000_000));
    let sessions = crate::http::sessions(&clock).with_node("earlier-run");
    let mut left = Vec::new();
    for kind in [SessionKind::Remote, SessionKind::StoredProcedure] {
        let record = SessionRecord::new(
            kind,
            clock.now(),
            sessions.policy(),
            None,
            Some(DesktopInfo::default()),
        );
        left.push(sessions.insert(record).await.unwrap().record.id());
    }
    let (web, _) = sessions.create_web(None).await.unwrap();
    // The next run has another node name; the store is not shared, so it owns all.
    let sessions = sessions.with_node("this-run");
    let desktop = DesktopSessions::builder(sessions.clone(), config()).build();
    let expiry = desktop.start().await.unwrap();
    for id in &left {
        assert!(sessions.get(id).await.unwrap().is_none(), "{id} removed");
    }
    assert!(
        sessions.get(&web.record.id()).await.unwrap().is_some(),
        "web sessions stay"
    );
    let sp = desktop.stored_procedures_session().await.unwrap();
    assert!(!left.contains(&sp), "a new stored-procedures session");
    expiry.abort();
}

#[tokio::test]
async fn a_connection_without_hello_in_time_is_closed() {
    let r = Remote::start(DesktopConfig {
        hello_timeout: Duration::from_millis(100),
        ..config()
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(r.ws_url()).await.unwrap();
    let answer = next_json(&mut ws).await;
    assert_eq!(code(&answer), "hello_required");
    assert!(next_json(&mut ws).await.is_null(), "closed");
    // Not a WebSocket request: a JSON error.
    let resp = r
        .http
        .get(format!("http://{}/remote", r.base))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "websocket_required");
}

#[tokio::test]
async fn a_session_removed_behind_the_registry_ends_its_connection_at_the_next_call() {
    let r = Remote::start(config()).await;
    let client = r.connect("ann").await;
    // As when another node's drop message was missed: the record is gone.
    assert!(r.desktop.sessions().remove(&client.id()).await.unwrap());
    let e = client
        .call("session.storage", Value::Null)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::SessionClosed), "{e}");
    assert_eq!(client.closed().await, Some(CloseReason::Dropped));
}

/// A browser request: GET `url` with an optional cookie; (status, body, Set-Cookie value).
async fn web_get(
    http: &reqwest::Client,
    url: &str,
    cookie: Option<&str>,
) -> (Value, Option<String>) {
    let mut req = http.get(url);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("4DSID_TestApp={c}"));
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let set = resp.headers().get("set-cookie").map(|v| {
        v.to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string()
    });
    (resp.json().await.unwrap(), set)
}

/// Issue (4D 21 desktop sharing, spec §2.5): an OTP of a remote-client session,
/// whether the service API or the client made it, runs web requests in that session —
/// same id, storage and privileges — until the remote session ends.
#[tokio::test]
async fn an_otp_of_a_remote_session_shares_it_with_the_web_until_it_ends() {
    use axum::routing::get;
    let r = Remote::start(config()).await;
    let client = r.connect("ann").await;
    let id = client.id().to_string();
    client
        .call("session.patch", json!({"patch": {"cart": 1}}))
        .await
        .unwrap();
    // A web route of the application: it runs in whatever session the request opens.
    let web = crate::http::serve_router(
        axum::Router::new()
            .route(
                "/cart",
                get(|s: Session| async move {
                    let n = s
                        .update_storage(|st| {
                            let n = st.get("cart").and_then(Value::as_i64).unwrap_or(0) + 1;
                            st.insert("cart".into(), n.into());
                            Ok(n)
                        })
                        .await
                        .unwrap();
                    axum::Json(
                        json!({"id": s.id().to_string(), "type": s.info()["type"], "cart": n}),
                    )
                }),
            )
            .layer(sessiond_server::SessionLayer::new(
                r.desktop.sessions().clone(),
                sessiond_server::CookieConfig::for_app("TestApp"),
            )),
    )
    .await;
    let (_, otp) = r
        .service(reqwest::Method::POST, &format!("/sessions/{id}/otp"), None)
        .await;
    let otp = otp["token"].as_str().unwrap();
    let (seen, cookie) = web_get(&r.http, &format!("{web}/cart?$4DSID={otp}"), None).await;
    assert_eq!(seen, json!({"id": id, "type": "remote", "cart": 2}));
    let cookie = cookie.expect("the web client gets a cookie for the shared session");
    let (seen, set) = web_get(&r.http, &format!("{web}/cart"), Some(&cookie)).await;
    assert_eq!(
        (seen["id"].as_str(), seen["cart"].as_i64(), set),
        (Some(id.as_str()), Some(3), None)
    );
    assert_eq!(
        client.call("session.storage", Value::Null).await.unwrap()["cart"],
        3
    );
    // The server's own /api surface, and the client-side createOTP through the service API.
    let client_otp = client.call("session.createOTP", Value::Null).await.unwrap();
    let (st, restored) = r
        .service(
            reqwest::Method::POST,
            "/otp/restore",
            Some(json!({"token": client_otp})),
        )
        .await;
    assert_eq!(
        (st, restored["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let api_cookie = restored["cookie"]["value"].as_str().unwrap().to_string();
    let session_url = format!("http://{}/api/session", r.base);
    let (seen, _) = web_get(&r.http, &session_url, Some(&api_cookie)).await;
    assert_eq!(
        (seen["id"].as_str(), seen["info"]["type"].as_str()),
        (Some(id.as_str()), Some("remote"))
    );
    assert_eq!(seen["userName"], "ann");
    // Logging out of the web leaves the desktop session alone: only that cookie ends.
    let resp = r
        .http
        .post(format!("http://{}/api/logout", r.base))
        .header("cookie", format!("4DSID_TestApp={api_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_ne!(
        web_get(&r.http, &session_url, Some(&api_cookie)).await.0["id"],
        id.as_str()
    );
    assert_eq!(
        web_get(&r.http, &format!("{web}/cart"), Some(&cookie))
            .await
            .0["id"],
        id.as_str()
    );
    // When the remote session ends, the cookie opens nothing.
    client.goodbye().await.unwrap();
    let (seen, set) = web_get(&r.http, &format!("{web}/cart"), Some(&cookie)).await;
    assert_ne!(seen["id"], id.as_str());
    assert_eq!(seen["cart"], 1, "a new guest session");
    assert!(set.is_some());
}

/// Issue: the stored-procedures session can be shared too (`stored_procedure_otp`),
/// a refused restore says why and leaves the OTP usable, and a raise made by a remote
/// client ends the web cookies of its session.
#[tokio::test]
async fn stored_procedure_sharing_refusals_and_desktop_raises() {
    let r = Remote::start(config()).await;
    let session_url = format!("http://{}/api/session", r.base);
    let (st, made) = r
        .service(
            reqwest::Method::POST,
            "/stored-procedures/session.createOTP",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let otp = made["result"].as_str().unwrap().to_string();
    assert_eq!(otp.len(), 32);
    // Session.restore() run in the stored-procedures session is refused (4D: False)
    // without spending the OTP.
    let run = r
        .desktop
        .execute_on_server("restore", json!({"token": otp}))
        .await
        .unwrap();
    assert_eq!(run.result.await.unwrap(), false);
    let (seen, cookie) = web_get(&r.http, &format!("{session_url}?$4DSID={otp}"), None).await;
    assert_eq!(seen["info"]["type"], "storedProcedure");
    assert_eq!(seen["userName"], "Designer");
    assert!(cookie.is_some());
    // Refusals, each with its reason; none spends a usable OTP.
    let (st, e) = r
        .service(
            reqwest::Method::POST,
            "/otp/restore",
            Some(json!({"token": otp})),
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("otp_invalid"))
    );
    let client = r.connect("bob").await;
    let id = client.id().to_string();
    let otp = client.call("session.createOTP", Value::Null).await.unwrap();
    let otp = otp.as_str().unwrap();
    let shared = web_get(&r.http, &format!("{session_url}?$4DSID={otp}"), None)
        .await
        .1
        .unwrap();
    assert_eq!(
        web_get(&r.http, &session_url, Some(&shared)).await.0["id"],
        id.as_str()
    );
    let late = client.call("session.createOTP", Value::Null).await.unwrap();
    // A raise made by the remote client ends its web holders' cookies at once.
    assert_eq!(
        client
            .call("session.setPrivileges", json!("a"))
            .await
            .unwrap(),
        true
    );
    let (seen, set) = web_get(&r.http, &session_url, Some(&shared)).await;
    assert_ne!(seen["id"], id.as_str());
    assert!(set.is_none(), "within the grace window");
    client.goodbye().await.unwrap();
    let (st, e) = r
        .service(
            reqwest::Method::POST,
            "/otp/restore",
            Some(json!({"token": late})),
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("otp_session_ended"))
    );
}

/// Issue: the remote built-in setPrivileges reads `roles` under the `[sessions]`
/// policy like the service API (split on commas by default).
#[tokio::test]
async fn remote_set_privileges_splits_roles_on_commas_like_every_surface() {
    let r = Remote::start(config()).await;
    let client = r.connect("ann").await;
    assert_eq!(
        client
            .call("session.setPrivileges", json!({"roles": "Clerk,Boss"}))
            .await
            .unwrap(),
        true
    );
    for p in ["a", "b"] {
        assert_eq!(
            client
                .call("session.hasPrivilege", json!({"name": p}))
                .await
                .unwrap(),
            true,
            "{p}"
        );
    }
}
