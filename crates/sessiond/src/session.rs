//! [`Session`]: the handle application code uses, with the members of 4D's
//! `Session` object, and [`Session::current()`] (4D's `Session` command).
//!
//! A handle belongs to one request (4D: one process). Reads answer from the
//! request's snapshot; `storage()` re-reads the store; every change goes through the
//! store's atomic update. `promote()` lives in the handle only, so it is never seen
//! by another request of the same session.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use sessiond_core::{
    CookieToken, Error as CoreError, PrivilegeInput, Promotions, SessionId, SessionKind,
    SessionRecord, TokenHash,
};
use sessiond_store::{Requester, Sessions, SessionsError, Snapshot};

use crate::error::ApiError;

tokio::task_local! {
    static CURRENT: Session;
}

/// What the response must do with the session cookie.
#[derive(Debug, Default)]
pub(crate) enum CookieChange {
    /// Nothing.
    #[default]
    Keep,
    /// Set a new value.
    Set(CookieToken),
    /// Remove the cookie (the session ended).
    Remove,
}

struct State {
    snapshot: Snapshot,
    /// The hash of the cookie token this request presented or received.
    token: Option<TokenHash>,
    promotions: Promotions,
    cookie: CookieChange,
}

struct Inner {
    sessions: Sessions,
    /// A guest session not stored yet: stored (as the handle sees it) before its
    /// first change.
    unstored: std::sync::atomic::AtomicBool,
    // A blocking mutex: it is held only to copy or swap small values, never across
    // an `.await`.
    state: Mutex<State>,
}

/// The current request's session (4D's `Session` object).
///
/// ```no_run
/// use axum::{Router, routing::get};
/// use sessiond::Session;
///
/// async fn visits(session: Session) -> String {
///     let n = session
///         .update_storage(|s| {
///             let n = s.get("visits").and_then(|v| v.as_i64()).unwrap_or(0) + 1;
///             s.insert("visits".into(), n.into());
///             Ok(n)
///         })
///         .await
///         .unwrap();
///     format!("visit {n} of session {}", session.id())
/// }
/// # let _: Router = Router::new().route("/", get(visits));
/// ```
#[derive(Clone)]
pub struct Session(Arc<Inner>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.id())
    }
}

impl Session {
    /// A handle on `snapshot`, opened with the cookie token `token` (if any).
    pub fn new(sessions: Sessions, snapshot: Snapshot, token: Option<TokenHash>) -> Self {
        let state = State {
            snapshot,
            token,
            promotions: Promotions::default(),
            cookie: CookieChange::Keep,
        };
        Self(Arc::new(Inner {
            sessions,
            unstored: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(state),
        }))
    }

    /// A handle on a guest session that is not stored yet (its cookie is a guest
    /// ticket, `token` its hash); the session is stored at its first change.
    pub(crate) fn unstored(sessions: Sessions, snapshot: Snapshot, token: TokenHash) -> Self {
        let session = Self::new(sessions, snapshot, Some(token));
        session
            .0
            .unstored
            .store(true, std::sync::atomic::Ordering::Relaxed);
        session
    }

    /// Before the first change of a guest not stored yet: makes sure this node's
    /// registry knows it, so that the change stores it — with its creation time and
    /// address — in one write.
    fn before_change(&self) {
        use std::sync::atomic::Ordering;
        if self.0.unstored.swap(false, Ordering::Relaxed) {
            let (snapshot, token) = self.with(|s| (s.snapshot.clone(), s.token));
            if let Some(token) = token {
                self.0.sessions.note_guest(&snapshot, token);
            }
        }
    }

    /// A guest session that is not stored (a request whose cookie a raise ended moments
    /// ago): it reads as a new guest, its changes fail with
    /// [`SessionsError::NotFound`], and the response sets no cookie.
    pub(crate) fn unstored_guest(sessions: &Sessions, ip: Option<std::net::IpAddr>) -> Self {
        let now = sessions.now();
        let record = SessionRecord::new_web(now, sessions.policy(), ip);
        let snapshot = Snapshot {
            record: Arc::new(record),
            last_activity: now,
        };
        Self::new(sessions.clone(), snapshot, None)
    }

