//! [`Server`]: the one composition root of a `sessiond serve` node. The binary, the
//! benchmarks, the examples and the tests all build their node here:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use sessiond_server::Server;
//! use sessiond_server::settings::Settings;
//!
//! let config = Settings::parse("store = \"memory\"\ndata = \"./data\"")?.validate()?;
//! let server = Server::builder(config).build().await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8044").await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```
//!
//! [`ServerBuilder::build`] prepares the data folder, loads `roles.json`, makes the
//! credentials on first start, opens the configured store, and wires sessions,
//! mobile apps, remote and stored-procedure sessions and the console into one
//! [`AppState`]. [`Server::serve`] starts what a running node needs — cluster sync
//! whenever the store is shared (Redis), the mobile sessions' first load, the reaper
//! — and serves until `shutdown` resolves.

use std::sync::Arc;

use axum::Router;
use sessiond_core::{Clock, Roles, SystemClock};
use sessiond_mobile::activation::{Activations, EmailConfig, MailTransport};
use sessiond_mobile::hook::AuthHook;
use sessiond_mobile::{MobileConfig, MobileSessions};
use sessiond_store::{EmbeddedStore, MemoryStore, RedisStore, SessionStore, Sessions};
use tokio::net::TcpListener;

use crate::app::{AppState, app, run};
use crate::console::Console;
use crate::credentials::{AdminAuth, Credentials, Generated};
use crate::desktop::{DesktopBuilder, DesktopSessions};
use crate::login_hook::ConfigHook;
use crate::routes::mobile::MobileState;
use crate::settings::{NodeConfig, StoreConfig};

/// Why a node could not be built. The messages name the file or service at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The data folder cannot be created or made private.
    #[error("cannot create data folder {path}: {source}")]
    DataFolder {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `roles.json` cannot be read or is invalid.
    #[error("roles.json is invalid; sessiond does not start without valid roles: {0}")]
    Roles(sessiond_core::Error),
    /// `credentials.json` cannot be read or written.
    #[error("credentials: {0}")]
    Credentials(crate::users::UsersError),
    /// The embedded store's file cannot be opened.
    #[error("the embedded session store cannot be opened: {0}")]
    Embedded(sessiond_store::StoreError),
    /// Redis cannot be reached.
    #[error("cannot connect to Redis: {0}")]
    Redis(sessiond_store::StoreError),
    /// The mobile e-mail validation state cannot be loaded.
    #[error("mobile e-mail validation: {0}")]
    Email(sessiond_mobile::activation::EmailError),
}

/// A function that registers server-side functions, procedures and hooks.
type Functions = Box<dyn FnOnce(DesktopBuilder) -> DesktopBuilder + Send>;

/// Builds a [`Server`] from a validated [`NodeConfig`]; every part the config does
/// not describe (a store object, a clock, a login hook, functions) can be given here.
#[must_use = "call .build()"]
pub struct ServerBuilder {
    config: NodeConfig,
    store: Option<Arc<dyn SessionStore>>,
    roles: Option<Roles>,
    clock: Arc<dyn Clock>,
    api_key: Option<String>,
    admin_password: Option<String>,
    mobile: bool,
    login_hook: Option<Arc<dyn AuthHook>>,
    functions: Option<Functions>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("custom_store", &self.store.is_some())
            .field("mobile", &self.mobile)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Keeps sessions in `store` instead of the configured one (an embedding's own
    /// store, a test's store). A store given here is not shared with other nodes
    /// through cluster sync.
    pub fn store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// These roles instead of the configured `roles.json`.
    pub fn roles(mut self, roles: Roles) -> Self {
        self.roles = Some(roles);
        self
    }

    /// Time from `clock` (tests move a manual clock) instead of the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The service API key and admin password to set when `credentials.json` has
    /// none yet (otherwise they are generated and returned once by
    /// [`Server::generated`]); a key given here replaces a stored one.
    pub fn secrets(mut self, api_key: Option<String>, admin_password: Option<String>) -> Self {
        self.api_key = api_key.filter(|k| !k.is_empty());
        self.admin_password = admin_password.filter(|p| !p.is_empty());
        self
    }

    /// Without mobile apps: `/mobileapp/` answers 404 and no `MobileApps` folder is
    /// read.
    pub fn without_mobile(mut self) -> Self {
        self.mobile = false;
        self
    }

    /// Decides mobile logins with `hook` instead of the configured policy and
    /// callout.
    pub fn login_hook(mut self, hook: Arc<dyn AuthHook>) -> Self {
        self.login_hook = Some(hook);
        self
    }

    /// Registers server-side functions, stored procedures and the On Server hooks.
    pub fn functions(
        mut self,
        register: impl FnOnce(DesktopBuilder) -> DesktopBuilder + Send + 'static,
    ) -> Self {
        self.functions = Some(Box::new(register));
        self
    }

    /// Prepares the data folder, the roles, the credentials and the store, and wires
    /// the node.
    pub async fn build(self) -> Result<Server, BuildError> {
        let config = self.config;
        let data = &config.data;
        sessiond_store::fs::private_dir(data).map_err(|source| BuildError::DataFolder {
            path: data.display().to_string(),
            source,
        })?;
        sessiond_store::fs::remove_stale_temps(data);
        let roles = match (self.roles, &config.roles) {
            (Some(roles), _) => roles,
            (None, Some(path)) => Roles::load(path).map_err(BuildError::Roles)?,
            (None, None) => Roles::default(),
        };
        for w in roles.warnings() {
            tracing::warn!("roles.json: {w}");
        }
        let (credentials, api_key, generated) = Credentials::ensure(
            data,
            self.api_key.as_deref(),
            self.admin_password.as_deref(),
        )
        .map_err(BuildError::Credentials)?;
        let (store, redis) = match self.store {
            Some(store) => (store, None),
            None => open_store(&config, self.clock.now()).await?,
        };
        let sessions = Sessions::new(
            store,
            Arc::new(roles),
            self.clock,
            config.server.policy.clone(),
        )
        .with_node(&config.node)
        .with_guest_key(credentials.guest_key());
        // Built even without mobile apps: cluster sync carries remote drops beside
        // mobile changes.
        let mobile = Arc::new(mobile_sessions(&config, sessions.clone())?);
        let mobile_state = self.mobile.then(|| {
            let client = crate::outbound::client(&config.mobile.tls_roots);
            let hook = self.login_hook.unwrap_or_else(|| {
                Arc::new(
                    ConfigHook::new(
                        config.mobile.policy.clone(),
                        config.mobile.callout.clone(),
                        config.server.policy.clone(),
                    )
                    .with_client(client.clone()),
                )
            });
            MobileState::new(mobile.clone(), hook, config.mobile.upstream.clone())
                .with_forward_limits(config.mobile.forward)
                .with_client(client)
        });
        let mut desktop = DesktopSessions::builder(sessions.clone(), config.remote.clone());
        if let Some(register) = self.functions {
            desktop = register(desktop);
        }
        let state = AppState {
            sessions,
            api_key,
            users_file: Some(data.join("users.json")),
            admin: Arc::new(AdminAuth::new(data)),
            console: Arc::new(Console::new(data)),
            passwords: Arc::default(),
            mobile: mobile_state,
            desktop: desktop.build(),
            config: Arc::new(config.server),
        };
        Ok(Server {
            state,
            redis,
            mobile,
            generated,
            node: config.node,
        })
    }
}

/// A built `sessiond serve` node: its [`AppState`], ready to [`serve`](Self::serve)
/// or to be driven through [`router`](Self::router).
#[derive(Debug)]
pub struct Server {
    state: AppState,
    redis: Option<RedisStore>,
    mobile: Arc<MobileSessions>,
    generated: Generated,
    node: String,
}

impl Server {
    /// A builder for the node `config` describes.
    pub fn builder(config: NodeConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            store: None,
            roles: None,
            clock: Arc::new(SystemClock),
            api_key: None,
            admin_password: None,
            mobile: true,
            login_hook: None,
            functions: None,
        }
    }

