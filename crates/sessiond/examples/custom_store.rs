//! A session store of your own: every session in one `BTreeMap` behind a mutex.
//! Implement [`SessionStore`], then let the conformance suite (the same tests every
//! store of sessiond passes: expiry, atomic updates, single-use OTPs, the token model)
//! check it: `cargo test -p sessiond --example custom_store`. Run it
//! (`cargo run -p sessiond --example custom_store`) to serve the `/hello` of the
//! embed example over it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use sessiond::core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};
use sessiond::store::{Cas, Snapshot, StoreError};
use sessiond::{
    CookieConfig, Roles, Session, SessionLayer, SessionPolicy, SessionStore, Sessions, SystemClock,
};

/// The store. A plain mutex: nothing awaits while it is held.
#[derive(Debug, Default)]
struct MapStore {
    sessions: Mutex<BTreeMap<SessionId, Snapshot>>,
    otps: Mutex<BTreeMap<TokenHash, OtpRecord>>,
}

impl MapStore {
    fn sessions(&self) -> MutexGuard<'_, BTreeMap<SessionId, Snapshot>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a stored session is still live at `now`.
fn live(s: &Snapshot, now: Timestamp) -> bool {
    !s.record.is_expired(s.last_activity, now)
}

#[async_trait]
impl SessionStore for MapStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        let mut sessions = self.sessions();
        if sessions.get(&record.id()).is_some_and(|s| live(s, now)) {
            return Err(StoreError::Duplicate(record.id()));
        }
        let snapshot = Snapshot {
            record: Arc::new(record),
            last_activity: now,
        };
        sessions.insert(snapshot.record.id(), snapshot.clone());
        Ok(snapshot)
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.sessions().get(id).filter(|s| live(s, now)).cloned())
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        let mut sessions = self.sessions();
        Ok(sessions.get_mut(id).filter(|s| live(s, now)).map(|s| {
            s.last_activity = s.last_activity.max(now);
            s.clone()
        }))
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        let mut sessions = self.sessions();
        let Some(current) = sessions.get_mut(&record.id()).filter(|s| live(s, now)) else {
            return Ok(Cas::NotFound);
        };
        if current.record.version() != expected_version {
            return Ok(Cas::Conflict);
        }
        *current = Snapshot {
            record: Arc::new(record),
            last_activity: current.last_activity.max(now),
        };
        Ok(Cas::Swapped(current.clone()))
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.sessions().remove(id).is_some())
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        Ok(self
            .sessions()
            .values()
            .filter(|s| live(s, now))
            .cloned()
            .collect())
    }

    async fn insert_otp(&self, otp: OtpRecord, _now: Timestamp) -> Result<(), StoreError> {
        let mut otps = self
            .otps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        otps.insert(otp.hash, otp);
        Ok(())
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        let mut otps = self
            .otps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(otps.remove(hash).filter(|otp| otp.is_valid(now)))
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mut sessions = self.sessions();
        let before = sessions.len();
        sessions.retain(|_, s| live(s, now));
        let mut otps = self
            .otps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        otps.retain(|_, otp| otp.is_valid(now));
        Ok(before - sessions.len())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sessions = Sessions::new(
        Arc::new(MapStore::default()),
        Arc::new(Roles::default()),
        Arc::new(SystemClock),
        SessionPolicy::default(),
    );
    sessions.spawn_reaper(std::time::Duration::from_secs(1));
    let app = axum::Router::new()
        .route(
            "/hello",
            axum::routing::get(|session: Session| async move { session.id().to_string() }),
        )
        .layer(SessionLayer::new(sessions, CookieConfig::for_app("MyApp")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod conformance {
    use super::*;

    // One test per promise of the trait, each on a fresh store.
    sessiond::store::conformance_tests!(|| async {
        (Arc::new(MapStore::default()) as Arc<dyn SessionStore>, ())
    });
}
