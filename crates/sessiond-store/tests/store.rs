//! The conformance suite against every store (memory, embedded, Redis), and the
//! stores' own promises: the memory purge's cost follows what expires; the embedded
//! store keeps what it acknowledged across a reopen.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::{SessionPolicy, SessionRecord, Timestamp};
use sessiond_store::{MemoryStore, SessionStore};

mod memory {
    use super::*;
    sessiond_store::conformance_tests!(|| async {
        (Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>, ())
    });
}

mod embedded {
    use super::*;
    use sessiond_store::EmbeddedStore;
    sessiond_store::conformance_tests!(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("sessions.redb"), Timestamp(0)).unwrap();
        (Arc::new(store) as Arc<dyn SessionStore>, dir)
    });
}

mod redis {
    use super::*;
    use sessiond_store::RedisStore;
    use sessiond_store::conformance::RedisServer;
    sessiond_store::conformance_tests!(|| async {
        let server = RedisServer::start();
        let store = RedisStore::connect(&server.url(), Duration::from_secs(5))
            .await
            .unwrap();
        (Arc::new(store) as Arc<dyn SessionStore>, server)
    });
}

#[tokio::test]
async fn memory_purge_visits_only_what_comes_due() {
    let store = MemoryStore::new();
    let t0 = Timestamp(1_000_000);
    let policy = SessionPolicy::default();
    for i in 0..1000u64 {
        let r = SessionRecord::new_web(t0, &policy, None);
        store
            .insert(r, t0.plus(Duration::from_secs(i)))
            .await
            .unwrap();
    }
    assert_eq!(store.scheduled(), 1000);
    // 10 sessions come due: only they leave the index.
    let removed = store
        .purge_expired(t0.plus(Duration::from_secs(3600 + 9)))
        .await
        .unwrap();
    assert_eq!(removed, 10);
    assert_eq!(store.scheduled(), 990);
    assert_eq!(store.len(), 990);
}

#[tokio::test]
async fn memory_touched_session_is_refiled_once_not_removed() {
    let store = MemoryStore::new();
    let t0 = Timestamp(1_000_000);
    let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
    let id = r.id;
    store.insert(r, t0).await.unwrap();
    for m in 1..=30 {
        store
            .touch(&id, t0.plus(Duration::from_secs(m * 60)))
            .await
            .unwrap();
    }
    assert_eq!(store.scheduled(), 1, "reads never touch the index");
    assert_eq!(
        store
            .purge_expired(t0.plus(Duration::from_secs(3600)))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.scheduled(), 1, "re-filed at its real deadline");
    assert_eq!(
        store
            .purge_expired(t0.plus(Duration::from_secs(5400)))
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn embedded_reopen_keeps_acknowledged_state_and_drops_what_expired_meanwhile() {
    use serde_json::json;
    use sessiond_core::storage;
    use sessiond_store::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let t0 = Timestamp(1_000_000);
    let policy = SessionPolicy::default();
    let (kept, gone) = {
        let store = EmbeddedStore::open(&path, t0).unwrap();
        let mut a = SessionRecord::new_web(t0, &policy, None);
        a.idle_timeout = 600;
        let b = SessionRecord::new_web(t0, &policy, None);
        let (ka, kb) = (a.id, b.id);
        store.insert(a, t0).await.unwrap();
        store.insert(b, t0).await.unwrap();
        let mut f =
            |r: &mut SessionRecord| storage::merge_patch(r.storage_mut(), &json!({"cart": 3}));
        store.update(&ka, t0, &mut f).await.unwrap();
        (ka, kb)
    };
    // Two hours later: the 60-minute session expired while "down", the 600-minute one is there.
    let later = t0.plus(Duration::from_secs(7200));
    let store = EmbeddedStore::open(&path, later).unwrap();
    let s = store.get(&kept, later).await.unwrap().expect("kept");
    assert_eq!(s.record.storage["cart"], 3);
    assert!(store.get(&gone, later).await.unwrap().is_none());
    assert_eq!(store.list(later).await.unwrap().len(), 1);
}

#[test]
fn embedded_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    std::fs::write(
        &path,
        b"this is not a redb file, and it is long enough to look like one maybe",
    )
    .unwrap();
    let err = sessiond_store::EmbeddedStore::open(&path, Timestamp(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sessions.redb"), "{err}");
}
