//! The service API under `/service/v1`, for application backends in any language.
//! Every route requires `Authorization: Bearer <api key>`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};
use sessiond::ApiError;
use sessiond::error::ErrorBody;
use sessiond::error::ErrorCode;
use sessiond_core::storage;
use sessiond_store::{ActivityFilter, Requester, Resolved, Snapshot};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiPath, ApiQuery, bearer, parse_id};
use crate::app::AppState;
use crate::contract::{
    Activity, CookieView, Deleted, Incremented, OtpView, PrivilegeChangeView, PrivilegeCheck,
    PrivilegeList, ProcedureRun, Restored, SessionView, StorageView,
};
use crate::desktop::ActivityMode;

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

/// A privilege change as answered: the session cookie's name for a new cookie.
fn change_view(state: &AppState, change: &sessiond_store::PrivilegeChange) -> PrivilegeChangeView {
    PrivilegeChangeView::of(change, &state.config.cookie.name, force_login(state))
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

/// A session by id.
#[utoipa::path(get, path = "/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = SessionView), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionView>, ApiError> {
    Ok(Json(SessionView::of(
        &load(&state, &id).await?,
        force_login(&state),
    )))
}

/// Ends a session (4D: dropping it); a connected remote client is told.
#[utoipa::path(delete, path = "/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = Deleted), (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`cannot_drop`: the stored-procedures session", body = ErrorBody)))]
pub(crate) async fn delete_session(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    if state.desktop.drop_session(&parse_id(&id)?).await? {
        Ok(Json(Deleted { deleted: true }))
    } else {
        Err(ApiError::session_not_found())
    }
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveBody {
    cookie: String,
}

/// The session a browser's cookie value opens (what the browser API would serve).
#[utoipa::path(post, path = "/sessions/resolve", tag = "sessions", request_body = ResolveBody,
    responses((status = 200, description = "OK", body = SessionView), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn resolve(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<SessionView>, ApiError> {
    match state.sessions.resolve_cookie(&body.cookie).await? {
        Resolved::Open(snapshot, _) | Resolved::Unstored { snapshot, .. } => {
            Ok(Json(SessionView::of(&snapshot, force_login(&state))))
        }
        Resolved::Ended | Resolved::Unknown => Err(ApiError::session_not_found()),
    }
}

/// `Session.getPrivileges()`.
#[utoipa::path(get, path = "/sessions/{id}/privileges", tag = "privileges", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = PrivilegeList), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn get_privileges(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PrivilegeList>, ApiError> {
    let s = load(&state, &id).await?;
    Ok(Json(PrivilegeList {
        privileges: s.record.get_privileges(),
    }))
}

/// `Session.hasPrivilege(name)`.
#[utoipa::path(get, path = "/sessions/{id}/privileges/{name}", tag = "privileges",
    params(("id" = String, Path, description = "The session id"), ("name" = String, Path, description = "A privilege")),
    responses((status = 200, description = "OK", body = PrivilegeCheck), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn has_privilege(
    State(state): State<AppState>,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<Json<PrivilegeCheck>, ApiError> {
    let s = load(&state, &id).await?;
    let granted = s.record.has_privilege(&name, &[]);
    Ok(Json(PrivilegeCheck {
        privilege: name,
        granted,
    }))
}

/// `Session.setPrivileges()`: a privilege name, a list of names, or
/// `{"privileges", "roles", "userName"}`. A raise ends every other cookie of the session.
#[utoipa::path(put, path = "/sessions/{id}/privileges", tag = "privileges", params(("id" = String, Path, description = "The session id")),
    request_body(content = Object, description = "A name, an array of names, or {privileges, roles, userName}"),
    responses((status = 200, description = "OK", body = PrivilegeChangeView), (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 400, description = "`invalid_privileges`", body = ErrorBody)))]
pub(crate) async fn set_privileges(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<PrivilegeChangeView>, ApiError> {
    let input = state.sessions.privilege_input(&body)?;
    let change = state
        .sessions
        .set_privileges(&parse_id(&id)?, &input, Requester::Backend)
        .await?;
    Ok(Json(change_view(&state, &change)))
}

/// `Session.clearPrivileges()`: the session becomes a guest.
#[utoipa::path(delete, path = "/sessions/{id}/privileges", tag = "privileges", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = PrivilegeChangeView), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn clear_privileges(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PrivilegeChangeView>, ApiError> {
    let change = state
        .sessions
        .clear_privileges(&parse_id(&id)?, Requester::Backend)
        .await?;
    Ok(Json(change_view(&state, &change)))
}

/// `Session.storage` with its version.
#[utoipa::path(get, path = "/sessions/{id}/storage", tag = "storage", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = StorageView), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn get_storage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<StorageView>, ApiError> {
    Ok(Json(StorageView::of(&load(&state, &id).await?)))
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

/// Applies a JSON merge patch (RFC 7396) to `Session.storage`, atomically;
/// `If-Match: <version>` makes it conditional.
#[utoipa::path(patch, path = "/sessions/{id}/storage", tag = "storage",
    params(("id" = String, Path, description = "The session id"), ("If-Match" = Option<u64>, Header, description = "The storage version the patch applies to")),
    request_body(content = Object, content_type = "application/json", description = "A JSON merge patch"),
    responses((status = 200, description = "OK", body = StorageView), (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`version_mismatch`", body = ErrorBody),
        (status = 413, description = "`storage_too_large`", body = ErrorBody)))]
pub(crate) async fn patch_storage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Json<StorageView>, ApiError> {
    let expected = if_match(&headers)?;
    let id = parse_id(&id)?;
    let (snapshot, ()) = state
        .sessions
        .update_storage(&id, expected, |s| storage::merge_patch(s, &patch))
        .await?;
    Ok(Json(StorageView::of(&snapshot)))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IncrementBody {
    path: String,
    #[schema(value_type = f64)]
    by: Value,
}

/// Adds `by` to the number at `path` (dotted) in `Session.storage`, atomically.
#[utoipa::path(post, path = "/sessions/{id}/storage/increment", tag = "storage",
    params(("id" = String, Path, description = "The session id"), ("If-Match" = Option<u64>, Header, description = "The storage version the increment applies to")),
    request_body = IncrementBody,
    responses((status = 200, description = "OK", body = Incremented), (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 400, description = "`invalid_storage_update`", body = ErrorBody),
        (status = 409, description = "`version_mismatch`", body = ErrorBody)))]
