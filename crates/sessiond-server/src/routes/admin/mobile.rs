//! 4D's Mobile Session Management over HTTP: app and session listings, a file's
//! JSON and download, accept / hold, e-mail, delete, and Push. As in 4D, edits change
//! the files and the sessions in memory follow at the next Push
//! (`POST /admin/api/mobile/push`); `?apply=true` on an edit pushes at once.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderValue, header};
use serde_json::{Value, json};
use sessiond::ApiError;
use sessiond::error::{ErrorBody, ErrorCode};
use sessiond_mobile::{MobileError, MobileSessions, RefreshReport, Status};
use utoipa::ToSchema;

use super::audit::{audit, audited};
use crate::app::AppState;
use crate::console::Actor;
use crate::contract::{MobileAppList, MobileEdit, MobileFile, MobileSessionList};
use crate::routes::{ApiJson, ApiPath, ApiQuery};

/// A mobile-session error as the admin API answers it (causes logged, not sent).
pub(crate) fn from_mobile(e: MobileError) -> ApiError {
    match e {
        MobileError::BadRequest(m) => ApiError::bad_request(m),
        MobileError::NotFound => ApiError::new(
            ErrorCode::MobileSessionNotFound,
            "no such mobile session file",
        ),
        MobileError::Io(e) => {
            tracing::error!(error = %e, "mobile session files");
            ApiError::internal("the mobile session files cannot be read or written")
        }
        MobileError::Sessions(e) => e.into(),
        MobileError::TooLarge(m) => ApiError::new(ErrorCode::TooLarge, m),
        MobileError::TooMany {
            message,
            retry_after,
        } => ApiError::new(ErrorCode::TooMany, message).retry_after(retry_after.as_secs()),
        e => {
            tracing::error!(error = %e, "mobile sessions");
            ApiError::internal("the mobile sessions failed")
        }
    }
}

/// The mobile sessions, or 404 `mobile_disabled`.
pub(crate) fn mobile(state: &AppState) -> Result<&MobileSessions, ApiError> {
    state
        .mobile
        .as_ref()
        .map(|m| &*m.sessions)
        .ok_or_else(|| ApiError::new(ErrorCode::MobileDisabled, "mobile apps are not enabled"))
}

