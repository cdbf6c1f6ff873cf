//! Stores whose every call suspends once (`tokio::task::yield_now`) before it runs
//! the in-memory store underneath: the smallest model of a network store (Redis,
//! SQL), where each call is an `.await` that lets other requests run.
//!
//! On one runtime thread an in-process store that never suspends serialises whole
//! requests, so a read-then-write handler cannot interleave with another one; once
//! the store suspends it can. These wrappers show what each library does then:
//! - tower-sessions: `load` at `session.get`, `save` after the handler — two
//!   requests that interleave read the same counter, one update is lost.
//! - sessiond: the wrapper does **not** forward `update`, so sessiond runs the
//!   trait's provided optimistic update (get, change, compare-and-swap, retry), the
//!   path every store without a native atomic update takes.

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};
use sessiond_store::{Cas, SessionStore, Snapshot, StoreError};
use tokio::task::yield_now;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store;

/// sessiond's [`sessiond_store::MemoryStore`] behind a suspension per call, counting
/// compare-and-swap attempts and conflicts (each conflict is one retry).
#[derive(Debug, Default)]
pub(crate) struct SuspendingSessiond {
    inner: sessiond_store::MemoryStore,
    cas_calls: AtomicU64,
    cas_conflicts: AtomicU64,
}

impl SuspendingSessiond {
    /// `"<compare-and-swap calls> <conflicts>"` so far.
    pub(crate) fn stats(&self) -> String {
        format!(
            "{} {}",
            self.cas_calls.load(Ordering::Relaxed),
            self.cas_conflicts.load(Ordering::Relaxed)
        )
    }
}

#[async_trait]
impl SessionStore for SuspendingSessiond {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        yield_now().await;
        self.inner.insert(record, now).await
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        yield_now().await;
        self.inner.get(id, now).await
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        yield_now().await;
        self.inner.touch(id, now).await
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        yield_now().await;
        self.cas_calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .inner
            .compare_and_swap(record, expected_version, now)
            .await;
        if matches!(r, Ok(Cas::Conflict)) {
            self.cas_conflicts.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    // `update` deliberately not forwarded: the provided optimistic implementation runs.

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        yield_now().await;
        self.inner.remove(id).await
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        yield_now().await;
        self.inner.list(now).await
    }

    async fn insert_otp(&self, otp: OtpRecord, now: Timestamp) -> Result<(), StoreError> {
        yield_now().await;
        self.inner.insert_otp(otp, now).await
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        yield_now().await;
        self.inner.take_otp(hash, now).await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        yield_now().await;
        self.inner.purge_expired(now).await
    }
}

/// tower-sessions' [`tower_sessions::MemoryStore`] behind a suspension per call.
#[derive(Debug, Clone, Default)]
pub(crate) struct SuspendingTower(pub tower_sessions::MemoryStore);

#[async_trait]
impl tower_sessions::SessionStore for SuspendingTower {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        yield_now().await;
        self.0.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        yield_now().await;
        self.0.save(record).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        yield_now().await;
        self.0.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        yield_now().await;
        self.0.delete(id).await
    }
}
