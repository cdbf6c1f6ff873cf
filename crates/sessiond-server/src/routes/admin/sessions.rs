//! The console's live view of the sessions: who is signed in, the live listing,
//! a session's storage, dropping a session or every session of a user.

use axum::extract::State;
use axum::{Extension, Json};
use http::HeaderMap;
use serde_json::{Value, json};
use sessiond::ApiError;
use sessiond::error::ErrorBody;
use sessiond_store::ActivityFilter;
use utoipa::IntoParams;

use super::audit::{audit, audited};
use super::auth::console_session;
use super::events::TICK;
use crate::app::AppState;
use crate::console::{Actor, Via};
use crate::contract::{
    Deleted, DroppedSessions, LiveSession, LiveSessions, Me, SessionStorage, SessionView,
};
use crate::routes::{ApiPath, ApiQuery, parse_id};

/// Who is signed in, and what the console needs to know.
#[utoipa::path(get, path = "/me", tag = "console",
    responses((status = 200, description = "OK", body = Me)))]
pub(crate) async fn me(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(actor): Extension<Actor>,
) -> Json<Me> {
    let csrf = match actor.via {
        Via::Console => console_session(&state, &headers).await.map(|(_, s)| s.csrf),
        Via::Bearer => None,
    };
    Json(Me {
        who: "admin".into(),
        via: actor.via,
        csrf,
        app: state.config.app_name.clone(),
        mobile: state.mobile.is_some(),
        tick_seconds: TICK.as_secs(),
    })
}

#[derive(serde::Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SessionsQuery {
    /// `web`, `remote` or `storedProcedure`.
    kind: Option<String>,
    /// Part of the user name, any case.
    user: Option<String>,
    /// How many (newest first); default [`LIVE_LIMIT`], at most [`LIVE_MAX`].
    limit: Option<usize>,
}

/// Sessions a live listing returns by default, and at most: the page stays light with
/// 100,000 sessions (`total` says how many match).
pub(super) const LIVE_LIMIT: usize = 500;

pub(super) const LIVE_MAX: usize = 5000;

/// The live sessions, newest first, with the calls running in them.
#[utoipa::path(get, path = "/sessions", tag = "console", params(SessionsQuery),
    responses((status = 200, description = "OK", body = LiveSessions),
        (status = 400, description = "`bad_request`: a bad kind or limit", body = ErrorBody)))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SessionsQuery>,
) -> Result<Json<LiveSessions>, ApiError> {
    let kind = crate::routes::parse_kind(q.kind.as_deref())?;
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
    found.retain(|s| user.is_empty() || s.record.user_name().to_lowercase().contains(&user));
    let total = found.len();
    // Newest first.
    found.reverse();
    found.truncate(limit);
    let sessions = found
        .iter()
        .map(|s| LiveSession {
            session: SessionView::of(s, force_login),
            processes: running.remove(&s.record.id()).unwrap_or_default(),
        })
        .collect();
    Ok(Json(LiveSessions {
        sessions,
        total,
        now: state.sessions.now().to_iso8601(),
    }))
}

/// Ends a session (a connected remote client is told).
#[utoipa::path(delete, path = "/sessions/{id}", tag = "console", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = Deleted),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
        (status = 409, description = "`cannot_drop`: the stored-procedures session", body = ErrorBody)))]
pub(crate) async fn drop_session(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    let target = id.clone();
    audited(&state, &actor, "session.drop", target, Value::Null, async {
        if state.desktop.drop_session(&parse_id(&id)?).await? {
            Ok(Json(Deleted { deleted: true }))
        } else {
            Err(ApiError::session_not_found())
        }
    })
    .await
}

/// Ends every session of a user.
#[utoipa::path(delete, path = "/users/{name}/sessions", tag = "console",
    params(("name" = String, Path, description = "The user name")),
    responses((status = 200, description = "OK", body = DroppedSessions)))]
pub(crate) async fn drop_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<DroppedSessions>, ApiError> {
    let result = state.desktop.drop_user(&name).await.map_err(ApiError::from);
    let detail = result
        .as_ref()
        .map_or(Value::Null, |n| json!({"deleted": n}));
    audit(&state, &actor, "user.drop", name, detail, &result).await;
    result.map(|deleted| Json(DroppedSessions { deleted }))
}

/// A session's storage.
#[utoipa::path(get, path = "/sessions/{id}/storage", tag = "console", params(("id" = String, Path, description = "The session id")),
    responses((status = 200, description = "OK", body = SessionStorage),
        (status = 404, description = "`session_not_found`", body = ErrorBody)))]
pub(crate) async fn storage(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SessionStorage>, ApiError> {
    let s = state
        .sessions
        .get(&parse_id(&id)?)
        .await?
        .ok_or_else(ApiError::session_not_found)?;
    Ok(Json(SessionStorage {
        id,
        version: s.record.storage_version(),
        storage: (**s.record.storage()).clone(),
    }))
}
