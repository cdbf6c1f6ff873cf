//! `/mobileapp/`: the protocol of 4D-generated iOS and Android apps (spec §1), on
//! top of [`sessiond_mobile::MobileSessions`].
//!
//! Answers follow what both client SDKs parse: a login answer always has `id`,
//! `statusText` (a string) and `success`; every "no usable session" case is HTTP 401
//! (never 403); error bodies carry `statusText` and the `__ERRORS`/`__ERROR` arrays
//! (plus sessiond's own `error`/`message`). Cookies are never used here (Android
//! sends them back in a request header named `Set-Cookie`, which is ignored).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use sessiond::error::ErrorCode;
use sessiond_mobile::{AuthAnswer, AuthHook, Authorized, MobileError, MobileSessions};

use crate::app::AppState;
use crate::contract::mobile::{Authenticated, Done, Failed};

/// The mobile side of the server.
#[derive(Clone)]
pub struct MobileState {
    /// The sessions.
    pub sessions: Arc<MobileSessions>,
    /// The authentication hook.
    pub hook: Arc<dyn AuthHook>,
    /// Where authorized data requests are forwarded, `http://` or `https://` (`None`:
    /// answered 404).
    pub upstream: Option<http::Uri>,
    /// Limits of forwarded requests.
    pub forward: ForwardLimits,
    client: crate::outbound::Client,
}

/// Limits of the requests forwarded to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardLimits {
    /// The upstream's whole answer (head) must come within this. Default 30 s.
    pub timeout: std::time::Duration,
    /// Largest forwarded request body (uploads), bytes. Default 16 MiB.
    pub max_body_bytes: usize,
}

impl Default for ForwardLimits {
    fn default() -> Self {
        Self {
            timeout: std::time::Duration::from_secs(30),
            max_body_bytes: 16 << 20,
        }
    }
}

impl std::fmt::Debug for MobileState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MobileState")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl MobileState {
    /// The mobile side with its hook and optional upstream.
    pub fn new(
        sessions: Arc<MobileSessions>,
        hook: Arc<dyn AuthHook>,
        upstream: Option<http::Uri>,
    ) -> Self {
        Self {
            sessions,
            hook,
            upstream,
            forward: ForwardLimits::default(),
            client: crate::outbound::client(&[]),
        }
    }

    /// The same, forwarding with `client` (one that trusts an internal CA).
    #[must_use]
    pub fn with_client(mut self, client: crate::outbound::Client) -> Self {
        self.client = client;
        self
    }

    /// The same, with these limits for forwarded requests.
    #[must_use]
    pub fn with_forward_limits(mut self, forward: ForwardLimits) -> Self {
        self.forward = forward;
        self
    }
}

/// Mobile error codes known to both clients (spec §1.4).
const MALFORMED: u32 = 1901;
const BAD_REQUEST: u32 = 1904;
const UNAUTHORIZED: u32 = 1907;
const SUCCESS_FALSE: u32 = 1912;

/// An error answer both SDKs understand.
pub fn mobile_error(code: ErrorCode, err_code: u32, text: &str) -> Response {
    (code.status(), Json(Failed::new(code, err_code, text))).into_response()
}

fn unauthorized() -> Response {
    mobile_error(
        ErrorCode::Unauthorized,
        UNAUTHORIZED,
        "Invalid or missing authentication token",
    )
}

fn from_error(e: &MobileError) -> Response {
    match e {
        MobileError::BadRequest(m) => mobile_error(ErrorCode::BadRequest, BAD_REQUEST, m),
        MobileError::NotFound => unauthorized(),
        MobileError::TooLarge(m) => mobile_error(ErrorCode::TooLarge, BAD_REQUEST, m),
        MobileError::TooMany {
            message,
            retry_after,
        } => {
            let mut r = mobile_error(ErrorCode::TooMany, SUCCESS_FALSE, message);
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            r
        }
        // I/O, the session store, and any later kind of failure.
        _ => {
            tracing::error!(error = %e, "mobile session failure");
            mobile_error(
                ErrorCode::Unavailable,
                SUCCESS_FALSE,
                "The server cannot store sessions right now",
            )
        }
    }
}