/// The app folders under `MobileApps`.
#[utoipa::path(get, path = "/mobile/apps", tag = "mobile",
    responses((status = 200, description = "OK", body = MobileAppList), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn apps(State(state): State<AppState>) -> Result<Json<MobileAppList>, ApiError> {
    let apps = mobile(&state)?.list_apps().await.map_err(from_mobile)?;
    Ok(Json(MobileAppList { apps }))
}

/// An app's session files.
#[utoipa::path(get, path = "/mobile/apps/{folder}/sessions", tag = "mobile", params(("folder" = String, Path, description = "The app folder (`TEAM.bundle`)")),
    responses((status = 200, description = "OK", body = MobileSessionList),
        (status = 400, description = "`bad_request`: not an app folder", body = ErrorBody), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn sessions(
    State(state): State<AppState>,
    ApiPath(folder): ApiPath<String>,
) -> Result<Json<MobileSessionList>, ApiError> {
    let m = mobile(&state)?;
    let sessions = m.list_sessions(&folder).await.map_err(from_mobile)?;
    Ok(Json(MobileSessionList { sessions }))
}

/// One session file.
#[utoipa::path(get, path = "/mobile/apps/{folder}/sessions/{id}", tag = "mobile", params(("folder" = String, Path, description = "The app folder (`TEAM.bundle`)"), ("id" = String, Path, description = "The mobile session id")),
    responses((status = 200, description = "OK", body = MobileFile), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
) -> Result<Json<MobileFile>, ApiError> {
    let (path, file) = mobile(&state)?
        .read_file(&folder, &id)
        .await
        .map_err(from_mobile)?;
    Ok(Json(MobileFile {
        path: path.display().to_string(),
        json: file.json,
    }))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct Apply {
    #[serde(default)]
    apply: bool,
}

/// After an edit: push at once when asked, else say that a Push is needed.
pub(super) async fn finish(
    m: &MobileSessions,
    apply: bool,
    json: Option<serde_json::Map<String, Value>>,
) -> Result<Json<MobileEdit>, ApiError> {
    let push = if apply {
        Some(m.refresh().await.map_err(from_mobile)?)
    } else {
        None
    };
    Ok(Json(MobileEdit {
        deleted: json.is_none().then_some(true),
        json,
        push_needed: push.is_none(),
        push,
    }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusBody {
    status: Status,
}

/// Accepts or holds a device (its file's `status`).
#[utoipa::path(put, path = "/mobile/apps/{folder}/sessions/{id}/status", tag = "mobile",
    params(("folder" = String, Path, description = "The app folder (`TEAM.bundle`)"), ("id" = String, Path, description = "The mobile session id"), ("apply" = Option<bool>, Query, description = "Push at once (default: leave it to `POST /mobile/push`)")), request_body = StatusBody,
    responses((status = 200, description = "OK", body = MobileEdit), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn set_status(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<Apply>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<MobileEdit>, ApiError> {
    let detail = json!({"status": body.status.as_str(), "apply": q.apply});
    let target = format!("{folder}/{id}");
    audited(&state, &actor, "mobile.status", target, detail, async {
        let m = mobile(&state)?;
        let file = m
            .edit_file(&folder, &id, |f| f.set_status(body.status))
            .await
            .map_err(from_mobile)?;
        finish(m, q.apply, Some(file.json)).await
    })
    .await
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmailBody {
    email: String,
}

/// Changes the e-mail address of a session file.
#[utoipa::path(put, path = "/mobile/apps/{folder}/sessions/{id}/email", tag = "mobile",
    params(("folder" = String, Path, description = "The app folder (`TEAM.bundle`)"), ("id" = String, Path, description = "The mobile session id"), ("apply" = Option<bool>, Query, description = "Push at once (default: leave it to `POST /mobile/push`)")), request_body = EmailBody,
    responses((status = 200, description = "OK", body = MobileEdit), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn set_email(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<Apply>,
    ApiJson(body): ApiJson<EmailBody>,
) -> Result<Json<MobileEdit>, ApiError> {
    if body.email.len() > 320 || body.email.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "email must be at most 320 printable characters",
        ));
    }
    let detail = json!({"email": body.email, "apply": q.apply});
    let target = format!("{folder}/{id}");
    audited(&state, &actor, "mobile.email", target, detail, async {
        let m = mobile(&state)?;
        let file = m
            .edit_file(&folder, &id, |f| f.set_email(&body.email))
            .await
            .map_err(from_mobile)?;
        finish(m, q.apply, Some(file.json)).await
    })
    .await
}

/// Deletes a session file (the device logs in again).
#[utoipa::path(delete, path = "/mobile/apps/{folder}/sessions/{id}", tag = "mobile",
    params(("folder" = String, Path, description = "The app folder (`TEAM.bundle`)"), ("id" = String, Path, description = "The mobile session id"), ("apply" = Option<bool>, Query, description = "Push at once (default: leave it to `POST /mobile/push`)")),
    responses((status = 200, description = "OK", body = MobileEdit), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<Apply>,
) -> Result<Json<MobileEdit>, ApiError> {
    let detail = json!({"apply": q.apply});
    let target = format!("{folder}/{id}");
    audited(&state, &actor, "mobile.delete", target, detail, async {
        let m = mobile(&state)?;
        m.delete_file(&folder, &id).await.map_err(from_mobile)?;
        finish(m, q.apply, None).await
    })
    .await
}

/// Push: reloads every session file into the running server (and the other nodes).
#[utoipa::path(post, path = "/mobile/push", tag = "mobile",
    responses((status = 200, description = "What the reload did", body = RefreshReport), (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn push(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<RefreshReport>, ApiError> {
    let result = async { mobile(&state)?.refresh().await.map_err(from_mobile) }.await;
    let detail = result.as_ref().map_or(Value::Null, |r| {
        json!({"loaded": r.loaded, "updated": r.updated, "evicted": r.evicted, "errors": r.errors.len()})
    });
    audit(
        &state,
        &actor,
        "mobile.push",
        String::new(),
        detail,
        &result,
    )
    .await;
    result.map(Json)
}

/// A session file as a download (`Content-Disposition: attachment`).
#[utoipa::path(get, path = "/mobile/apps/{folder}/sessions/{id}/file", tag = "mobile",
    params(("folder" = String, Path, description = "The app folder"),
        ("id" = String, Path, description = "The mobile session id")),
    responses((status = 200, description = "The file", content_type = "application/json", body = Object),
        (status = 404, description = "`mobile_disabled` or `mobile_session_not_found`", body = ErrorBody)))]
pub(crate) async fn download(
    State(state): State<AppState>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let m = super::mobile::mobile(&state)?;
    let (_, file) = m
        .read_file(&folder, &id)
        .await
        .map_err(super::mobile::from_mobile)?;
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
