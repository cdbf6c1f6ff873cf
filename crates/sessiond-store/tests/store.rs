//! The conformance suite against the memory store, and the memory store's own
//! promises (the purge's cost follows what expires).

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::{SessionPolicy, SessionRecord, Timestamp};
use sessiond_store::{MemoryStore, SessionStore};

sessiond_store::conformance_tests!(|| async {
    Arc::new(MemoryStore::new()) as Arc<dyn SessionStore>
});

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