/// The activation token of a query string or form body.
fn activation_token(form: &[u8]) -> String {
    form_urlencoded::parse(form)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn page(status: StatusCode, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>Activation</title></head><body style=\"font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem\"><h1>Activation</h1>{body}</body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `GET /activation?token=…`, the link of the validation mail (spec §3.6): a page
/// with a button. Opening the link changes nothing, so mail scanners that fetch links
/// cannot accept a device; the button posts the token.
async fn activation_page(req: Request) -> Response {
    let token = activation_token(req.uri().query().unwrap_or("").as_bytes());
    let token: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    page(
        StatusCode::OK,
        &format!(
            "<p>Confirm your e-mail address to activate the app on your device.</p><form method=\"post\" action=\"/activation\"><input type=\"hidden\" name=\"token\" value=\"{token}\"><button type=\"submit\">Activate</button></form>"
        ),
    )
}

/// `POST /activation` (form field `token`): accepts the session of a valid link.
async fn activation(State(state): State<AppState>, body: Bytes) -> Response {
    let token = activation_token(&body);
    let activated = match &state.mobile {
        Some(m) => m.sessions.activate(&token).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "activation failed");
            false
        }),
        None => false,
    };
    if activated {
        page(
            StatusCode::OK,
            "<p>You are successfully authenticated. Go back to the app and log in again.</p>",
        )
    } else {
        page(
            StatusCode::NOT_FOUND,
            "<p>This email confirmation link has expired!</p>",
        )
    }
}

/// The `/mobileapp` routes and `/activation`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/activation",
            axum::routing::get(activation_page).post(activation),
        )
        .route("/mobileapp", any(dispatch))
        .route("/mobileapp/", any(dispatch))
        .route("/mobileapp/{*rest}", any(dispatch))
}

async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    let Some(mobile) = state.mobile.clone() else {
        return mobile_error(
            ErrorCode::NotFound,
            BAD_REQUEST,
            "mobile apps are not enabled on this server",
        );
    };
    let path = req
        .uri()
        .path()
        .trim_start_matches("/mobileapp")
        .trim_start_matches('/')
        .to_string();
    let endpoint = percent_decode(&path);
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let method = req.method().clone();
    match (method.as_str(), endpoint.as_str()) {
        ("GET", "") => done(None),
        ("POST", "$authenticate") => match json_body(req, state.config.max_body_bytes).await {
            Ok(body) => match mobile
                .sessions
                .authenticate(&body, peer, mobile.hook.as_ref())
                .await
            {
                Ok(answer) => auth_answer(answer),
                Err(e) => from_error(&e),
            },
            Err(r) => r,
        },
        ("POST", "$verify") => {
            let token = match json_body(req, state.config.max_body_bytes).await {
                Ok(body) => body.get("token").and_then(Value::as_str).map(str::to_owned),
                Err(r) => return r,
            };
            match authorize(&mobile, token).await {
                // The token as stored, byte for byte (a 4D file's token may lack keys
                // that a re-encoding would add).
                Ok(who) => auth_answer(AuthAnswer::Accepted {
                    id: who.id,
                    token: who.token,
                    status_text: String::new(),
                    user_info: who.user_info,
                }),
                Err(r) => r,
            }
        }
        (_, "" | "$authenticate" | "$verify") => method_not_applicable(),
        _ => {
            let who =
                match authorize(&mobile, super::bearer(req.headers()).map(str::to_owned)).await {
                    Ok(w) => w,
                    Err(r) => return r,
                };
            match (method.as_str(), endpoint.as_str()) {
                ("POST", "$logout") => match mobile.sessions.logout(&who).await {
                    Ok(()) => done(None),
                    Err(e) => from_error(&e),
                },
                ("POST", "$userInfo") => {
                    match json_body_or_empty(req, state.config.max_body_bytes).await {
                        Ok(body) => match mobile.sessions.set_user_info(&who, &body).await {
                            Ok(()) => done(Some(true)),
                            Err(e) => from_error(&e),
                        },
                        Err(r) => r,
                    }
                }
                ("GET", "$licensecheck") => done(Some(true)),
                (_, "$logout" | "$userInfo" | "$licensecheck") => method_not_applicable(),
                _ => forward(&mobile, &who, peer, state.config.trust_proxy_headers, req).await,
            }
        }
    }
}

