//! [`Console`]: what the admin web console needs on the server side besides its
//! routes — the console's own sign-in sessions (cookie [`COOKIE`], a CSRF token each),
//! the audit log of every admin change (`<data>/audit.log`, JSON Lines) and the
//! broadcast of audit entries that the console's live stream forwards.
//!
//! Console sessions are kept in `<data>/console-sessions.json` (mode 0600, written
//! atomically at sign-in and sign-out), so an open console carries on after a server
//! restart. Tokens are 256-bit random values from the OS CSPRNG, stored only as SHA-256
//! hashes (the file holds no usable credential: a CSRF token is worthless without its
//! cookie); CSRF tokens are compared in constant time.

use std::collections::HashMap;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde_json::Value;
use sessiond_core::Timestamp;
use sessiond_core::id::random_bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::broadcast;

/// The console session cookie (HttpOnly, SameSite=Strict, `Path=/admin`).
pub const COOKIE: &str = "sessiond_admin";
/// The request header that carries the CSRF token on every change.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A console session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Name of the audit log in the data folder.
pub const AUDIT_FILE: &str = "audit.log";
/// Name of the console sessions file in the data folder.
pub const SESSIONS_FILE: &str = "console-sessions.json";
/// Console sessions kept at most (the oldest are dropped first past this).
const MAX_SESSIONS: usize = 1000;
/// How much of the end of the audit log [`Console::recent`] reads at most.
const AUDIT_TAIL_BYTES: u64 = 4 * 1024 * 1024;

/// How an admin request was authenticated.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// The console's cookie session (+ CSRF token).
    Console,
    /// `Authorization: Bearer <admin password>` (the CLI, scripts).
    Bearer,
}

/// Who makes an admin request: put in the request's extensions by
/// [`crate::routes::admin::require_admin`], read by the handlers for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The client address.
    pub ip: Option<IpAddr>,
    /// How it signed in.
    pub via: Via,
}

/// One line of the audit log: who did what, when, and how it ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// ISO-8601 UTC, milliseconds.
    pub time: String,
    /// Always `admin` (there is one admin credential).
    pub who: String,
    /// The client address (empty when unknown).
    pub ip: String,
    /// How the request was authenticated (`None` for a failed sign-in).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub via: Option<Via>,
    /// What: `sign-in`, `sign-out`, `mobile.status`, `mobile.email`, `mobile.delete`,
    /// `mobile.push`, `session.drop`, `user.drop`.
    pub action: String,
    /// On what (e.g. `<app folder>/<session id>`, a session id, a user name).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub target: String,
    /// Parameters of the change (never a secret).
    #[serde(skip_serializing_if = "Value::is_null", default)]
    #[schema(value_type = Option<Object>)]
    pub detail: Value,
    /// `ok`, or the error code the request was answered with.
    pub outcome: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ConsoleSession {
    csrf: String,
    expires: Timestamp,
    /// [`crate::credentials::AdminAuth::fingerprint`] at sign-in.
    credential: String,
}

/// One line of `console-sessions.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    sha256: String,
    #[serde(flatten)]
    session: ConsoleSession,
}

type SessionMap = HashMap<[u8; 32], ConsoleSession>;

fn load_sessions(path: &Path) -> SessionMap {
    let Ok(bytes) = std::fs::read(path) else {
        return SessionMap::new();
    };
    let Ok(list) = serde_json::from_slice::<Vec<Stored>>(&bytes) else {
        tracing::warn!(path = %path.display(), "console sessions file unreadable: consoles sign in again");
        return SessionMap::new();
    };
    list.into_iter()
        .filter_map(|s| Some((sessiond_core::id::from_hex(&s.sha256)?, s.session)))
        .collect()
}

/// A console session that a cookie named (see [`Console::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// Its CSRF token.
    pub csrf: String,
    /// When it ends unless used again.
    pub expires: Timestamp,
}

