//! The commands that set a server up on its own machine: `init`, `user …`,
//! `admin …`, and how they read passwords (hidden and confirmed on a terminal; from
//! an environment variable or the first line of standard input in scripts).

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;

use anyhow::Context as _;
use sessiond_core::Roles;
use sessiond_server::credentials::Credentials;
use sessiond_server::users::{Users, check_password};
use sessiond_store::fs::{atomic_write, private_dir};

use crate::cli::{AdminCommand, UserCommand};

/// The `sessiond.toml` `init` writes: every key, commented out, at its default.
pub const EXAMPLE_TOML: &str = include_str!("sessiond.example.toml");
/// The `roles.json` `init` writes.
pub const EXAMPLE_ROLES: &str = include_str!("roles.example.json");

/// `sessiond init`: a commented `./sessiond.toml` and a starter `<data>/roles.json`,
/// each only when missing.
pub fn init(data: &Path) -> anyhow::Result<()> {
    private_dir(data).with_context(|| format!("cannot create {}", data.display()))?;
    for (path, content) in [
        (Path::new("sessiond.toml").to_path_buf(), EXAMPLE_TOML),
        (data.join("roles.json"), EXAMPLE_ROLES),
    ] {
        if path.exists() {
            println!("kept {} (it exists)", path.display());
        } else {
            atomic_write(&path, content.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

/// `sessiond user …`.
pub fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            roles,
            privileges,
            data,
        } => {
            warn_unknown_names(&data, &roles, &privileges);
            let password = new_password("SESSIOND_USER_PASSWORD")?;
            private_dir(&data)?;
            let file = data.join("users.json");
            Users::add(&file, &name, &password, roles, privileges)?;
            println!("user {name:?} saved in {}", file.display());
        }
        UserCommand::List { data } => {
            let users = Users::load(&data.join("users.json"))?;
            if users.users.is_empty() {
                println!("no users in {}", data.join("users.json").display());
            }
            for u in users.users {
                println!(
                    "{}\troles: {}\tprivileges: {}",
                    u.user_name,
                    list(&u.roles),
                    list(&u.privileges)
                );
            }
        }
        UserCommand::Remove { name, data } => {
            anyhow::ensure!(
                Users::remove(&data.join("users.json"), &name)?,
                "no user {name:?}"
            );
            println!("user {name:?} removed");
        }
        UserCommand::Passwd { name, data } => {
            let file = data.join("users.json");
            anyhow::ensure!(
                Users::load(&file)?
                    .users
                    .iter()
                    .any(|u| u.user_name == name),
                "no user {name:?}"
            );
            let password = new_password("SESSIOND_USER_PASSWORD")?;
            Users::set_password(&file, &name, &password)?;
            println!("password of {name:?} changed");
        }
    }
    Ok(())
}

/// `sessiond admin …`.
pub fn admin(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Password { data } => {
            let password = new_password("SESSIOND_ADMIN_PASSWORD")?;
            Credentials::set_admin_password(&data, &password)?;
            println!("admin password changed");
        }
        AdminCommand::ApiKey { data } => {
            let key = Credentials::new_api_key(&data)?;
            println!("New service API key (shown once; restart the server to use it):\n  {key}");
        }
    }
    Ok(())
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "-".into()
    } else {
        names.join(", ")
    }
}

/// Warns (standard error) about roles and privileges that `<data>/roles.json` does not
/// declare: a login would grant nothing for them.
fn warn_unknown_names(data: &Path, roles: &[String], privileges: &[String]) {
    if roles.is_empty() && privileges.is_empty() {
        return;
    }
    let file = data.join("roles.json");
    if !file.exists() {
        eprintln!(
            "warning: there is no {}: roles and privileges grant nothing until it declares them (sessiond init writes a starter)",
            file.display()
        );
        return;
    }
    match Roles::load(&file) {
        Ok(declared) => {
            for name in declared.resolve(roles, privileges).unknown {
                eprintln!(
                    "warning: {name:?} is not declared in {}: it grants nothing",
                    file.display()
                );
            }
        }
        Err(e) => eprintln!("warning: {e}"),
    }
}

/// A new password: from `var`, else asked twice with hidden input on a terminal,
/// else the first line of standard input. It must follow the password rule.
pub fn new_password(var: &str) -> anyhow::Result<String> {
    let password = if let Ok(v) = std::env::var(var) {
        v
    } else if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password (at least 8 characters): ")?;
        check_password(&first)?;
        let again = rpassword::prompt_password("Password again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        first
    } else {
        first_line()?
    };
    check_password(&password)?;
    Ok(password)
}

/// A secret from `var`, else asked with hidden input on a terminal, else the first
/// line of standard input.
pub fn secret(var: &str, prompt: &str) -> anyhow::Result<String> {
    if let Ok(v) = std::env::var(var) {
        return Ok(v);
    }
    if std::io::stdin().is_terminal() {
        return Ok(rpassword::prompt_password(prompt)?);
    }
    first_line()
}

fn first_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
