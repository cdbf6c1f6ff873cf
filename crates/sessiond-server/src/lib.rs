//! The HTTP side of sessiond.
//!
//! | module | what lives there |
//! |---|---|
//! | [`session`] | [`Session`]: the handle with 4D's `Session` members, [`Session::current()`], the axum extractor |
//! | [`layer`] | [`SessionLayer`]: cookie `4DSID_<AppName>`, guest creation, `$4DSID` OTP restore, the token rules of docs/tokens.md on the response |
//! | [`passwords`] | [`passwords::PasswordChecks`]: every password check, on a bounded pool, with failures limited per user and address |
//! | [`routes`] | `/api` (browser), `/service/v1` (service API with its API key), `/remote` (remote clients' WebSocket), `/mobileapp/`, `/admin` (console) and `/admin/api` |
//! | [`desktop`] | [`desktop::DesktopSessions`]: remote-client sessions, the stored-procedures session, server-side functions and hooks |
//! | [`console`] | [`console::Console`]: the admin console's sign-in sessions, CSRF tokens, audit log, live events |
//! | [`app`](mod@app) | [`AppState`], [`app()`] (the router), [`run()`] (serve with graceful shutdown) |
//! | [`serve`] | [`serve::serve`]: the HTTP/1.1 loop with its timeouts and connection caps ([`serve::ConnectionLimits`]) |
//! | [`cluster`] | several nodes on one Redis: mobile changes over pub/sub, resync on reconnect |
//! | [`config`] | [`ServerConfig`], [`CookieConfig`] |
//! | [`hook`] | [`hook::ConfigHook`]: the mobile login hook from the config (lists, HTTP callout) |
//! | [`users`] | the users file of the built-in login (argon2id) |
//! | [`credentials`] | the API key and admin credential created on first start |
//! | [`error`] | [`ApiError`]: status code + `{"error", "message"}` |

pub mod app;
pub mod cluster;
pub mod config;
pub mod console;
pub mod credentials;
pub mod desktop;
pub mod error;
pub mod hook;
pub mod layer;
pub mod passwords;
pub mod routes;
pub mod serve;
pub mod session;
pub mod users;

pub use app::{AppState, app, run};
pub use config::{CookieConfig, SameSite, SecureMode, ServerConfig};
pub use error::ApiError;
pub use layer::SessionLayer;
pub use session::Session;