/// A console session just opened: what the browser gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The cookie's value (stored only as its hash).
    pub token: String,
    /// The CSRF token every change must carry as `X-CSRF-Token`.
    pub csrf: String,
}

/// The console's sessions, audit log and live events.
#[derive(Debug)]
pub struct Console {
    sessions: Arc<Mutex<SessionMap>>,
    sessions_path: PathBuf,
    // Serializes writes of the sessions file.
    sessions_lock: Arc<Mutex<()>>,
    audit_path: PathBuf,
    // Serializes appends (held inside `spawn_blocking`, never across an `.await`).
    audit_lock: Arc<Mutex<()>>,
    events: broadcast::Sender<AuditEntry>,
    closing: tokio::sync::watch::Sender<bool>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Console {
    /// A console whose audit log is `<data_dir>/audit.log`, with the console sessions
    /// of `<data_dir>/console-sessions.json` (none if it is missing or unreadable).
    pub fn new(data_dir: &Path) -> Self {
        let sessions_path = data_dir.join(SESSIONS_FILE);
        Self {
            sessions: Arc::new(Mutex::new(load_sessions(&sessions_path))),
            sessions_path,
            sessions_lock: Arc::default(),
            audit_path: data_dir.join(AUDIT_FILE),
            audit_lock: Arc::default(),
            events: broadcast::channel(256).0,
            closing: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The server is shutting down: live event streams end, so that graceful
    /// shutdown does not wait for open consoles.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`Console::close`] was called.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// The audit log's path.
    pub fn audit_path(&self) -> &Path {
        &self.audit_path
    }

    /// Writes the live console sessions to their file (a failure is logged: consoles
    /// would only have to sign in again after a restart).
    async fn save(&self) {
        let (map, path, lock) = (
            self.sessions.clone(),
            self.sessions_path.clone(),
            self.sessions_lock.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            let _guard = lock.lock();
            let list: Vec<Stored> = map
                .lock()
                .iter()
                .map(|(k, s)| Stored {
                    sha256: sessiond_core::id::to_hex(k),
                    session: s.clone(),
                })
                .collect();
            let bytes = serde_json::to_vec_pretty(&list).expect("serializable");
            sessiond_store::fs::atomic_write(&path, &bytes)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %self.sessions_path.display(), "console sessions cannot be saved");
        }
    }

    /// Opens a console session after a successful sign-in with the admin credential
    /// whose fingerprint is `credential`.
    pub async fn sign_in(&self, now: Timestamp, credential: &str) -> Opened {
        let signed_in = self.open(now, credential);
        self.save().await;
        signed_in
    }

    fn open(&self, now: Timestamp, credential: &str) -> Opened {
        let token = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let csrf = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        let mut map = self.sessions.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&token),
            ConsoleSession {
                csrf: csrf.clone(),
                expires: now.plus(IDLE),
                credential: credential.to_string(),
            },
        );
        Opened { token, csrf }
    }

    /// The live console session of cookie `token`, if it was opened with the current
    /// admin credential (fingerprint `credential`); with `touch`, its idle time starts
    /// over.
    pub fn check(
        &self,
        token: &str,
        now: Timestamp,
        touch: bool,
        credential: &str,
    ) -> Option<SignedIn> {
        let key = digest(token);
        let mut map = self.sessions.lock();
        let session = map.get_mut(&key)?;
        if session.expires <= now || session.credential != credential {
            map.remove(&key);
            return None;
        }
        if touch {
            session.expires = now.plus(IDLE);
        }
        Some(SignedIn {
            csrf: session.csrf.clone(),
            expires: session.expires,
        })
    }

    /// Ends the console session of cookie `token`.
    pub async fn sign_out(&self, token: &str) {
        self.sessions.lock().remove(&digest(token));
        self.save().await;
    }

    /// Whether `presented` is `expected` (constant time).
    pub fn csrf_matches(expected: &str, presented: &str) -> bool {
        bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
    }

    /// Audit entries as they are written (for the live stream).
    pub fn events(&self) -> broadcast::Receiver<AuditEntry> {
        self.events.subscribe()
    }

