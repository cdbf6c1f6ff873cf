//! [`CookieConfig`]: the session cookie's name and attributes, and the rule for an
//! application name (it becomes part of the cookie's name).

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
    /// [`SessionLayer::trust_proxy_headers`](crate::SessionLayer::trust_proxy_headers) — `X-Forwarded-Proto: https`.
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
