//! 4D's web sessions for axum: one dependency for an application that wants
//! `Session` objects — the private cookie, the shared `storage`, privileges from
//! `roles.json`, idle timeouts, one-time `$4DSID` tokens — without the rest of
//! `sessiond serve`.
//!
//! | module | what lives there |
//! |---|---|
//! | [`session`] | [`Session`]: the handle with 4D's `Session` members, [`Session::current()`], the axum extractor |
//! | [`layer`] | [`SessionLayer`]: cookie `4DSID_<AppName>`, guest creation, `$4DSID` OTP restore, the token rules of docs/tokens.md on the response; the request helpers the application shares ([`layer::client_ip`], [`layer::cookie_value`]) |
//! | [`config`] | [`CookieConfig`], [`SameSite`], [`SecureMode`] |
//! | [`error`] | [`ApiError`]: status code + `{"error", "message"}`, from every store and session error |
//! | [`core`], [`store`] | the session model (`sessiond-core`) and the stores with [`Sessions`] (`sessiond-store`), re-exported |
//!
//! Stores: [`MemoryStore`] always; `EmbeddedStore` (a redb file, durable) with the
//! feature `embedded`; `RedisStore` (Redis, Valkey, Redis Cluster, for several
//! nodes) with the feature `redis`. Only what is enabled is compiled.
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::get};
//! use sessiond::{CookieConfig, MemoryStore, Roles, Session, SessionLayer, SessionPolicy, Sessions, SystemClock};
//!
//! let sessions = Sessions::new(Arc::new(MemoryStore::new()), Arc::new(Roles::default()), Arc::new(SystemClock), SessionPolicy::default());
//! let app: Router = Router::new()
//!     .route("/", get(|s: Session| async move { s.id().to_string() }))
//!     .layer(SessionLayer::new(sessions, CookieConfig::for_app("MyApp")));
//! ```

pub mod config;
pub mod error;
pub mod layer;
pub mod session;

pub use config::{CookieConfig, SameSite, SecureMode};
pub use error::ApiError;
pub use layer::SessionLayer;
pub use session::Session;

pub use sessiond_core as core;
pub use sessiond_core::{Roles, SessionPolicy, SystemClock};
pub use sessiond_store as store;
#[cfg(feature = "embedded")]
pub use sessiond_store::EmbeddedStore;
pub use sessiond_store::{MemoryStore, SessionStore, Sessions};
#[cfg(feature = "redis")]
pub use sessiond_store::{RedisConfig, RedisStore};
