//! The admin console: its HTTP surface (sign-in, CSRF, audit, security headers) with
//! a plain HTTP client, and the page itself end to end in a real headless Chromium
//! driven over WebDriver (`/usr/bin/chromedriver`, `/usr/bin/chromium`; installed by
//! `scripts/test`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sessiond_core::Roles;
use sessiond_mobile::{AuthHook, HookResult};
use sessiond_server::credentials::Credentials;
use sessiond_server::desktop::DesktopSessions;
use sessiond_store::Sessions;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

const ADMIN: &str = "console-admin-password";
const IOS: &str = r#"{"email":"","send":"link","application":{"name":"Contact","id":"com.contactApp.Contact","version":"1"},"team":{"id":"UTT7VDX8W5"},"device":{"id":"0DC5132E-1EF4-407C-A832-5FE33D818AF3","description":"iPhone X","version":"11.3","os":"iOS","simulator":true},"language":{"id":"en_US","code":"en","region":"US"}}"#;
const FOLDER: &str = "UTT7VDX8W5.com.contactApp.Contact";
const ROLES: &str = r#"{
  "privileges": [{"privilege": "sales"}, {"privilege": "reports"}, {"privilege": "admin"}],
  "roles": [{"role": "Manager", "privileges": ["sales", "reports"]}],
  "permissions": {"allowed": []}
}"#;
const WAIT: Duration = Duration::from_secs(15);

/// Accepts every mobile login, or asks for validation (`pending`) when the e-mail
/// starts with `wait`.
struct Hook;

#[async_trait]
impl AuthHook for Hook {
    async fn authenticate(&self, info: &Value) -> HookResult {
        if info["email"].as_str().unwrap_or("").starts_with("wait") {
            HookResult::verify("Check your mail")
        } else {
            HookResult::accept("Welcome")
        }
    }
}

/// A `sessiond serve`-like server on loopback (real clock, mobile apps enabled),
/// stoppable and restartable on the same port and data folder.
struct Server {
    base: String,
    addr: SocketAddr,
    data: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    http: reqwest::Client,
    sessions: Sessions,
    desktop: DesktopSessions,
}