    /// What the routes share: sessions, desktop sessions, the console, settings.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The API key and admin password made at this start (first start only): shown
    /// once, stored only as hashes.
    pub fn generated(&self) -> &Generated {
        &self.generated
    }

    /// The whole router, to serve yourself or to drive without a socket. (Cluster
    /// sync and the mobile sessions' load are started by [`serve`](Self::serve).)
    pub fn router(&self) -> Router {
        app(self.state.clone())
    }

    /// Serves the node on `listener` until `shutdown` resolves: starts cluster sync
    /// when the store is shared, loads the mobile sessions, then runs
    /// [`run`] (reaper, startup and shutdown hooks, graceful drain).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sync = self.redis.as_ref().map(|redis| {
            crate::cluster::spawn_sync(
                redis.clone(),
                self.node.clone(),
                self.mobile.clone(),
                self.state.desktop.clone(),
            )
        });
        if self.state.mobile.is_some() {
            let report = self
                .mobile
                .reload_all()
                .await
                .map_err(std::io::Error::other)?;
            for e in &report.errors {
                tracing::warn!(file = %e.file, "{}", e.message);
            }
            tracing::info!(sessions = report.loaded, "mobile sessions loaded");
        }
        let result = run(listener, self.state, shutdown).await;
        for task in sync.into_iter().flatten() {
            task.abort();
        }
        result
    }
}

/// The session store the config names (and the Redis store again, for cluster sync).
async fn open_store(
    config: &NodeConfig,
    now: sessiond_core::Timestamp,
) -> Result<(Arc<dyn SessionStore>, Option<RedisStore>), BuildError> {
    Ok(match &config.store {
        StoreConfig::Memory => (Arc::new(MemoryStore::new()), None),
        StoreConfig::Embedded => {
            let store = EmbeddedStore::open(&config.data.join("sessions.redb"), now)
                .map_err(BuildError::Embedded)?;
            (Arc::new(store), None)
        }
        StoreConfig::Redis(redis) => {
            let store = RedisStore::connect(redis)
                .await
                .map_err(BuildError::Redis)?;
            (Arc::new(store.clone()), Some(store))
        }
    })
}

/// The mobile sessions, with e-mail validation when configured.
fn mobile_sessions(config: &NodeConfig, sessions: Sessions) -> Result<MobileSessions, BuildError> {
    let mobile_config = MobileConfig {
        ids: config.mobile.ids,
        localhost_accept: config.mobile.localhost_accept,
        relogin: config.mobile.relogin,
        limits: config.mobile.limits,
        watch: config.mobile.watch,
        ..MobileConfig::new(config.data.join("MobileApps"))
    };
    let mut mobile = MobileSessions::new(mobile_config, sessions);
    if let Some(e) = &config.mobile.email {
        let transport = match &e.smtp {
            Some(url) => MailTransport::Smtp(url.clone()),
            None => MailTransport::Outbox(config.data.join("outbox")),
        };
        let email = EmailConfig {
            from: e.from.clone(),
            link_base: e.link_base.clone(),
            validity: e.validity,
            transport,
            state_file: config.data.join("mobile-activations.json"),
            max_per_recipient: e.max_per_recipient,
            max_per_client: e.max_per_client,
        };
        mobile = mobile.with_email(Activations::load(email).map_err(BuildError::Email)?);
    }
    Ok(mobile)
}
