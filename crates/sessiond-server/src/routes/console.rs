//! The admin web console: its page and assets under `/admin` (embedded in the binary,
//! strict Content-Security-Policy), sign-in and sign-out (`/admin/login`,
//! `/admin/logout`, cookie [`COOKIE`]), and the parts of the admin API that only the
//! console needed so far: live sessions, the audit log, the live event stream.
//!
//! | route | what |
//! |---|---|
//! | `GET /admin` | the console page |
//! | `GET /admin/assets/{file}` | its scripts, styles and icon |
//! | `POST /admin/login` `{password}` | checks the admin credential, sets the cookie, returns `{csrf}` |
//! | `POST /admin/logout` | ends the console session (CSRF token required) |
//! | `GET /admin/api/me` | who is signed in, and the CSRF token of the console session |
//! | `GET /admin/api/sessions?kind=&user=` | live sessions (4D's Process activity) |
//! | `DELETE /admin/api/sessions/{id}` | drop one session |
//! | `GET /admin/api/sessions/{id}/storage` | its storage, read-only |
//! | `DELETE /admin/api/users/{name}/sessions` | drop every session of one user |
//! | `GET /admin/api/mobile/apps/{folder}/sessions/{id}/file` | the session file, pretty-printed, as a download |
//! | `GET /admin/api/audit?limit=` | the latest audit entries, newest first |
//! | `GET /admin/api/events` | Server-Sent Events: `ready`, `mobile`, `audit`, `tick` (every 5 s) |

use std::convert::Infallible;
use std::sync::LazyLock;
use std::time::Duration;

use axum::extract::{FromRequest, Query, Request, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use futures::Stream;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use sessiond_mobile::MobileChange;
use sessiond_store::ActivityFilter;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiJson, ApiPath, parse_id, session_json};
use crate::app::AppState;
use crate::console::{Actor, AuditEntry, COOKIE, CSRF_HEADER, Console, SignedIn, Via};
use crate::error::ApiError;
use crate::layer::cookie_value;

/// How often the event stream sends a `tick` (the page then re-reads the live
/// sessions: expiries and new web sessions have no event of their own).
pub const TICK: Duration = Duration::from_secs(5);

/// The console's Content-Security-Policy: nothing but its own files.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/console/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/console/console.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/console/favicon.svg"),
    },
];

/// `"<sha-256 prefix>"` of each asset, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let d = Sha256::digest(a.body);
            format!("\"{}\"", sessiond_core::id::to_hex(&d[..12]))
        })
        .collect()
});

/// The console page, its assets, sign-in and sign-out (no admin credential needed).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/assets/{file}", get(asset))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .layer(axum::middleware::map_response(security_headers))
}

/// The console's part of the admin API (mounted under `/admin/api`, behind
/// [`super::admin::require_admin`]).
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me))
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", delete(drop_session))
        .route("/sessions/{id}/storage", get(storage))
        .route("/users/{name}/sessions", delete(drop_user))
        .route("/mobile/apps/{folder}/sessions/{id}/file", get(download))
        .route("/audit", get(audit_log))
        .route("/events", get(events))
}

async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

fn serve_asset(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::no_route().into_response();
    };
    let (asset, etag) = (&ASSETS[i], &ETAGS[i]);
    // Revalidated on every load (cheap: 304), so a new binary never runs old scripts.
    let cache = HeaderValue::from_static("no-cache");
    let etag_value = HeaderValue::from_str(etag).expect("hex");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag))
    {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value), (header::CACHE_CONTROL, cache)],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::ETAG, etag_value),
            (header::CACHE_CONTROL, cache),
        ],
        asset.body,
    )
        .into_response()
}

async fn index(headers: HeaderMap) -> Response {
    serve_asset("index.html", &headers)
}

async fn asset(ApiPath(file): ApiPath<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return ApiError::no_route().into_response();
    }
    serve_asset(&file, &headers)
}

/// The console session named by the request's cookie, if live and opened with the
/// current admin credential (its idle time starts over), with the cookie's token.
pub(crate) async fn console_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<(String, SignedIn)> {
    let token = cookie_value(headers, COOKIE)?.to_string();
    let credential = state.admin.fingerprint().await?;
    let signed = state
        .console
        .check(&token, state.sessions.now(), true, &credential)?;
    Some((token, signed))
}

/// Whether the request carries the console cookie at all.
pub(crate) fn has_console_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers, COOKIE).is_some()
}

/// Every method but GET and HEAD must send the console session's CSRF token.
pub(crate) fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    signed: &SignedIn,
) -> Result<(), ApiError> {
    if *method == Method::GET || *method == Method::HEAD {
        return Ok(());
    }
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(t) if Console::csrf_matches(&signed.csrf, t) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "this change needs the console's X-CSRF-Token header; reload the console",
        )),
    }
}

