//! The admin surface: the web console under `/admin` (its page, sign-in and
//! sign-out) and the admin API under `/admin/api` that the console and
//! `sessiond mobile …` use. Every API route needs the admin credential
//! (`Authorization: Bearer <admin password>`) or the console's cookie session (with
//! its `X-CSRF-Token` on every change); every change is written to the audit log.
//!
//! | module | routes |
//! |---|---|
//! | `assets` | `GET /admin`, `GET /admin/assets/{file}` (embedded; strict CSP) |
//! | `auth` | `POST /admin/login` `{password}` → `{csrf}` and the cookie, `POST /admin/logout`; [`require_admin`] in front of the API |
//! | `sessions` | `GET /me`, `GET /sessions?kind=&user=&limit=`, `DELETE /sessions/{id}`, `GET /sessions/{id}/storage`, `DELETE /users/{name}/sessions` |
//! | `mobile` | `GET /mobile/apps`, `…/{folder}/sessions`, `…/{id}` (and `DELETE`), `…/{id}/file`, `PUT …/{id}/status`, `PUT …/{id}/email`, `POST /mobile/push` |
//! | `audit` | `GET /audit?limit=`; `audit::audited`, the one wrapper every change goes through |
//! | `events` | `GET /events`: Server-Sent Events `ready`, `mobile`, `audit`, `tick` |
//!
//! The API's paths are relative to `/admin/api`; its OpenAPI document is
//! [`crate::contract::admin_openapi`].

pub(crate) mod assets;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod events;
pub(crate) mod mobile;
pub(crate) mod sessions;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post, put};
use http::{HeaderName, HeaderValue, header};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::AppState;
pub use auth::require_admin;

/// The console's Content-Security-Policy: nothing but its own files.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Sets `name: value` on every answer of `router`.
fn always<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    name: HeaderName,
    value: &'static str,
) -> Router<S> {
    router.layer(SetResponseHeaderLayer::overriding(
        name,
        HeaderValue::from_static(value),
    ))
}

/// Answers of the admin surface are never cached (unless a route says otherwise, as
/// the assets do) nor sniffed.
fn private<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let router = router.layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    always(router, header::X_CONTENT_TYPE_OPTIONS, "nosniff")
}

/// The console page, its assets, sign-in and sign-out (no admin credential needed),
/// with the page's security headers.
pub fn page_router() -> Router<AppState> {
    let router = Router::new()
        .route("/admin", get(assets::index))
        .route("/admin/", get(assets::index))
        .route("/admin/assets/{file}", get(assets::asset))
        .route("/admin/login", post(auth::login))
        .route("/admin/logout", post(auth::logout));
    let router = always(router, header::CONTENT_SECURITY_POLICY, CSP);
    let router = always(router, header::X_FRAME_OPTIONS, "DENY");
    private(always(router, header::REFERRER_POLICY, "no-referrer"))
}

/// The admin API, to mount under `/admin/api`: every route behind [`require_admin`],
/// every answer (refusals too) private.
pub fn api_router(state: &AppState) -> Router<AppState> {
    private(routes().layer(from_fn_with_state(state.clone(), require_admin)))
}

fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(sessions::me))
        .route("/sessions", get(sessions::list_sessions))
        .route("/sessions/{id}", delete(sessions::drop_session))
        .route("/sessions/{id}/storage", get(sessions::storage))
        .route("/users/{name}/sessions", delete(sessions::drop_user))
        .route("/mobile/apps", get(mobile::apps))
        .route("/mobile/apps/{folder}/sessions", get(mobile::sessions))
        .route(
            "/mobile/apps/{folder}/sessions/{id}",
            get(mobile::show).delete(mobile::delete),
        )
        .route(
            "/mobile/apps/{folder}/sessions/{id}/status",
            put(mobile::set_status),
        )
        .route(
            "/mobile/apps/{folder}/sessions/{id}/email",
            put(mobile::set_email),
        )
        .route(
            "/mobile/apps/{folder}/sessions/{id}/file",
            get(mobile::download),
        )
        .route("/mobile/push", post(mobile::push))
        .route("/audit", get(audit::audit_log))
        .route("/events", get(events::events))
}
