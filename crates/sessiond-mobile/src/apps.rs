//! [`MobileSessions`]: the mobile sessions in memory, the files under
//! `<data>/MobileApps/`, and the flows of the `/mobileapp/` protocol (authenticate,
//! authorize a Bearer token, logout, `$userInfo`) and of refresh (spec §3.7).
//!
//! As in 4D, the files are read at start and at each refresh; edits made on disk
//! take effect only then. Every mobile session owns a web [`sessiond_store::Sessions`]
//! session (its privileges, userName, storage); the link and the privileges are kept
//! in a sidecar `<id>.sessiond.json` beside the session file (4D's tools skip files
//! with an extension), so they survive a restart.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value, json};
use sessiond_core::{PrivilegeInput, SessionId, SessionRecord, Timestamp};
use sessiond_store::fs::{atomic_write, private_dir};
use sessiond_store::{Requester, Sessions, SessionsError, Snapshot, StoreError};
use subtle::ConstantTimeEq;

use crate::activation::{Activations, EmailError, Requested};
use crate::file::{
    FileError, SessionFile, Status, check_path_part, folder_name, is_session_file_name,
};
use crate::hook::{AuthHook, HookResult};
use crate::token::{self, IdMode};

/// Settings of the mobile module.
#[derive(Debug, Clone)]
pub struct MobileConfig {
    /// The `MobileApps` folder.
    pub root: PathBuf,
    /// How new session ids are made.
    pub ids: IdMode,
    /// Accept logins from a loopback peer without the hook (4D's developer
    /// convenience; off by default, judged from the socket's peer address only).
    pub localhost_accept: bool,
    /// What a login of a device that is already accepted does.
    pub relogin: Relogin,
    /// What an anonymous login may cost.
    pub limits: MobileLimits,
}

impl MobileConfig {
    /// Defaults for the `MobileApps` folder `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            ids: IdMode::default(),
            localhost_accept: false,
            relogin: Relogin::default(),
            limits: MobileLimits::default(),
        }
    }
}

/// The login of a device already accepted (a device id is not a secret: simulator
/// UDIDs and `ANDROID_ID`s leak).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relogin {
    /// Run the hook again (4D: the token comes back without it). Default: yes.
    pub hook: bool,
    /// With random ids, a new session id — so a new token — at each accepted login,
    /// retiring the previous one (its storage and privileges carry over). 4D ids are
    /// derived from the device, so their token cannot change. Default: yes.
    pub new_token: bool,
}

impl Default for Relogin {
    fn default() -> Self {
        Self {
            hook: true,
            new_token: true,
        }
    }
}

/// What an anonymous `$authenticate` may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MobileLimits {
    /// Largest value of one field of the login body (`device`, `application`,
    /// `language`, `parameters`, …), as JSON bytes (400 past it). Default 4 KiB.
    pub max_field_bytes: usize,
    /// Largest session file (413 past it). Default 16 KiB.
    pub max_file_bytes: usize,
    /// Logins of new devices per client address and minute (429 past it).
    /// Default 60.
    pub new_devices_per_minute: u32,
    /// Sessions of one app folder (429 past it). Default 100,000.
    pub max_sessions_per_app: usize,
}

impl Default for MobileLimits {
    fn default() -> Self {
        Self {
            max_field_bytes: 4096,
            max_file_bytes: 16 * 1024,
            new_devices_per_minute: 60,
            max_sessions_per_app: 100_000,
        }
    }
}

/// Errors of mobile operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MobileError {
    /// The request is not acceptable; nothing was written.
    #[error("{0}")]
    BadRequest(String),
    /// A file could not be written or read.
    #[error("mobile session file: {0}")]
    Io(#[from] std::io::Error),
    /// The web session could not be set up.
    #[error(transparent)]
    Sessions(#[from] SessionsError),
    /// No such session.
    #[error("no such mobile session")]
    NotFound,
    /// What the login would store is over a limit.
    #[error("{0}")]
    TooLarge(String),
    /// Too many logins or sessions: retry after the duration.
    #[error("{message}")]
    TooMany {
        /// What was exceeded.
        message: String,
        /// When to retry.
        retry_after: std::time::Duration,
    },
}

/// The answer to a login.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthAnswer {
    /// Accepted: the token to use as Bearer.
    Accepted {
        /// `session.id`.
        id: String,
        /// The Bearer token.
        token: String,
        /// Text for the app.
        status_text: String,
        /// `userInfo`.
        user_info: Map<String, Value>,
    },
    /// Pending validation: no token.
    Pending {
        /// `session.id`.
        id: String,
        /// Text for the app.
        status_text: String,
    },
    /// Refused.
    Refused {
        /// Text for the app.
        status_text: String,
    },
}

/// A request authorized by its Bearer token.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// The app folder.
    pub folder: String,
    /// `session.id`.
    pub id: String,
    /// `application.id`.
    pub app_id: String,
    /// `email`.
    pub email: String,
    /// `userInfo` given by the hook.
    pub user_info: Map<String, Value>,
    /// The token as stored (what `$verify` answers, byte for byte).
    pub token: String,
    /// The device (its lock).
    device_id: String,
    /// The session's web `Session`.
    pub web: Snapshot,
}

