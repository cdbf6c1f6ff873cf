//! The `sessiond` binary: lay flags over `sessiond.toml` into a validated
//! [`NodeConfig`], set up tracing, build the node with [`Server::builder`], bind the
//! listener and serve.
//!
//! | module | what lives there |
//! |---|---|
//! | `cli` | the clap command line |
//! | `config` | flags + environment over `sessiond.toml` → [`NodeConfig`] |
//! | `mobile` | `sessiond mobile …` over the admin API |
//! | `remote` | `sessiond remote …`: a remote client (calls, sleep, wake, shell) |
//! | `setup` | `sessiond init`, `user …`, `admin …`; password prompts |

mod cli;
mod config;
mod mobile;
mod remote;
mod setup;

use anyhow::Context;
use clap::Parser;
use sessiond_server::Server;
use sessiond_server::settings::NodeConfig;
use tokio::net::TcpListener;

use crate::cli::{Cli, Command, ConfigCommand};

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
        Command::Serve(args) => config::from_args(&args)
            .map_err(anyhow::Error::from)
            .and_then(serve),
        Command::Config(ConfigCommand::Check(args)) => config::check(&args),
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

fn serve(config: NodeConfig) -> anyhow::Result<()> {
    if let Some(n) = sessiond_server::serve::raise_open_files_limit() {
        tracing::debug!(open_files = n, "open-files limit");
    }
    let secret = |name| std::env::var(name).ok().filter(|k: &String| !k.is_empty());
    let listen = config.listen;
    let data = config.data.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let server = Server::builder(config)
            .secrets(
                secret("SESSIOND_API_KEY"),
                secret("SESSIOND_ADMIN_PASSWORD"),
            )
            .build()
            .await?;
        let generated = server.generated();
        let first_start = generated.api_key.is_some() || generated.admin_password.is_some();
        if let Some(k) = &generated.api_key {
            println!(
                "New service API key (shown once; its hash is in {}):\n  {k}",
                data.join("credentials.json").display()
            );
        }
        if let Some(p) = &generated.admin_password {
            println!(
                "New admin password (shown once; change it with: sessiond admin password):\n  {p}"
            );
        }
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        tracing::info!(%addr, app = %server.state().config.app_name, "sessiond listening");
        if first_start {
            println!(
                "Admin console: http://{addr}/admin (sign in with the admin password)\nLost the API key? sessiond admin api-key makes a new one."
            );
        }
        println!("sessiond listening on http://{addr}");
        server.serve(listener, shutdown).await?;
        tracing::info!("sessiond stopped");
        Ok(())
    })
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
