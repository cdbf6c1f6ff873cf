//! The browser surface, behind the [`SessionLayer`](crate::SessionLayer):
//! `GET /api/session`, `POST /api/login`, `POST /api/logout`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{Value, json};
use sessiond_core::PrivilegeInput;

use super::{ApiJson, session_json};
use crate::app::AppState;
use crate::error::ApiError;
use crate::session::Session;
use crate::users::{LoginError, Users};

/// The browser routes (to be wrapped by the session layer).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", get(own_session))
        .route("/login", post(login))
        .route("/logout", post(logout))
}

async fn own_session(State(state): State<AppState>, session: Session) -> Json<Value> {
    Json(session_json(
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
) -> Result<Json<Value>, ApiError> {
    let Some(path) = state.users_file.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "login_disabled",
            "the built-in login has no users file",
        ));
    };
    // The address the session was opened from: the real peer (or, when trusted,
    // the proxy's X-Forwarded-For), recorded by the session layer.
    let client = session.snapshot().record.ip;
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
        LoginError::Refused(r) => ApiError::refused(r),
        LoginError::File(e) => {
            tracing::error!(error = %e, "users file unusable");
            ApiError::internal("the users file cannot be read")
        }
    })?;
    let Some(user) = user else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
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
    Ok(Json(session_json(
        &session.snapshot(),
        state.sessions.roles().force_login(),
    )))
}

async fn logout(session: Session) -> Result<Json<Value>, ApiError> {
    session.end().await?;
    Ok(Json(json!({"loggedOut": true})))
}
