//! [`ServerConfig`]: the validated settings of the HTTP side (built by the binary
//! from flags, environment and `sessiond.toml`, or by an embedding application).

use std::time::Duration;

use sessiond_core::SessionPolicy;

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
pub enum SameSite {
    /// `Strict` (4D's default).
    #[default]
    Strict,
    /// `Lax`.
    Lax,
    /// `None` (requires `Secure`; browsers drop it over plain HTTP).
    None,
}

/// When the cookie carries `Secure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecureMode {
    /// On requests that arrived over TLS: an `https` request URI, or — only with
    /// [`ServerConfig::trust_proxy_headers`] — `X-Forwarded-Proto: https`.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The session cookie: `4DSID_<AppName>`, HttpOnly, `Path=/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// The cookie name (`4DSID_<AppName>`).
    pub name: String,
    /// `SameSite`.
    pub same_site: SameSite,
    /// `Secure`.
    pub secure: SecureMode,
    /// `Domain`, if any.
    pub domain: Option<String>,
}

impl CookieConfig {
    /// The cookie of application `app_name` (`4DSID_<app_name>`), 4D's defaults.
    pub fn for_app(app_name: &str) -> Self {
        Self {
            name: format!("4DSID_{app_name}"),
            same_site: SameSite::Strict,
            secure: SecureMode::Auto,
            domain: None,
        }
    }
}

/// Checks an application name: 1–64 characters from `A-Z a-z 0-9 _ - .` (it becomes
/// part of a cookie name).
pub fn validate_app_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        return Err(format!(
            "app name {name:?} must be 1 to 64 characters among A-Z a-z 0-9 _ - ."
        ));
    }
    Ok(())
}

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The application name (4D's project name).
    pub app_name: String,
    /// The session cookie.
    pub cookie: CookieConfig,
    /// Session rules.
    pub policy: SessionPolicy,
    /// Whether `X-Forwarded-For` / `X-Forwarded-Proto` from a reverse proxy are
    /// believed (default: no; the peer address is used).
    pub trust_proxy_headers: bool,
    /// Largest accepted request body, bytes.
    pub max_body_bytes: usize,
    /// How often the reaper frees expired sessions.
    pub reaper_interval: Duration,
    /// Connection timeouts and caps.
    pub limits: crate::serve::ConnectionLimits,
}

impl ServerConfig {
    /// Defaults for application `app_name`.
    pub fn new(app_name: &str) -> Result<Self, String> {
        validate_app_name(app_name)?;
        Ok(Self {
            app_name: app_name.to_string(),
            cookie: CookieConfig::for_app(app_name),
            policy: SessionPolicy::default(),
            trust_proxy_headers: false,
            max_body_bytes: 1024 * 1024,
            reaper_interval: Duration::from_secs(1),
            limits: crate::serve::ConnectionLimits::default(),
        })
    }
}