/// One file that could not be loaded by a refresh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefreshError {
    /// The file, relative to the `MobileApps` folder.
    pub file: String,
    /// The `mobi` error number (1–4).
    pub code: u8,
    /// What is wrong.
    pub message: String,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RefreshReport {
    /// Sessions loaded from new files.
    pub loaded: usize,
    /// Sessions updated from modified files.
    pub updated: usize,
    /// Sessions whose file did not change.
    pub unchanged: usize,
    /// Of those, the files not even read: same size, modification and change times and
    /// inode (and the same for the sidecar) as at the previous refresh.
    pub skipped: usize,
    /// Sessions removed from memory (file deleted or invalid).
    pub evicted: usize,
    /// Files that could not be used.
    pub errors: Vec<RefreshError>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sidecar {
    web_session: Option<SessionId>,
    #[serde(default)]
    user_info: Map<String, Value>,
    #[serde(default)]
    privileges: Vec<String>,
    #[serde(default)]
    user_name: String,
}

#[derive(Debug, Clone)]
struct Entry {
    file: SessionFile,
    side: Sidecar,
}

type Key = (String, String);

#[derive(Default)]
struct Index {
    entries: HashMap<Key, Entry>,
    /// (folder, device id) → session id: the user agent of spec §2.1.
    agents: HashMap<Key, String>,
    /// Sessions per app folder.
    per_folder: HashMap<String, usize>,
}

impl Index {
    fn insert(&mut self, folder: &str, entry: Entry) {
        if !entry.file.device_id.is_empty() {
            self.agents.insert(
                (folder.to_string(), entry.file.device_id.clone()),
                entry.file.id.clone(),
            );
        }
        let replaced = self
            .entries
            .insert((folder.to_string(), entry.file.id.clone()), entry);
        if replaced.is_none() {
            *self.per_folder.entry(folder.to_string()).or_default() += 1;
        }
    }

    /// The session of a user agent (folder, device id).
    fn of_agent(&self, agent: &Key) -> Option<Entry> {
        let id = self.agents.get(agent)?;
        self.entries.get(&(agent.0.clone(), id.clone())).cloned()
    }

    /// How many sessions an app folder has in memory.
    fn in_folder(&self, folder: &str) -> usize {
        self.per_folder.get(folder).copied().unwrap_or(0)
    }

    fn remove(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        if let Some(n) = self.per_folder.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_folder.remove(&key.0);
            }
        }
        let agent = (key.0.clone(), entry.file.device_id.clone());
        if self.agents.get(&agent) == Some(&key.1) {
            self.agents.remove(&agent);
        }
        Some(entry)
    }
}

/// Stripes of the per-device locks.
const DEVICE_LOCKS: usize = 256;

/// The mobile sessions of a server.
///
/// Concurrency: the changes of one device — logins, `$logout`, `$userInfo`, admin
/// edits — are serialized by that device's lock (striped), so two logins of one device
/// still make one session; changes of different devices run in parallel. The hook,
/// its HTTP callout and the validation mail run outside every lock. A Push takes the
/// refresh gate for writing: it waits for device writes in progress (file writes,
/// never callouts), and they wait for it.
pub struct MobileSessions {
    config: MobileConfig,
    sessions: Sessions,
    // Held only for map reads and swaps, never across an `.await`.
    index: RwLock<Index>,
    devices: Box<[tokio::sync::Mutex<()>]>,
    gate: tokio::sync::RwLock<()>,
    /// New-device logins per client address in the current minute. Held for one
    /// map update.
    new_devices: parking_lot::Mutex<(Timestamp, HashMap<Option<IpAddr>, u32>)>,
    activations: Option<Activations>,
    changes: tokio::sync::broadcast::Sender<MobileChange>,
    /// The files' fingerprints at the last refresh (valid files only). Used only under
    /// the gate's write lock, by one refresh at a time.
    seen: parking_lot::Mutex<HashMap<Key, Fingerprint>>,
}

/// A change of the mobile sessions made on this node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum MobileChange {
    /// One session changed (created, edited, deleted): reload its file.
    Session {
        /// The app folder.
        folder: String,
        /// The session id.
        id: String,
    },
    /// Every file was reloaded (Push).
    Refresh,
}

impl std::fmt::Debug for MobileSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MobileSessions")
            .field("root", &self.config.root)
            .finish_non_exhaustive()
    }
}

fn sidecar_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.sessiond.json"))
}

fn obj<'a>(body: &'a Value, key: &str) -> Result<Option<&'a Map<String, Value>>, MobileError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(MobileError::BadRequest(format!("{key} must be an object"))),
    }
}

fn string<'a>(
    m: Option<&'a Map<String, Value>>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, MobileError> {
    match m.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MobileError::BadRequest(format!("{what} must be a string"))),
    }
}

/// The validated parts of a `$authenticate` body.
struct Login<'a> {
    body: &'a Value,
    app_id: &'a str,
    team_id: &'a str,
    device_id: &'a str,
    email: &'a str,
}

/// The answer to a login; a pending one whose validation mail is still to go out
/// gets its status text from the mail step.
fn login_answer(
    id: String,
    status: Status,
    token: String,
    status_text: String,
    user_info: Map<String, Value>,
    mail_follows: bool,
) -> AuthAnswer {
    match status {
        Status::Accepted => AuthAnswer::Accepted {
            id,
            token,
            status_text,
            user_info,
        },
        Status::Pending if mail_follows => AuthAnswer::Pending {
            id,
            status_text: String::new(),
        },
        Status::Pending => AuthAnswer::Pending { id, status_text },
    }
}

/// Whether `s` holds a control or invisible formatting character.
fn has_hidden_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || crate::file::is_format_char(c))
}

fn parse_login<'a>(body: &'a Value, limits: &MobileLimits) -> Result<Login<'a>, MobileError> {
    let Some(fields) = body.as_object() else {
        return Err(MobileError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    for (key, value) in fields {
        if serde_json::to_vec(value).map_or(0, |v| v.len()) > limits.max_field_bytes {
            return Err(MobileError::BadRequest(format!(
                "{key} is longer than {} bytes",
                limits.max_field_bytes
            )));
        }
    }
    let app = obj(body, "application")?;
    let app_id = string(app, "id", "application.id")?
        .ok_or_else(|| MobileError::BadRequest("application.id is required".into()))?;
    check_path_part("application.id", app_id).map_err(MobileError::BadRequest)?;
    let team_id = string(obj(body, "team")?, "id", "team.id")?.unwrap_or("");
    if !team_id.is_empty() {
        check_path_part("team.id", team_id).map_err(MobileError::BadRequest)?;
    }
    if folder_name(team_id, app_id).len() > crate::file::MAX_NAME {
        return Err(MobileError::BadRequest(
            "team.id + application.id is too long".into(),
        ));
    }
    let device_id = string(obj(body, "device")?, "id", "device.id")?.unwrap_or("");
    if device_id.is_empty()
        || device_id.len() > crate::file::MAX_DEVICE_ID
        || has_hidden_chars(device_id)
    {
        return Err(MobileError::BadRequest(
            "device.id is required (1 to 8192 printable characters)".into(),
        ));
    }
    let email = match body.get("email") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) if s.len() <= 320 && !has_hidden_chars(s) => s,
        Some(_) => {
            return Err(MobileError::BadRequest(
                "email must be a string of at most 320 printable bytes".into(),
            ));
        }
    };
    for key in ["language", "parameters"] {
        obj(body, key)?;
    }
    if let Some(v) = body.get("send")
        && !v.is_string()
    {
        return Err(MobileError::BadRequest("send must be a string".into()));
    }
    Ok(Login {
        body,
        app_id,
        team_id,
        device_id,
        email,
    })
}

