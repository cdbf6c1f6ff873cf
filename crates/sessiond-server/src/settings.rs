//! The settings of a `sessiond serve` node: [`Settings`] is `sessiond.toml` as
//! written (every key optional, unknown keys refused); [`Settings::validate`] checks
//! every value and fills the defaults into a [`NodeConfig`], the typed settings of
//! each component ([`ServerConfig`], [`StoreConfig`], [`MobileSettings`],
//! [`DesktopConfig`], [`ConnectionLimits`]). The binary only lays its flags and
//! environment variables over the file ([`Settings::layer`]) before validating.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sessiond_core::{SessionPolicy, SetPrivilegesMode};
use sessiond_mobile::IdMode;
use sessiond_mobile::hook::{Decision, Matchers, Policy};
use sessiond_store::RedisConfig;

use crate::config::{SameSite, SecureMode, ServerConfig};
use crate::desktop::DesktopConfig;
use crate::login_hook::Callout;
use crate::serve::ConnectionLimits;

/// A setting refused by [`Settings::validate`] (or a file that cannot be read or
/// parsed), with the key and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// Returns a [`SettingsError`] from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(SettingsError(format!($($arg)*)))
    };
}

/// `sessiond.toml` as written. Every key is optional; unknown keys are refused. The
/// sections' keys are documented in the README (`sessiond init` writes them all,
/// commented, with their defaults).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on (default `127.0.0.1:8044`).
    pub listen: Option<SocketAddr>,
    /// Data folder (default `./data`).
    pub data: Option<PathBuf>,
    /// `roles.json` (default `<data>/roles.json` when it exists).
    pub roles: Option<PathBuf>,
    /// Application name: the cookie is `4DSID_<name>` (default `sessiond`).
    pub app_name: Option<String>,
    /// `embedded` (default), `memory`, `redis://…` or `redis+cluster://…`.
    pub store: Option<String>,
    store_timeout_ms: Option<u64>,
    near_cache_entries: Option<usize>,
    near_cache_staleness_ms: Option<u64>,
    node_name: Option<String>,
    trust_proxy_headers: Option<bool>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    cookie: CookieSection,
    #[serde(default)]
    sessions: SessionsSection,
    #[serde(default)]
    mobile: MobileSection,
    #[serde(default)]
    remote: RemoteSection,
    #[serde(default)]
    limits: LimitsSection,
}

/// `[limits]`: connection timeouts and caps.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    header_read_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    body_timeout_seconds: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    shutdown_grace_seconds: Option<u64>,
}

/// `[remote]`: remote-client sessions.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteSection {
    sleep_timeout_minutes: Option<u64>,
    postponed_timeout_minutes: Option<u64>,
    ping_interval_seconds: Option<u64>,
    ping_timeout_seconds: Option<u64>,
    max_frame_bytes: Option<usize>,
    max_calls_per_connection: Option<usize>,
    stored_procedures_user: Option<String>,
    client_builtins: Option<Vec<String>>,
}

/// `[mobile]`: 4D mobile apps.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MobileSection {
    ids: Option<IdMode>,
    policy: Option<Decision>,
    upstream: Option<String>,
    localhost_accept: Option<bool>,
    callout: Option<String>,
    callout_timeout_ms: Option<u64>,
    email: Option<EmailSection>,
    relogin_hook: Option<bool>,
    relogin_new_token: Option<bool>,
    max_field_bytes: Option<usize>,
    max_file_bytes: Option<usize>,
    new_devices_per_minute: Option<u32>,
    max_sessions_per_app: Option<usize>,
    watch: Option<bool>,
    upstream_timeout_ms: Option<u64>,
    upstream_max_body_bytes: Option<usize>,
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    allow: Matchers,
    #[serde(default)]
    deny: Matchers,
}

/// `[mobile.email]`: e-mail validation of pending sessions.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailSection {
    from: String,
    link_base: String,
    validity_minutes: Option<u64>,
    smtp: Option<String>,
    max_per_recipient_per_hour: Option<u32>,
    max_per_client_per_hour: Option<u32>,
}

