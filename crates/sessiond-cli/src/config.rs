//! The command line's part of the configuration: which file to read, and the flags
//! (with their environment variables) laid over it. Parsing, checks and defaults are
//! the library's ([`sessiond_server::settings`]).

use std::path::Path;

use sessiond_core::Roles;
use sessiond_server::settings::{Layer, NodeConfig, Settings, SettingsError, StoreConfig};

use crate::cli::ServeArgs;

/// The file `args` names, else `./sessiond.toml` when it exists, else nothing.
pub fn settings(args: &ServeArgs) -> Result<Settings, SettingsError> {
    let file = match &args.config {
        Some(path) => Settings::read(path)?,
        None if Path::new("sessiond.toml").exists() => Settings::read(Path::new("sessiond.toml"))?,
        None => Settings::default(),
    };
    Ok(file.layer(Layer {
        listen: args.listen,
        data: args.data.clone(),
        roles: args.roles.clone(),
        app_name: args.app_name.clone(),
        store: args.store.clone(),
    }))
}

/// The validated configuration of `sessiond serve`: flag > environment > file >
/// default.
pub fn from_args(args: &ServeArgs) -> Result<NodeConfig, SettingsError> {
    settings(args)?.validate()
}

/// `sessiond config check`: validates what `serve` would use and prints the
/// effective settings (no secret: a Redis URL is shown without its credentials).
pub fn check(args: &ServeArgs) -> anyhow::Result<()> {
    let config = from_args(args)?;
    let roles =
        match &config.roles {
            Some(path) => Some(Roles::load(path).map_err(|e| {
                anyhow::anyhow!("roles.json is invalid; serve would not start: {e}")
            })?),
            None => None,
        };
    let store = match &config.store {
        StoreConfig::Memory => "memory".to_string(),
        StoreConfig::Embedded => {
            format!("embedded ({})", config.data.join("sessions.redb").display())
        }
        StoreConfig::Redis(redis) => format!("redis ({})", redis.redacted_url()),
    };
    let s = &config.server;
    println!("configuration valid");
    println!("  listen: {}", config.listen);
    println!("  data: {}", config.data.display());
    println!("  store: {store}");
    println!("  app_name: {} (cookie {})", s.app_name, s.cookie.name);
    println!("  node_name: {}", config.node);
    match (&config.roles, &roles) {
        (Some(path), Some(roles)) => {
            println!("  roles: {}", path.display());
            for w in roles.warnings() {
                println!("  warning: roles.json: {w}");
            }
        }
        _ => println!("  roles: none (only the built-in WebAdmin)"),
    }
    println!(
        "  sessions: idle timeout {} min, lazy guests {}",
        s.policy.default_idle_timeout_minutes, s.policy.lazy_guests
    );
    println!(
        "  mobile: ids {:?}, upstream {}, callout {}, e-mail validation {}, {} extra trusted certificate(s)",
        config.mobile.ids,
        config
            .mobile
            .upstream
            .as_ref()
            .map_or("none".into(), ToString::to_string),
        config
            .mobile
            .callout
            .as_ref()
            .map_or("none".into(), |c| c.url.to_string()),
        if config.mobile.email.is_some() {
            "on"
        } else {
            "off"
        },
        config.mobile.tls_roots.len(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sessiond_core::SessionPolicy;
    use sessiond_server::settings::{DEFAULT_LISTEN, StoreConfig};

    use super::*;

    #[test]
    fn defaults_without_flags_or_file() {
        let dir = std::env::temp_dir();
        let args = ServeArgs {
            data: Some(dir.join("sessiond-config-test-data")),
            ..ServeArgs::default()
        };
        let c = from_args(&args).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.app_name, "sessiond");
        assert_eq!(c.server.cookie.name, "4DSID_sessiond");
        assert_eq!(c.store, StoreConfig::Embedded);
        assert_eq!(c.server.policy, SessionPolicy::default());
    }

    /// `sessiond init`'s sessiond.toml shows the defaults: with every setting line
    /// uncommented (but the examples that have no default), the config is the default.
    #[test]
    fn the_example_config_shows_the_defaults() {
        let examples = ["roles", "domain", "upstream", "callout", "tls_ca_file"];
        let text: String = crate::setup::EXAMPLE_TOML
            .lines()
            .map(|line| {
                let setting = line.strip_prefix("# ").filter(|rest| {
                    rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                            && !examples.contains(&key)
                    })
                });
                setting.unwrap_or(line)
            })
            .collect::<Vec<_>>()
            .join("\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessiond.toml");
        std::fs::write(&path, &text).unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let c = from_args(&args).unwrap();
        let d = from_args(&ServeArgs {
            data: Some(PathBuf::from("./data")),
            ..ServeArgs::default()
        })
        .unwrap();
        assert!(text.contains("\nlisten = "), "uncommented: {text}");
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.data, d.data);
        assert_eq!(c.store, d.store);
        assert_eq!(c.server.policy, d.server.policy);
        assert_eq!(c.server.limits, d.server.limits);
        assert_eq!(c.server.cookie, d.server.cookie);
        assert_eq!(c.server.max_body_bytes, d.server.max_body_bytes);
        assert_eq!(c.mobile.limits, d.mobile.limits);
        assert_eq!(c.mobile.relogin, d.mobile.relogin);
        assert_eq!(c.mobile.forward, d.mobile.forward);
        assert_eq!(c.mobile.ids, d.mobile.ids);
        assert_eq!(format!("{:?}", c.remote), format!("{:?}", d.remote));
    }
}
