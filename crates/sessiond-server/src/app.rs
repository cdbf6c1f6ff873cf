//! [`AppState`], [`app`] (the whole `sessiond serve` router, drivable without a
//! socket) and [`run`] (serve it on a listener until `shutdown` resolves).

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use sessiond::ApiError;
use sessiond::SessionLayer;
use sessiond::error::ErrorCode;
use sessiond_store::Sessions;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::console::Console;
use crate::credentials::{AdminAuth, ApiKey};
use crate::desktop::DesktopSessions;
use crate::passwords::PasswordChecks;
use crate::routes::mobile::MobileState;
use crate::routes::{admin, browser, mobile, remote, service};

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
        .route(
            "/service/v1/openapi.json",
            get(|| async { document(&SERVICE_OPENAPI) }),
        )
        .nest(
            "/service/v1",
            service::router().layer(from_fn_with_state(state.clone(), service::require_api_key)),
        )
        .route(
            "/admin/api/openapi.json",
            get(|| async { document(&ADMIN_OPENAPI) }),
        )
        .nest("/admin/api", admin::api_router(&state))
        .merge(admin::page_router())
        .merge(mobile::router())
        .merge(remote::router())
        .route(
            "/healthz",
            get(|| async {
                axum::Json(crate::contract::Health {
                    status: "ok".into(),
                })
            }),
        )
        .fallback(|| async { ApiError::no_route() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(from_fn_with_state(
            state.config.max_body_bytes,
            refuse_announced_oversize,
        ))
        .with_state(state)
}

/// The OpenAPI documents, rendered once: they are served without credentials.
static SERVICE_OPENAPI: std::sync::LazyLock<bytes::Bytes> =
    std::sync::LazyLock::new(|| render(&crate::contract::service_openapi()));
static ADMIN_OPENAPI: std::sync::LazyLock<bytes::Bytes> =
    std::sync::LazyLock::new(|| render(&crate::contract::admin_openapi()));

fn render(doc: &utoipa::openapi::OpenApi) -> bytes::Bytes {
    serde_json::to_vec(doc)
        .expect("an OpenAPI document serializes")
        .into()
}

fn document(json: &bytes::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        json.clone(),
    )
        .into_response()
}

/// A body announced (`Content-Length`) over the limit is refused before a byte of it
/// is read. (`/mobileapp/` requests forwarded to the upstream have their own limit,
/// checked the same way there.)
async fn refuse_announced_oversize(
    axum::extract::State(max): axum::extract::State<usize>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let announced = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let forwarded = req.uri().path().starts_with("/mobileapp/")
        && !req
            .uri()
            .path()
            .trim_start_matches("/mobileapp/")
            .starts_with('$');
    match announced {
        Some(n) if n > u64::try_from(max).unwrap_or(u64::MAX) && !forwarded => ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("the request body is over the limit of {max} bytes"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// Serves [`app`] on `listener` until `shutdown` completes, with the reaper running,
/// within the connection limits of the config ([`crate::serve`]). Opens the
/// stored-procedures session and runs the startup hook first. At shutdown: remote
/// clients are told first, then requests in flight finish within the grace period,
/// then the shutdown hook runs ([`DesktopSessions::start`],
/// [`DesktopSessions::shutdown`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reaper = state.sessions.spawn_reaper(state.config.reaper_interval);
    let desktop = state.desktop.clone();
    let expiry = desktop.start().await.map_err(std::io::Error::other)?;
    let console = state.console.clone();
    let limits = state.config.limits.clone();
    let closing = desktop.clone();
    let shutdown = async move {
        shutdown.await;
        // Open console event streams end first, or the drain would wait for them;
        // remote clients are told before the HTTP requests drain.
        console.close();
        closing.close_clients().await;
    };
    let result = crate::serve::serve(listener, app(state), limits, shutdown).await;
    expiry.abort();
    desktop.shutdown().await;
    reaper.abort();
    result
}