/// Writes one audit entry for an admin change that ended with `result`.
pub(crate) async fn audit<T>(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: String,
    detail: Value,
    result: &Result<T, ApiError>,
) {
    state
        .console
        .record(AuditEntry {
            time: state.sessions.now().to_iso8601(),
            who: "admin".into(),
            ip: actor.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            via: Some(actor.via),
            action: action.into(),
            target,
            detail,
            outcome: match result {
                Ok(_) => "ok".into(),
                Err(e) => e.code.into(),
            },
        })
        .await;
}

/// Whether the console cookie gets `Secure` (the session cookie's [`crate::SecureMode`]).
fn secure(state: &AppState, req: &Request) -> bool {
    crate::layer::cookie_is_secure(
        state.config.cookie.secure,
        req,
        state.config.trust_proxy_headers,
    )
}

fn cookie_header(value: &str, secure: bool) -> HeaderValue {
    let mut text = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/admin");
    if value.is_empty() {
        text.push_str("; Max-Age=0");
    }
    if secure {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).expect("token is base64url")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    password: String,
}

async fn login(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let client = crate::layer::client_ip(&req, state.config.trust_proxy_headers);
    let now = state.sessions.now();
    let secure = secure(&state, &req);
    // Only a well-formed JSON sign-in counts as an attempt: a cross-site form post
    // (which cannot send JSON without CORS) cannot lock the admin out.
    let ApiJson(body) = ApiJson::<LoginBody>::from_request(req, &state).await?;
    let ok = state
        .admin
        .verify(&body.password, &state.passwords, client, now)
        .await
        .map_err(ApiError::refused)?;
    let entry = |outcome: &str, via| AuditEntry {
        time: now.to_iso8601(),
        who: "admin".into(),
        ip: client.map(|ip| ip.to_string()).unwrap_or_default(),
        via,
        action: "sign-in".into(),
        target: String::new(),
        detail: Value::Null,
        outcome: outcome.into(),
    };
    if !ok {
        state.console.record(entry("unauthorized", None)).await;
        return Err(ApiError::unauthorized("wrong admin password"));
    }
    let credential = state.admin.fingerprint().await.unwrap_or_default();
    let signed_in = state.console.sign_in(now, &credential).await;
    state.console.record(entry("ok", Some(Via::Console))).await;
    Ok((
        [(header::SET_COOKIE, cookie_header(&signed_in.token, secure))],
        Json(json!({"csrf": signed_in.csrf})),
    )
        .into_response())
}

async fn logout(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let clear = cookie_header("", secure(&state, &req));
    if let Some((token, signed)) = console_session(&state, req.headers()).await {
        check_csrf(req.method(), req.headers(), &signed)?;
        state.console.sign_out(&token).await;
        let actor = Actor {
            ip: crate::layer::client_ip(&req, state.config.trust_proxy_headers),
            via: Via::Console,
        };
        audit(
            &state,
            &actor,
            "sign-out",
            String::new(),
            Value::Null,
            &Ok::<(), ApiError>(()),
        )
        .await;
    }
    Ok((
        [(header::SET_COOKIE, clear)],
        Json(json!({"signedOut": true})),
    )
        .into_response())
}

async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(actor): Extension<Actor>,
) -> Json<Value> {
    let csrf = match actor.via {
        Via::Console => console_session(&state, &headers).await.map(|(_, s)| s.csrf),
        Via::Bearer => None,
    };
    Json(json!({
        "who": "admin",
        "via": actor.via,
        "csrf": csrf,
        "app": state.config.app_name,
        "mobile": state.mobile.is_some(),
        "tickSeconds": TICK.as_secs(),
    }))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionsQuery {
    kind: Option<String>,
    /// Part of the user name, any case.
    user: Option<String>,
    /// How many (newest first); default [`LIVE_LIMIT`], at most [`LIVE_MAX`].
    limit: Option<usize>,
}

/// Sessions a live listing returns by default, and at most: the page stays light with
/// 100,000 sessions (`total` says how many match).
const LIVE_LIMIT: usize = 500;
const LIVE_MAX: usize = 5000;

async fn list_sessions(
    State(state): State<AppState>,
    query: Result<Query<SessionsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let kind = super::parse_kind(q.kind.as_deref())?;
    let limit = q.limit.unwrap_or(LIVE_LIMIT);
    if limit == 0 || limit > LIVE_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {LIVE_MAX}"
        )));
    }
    let filter = ActivityFilter {
        kind,
        ..ActivityFilter::default()
    };
    let user = q.user.unwrap_or_default().to_lowercase();
    let force_login = state.sessions.roles().force_login();
    // This node's running server-side calls, under the session they run in.
    let mut running: std::collections::HashMap<_, Vec<Value>> = std::collections::HashMap::new();
    for p in state.desktop.processes(None) {
        running.entry(p.session).or_default().push(p.json());
    }
    let mut found = state.sessions.activity(&filter).await?;
    found.retain(|s| user.is_empty() || s.record.user_name.to_lowercase().contains(&user));
    let total = found.len();
    // Newest first.
    found.reverse();
    found.truncate(limit);
    let list: Vec<Value> = found
        .iter()
        .map(|s| {
            let mut v = session_json(s, force_login);
            v["processes"] = running.remove(&s.record.id).unwrap_or_default().into();
            v
        })
        .collect();
    Ok(Json(
        json!({"sessions": list, "total": total, "now": state.sessions.now().to_iso8601()}),
    ))
}

