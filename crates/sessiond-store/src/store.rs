//! The [`SessionStore`] trait: what every backend (memory, embedded, Redis) provides.
//!
//! The contract is shaped for stores that cannot hold a lock across a closure: the one
//! required write primitive is a versioned [`SessionStore::compare_and_swap`], and
//! [`SessionStore::update`] — the atomic read-modify-write behind 4D's
//! `Use(Session.storage)…End use` — has a provided optimistic implementation on top of
//! it. A store that can do better (the memory store mutates under its shard lock)
//! overrides `update`; callers never depend on how the atomicity is achieved.

use std::sync::Arc;

use async_trait::async_trait;
use sessiond_core::{
    Error as CoreError, OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash,
};

/// A consistent view of one session.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The record, shared with the store until it changes.
    pub record: Arc<SessionRecord>,
    /// The session's last activity, which the idle deadline counts from.
    pub last_activity: Timestamp,
}

impl Snapshot {
    /// `Session.expirationDate` for this view.
    pub fn expiration_date(&self) -> Option<String> {
        self.record.expiration_date(self.last_activity)
    }
}

/// A failure of the store itself (not of the caller's input).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or did not answer in time.
    #[error("session store unavailable: {message}")]
    Unavailable {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Stored data cannot be read back.
    #[error("session store data is corrupt: {0}")]
    Corrupt(String),
    /// An optimistic update kept conflicting with other writers.
    #[error("too many concurrent updates of session {0}")]
    Contention(SessionId),
    /// `insert` of an id that already exists.
    #[error("session {0} already exists")]
    Duplicate(SessionId),
}

/// The outcome of [`SessionStore::compare_and_swap`].
#[derive(Debug)]
pub enum Cas {
    /// Written; the new view.
    Swapped(Snapshot),
    /// The stored version differs from the expected one: nothing written.
    Conflict,
    /// No live session with that id.
    NotFound,
}

/// The outcome of [`SessionStore::update`].
#[derive(Debug)]
pub enum Update {
    /// The change was applied atomically; the new view.
    Updated(Snapshot),
    /// The change function refused (bad input); nothing written.
    Rejected(CoreError),
    /// No live session with that id.
    NotFound,
}

/// A change applied inside an atomic update. It may run more than once (optimistic
/// retries), each time on a fresh copy, so it must not have other side effects.
pub type UpdateFn<'a> = dyn FnMut(&mut SessionRecord) -> Result<(), CoreError> + Send + 'a;

/// Optimistic retries before [`StoreError::Contention`].
pub const MAX_CAS_RETRIES: usize = 10_000;

/// A place where sessions and OTPs live.
///
/// Expiry: a session is *live* while `now` is before
/// [`SessionRecord::deadline`]`(last_activity)`; stores must never return a session
/// that is not live, whether or not it has been purged yet.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new session whose last activity is `now`; returns its view.
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError>;

    /// Reads a live session without counting it as activity.
    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError>;

    /// Reads a live session and records activity at `now`: extends the idle deadline
    /// without rewriting the record (its `version` is unchanged).
    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError>;

    /// Writes `record` (whose `version` must be `expected_version + 1`) if the stored
    /// version is still `expected_version`; records activity at `now`.
    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError>;

    /// Applies `change` atomically: no concurrent update is lost, and a rejected change
    /// writes nothing. Records activity at `now`.
    async fn update(
        &self,
        id: &SessionId,
        now: Timestamp,
        change: &mut UpdateFn<'_>,
    ) -> Result<Update, StoreError> {
        for attempt in 0..MAX_CAS_RETRIES {
            let Some(current) = self.get(id, now).await? else {
                return Ok(Update::NotFound);
            };
            let mut next = SessionRecord::clone(&current.record);
            if let Err(e) = change(&mut next) {
                return Ok(Update::Rejected(e));
            }
            next.set_version(current.record.version() + 1);
            match self
                .compare_and_swap(next, current.record.version(), now)
                .await?
            {
                Cas::Swapped(s) => return Ok(Update::Updated(s)),
                Cas::NotFound => return Ok(Update::NotFound),
                Cas::Conflict => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(*id))
    }

    /// Whether [`SessionStore::update`] orders concurrent updates of one session
    /// itself (applied in place under a lock, or chained), so that callers need not
    /// queue them.
    fn updates_in_place(&self) -> bool {
        false
    }

    /// Whether several nodes share this store (then each node owns the remote and
    /// stored-procedure sessions it created; otherwise this process owns them all).
    fn shared(&self) -> bool {
        false
    }

    /// Deletes a session; true if it existed.
    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError>;

    /// Every live session.
    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError>;

    /// Stores an OTP (created at `now`).
    async fn insert_otp(&self, otp: OtpRecord, now: Timestamp) -> Result<(), StoreError>;

    /// Consumes an OTP: returns it (if valid at `now`) and deletes it, atomically, so
    /// that two concurrent uses cannot both succeed.
    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError>;

    /// Frees what expired before `now`; returns how many sessions were removed. Stores
    /// with native expiry (Redis TTLs) may do nothing.
    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// Waits a random time that grows with the attempt (jittered exponential backoff,
/// 50 µs doubling up to 25 ms), so that writers colliding on one session spread out
/// instead of retrying in lockstep.
pub(crate) async fn backoff(attempt: usize) {
    let cap_us = 50u64 << attempt.min(9);
    let r = u64::from_le_bytes(sessiond_core::id::random_bytes::<8>());
    tokio::time::sleep(std::time::Duration::from_micros(r % cap_us)).await;
}
