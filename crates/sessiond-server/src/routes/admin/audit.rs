//! The audit log: every admin change and sign-in written through one wrapper
//! ([`audited`]), and `GET /admin/api/audit`.

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use sessiond::ApiError;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::console::{Actor, AuditEntry};
use crate::contract::AuditLog;
use crate::routes::ApiQuery;

/// Runs an admin change and writes its audit entry: `detail` (its parameters,
/// never a secret) and how it ended.
pub(crate) async fn audited<T>(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: String,
    detail: Value,
    change: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let result = change.await;
    audit(state, actor, action, target, detail, &result).await;
    result
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
                Err(e) => e.code.as_str().into(),
            },
        })
        .await;
}

#[derive(serde::Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    /// How many of the newest entries (1 to 5000, default 200).
    limit: Option<usize>,
}

/// The audit log: every admin change and sign-in.
#[utoipa::path(get, path = "/audit", tag = "console", params(AuditQuery),
    responses((status = 200, description = "OK", body = AuditLog)))]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditLog>, ApiError> {
    let limit = q.limit.unwrap_or(200).clamp(1, 5000);
    let entries = state.console.recent(limit).await.map_err(|e| {
        tracing::error!(error = %e, "the audit log cannot be read");
        ApiError::internal("the audit log cannot be read")
    })?;
    Ok(Json(AuditLog { entries }))
}