impl MobileSessions {
    /// Mobile sessions under `config.root`, owning web sessions in `sessions`. Call
    /// [`MobileSessions::refresh`] to load the files.
    pub fn new(config: MobileConfig, sessions: Sessions) -> Self {
        Self {
            config,
            sessions,
            index: RwLock::default(),
            devices: (0..DEVICE_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            gate: tokio::sync::RwLock::new(()),
            new_devices: parking_lot::Mutex::new((Timestamp(0), HashMap::new())),
            seen: parking_lot::Mutex::default(),
            activations: None,
            changes: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Validates pending sessions by e-mail: each pending login with an e-mail gets a
    /// one-time activation link.
    #[must_use]
    pub fn with_email(mut self, activations: Activations) -> Self {
        self.activations = Some(activations);
        self
    }

    /// Opens an activation link: accepts its session (file and memory), if the
    /// session's address is still the one the link was sent to. False when the link is
    /// unknown, used or expired, its session is gone, or its address changed.
    pub async fn activate(&self, token: &str) -> Result<bool, MobileError> {
        let Some(activations) = &self.activations else {
            return Ok(false);
        };
        let consumed = activations
            .consume(token, self.sessions.now())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let Some(link) = consumed else {
            return Ok(false);
        };
        let mut same_address = false;
        match self
            .edit_file(&link.folder, &link.id, |f| {
                same_address = f.email == link.email;
                if same_address {
                    f.set_status(Status::Accepted);
                }
            })
            .await
        {
            Ok(_) => {}
            Err(MobileError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        }
        if !same_address {
            tracing::warn!(app = %link.folder, session = %link.id, "an activation link for an address the session no longer has was refused");
            return Ok(false);
        }
        self.reload(&link.folder, &link.id).await?;
        self.notify(MobileChange::Session {
            folder: link.folder.clone(),
            id: link.id.clone(),
        });
        tracing::info!(app = %link.folder, session = %link.id, "mobile session activated by e-mail");
        Ok(true)
    }

    async fn email_validation(
        &self,
        folder: &str,
        id: &str,
        email: &str,
        client: Option<IpAddr>,
        status_text: String,
    ) -> String {
        let Some(activations) = &self.activations else {
            return status_text;
        };
        match activations
            .request(folder, id, email, client, self.sessions.now())
            .await
        {
            Ok(Requested::Sent) if status_text.is_empty() => "Verify your email address".into(),
            Ok(Requested::Sent) => status_text,
            Ok(Requested::AlreadySent) => {
                "The mail is already sent, please wait before sending again".into()
            }
            Ok(Requested::Limited) => {
                "Too many validation e-mails were sent; please try again later.".into()
            }
            Err(EmailError::Address(_)) => "The e-mail address is not valid.".into(),
            Err(e) => {
                tracing::warn!(error = %e, "e-mail validation");
                "The validation e-mail could not be sent; please try again later.".into()
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &MobileConfig {
        &self.config
    }

    /// Number of sessions in memory.
    pub fn len(&self) -> usize {
        self.index.read().entries.len()
    }

    /// Whether no session is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The path of a session file.
    pub fn file_path(&self, folder: &str, id: &str) -> PathBuf {
        self.config.root.join(folder).join(id)
    }

    /// The lock of one device's changes.
    async fn lock_device(&self, folder: &str, device_id: &str) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash as _, Hasher as _};
        // A fixed hasher: the same device always maps to the same stripe.
        let mut h = std::hash::DefaultHasher::new();
        (folder, device_id).hash(&mut h);
        let stripe = usize::try_from(h.finish() % DEVICE_LOCKS as u64).expect("small");
        self.devices[stripe].lock().await
    }

    /// Counts a login of a new device from `peer`, or refuses it past the limit.
    fn count_new_device(&self, peer: Option<IpAddr>) -> Result<(), MobileError> {
        let limit = self.config.limits.new_devices_per_minute;
        let now = self.sessions.now();
        let minute = std::time::Duration::from_secs(60);
        let mut counts = self.new_devices.lock();
        if now >= counts.0.plus(minute) {
            *counts = (now, HashMap::new());
        }
        let n = counts.1.entry(peer).or_default();
        if *n >= limit {
            return Err(MobileError::TooMany {
                message: "Too many new devices from this address; please try again later.".into(),
                retry_after: counts.0.plus(minute).since(now),
            });
        }
        *n += 1;
        Ok(())
    }

    /// A session file as it is on disk now (`None`: deleted, or not a valid file).
    async fn on_disk(&self, folder: &str, id: &str) -> Result<Option<SessionFile>, MobileError> {
        match self.read_file(folder, id).await {
            Ok((_, file)) => Ok(Some(file)),
            Err(MobileError::NotFound | MobileError::BadRequest(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `$authenticate`. The hook runs — outside every lock — for a new or pending
    /// device, and for an accepted one unless [`Relogin::hook`] is off; then, under the
    /// device's lock, the session file is written (onto the file as it is on disk: an
    /// administrator's edit not pushed yet is kept) and the answer is accepted,
    /// pending or refused. A changed e-mail of a pending session starts a new
    /// validation; the mail goes out after the lock is released.
    pub async fn authenticate(
        &self,
        body: &Value,
        peer: Option<IpAddr>,
        hook: &dyn AuthHook,
    ) -> Result<AuthAnswer, MobileError> {
        let login = parse_login(body, &self.config.limits)?;
        let folder = folder_name(login.team_id, login.app_id);
        check_path_part("app folder", &folder).map_err(MobileError::BadRequest)?;
        let agent: Key = (folder.clone(), login.device_id.to_string());
        let known = self.index.read().of_agent(&agent);
        if known.is_none() {
            if self.index.read().in_folder(&folder) >= self.config.limits.max_sessions_per_app {
                return Err(MobileError::TooMany {
                    message: "This app has too many sessions; please try again later.".into(),
                    retry_after: std::time::Duration::from_secs(60),
                });
            }
            self.count_new_device(peer)?;
        }
        let accepted = known.as_ref().filter(|e| e.file.status == Status::Accepted);
        let accepted_again = accepted.filter(|e| e.file.email == login.email);
        let fresh_id = || match self.config.ids {
            IdMode::Random => token::random_session_id(),
            IdMode::FourD => token::four_d_session_id(login.team_id, login.app_id, login.device_id),
        };
        // The session id the login will have: a new one for a new device, or for an
        // accepted device that gets a new token; else the device's.
        let id = match &known {
            Some(_)
                if accepted.is_some()
                    && self.config.relogin.new_token
                    && self.config.ids == IdMode::Random =>
            {
                fresh_id()
            }
            Some(e) => e.file.id.clone(),
            None => fresh_id(),
        };
        let ip = peer.map(|p| p.to_string()).unwrap_or_default();
        let result = match accepted_again {
            Some(e) if !self.config.relogin.hook => HookResult {
                success: true,
                user_info: e.side.user_info.clone(),
                ..HookResult::default()
            },
            _ if self.config.localhost_accept && peer.is_some_and(|p| p.is_loopback()) => {
                HookResult::accept("")
            }
            _ => {
                let mut info = body.clone();
                info["session"] = json!({"id": id, "ip": ip});
                hook.authenticate(&info).await
            }
        };
        if !result.success {
            return Ok(AuthAnswer::Refused {
                status_text: result.status_text,
            });
        }
        let (answer, mail) = {
            let _device = self.lock_device(&folder, login.device_id).await;
            let _gate = self.gate.read().await;
            self.write_login(&login, &folder, &agent, id, &ip, result)
                .await?
        };
        if let Some((id, email, status_text)) = mail {
            let status_text = self
                .email_validation(&folder, &id, &email, peer, status_text)
                .await;
            return Ok(AuthAnswer::Pending { id, status_text });
        }
        Ok(answer)
    }

    /// The write phase of a login, under the device's lock: (answer, the validation
    /// mail to send).
    #[allow(clippy::type_complexity)]
    async fn write_login(
        &self,
        login: &Login<'_>,
        folder: &str,
        agent: &Key,
        mut id: String,
        ip: &str,
        result: HookResult,
    ) -> Result<(AuthAnswer, Option<(String, String, String)>), MobileError> {
        // The device's session now (another login of it may have finished meanwhile),
        // and its file as on disk: a session an administrator deleted is gone.
        let mut current = self.index.read().of_agent(agent);
        let mut disk = match &current {
            Some(e) => self.on_disk(folder, &e.file.id).await?,
            None => None,
        };
        if disk.is_none() {
            current = None;
        }
        let retiring = current.as_ref().filter(|e| e.file.id != id).cloned();
        match (&current, &retiring) {
            // Same session (no new token): keep its id even if another login chose one.
            (Some(e), None) => id.clone_from(&e.file.id),
            // A new session (its previous file, if any, was deleted).
            (None, _) => disk = None,
            (Some(_), Some(_)) => {}
        }
        // An administrator's edit of status or e-mail not pushed yet is kept: the
        // files are their truth until Push, and memory answers until then.
        let held = match (&current, &disk) {
            (Some(e), Some(d)) => d.status != e.file.status || d.email != e.file.email,
            _ => false,
        };
        // An accepted device logging in with the same e-mail has proven it already: a
        // "verify" answer does not send it back to pending.
        let proven = current
            .as_ref()
            .is_some_and(|e| e.file.status == Status::Accepted && e.file.email == login.email);
        let (status, email) = match (&disk, held) {
            (Some(d), true) => (d.status, d.email.clone()),
            _ => (
                if result.verify && !proven {
                    Status::Pending
                } else {
                    Status::Accepted
                },
                login.email.to_string(),
            ),
        };
        let token = match (&disk, held) {
            (Some(d), true) => d.token.clone(),
            _ => token::encode(login.app_id, &id, login.team_id),
        };
        let base = disk.as_ref().map(|d| &d.json);
        let json = file_json(login.body, &id, ip, status, &email, &token, base);
        let file =
            SessionFile::from_json(json).map_err(|e| MobileError::BadRequest(e.to_string()))?;
        if file.to_bytes().len() > self.config.limits.max_file_bytes {
            return Err(MobileError::TooLarge(format!(
                "the session would take more than {} bytes",
                self.config.limits.max_file_bytes
            )));
        }
        let mut side = current.as_ref().map(|e| e.side.clone()).unwrap_or_default();
        if !held {
            side.user_info = result.user_info.clone();
        }
        let web = self
            .ensure_web(&Entry {
                file: file.clone(),
                side: side.clone(),
            })
            .await?;
        side.web_session = Some(web.record.id);
        if let Some(input) = result.privileges.as_ref().filter(|_| !held) {
            let change = self
                .sessions
                .set_privileges(&web.record.id, input, Requester::Server)
                .await?;
            side.privileges = change.snapshot.record.get_privileges();
            side.user_name = change.snapshot.record.user_name.to_string();
        }
        self.store_login(folder, &Entry { file, side }, retiring.as_ref(), held)
            .await?;
        // What the running server answers: memory's view (until a Push for a held
        // session).
        let (status, token, user_info) = match (&current, held) {
            (Some(e), true) => (
                e.file.status,
                e.file.token.clone(),
                e.side.user_info.clone(),
            ),
            _ => (status, token, result.user_info.clone()),
        };
        tracing::info!(app = %folder, session = %id, status = status.as_str(), "mobile login");
        let mail = (status == Status::Pending && !email.is_empty() && !held)
            .then(|| (id.clone(), email, result.status_text.clone()));
        Ok((
            login_answer(
                id,
                status,
                token,
                result.status_text,
                user_info,
                mail.is_some(),
            ),
            mail,
        ))
    }

    /// Writes a login's session (files, memory unless `held`, other nodes told),
    /// retiring the session it replaces.
    async fn store_login(
        &self,
        folder: &str,
        entry: &Entry,
        retiring: Option<&Entry>,
        held: bool,
    ) -> Result<(), MobileError> {
        self.write(folder, entry).await?;
        if let Some(old) = retiring {
            self.remove_files(folder, &old.file.id).await?;
        }
        {
            let mut index = self.index.write();
            if let Some(old) = retiring {
                index.remove(&(folder.to_string(), old.file.id.clone()));
            }
            if !held {
                index.insert(folder, entry.clone());
            }
        }
        for changed in retiring.iter().map(|e| &e.file.id).chain([&entry.file.id]) {
            self.notify(MobileChange::Session {
                folder: folder.to_string(),
                id: changed.clone(),
            });
        }
        Ok(())
    }

    /// The session a Bearer token opens, if it exists and is accepted.
    pub async fn authorize(&self, bearer: &str) -> Result<Option<Authorized>, MobileError> {
        let Some(fields) = token::decode(bearer.trim()) else {
            return Ok(None);
        };
        if check_path_part("application.id", &fields.app_id).is_err() {
            return Ok(None);
        }
        let folder = folder_name(&fields.team_id, &fields.app_id);
        let entry = self
            .index
            .read()
            .entries
            .get(&(folder.clone(), fields.id.clone()))
            .cloned();
        let Some(entry) = entry else { return Ok(None) };
        let same: bool = entry
            .file
            .token
            .as_bytes()
            .ct_eq(bearer.trim().as_bytes())
            .into();
        if !same || entry.file.status != Status::Accepted {
            return Ok(None);
        }
        let web = self.ensure_web(&entry).await?;
        Ok(Some(Authorized {
            folder,
            id: entry.file.id.clone(),
            app_id: entry.file.app_id.clone(),
            email: entry.file.email.clone(),
            user_info: entry.side.user_info.clone(),
            token: entry.file.token.clone(),
            device_id: entry.file.device_id.clone(),
            web,
        }))
    }

    /// `$logout`: removes the session from memory and disk.
    pub async fn logout(&self, who: &Authorized) -> Result<(), MobileError> {
        let _device = self.lock_device(&who.folder, &who.device_id).await;
        let _gate = self.gate.read().await;
        self.delete_locked(&who.folder, &who.id).await
    }

    /// `$userInfo`: stores `device.token` (push) and/or `userInfo` — device-owned
    /// fields only, onto the file as it is on disk: an administrator's edit waiting
    /// for a Push is kept, and a session deleted on disk stays deleted.
    pub async fn set_user_info(&self, who: &Authorized, body: &Value) -> Result<(), MobileError> {
        let device_token = match body.get("device").map(|d| d.get("token")) {
            None | Some(None | Some(Value::Null)) => None,
            Some(Some(Value::String(t))) if t.len() <= 4096 => Some(t.clone()),
            Some(_) => {
                return Err(MobileError::BadRequest(
                    "device.token must be a string of at most 4096 bytes".into(),
                ));
            }
        };
        let user_info = match body.get("userInfo") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m))
                if serde_json::to_vec(m).map_or(0, |v| v.len())
                    <= self.config.limits.max_field_bytes =>
            {
                Some(m.clone())
            }
            Some(Value::Object(_)) => {
                return Err(MobileError::BadRequest(format!(
                    "userInfo is longer than {} bytes",
                    self.config.limits.max_field_bytes
                )));
            }
            Some(_) => return Err(MobileError::BadRequest("userInfo must be an object".into())),
        };
        let _device = self.lock_device(&who.folder, &who.device_id).await;
        let _gate = self.gate.read().await;
        let key = (who.folder.clone(), who.id.clone());
        let Some(mut entry) = self.index.read().entries.get(&key).cloned() else {
            return Err(MobileError::NotFound);
        };
        let Some(mut disk) = self.on_disk(&who.folder, &who.id).await? else {
            // Deleted by an administrator: nothing brings it back.
            return Ok(());
        };
        if let Some(t) = device_token {
            for json in [&mut disk.json, &mut entry.file.json] {
                let device = json
                    .entry("device")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = device {
                    d.insert("token".into(), t.clone().into());
                }
            }
        }
        if let Some(u) = user_info {
            entry.side.user_info = u;
        }
        // The file as on disk plus the device's fields; memory keeps its own view.
        self.write(
            &who.folder,
            &Entry {
                file: disk,
                side: entry.side.clone(),
            },
        )
        .await?;
        self.index.write().insert(&who.folder, entry);
        self.notify(MobileChange::Session {
            folder: who.folder.clone(),
            id: who.id.clone(),
        });
        Ok(())
    }

    /// Deletes a session: memory, file, sidecar and its web session.
    pub async fn delete(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        self.delete_locked(folder, id).await
    }

    /// The device id of a session (memory, else its file), for its lock.
    async fn device_of(&self, folder: &str, id: &str) -> Result<String, MobileError> {
        let known = self
            .index
            .read()
            .entries
            .get(&(folder.to_string(), id.to_string()))
            .map(|e| e.file.device_id.clone());
        Ok(match known {
            Some(d) => d,
            None => self
                .on_disk(folder, id)
                .await?
                .map(|f| f.device_id)
                .unwrap_or_default(),
        })
    }

    /// [`Self::delete`] under the device's lock.
    async fn delete_locked(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        let removed = self
            .index
            .write()
            .remove(&(folder.to_string(), id.to_string()));
        self.remove_files(folder, id).await?;
        let Some(e) = removed else {
            return Err(MobileError::NotFound);
        };
        self.notify(MobileChange::Session {
            folder: folder.to_string(),
            id: id.to_string(),
        });
        if let Some(web) = e.side.web_session {
            self.sessions.remove(&web).await?;
        }
        Ok(())
    }

    /// Removes a session's file and sidecar (missing ones are fine); true if the file
    /// was there.
    async fn remove_files(&self, folder: &str, id: &str) -> Result<bool, MobileError> {
        let dir = self.config.root.join(folder);
        let (file, side) = (dir.join(id), sidecar_path(&dir, id));
        let found = tokio::task::spawn_blocking(move || {
            let found = match std::fs::remove_file(&file) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(found),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(found)
    }

    async fn write(&self, folder: &str, entry: &Entry) -> Result<(), MobileError> {
        let dir = self.config.root.join(folder);
        let bytes = entry.file.to_bytes();
        let side = serde_json::to_vec_pretty(&entry.side).expect("serializable");
        let id = entry.file.id.clone();
        tokio::task::spawn_blocking(move || {
            private_dir(&dir)?;
            atomic_write(&sidecar_path(&dir, &id), &side)?;
            atomic_write(&dir.join(&id), &bytes)
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    /// The web session of a mobile session, created (with its saved id, privileges
    /// and userName) when it does not exist — after a restart, or for a file made by
    /// 4D. Mobile-owned web sessions do not expire by idleness: the token has no expiry.
    async fn ensure_web(&self, entry: &Entry) -> Result<Snapshot, MobileError> {
        // A file without a link (made by 4D, or whose sidecar is lost) gets a web
        // session id derived from the mobile session, so every request, every node and
        // every restart finds the same one without writing anything.
        let id = entry
            .side
            .web_session
            .unwrap_or_else(|| derived_web_id(&entry.file));
        if let Some(s) = self.sessions.touch(&id).await? {
            return Ok(s);
        }
        let policy = self.sessions.policy();
        let mut record = SessionRecord::new_web(
            self.sessions.now(),
            policy,
            entry.file.json["session"]["ip"]
                .as_str()
                .and_then(|s| s.parse().ok()),
        );
        record.id = id;
        record.idle_timeout = policy.max_idle_timeout_minutes;
        let mut snapshot = match self.sessions.insert(record).await {
            Ok(s) => s,
            // Another request created it meanwhile.
            Err(SessionsError::Store(StoreError::Duplicate(_))) => {
                return self.sessions.touch(&id).await?.ok_or(MobileError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if !entry.side.privileges.is_empty() || !entry.side.user_name.is_empty() {
            let input = PrivilegeInput {
                privileges: entry.side.privileges.clone(),
                user_name: Some(entry.side.user_name.clone()).filter(|u| !u.is_empty()),
                ..PrivilegeInput::default()
            };
            snapshot = self
                .sessions
                .set_privileges(&id, &input, Requester::Server)
                .await?
                .snapshot;
        }
        Ok(snapshot)
    }

    /// MOBILE APP REFRESH SESSIONS: reads every session file; modified files update
    /// their session, new ones are loaded, deleted or invalid ones are evicted, and
    /// each unusable file is reported with its `mobi` error. Other nodes are told
    /// (see [`MobileSessions::changes`]).
    pub async fn refresh(&self) -> Result<RefreshReport, MobileError> {
        let report = self.reload_all().await?;
        self.notify(MobileChange::Refresh);
        Ok(report)
    }

    /// Reloads one session from its file (a change made by another node): a valid
    /// file updates or adds it, a missing or invalid one evicts it.
    pub async fn reload(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        let path = self.checked_file(folder, id)?;
        let dir = path.parent().expect("a file in a folder").to_path_buf();
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        let (folder, id) = (folder.to_string(), id.to_string());
        let loaded = {
            let (folder, id) = (folder.clone(), id.clone());
            tokio::task::spawn_blocking(move || read_entry(&dir, &folder, &id).ok()?.ok())
                .await
                .map_err(std::io::Error::other)?
        };
        let mut index = self.index.write();
        match loaded {
            Some(entry) => index.insert(&folder, entry),
            None => {
                index.remove(&(folder, id));
            }
        }
        Ok(())
    }

    /// Changes made on this node, for other nodes sharing the folder.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<MobileChange> {
        self.changes.subscribe()
    }

    fn notify(&self, change: MobileChange) {
        let _ = self.changes.send(change);
    }

    /// Like [`MobileSessions::refresh`], without telling other nodes.
    pub async fn reload_all(&self) -> Result<RefreshReport, MobileError> {
        // Waits for device writes in progress (never for a callout), and holds new
        // ones until the index is replaced.
        let _gate = self.gate.write().await;
        let root = self.config.root.clone();
        let seen = std::mem::take(&mut *self.seen.lock());
        let (found, errors, seen) = tokio::task::spawn_blocking(move || scan(&root, &seen))
            .await
            .map_err(std::io::Error::other)??;
        *self.seen.lock() = seen;
        let mut report = RefreshReport {
            errors,
            ..RefreshReport::default()
        };
        let mut old: HashMap<Key, Entry> = std::mem::take(&mut self.index.write().entries);
        let mut index = Index::default();
        let mut evicted_web = Vec::new();
        for (key, found) in found {
            let mut entry = match found {
                Found::Read(entry) => *entry,
                Found::Unchanged => match old.remove(&key) {
                    Some(prev) => {
                        report.unchanged += 1;
                        report.skipped += 1;
                        index.insert(&key.0, prev);
                        continue;
                    }
                    // Not in memory although its file did not change (evicted since):
                    // read it after all.
                    None => match read_entry(&self.config.root.join(&key.0), &key.0, &key.1)? {
                        Ok(entry) => entry,
                        Err(e) => {
                            report.errors.push(RefreshError::of(&key, &e));
                            continue;
                        }
                    },
                },
            };
            match old.get(&key) {
                Some(prev)
                    if prev.file == entry.file
                        && prev.side.web_session == entry.side.web_session =>
                {
                    report.unchanged += 1;
                }
                Some(_) => report.updated += 1,
                None => report.loaded += 1,
            }
            if entry.side.web_session.is_none() {
                entry.side.web_session = old.get(&key).and_then(|p| p.side.web_session);
            }
            index.insert(&key.0, entry);
        }
        for (key, prev) in &old {
            if !index.entries.contains_key(key) {
                report.evicted += 1;
                evicted_web.extend(prev.side.web_session);
            }
        }
        *self.index.write() = index;
        for id in evicted_web {
            self.sessions.remove(&id).await?;
        }
        tracing::info!(
            loaded = report.loaded,
            updated = report.updated,
            evicted = report.evicted,
            errors = report.errors.len(),
            "mobile sessions refreshed"
        );
        Ok(report)
    }
}

/// The web session id of a mobile session that has no recorded link: the first 128
/// bits of SHA-256 over its app folder and id.
fn derived_web_id(file: &SessionFile) -> SessionId {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(
        format!("sessiond-mobile-web:{}/{}", file.folder(), file.id).as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    SessionId::from_bytes(bytes)
}

/// The content of a session file: the file as it is (`base`: unknown keys and the
/// push token are kept), with the request's fields 4D keeps (never the password), the
/// session, status, e-mail and token.
fn file_json(
    body: &Value,
    id: &str,
    ip: &str,
    status: Status,
    email: &str,
    token: &str,
    base: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut json = base.cloned().unwrap_or_default();
    let push = base.and_then(|b| b.get("device")?.get("token").cloned());
    for key in ["application", "team", "language", "device", "send"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            json.insert(key.into(), v.clone());
        }
    }
    if let Some(push) = push
        && let Some(Value::Object(device)) = json.get_mut("device")
    {
        device.entry("token").or_insert(push);
    }
    json.insert("email".into(), email.into());
    json.insert("session".into(), json!({"id": id, "ip": ip}));
    json.insert("status".into(), status.as_str().into());
    json.insert("token".into(), token.into());
    json
}

/// What identifies one version of a session file and its sidecar without reading
/// them: any write (in place or by rename) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    file: FileStamp,
    sidecar: Option<FileStamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    inode: u64,
    /// Modification and change times, ns since the epoch.
    modified: i128,
    changed: i128,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            len: meta.len(),
            inode: meta.ino(),
            modified: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            changed: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    /// Whether the file was written so recently that another write in the same tick
    /// of a coarse file-system clock (up to 2 s) would not change this stamp: such a
    /// file is read again at the next refresh.
    fn is_recent(&self, now: i128) -> bool {
        now - self.modified < 2_000_000_000
    }
}

fn fingerprint(file: &std::fs::DirEntry, sidecar: &Path) -> std::io::Result<Fingerprint> {
    // Relative to the open folder: no walk of the whole path.
    let file = FileStamp::of(&file.metadata()?);
    let sidecar = match std::fs::metadata(sidecar) {
        Ok(meta) => Some(FileStamp::of(&meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(Fingerprint { file, sidecar })
}

/// A session file found by a refresh.
enum Found {
    Read(Box<Entry>),
    /// Its fingerprint did not change since the last refresh: not read.
    Unchanged,
}

impl RefreshError {
    fn of(key: &Key, e: &FileError) -> Self {
        Self {
            file: format!("{}/{}", key.0, key.1),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// Reads session file `name` of app folder `folder` (in `dir`) and its sidecar.
fn read_entry(dir: &Path, folder: &str, name: &str) -> std::io::Result<Result<Entry, FileError>> {
    let bytes = std::fs::read(dir.join(name))?;
    let file =
        match SessionFile::parse(&bytes).and_then(|f| f.check_location(folder, name).map(|()| f)) {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
    let side = std::fs::read(sidecar_path(dir, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Ok(Ok(Entry { file, side }))
}

type Scan = (
    Vec<(Key, Found)>,
    Vec<RefreshError>,
    HashMap<Key, Fingerprint>,
);

/// Every session file under `root`; those whose fingerprint is the one in `seen` are
/// not read. Returns the new fingerprints of the valid files.
fn scan(root: &Path, seen: &HashMap<Key, Fingerprint>) -> std::io::Result<Scan> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    let mut fingerprints = HashMap::new();
    let dirs = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((found, errors, fingerprints));
        }
        Err(e) => return Err(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    for dir in dirs {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        let Some(folder) = dir.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dir = dir.path();
        for file in std::fs::read_dir(&dir)? {
            let file = file?;
            let Some(name) = file.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !is_session_file_name(&name) || !file.file_type()?.is_file() {
                continue; // manifest.json, AuthKey_*.p8, sidecars…: not sessions
            }
            let key = (folder.clone(), name);
            let print = fingerprint(&file, &sidecar_path(&dir, &key.1))?;
            if seen.get(&key) == Some(&print) {
                fingerprints.insert(key.clone(), print);
                found.push((key, Found::Unchanged));
                continue;
            }
            match read_entry(&dir, &key.0, &key.1)? {
                Ok(entry) => {
                    // Keep the fingerprint taken before reading: a write since then
                    // changes it, and the file is read again next time.
                    let settled = !print.file.is_recent(now)
                        && !print.sidecar.is_some_and(|s| s.is_recent(now));
                    if settled {
                        fingerprints.insert(key.clone(), print);
                    }
                    found.push((key, Found::Read(Box::new(entry))));
                }
                Err(e) => errors.push(RefreshError::of(&key, &e)),
            }
        }
    }
    Ok((found, errors, fingerprints))
}

/// Every valid session file under `root`, read.
fn read_all(root: &Path) -> std::io::Result<Vec<(Key, Entry)>> {
    let (found, _, _) = scan(root, &HashMap::new())?;
    Ok(found
        .into_iter()
        .filter_map(|(key, found)| match found {
            Found::Read(entry) => Some((key, *entry)),
            Found::Unchanged => None,
        })
        .collect())
}

/// Shares one [`MobileSessions`].
pub type SharedMobile = Arc<MobileSessions>;

/// One app folder as the management tools list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSummary {
    /// The folder name (`TEAM.bundle` or `bundle`).
    pub folder: String,
    /// `<application.name> (<folder>)`.
    pub label: String,
    /// Number of session files.
    pub sessions: usize,
    /// How many of them are pending.
    pub pending: usize,
}

/// One session file as the management tools list it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// `session.id`.
    pub id: String,
    /// `status`.
    pub status: Status,
    /// `device.description`.
    pub device: String,
    /// `device.os + " " + device.version`.
    pub os: String,
    /// `email`.
    pub email: String,
    /// `session.ip`.
    pub ip: String,
    /// The file's path on the server.
    pub file: String,
    /// The file's last modification, ms since the epoch.
    pub modified: Option<u64>,
    /// When its web session was created (its first login, or its first use after a
    /// file made elsewhere was loaded), ms since the epoch.
    pub created: Option<u64>,
    /// The last request made with its token (recorded to the second), ms since the
    /// epoch.
    pub last_seen: Option<u64>,
    /// The whole `device` object.
    pub device_info: Value,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl MobileSessions {
    fn checked_dir(&self, folder: &str) -> Result<PathBuf, MobileError> {
        check_path_part("app folder", folder).map_err(MobileError::BadRequest)?;
        Ok(self.config.root.join(folder))
    }

    fn checked_file(&self, folder: &str, id: &str) -> Result<PathBuf, MobileError> {
        if !is_session_file_name(id) {
            return Err(MobileError::BadRequest(
                "a session id is hexadecimal".into(),
            ));
        }
        Ok(self.checked_dir(folder)?.join(id))
    }

    /// The apps with at least one session file, read from disk (the files, not memory,
    /// as the Mobile Session Management component does).
    pub async fn list_apps(&self) -> Result<Vec<AppSummary>, MobileError> {
        let root = self.config.root.clone();
        let found = tokio::task::spawn_blocking(move || read_all(&root))
            .await
            .map_err(std::io::Error::other)??;
        let mut apps: std::collections::BTreeMap<String, AppSummary> =
            std::collections::BTreeMap::new();
        for ((folder, _), entry) in found {
            let name = str_at(
                &Value::Object(entry.file.json.clone()),
                &["application", "name"],
            )
            .to_string();
            let app = apps.entry(folder.clone()).or_insert_with(|| AppSummary {
                label: String::new(),
                folder: folder.clone(),
                sessions: 0,
                pending: 0,
            });
            app.sessions += 1;
            app.pending += usize::from(entry.file.status == Status::Pending);
            if app.label.is_empty() || !name.is_empty() {
                app.label = format!(
                    "{} ({folder})",
                    if name.is_empty() {
                        &entry.file.app_id
                    } else {
                        &name
                    }
                );
            }
        }
        Ok(apps.into_values().collect())
    }

    /// The session files of one app folder, from disk.
    pub async fn list_sessions(&self, folder: &str) -> Result<Vec<SessionSummary>, MobileError> {
        let dir = self.checked_dir(folder)?;
        let root = self.config.root.clone();
        let folder = folder.to_string();
        let found = tokio::task::spawn_blocking(move || read_all(&root))
            .await
            .map_err(std::io::Error::other)??;
        let mut out = Vec::new();
        for ((_, id), entry) in found.into_iter().filter(|((f, _), _)| *f == folder) {
            let web = entry
                .side
                .web_session
                .unwrap_or_else(|| derived_web_id(&entry.file));
            let seen = self.sessions.get(&web).await?;
            let json = Value::Object(entry.file.json);
            let path = dir.join(&id);
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_millis()).ok());
            let os = format!(
                "{} {}",
                str_at(&json, &["device", "os"]),
                str_at(&json, &["device", "version"])
            )
            .trim()
            .to_string();
            out.push(SessionSummary {
                status: entry.file.status,
                device: str_at(&json, &["device", "description"]).to_string(),
                os,
                email: entry.file.email,
                ip: str_at(&json, &["session", "ip"]).to_string(),
                file: path.display().to_string(),
                modified,
                created: seen.as_ref().map(|s| s.record.created.0),
                last_seen: seen.as_ref().map(|s| s.last_activity.0),
                device_info: json.get("device").cloned().unwrap_or(Value::Null),
                id,
            });
        }
        out.sort_by(|a, b| a.device.cmp(&b.device).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One session file, parsed and validated, with its path.
    pub async fn read_file(
        &self,
        folder: &str,
        id: &str,
    ) -> Result<(PathBuf, SessionFile), MobileError> {
        let path = self.checked_file(folder, id)?;
        let p = path.clone();
        let bytes = match tokio::task::spawn_blocking(move || std::fs::read(p))
            .await
            .map_err(std::io::Error::other)?
        {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MobileError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        let file =
            SessionFile::parse(&bytes).map_err(|e| MobileError::BadRequest(e.to_string()))?;
        Ok((path, file))
    }

    /// Edits a session file on disk (status, e-mail). As in 4D, the session in memory
    /// changes only at the next [`MobileSessions::refresh`] (Push).
    pub async fn edit_file(
        &self,
        folder: &str,
        id: &str,
        edit: impl FnOnce(&mut SessionFile) + Send,
    ) -> Result<SessionFile, MobileError> {
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        let (path, mut file) = self.read_file(folder, id).await?;
        edit(&mut file);
        let bytes = file.to_bytes();
        tokio::task::spawn_blocking(move || atomic_write(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(file)
    }

    /// Deletes a session file (and its sidecar) on disk; memory follows at the next
    /// refresh (Push), as in 4D.
    pub async fn delete_file(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        self.checked_file(folder, id)?;
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        if self.remove_files(folder, id).await? {
            Ok(())
        } else {
            Err(MobileError::NotFound)
        }
    }
}