pub(crate) async fn increment(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<IncrementBody>,
) -> Result<Json<Incremented>, ApiError> {
    let expected = if_match(&headers)?;
    let id = parse_id(&id)?;
    let (snapshot, value) = state
        .sessions
        .update_storage(&id, expected, |s: &mut Map<String, Value>| {
            storage::increment(s, &body.path, &body.by)
        })
        .await?;
    Ok(Json(Incremented {
        value,
        version: snapshot.record.storage_version(),
    }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct IdleTimeoutBody {
    idle_timeout: u32,
}

/// `Session.idleTimeout := minutes` (web sessions).
#[utoipa::path(put, path = "/sessions/{id}/idle-timeout", tag = "sessions", params(("id" = String, Path, description = "The session id")),
    request_body = IdleTimeoutBody,
    responses((status = 200, description = "OK", body = SessionView), (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`not_supported`: not a web session", body = ErrorBody)))]
pub(crate) async fn set_idle_timeout(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<IdleTimeoutBody>,
) -> Result<Json<SessionView>, ApiError> {
    let snapshot = state
        .sessions
        .set_idle_timeout(&parse_id(&id)?, body.idle_timeout)
        .await?;
    Ok(Json(SessionView::of(&snapshot, force_login(&state))))
}

#[derive(serde::Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OtpBody {
    /// Seconds.
    lifespan: Option<u64>,
}

/// `Session.createOTP(lifespan)`: a one-time token that opens this session once.
#[utoipa::path(post, path = "/sessions/{id}/otp", tag = "otp", params(("id" = String, Path, description = "The session id")),
    request_body(content = Option<OtpBody>),
    responses((status = 200, description = "OK", body = OtpView), (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn create_otp(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    body: Bytes,
) -> Result<Json<OtpView>, ApiError> {
    let body: OtpBody = if body.iter().all(u8::is_ascii_whitespace) {
        OtpBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(ErrorCode::InvalidJson, e.to_string()))?
    };
    let token = state
        .sessions
        .create_otp(&parse_id(&id)?, body.lifespan.map(Duration::from_secs))
        .await?;
    Ok(Json(OtpView {
        token: token.map(|t| t.to_string()).unwrap_or_default(),
    }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestoreBody {
    token: String,
}

/// Spends a one-time token: the session it opens and a cookie for it.
#[utoipa::path(post, path = "/otp/restore", tag = "otp", request_body = RestoreBody,
    responses((status = 200, description = "OK", body = Restored),
        (status = 404, description = "`otp_invalid` or `otp_session_ended`", body = ErrorBody)))]
pub(crate) async fn restore_otp(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RestoreBody>,
) -> Result<Json<Restored>, ApiError> {
    let (snapshot, cookie) = state
        .sessions
        .restore_otp(&body.token)
        .await?
        .map_err(ApiError::from)?;
    Ok(Json(Restored {
        id: snapshot.record.id().to_string(),
        cookie: CookieView {
            name: state.config.cookie.name.clone(),
            value: cookie.encode(),
        },
    }))
}

#[derive(serde::Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(crate) struct ActivityQuery {
    kind: Option<String>,
    user_name: Option<String>,
    session: Option<String>,
    /// `all` (default), `sessions` (4D: Sessions only) or `processes` (Processes only).
    mode: Option<String>,
}

/// 4D's `Process activity`: sessions and processes, filtered.
#[utoipa::path(get, path = "/activity", tag = "sessions", params(ActivityQuery),
    responses((status = 200, description = "OK", body = Activity),
        (status = 400, description = "`bad_request`: an unknown kind or mode", body = ErrorBody),
        (status = 404, description = "`session_not_found`: the session asked for", body = ErrorBody)))]
pub(crate) async fn activity(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ActivityQuery>,
) -> Result<Json<Activity>, ApiError> {
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
        .map(|v| Json(serde_json::from_value(v).expect("the activity has this shape")))
        .ok_or_else(ApiError::session_not_found)
}

#[derive(serde::Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProcedureQuery {
    /// Wait for the result (default) or answer 202 at once.
    #[serde(default = "yes")]
    wait: bool,
}

fn yes() -> bool {
    true
}

/// `POST /stored-procedures/{name}`: starts a stored procedure (4D's `Execute on
/// server`) with the JSON body (optional) as its parameters.
/// Starts a stored procedure (4D's `Execute on server`) with the JSON body as its
/// parameters, in the stored-procedures session.
#[utoipa::path(post, path = "/stored-procedures/{name}", tag = "stored procedures",
    params(("name" = String, Path, description = "The procedure"), ProcedureQuery),
    request_body(content = Option<Object>, description = "The parameters"),
    responses((status = 200, description = "Finished", body = ProcedureRun),
        (status = 202, description = "Started (`wait=false`)", body = ProcedureRun),
        (status = 404, description = "`unknown_procedure`", body = ErrorBody),
        (status = 422, description = "`procedure_failed`", body = ErrorBody)))]
pub(crate) async fn stored_procedure(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProcedureQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse as _;
    let params: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?
    };
    let run = state.desktop.execute_on_server(&name, params).await?;
    let number = run.number;
    if !q.wait {
        let started = ProcedureRun {
            process: number,
            result: None,
        };
        return Ok((StatusCode::ACCEPTED, Json(started)).into_response());
    }
    let result = run.result.await?;
    Ok(Json(ProcedureRun {
        process: number,
        result: Some(result),
    })
    .into_response())
}