async fn drop_session(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        if state.desktop.drop_session(&parse_id(&id)?).await? {
            Ok(Json(json!({"deleted": true})))
        } else {
            Err(ApiError::session_not_found())
        }
    }
    .await;
    audit(&state, &actor, "session.drop", id, Value::Null, &result).await;
    result
}

async fn drop_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let result = state
        .desktop
        .drop_user(&name)
        .await
        .map(|n| Json(json!({"deleted": n})))
        .map_err(ApiError::from);
    let detail = match &result {
        Ok(Json(v)) => v.clone(),
        Err(_) => Value::Null,
    };
    audit(&state, &actor, "user.drop", name, detail, &result).await;
    result
}

async fn storage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let s = state
        .sessions
        .get(&parse_id(&id)?)
        .await?
        .ok_or_else(ApiError::session_not_found)?;
    Ok(Json(
        json!({"id": id, "version": s.record.storage_version, "storage": &*s.record.storage}),
    ))
}

async fn download(
    State(state): State<AppState>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let m = super::admin::mobile(&state)?;
    let (_, file) = m.read_file(&folder, &id).await?;
    let mut body = serde_json::to_vec_pretty(&file.json).expect("serializable");
    body.push(b'\n');
    // `id` is hexadecimal (read_file checked it).
    let disposition = format!("attachment; filename=\"{id}.json\"");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition).expect("hex"),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    let entries = state.console.recent(limit).await.map_err(|e| {
        tracing::error!(error = %e, "the audit log cannot be read");
        ApiError::internal("the audit log cannot be read")
    })?;
    Ok(Json(json!({"entries": entries})))
}

struct Feed {
    mobile: Option<tokio::sync::broadcast::Receiver<MobileChange>>,
    audit: tokio::sync::broadcast::Receiver<AuditEntry>,
    tick: tokio::time::Interval,
    state: AppState,
    /// The console session's token (`None`: bearer); the stream ends with it.
    token: Option<String>,
    ready: bool,
    closed: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

async fn next_event(feed: &mut Feed) -> Option<Event> {
    if !feed.ready {
        feed.ready = true;
        return Some(
            Event::default()
                .event("ready")
                .retry(Duration::from_secs(2))
                .data("{}"),
        );
    }
    let Feed {
        mobile,
        audit,
        tick,
        state,
        token,
        closed,
        ..
    } = feed;
    tokio::select! {
        () = closed.as_mut() => None,
        r = async {
            match mobile.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        } => match r {
            Ok(change) => Event::default().event("mobile").json_data(change).ok(),
            Err(RecvError::Lagged(_)) => Some(Event::default().event("mobile").data(r#"{"kind":"refresh"}"#)),
            Err(RecvError::Closed) => None,
        },
        r = audit.recv() => match r {
            Ok(entry) => Event::default().event("audit").json_data(entry).ok(),
            Err(RecvError::Lagged(_)) => Some(Event::default().event("audit").data("{}")),
            Err(RecvError::Closed) => None,
        },
        _ = tick.tick() => {
            let now = state.sessions.now();
            if let Some(t) = token {
                let credential = state.admin.fingerprint().await?;
                state.console.check(t, now, false, &credential)?;
            }
            Some(Event::default().event("tick").data(format!("\"{}\"", now.to_iso8601())))
        }
    }
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(actor): Extension<Actor>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let token = match actor.via {
        Via::Console => cookie_value(&headers, COOKIE).map(str::to_string),
        Via::Bearer => None,
    };
    let state_console_closed = state.console.closed();
    let feed = Feed {
        mobile: state.mobile.as_ref().map(|m| m.sessions.changes()),
        audit: state.console.events(),
        tick: tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK),
        state,
        token,
        ready: false,
        closed: Box::pin(state_console_closed),
    };
    let stream = futures::stream::unfold(feed, |mut feed| async move {
        let event = next_event(&mut feed).await?;
        Some((Ok(event), feed))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