/// The validated e-mail settings (the state file is placed by `serve`).
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Sender.
    pub from: sessiond_mobile::activation::Mailbox,
    /// Public base URL of the server.
    pub link_base: String,
    /// Link validity.
    pub validity: Duration,
    /// SMTP URL; `None` writes `.eml` files to `<data>/outbox`.
    pub smtp: Option<String>,
    /// Validation mails per recipient and hour.
    pub max_per_recipient: u32,
    /// Validation mails per client address and hour.
    pub max_per_client: u32,
}

/// The validated mobile settings.
#[derive(Debug, Clone)]
pub struct MobileSettings {
    /// How new session ids are made.
    pub ids: IdMode,
    /// The authentication policy.
    pub policy: Policy,
    /// Where authorized data requests go.
    pub upstream: Option<http::Uri>,
    /// Accept loopback peers without the hook.
    pub localhost_accept: bool,
    /// The user's authentication service, if any.
    pub callout: Option<Callout>,
    /// E-mail validation, if configured.
    pub email: Option<EmailSettings>,
    /// What a login of an accepted device does.
    pub relogin: sessiond_mobile::apps::Relogin,
    /// What an anonymous login may cost.
    pub limits: sessiond_mobile::apps::MobileLimits,
    /// A refresh looks only at the files with an event since the last one.
    pub watch: bool,
    /// Limits of forwarded requests.
    pub forward: crate::routes::mobile::ForwardLimits,
    /// Certificates trusted beside the Mozilla roots by the callout and the upstream
    /// over `https://` (`tls_ca_file`).
    pub tls_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CookieSection {
    same_site: Option<SameSite>,
    secure: Option<SecureMode>,
    domain: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionsSection {
    idle_timeout_minutes: Option<u32>,
    min_idle_timeout_minutes: Option<u32>,
    absolute_lifetime_minutes: Option<u64>,
    set_privileges: Option<SetPrivilegesMode>,
    split_roles_on_commas: Option<bool>,
    clear_privileges_keeps_user_name: Option<bool>,
    token_grace_seconds: Option<u64>,
    max_tokens_per_session: Option<usize>,
    otp_min_lifespan_seconds: Option<u64>,
    stored_procedure_otp: Option<bool>,
    max_storage_bytes: Option<usize>,
    max_storage_depth: Option<usize>,
    lazy_guests: Option<bool>,
}

/// Where sessions are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// In memory (volatile).
    Memory,
    /// In `<data>/sessions.redb` (the default): survives restarts.
    Embedded,
    /// In Redis or a Redis Cluster, shared by several nodes.
    Redis(RedisConfig),
}

/// The validated settings of a `sessiond serve` node, one typed part per component.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data folder.
    pub data: PathBuf,
    /// roles.json, if any.
    pub roles: Option<PathBuf>,
    /// Session store.
    pub store: StoreConfig,
    /// HTTP-side settings (cookie, session policy, connection limits).
    pub server: ServerConfig,
    /// Mobile apps.
    pub mobile: MobileSettings,
    /// This node's name among several sharing a Redis store.
    pub node: String,
    /// Remote-client sessions.
    pub remote: DesktopConfig,
}

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8044";

