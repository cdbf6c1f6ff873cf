//! [`Sessions`]: the operations on sessions that every surface shares (the web layer,
//! the service API, the CLI, later mobile and remote clients), over any
//! [`SessionStore`], with the roles, the policy and the clock in one place.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sessiond_core::{
    Clock, CookieToken, Error as CoreError, OtpRecord, OtpToken, PrivilegeInput, Roles, SessionId,
    SessionKind, SessionPolicy, SessionRecord, SetPrivilegesOutcome, Timestamp, TokenHash,
};

use crate::store::{SessionStore, Snapshot, StoreError, Update};

/// Errors of session operations.
#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    /// No live session has that id.
    #[error("no such session (unknown or expired)")]
    NotFound,
    /// The input does not apply; nothing changed.
    #[error(transparent)]
    Invalid(#[from] CoreError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which cookie tokens a privilege change retires (fixation protection).
#[derive(Debug, Clone, Copy)]
pub enum Rotation<'a> {
    /// The token of the request that made the change (the web layer).
    Token(&'a TokenHash),
    /// Every current token (changes made from outside, e.g. the service API); the new
    /// cookie must then be handed to the client by the caller.
    AllTokens,
}

/// The result of a privilege change.
#[derive(Debug)]
pub struct PrivilegeChange {
    /// The session after the change.
    pub snapshot: Snapshot,
    /// The function's return value and the ignored names.
    pub outcome: SetPrivilegesOutcome,
    /// The new cookie for the client, when the session's token rotated.
    pub cookie: Option<CookieToken>,
}

/// Which sessions an activity listing returns (4D's `Process activity` filters).
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    /// Only this session.
    pub session: Option<SessionId>,
    /// Only this kind.
    pub kind: Option<SessionKind>,
    /// Only sessions of this user (case-sensitive, as `userName`).
    pub user_name: Option<String>,
}

/// Number of update queues (sessions share a queue by their id's last byte).
const TURNS: usize = 256;

struct Inner {
    /// This node's name, written into the sessions it creates.
    node: Option<Arc<str>>,
    /// One queue per id bucket: updates of one session from this process run one at
    /// a time (see [`Sessions::update`]).
    turns: Box<[tokio::sync::Mutex<()>]>,
    store: Arc<dyn SessionStore>,
    roles: Arc<Roles>,
    clock: Arc<dyn Clock>,
    policy: SessionPolicy,
}

/// Session operations over a store. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use sessiond_core::{PrivilegeInput, Roles, SessionPolicy, SystemClock};
/// use sessiond_store::{MemoryStore, Rotation, Sessions};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let roles = Roles::parse(r#"{"privileges":[{"privilege":"admin"}]}"#, "roles.json").unwrap();
/// let sessions = Sessions::new(Arc::new(MemoryStore::new()), Arc::new(roles), Arc::new(SystemClock), SessionPolicy::default());
/// let (snapshot, cookie) = sessions.create_web(None).await.unwrap();
/// let change = sessions
///     .set_privileges(&snapshot.record.id, &PrivilegeInput::names(["admin"]), Rotation::Token(&cookie.hash()))
///     .await
///     .unwrap();
/// assert!(change.snapshot.record.has_privilege("ADMIN", &[]));
/// assert!(change.cookie.is_some(), "the cookie token rotates");
/// # });
/// ```
#[derive(Clone)]
pub struct Sessions(Arc<Inner>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("store", &self.0.store)
            .finish_non_exhaustive()
    }
}

/// Activity newer than this is not written again by a read (keeps reads write-free
/// on stores where a touch costs a round trip).
const TOUCH_GRANULARITY: Duration = Duration::from_secs(1);

impl Sessions {
    /// Sessions in `store`, governed by `roles` and `policy`, timed by `clock`.
    pub fn new(
        store: Arc<dyn SessionStore>,
        roles: Arc<Roles>,
        clock: Arc<dyn Clock>,
        policy: SessionPolicy,
    ) -> Self {
        Self(Arc::new(Inner {
            node: None,
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            store,
            roles,
            clock,
            policy,
        }))
    }