fn listener_on(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

impl Server {
    async fn start(data: &Path, addr: Option<SocketAddr>) -> Self {
        let config = crate::node_config(
            data,
            "ConsoleTest",
            "[remote]\nclient_builtins = [\"session.wait\"]",
        );
        let node = sessiond_server::Server::builder(config)
            .roles(Roles::parse(ROLES, "roles.json").unwrap())
            .secrets(Some("k".into()), Some(ADMIN.into()))
            .login_hook(Arc::new(Hook))
            .build()
            .await
            .unwrap();
        let sessions = node.state().sessions.clone();
        let desktop = node.state().desktop.clone();
        let listener = listener_on(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()));
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(node.serve(listener, async {
            let _ = stopped.await;
        }));
        crate::until_up(&format!("http://{addr}")).await;
        Self {
            base: format!("http://{addr}"),
            addr,
            data: data.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
            http: reqwest::Client::new(),
            sessions,
            desktop,
        }
    }

    /// Graceful shutdown (open consoles' event streams must not hold it up).
    async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("graceful shutdown does not wait for open event streams")
            .unwrap()
            .unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path` with a console cookie; the JSON answer.
    async fn get_with_cookie(&self, cookie: &str, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A remote client of `user` (added to the users file) on `machine`.
    async fn remote_client(
        &self,
        user: &str,
        machine: &str,
        host: sessiond_core::protocol::HostType,
    ) -> sessiond_client::RemoteClient {
        let password = format!("{user}-remote-pw");
        sessiond_server::users::Users::add(
            &self.data.join("users.json"),
            user,
            &password,
            vec![],
            vec!["sales".into()],
        )
        .unwrap();
        let url = format!("{}/remote", self.base.replace("http://", "ws://"));
        let mut config = sessiond_client::ClientConfig::new(&url, user, &password);
        config.machine_name = machine.into();
        config.system_user_name = user.into();
        config.host_type = host;
        sessiond_client::RemoteClient::connect(config)
            .await
            .unwrap()
    }

    /// A device logs in like the iOS client; returns (session id, token if accepted).
    async fn mobile_login(&self, body: &str) -> (String, Option<String>) {
        let v: Value = self
            .http
            .post(self.url("/mobileapp/$authenticate"))
            .header("X-QMobile", "1")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["id"].as_str().expect("a session id").to_string(),
            v["token"].as_str().map(str::to_string),
        )
    }

    /// A data request of the mobile app with its token: 200, or 401 when the
    /// session is not usable.
    async fn mobile_data(&self, token: &str) -> StatusCode {
        self.http
            .get(self.url("/mobileapp/$licensecheck"))
            .header("X-QMobile", "1")
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    fn file(&self, id: &str) -> PathBuf {
        self.data.join("MobileApps").join(FOLDER).join(id)
    }

    fn file_status(&self, id: &str) -> Option<String> {
        let bytes = std::fs::read(self.file(id)).ok()?;
        let v: Value = serde_json::from_slice(&bytes).ok()?;
        v["status"].as_str().map(str::to_string)
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.data.join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// Signs in with a plain HTTP client: returns (cookie header value, CSRF token).
    async fn sign_in(&self) -> (String, String) {
        let resp = self
            .http
            .post(self.url("/admin/login"))
            .json(&json!({"password": ADMIN}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
            assert!(set.contains(attr), "{set}");
        }
        let cookie = set.split(';').next().unwrap().to_string();
        let body: Value = resp.json().await.unwrap();
        let answer: sessiond_server::contract::SignInAnswer = crate::exactly(&body);
        (cookie, answer.csrf)
    }
}

/// Polls `f` until it yields a value (at most [`WAIT`]).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// The admin API answers what `/admin/api/openapi.json` says, on every route, for
/// success and the documented errors (no credential, a console change without its
/// CSRF token, unknown sessions and files).
#[tokio::test]
async fn every_admin_route_answers_what_its_openapi_document_says() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), None).await;
    let mut c = crate::openapi::Contract::fetch(&server.url("/admin/api/openapi.json")).await;
    let (id, _) = server.mobile_login(IOS).await;
    let web: Value = server
        .http
        .get(server.url("/api/session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let web = web["id"].as_str().unwrap().to_string();
    let api = |path: &str| server.url(&format!("/admin/api{path}"));
    let http = server.http.clone();
    let admin = |method: Method, path: &str| http.request(method, api(path)).bearer_auth(ADMIN);
    let file = "/mobile/apps/{folder}/sessions/{id}";
    let here = format!("/mobile/apps/{FOLDER}/sessions/{id}");
    let unknown = "0123456789abcdef0123456789abcdef";
    let cases: Vec<(Method, &str, String, Option<Value>, u16)> = vec![
        (Method::GET, "/me", "/me".into(), None, 200),
        (
            Method::GET,
            "/sessions",
            "/sessions?kind=web&limit=10".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/sessions",
            "/sessions?limit=0".into(),
            None,
            400,
        ),
        (
            Method::GET,
            "/sessions/{id}/storage",
            format!("/sessions/{web}/storage"),
            None,
            200,
        ),
        (
            Method::GET,
            "/sessions/{id}/storage",
            format!("/sessions/{unknown}/storage"),
            None,
            404,
        ),
        (
            Method::GET,
            "/mobile/apps",
            "/mobile/apps".into(),
            None,
            200,
        ),
        (
            Method::GET,
            "/mobile/apps/{folder}/sessions",
            format!("/mobile/apps/{FOLDER}/sessions"),
            None,
            200,
        ),
        (
            Method::GET,
            "/mobile/apps/{folder}/sessions",
            "/mobile/apps/..%2Fx/sessions".into(),
            None,
            400,
        ),
        (Method::GET, file, here.clone(), None, 200),
        (
            Method::GET,
            file,
            format!("/mobile/apps/{FOLDER}/sessions/{unknown}"),
            None,
            404,
        ),
        (
            Method::GET,
            "/mobile/apps/{folder}/sessions/{id}/file",
            format!("{here}/file"),
            None,
            200,
        ),
        (
            Method::PUT,
            "/mobile/apps/{folder}/sessions/{id}/status",
            format!("{here}/status"),
            Some(json!({"status": "pending"})),
            200,
        ),
        (
            Method::PUT,
            "/mobile/apps/{folder}/sessions/{id}/status",
            format!("{here}/status?apply=true"),
            Some(json!({"status": "accepted"})),
            200,
        ),
        (
            Method::PUT,
            "/mobile/apps/{folder}/sessions/{id}/status",
            format!("{here}/status"),
            Some(json!({"status": "maybe"})),
            422,
        ),
        (
            Method::PUT,
            "/mobile/apps/{folder}/sessions/{id}/email",
            format!("{here}/email"),
            Some(json!({"email": "ann@example.com"})),
            200,
        ),
        (
            Method::POST,
            "/mobile/push",
            "/mobile/push".into(),
            None,
            200,
        ),
        (Method::GET, "/audit", "/audit?limit=5".into(), None, 200),
        (Method::GET, "/events", "/events".into(), None, 200),
        (
            Method::DELETE,
            "/sessions/{id}",
            format!("/sessions/{web}"),
            None,
            200,
        ),
        (
            Method::DELETE,
            "/sessions/{id}",
            format!("/sessions/{web}"),
            None,
            404,
        ),
        (
            Method::DELETE,
            "/users/{name}/sessions",
            "/users/nobody/sessions".into(),
            None,
            200,
        ),
        (Method::DELETE, file, here.clone(), None, 200),
        (Method::DELETE, file, here.clone(), None, 404),
    ];
    for (method, template, path, body, expected) in cases {
        let mut req = admin(method.clone(), &path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let (status, answer) = c.send(req, &method, template).await;
        assert_eq!(status.as_u16(), expected, "{method} {path}: {answer}");
    }
    // No credential; a console session's change without its CSRF token.
    let (status, _) = c.send(http.get(api("/me")), &Method::GET, "/me").await;
    assert_eq!(status, 401);
    let (cookie, _) = server.sign_in().await;
    let no_csrf = http.post(api("/mobile/push")).header("cookie", cookie);
    let (status, _) = c.send(no_csrf, &Method::POST, "/mobile/push").await;
    assert_eq!(status, 403);
    c.all_called();
    server.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_credential_and_the_page_has_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None).await;
    for (method, path) in [
        ("GET", "/admin/api/me"),
        ("GET", "/admin/api/mobile/apps"),
        ("GET", "/admin/api/sessions"),
        ("GET", "/admin/api/audit"),
        ("GET", "/admin/api/events"),
        ("POST", "/admin/api/mobile/push"),
        ("DELETE", "/admin/api/users/ann/sessions"),
    ] {
        let resp = s
            .http
            .request(method.parse().unwrap(), s.url(path))
            .header("cookie", "sessiond_admin=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method} {path}");
        // Refusals are private too: never cached, never sniffed.
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "unauthorized");
    }
    // The page and its assets: embedded, typed, policed.
    let page = s.http.get(s.url("/admin")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(h["x-content-type-options"], "nosniff");
    let etag = h["etag"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    assert!(!html.contains("<script>") && !html.contains("http://") && !html.contains("https://"));
    for (file, ty) in [
        ("console.js", "text/javascript; charset=utf-8"),
        ("console.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = s
            .http
            .get(s.url(&format!("/admin/assets/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            (r.status(), r.headers()["content-type"].to_str().unwrap()),
            (StatusCode::OK, ty)
        );
        assert_eq!(r.headers()["cache-control"], "no-cache");
    }
    let again = s
        .http
        .get(s.url("/admin"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let missing = s
        .http
        .get(s.url("/admin/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // The CLI's bearer credential keeps working, and is not a console session.
    let (_, me) = crate::send_json(
        &s.http,
        reqwest::Method::GET,
        s.url("/admin/api/me"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(
        (me["via"].as_str(), me["csrf"].is_null()),
        (Some("bearer"), true)
    );
}

#[tokio::test]
async fn sign_in_is_limited_csrf_is_required_and_changes_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None).await;
    // Wrong password → 401, written to the audit log, then the limiter answers 429.
    let wrong = s
        .http
        .post(s.url("/admin/login"))
        .json(&json!({"password": "guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let audit = s.audit();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (&audit[0]["action"], &audit[0]["outcome"], &audit[0]["ip"]),
        (
            &json!("sign-in"),
            &json!("unauthorized"),
            &json!("127.0.0.1")
        )
    );
    assert!(
        !std::fs::read_to_string(dir.path().join("audit.log"))
            .unwrap()
            .contains("guess"),
        "never a secret"
    );
    let bad_json = s
        .http
        .post(s.url("/admin/login"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    // A good sign-in: the cookie session works for reads and, with the CSRF token,
    // for changes.
    let (cookie, csrf) = s.sign_in().await;
    let me = s.get_with_cookie(&cookie, "/admin/api/me").await;
    assert_eq!(
        (me["via"].as_str(), me["csrf"].as_str()),
        (Some("console"), Some(csrf.as_str()))
    );
    let (id, _) = s.mobile_login(IOS).await;
    let status_url = s.url(&format!(
        "/admin/api/mobile/apps/{FOLDER}/sessions/{id}/status"
    ));
    for csrf_header in [None, Some("wrong"), Some("")] {
        let mut req = s
            .http
            .put(&status_url)
            .header("cookie", &cookie)
            .json(&json!({"status": "pending"}));
        if let Some(t) = csrf_header {
            req = req.header("x-csrf-token", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "csrf");
    }
    assert_eq!(
        s.file_status(&id).as_deref(),
        Some("accepted"),
        "a refused change changes nothing"
    );
    let ok = s
        .http
        .put(&status_url)
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({"status": "pending"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    assert_eq!(s.file_status(&id).as_deref(), Some("pending"));
    // Many concurrent console requests are not password attempts (no 429).
    let reads = (0..30).map(|_| {
        s.http
            .get(s.url("/admin/api/mobile/apps"))
            .header("cookie", &cookie)
            .send()
    });
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    // The live list: newest first, a page at most, the total, any part of the name.
    for name in ["Alice Martin", "alan"] {
        let (snap, _) = s.sessions.create_web(None).await.unwrap();
        let input = s
            .sessions
            .privilege_input(&json!({"userName": name}))
            .unwrap();
        s.sessions
            .set_privileges(
                &snap.record.id(),
                &input,
                sessiond_store::Requester::Backend,
            )
            .await
            .unwrap();
    }
    let page = s
        .get_with_cookie(&cookie, "/admin/api/sessions?limit=1&kind=web")
        .await;
    assert_eq!(page["sessions"].as_array().unwrap().len(), 1);
    assert!(page["total"].as_u64().unwrap() >= 3, "{page}");
    let al = s
        .get_with_cookie(&cookie, "/admin/api/sessions?user=AL")
        .await;
    let mut names: Vec<&str> = al["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["userName"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["Alice Martin", "alan"]);
    assert_eq!(al["total"], 2);
    let resp = s
        .http
        .get(s.url("/admin/api/sessions?limit=0"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    for name in ["Alice Martin", "alan"] {
        assert_eq!(s.desktop.drop_user(name).await.unwrap(), 1);
    }
    // Drop the web session behind the mobile session, then a user's sessions.
    let live = s
        .get_with_cookie(&cookie, "/admin/api/sessions?kind=web")
        .await;
    let web_id = live["sessions"][0]["id"].as_str().unwrap().to_string();
    let dropped = s
        .http
        .delete(s.url(&format!("/admin/api/sessions/{web_id}")))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(dropped.status(), 200);
    let users = s
        .http
        .delete(s.url("/admin/api/users/nobody/sessions"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), 200, "bearer changes need no CSRF token");
    // Sign out: the cookie is dead.
    let out = s
        .http
        .post(s.url("/admin/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    let set_cookie = out.headers()["set-cookie"].clone();
    let answer: sessiond_server::contract::SignOutAnswer =
        crate::exactly(&out.json::<Value>().await.unwrap());
    assert!(answer.signed_out);
    assert!(set_cookie.to_str().unwrap().contains("Max-Age=0"));
    let after = s
        .http
        .get(s.url("/admin/api/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    // The audit log: who, what, when, for every change, in order.
    let audit = s.audit();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("sign-in", "unauthorized"),
            ("sign-in", "ok"),
            ("mobile.status", "ok"),
            ("session.drop", "ok"),
            ("user.drop", "ok"),
            ("sign-out", "ok"),
        ]
    );
    let status = &audit[2];
    assert_eq!(status["who"], "admin");
    assert_eq!(status["via"], "console");
    assert_eq!(status["target"], format!("{FOLDER}/{id}"));
    assert_eq!(status["detail"]["status"], "pending");
    assert!(status["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(audit[4]["via"], "bearer");
    let (_, listed) = crate::send_json(
        &s.http,
        reqwest::Method::GET,
        s.url("/admin/api/audit?limit=2"),
        ADMIN,
        None,
    )
    .await;
    let newest: Vec<&str> = listed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(newest, ["sign-out", "user.drop"]);
    // The limiter: ten failed passwords from one address, then 429 for a while.
    for _ in 0..10 {
        let r = s
            .http
            .post(s.url("/admin/login"))
            .json(&json!({"password": "guess"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let limited = s
        .http
        .post(s.url("/admin/login"))
        .json(&json!({"password": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
}

#[tokio::test]
async fn a_new_admin_password_ends_console_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None).await;
    let (cookie, _) = s.sign_in().await;
    let me = |cookie: String| {
        s.http
            .get(s.url("/admin/api/me"))
            .header("cookie", cookie)
            .send()
    };
    assert_eq!(me(cookie.clone()).await.unwrap().status(), 200);
    // What `sessiond admin password` does.
    Credentials::set_admin_password(dir.path(), "a-brand-new-password").unwrap();
    assert_eq!(me(cookie).await.unwrap().status(), 401);
    let resp = s
        .http
        .post(s.url("/admin/login"))
        .json(&json!({"password": "a-brand-new-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

// ---------- the page in a real browser ----------

/// `chromedriver` on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("/usr/bin/chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is installed (scripts/test installs chromium-driver)");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    eventually("chromedriver", || async {
        let r = http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    driver
}

async fn browser(driver: &Driver, width: u32, height: u32) -> Client {
    let mut caps = serde_json::Map::new();
    let mut options = json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                format!("--window-size={width},{height}"), "--lang=en-US",
                "--hide-scrollbars", "--force-device-scale-factor=1",
            ],
    });
    if width < 500 {
        // Chromium's windows are at least 500 px wide: emulate a phone's viewport.
        options["mobileEmulation"] =
            json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0}});
    }
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// A page helper: waits, clicks and reads through CSS selectors, retrying while the
/// page re-renders.
struct Page<'a> {
    c: &'a Client,
}

impl Page<'_> {
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.c.execute(script, args).await.unwrap()
    }

    /// Waits until `css` matches a displayed element.
    async fn visible(&self, css: &str) {
        eventually(css, || async {
            let e = self.c.find(Locator::Css(css)).await.ok()?;
            e.is_displayed().await.ok()?.then_some(())
        })
        .await;
    }

    /// Waits until no element matches `css`.
    async fn gone(&self, css: &str) {
        eventually(&format!("no {css}"), || async {
            let n = self
                .js(
                    "return document.querySelectorAll(arguments[0]).length",
                    vec![json!(css)],
                )
                .await;
            (n == 0).then_some(())
        })
        .await;
    }

    async fn click(&self, css: &str) {
        eventually(&format!("click {css}"), || async {
            let e = self.c.find(Locator::Css(css)).await.ok()?;
            if !e.is_displayed().await.ok()? {
                return None;
            }
            e.click().await.ok()
        })
        .await;
    }

    async fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            vec![json!(css)],
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    /// Waits until the text of `css` contains `needle`.
    async fn text_contains(&self, css: &str, needle: &str) -> String {
        eventually(&format!("{needle:?} in {css}"), || async {
            let t = self.text(css).await;
            t.contains(needle).then_some(t)
        })
        .await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn sign_in(&self) {
        self.visible("#password").await;
        self.type_into("#password", ADMIN).await;
        self.click("#signin-form button[type=submit]").await;
        self.visible("#app").await;
        self.visible("#conn.live").await;
    }

    /// A `fetch` from the page (same origin, with the console cookie): (status, body).
    async fn fetch(&self, method: &str, path: &str, headers: Value) -> (u16, Value) {
        let v = self
            .c
            .execute_async(
                "const [m, p, h, done] = arguments;
                 fetch(p, {method: m, headers: h, credentials: 'same-origin'})
                   .then(r => r.json().then(j => done([r.status, j])))
                   .catch(e => done([0, String(e)]));",
                vec![json!(method), json!(path), headers],
            )
            .await
            .unwrap();
        (u16::try_from(v[0].as_u64().unwrap()).unwrap(), v[1].clone())
    }

    async fn screenshot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(name), png).unwrap();
    }
}

fn row(id: &str) -> String {
    format!("#m-rows tr[data-id='{id}']")
}

#[tokio::test]
async fn console_end_to_end_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), None).await;
    let driver = chromedriver().await;
    let c = browser(&driver, 1280, 900).await;
    let page = Page { c: &c };
    // Close the browser even when a step fails (then report the failure).
    let result = std::panic::AssertUnwindSafe(async {
        // Sign-in: the page opens on the form; a wrong password is refused.
        c.goto(&s.url("/admin")).await.unwrap();
        page.visible("#password").await;
        page.type_into("#password", "wrong password").await;
        page.click("#signin-form button[type=submit]").await;
        page.text_contains("#signin-error", "Wrong password").await;
        page.sign_in().await;
        page.visible("#apps-empty").await;

        // A device logs in through /mobileapp/$authenticate and appears live (no
        // reload: the marker set now survives).
        page.js("window.sameDocument = true", vec![]).await;
        let (id, token) = s.mobile_login(IOS).await;
        let token = token.expect("accepted at once");
        page.visible(&row(&id)).await;
        assert_eq!(
            page.js("return window.sameDocument === true", vec![]).await,
            true
        );
        page.text_contains("#apps-list", "Contact (UTT7VDX8W5.com.contactApp.Contact)")
            .await;
        assert!(page.text(&row(&id)).await.contains("iPhone X"));
        assert!(page.text(&row(&id)).await.contains("iOS 11.3"));
        assert_eq!(s.mobile_data(&token).await, 200);

        // Hold it: the file says pending at once, the running server after Push.
        page.click(&format!("{} button[data-action=hold]", row(&id)))
            .await;
        page.visible(&format!("{}[data-status=pending]", row(&id)))
            .await;
        assert_eq!(s.file_status(&id).as_deref(), Some("pending"));
        page.visible("#push-needed").await;
        assert_eq!(
            s.mobile_data(&token).await,
            200,
            "as in 4D: not before Push"
        );
        page.click("#push-now").await;
        page.text_contains("#push-report", "Push done").await;
        assert!(
            page.js(
                "return document.querySelector('#push-needed').hidden",
                vec![]
            )
            .await
            .as_bool()
            .unwrap()
        );
        assert_eq!(s.mobile_data(&token).await, 401);

        // Accept it, with "apply changes immediately": 200 at once.
        page.click("#apply-now").await;
        page.click(&format!("{} button[data-action=accept]", row(&id)))
            .await;
        page.visible(&format!("{}[data-status=accepted]", row(&id)))
            .await;
        assert_eq!(s.file_status(&id).as_deref(), Some("accepted"));
        assert_eq!(s.mobile_data(&token).await, 200);
        page.click("#apply-now").await;

        // Show file: its path and JSON.
        page.click(&format!("{} button[data-action=file]", row(&id)))
            .await;
        page.visible("#file-dialog[open]").await;
        let path = page.text("#file-path").await;
        assert_eq!(Path::new(&path), s.file(&id));
        let shown: Value = serde_json::from_str(&page.text("#file-json").await).unwrap();
        assert_eq!(shown["session"]["id"], id.as_str());
        let (st, downloaded) = page
            .fetch(
                "GET",
                &format!("/admin/api/mobile/apps/{FOLDER}/sessions/{id}/file"),
                json!({}),
            )
            .await;
        assert_eq!((st, &downloaded["status"]), (200, &json!("accepted")));
        c.active_element()
            .await
            .unwrap()
            .send_keys("\u{e00c}")
            .await
            .unwrap(); // Escape
        page.gone("#file-dialog[open]").await;

        // A change without the CSRF token, from the signed-in page itself, is refused.
        let (st, v) = page
            .fetch("POST", "/admin/api/mobile/push", json!({}))
            .await;
        assert_eq!((st, v["error"].as_str()), (403, Some("csrf")));
        let (st, _) = page
            .fetch(
                "DELETE",
                &format!("/admin/api/mobile/apps/{FOLDER}/sessions/{id}"),
                json!({"X-CSRF-Token": "forged"}),
            )
            .await;
        assert_eq!(st, 403);
        assert!(s.file(&id).exists());

        // Delete (confirmed) + Push → 401.
        page.click(&format!("{} button[data-action=delete]", row(&id)))
            .await;
        page.visible("#confirm-dialog[open]").await;
        page.click("#confirm-ok").await;
        page.gone(&row(&id)).await;
        assert!(!s.file(&id).exists());
        assert_eq!(s.mobile_data(&token).await, 200, "not before Push");
        page.click("#push").await;
        page.text_contains("#push-report", "1 removed").await;
        assert_eq!(s.mobile_data(&token).await, 401);

        // A corrupt file: the Push shows its mobi error.
        let (other, _) = s.mobile_login(&IOS.replace("0DC5132E", "1DC5132E")).await;
        page.visible(&row(&other)).await;
        let corrupt = s.file("0123456789abcdef0123456789abcdef");
        std::fs::write(&corrupt, b"{ not json").unwrap();
        page.click("#push").await;
        let report = page.text_contains("#push-report .errors", "mobi 2").await;
        assert!(
            report.contains("0123456789abcdef0123456789abcdef"),
            "{report}"
        );
        assert!(page.text("#push-report").await.contains("1 error"));

        // Bulk: select all, hold.
        let (third, _) = s.mobile_login(&IOS.replace("0DC5132E", "2DC5132E")).await;
        page.visible(&row(&third)).await;
        page.click("#m-all").await;
        page.text_contains("#bulk-count", "2 selected").await;
        page.click("#bulk-hold").await;
        page.visible(&format!("{}[data-status=pending]", row(&other)))
            .await;
        page.visible(&format!("{}[data-status=pending]", row(&third)))
            .await;
        assert_eq!(s.file_status(&third).as_deref(), Some("pending"));
        page.text_contains("#pending-total", "2").await;

        // Live sessions: the web sessions behind the mobile ones; drop one.
        page.click("#tab-sessions").await;
        page.visible("#s-rows tr[data-kind=web]").await;
        let before = page
            .js(
                "return document.querySelectorAll('#s-rows tr').length",
                vec![],
            )
            .await;
        page.click("#s-rows tr button[data-action=storage]").await;
        page.visible("#storage-dialog[open]").await;
        assert_eq!(page.text("#storage-json").await, "{}");
        page.click("#storage-dialog [data-close]").await;
        page.click("#s-rows tr button[data-action=drop]").await;
        page.click("#confirm-ok").await;
        eventually("one session fewer", || async {
            let n = page
                .js(
                    "return document.querySelectorAll('#s-rows tr').length",
                    vec![],
                )
                .await;
            (n.as_u64()? + 1 == before.as_u64()?).then_some(())
        })
        .await;

        // Filter by user, then drop every session of that user.
        for _ in 0..2 {
            let (snap, _) = s.sessions.create_web(None).await.unwrap();
            let input = s
                .sessions
                .privilege_input(&json!({"userName": "ann", "privileges": ["sales"]}))
                .unwrap();
            s.sessions
                .set_privileges(
                    &snap.record.id(),
                    &input,
                    sessiond_store::Requester::Backend,
                )
                .await
                .unwrap();
        }
        page.type_into("#s-user", "AN").await;
        eventually("ann's two sessions only", || async {
            let n = page
                .js(
                    "const rows = [...document.querySelectorAll('#s-rows tr')];
                     return rows.every(r => r.textContent.includes('ann')) ? rows.length : -1",
                    vec![],
                )
                .await;
            (n == 2).then_some(())
        })
        .await;
        let rows = page.text("#s-rows").await;
        assert!(rows.contains("sales"), "{rows}");
        page.click("#s-rows tr button[data-action=drop-user]").await;
        page.click("#confirm-ok").await;
        page.visible("#s-empty").await;
        assert!(
            s.sessions
                .activity(&sessiond_store::ActivityFilter {
                    user_name: Some("ann".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty()
        );

        // The audit log tab shows the changes.
        page.click("#tab-audit").await;
        let audit = page.text_contains("#a-rows", "Session dropped").await;
        for needle in [
            "Push",
            "Mobile session status",
            "Mobile session deleted",
            "Sign-in",
        ] {
            assert!(audit.contains(needle), "{needle} in {audit}");
        }

        // A server restart: the page says it is reconnecting, then carries on signed
        // in (console sessions are kept in the data folder), changes included.
        s.stop().await;
        page.visible("#banner").await;
        page.text_contains("#banner", "reconnecting").await;
        let data = s.data.clone();
        let addr = s.addr;
        s = Server::start(&data, Some(addr)).await;
        page.visible("#conn.live").await;
        page.gone("#banner:not([hidden])").await;
        assert!(
            page.js("return document.querySelector('#signin').hidden", vec![])
                .await
                .as_bool()
                .unwrap()
        );
        page.click("#tab-mobile").await;
        page.click(&format!("{} button[data-action=accept]", row(&third)))
            .await;
        page.visible(&format!("{}[data-status=accepted]", row(&third)))
            .await;
        assert_eq!(s.file_status(&third).as_deref(), Some("accepted"));

        // Sign out: back to the form; the old cookie is refused.
        page.click("#signout").await;
        page.visible("#password").await;
        let (st, _) = page.fetch("GET", "/admin/api/me", json!({})).await;
        assert_eq!(st, 401);
        let actions: Vec<String> = s
            .audit()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(actions.last().map(String::as_str), Some("sign-out"));
    })
    .catch_unwind()
    .await;
    let _ = c.close().await;
    drop(driver);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Saves the screenshots shown in the README (`docs/console-*.png`). Run by hand:
/// `cargo test -p sessiond-server --test it console_screenshots -- --ignored`.
#[tokio::test]
async fn console_lists_remote_and_stored_procedure_sessions_and_drops_a_remote_client() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None).await;
    let client = Arc::new(
        s.remote_client(
            "dana",
            "DANA-PC",
            sessiond_core::protocol::HostType::Windows,
        )
        .await,
    );
    let id = client.id().to_string();
    // A call that runs for a while shows under "Running".
    let running = {
        let c = client.clone();
        tokio::spawn(async move { c.call("session.wait", json!({"ms": 20_000})).await })
    };
    let driver = chromedriver().await;
    let c = browser(&driver, 1280, 900).await;
    let page = Page { c: &c };
    c.goto(&s.url("/admin#sessions")).await.unwrap();
    page.sign_in().await;
    page.click("#tab-sessions").await;
    let remote = format!("#s-rows tr[data-id='{id}']");
    let text = page.text_contains(&remote, "session.wait").await;
    for needle in ["Remote", "dana", "DANA-PC", "windows", "active", "sales"] {
        assert!(text.contains(needle), "{needle} in {text}");
    }
    let sp = "#s-rows tr[data-kind=storedProcedure]";
    page.text_contains(sp, "Stored proc.").await;
    page.gone(&format!("{sp} button[data-action=drop]")).await;
    // Drop: the client is told, and its running call ends with the session.
    page.click(&format!("{remote} button[data-action=drop]"))
        .await;
    page.click("#confirm-ok").await;
    let reason = tokio::time::timeout(WAIT, client.closed()).await.unwrap();
    assert_eq!(reason, Some(sessiond_core::protocol::CloseReason::Dropped));
    page.gone(&remote).await;
    running.abort();
    c.close().await.unwrap();
}

#[tokio::test]
#[ignore = "writes docs/*.png; run by hand after changing the console's look"]
async fn console_screenshots() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), None).await;
    // A plausible day: two apps, a few devices, some waiting for approval.
    let devices = [
        (
            "0DC5132E",
            "iPhone 15 Pro",
            "iOS",
            "17.4",
            "ann@example.com",
        ),
        (
            "1DC5132E",
            "iPhone 13",
            "iOS",
            "16.7",
            "wait.bob@example.com",
        ),
        (
            "2DC5132E",
            "iPad Air",
            "iPadOS",
            "17.3",
            "carla@example.com",
        ),
        (
            "3DC5132E",
            "iPhone SE",
            "iOS",
            "15.8",
            "wait.dan@example.com",
        ),
        ("4DC5132E", "iPhone 14", "iOS", "17.2", "erin@example.com"),
    ];
    for (dev, desc, os, version, email) in devices {
        let body = IOS
            .replace("0DC5132E", dev)
            .replace("iPhone X", desc)
            .replace(r#""os":"iOS""#, &format!(r#""os":"{os}""#))
            .replace("11.3", version)
            .replace(r#""email":"""#, &format!(r#""email":"{email}""#));
        s.mobile_login(&body).await;
    }
    let android = r#"{"email":"fay@example.com","application":{"id":"com.company.fieldapp","name":"Field Service","version":"2.1"},"device":{"id":"9774d56d682e549c","simulator":false,"description":"Pixel 8","version":"14","os":"Android"},"language":{"id":"en_US","code":"en","region":"US"},"parameters":{}}"#;
    s.mobile_login(android).await;
    s.mobile_login(
        &android
            .replace("9774d56d", "1234d56d")
            .replace("Pixel 8", "SM-G991B")
            .replace("fay@", "wait.gus@"),
    )
    .await;
    // Web sessions of signed-in users, with storage.
    for (user, privileges, ip) in [
        ("ann", json!({"roles": ["Manager"]}), "10.0.4.21"),
        ("bob", json!({"privileges": ["sales"]}), "10.0.4.37"),
        ("carla", json!({"privileges": ["admin"]}), "192.168.1.12"),
    ] {
        let (snap, _) = s
            .sessions
            .create_web(Some(ip.parse().unwrap()))
            .await
            .unwrap();
        let mut input = privileges;
        input["userName"] = json!(user);
        let input = s.sessions.privilege_input(&input).unwrap();
        s.sessions
            .set_privileges(
                &snap.record.id(),
                &input,
                sessiond_store::Requester::Backend,
            )
            .await
            .unwrap();
        let patch = json!({"cart": {"items": 3, "total": 129.9}, "lastPage": "/orders"});
        s.sessions
            .update_storage(&snap.record.id(), None, |m| {
                sessiond_core::storage::merge_patch(m, &patch)
            })
            .await
            .unwrap();
    }
    s.sessions
        .create_web(Some("10.0.4.99".parse().unwrap()))
        .await
        .unwrap();
    // Remote clients: one busy, one asleep; a stored procedure running.
    let busy = Arc::new(
        s.remote_client(
            "dana",
            "DANA-PC",
            sessiond_core::protocol::HostType::Windows,
        )
        .await,
    );
    let calls = {
        let c = busy.clone();
        tokio::spawn(async move { c.call("session.wait", json!({"ms": 60_000})).await })
    };
    let mut asleep = s
        .remote_client("eve", "eve-macbook", sessiond_core::protocol::HostType::Mac)
        .await;
    asleep.sleep().await.unwrap();
    let procedure = s
        .desktop
        .execute_on_server("session.wait", json!({"ms": 60_000}))
        .await
        .unwrap();
    let driver = chromedriver().await;
    let c = browser(&driver, 1280, 1000).await;
    let page = Page { c: &c };
    c.goto(&s.url("/admin")).await.unwrap();
    page.visible("#password").await;
    page.type_into("#password", "a wrong guess").await;
    page.click("#signin-form button[type=submit]").await;
    page.text_contains("#signin-error", "Wrong password").await;
    page.sign_in().await;
    page.visible("#m-rows tr[data-status=pending]").await;
    // Hold one more device: the "Push needed" notice shows.
    page.click("#m-rows tr[data-status=accepted] button[data-action=hold]")
        .await;
    page.visible("#push-needed").await;
    page.click("#push-now").await;
    page.text_contains("#push-report", "Push done").await;
    page.click("#m-rows tr[data-status=accepted] button.disclosure")
        .await;
    page.click("#m-rows tr[data-status=accepted] input[type=checkbox]")
        .await;
    page.js(
        "document.activeElement.blur(); document.querySelector('#toast').hidden = true",
        vec![],
    )
    .await;
    page.screenshot("console-mobile.png").await;
    page.click("#m-rows tr button[data-action=file]").await;
    page.visible("#file-dialog[open]").await;
    page.screenshot("console-file.png").await;
    c.active_element()
        .await
        .unwrap()
        .send_keys("\u{e00c}")
        .await
        .unwrap();
    page.gone("#file-dialog[open]").await;
    page.click("#tab-sessions").await;
    page.visible("#s-rows tr").await;
    page.js("document.querySelector('#toast').hidden = true", vec![])
        .await;
    page.screenshot("console-sessions.png").await;
    page.click("#s-rows tr button[data-action=drop]").await;
    page.click("#confirm-ok").await;
    page.click("#tab-audit").await;
    page.text_contains("#a-rows", "Session dropped").await;
    page.js("document.querySelector('#toast').hidden = true", vec![])
        .await;
    page.visible("#a-rows tr").await;
    page.screenshot("console-audit.png").await;
    c.close().await.unwrap();
    // Phone width.
    let c = browser(&driver, 390, 844).await;
    let page = Page { c: &c };
    c.goto(&s.url("/admin#mobile")).await.unwrap();
    page.sign_in().await;
    page.visible("#m-rows tr").await;
    page.screenshot("console-mobile-narrow.png").await;
    c.close().await.unwrap();
    calls.abort();
    drop(procedure);
}
