//! The command line (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sessiond: 4D-compatible sessions for any web stack.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the session server.
    Serve(ServeArgs),
    /// Manage the users of the built-in login.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the admin credential.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// `sessiond serve`.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8044].
    #[arg(long, env = "SESSIOND_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data folder [default: ./data].
    #[arg(long, env = "SESSIOND_DATA")]
    pub data: Option<PathBuf>,
    /// Config file [default: ./sessiond.toml when it exists].
    #[arg(long, env = "SESSIOND_CONFIG")]
    pub config: Option<PathBuf>,
    /// roles.json [default: <data>/roles.json when it exists].
    #[arg(long, env = "SESSIOND_ROLES")]
    pub roles: Option<PathBuf>,
    /// Application name; the cookie is 4DSID_<name> [default: sessiond].
    #[arg(long, env = "SESSIOND_APP_NAME")]
    pub app_name: Option<String>,
    /// Session store [default: memory].
    #[arg(long, env = "SESSIOND_STORE")]
    pub store: Option<String>,
}

/// `sessiond user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (or replace one) in <data>/users.json. The password is read from
    /// SESSIOND_USER_PASSWORD or, when unset, from the first line of standard input.
    Add {
        /// User name.
        name: String,
        /// A role granted at login (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A privilege granted at login (repeatable).
        #[arg(long = "privilege")]
        privileges: Vec<String>,
        /// Data folder [default: ./data].
        #[arg(long, env = "SESSIOND_DATA", default_value = "./data")]
        data: PathBuf,
    },
}

/// `sessiond admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the admin password. Read from SESSIOND_ADMIN_PASSWORD or, when unset, from
    /// the first line of standard input.
    Password {
        /// Data folder [default: ./data].
        #[arg(long, env = "SESSIOND_DATA", default_value = "./data")]
        data: PathBuf,
    },
}
