//! The service API under `/service/v1`, for application backends in any language.
//! Every route requires `Authorization: Bearer <api key>`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};
use sessiond_core::storage;
use sessiond_store::{ActivityFilter, PrivilegeChange, Requester, Resolved, Snapshot};

use super::{ApiJson, ApiPath, bearer, parse_id, session_json};
use crate::app::AppState;
use crate::desktop::ActivityMode;
use crate::error::ApiError;

/// The service routes (authentication is applied by [`require_api_key`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sessions/resolve", post(resolve))
        .route("/sessions/{id}", get(get_session).delete(delete_session))
        .route(
            "/sessions/{id}/privileges",
            get(get_privileges)
                .put(set_privileges)
                .delete(clear_privileges),
        )
        .route("/sessions/{id}/privileges/{name}", get(has_privilege))
        .route(
            "/sessions/{id}/storage",
            get(get_storage).patch(patch_storage),
        )
        .route("/sessions/{id}/storage/increment", post(increment))
        .route("/sessions/{id}/idle-timeout", put(set_idle_timeout))
        .route("/sessions/{id}/otp", post(create_otp))
        .route("/otp/restore", post(restore_otp))
        .route("/activity", get(activity))
        .route("/stored-procedures/{name}", post(stored_procedure))
}

/// Middleware: `Authorization: Bearer <api key>`, compared in constant time.
pub async fn require_api_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match bearer(req.headers()) {
        Some(key) if state.api_key.verify(key) => Ok(next.run(req).await),
        _ => Err(ApiError::unauthorized(
            "a valid API key is required: Authorization: Bearer <key>",
        )),
    }
}

fn force_login(state: &AppState) -> bool {
    state.sessions.roles().force_login()
}

async fn load(state: &AppState, id: &str) -> Result<Snapshot, ApiError> {
    state
        .sessions
        .get(&parse_id(id)?)
        .await?
        .ok_or_else(ApiError::session_not_found)
}

async fn get_session(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(session_json(
        &load(&state, &id).await?,
        force_login(&state),
    )))
}

async fn delete_session(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    if state.desktop.drop_session(&parse_id(&id)?).await? {
        Ok(Json(json!({"deleted": true})))
    } else {
        Err(ApiError::session_not_found())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    cookie: String,
}

async fn resolve(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Value>, ApiError> {
    match state.sessions.resolve_cookie(&body.cookie).await? {
        Resolved::Open(snapshot, _) | Resolved::Unstored { snapshot, .. } => {
            Ok(Json(session_json(&snapshot, force_login(&state))))
        }
        Resolved::Ended | Resolved::Unknown => Err(ApiError::session_not_found()),
    }
}

async fn get_privileges(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let s = load(&state, &id).await?;
    Ok(Json(json!({"privileges": s.record.get_privileges()})))
}

async fn has_privilege(
    State(state): State<AppState>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let s = load(&state, &id).await?;
    Ok(Json(
        json!({"privilege": name, "granted": s.record.has_privilege(&name, &[])}),
    ))
}

fn privilege_change_json(state: &AppState, change: &PrivilegeChange) -> Value {
    let cookie = change
        .cookie
        .as_ref()
        .map(|c| json!({"name": state.config.cookie.name, "value": c.encode()}));
    json!({
        "applied": change.outcome.applied,
        "unknown": change.outcome.unknown,
        "privileges": change.snapshot.record.get_privileges(),
        "userName": &*change.snapshot.record.user_name,
        "isGuest": change.snapshot.record.is_guest(force_login(state)),
        "cookie": cookie,
    })
}

async fn set_privileges(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let input = state.sessions.privilege_input(&body)?;
    let change = state
        .sessions
        .set_privileges(&parse_id(&id)?, &input, Requester::Backend)
        .await?;
    Ok(Json(privilege_change_json(&state, &change)))
}

async fn clear_privileges(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let change = state
        .sessions
        .clear_privileges(&parse_id(&id)?, Requester::Backend)
        .await?;
    Ok(Json(privilege_change_json(&state, &change)))
}

fn storage_json(s: &Snapshot) -> Value {
    json!({"version": s.record.storage_version, "storage": &*s.record.storage})
}

async fn get_storage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(storage_json(&load(&state, &id).await?)))
}