    /// Names this node: sessions it creates carry the name (shown by the activity
    /// listing when several nodes share a store). Call before cloning.
    #[must_use]
    pub fn with_node(mut self, name: &str) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.node = Some(Arc::from(name));
        }
        self
    }

    /// This node's name, if set.
    pub fn node(&self) -> Option<&str> {
        self.0.node.as_deref()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.0.store
    }

    /// The roles.
    pub fn roles(&self) -> &Roles {
        &self.0.roles
    }

    /// The policy.
    pub fn policy(&self) -> &SessionPolicy {
        &self.0.policy
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.0.clock.now()
    }

    /// Creates a guest web session and the cookie token of its first client.
    pub async fn create_web(
        &self,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(Snapshot, CookieToken), SessionsError> {
        let now = self.now();
        let token = CookieToken::new_session();
        let mut record = SessionRecord::with_id(
            token.session_id(),
            SessionKind::Web,
            now,
            &self.0.policy,
            ip,
            None,
        );
        record.add_token(token.hash(), now, &self.0.policy);
        record.node.clone_from(&self.0.node);
        let snapshot = self.0.store.insert(record, now).await?;
        Ok((snapshot, token))
    }

    /// Stores a session built by the caller (remote and stored-procedure sessions).
    pub async fn insert(&self, mut record: SessionRecord) -> Result<Snapshot, SessionsError> {
        let now = self.now();
        if record.node.is_none() {
            record.node.clone_from(&self.0.node);
        }
        Ok(self.0.store.insert(record, now).await?)
    }

    /// Finds the live session a cookie value opens, records the activity, and returns
    /// it with the token's hash. Malformed, unknown, expired or retired tokens → `None`.
    pub async fn resolve_cookie(
        &self,
        value: &str,
    ) -> Result<Option<(Snapshot, TokenHash)>, SessionsError> {
        match value.parse::<CookieToken>() {
            Ok(token) => self.resolve_token(&token).await,
            Err(_) => Ok(None),
        }
    }

    /// [`Sessions::resolve_cookie`] for a token already parsed.
    pub async fn resolve_token(
        &self,
        token: &CookieToken,
    ) -> Result<Option<(Snapshot, TokenHash)>, SessionsError> {
        let now = self.now();
        let id = token.session_id();
        let Some(snapshot) = self.0.store.get(&id, now).await? else {
            return Ok(None);
        };
        let hash = token.hash();
        if !snapshot.record.accepts_token(&hash, now) {
            return Ok(None);
        }
        Ok(self
            .record_activity(snapshot, now)
            .await?
            .map(|s| (s, hash)))
    }

    /// Counts a read as activity: the store is written only when the last recorded
    /// activity is older than the touch granularity (one second).
    async fn record_activity(
        &self,
        snapshot: Snapshot,
        now: Timestamp,
    ) -> Result<Option<Snapshot>, SessionsError> {
        if now.since(snapshot.last_activity) < TOUCH_GRANULARITY {
            return Ok(Some(snapshot));
        }
        Ok(self.0.store.touch(&snapshot.record.id, now).await?)
    }

    /// A live session, without counting as activity.
    pub async fn get(&self, id: &SessionId) -> Result<Option<Snapshot>, SessionsError> {
        Ok(self.0.store.get(id, self.now()).await?)
    }

    /// A live session, counted as activity (written to the store at most once a second).
    pub async fn touch(&self, id: &SessionId) -> Result<Option<Snapshot>, SessionsError> {
        let now = self.now();
        match self.0.store.get(id, now).await? {
            Some(snapshot) => self.record_activity(snapshot, now).await,
            None => Ok(None),
        }
    }

    /// Applies `change` to the record atomically.
    pub async fn update<R: Send>(
        &self,
        id: &SessionId,
        mut change: impl FnMut(&mut SessionRecord) -> Result<R, CoreError> + Send,
    ) -> Result<(Snapshot, R), SessionsError> {
        // Queue this process's updates of one session, so that stores that update
        // optimistically (compare-and-set) see at most one writer per session per
        // node; only writers on other nodes can still collide.
        let _turn = if self.0.store.updates_in_place() {
            None
        } else {
            Some(
                self.0.turns[usize::from(id.as_bytes()[15]) % TURNS]
                    .lock()
                    .await,
            )
        };
        let mut out = None;
        let mut f = |rec: &mut SessionRecord| {
            out = Some(change(rec)?);
            Ok(())
        };
        match self.0.store.update(id, self.now(), &mut f).await? {
            Update::Updated(s) => Ok((s, out.expect("the change ran"))),
            Update::Rejected(e) => Err(e.into()),
            Update::NotFound => Err(SessionsError::NotFound),
        }
    }

    /// Changes `storage` atomically (4D's `Use(Session.storage)…End use`): `change` sees
    /// the current storage; no concurrent change is lost. With `if_match`, the change
    /// applies only if the storage version is still that one.
    pub async fn update_storage<R: Send>(
        &self,
        id: &SessionId,
        if_match: Option<u64>,
        mut change: impl FnMut(&mut Map<String, Value>) -> Result<R, CoreError> + Send,
    ) -> Result<(Snapshot, R), SessionsError> {
        self.update(id, |rec| {
            if let Some(expected) = if_match {
                if rec.storage_version != expected {
                    return Err(CoreError::VersionMismatch {
                        expected,
                        actual: rec.storage_version,
                    });
                }
            }
            let mut storage = Map::clone(&rec.storage);
            let out = change(&mut storage)?;
            *rec.storage_mut() = storage;
            Ok(out)
        })
        .await
    }

    /// `setPrivileges()`; rotates the cookie token of a web session.
    pub async fn set_privileges(
        &self,
        id: &SessionId,
        input: &PrivilegeInput,
        rotation: Rotation<'_>,
    ) -> Result<PrivilegeChange, SessionsError> {
        self.change_privileges(id, rotation, |rec, roles, policy| {
            rec.set_privileges(roles, input, policy)
        })
        .await
    }

    /// `clearPrivileges()`; rotates the cookie token of a web session.
    pub async fn clear_privileges(
        &self,
        id: &SessionId,
        rotation: Rotation<'_>,
    ) -> Result<PrivilegeChange, SessionsError> {
        self.change_privileges(id, rotation, |rec, _, policy| SetPrivilegesOutcome {
            applied: rec.clear_privileges(policy),
            unknown: Vec::new(),
        })
        .await
    }

    async fn change_privileges(
        &self,
        id: &SessionId,
        rotation: Rotation<'_>,
        change: impl Fn(&mut SessionRecord, &Roles, &SessionPolicy) -> SetPrivilegesOutcome
        + Send
        + Sync,
    ) -> Result<PrivilegeChange, SessionsError> {
        let cookie = CookieToken::issue(*id);
        let new_hash = cookie.hash();
        let now = self.now();
        let (snapshot, outcome) = self
            .update(id, |rec| {
                let outcome = change(rec, &self.0.roles, &self.0.policy);
                if rec.kind == SessionKind::Web {
                    let old = match rotation {
                        Rotation::Token(t) => Some(t),
                        Rotation::AllTokens => None,
                    };
                    rec.rotate_token(old, new_hash, now, &self.0.policy);
                }
                Ok(outcome)
            })
            .await?;
        if !outcome.unknown.is_empty() {
            tracing::warn!(session = %id, unknown = ?outcome.unknown, "setPrivileges: names not declared in roles.json were ignored");
        }
        let cookie = (snapshot.record.kind == SessionKind::Web).then_some(cookie);
        Ok(PrivilegeChange {
            snapshot,
            outcome,
            cookie,
        })
    }

    /// Sets `idleTimeout` (minutes, clamped by the policy).
    pub async fn set_idle_timeout(
        &self,
        id: &SessionId,
        minutes: u32,
    ) -> Result<Snapshot, SessionsError> {
        Ok(self
            .update(id, |rec| rec.set_idle_timeout(minutes, &self.0.policy))
            .await?
            .0)
    }

    /// `createOTP({lifespan})`: the token, or `None` where 4D returns `""`.
    pub async fn create_otp(
        &self,
        id: &SessionId,
        lifespan: Option<Duration>,
    ) -> Result<Option<OtpToken>, SessionsError> {
        let now = self.now();
        let snapshot = self
            .0
            .store
            .get(id, now)
            .await?
            .ok_or(SessionsError::NotFound)?;
        let Some((token, record)) =
            OtpRecord::create(&snapshot.record, lifespan, now, &self.0.policy)
        else {
            return Ok(None);
        };
        self.0.store.insert_otp(record, now).await?;
        Ok(Some(token))
    }

    /// Consumes an OTP (`restore()` / `$4DSID`): the session it opens and a new cookie
    /// token for the restoring client. `None` when the token is malformed, unknown,
    /// used, expired, or its session expired; the OTP is spent in every case.
    pub async fn restore_otp(
        &self,
        token: &str,
    ) -> Result<Option<(Snapshot, CookieToken)>, SessionsError> {
        let Ok(token) = token.trim().parse::<OtpToken>() else {
            return Ok(None);
        };
        let now = self.now();
        let Some(otp) = self.0.store.take_otp(&token.hash(), now).await? else {
            return Ok(None);
        };
        let cookie = CookieToken::issue(otp.session);
        let hash = cookie.hash();
        match self
            .update(&otp.session, |rec| {
                if rec.kind != SessionKind::Web {
                    return Err(CoreError::NotSupported {
                        member: "restore",
                        kind: rec.kind,
                    });
                }
                rec.add_token(hash, now, &self.0.policy);
                Ok(())
            })
            .await
        {
            Ok((snapshot, ())) => Ok(Some((snapshot, cookie))),
            Err(SessionsError::NotFound | SessionsError::Invalid(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ends a session now; true if it existed.
    pub async fn remove(&self, id: &SessionId) -> Result<bool, SessionsError> {
        Ok(self.0.store.remove(id).await?)
    }

    /// Live sessions matching `filter` (4D's `Process activity` sessions list).
    pub async fn activity(&self, filter: &ActivityFilter) -> Result<Vec<Snapshot>, SessionsError> {
        let now = self.now();
        if let Some(id) = filter.session {
            let one = self.0.store.get(&id, now).await?;
            return Ok(one
                .into_iter()
                .filter(|s| matches(filter, &s.record))
                .collect());
        }
        let mut all = self.0.store.list(now).await?;
        all.retain(|s| matches(filter, &s.record));
        all.sort_by_key(|s| (s.record.created, s.record.id));
        Ok(all)
    }

    /// Starts the one background reaper: every `period`, frees what has expired.
    pub fn spawn_reaper(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match this.0.store.purge_expired(this.now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(expired = n, "purged expired sessions"),
                    Err(e) => tracing::warn!(error = %e, "purging expired sessions failed"),
                }
            }
        })
    }
}

fn matches(f: &ActivityFilter, r: &SessionRecord) -> bool {
    f.kind.is_none_or(|k| k == r.kind) && f.user_name.as_deref().is_none_or(|u| u == &*r.user_name)
}
