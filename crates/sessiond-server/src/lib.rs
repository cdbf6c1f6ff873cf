//! The `sessiond serve` application: every route, the console, remote and
//! stored-procedure sessions, users, credentials, cluster sync and the HTTP loop,
//! built on the embeddable [`sessiond`] crate (the [`SessionLayer`] and the
//! [`Session`] extractor, re-exported here).
//!
//! | module | what lives there |
//! |---|---|
//! | [`passwords`] | [`passwords::PasswordChecks`]: every password check, on a bounded pool, with failures limited per user and address |
//! | [`routes`] | `/api` (browser), `/service/v1` (service API with its API key), `/remote` (remote clients' WebSocket), `/mobileapp/`, `/admin` (console) and `/admin/api` |
//! | [`desktop`] | [`desktop::DesktopSessions`]: remote sessions, the stored-procedures session, server-side functions and server hooks — no HTTP (`/remote` is in [`routes`]) |
//! | [`contract`] | the service API's answers as types ([`contract::SessionView`], …) and its OpenAPI 3.1 document ([`contract::service_openapi`]) |
//! | [`console`] | [`console::Console`]: the admin console's sign-in sessions, CSRF tokens, audit log, live events |
//! | [`app`](mod@app) | [`AppState`], [`app()`] (the router), [`run()`] (serve with graceful shutdown) |
//! | [`serve`] | [`serve::serve`]: the HTTP/1.1 loop with its timeouts and connection caps ([`serve::ConnectionLimits`]) |
//! | [`cluster`] | several nodes on one Redis: mobile changes over pub/sub, resync on reconnect |
//! | [`server`] | [`Server::builder`]: the one composition root (data folder, roles, credentials, store, mobile, desktop, console) and [`Server::serve`] (cluster sync, mobile load, the HTTP loop) |
//! | [`settings`] | [`settings::Settings`] (`sessiond.toml` as written) → [`settings::NodeConfig`] (validated, one typed part per component) |
//! | [`config`] | [`ServerConfig`] ([`CookieConfig`] comes from [`sessiond`]) |
//! | [`login_hook`] | [`login_hook::ConfigHook`]: the mobile login hook from the config (lists, HTTP callout) |
//! | [`outbound`] | [`outbound::Client`]: HTTP and HTTPS (rustls) to the mobile callout and upstream |
//! | [`users`] | the users file of the built-in login (argon2id) |
//! | [`credentials`] | the API key and admin credential created on first start |

pub mod app;
pub mod cluster;
pub mod config;
pub mod console;
pub mod contract;
pub mod credentials;
pub mod desktop;
pub mod login_hook;
pub mod outbound;
pub mod passwords;
pub mod routes;
pub mod serve;
pub mod server;
pub mod settings;
pub mod users;

pub use app::{AppState, app, run};
pub use config::{CookieConfig, SameSite, SecureMode, ServerConfig};
pub use server::{BuildError, Server, ServerBuilder};
pub use sessiond::error::{ErrorBody, ErrorCode};
pub use sessiond::{ApiError, Session, SessionLayer};
