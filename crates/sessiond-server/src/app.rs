//! [`AppState`], [`app`] (the whole `sessiond serve` router, drivable without a
//! socket) and [`run`] (serve it on a listener until `shutdown` resolves).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use serde_json::json;
use sessiond_store::Sessions;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::console::Console;
use crate::credentials::{AdminAuth, ApiKey};
use crate::desktop::DesktopSessions;
use crate::error::ApiError;
use crate::layer::SessionLayer;
use crate::passwords::PasswordChecks;
use crate::routes::mobile::MobileState;
use crate::routes::{admin, browser, console, mobile, remote, service};

/// Everything the routes share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Session operations.
    pub sessions: Sessions,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// The service API key verifier.
    pub api_key: ApiKey,
    /// The users file of the built-in login (`None`: login disabled).
    pub users_file: Option<PathBuf>,
    /// The admin credential check.
    pub admin: Arc<AdminAuth>,
    /// Every password check (login, remote hello, admin credential): bounded work,
    /// failures limited per user and address.
    pub passwords: Arc<PasswordChecks>,
    /// Mobile apps (`None`: `/mobileapp/` answers 404).
    pub mobile: Option<MobileState>,
    /// Remote-client sessions, the stored-procedures session, server-side functions.
    pub desktop: DesktopSessions,
    /// The admin console: its sign-in sessions, audit log and live events.
    pub console: Arc<Console>,
}

/// The router of `sessiond serve`: `/api` (browser, cookie sessions), `/service/v1`
/// (API key), `/mobileapp/` (4D mobile apps), `/remote` (remote clients), `/admin`
/// (console) and `/admin/api`, `/healthz`. Unknown routes and methods get JSON errors.
pub fn app(state: AppState) -> Router {
    let layer = SessionLayer::new(state.sessions.clone(), state.config.cookie.clone())
        .trust_proxy_headers(state.config.trust_proxy_headers);
    Router::new()
        .nest("/api", browser::router().layer(layer))
        .nest(
            "/service/v1",
            service::router().layer(from_fn_with_state(state.clone(), service::require_api_key)),
        )
        .nest(
            "/admin/api",
            admin::router()
                .merge(console::api_router())
                .layer(from_fn_with_state(state.clone(), admin::require_admin)),
        )
        .merge(console::router())
        .merge(mobile::router())
        .merge(remote::router())
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

/// Serves [`app`] on `listener` until `shutdown` completes, with the reaper running;
/// in-flight requests finish first (graceful shutdown). Opens the stored-procedures
/// session and runs the startup hook first; ends remote sessions and runs the
/// shutdown hook last ([`DesktopSessions::start`], [`DesktopSessions::shutdown`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reaper = state.sessions.spawn_reaper(state.config.reaper_interval);
    let desktop = state.desktop.clone();
    let expiry = desktop.start().await.map_err(std::io::Error::other)?;
    let console = state.console.clone();
    // Open console event streams end first, or graceful shutdown would wait for them.
    let shutdown = async move {
        shutdown.await;
        console.close();
    };
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await;
    expiry.abort();
    desktop.shutdown().await;
    reaper.abort();
    result
}
