//! [`ServerConfig`]: the validated settings of the HTTP side (built by the binary
//! from flags, environment and `sessiond.toml`, or by an embedding application).

use std::time::Duration;

use sessiond::config::validate_app_name;
pub use sessiond::{CookieConfig, SameSite, SecureMode};
use sessiond_core::SessionPolicy;

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
