//! The command line (clap).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// sessiond: 4D-compatible sessions for any web stack.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version)]
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
    /// Check the configuration `serve` would use (the same flags, environment and
    /// sessiond.toml), and roles.json; print the effective settings. Exits non-zero
    /// on the first invalid value. Connects to nothing and writes nothing.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a starter ./sessiond.toml (every setting, commented) and <data>/roles.json
    /// (existing files are kept).
    Init {
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Manage the users of the built-in login and of remote clients.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the admin credential.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage mobile-app sessions on a running server (the Mobile Session
    /// Management component). The admin password comes from SESSIOND_ADMIN_PASSWORD,
    /// else it is asked (hidden) on a terminal, else read from standard input.
    Mobile {
        /// The server's address.
        #[arg(long, env = "SESSIOND_SERVER", default_value = "http://127.0.0.1:8044")]
        server: String,
        /// What to do.
        #[command(subcommand)]
        command: MobileCommand,
    },
    /// Connect to a running server as a remote client (4D's remote mode): call
    /// server-side functions in a remote session, sleep, wake, reconnect. The password
    /// comes from SESSIOND_REMOTE_PASSWORD, else it is asked (hidden) on a terminal,
    /// else read from the first line of standard input.
    Remote(RemoteArgs),
}

/// `sessiond remote ...`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The server's remote endpoint.
    #[arg(
        long,
        env = "SESSIOND_REMOTE_URL",
        default_value = "ws://127.0.0.1:8044/remote"
    )]
    pub url: String,
    /// User name (of the server's users file).
    #[arg(long, env = "SESSIOND_REMOTE_USER")]
    pub user: String,
    /// Resume this session (its persistentID) instead of opening a new one.
    #[arg(long)]
    pub persistent_id: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: RemoteCommand,
}

/// `sessiond remote <command>`.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Call a server-side function and print its result as JSON.
    Call {
        /// The function's name: one the server registered, or a built-in one; clients
        /// may call session.info, session.storage and session.hasPrivilege, and the
        /// others (session.patch, session.increment, session.setPrivileges,
        /// session.clearPrivileges, session.createOTP, session.wait) when the server's
        /// [remote] client_builtins lists them.
        function: String,
        /// Its parameters as JSON [default: null].
        params: Option<String>,
        /// Leave without goodbye: the session stays (postponed) for a reconnection
        /// with --persistent-id; by default the session ends.
        #[arg(long)]
        keep: bool,
    },
    /// Tell the server this machine goes to sleep (the session becomes sleeping; wake
    /// it with --persistent-id).
    Sleep,
    /// Read commands from standard input, one per line: call NAME [JSON], sleep,
    /// wake, drop (lose the connection), reconnect, info, bye.
    Shell,
}

/// `sessiond mobile ...`.
#[derive(Debug, Subcommand)]
pub enum MobileCommand {
    /// List the apps (folders) with their session and pending counts.
    Apps,
    /// List the sessions of an app folder.
    Sessions {
        /// The app folder (TEAMID.bundle.id, or bundle.id without a team).
        folder: String,
    },
    /// Accept a session (writes its file; --push applies it at once).
    Accept(SessionRef),
    /// Put a session on hold (pending).
    Pend(SessionRef),
    /// Delete a session file.
    Delete(SessionRef),
    /// Show a session file (its path and JSON).
    Show {
        /// The app folder.
        folder: String,
        /// The session id.
        id: String,
    },
    /// Reload every session file into the running server (4D's Push).
    Push,
}

/// A session to change.
#[derive(Debug, Args)]
pub struct SessionRef {
    /// The app folder.
    pub folder: String,
    /// The session id.
    pub id: String,
    /// Push at once (otherwise run sessiond mobile push).
    #[arg(long)]
    pub push: bool,
}

/// `sessiond config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the settings and roles.json; print the effective settings.
    Check(ServeArgs),
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
    /// Session store: embedded, memory, redis://host:port/db or
    /// redis+cluster://host:port,host:port [default: embedded].
    #[arg(long, env = "SESSIOND_STORE")]
    pub store: Option<String>,
}

/// `sessiond user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user (or replace one) in <data>/users.json. The password (at least 8
    /// characters) is asked twice, hidden, on a terminal; scripts give it in
    /// SESSIOND_USER_PASSWORD or on the first line of standard input.
    Add {
        /// User name.
        name: String,
        /// A role granted at login (repeatable; see roles.json).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// A privilege granted at login (repeatable; see roles.json).
        #[arg(long = "privilege")]
        privileges: Vec<String>,
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// List the users with their roles and privileges.
    List {
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Remove a user.
    Remove {
        /// User name.
        name: String,
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Change a user's password (asked like for add), keeping its roles.
    Passwd {
        /// User name.
        name: String,
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
}

/// `sessiond admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the admin password (at least 8 characters): asked twice, hidden, on a
    /// terminal; else SESSIOND_ADMIN_PASSWORD or the first line of standard input.
    Password {
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
    /// Make a new service API key (the old one stops working) and print it once. A
    /// running server uses it after a restart.
    ApiKey {
        /// Data folder.
        #[arg(long, env = "SESSIOND_DATA", default_value = "data")]
        data: PathBuf,
    },
}
