//! [`Sessions`]: the operations on sessions that every surface shares (the web layer,
//! the service API, the CLI, later mobile and remote clients), over any
//! [`SessionStore`], with the roles, the policy and the clock in one place.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use sessiond_core::storage;
use sessiond_core::tokens::after_rights_change;
use sessiond_core::{
    Clock, CookieToken, Error as CoreError, GuestKey, OtpRecord, OtpToken, PrivilegeInput, Rights,
    Roles, SessionId, SessionKind, SessionPolicy, SessionRecord, SetPrivilegesOutcome, Timestamp,
    TokenHash, TokenState,
};

use crate::guests::{Guest, UnstoredGuests};
use crate::store::{SessionStore, Snapshot, StoreError, Update};

/// Errors of session operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// Who makes a privilege change, which decides who gets a fresh cookie token when
/// the change raises the session's rights (docs/tokens.md). Every other token ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// A client presenting a cookie of the session (the web layer): it gets the fresh
    /// token, whatever the session's kind (a web client sharing a desktop session too).
    Cookie,
    /// An application backend (the service API): a web session gets a fresh token,
    /// returned for the backend to hand to its browser.
    Backend,
    /// Server-side code without a cookie (remote clients, stored procedures, mobile
    /// logins): no fresh token.
    Server,
}

/// The result of a privilege change.
#[derive(Debug)]
pub struct PrivilegeChange {
    /// The session after the change.
    pub snapshot: Snapshot,
    /// The function's return value and the ignored names.
    pub outcome: SetPrivilegesOutcome,
    /// Whether the change raised the session's rights (every earlier token ended).
    pub raised: bool,
    /// The requester's fresh cookie, after a raise.
    pub cookie: Option<CookieToken>,
}

/// What a cookie token opens (docs/tokens.md).
#[derive(Debug)]
pub enum Resolved {
    /// The session, and the token's hash.
    Open(Snapshot, TokenHash),
    /// A guest session that is not stored yet, and its ticket's hash; `refreshed` is
    /// a new ticket for the client (its last activity moved on).
    Unstored {
        /// The guest as its ticket describes it.
        snapshot: Snapshot,
        /// The ticket's hash.
        hash: TokenHash,
        /// A ticket with the new last activity, when the old one is a minute old.
        refreshed: Option<CookieToken>,
    },
    /// A token a raise ended within the grace window: the request runs as a guest that
    /// is not stored, and its response sets no cookie.
    Ended,
    /// Nothing (malformed, unknown, expired, evicted, or ended long enough ago): the
    /// request gets a new guest session.
    Unknown,
}

/// Why an OTP restore was refused. A refused restore leaves the OTP as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpRefusal {
    /// Malformed, unknown, already used, or expired.
    Invalid,
    /// The session that created it has ended.
    SessionEnded,
}

impl OtpRefusal {
    /// The error code the HTTP surfaces answer with (404).
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "otp_invalid",
            Self::SessionEnded => "otp_session_ended",
        }
    }

    /// What happened, for people.
    pub fn message(self) -> &'static str {
        match self {
            Self::Invalid => "the token is unknown, used or expired",
            Self::SessionEnded => "the session that created the token has ended",
        }
    }
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
    /// Derives the ids and cookie secrets of guest sessions that are not stored.
    guest_key: GuestKey,
    /// The unstored guests this node issued or saw, for access by id.
    guests: UnstoredGuests,
}

/// Session operations over a store. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use sessiond_core::{PrivilegeInput, Roles, SessionPolicy, SystemClock};
/// use sessiond_store::{MemoryStore, Requester, Sessions};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let roles = Roles::parse(r#"{"privileges":[{"privilege":"admin"}]}"#, "roles.json").unwrap();
/// let sessions = Sessions::new(Arc::new(MemoryStore::new()), Arc::new(roles), Arc::new(SystemClock), SessionPolicy::default());
/// let (snapshot, cookie) = sessions.create_web(None).await.unwrap();
/// let change = sessions
///     .set_privileges(&snapshot.record.id(), &PrivilegeInput::names(["admin"]), Requester::Cookie)
///     .await
///     .unwrap();
/// assert!(change.snapshot.record.has_privilege("ADMIN", &[]));
/// assert!(change.raised && change.cookie.is_some(), "a raise issues a fresh token");
/// assert_ne!(cookie.hash(), change.cookie.unwrap().hash(), "and ends the old one");
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