fn method_not_applicable() -> Response {
    mobile_error(
        ErrorCode::MethodNotAllowed,
        1910,
        "This method is not applicable to this request",
    )
}

async fn authorize(mobile: &MobileState, token: Option<String>) -> Result<Authorized, Response> {
    let Some(token) = token else {
        return Err(unauthorized());
    };
    match mobile.sessions.authorize(&token).await {
        Ok(Some(who)) => Ok(who),
        Ok(None) => Err(unauthorized()),
        Err(e) => Err(from_error(&e)),
    }
}

async fn json_body(req: Request, limit: usize) -> Result<Value, Response> {
    json_body_where_empty_is(req, limit, None).await
}

/// [`json_body`], where an empty body is an empty object (`$userInfo` with nothing
/// to store).
async fn json_body_or_empty(req: Request, limit: usize) -> Result<Value, Response> {
    json_body_where_empty_is(req, limit, Some(json!({}))).await
}

async fn json_body_where_empty_is(
    req: Request,
    limit: usize,
    empty: Option<Value>,
) -> Result<Value, Response> {
    let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            mobile_error(
                ErrorCode::BodyTooLarge,
                BAD_REQUEST,
                "The request body is too large",
            )
        })?;
    if let Some(v) = empty.filter(|_| bytes.iter().all(u8::is_ascii_whitespace)) {
        return Ok(v);
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        mobile_error(
            ErrorCode::InvalidJson,
            MALFORMED,
            &format!("The request is mal formed: {e}"),
        )
    })
}

fn done(success: Option<bool>) -> Response {
    Json(Done { ok: true, success }).into_response()
}

