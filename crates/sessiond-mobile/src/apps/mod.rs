//! [`MobileSessions`]: the mobile sessions in memory, the files under
//! `<data>/MobileApps/`, and the flows of the `/mobileapp/` protocol (authenticate,
//! authorize a Bearer token, logout, `$userInfo`) and of refresh (spec §3.7).
//!
//! As in 4D, the files are read at start and at each refresh; edits made on disk
//! take effect only then. Every mobile session owns a web [`sessiond_store::Sessions`]
//! session (its privileges, userName, storage); the link and the privileges are kept
//! in a sidecar `<id>.sessiond.json` beside the session file (4D's tools skip files
//! with an extension), so they survive a restart.
//!
//! | module | what lives there |
//! |---|---|
//! | this one | the settings, the answers and errors, the in-memory index, [`MobileSessions`] and its device locks |
//! | `login` | `$authenticate` (hook, e-mail validation, per-address limits), a token's authorization, `$logout`, `$userInfo`, the validation link |
//! | `files` | writing a session file and its sidecar, deleting them, the web session each mobile session owns |
//! | `refresh` | Push: reading `MobileApps`, skipping unchanged files, reloading one session |
//! | `watch` | inotify on `MobileApps`: which files had an event since the last refresh |
//! | `admin` | the management tools: app and session listings, reading, editing and deleting a file |

mod admin;
mod files;
mod login;
mod refresh;
mod watch;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::{Map, Value};
use sessiond_core::{SessionId, Timestamp};
use sessiond_store::{Sessions, SessionsError, Snapshot};

use crate::activation::Activations;
use crate::file::{SessionFile, check_path_part, is_session_file_name};
use crate::token::IdMode;
use refresh::Last;

pub use admin::{AppSummary, SessionSummary};

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
    /// Watch the folders (inotify, on a local file system) so that a refresh looks
    /// only at the files that had an event since the last one; off, a refresh takes
    /// the metadata of every file. Default: on.
    pub watch: bool,
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
            watch: true,
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshError {
    /// The file, relative to the `MobileApps` folder.
    pub file: String,
    /// The `mobi` error number (1–4).
    pub code: u8,
    /// What is wrong.
    pub message: String,
}

/// What a refresh did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshReport {
    /// Sessions loaded from new files.
    pub loaded: usize,
    /// Sessions updated from modified files.
    pub updated: usize,
    /// Sessions whose file did not change.
    pub unchanged: usize,
    /// Of those, the files not even read: same size, modification and change times and
    /// inode (and the same for the sidecar) as at the previous refresh, or, with the
    /// folders watched, no event since then.
    pub skipped: usize,
    /// Files whose metadata was taken: every session file, or, with the folders
    /// watched, only those that had an event.
    #[serde(default)]
    pub examined: usize,
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
    /// What the last refresh saw: the files' fingerprints, the watch of the folders.
    /// Used only under the gate's write lock, by one refresh at a time.
    last: parking_lot::Mutex<Last>,
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

/// Shares one [`MobileSessions`].
pub type SharedMobile = Arc<MobileSessions>;

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
            last: parking_lot::Mutex::default(),
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

    /// Changes made on this node, for other nodes sharing the folder.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<MobileChange> {
        self.changes.subscribe()
    }

    fn notify(&self, change: MobileChange) {
        let _ = self.changes.send(change);
    }

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
}
