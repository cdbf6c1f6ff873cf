//! The OpenAPI documents against the server's real answers: every route is called
//! for its success and its documented errors, and every answer is validated against
//! what the document gives for its status. [`Contract`] is shared with the admin
//! API's test (in `console`, whose harness it uses).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::http::Server;

/// The document, and the (method, path) pairs the test has called.
pub(crate) struct Contract {
    doc: Value,
    called: BTreeSet<(String, String)>,
}

impl Contract {
    /// The document served at `url` (without credentials), checked to be OpenAPI 3.1.
    pub(crate) async fn fetch(url: &str) -> Self {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let doc: Value = resp.json().await.unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
        Self {
            doc,
            called: BTreeSet::new(),
        }
    }

    /// Sends `req` (`method template`) and checks the answer: a JSON body against
    /// its schema, another body's content type against the documented one.
    pub(crate) async fn send(
        &mut self,
        req: reqwest::RequestBuilder,
        method: &Method,
        template: &str,
    ) -> (StatusCode, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if kind.starts_with("application/json") {
            let body: Value = resp.json().await.unwrap();
            self.check(method, template, status, &body);
            return (status, body);
        }
        let m = method.as_str().to_ascii_lowercase();
        let content = &self.doc["paths"][template][&m]["responses"][status.as_str()]["content"];
        let documented = kind.split(';').next().unwrap_or("");
        assert!(
            content.get(documented).is_some(),
            "{m} {template} {status}: {kind} is not documented ({content})"
        );
        self.called.insert((m, template.to_string()));
        (status, Value::Null)
    }

    /// Validates `body`, answered with `status` by `method template`, against the
    /// document; panics with the difference.
    pub(crate) fn check(
        &mut self,
        method: &Method,
        template: &str,
        status: StatusCode,
        body: &Value,
    ) {
        let errors = self.errors(method, template, status, body);
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: {errors:?}\nbody: {body}"
        );
        let method = method.as_str().to_ascii_lowercase();
        self.called.insert((method, template.to_string()));
    }

    /// What in `body` does not match the document.
    pub(crate) fn errors(
        &self,
        method: &Method,
        template: &str,
        status: StatusCode,
        body: &Value,
    ) -> Vec<String> {
        let method = method.as_str().to_ascii_lowercase();
        let operation = &self.doc["paths"][template][&method];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let response = &operation["responses"][status.as_str()];
        assert!(
            response.is_object(),
            "{method} {template}: status {status} is not documented (body {body})"
        );
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {template} {status}: no schema"
        );
        // The component schemas as `$defs` of one JSON Schema 2020-12 document.
        let text = serde_json::to_string(&json!({
            "$defs": self.doc["components"]["schemas"],
            "allOf": [schema],
        }))
        .unwrap()
        .replace("#/components/schemas/", "#/$defs/");
        let root: Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::draft202012::new(&root).expect("a valid schema");
        validator.iter_errors(body).map(|e| e.to_string()).collect()
    }

    /// Asserts that every documented (method, path) was called.
    pub(crate) fn all_called(&self) {
        assert_eq!(
            self.called,
            self.documented(),
            "every documented route is called"
        );
    }

    /// Every documented (method, path).
    fn documented(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                all.insert((method.clone(), path.clone()));
            }
        }
        all
    }
}

/// A call of the service test: method, documented path, path called, body,
/// `If-Match`, the status expected.
type Case<'a> = (Method, &'a str, String, Option<Value>, Option<&'a str>, u16);