fn auth_answer(answer: AuthAnswer) -> Response {
    let (id, token, status_text, user_info) = match answer {
        AuthAnswer::Accepted {
            id,
            token,
            status_text,
            user_info,
        } => (id, Some(token), status_text, Some(user_info)),
        AuthAnswer::Pending { id, status_text } => (id, None, status_text, None),
        AuthAnswer::Refused { status_text } => {
            let text = if status_text.is_empty() {
                "You are not allowed to connect."
            } else {
                &status_text
            };
            return mobile_error(ErrorCode::Refused, SUCCESS_FALSE, text);
        }
    };
    Json(Authenticated {
        id,
        token,
        status_text,
        user_info,
        success: true,
    })
    .into_response()
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Headers that carry the session identity to the upstream; clients may not set them.
const IDENTITY_HEADERS: [&str; 6] = [
    "x-session-id",
    "x-session-mobile-id",
    "x-session-app",
    "x-session-email",
    "x-session-userinfo",
    "x-session-privileges",
];

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Whether a request path has a `.` or `..` segment, also percent-encoded, or an
/// encoded `/` or `\`: such a path could reach another place on the upstream.
fn has_dot_segments(path: &str) -> bool {
    path.split('/').any(|segment| {
        let lower = segment.to_ascii_lowercase();
        lower.contains("%2f")
            || lower.contains("%5c")
            || segment.contains('\\')
            || matches!(percent_decode(segment).as_str(), "." | "..")
    })
}

/// The upstream URL of a forwarded request: the upstream's path, then the request's.
fn upstream_uri(upstream: &http::Uri, uri: &http::Uri) -> Option<http::Uri> {
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut parts = upstream.clone().into_parts();
    parts.path_and_query = Some(
        format!("{}{path_and_query}", upstream.path().trim_end_matches('/'))
            .parse()
            .ok()?,
    );
    http::Uri::from_parts(parts).ok()
}

/// Replaces what the client said of its identity with the session's, and
/// `X-Forwarded-For` with the real peer (after a trusted proxy's list). A value that
/// cannot be a header is never dropped silently — the upstream would take the request
/// for one without that identity: its name comes back and the request is refused.
fn set_identity(
    headers: &mut http::HeaderMap,
    who: &Authorized,
    peer: Option<std::net::IpAddr>,
    trust_proxy_headers: bool,
) -> Result<(), &'static str> {
    let forwarded_for = {
        let earlier = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .filter(|_| trust_proxy_headers)
            .map(str::to_owned);
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        match earlier {
            Some(e) if !e.trim().is_empty() => format!("{e}, {peer}"),
            _ => peer,
        }
    };
    for h in IDENTITY_HEADERS.iter().chain(
        [
            "authorization",
            "cookie",
            "set-cookie",
            "host",
            "x-forwarded-for",
        ]
        .iter(),
    ) {
        headers.remove(*h);
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
    let record = &who.web.record;
    let privileges = record.get_privileges().join(",");
    let user_info = serde_json::to_string(&who.user_info).unwrap_or_default();
    for (name, value) in [
        ("x-session-id", record.id().to_string()),
        ("x-session-mobile-id", who.id.clone()),
        ("x-session-app", who.app_id.clone()),
        ("x-session-email", who.email.clone()),
        ("x-session-userinfo", user_info),
        ("x-session-privileges", privileges),
        ("x-forwarded-for", forwarded_for),
    ] {
        // UTF-8 bytes are kept as they are (e-mails and user info may be non-ASCII).
        let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) else {
            return Err(name);
        };
        headers.insert(HeaderName::from_static(name), v);
    }
    Ok(())
}

async fn forward(
    mobile: &MobileState,
    who: &Authorized,
    peer: Option<std::net::IpAddr>,
    trust_proxy_headers: bool,
    mut req: Request,
) -> Response {
    let Some(upstream) = &mobile.upstream else {
        return mobile_error(
            ErrorCode::NotFound,
            BAD_REQUEST,
            "No data service is configured for mobile apps",
        );
    };
    let malformed = || mobile_error(ErrorCode::BadRequest, 1909, "The request URL is malformed");
    if has_dot_segments(req.uri().path()) {
        return malformed();
    }
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = mobile.forward.max_body_bytes;
    if announced.is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX)) {
        return mobile_error(
            ErrorCode::BodyTooLarge,
            BAD_REQUEST,
            "The request body is too large",
        );
    }
    let Some(uri) = upstream_uri(upstream, req.uri()) else {
        return malformed();
    };
    *req.uri_mut() = uri;
    if let Err(header) = set_identity(req.headers_mut(), who, peer, trust_proxy_headers) {
        tracing::warn!(session = %who.id, header, "not forwarded: the session's identity cannot be sent as a header");
        return mobile_error(
            ErrorCode::IdentityUnsendable,
            SUCCESS_FALSE,
            "The session's identity cannot be passed to the data service",
        );
    }
    let req = req.map(|b| Body::new(http_body_util::Limited::new(b, limit)));
    match tokio::time::timeout(mobile.forward.timeout, mobile.client.request(req)).await {
        Ok(Ok(resp)) => resp.map(Body::new).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "mobile upstream unreachable");
            mobile_error(
                ErrorCode::UpstreamUnavailable,
                SUCCESS_FALSE,
                "The data service is unavailable",
            )
        }
        Err(_) => mobile_error(
            ErrorCode::UpstreamTimeout,
            SUCCESS_FALSE,
            "The data service did not answer in time",
        ),
    }
}