impl Settings {
    /// Reads and parses a `sessiond.toml`.
    pub fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SettingsError(format!("cannot read config file {}: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|SettingsError(e)| {
            SettingsError(format!("config file {}: {e}", path.display()))
        })
    }

    /// Parses the text of a `sessiond.toml`.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        toml::from_str(text).map_err(|e| SettingsError(e.to_string()))
    }

    /// Lays the values of `over` (flags, environment) over these: each key `over`
    /// sets wins.
    #[must_use]
    pub fn layer(mut self, over: Layer) -> Self {
        self.listen = over.listen.or(self.listen);
        self.data = over.data.or(self.data);
        self.roles = over.roles.or(self.roles);
        self.app_name = over.app_name.or(self.app_name);
        self.store = over.store.or(self.store);
        self
    }

    /// Checks every value and fills in the defaults.
    pub fn validate(self) -> Result<NodeConfig, SettingsError> {
        let file = self;
        let store = store_choice(file.store.as_deref(), &file)?;
        let listen = file
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let data = file.data.unwrap_or_else(|| PathBuf::from("./data"));
        let roles = match file.roles {
            Some(p) => Some(p),
            None => Some(data.join("roles.json")).filter(|p| p.exists()),
        };
        let app_name = file.app_name.unwrap_or_else(|| "sessiond".into());
        let mut server = ServerConfig::new(&app_name).map_err(SettingsError)?;
        if let Some(v) = file.trust_proxy_headers {
            server.trust_proxy_headers = v;
        }
        if let Some(v) = file.max_body_bytes {
            if v < 1024 {
                bail!("max_body_bytes must be at least 1024");
            }
            server.max_body_bytes = v;
        }
        server.cookie = cookie(file.cookie, server.cookie)?;
        server.policy = policy(&file.sessions)?;
        // Several nodes on one Redis store guests at once (one Redis write): a guest
        // not stored is reachable by id only on the node that issued it.
        server.policy.lazy_guests = file
            .sessions
            .lazy_guests
            .unwrap_or(!matches!(store, StoreConfig::Redis(_)));
        server.limits = limits(&file.limits)?;
        let node = match file.node_name {
            Some(n)
                if !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                n
            }
            Some(n) => bail!("node_name {n:?} must be 1 to 64 printable characters without spaces"),
            None => default_node_name(listen),
        };
        let mobile = mobile(file.mobile)?;
        if mobile.localhost_accept && server.trust_proxy_headers {
            bail!(
                "mobile.localhost_accept cannot be used with trust_proxy_headers: behind a proxy every client would look local"
            );
        }
        let remote = remote(&file.remote)?;
        Ok(NodeConfig {
            listen,
            data,
            roles,
            store,
            server,
            mobile,
            node,
            remote,
        })
    }
}

