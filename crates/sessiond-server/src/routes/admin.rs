//! The admin API under `/admin/api` (what the console and `sessiond mobile …` use):
//! the Mobile Session Management component's operations. Every route requires the
//! admin credential (`Authorization: Bearer <admin password>`) or the console's
//! cookie session (plus its `X-CSRF-Token` on every change); every change is written
//! to the audit log.
//!
//! As in 4D, edits change the files and the sessions in memory follow at the next
//! Push (`POST /admin/api/mobile/push`); add `?apply=true` to an edit to push at once.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use sessiond_mobile::{MobileError, MobileSessions, Status};

use super::console::{audit, check_csrf, console_session, has_console_cookie};
use super::{ApiJson, ApiPath, ApiQuery, bearer};
use crate::app::AppState;
use crate::console::{Actor, Via};
use crate::error::ApiError;

/// The admin routes (authentication is applied by [`require_admin`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/mobile/apps", get(apps))
        .route("/mobile/apps/{folder}/sessions", get(sessions))
        .route(
            "/mobile/apps/{folder}/sessions/{id}",
            get(show).delete(delete),
        )
        .route(
            "/mobile/apps/{folder}/sessions/{id}/status",
            put(set_status),
        )
        .route("/mobile/apps/{folder}/sessions/{id}/email", put(set_email))
        .route("/mobile/push", post(push))
}

/// Middleware: the console's cookie session (with its CSRF token on every method but
/// GET and HEAD), or the admin credential as a Bearer token. Only password checks
/// count against the [`crate::passwords::PasswordChecks`] limits. Puts an [`Actor`] in the
/// request's extensions; answers are never cached.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = crate::layer::client_ip(&req, state.config.trust_proxy_headers);
    let via = if let Some((_, signed)) = console_session(&state, req.headers()).await {
        check_csrf(req.method(), req.headers(), &signed)?;
        Via::Console
    } else {
        let Some(password) = bearer(req.headers()) else {
            return Err(ApiError::unauthorized(
                if has_console_cookie(req.headers()) {
                    "the console session has ended: sign in again"
                } else {
                    "the admin credential is required: Authorization: Bearer <admin password>"
                },
            ));
        };
        let now = state.sessions.now();
        let ok = state
            .admin
            .verify(password, &state.passwords, client, now)
            .await
            .map_err(ApiError::refused)?;
        if !ok {
            return Err(ApiError::unauthorized("wrong admin credential"));
        }
        Via::Bearer
    };
    req.extensions_mut().insert(Actor { ip: client, via });
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(res)
}

impl From<MobileError> for ApiError {
    fn from(e: MobileError) -> Self {
        match e {
            MobileError::BadRequest(m) => ApiError::bad_request(m),
            MobileError::NotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                "mobile_session_not_found",
                "no such mobile session file",
            ),
            MobileError::Io(e) => {
                tracing::error!(error = %e, "mobile session files");
                ApiError::internal("the mobile session files cannot be read or written")
            }
            MobileError::Sessions(e) => e.into(),
            MobileError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m)
            }
            MobileError::TooMany {
                message,
                retry_after,
            } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many", message)
                .retry_after(retry_after.as_secs()),
            e => {
                tracing::error!(error = %e, "mobile sessions");
                ApiError::internal("the mobile sessions failed")
            }
        }
    }
}

/// The mobile sessions, or 404 `mobile_disabled`.
pub(crate) fn mobile(state: &AppState) -> Result<&MobileSessions, ApiError> {
    state.mobile.as_ref().map(|m| &*m.sessions).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "mobile_disabled",
            "mobile apps are not enabled",
        )
    })
}

async fn apps(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"apps": mobile(&state)?.list_apps().await?})))
}

async fn sessions(
    State(state): State<AppState>,
    ApiPath(folder): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"sessions": mobile(&state)?.list_sessions(&folder).await?}),
    ))
}

async fn show(
    State(state): State<AppState>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (path, file) = mobile(&state)?.read_file(&folder, &id).await?;
    Ok(Json(
        json!({"path": path.display().to_string(), "json": file.json}),
    ))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Apply {
    #[serde(default)]
    apply: bool,
}

/// After an edit: push at once when asked, else say that a Push is needed.
async fn finish(m: &MobileSessions, apply: bool, mut body: Value) -> Result<Json<Value>, ApiError> {
    if apply {
        body["push"] = serde_json::to_value(m.refresh().await?).expect("serializable");
        body["pushNeeded"] = false.into();
    } else {
        body["pushNeeded"] = true.into();
    }
    Ok(Json(body))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: Status,
}

async fn set_status(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<Apply>,
    ApiJson(body): ApiJson<StatusBody>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let m = mobile(&state)?;
        let file = m
            .edit_file(&folder, &id, |f| f.set_status(body.status))
            .await?;
        finish(m, q.apply, json!({"json": file.json})).await
    }
    .await;
    let detail = json!({"status": body.status.as_str(), "apply": q.apply});
    audit(
        &state,
        &actor,
        "mobile.status",
        format!("{folder}/{id}"),
        detail,
        &result,
    )
    .await;
    result
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailBody {
    email: String,
}

async fn set_email(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<Apply>,
    ApiJson(body): ApiJson<EmailBody>,
) -> Result<Json<Value>, ApiError> {
    if body.email.len() > 320 || body.email.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "email must be at most 320 printable characters",
        ));
    }
    let result = async {
        let m = mobile(&state)?;
        let file = m
            .edit_file(&folder, &id, |f| f.set_email(&body.email))
            .await?;
        finish(m, q.apply, json!({"json": file.json})).await
    }
    .await;
    let detail = json!({"email": body.email, "apply": q.apply});
    audit(
        &state,
        &actor,
        "mobile.email",
        format!("{folder}/{id}"),
        detail,
        &result,
    )
    .await;
    result
}

async fn delete(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath((folder, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<Apply>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let m = mobile(&state)?;
        m.delete_file(&folder, &id).await?;
        finish(m, q.apply, json!({"deleted": true})).await
    }
    .await;
    let detail = json!({"apply": q.apply});
    audit(
        &state,
        &actor,
        "mobile.delete",
        format!("{folder}/{id}"),
        detail,
        &result,
    )
    .await;
    result
}

async fn push(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
) -> Result<Json<Value>, ApiError> {
    let result = async {
        let report = mobile(&state)?.refresh().await?;
        Ok(Json(serde_json::to_value(report).expect("serializable")))
    }
    .await;
    let detail = match &result {
        Ok(Json(r)) => json!({
            "loaded": r["loaded"], "updated": r["updated"], "evicted": r["evicted"],
            "errors": r["errors"].as_array().map_or(0, Vec::len),
        }),
        Err(_) => Value::Null,
    };
    audit(
        &state,
        &actor,
        "mobile.push",
        String::new(),
        detail,
        &result,
    )
    .await;
    result
}
