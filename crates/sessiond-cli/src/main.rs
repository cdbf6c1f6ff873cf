//! The `sessiond` binary: parse flags into a validated [`config::Config`], set up
//! tracing, bind the listener, and hand over to [`sessiond_server::run`].
//!
//! | module | what lives there |
//! |---|---|
//! | `cli` | the clap command line |
//! | `config` | flags + environment + `sessiond.toml` → [`config::Config`] |
//! | `mobile` | `sessiond mobile …` over the admin API |
//! | `remote` | `sessiond remote …`: a remote client (calls, sleep, wake, shell) |
//! | `setup` | `sessiond init`, `user …`, `admin …`; password prompts |

mod cli;
mod config;
mod mobile;
mod remote;
mod setup;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use sessiond_core::{Clock, Roles, SystemClock};
use sessiond_mobile::activation::{Activations, EmailConfig, MailTransport};
use sessiond_mobile::{MobileConfig, MobileSessions};
use sessiond_server::console::Console;
use sessiond_server::credentials::{AdminAuth, Credentials};
use sessiond_server::desktop::DesktopSessions;
use sessiond_server::hook::ConfigHook;
use sessiond_server::routes::mobile::MobileState;
use sessiond_server::{AppState, run};
use sessiond_store::{EmbeddedStore, MemoryStore, RedisStore, SessionStore, Sessions};
use tokio::net::TcpListener;

use crate::cli::{Cli, Command};
use crate::config::{Config, StoreChoice};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESSIOND_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve(args) => Config::from_args(&args).and_then(serve),
        Command::Init { data } => setup::init(&data),
        Command::User(command) => setup::user(command),
        Command::Admin(command) => setup::admin(command),
        Command::Mobile { server, command } => {
            setup::secret("SESSIOND_ADMIN_PASSWORD", "Admin password: ")
                .and_then(|pw| mobile::run(server, pw, command))
        }
        Command::Remote(args) => setup::secret("SESSIOND_REMOTE_PASSWORD", "Password: ")
            .and_then(|pw| remote::run(args, pw)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiond: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    if let Some(n) = sessiond_server::serve::raise_open_files_limit() {
        tracing::debug!(open_files = n, "open-files limit");
    }
    sessiond_store::fs::private_dir(&config.data)
        .with_context(|| format!("cannot create data folder {}", config.data.display()))?;
    sessiond_store::fs::remove_stale_temps(&config.data);
    let roles = match &config.roles {
        Some(path) => Roles::load(path)
            .context("roles.json is invalid; sessiond does not start without valid roles")?,
        None => Roles::default(),
    };
    for w in roles.warnings() {
        tracing::warn!("roles.json: {w}");
    }
    let api_key = std::env::var("SESSIOND_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    let admin_password = std::env::var("SESSIOND_ADMIN_PASSWORD")
        .ok()
        .filter(|k| !k.is_empty());
    let (credentials, key, generated) =
        Credentials::ensure(&config.data, api_key.as_deref(), admin_password.as_deref())?;
    let first_start = generated.api_key.is_some() || generated.admin_password.is_some();
    if let Some(k) = generated.api_key {
        println!(
            "New service API key (shown once; its hash is in {}):\n  {k}",
            config.data.join("credentials.json").display()
        );
    }
    if let Some(p) = generated.admin_password {
        println!(
            "New admin password (shown once; change it with: sessiond admin password):\n  {p}"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (store, redis) = open_store(&config, &runtime)?;
    let sessions = Sessions::new(
        store,
        Arc::new(roles),
        Arc::new(SystemClock),
        config.server.policy.clone(),
    )
    .with_node(&config.node)
    .with_guest_key(credentials.guest_key());
    let mobile = Arc::new(mobile_sessions(&config, sessions.clone())?);
    let hook = Arc::new(ConfigHook::new(
        config.mobile.policy.clone(),
        config.mobile.callout.clone(),
        config.server.policy.clone(),
    ));
    let mobile_state = MobileState::new(mobile.clone(), hook, config.mobile.upstream.clone())
        .with_forward_limits(config.mobile.forward);
    let state = AppState {
        sessions: sessions.clone(),
        config: Arc::new(config.server),
        api_key: key,
        users_file: Some(config.data.join("users.json")),
        admin: Arc::new(AdminAuth::new(&config.data)),
        console: Arc::new(Console::new(&config.data)),
        passwords: Arc::default(),
        mobile: Some(mobile_state),
        desktop: DesktopSessions::builder(sessions.clone(), config.remote.clone()).build(),
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        if let Some(redis) = redis {
            sessiond_server::cluster::spawn_sync(
                redis,
                config.node.clone(),
                mobile.clone(),
                state.desktop.clone(),
            );
        }
        let report = mobile.reload_all().await?;
        for e in &report.errors {
            tracing::warn!(file = %e.file, "{}", e.message);
        }
        tracing::info!(sessions = report.loaded, "mobile sessions loaded");
        tracing::info!(%addr, app = %state.config.app_name, "sessiond listening");
        if first_start {
            println!(
                "Admin console: http://{addr}/admin (sign in with the admin password)\nLost the API key? sessiond admin api-key makes a new one."
            );
        }
        println!("sessiond listening on http://{addr}");
        run(listener, state, shutdown).await?;
        tracing::info!("sessiond stopped");
        Ok(())
    })
}

/// The session store the config names (and the Redis store again, for the nodes'
/// messages).
fn open_store(
    config: &Config,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<(Arc<dyn SessionStore>, Option<RedisStore>)> {
    Ok(match &config.store {
        StoreChoice::Memory => (Arc::new(MemoryStore::new()), None),
        StoreChoice::Embedded => {
            let path = config.data.join("sessions.redb");
            let store = EmbeddedStore::open(&path, SystemClock.now())
                .context("the embedded session store cannot be opened")?;
            (Arc::new(store), None)
        }
        StoreChoice::Redis(redis) => {
            let store = runtime
                .block_on(RedisStore::connect(redis))
                .context("cannot connect to Redis")?;
            (Arc::new(store.clone()), Some(store))
        }
    })
}

/// The mobile sessions, with e-mail validation when configured.
fn mobile_sessions(config: &Config, sessions: Sessions) -> anyhow::Result<MobileSessions> {
    let mobile_config = MobileConfig {
        ids: config.mobile.ids,
        localhost_accept: config.mobile.localhost_accept,
        relogin: config.mobile.relogin,
        limits: config.mobile.limits,
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
        mobile = mobile.with_email(Activations::load(email)?);
    }
    Ok(mobile)
}

/// Registers SIGINT/SIGTERM handlers now (so a signal that arrives right after the
/// "listening" line is not lost) and returns the future that resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