    /// 4D's `Session` command: the session of the running task, or `None` outside a
    /// session context (4D: Null).
    pub fn current() -> Option<Session> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` with this session as [`Session::current()`].
    pub async fn scope<F: Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }

    /// The request's view of the session.
    pub fn snapshot(&self) -> Snapshot {
        self.0.state.lock().snapshot.clone()
    }

    fn with<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.0.state.lock())
    }

    /// `Session.id`.
    pub fn id(&self) -> SessionId {
        self.with(|s| s.snapshot.record.id())
    }

    /// The kind of session.
    pub fn kind(&self) -> SessionKind {
        self.with(|s| s.snapshot.record.kind())
    }

    /// `Session.userName`.
    pub fn user_name(&self) -> String {
        self.with(|s| s.snapshot.record.user_name().to_string())
    }

    /// `Session.isGuest()`.
    pub fn is_guest(&self) -> bool {
        let force_login = self.0.sessions.roles().force_login();
        self.with(|s| s.snapshot.record.is_guest(force_login))
    }

    /// `Session.hasPrivilege(name)`, including privileges promoted in this request.
    pub fn has_privilege(&self, name: &str) -> bool {
        self.with(|s| s.snapshot.record.has_privilege(name, s.promotions.active()))
    }

    /// `Session.getPrivileges()` (promoted privileges excluded).
    pub fn get_privileges(&self) -> Vec<String> {
        self.with(|s| s.snapshot.record.get_privileges())
    }

    /// `Session.idleTimeout` in minutes (web sessions only).
    pub fn idle_timeout(&self) -> Option<u32> {
        self.with(|s| {
            (s.snapshot.record.kind() == SessionKind::Web)
                .then_some(s.snapshot.record.idle_timeout())
        })
    }

    /// `Session.expirationDate` (web sessions only).
    pub fn expiration_date(&self) -> Option<String> {
        self.with(|s| s.snapshot.expiration_date())
    }

    /// `Session.info`.
    pub fn info(&self) -> Value {
        self.with(|s| s.snapshot.record.info())
    }

    fn adopt(&self, snapshot: Snapshot) {
        self.0.state.lock().snapshot = snapshot;
    }

    /// `Session.storage`: the latest storage (a consistent snapshot of it).
    pub async fn storage(&self) -> Result<Arc<Map<String, Value>>, SessionsError> {
        let snapshot = self
            .0
            .sessions
            .get(&self.id())
            .await?
            .ok_or(SessionsError::NotFound)?;
        let storage = snapshot.record.storage().clone();
        self.adopt(snapshot);
        Ok(storage)
    }

    /// Changes `storage` atomically (4D's `Use(Session.storage)…End use`). `change`
    /// may run more than once on stores that retry; it must only touch the map.
    pub async fn update_storage<R: Send>(
        &self,
        change: impl FnMut(&mut Map<String, Value>) -> Result<R, CoreError> + Send,
    ) -> Result<R, SessionsError> {
        self.before_change();
        let (snapshot, out) = self
            .0
            .sessions
            .update_storage(&self.id(), None, change)
            .await?;
        self.adopt(snapshot);
        Ok(out)
    }

    async fn change_privileges(&self, set: Option<&PrivilegeInput>) -> Result<bool, SessionsError> {
        self.before_change();
        let (id, token) = self.with(|s| (s.snapshot.record.id(), s.token));
        let requester = if token.is_some() {
            Requester::Cookie
        } else {
            Requester::Server
        };
        let change = match set {
            Some(input) => {
                self.0
                    .sessions
                    .set_privileges(&id, input, requester)
                    .await?
            }
            None => self.0.sessions.clear_privileges(&id, requester).await?,
        };
        let mut state = self.0.state.lock();
        state.snapshot = change.snapshot;
        if let Some(cookie) = change.cookie {
            state.token = Some(cookie.hash());
            state.cookie = CookieChange::Set(cookie);
        }
        Ok(change.outcome.applied)
    }

    /// Parses a `setPrivileges()` argument (text, list or object) under the session
    /// policy.
    pub fn privilege_input(&self, v: &Value) -> Result<PrivilegeInput, SessionsError> {
        self.0.sessions.privilege_input(v)
    }

    /// `Session.setPrivileges(...)`: undeclared names are ignored (and logged). When it
    /// raises the session's rights, every other client's token ends and this request's
    /// client gets a fresh one on the response (docs/tokens.md).
    pub async fn set_privileges(&self, input: &PrivilegeInput) -> Result<bool, SessionsError> {
        self.change_privileges(Some(input)).await
    }

    /// `Session.clearPrivileges()`.
    pub async fn clear_privileges(&self) -> Result<bool, SessionsError> {
        self.change_privileges(None).await
    }

    /// Sets `Session.idleTimeout` (minutes; raised to the minimum, 60 by default).
    pub async fn set_idle_timeout(&self, minutes: u32) -> Result<u32, SessionsError> {
        self.before_change();
        let snapshot = self
            .0
            .sessions
            .set_idle_timeout(&self.id(), minutes)
            .await?;
        let value = snapshot.record.idle_timeout();
        self.adopt(snapshot);
        Ok(value)
    }

    /// `Session.createOTP({lifespan})`: the token, or `""` on a stored-procedure session.
    pub async fn create_otp(&self, lifespan: Option<Duration>) -> Result<String, SessionsError> {
        self.before_change();
        Ok(self
            .0
            .sessions
            .create_otp(&self.id(), lifespan)
            .await?
            .map(|t| t.to_string())
            .unwrap_or_default())
    }

    /// `Session.restore(token)`: this request continues in the session that created
    /// the OTP (and the response hands its cookie to the client). False — and nothing
    /// changes — when the token is used, expired, unknown or its session expired.
    pub async fn restore(&self, token: &str) -> Result<bool, SessionsError> {
        if self.kind() != SessionKind::Web {
            return Ok(false);
        }
        let Ok((snapshot, cookie)) = self.0.sessions.restore_otp(token).await? else {
            return Ok(false);
        };
        let mut state = self.0.state.lock();
        state.snapshot = snapshot;
        state.token = Some(cookie.hash());
        state.promotions = Promotions::default();
        state.cookie = CookieChange::Set(cookie);
        Ok(true)
    }

    /// `Session.promote(name)`: for this request only; 0 when refused.
    pub fn promote(&self, name: &str) -> u32 {
        let mut state = self.0.state.lock();
        let State {
            snapshot,
            promotions,
            ..
        } = &mut *state;
        promotions.promote(&snapshot.record, self.0.sessions.roles(), name)
    }

    /// `Session.demote(id)`.
    pub fn demote(&self, id: u32) {
        self.0.state.lock().promotions.demote(id);
    }

    /// Beyond 4D, an explicit logout: a web session ends now; a desktop session this
    /// client shares through an OTP goes on without it (only its token ends). The
    /// response removes the cookie.
    pub async fn end(&self) -> Result<bool, SessionsError> {
        let (id, token) = self.with(|s| (s.snapshot.record.id(), s.token));
        let existed = self.0.sessions.logout(&id, token.as_ref()).await?;
        self.0.state.lock().cookie = CookieChange::Remove;
        Ok(existed)
    }

    pub(crate) fn set_cookie(&self, cookie: CookieChange) {
        self.0.state.lock().cookie = cookie;
    }

    pub(crate) fn take_cookie_change(&self) -> CookieChange {
        std::mem::take(&mut self.0.state.lock().cookie)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Session>()
            .cloned()
            .ok_or_else(|| ApiError::internal("this route is not behind the session layer"))
    }
}