/// What the command line (flags and their environment variables) may set over
/// the file, for [`Settings::layer`].
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data`.
    pub data: Option<PathBuf>,
    /// `--roles`.
    pub roles: Option<PathBuf>,
    /// `--app-name`.
    pub app_name: Option<String>,
    /// `--store`.
    pub store: Option<String>,
}

fn store_choice(choice: Option<&str>, file: &Settings) -> Result<StoreConfig, SettingsError> {
    Ok(match choice.unwrap_or("embedded") {
        "memory" => StoreConfig::Memory,
        "embedded" => StoreConfig::Embedded,
        url if url.starts_with("redis") => {
            let mut redis = RedisConfig::new(url);
            if let Some(ms) = file.store_timeout_ms {
                redis.timeout = Duration::from_millis(ms);
            }
            if let Some(n) = file.near_cache_entries {
                redis.near_cache.entries = n;
            }
            if let Some(ms) = file.near_cache_staleness_ms {
                redis.near_cache.staleness = Duration::from_millis(ms);
            }
            redis.validate().map_err(SettingsError)?;
            StoreConfig::Redis(redis)
        }
        other => bail!(
            "unknown store {other:?}: use \"embedded\" (default), \"memory\", redis://host:port/db or redis+cluster://host:port,host:port"
        ),
    })
}

fn cookie(
    c: CookieSection,
    mut cookie: crate::CookieConfig,
) -> Result<crate::CookieConfig, SettingsError> {
    cookie.same_site = c.same_site.unwrap_or_default();
    cookie.secure = c.secure.unwrap_or_default();
    if cookie.same_site == SameSite::None && cookie.secure == SecureMode::Never {
        bail!("cookie.same_site = \"None\" needs a Secure cookie: browsers drop it otherwise");
    }
    if let Some(d) = c.domain {
        if d.is_empty()
            || !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
        {
            bail!("cookie.domain {d:?} is not a domain name");
        }
        cookie.domain = Some(d);
    }
    Ok(cookie)
}

/// `<host name>-<port>`: stable across restarts (so a restarted node finds and removes
/// the remote sessions it left in Redis) and distinct for several nodes on one host.
/// With an ephemeral port (0), a random name.
fn default_node_name(listen: SocketAddr) -> String {
    if listen.port() == 0 {
        return sessiond_core::id::to_hex(&sessiond_core::id::random_bytes::<4>());
    }
    let host: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .filter(char::is_ascii_graphic)
        .take(50)
        .collect();
    format!("{host}-{}", listen.port())
}

fn http_url(key: &str, u: &str) -> Result<http::Uri, SettingsError> {
    let uri: http::Uri = u
        .parse()
        .map_err(|e| SettingsError(format!("mobile.{key} {u:?}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.authority().is_none()
        || uri.query().is_some()
    {
        bail!("mobile.{key} {u:?} must be an http(s)://host:port/path URL");
    }
    Ok(uri)
}

fn remote(r: &RemoteSection) -> Result<DesktopConfig, SettingsError> {
    let mut c = DesktopConfig::default();
    let minutes = |key: &str, v: Option<u64>, default: Duration| match v {
        None => Ok(default),
        Some(m @ 1..=525_600) => Ok(Duration::from_secs(m * 60)),
        Some(_) => bail!("remote.{key} must be 1 to 525600 (a year)"),
    };
    c.sleep_timeout = minutes(
        "sleep_timeout_minutes",
        r.sleep_timeout_minutes,
        c.sleep_timeout,
    )?;
    c.postponed_timeout = minutes(
        "postponed_timeout_minutes",
        r.postponed_timeout_minutes,
        c.postponed_timeout,
    )?;
    if let Some(s) = r.ping_interval_seconds {
        if !(1..=3600).contains(&s) {
            bail!("remote.ping_interval_seconds must be 1 to 3600");
        }
        c.ping_interval = Duration::from_secs(s);
    }
    if let Some(s) = r.ping_timeout_seconds {
        c.ping_timeout = Duration::from_secs(s);
    }
    if c.ping_timeout <= c.ping_interval {
        bail!("remote.ping_timeout_seconds must be longer than the ping interval");
    }
    if let Some(n) = r.max_frame_bytes {
        if !(1024..=64 << 20).contains(&n) {
            bail!("remote.max_frame_bytes must be 1024 to 67108864");
        }
        c.max_frame_bytes = n;
    }
    if let Some(n) = r.max_calls_per_connection {
        if !(1..=10_000).contains(&n) {
            bail!("remote.max_calls_per_connection must be 1 to 10000");
        }
        c.max_calls_per_connection = n;
    }
    if let Some(u) = &r.stored_procedures_user {
        if u.len() > 255 || u.chars().any(char::is_control) {
            bail!("remote.stored_procedures_user: at most 255 printable characters");
        }
        c.stored_procedures_user.clone_from(u);
    }
    if let Some(names) = &r.client_builtins {
        use crate::desktop::functions::BUILTINS;
        if let Some(n) = names.iter().find(|n| !BUILTINS.contains(&n.as_str())) {
            bail!(
                "remote.client_builtins: {n:?} is not a built-in function ({})",
                BUILTINS.join(", ")
            );
        }
        c.client_builtins.clone_from(names);
    }
    Ok(c)
}

fn mobile(m: MobileSection) -> Result<MobileSettings, SettingsError> {
    let upstream = m
        .upstream
        .as_deref()
        .map(|u| http_url("upstream", u))
        .transpose()?;
    let timeout = Duration::from_millis(m.callout_timeout_ms.unwrap_or(5000));
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        bail!("mobile.callout_timeout_ms must be 1 to 60000");
    }
    let callout = m
        .callout
        .as_deref()
        .map(|u| http_url("callout", u))
        .transpose()?
        .map(|url| Callout { url, timeout });
    let defaults = sessiond_mobile::apps::MobileLimits::default();
    let within = |key: &str,
                  v: Option<usize>,
                  range: std::ops::RangeInclusive<usize>,
                  default: usize| match v {
        None => Ok(default),
        Some(n) if range.contains(&n) => Ok(n),
        Some(_) => bail!("mobile.{key} must be {} to {}", range.start(), range.end()),
    };
    let limits = sessiond_mobile::apps::MobileLimits {
        max_field_bytes: within(
            "max_field_bytes",
            m.max_field_bytes,
            256..=1 << 20,
            defaults.max_field_bytes,
        )?,
        max_file_bytes: within(
            "max_file_bytes",
            m.max_file_bytes,
            1024..=16 << 20,
            defaults.max_file_bytes,
        )?,
        new_devices_per_minute: u32::try_from(within(
            "new_devices_per_minute",
            m.new_devices_per_minute.map(|n| n as usize),
            1..=1_000_000,
            defaults.new_devices_per_minute as usize,
        )?)
        .expect("bounded"),
        max_sessions_per_app: within(
            "max_sessions_per_app",
            m.max_sessions_per_app,
            1..=100_000_000,
            defaults.max_sessions_per_app,
        )?,
    };
    let mut forward = crate::routes::mobile::ForwardLimits::default();
    if let Some(ms) = m.upstream_timeout_ms {
        if !(1..=600_000).contains(&ms) {
            bail!("mobile.upstream_timeout_ms must be 1 to 600000");
        }
        forward.timeout = Duration::from_millis(ms);
    }
    forward.max_body_bytes = within(
        "upstream_max_body_bytes",
        m.upstream_max_body_bytes,
        1024..=1 << 30,
        forward.max_body_bytes,
    )?;
    let relogin = sessiond_mobile::apps::Relogin {
        hook: m.relogin_hook.unwrap_or(true),
        new_token: m.relogin_new_token.unwrap_or(true),
    };
    let tls_roots = match &m.tls_ca_file {
        Some(path) => crate::outbound::load_roots(path)
            .map_err(|e| SettingsError(format!("mobile.tls_ca_file: {e}")))?,
        None => Vec::new(),
    };
    Ok(MobileSettings {
        ids: m.ids.unwrap_or_default(),
        policy: Policy {
            default: m.policy.unwrap_or_default(),
            allow: m.allow,
            deny: m.deny,
        },
        upstream,
        localhost_accept: m.localhost_accept.unwrap_or(false),
        watch: m.watch.unwrap_or(true),
        callout,
        email: m.email.map(email).transpose()?,
        relogin,
        limits,
        forward,
        tls_roots,
    })
}

fn email(e: EmailSection) -> Result<EmailSettings, SettingsError> {
    let from = e
        .from
        .parse()
        .map_err(|err| SettingsError(format!("mobile.email.from {:?}: {err}", e.from)))?;
    let base: http::Uri = e
        .link_base
        .parse()
        .map_err(|err| SettingsError(format!("mobile.email.link_base: {err}")))?;
    if !matches!(base.scheme_str(), Some("http" | "https")) || base.authority().is_none() {
        bail!(
            "mobile.email.link_base {:?} must be an http(s) URL",
            e.link_base
        );
    }
    let minutes = e.validity_minutes.unwrap_or(5);
    if !(1..=1440).contains(&minutes) {
        bail!("mobile.email.validity_minutes must be 1 to 1440");
    }
    if let Some(url) = &e.smtp
        && !(url.starts_with("smtp://") || url.starts_with("smtps://"))
    {
        bail!("mobile.email.smtp must be an smtp:// or smtps:// URL");
    }
    let per_hour = |key: &str, v: Option<u32>, default: u32| match v {
        None => Ok(default),
        Some(n @ 1..=10_000) => Ok(n),
        Some(_) => bail!("mobile.email.{key} must be 1 to 10000"),
    };
    Ok(EmailSettings {
        from,
        link_base: e.link_base,
        validity: Duration::from_secs(minutes * 60),
        smtp: e.smtp,
        max_per_recipient: per_hour(
            "max_per_recipient_per_hour",
            e.max_per_recipient_per_hour,
            3,
        )?,
        max_per_client: per_hour("max_per_client_per_hour", e.max_per_client_per_hour, 10)?,
    })
}

fn limits(l: &LimitsSection) -> Result<ConnectionLimits, SettingsError> {
    let mut c = ConnectionLimits::default();
    let seconds = |key: &str, v: Option<u64>, default: Duration| match v {
        None => Ok(default),
        Some(s @ 1..=3600) => Ok(Duration::from_secs(s)),
        Some(_) => bail!("limits.{key} must be 1 to 3600"),
    };
    c.header_read_timeout = seconds(
        "header_read_timeout_seconds",
        l.header_read_timeout_seconds,
        c.header_read_timeout,
    )?;
    c.idle_timeout = seconds(
        "idle_timeout_seconds",
        l.idle_timeout_seconds,
        c.idle_timeout,
    )?;
    c.body_timeout = seconds(
        "body_timeout_seconds",
        l.body_timeout_seconds,
        c.body_timeout,
    )?;
    c.shutdown_grace = match l.shutdown_grace_seconds {
        None => c.shutdown_grace,
        Some(s @ 0..=3600) => Duration::from_secs(s),
        Some(_) => bail!("limits.shutdown_grace_seconds must be 0 to 3600"),
    };
    if let Some(n) = l.max_connections {
        if !(16..=1_000_000).contains(&n) {
            bail!("limits.max_connections must be 16 to 1000000");
        }
        c.max_connections = n;
    }
    if let Some(n) = l.max_connections_per_address {
        if !(1..=1_000_000).contains(&n) {
            bail!("limits.max_connections_per_address must be 1 to 1000000");
        }
        c.max_connections_per_address = n;
    }
    Ok(c)
}

fn policy(s: &SessionsSection) -> Result<SessionPolicy, SettingsError> {
    let mut p = SessionPolicy::default();
    if let Some(v) = s.min_idle_timeout_minutes {
        if v == 0 {
            bail!("sessions.min_idle_timeout_minutes must be at least 1");
        }
        p.min_idle_timeout_minutes = v;
    }
    if let Some(v) = s.idle_timeout_minutes {
        p.default_idle_timeout_minutes = v;
    }
    p.default_idle_timeout_minutes = p
        .default_idle_timeout_minutes
        .clamp(p.min_idle_timeout_minutes, p.max_idle_timeout_minutes);
    if let Some(v) = s.absolute_lifetime_minutes {
        p.absolute_lifetime = (v > 0).then(|| Duration::from_secs(v * 60));
    }
    if let Some(v) = s.set_privileges {
        p.set_privileges_mode = v;
    }
    if let Some(v) = s.split_roles_on_commas {
        p.split_roles_on_commas = v;
    }
    if let Some(v) = s.clear_privileges_keeps_user_name {
        p.clear_privileges_keeps_user_name = v;
    }
    if let Some(v) = s.token_grace_seconds {
        if v > 3600 {
            bail!("sessions.token_grace_seconds must be at most 3600");
        }
        p.token_grace = Duration::from_secs(v);
    }
    if let Some(v) = s.max_tokens_per_session {
        if !(2..=1024).contains(&v) {
            bail!("sessions.max_tokens_per_session must be 2 to 1024");
        }
        p.max_tokens_per_session = v;
    }
    if let Some(v) = s.otp_min_lifespan_seconds {
        p.otp_min_lifespan = Duration::from_secs(v.max(1));
    }
    if let Some(v) = s.stored_procedure_otp {
        p.stored_procedure_otp = v;
    }
    if let Some(v) = s.max_storage_bytes {
        if !(1024..=64 << 20).contains(&v) {
            bail!("sessions.max_storage_bytes must be 1024 to 67108864");
        }
        p.max_storage_bytes = v;
    }
    if let Some(v) = s.max_storage_depth {
        if !(1..=sessiond_core::MAX_STORAGE_DEPTH).contains(&v) {
            bail!(
                "sessions.max_storage_depth must be 1 to {}",
                sessiond_core::MAX_STORAGE_DEPTH
            );
        }
        p.max_storage_depth = v;
    }
    Ok(p)
}
