//! The browser surface, behind the [`SessionLayer`](crate::SessionLayer):
//! `GET /api/session`, `POST /api/login`, `POST /api/logout`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use sessiond::ApiError;
use sessiond::Session;
use sessiond::error::ErrorCode;
use sessiond_core::PrivilegeInput;

use super::ApiJson;
use crate::app::AppState;
use crate::contract::{LoggedOut, SessionView};
use crate::users::{LoginError, Users};

/// The browser routes (to be wrapped by the session layer).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(own_session))
        .route("/login", post(login))
        .route("/logout", post(logout))
}

async fn own_session(State(state): State<AppState>, session: Session) -> Json<SessionView> {
    Json(SessionView::of(
        &session.snapshot(),
        state.sessions.roles().force_login(),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Login {
    user_name: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    session: Session,
    ApiJson(body): ApiJson<Login>,
) -> Result<Json<SessionView>, ApiError> {
    let Some(path) = state.users_file.clone() else {
        return Err(ApiError::new(
            ErrorCode::LoginDisabled,
            "the built-in login has no users file",
        ));
    };
    // The address the session was opened from: the real peer (or, when trusted,
    // the proxy's X-Forwarded-For), recorded by the session layer.
    let client = session.snapshot().record.ip();
    let now = state.sessions.now();
    let user = Users::check(
        &state.passwords,
        client,
        now,
        path,
        body.user_name,
        body.password,
    )
    .await
    .map_err(|e| match e {
        LoginError::Refused(r) => ApiError::from(r),
        LoginError::File(e) => {
            tracing::error!(error = %e, "users file unusable");
            ApiError::internal("the users file cannot be read")
        }
    })?;
    let Some(user) = user else {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "wrong user name or password",
        ));
    };
    let input = PrivilegeInput {
        privileges: user.privileges,
        roles: user.roles,
        user_name: Some(user.user_name),
    };
    session.set_privileges(&input).await?;
    tracing::info!(session = %session.id(), user = %session.user_name(), "login");
    Ok(Json(SessionView::of(
        &session.snapshot(),
        state.sessions.roles().force_login(),
    )))
}

async fn logout(session: Session) -> Result<Json<LoggedOut>, ApiError> {
    session.end().await?;
    Ok(Json(LoggedOut { logged_out: true }))
}