#[tokio::test]
async fn every_service_route_answers_what_its_openapi_document_says() {
    let s = Server::start().await;
    // Served without the API key: clients generate code from it.
    let mut c = Contract::fetch(&s.url("/service/v1/openapi.json")).await;
    // The check can fail: a session without its id, an error with an unknown code.
    let (get, session) = (Method::GET, "/sessions/{id}");
    let no_id = json!({"userName": "x"});
    assert!(!c.errors(&get, session, StatusCode::OK, &no_id).is_empty());
    let bad = json!({"error": "oops", "message": "x"});
    assert!(
        !c.errors(&get, session, StatusCode::NOT_FOUND, &bad)
            .is_empty()
    );

    let (me, cookie) = s.own(None).await;
    let id = me["id"].as_str().unwrap().to_string();
    let cookie = cookie.unwrap();
    let unknown = "0123456789abcdef0123456789abcdef";
    let on = |path: &str| format!("/sessions/{id}{path}");
    let key = |req: reqwest::RequestBuilder| req.bearer_auth(crate::http::KEY);
    let http = s.http_client().clone();
    let url = |path: &str| s.url(&format!("/service/v1{path}"));
    // (method, documented path, path called, body, `If-Match`, status expected), in order.
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/sessions/resolve",
            "/sessions/resolve".into(),
            Some(json!({"cookie": cookie})),
            None,
            200,
        ),
        (
            Method::POST,
            "/sessions/resolve",
            "/sessions/resolve".into(),
            Some(json!({"cookie": "nope"})),
            None,
            404,
        ),
        (
            Method::POST,
            "/sessions/resolve",
            "/sessions/resolve".into(),
            Some(json!({"cookies": 1})),
            None,
            422,
        ),
        (Method::GET, session, on(""), None, None, 200),
        (
            Method::GET,
            session,
            format!("/sessions/{unknown}"),
            None,
            None,
            404,
        ),
        (
            Method::PUT,
            "/sessions/{id}/idle-timeout",
            on("/idle-timeout"),
            Some(json!({"idleTimeout": 90})),
            None,
            200,
        ),
        (
            Method::PUT,
            "/sessions/{id}/idle-timeout",
            on("/idle-timeout"),
            Some(json!({"idleTimeout": -1})),
            None,
            422,
        ),
        (
            Method::PUT,
            "/sessions/{id}/privileges",
            on("/privileges"),
            Some(json!({"privileges": ["a", "nope"], "userName": "ann"})),
            None,
            200,
        ),
        (
            Method::PUT,
            "/sessions/{id}/privileges",
            on("/privileges"),
            Some(json!({"roles": 5})),
            None,
            400,
        ),
        (
            Method::GET,
            "/sessions/{id}/privileges",
            on("/privileges"),
            None,
            None,
            200,
        ),
        (
            Method::GET,
            "/sessions/{id}/privileges/{name}",
            on("/privileges/a"),
            None,
            None,
            200,
        ),
        (
            Method::DELETE,
            "/sessions/{id}/privileges",
            on("/privileges"),
            None,
            None,
            200,
        ),
        (
            Method::PATCH,
            "/sessions/{id}/storage",
            on("/storage"),
            Some(json!({"cart": {"n": 1}})),
            None,
            200,
        ),
        (
            Method::GET,
            "/sessions/{id}/storage",
            on("/storage"),
            None,
            None,
            200,
        ),
        (
            Method::POST,
            "/sessions/{id}/storage/increment",
            on("/storage/increment"),
            Some(json!({"path": "cart.n", "by": 2})),
            None,
            200,
        ),
        (
            Method::POST,
            "/sessions/{id}/storage/increment",
            on("/storage/increment"),
            Some(json!({"path": "cart", "by": 1})),
            None,
            400,
        ),
        (
            Method::POST,
            "/sessions/{id}/storage/increment",
            on("/storage/increment"),
            Some(json!({"path": "cart.n", "by": 1})),
            Some("1"),
            409,
        ),
        (
            Method::GET,
            "/activity",
            "/activity".into(),
            None,
            None,
            200,
        ),
        (
            Method::GET,
            "/activity",
            "/activity?mode=sessions&kind=web".into(),
            None,
            None,
            200,
        ),
        (
            Method::GET,
            "/activity",
            "/activity?mode=everything".into(),
            None,
            None,
            400,
        ),
        (
            Method::POST,
            "/stored-procedures/{name}",
            "/stored-procedures/session.info".into(),
            None,
            None,
            200,
        ),
        (
            Method::POST,
            "/stored-procedures/{name}",
            "/stored-procedures/session.info?wait=false".into(),
            None,
            None,
            202,
        ),
        (
            Method::POST,
            "/stored-procedures/{name}",
            "/stored-procedures/nothing".into(),
            None,
            None,
            404,
        ),
    ];
    for (method, template, path, body, version, expected) in cases {
        let mut req = key(http.request(method.clone(), url(&path)));
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(v) = version {
            req = req.header("if-match", v);
        }
        let (status, answer) = c.send(req, &method, template).await;
        assert_eq!(status.as_u16(), expected, "{method} {path}: {answer}");
    }

    // One-time tokens: a token is spent once.
    let (st, otp) = c
        .send(
            key(http.post(url(&on("/otp")))),
            &Method::POST,
            "/sessions/{id}/otp",
        )
        .await;
    assert_eq!(st, 200);
    let restore = json!({"token": otp["token"]});
    for expected in [200, 404] {
        let req = key(http.post(url("/otp/restore"))).json(&restore);
        let (st, _) = c.send(req, &Method::POST, "/otp/restore").await;
        assert_eq!(st.as_u16(), expected);
    }

    // Ending the session; then the errors every route documents: no key, and a body
    // that is not JSON.
    for expected in [200, 404] {
        let (st, _) = c
            .send(key(http.delete(url(&on("")))), &Method::DELETE, session)
            .await;
        assert_eq!(st.as_u16(), expected);
    }
    let (st, _) = c.send(http.get(url(&on(""))), &Method::GET, session).await;
    assert_eq!(st, 401);
    let text = key(http.post(url("/otp/restore")))
        .header("content-type", "text/plain")
        .body("token");
    let (st, _) = c.send(text, &Method::POST, "/otp/restore").await;
    assert_eq!(st, 415);

    c.all_called();
}