/// Parses `If-Match: <version>` (also `"<version>"` and `W/"<version>"`).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let text = text.strip_prefix("W/").unwrap_or(text).trim_matches('"');
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request("If-Match must be a storage version number"))
}

async fn patch_storage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let expected = if_match(&headers)?;
    let id = parse_id(&id)?;
    let (snapshot, ()) = state
        .sessions
        .update_storage(&id, expected, |s| storage::merge_patch(s, &patch))
        .await?;
    Ok(Json(storage_json(&snapshot)))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementBody {
    path: String,
    by: Value,
}

async fn increment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<IncrementBody>,
) -> Result<Json<Value>, ApiError> {
    let expected = if_match(&headers)?;
    let id = parse_id(&id)?;
    let (snapshot, value) = state
        .sessions
        .update_storage(&id, expected, |s: &mut Map<String, Value>| {
            storage::increment(s, &body.path, &body.by)
        })
        .await?;
    Ok(Json(
        json!({"value": value, "version": snapshot.record.storage_version}),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IdleTimeoutBody {
    idle_timeout: u32,
}

async fn set_idle_timeout(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<IdleTimeoutBody>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = state
        .sessions
        .set_idle_timeout(&parse_id(&id)?, body.idle_timeout)
        .await?;
    Ok(Json(session_json(&snapshot, force_login(&state))))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OtpBody {
    /// Seconds.
    lifespan: Option<u64>,
}

async fn create_otp(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: OtpBody = if body.iter().all(u8::is_ascii_whitespace) {
        OtpBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))?
    };
    let token = state
        .sessions
        .create_otp(&parse_id(&id)?, body.lifespan.map(Duration::from_secs))
        .await?;
    Ok(Json(
        json!({"token": token.map(|t| t.to_string()).unwrap_or_default()}),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    token: String,
}

async fn restore_otp(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> Result<Json<Value>, ApiError> {
    let (snapshot, cookie) = state
        .sessions
        .restore_otp(&body.token)
        .await?
        .map_err(|why| ApiError::new(StatusCode::NOT_FOUND, why.code(), why.message()))?;
    Ok(Json(json!({
        "id": snapshot.record.id.to_string(),
        "cookie": {"name": state.config.cookie.name, "value": cookie.encode()},
    })))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ActivityQuery {
    kind: Option<String>,
    user_name: Option<String>,
    session: Option<String>,
    /// `all` (default), `sessions` (4D: Sessions only) or `processes` (Processes only).
    mode: Option<String>,
}

async fn activity(
    State(state): State<AppState>,
    query: Result<Query<ActivityQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let kind = super::parse_kind(q.kind.as_deref())?;
    let session = q.session.as_deref().map(parse_id).transpose()?;
    let mode = match q.mode.as_deref().unwrap_or("all") {
        "all" => ActivityMode::All,
        "sessions" => ActivityMode::SessionsOnly,
        "processes" => ActivityMode::ProcessesOnly,
        _ => {
            return Err(ApiError::bad_request(
                "mode must be all, sessions or processes",
            ));
        }
    };
    let filter = ActivityFilter {
        session,
        kind,
        user_name: q.user_name,
    };
    state
        .desktop
        .activity(&filter, mode)
        .await?
        .map(Json)
        .ok_or_else(ApiError::session_not_found)
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProcedureQuery {
    /// Wait for the result (default) or answer 202 at once.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

/// `POST /stored-procedures/{name}`: starts a stored procedure (4D's `Execute on
/// server`) with the JSON body (optional) as its parameters.
async fn stored_procedure(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    query: Result<Query<ProcedureQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse as _;
    let Query(q) = query?;
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
    };
    let run = state.desktop.execute_on_server(&name, params).await?;
    let number = run.number;
    if !q.wait {
        return Ok((StatusCode::ACCEPTED, Json(json!({"process": number}))).into_response());
    }
    let result = run.result.await?;
    Ok(Json(json!({"process": number, "result": result})).into_response())
}
