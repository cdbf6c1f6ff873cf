//! [`FaultyStore`]: a store that fails on purpose, to test every error path above the
//! store (the HTTP answers, what is left behind) without a broken disk or a dead Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};

use crate::store::{Cas, SessionStore, Snapshot, StoreError, Update, UpdateFn};

/// What an armed call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails at once with [`StoreError::Unavailable`] (a refused connection, a full
    /// disk).
    Fail,
    /// Waits this long, then fails with [`StoreError::Unavailable`] (a backend that
    /// does not answer until the client's timeout fires).
    Hang(Duration),
}

/// Which calls fail: those numbered `from..from + count` (counting every call from 1).
#[derive(Debug, Clone, Copy)]
struct Armed {
    from: u64,
    count: u64,
    fault: Fault,
}

/// Wraps a store; calls pass through until [`FaultyStore::fail_calls`] arms a fault.
/// An injected failure reaches the inner store not at all: nothing is written.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn SessionStore>,
    calls: AtomicU64,
    // Held to read or replace the plan, never across an `.await`.
    armed: parking_lot::Mutex<Option<Armed>>,
}

/// The message of an injected failure (a test can check that clients never see it).
pub const INJECTED: &str = "injected store fault";

impl FaultyStore {
    /// `inner`, with no fault armed.
    pub fn new(inner: Arc<dyn SessionStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: AtomicU64::new(0),
            armed: parking_lot::Mutex::new(None),
        })
    }

    /// The calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The `count` calls after the next `skip` ones get `fault` (`skip = 0`: from the
    /// next call on).
    pub fn fail_calls(&self, skip: u64, count: u64, fault: Fault) {
        *self.armed.lock() = Some(Armed {
            from: self.calls() + skip + 1,
            count,
            fault,
        });
    }

    /// Every later call passes through.
    pub fn heal(&self) {
        *self.armed.lock() = None;
    }

    async fn call(&self) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let armed = *self.armed.lock();
        let fault = armed
            .filter(|a| (a.from..a.from.saturating_add(a.count)).contains(&n))
            .map(|a| a.fault);
        match fault {
            None => Ok(()),
            Some(fault) => {
                if let Fault::Hang(d) = fault {
                    tokio::time::sleep(d).await;
                }
                Err(StoreError::Unavailable {
                    message: format!("{INJECTED} (call {n})"),
                    source: None,
                })
            }
        }
    }
}

#[async_trait]
impl SessionStore for FaultyStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        self.call().await?;
        self.inner.insert(record, now).await
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        self.call().await?;
        self.inner.get(id, now).await
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        self.call().await?;
        self.inner.touch(id, now).await
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        self.call().await?;
        self.inner
            .compare_and_swap(record, expected_version, now)
            .await
    }

    async fn update(
        &self,
        id: &SessionId,
        now: Timestamp,
        change: &mut UpdateFn<'_>,
    ) -> Result<Update, StoreError> {
        self.call().await?;
        self.inner.update(id, now, change).await
    }

    fn updates_in_place(&self) -> bool {
        self.inner.updates_in_place()
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.call().await?;
        self.inner.remove(id).await
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        self.call().await?;
        self.inner.list(now).await
    }

    async fn insert_otp(&self, otp: OtpRecord, now: Timestamp) -> Result<(), StoreError> {
        self.call().await?;
        self.inner.insert_otp(otp, now).await
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        self.call().await?;
        self.inner.take_otp(hash, now).await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.call().await?;
        self.inner.purge_expired(now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use sessiond_core::SessionPolicy;

    #[tokio::test]
    async fn armed_calls_fail_and_reach_nothing_then_calls_pass_again() {
        let store = FaultyStore::new(Arc::new(MemoryStore::new()));
        let t0 = Timestamp(1_000_000);
        let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
        let id = r.id();
        store.fail_calls(1, 2, Fault::Fail);
        assert!(store.get(&id, t0).await.unwrap().is_none(), "call 1 passes");
        let err = store.insert(r.clone(), t0).await.unwrap_err();
        assert!(err.to_string().contains(INJECTED), "{err}");
        assert!(store.remove(&id).await.is_err(), "call 3 fails");
        assert!(
            store.get(&id, t0).await.unwrap().is_none(),
            "nothing written"
        );
        store.insert(r, t0).await.unwrap();
        store.fail_calls(0, 1, Fault::Hang(Duration::from_millis(20)));
        let started = std::time::Instant::now();
        assert!(store.get(&id, t0).await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(20));
        store.heal();
        assert!(store.get(&id, t0).await.unwrap().is_some());
    }
}