/// A guest ticket's last activity is renewed (a new cookie) once it is this old.
const TICKET_REFRESH: Duration = Duration::from_secs(60);

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
            guest_key: GuestKey::random(),
            guests: UnstoredGuests::default(),
        }))
    }

    /// The key of guest sessions that are not stored ([`SessionPolicy::lazy_guests`]).
    /// Every node sharing a store must use the same key, and keeping it across
    /// restarts keeps guests' cookies working (default: a random key per instance).
    /// Call before cloning.
    #[must_use]
    pub fn with_guest_key(mut self, key: GuestKey) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.0) {
            inner.guest_key = key;
        }
        self
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

    /// Creates a guest web session and the cookie token of its first client. With
    /// [`SessionPolicy::lazy_guests`] nothing is stored: the cookie is a guest ticket,
    /// and the session is stored at its first change.
    pub async fn create_web(
        &self,
        ip: Option<std::net::IpAddr>,
    ) -> Result<(Snapshot, CookieToken), SessionsError> {
        let now = self.now();
        if self.0.policy.lazy_guests {
            let id = self.0.guest_key.new_id();
            let ticket = self.0.guest_key.ticket(id, now, now);
            let guest = Guest {
                created: now,
                last: now,
                ip,
                token: ticket.hash(),
            };
            self.0.guests.note(id, guest);
            let snapshot = Snapshot {
                record: Arc::new(self.guest_record(id, &guest)),
                last_activity: now,
            };
            return Ok((snapshot, ticket));
        }
        let token = CookieToken::new_session();
        let mut record = SessionRecord::with_id(
            token.session_id(),
            SessionKind::Web,
            now,
            &self.0.policy,
            ip,
            None,
        );
        record.tokens_mut().issue(token.hash(), now, &self.0.policy);
        record.set_node(self.0.node.clone());
        let snapshot = self.0.store.insert(record, now).await?;
        Ok((snapshot, token))
    }

    /// The record of guest session `id` (made by the guest key) as first stored:
    /// empty, its ticket's secret as its one token.
    fn guest_record(&self, id: SessionId, guest: &Guest) -> SessionRecord {
        let policy = &self.0.policy;
        let mut record =
            SessionRecord::with_id(id, SessionKind::Web, guest.created, policy, guest.ip, None);
        record
            .tokens_mut()
            .issue(guest.token, guest.created, policy);
        record.set_node(self.0.node.clone());
        record
    }

    /// Stores a guest session that was not stored yet, as last active at
    /// `last_activity`; an id stored meanwhile is left as it is.
    pub async fn materialize(
        &self,
        record: &SessionRecord,
        last_activity: Timestamp,
    ) -> Result<(), SessionsError> {
        match self.0.store.insert(record.clone(), last_activity).await {
            Ok(_) | Err(StoreError::Duplicate(_)) => {
                self.0.guests.forget(&record.id());
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Notes a guest that is not stored (a handle on it, opened with the ticket whose
    /// secret hashes to `token`), so that its first change stores it with its
    /// creation time and address.
    pub fn note_guest(&self, snapshot: &Snapshot, token: TokenHash) {
        let r = &snapshot.record;
        let guest = Guest {
            created: r.created(),
            last: snapshot.last_activity,
            ip: r.ip(),
            token,
        };
        self.0.guests.note(r.id(), guest);
    }

    /// The unstored guest `id` as this node knows it (not expired at `now`):
    /// (record, last activity).
    fn known_guest(&self, id: &SessionId, now: Timestamp) -> Option<(SessionRecord, Timestamp)> {
        let guest = self.0.guests.get(id)?;
        let record = self.guest_record(*id, &guest);
        (!record.is_expired(guest.last, now)).then_some((record, guest.last))
    }

    /// What an unstored guest ticket opens at `now`.
    fn unstored(&self, token: &CookieToken, now: Timestamp) -> Resolved {
        let key = &self.0.guest_key;
        let Some((created, last)) = token.stamp() else {
            return Resolved::Unknown;
        };
        if !key.recognizes(token) {
            return Resolved::Unknown;
        }
        let id = token.session_id();
        let mut guest = Guest {
            created,
            last,
            ip: None,
            token: token.hash(),
        };
        let record = self.guest_record(id, &guest);
        if record.is_expired(last, now) {
            return Resolved::Unknown;
        }
        let refreshed = (now.since(last) >= TICKET_REFRESH).then(|| key.ticket(id, created, now));
        guest.last = if refreshed.is_some() { now } else { last };
        let last_activity = guest.last;
        self.0.guests.note(id, guest);
        Resolved::Unstored {
            snapshot: Snapshot {
                record: Arc::new(record),
                last_activity,
            },
            hash: token.hash(),
            refreshed,
        }
    }

    /// Stores a session built by the caller (remote and stored-procedure sessions).
    pub async fn insert(&self, mut record: SessionRecord) -> Result<Snapshot, SessionsError> {
        let now = self.now();
        if record.node().is_none() {
            record.set_node(self.0.node.clone());
        }
        Ok(self.0.store.insert(record, now).await?)
    }

    /// What a cookie value opens ([`Resolved`]); an opened session counts the request
    /// as activity.
    pub async fn resolve_cookie(&self, value: &str) -> Result<Resolved, SessionsError> {
        match value.parse::<CookieToken>() {
            Ok(token) => self.resolve_token(&token).await,
            Err(_) => Ok(Resolved::Unknown),
        }
    }

    /// [`Sessions::resolve_cookie`] for a token already parsed. A session held by
    /// several clients also records which of them used it last (the eviction order).
    pub async fn resolve_token(&self, token: &CookieToken) -> Result<Resolved, SessionsError> {
        let now = self.now();
        let hash = token.hash();
        let snapshot = match self.0.store.get(&token.session_id(), now).await? {
            Some(s) if s.record.ended() => return Ok(Resolved::Unknown),
            Some(s) => s,
            None => return Ok(self.unstored(token, now)),
        };
        match snapshot.record.tokens().state(&hash, now) {
            TokenState::Opens => {}
            TokenState::Ended => return Ok(Resolved::Ended),
            TokenState::Unknown => return Ok(Resolved::Unknown),
        }
        let snapshot = if snapshot.record.tokens().needs_use_mark(&hash) {
            match self
                .update(&snapshot.record.id(), |rec| {
                    rec.tokens_mut().mark_used(&hash, now);
                    Ok(())
                })
                .await
            {
                Ok((s, ())) => Some(s),
                Err(SessionsError::NotFound) => None,
                Err(e) => return Err(e),
            }
        } else {
            self.record_activity(snapshot, now).await?
        };
        // The token may have ended between the read and the write.
        Ok(match snapshot {
            Some(s) if s.record.tokens().state(&hash, now) == TokenState::Opens => {
                Resolved::Open(s, hash)
            }
            Some(_) => Resolved::Ended,
            None => Resolved::Unknown,
        })
    }

    /// What `token` would open now, without counting as activity (inspection and
    /// tests).
    pub async fn token_state(
        &self,
        token: &CookieToken,
    ) -> Result<(TokenState, Option<Snapshot>), SessionsError> {
        let now = self.now();
        Ok(match self.0.store.get(&token.session_id(), now).await? {
            Some(s) if s.record.ended() => (TokenState::Unknown, None),
            Some(s) => (s.record.tokens().state(&token.hash(), now), Some(s)),
            None => match self.unstored(token, now) {
                Resolved::Unstored { snapshot, .. } => (TokenState::Opens, Some(snapshot)),
                _ => (TokenState::Unknown, None),
            },
        })
    }

    /// A live session from the store (not an ended guest), or an unstored guest this
    /// node knows.
    async fn lookup(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<Snapshot>, SessionsError> {
        Ok(match self.0.store.get(id, now).await? {
            Some(s) if s.record.ended() => None,
            Some(s) => Some(s),
            None => self
                .known_guest(id, now)
                .map(|(record, last_activity)| Snapshot {
                    record: Arc::new(record),
                    last_activity,
                }),
        })
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
        Ok(self.0.store.touch(&snapshot.record.id(), now).await?)
    }

    /// A live session, without counting as activity (a guest not stored yet reads as
    /// an empty guest).
    pub async fn get(&self, id: &SessionId) -> Result<Option<Snapshot>, SessionsError> {
        self.lookup(id, self.now()).await
    }

    /// A live session, counted as activity (written to the store at most once a second).
    pub async fn touch(&self, id: &SessionId) -> Result<Option<Snapshot>, SessionsError> {
        let now = self.now();
        match self.0.store.get(id, now).await? {
            Some(s) if s.record.ended() => Ok(None),
            Some(snapshot) => self.record_activity(snapshot, now).await,
            None => self.lookup(id, now).await,
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
        let ended = std::sync::atomic::AtomicBool::new(false);
        let policy = &self.0.policy;
        let mut f = |rec: &mut SessionRecord| {
            if rec.ended() {
                ended.store(true, std::sync::atomic::Ordering::Relaxed);
                return Err(CoreError::InvalidId);
            }
            let storage_version = rec.storage_version();
            out = Some(change(rec)?);
            // Every write of the storage, whatever the surface, stays within the limits.
            if rec.storage_version() != storage_version {
                storage::check_limits(rec.storage(), policy)?;
            }
            Ok(())
        };
        let rejected = |e: CoreError| {
            if ended.load(std::sync::atomic::Ordering::Relaxed) {
                SessionsError::NotFound
            } else {
                e.into()
            }
        };
        // A guest this node issued and has not stored: its first change stores it, in
        // one write and without looking for it in the store first (the insert finds
        // it if another node stored it meanwhile, and the change then applies there).
        let now = self.now();
        if let Some((mut record, _)) = self.known_guest(id, now) {
            f(&mut record).map_err(rejected)?;
            record.set_version(record.version() + 1);
            match self.0.store.insert(record, now).await {
                Ok(s) => {
                    self.0.guests.forget(id);
                    return Ok((s, out.expect("the change ran")));
                }
                // Stored elsewhere: later changes go straight to the store.
                Err(StoreError::Duplicate(_)) => self.0.guests.forget(id),
                Err(e) => return Err(e.into()),
            }
        }
        match self.0.store.update(id, self.now(), &mut f).await? {
            Update::Updated(s) => Ok((s, out.expect("the change ran"))),
            Update::Rejected(e) => Err(rejected(e)),
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
            if let Some(expected) = if_match
                && rec.storage_version() != expected
            {
                return Err(CoreError::VersionMismatch {
                    expected,
                    actual: rec.storage_version(),
                });
            }
            // A copy, so that a change that fails leaves the record as it was.
            let mut storage = Map::clone(rec.storage());
            let out = change(&mut storage)?;
            rec.set_storage(storage);
            Ok(out)
        })
        .await
    }

    /// Parses a `setPrivileges()` argument (any of its three JSON forms) under this
    /// policy.
    pub fn privilege_input(&self, v: &Value) -> Result<PrivilegeInput, SessionsError> {
        Ok(PrivilegeInput::from_json(v, &self.0.policy)?)
    }

    /// `setPrivileges()`. A raise ends every other cookie token (docs/tokens.md).
    pub async fn set_privileges(
        &self,
        id: &SessionId,
        input: &PrivilegeInput,
        requester: Requester,
    ) -> Result<PrivilegeChange, SessionsError> {
        self.change_privileges(id, requester, |rec, roles, policy| {
            rec.set_privileges(roles, input, policy)
        })
        .await
    }

    /// `clearPrivileges()` (a lowering: tokens stay, unless it also resets `userName`).
    pub async fn clear_privileges(
        &self,
        id: &SessionId,
        requester: Requester,
    ) -> Result<PrivilegeChange, SessionsError> {
        self.change_privileges(id, requester, |rec, _, policy| SetPrivilegesOutcome {
            applied: rec.clear_privileges(policy),
            unknown: Vec::new(),
        })
        .await
    }

    /// Every privilege change goes through here: the change, then the token rules of
    /// a raise, in one atomic update.
    async fn change_privileges(
        &self,
        id: &SessionId,
        requester: Requester,
        change: impl Fn(&mut SessionRecord, &Roles, &SessionPolicy) -> SetPrivilegesOutcome
        + Send
        + Sync,
    ) -> Result<PrivilegeChange, SessionsError> {
        let cookie = CookieToken::issue(*id);
        let fresh = cookie.hash();
        let now = self.now();
        let (snapshot, (outcome, raised, issued, evicted)) = self
            .update(id, |rec| {
                let before = Rights::of(rec);
                let outcome = change(rec, &self.0.roles, &self.0.policy);
                let issue = match requester {
                    Requester::Cookie => true,
                    Requester::Backend => rec.kind() == SessionKind::Web,
                    Requester::Server => false,
                };
                let (raised, evicted) =
                    after_rights_change(rec, &before, issue.then_some(fresh), now, &self.0.policy);
                Ok((outcome, raised, raised && issue, evicted))
            })
            .await?;
        if !outcome.unknown.is_empty() {
            tracing::warn!(session = %id, unknown = ?outcome.unknown, "setPrivileges: names not declared in roles.json were ignored");
        }
        self.log_evictions(id, evicted);
        Ok(PrivilegeChange {
            snapshot,
            outcome,
            raised,
            cookie: issued.then_some(cookie),
        })
    }

    fn log_evictions(&self, id: &SessionId, evicted: usize) {
        if evicted > 0 {
            tracing::warn!(
                session = %id,
                evicted,
                max_tokens_per_session = self.0.policy.max_tokens_per_session,
                "a session held by too many clients: the least recently used cookie tokens were evicted"
            );
        }
    }

    /// The client holding `token` leaves session `id` (logout): a web session ends;
    /// a desktop session it shares through an OTP goes on, only its token ends. True
    /// if there was something to end.
    pub async fn logout(
        &self,
        id: &SessionId,
        token: Option<&TokenHash>,
    ) -> Result<bool, SessionsError> {
        let Some(snapshot) = self.get(id).await? else {
            return Ok(false);
        };
        if snapshot.record.kind() == SessionKind::Web {
            return self.remove(id).await;
        }
        let Some(token) = token else {
            return Ok(false);
        };
        match self
            .update(id, |rec| Ok(rec.tokens_mut().remove(token)))
            .await
        {
            Ok((_, removed)) => Ok(removed),
            Err(SessionsError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
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
        let snapshot = match self.0.store.get(id, now).await? {
            Some(s) if s.record.ended() => return Err(SessionsError::NotFound),
            Some(s) => s,
            // A guest not stored yet is stored now: the restore will add a token.
            None => {
                let (record, last) = self.known_guest(id, now).ok_or(SessionsError::NotFound)?;
                self.materialize(&record, last).await?;
                self.0
                    .store
                    .get(id, now)
                    .await?
                    .ok_or(SessionsError::NotFound)?
            }
        };
        let Some((token, record)) =
            OtpRecord::create(&snapshot.record, lifespan, now, &self.0.policy)
        else {
            return Ok(None);
        };
        self.0.store.insert_otp(record, now).await?;
        Ok(Some(token))
    }

    /// Consumes an OTP (`restore()`, `$4DSID`, the service API): the session it opens —
    /// a web session, or a remote or stored-procedures session shared with the web
    /// (4D 21's desktop sharing) — and a new cookie token for the restoring client;
    /// the session's other clients keep theirs. A refusal says why and leaves the OTP
    /// as it was (an OTP taken when the store then failed is put back).
    pub async fn restore_otp(
        &self,
        token: &str,
    ) -> Result<Result<(Snapshot, CookieToken), OtpRefusal>, SessionsError> {
        let Ok(token) = token.trim().parse::<OtpToken>() else {
            return Ok(Err(OtpRefusal::Invalid));
        };
        let now = self.now();
        let Some(otp) = self.0.store.take_otp(&token.hash(), now).await? else {
            return Ok(Err(OtpRefusal::Invalid));
        };
        let cookie = CookieToken::issue(otp.session);
        let hash = cookie.hash();
        match self
            .update(&otp.session, |rec| {
                Ok(rec.tokens_mut().issue(hash, now, &self.0.policy))
            })
            .await
        {
            Ok((snapshot, evicted)) => {
                self.log_evictions(&otp.session, evicted);
                Ok(Ok((snapshot, cookie)))
            }
            Err(SessionsError::NotFound) => Ok(Err(OtpRefusal::SessionEnded)),
            Err(e) => {
                if let Err(again) = self.0.store.insert_otp(otp, now).await {
                    tracing::warn!(error = %again, "an OTP taken before a store failure could not be put back");
                }
                Err(e)
            }
        }
    }

    /// Ends a session now; true if it was live. A guest session made by the guest
    /// key leaves an empty, token-less record behind until its tickets have expired
    /// (so that none of them opens a guest with this id again).
    pub async fn remove(&self, id: &SessionId) -> Result<bool, SessionsError> {
        if !self.0.guest_key.made(id) {
            return Ok(self.0.store.remove(id).await?);
        }
        let now = self.now();
        let policy = &self.0.policy;
        let unstored = self.known_guest(id, now).is_some();
        self.0.guests.forget(id);
        let mut existed = false;
        let mut end = |rec: &mut SessionRecord| {
            existed = !rec.ended();
            *rec = SessionRecord::ended_guest(rec.id(), rec.created(), rec.version(), policy);
            Ok(())
        };
        match self.0.store.update(id, now, &mut end).await? {
            Update::Updated(_) => Ok(existed),
            Update::Rejected(e) => Err(e.into()),
            Update::NotFound => {
                let tomb = SessionRecord::ended_guest(*id, now, 1, policy);
                match self.0.store.insert(tomb, now).await {
                    Ok(_) | Err(StoreError::Duplicate(_)) => Ok(unstored),
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Live sessions matching `filter` (4D's `Process activity` sessions list),
    /// unstored guests this node knows included.
    pub async fn activity(&self, filter: &ActivityFilter) -> Result<Vec<Snapshot>, SessionsError> {
        let now = self.now();
        if let Some(id) = filter.session {
            let one = self.lookup(&id, now).await?;
            return Ok(one
                .into_iter()
                .filter(|s| matches(filter, &s.record))
                .collect());
        }
        let mut all = self.0.store.list(now).await?;
        all.retain(|s| !s.record.ended() && matches(filter, &s.record));
        for (id, guest) in self.0.guests.all() {
            let record = self.guest_record(id, &guest);
            if !record.is_expired(guest.last, now) && matches(filter, &record) {
                all.push(Snapshot {
                    record: Arc::new(record),
                    last_activity: guest.last,
                });
            }
        }
        all.sort_by_key(|s| (s.record.created(), s.record.id()));
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
    f.kind.is_none_or(|k| k == r.kind())
        && f.user_name.as_deref().is_none_or(|u| u == r.user_name())
}