    /// Appends one entry to the audit log (whole line, fsync) and broadcasts it. A
    /// failure to write is logged, not answered: the change itself already happened.
    pub async fn record(&self, entry: AuditEntry) {
        let mut line = serde_json::to_vec(&entry).expect("serializable");
        line.push(b'\n');
        let (path, lock) = (self.audit_path.clone(), self.audit_lock.clone());
        let written = tokio::task::spawn_blocking(move || {
            let _guard = lock.lock();
            let mut f = sessiond_store::fs::open_private_append(&path)?;
            f.write_all(&line)?;
            f.sync_data()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.audit_path.display(), "the audit log cannot be written");
        }
        tracing::info!(action = %entry.action, target = %entry.target, outcome = %entry.outcome, "admin");
        let _ = self.events.send(entry);
    }

    /// The latest `limit` audit entries, newest first.
    pub async fn recent(&self, limit: usize) -> std::io::Result<Vec<AuditEntry>> {
        let path = self.audit_path.clone();
        tokio::task::spawn_blocking(move || {
            let mut f = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let len = f.metadata()?.len();
            let start = len.saturating_sub(AUDIT_TAIL_BYTES);
            f.seek(SeekFrom::Start(start))?;
            let mut reader = std::io::BufReader::new(f.take(len - start));
            if start > 0 {
                // Skip the partial first line.
                reader.read_until(b'\n', &mut Vec::new())?;
            }
            let mut out: Vec<AuditEntry> = reader
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| serde_json::from_str(&l).ok())
                .collect();
            out.reverse();
            out.truncate(limit);
            Ok(out)
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_expire_when_idle_end_at_sign_out_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let c = Console::new(dir.path());
        let t0 = Timestamp(1_000_000);
        let Opened { token, csrf } = c.sign_in(t0, "pw1").await;
        assert_eq!(c.check(&token, t0, true, "pw1").unwrap().csrf, csrf);
        assert!(c.check("other", t0, true, "pw1").is_none());
        let later = t0.plus(Duration::from_secs(3600));
        assert!(
            c.check(&token, later, true, "pw1").is_some(),
            "touch extends"
        );
        assert!(c.check(&token, later.plus(IDLE), false, "pw1").is_none());
        let Opened { token, csrf } = c.sign_in(t0, "pw1").await;
        let gone = c.sign_in(t0, "pw1").await.token;
        c.sign_out(&gone).await;
        assert!(c.check(&gone, t0, false, "pw1").is_none());
        let text = std::fs::read_to_string(dir.path().join(SESSIONS_FILE)).unwrap();
        assert!(!text.contains(&token), "only hashes of tokens are stored");
        let restarted = Console::new(dir.path());
        assert_eq!(
            restarted.check(&token, t0, false, "pw1").unwrap().csrf,
            csrf
        );
        assert!(restarted.check(&gone, t0, false, "pw1").is_none());
        assert!(
            restarted.check(&token, t0, false, "pw2").is_none(),
            "a new admin password ends console sessions"
        );
        assert!(restarted.check(&token, t0, false, "pw1").is_none());
        assert!(Console::csrf_matches("abc", "abc") && !Console::csrf_matches("abc", "abd"));
    }

    #[tokio::test]
    async fn audit_appends_lines_and_reads_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = Console::new(dir.path());
        let mut rx = c.events();
        for i in 0..3 {
            c.record(AuditEntry {
                time: Timestamp(0).to_iso8601(),
                who: "admin".into(),
                ip: "127.0.0.1".into(),
                via: Some(Via::Console),
                action: format!("a{i}"),
                target: String::new(),
                detail: Value::Null,
                outcome: "ok".into(),
            })
            .await;
        }
        assert_eq!(rx.recv().await.unwrap().action, "a0");
        let recent = c.recent(2).await.unwrap();
        assert_eq!(
            recent.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["a2", "a1"]
        );
        let text = std::fs::read_to_string(c.audit_path()).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
