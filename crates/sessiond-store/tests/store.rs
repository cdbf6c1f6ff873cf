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
    use sessiond_store::conformance::RedisServer;
    use sessiond_store::{RedisConfig, RedisStore};
    sessiond_store::conformance_tests!(|| async {
        let server = RedisServer::start();
        let store = RedisStore::connect(
            &RedisConfig::new(server.url()).with_timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        (Arc::new(store) as Arc<dyn SessionStore>, server)
    });
}

mod redis_without_near_cache {
    use super::*;
    use sessiond_store::conformance::RedisServer;
    use sessiond_store::{NearCacheConfig, RedisConfig, RedisStore};
    sessiond_store::conformance_tests!(|| async {
        let server = RedisServer::start();
        let config = RedisConfig {
            near_cache: NearCacheConfig::off(),
            ..RedisConfig::new(server.url())
        };
        let store = RedisStore::connect(&config).await.unwrap();
        (Arc::new(store) as Arc<dyn SessionStore>, server)
    });
}

mod redis_cluster {
    use super::*;
    use sessiond_store::conformance::RedisCluster;
    use sessiond_store::{RedisConfig, RedisStore};
    sessiond_store::conformance_tests!(|| async {
        let cluster = tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .unwrap();
        let store = RedisStore::connect(&RedisConfig::new(cluster.url()))
            .await
            .unwrap();
        (Arc::new(store) as Arc<dyn SessionStore>, cluster)
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
    let id = r.id();
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
        assert_eq!(a.set_idle_timeout(600, &policy), Ok(600));
        let b = SessionRecord::new_web(t0, &policy, None);
        let (ka, kb) = (a.id(), b.id());
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
    assert_eq!(s.record.storage()["cart"], 3);
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

#[tokio::test]
async fn embedded_open_quarantines_an_unreadable_record_and_starts_with_the_rest() {
    use redb::TableDefinition;
    use sessiond_store::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let t0 = Timestamp(1_000_000);
    let kept = {
        let store = EmbeddedStore::open(&path, t0).unwrap();
        let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
        let id = r.id();
        store.insert(r, t0).await.unwrap();
        id
    };
    // Two records no reader accepts: garbage, and storage nested past serde_json's
    // 128 levels (what an unbounded storage write used to leave behind).
    {
        const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SESSIONS).unwrap();
            t.insert([1u8; 16].as_slice(), b"{not json".as_slice())
                .unwrap();
            let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
            let text = format!(r#"{{"record":{{"storage":{deep}}},"lastActivity":1}}"#);
            t.insert([2u8; 16].as_slice(), text.as_bytes()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = EmbeddedStore::open(&path, t0).unwrap();
    assert!(
        store.get(&kept, t0).await.unwrap().is_some(),
        "the rest is served"
    );
    assert_eq!(store.list(t0).await.unwrap().len(), 1);
    drop(store);
    assert_eq!(EmbeddedStore::quarantined(&path).unwrap(), 2);
    // Moved aside once: the next open is clean.
    let store = EmbeddedStore::open(&path, t0).unwrap();
    assert_eq!(store.list(t0).await.unwrap().len(), 1);
}

/// Rows are keyed by creation time then id, so new sessions land together at the end
/// of the B-tree. A file from before (rows keyed by the id alone) opens with every
/// session and is re-keyed; a second record of one session, under another key, is
/// moved to the quarantine table instead of stopping the start.
#[tokio::test]
async fn embedded_open_rekeys_rows_keyed_by_id_and_quarantines_a_second_record() {
    use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
    use serde_json::json;
    use sessiond_store::EmbeddedStore;
    const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
    let rows = |path: &std::path::Path| -> Vec<(Vec<u8>, Vec<u8>)> {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(SESSIONS).unwrap();
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp(1_000_000);
    let written = dir.path().join("written.redb");
    let mut ids = Vec::new();
    {
        let store = EmbeddedStore::open(&written, t0).unwrap();
        for n in 0..3 {
            let mut r = SessionRecord::new_web(
                Timestamp(t0.0 - 1_000 * n),
                &SessionPolicy::default(),
                None,
            );
            r.storage_mut().insert("n".into(), json!(n));
            ids.push(r.id());
            store.insert(r, t0).await.unwrap();
        }
    }
    let new_layout = rows(&written);
    assert!(new_layout.iter().all(|(k, _)| k.len() == 24));
    assert!(
        new_layout.windows(2).all(|w| w[0].0[..8] <= w[1].0[..8]),
        "in order of creation"
    );
    // The same sessions keyed by id alone, and one of them twice.
    let old = dir.path().join("old.redb");
    {
        let db = redb::Database::create(&old).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(SESSIONS).unwrap();
            for (k, v) in &new_layout {
                t.insert(&k[8..], v.as_slice()).unwrap();
            }
            t.insert(new_layout[0].0.as_slice(), new_layout[0].1.as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    {
        let store = EmbeddedStore::open(&old, t0).unwrap();
        for (n, id) in ids.iter().enumerate() {
            let s = store.get(id, t0).await.unwrap().expect("every session");
            assert_eq!(s.record.storage()["n"], json!(n));
        }
    }
    assert_eq!(EmbeddedStore::quarantined(&old).unwrap(), 1);
    let mut rekeyed = rows(&old);
    rekeyed.sort();
    let mut want = new_layout.clone();
    want.sort();
    assert_eq!(rekeyed, want, "re-keyed as a new file would be");
}

#[tokio::test]
async fn embedded_file_in_use_is_reported_as_in_use_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let _first = sessiond_store::EmbeddedStore::open(&path, Timestamp(0)).unwrap();
    let err = sessiond_store::EmbeddedStore::open(&path, Timestamp(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("in use"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn embedded_file_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let _store = sessiond_store::EmbeddedStore::open(&path, Timestamp(0)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// Storage values up to the caps (random JSON, a chain nested to a random depth up to
/// the depth cap, a filler string up to the size cap).
fn storage_near_the_caps() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    let json = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{1,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    (
        prop::collection::btree_map("\\PC{1,6}", json, 0..8),
        1usize..=40,
        0usize..(1 << 20) + (1 << 17),
    )
        .prop_map(|(base, depth, filler)| {
            let mut map: serde_json::Map<String, Value> = base.into_iter().collect();
            let mut chain = Value::from(1);
            for i in 0..depth.saturating_sub(2) {
                chain = if i % 2 == 0 {
                    Value::Array(vec![chain])
                } else {
                    serde_json::json!({ "k": chain })
                };
            }
            map.insert("chain".into(), chain);
            map.insert("filler".into(), Value::String("é".repeat(filler / 2)));
            Value::Object(map)
        })
}

/// Every store reads back exactly what it acknowledged, up to the storage caps; what is
/// past a cap is refused and changes nothing.
#[test]
fn storage_at_the_caps_reads_back_after_reopen() {
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    use sessiond_core::{Clock, SessionId, SystemClock};
    use sessiond_store::{EmbeddedStore, RedisConfig, RedisStore, conformance::RedisServer};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let sessions = sessions_on;
    let mut runner = TestRunner::default();
    let strategy = storage_near_the_caps();
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..24 {
        let value = strategy.new_tree(&mut runner).unwrap().current();
        let serde_json::Value::Object(map) = value else {
            unreachable!()
        };
        rt.block_on(async {
            let redis_store: Arc<dyn SessionStore> = Arc::new(
                RedisStore::connect(
                    &RedisConfig::new(redis.url()).with_timeout(Duration::from_secs(5)),
                )
                .await
                .unwrap(),
            );
            let embedded: Arc<dyn SessionStore> =
                Arc::new(EmbeddedStore::open(&path, SystemClock.now()).unwrap());
            let mut written: Vec<(Arc<dyn SessionStore>, SessionId)> = Vec::new();
            for store in [embedded, redis_store] {
                let s = sessions(store.clone());
                let (snap, _) = s.create_web(None).await.unwrap();
                let id = snap.record.id();
                let result = s
                    .update_storage(&id, None, |st| {
                        st.clone_from(&map);
                        Ok(())
                    })
                    .await;
                match result {
                    Ok(_) => written.push((store, id)),
                    Err(e) => {
                        let text = e.to_string();
                        assert!(text.contains("limit") || text.contains("deeper"), "{text}");
                        let now = s.get(&id).await.unwrap().unwrap();
                        assert!(
                            now.record.storage().is_empty(),
                            "a refused write changes nothing"
                        );
                    }
                }
            }
            let n = written.len();
            if n == 0 {
                refused += 1;
            } else {
                accepted += 1;
            }
            // Reopen: a new store object on the same file, a new connection to Redis.
            let mut stores = written.into_iter();
            if let Some((store, id)) = stores.next() {
                drop(store);
                let reopened = EmbeddedStore::open(&path, SystemClock.now()).unwrap();
                let got = reopened.get(&id, SystemClock.now()).await.unwrap().unwrap();
                assert_same(got.record.storage(), &map, "embedded");
            }
            if let Some((_, id)) = stores.next() {
                let fresh = RedisStore::connect(
                    &RedisConfig::new(redis.url()).with_timeout(Duration::from_secs(5)),
                )
                .await
                .unwrap();
                let got = fresh.get(&id, SystemClock.now()).await.unwrap().unwrap();
                assert_same(got.record.storage(), &map, "Redis");
            }
        });
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// Equality of two storages, reported by the first key that differs (values can be
/// a megabyte long).
fn assert_same(
    got: &serde_json::Map<String, serde_json::Value>,
    want: &serde_json::Map<String, serde_json::Value>,
    store: &str,
) {
    let short = |v: Option<&serde_json::Value>| {
        let t = format!("{v:?}");
        t.chars().take(300).collect::<String>()
    };
    for key in want.keys().chain(got.keys()) {
        assert!(
            got.get(key) == want.get(key),
            "{store} read back {key:?}: got {}, wrote {}",
            short(got.get(key)),
            short(want.get(key))
        );
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{store}: key order"
    );
}

#[tokio::test]
async fn redis_quarantines_an_unreadable_record_and_serves_the_rest() {
    use sessiond_store::conformance::RedisServer;
    use sessiond_store::{NearCacheConfig, RedisConfig, RedisStore};
    let server = RedisServer::start();
    // The damage below is written behind sessiond's back, so no invalidation is
    // published: a near-cache would rightly go on serving the copy it read before.
    // This test is about what a read *from Redis* does with an unreadable record.
    let config = RedisConfig {
        near_cache: NearCacheConfig::off(),
        ..RedisConfig::new(server.url()).with_timeout(Duration::from_secs(5))
    };
    let store = RedisStore::connect(&config).await.unwrap();
    let t0 = Timestamp(1_000_000);
    let good = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
    let good_id = good.id();
    store.insert(good, t0).await.unwrap();
    let bad = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
    let bad_id = bad.id();
    store.insert(bad, t0).await.unwrap();
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (): () = ::redis::cmd("HSET")
        .arg(format!("sessiond:{{{bad_id}}}"))
        .arg("rec")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(store.get(&bad_id, t0).await.unwrap().is_none());
    let listed = store.list(t0).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record.id(), good_id);
    let moved: bool = ::redis::cmd("EXISTS")
        .arg(format!("sessiond:quarantine:{{{bad_id}}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(moved, "the record is kept aside for inspection");
}

/// `Sessions` over `store`, with the default roles and policy and the system clock.
fn sessions_on(store: Arc<dyn SessionStore>) -> sessiond_store::Sessions {
    sessiond_store::Sessions::new(
        store,
        Arc::new(sessiond_core::Roles::default()),
        Arc::new(sessiond_core::SystemClock),
        SessionPolicy::default(),
    )
}

/// A guest's first change stores it with one store call (an insert, no lookup before
/// it); a guest another node stored meanwhile takes the change on top of that node's,
/// and its later changes go to the store directly.
#[tokio::test]
async fn a_guest_is_stored_by_its_first_change_in_one_call_or_on_top_of_another_nodes() {
    use sessiond_core::GuestKey;
    use sessiond_store::Resolved;
    use sessiond_store::conformance::faults::FaultyStore;
    let shared: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let counted = FaultyStore::new(shared.clone());
    let key = GuestKey::random();
    let node = |store: Arc<dyn SessionStore>| sessions_on(store).with_guest_key(key.clone());
    let (a, b) = (node(counted.clone()), node(shared));
    let set = |name: &'static str| {
        move |s: &mut serde_json::Map<String, serde_json::Value>| {
            s.insert(name.into(), true.into());
            Ok(())
        }
    };

    let (guest, _) = a.create_web(None).await.unwrap();
    let calls = counted.calls();
    a.update_storage(&guest.record.id(), None, set("a"))
        .await
        .unwrap();
    assert_eq!(counted.calls() - calls, 1, "one insert");

    let (guest, ticket) = a.create_web(None).await.unwrap();
    let id = guest.record.id();
    assert!(matches!(
        b.resolve_token(&ticket).await.unwrap(),
        Resolved::Unstored { .. }
    ));
    let (on_b, ()) = b.update_storage(&id, None, set("b")).await.unwrap();
    let calls = counted.calls();
    let (after, ()) = a.update_storage(&id, None, set("a")).await.unwrap();
    assert_eq!(
        counted.calls() - calls,
        2,
        "an insert that finds it stored, then the update"
    );
    let keys: Vec<&String> = after.record.storage().keys().collect();
    assert_eq!(keys, ["b", "a"]);
    assert_eq!(after.record.version(), on_b.record.version() + 1);
    let calls = counted.calls();
    a.update_storage(&id, None, set("c")).await.unwrap();
    assert_eq!(
        counted.calls() - calls,
        1,
        "known as stored now: the update alone"
    );
}

/// Two nodes (two `RedisStore`s) on one Redis, with the default near-cache.
async fn two_nodes(
    server: &sessiond_store::conformance::RedisServer,
) -> [sessiond_store::RedisStore; 2] {
    use sessiond_store::{RedisConfig, RedisStore};
    let config = RedisConfig::new(server.url());
    let a = RedisStore::connect(&config).await.unwrap();
    let b = RedisStore::connect(&config).await.unwrap();
    // The caches serve once their invalidation channel has answered a ping.
    tokio::time::sleep(Duration::from_millis(100)).await;
    [a, b]
}

/// A new web session stored through `node`, and the time it was stored at.
async fn new_session_on(
    node: &sessiond_store::RedisStore,
) -> (sessiond_core::SessionId, Timestamp) {
    let now = wall_clock();
    let r = SessionRecord::new_web(now, &SessionPolicy::default(), None);
    let id = r.id();
    node.insert(r, now).await.unwrap();
    (id, now)
}

fn wall_clock() -> Timestamp {
    use sessiond_core::Clock;
    sessiond_core::SystemClock.now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_cache_serves_a_repeated_read_without_asking_redis() {
    use sessiond_store::conformance::RedisServer;
    let server = RedisServer::start();
    let [a, b] = two_nodes(&server).await;
    let (id, now) = new_session_on(&a).await;
    // Read from Redis once the insert's invalidation has passed (a fill that races an
    // invalidation is not kept).
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b.get(&id, now).await.unwrap().is_some(), "read from Redis");
    // Deleted behind the nodes' back (no invalidation published): a node that still
    // answers from its cache never asked Redis.
    let mut redis = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = ::redis::cmd("FLUSHALL")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        a.get(&id, now).await.unwrap().is_some(),
        "the writer's cache"
    );
    assert!(
        b.get(&id, now).await.unwrap().is_some(),
        "the reader's cache"
    );
}

/// The staleness bound, measured: after a privilege lowering or a drop acknowledged on
/// node A, how long node B (which had the session cached) still serves the old copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowering_or_drop_on_one_node_is_refused_on_another_within_the_staleness_bound() {
    use sessiond_store::conformance::{RedisServer, staleness};
    const TRIALS: usize = 10_000;
    let server = RedisServer::start();
    let [a, b] = two_nodes(&server).await;
    let m = staleness::measure(&a, &b, TRIALS).await;
    eprintln!(
        "near-cache staleness over {TRIALS} lowerings/drops: p50 {:?}, p99 {:?}, max {:?}; \
         stale at once {} of {TRIALS}",
        m.quantile(500),
        m.quantile(990),
        m.quantile(1000),
        m.stale_at_once,
    );
    assert!(
        m.quantile(990) <= Duration::from_millis(50),
        "p99 {:?} above the 50 ms bound",
        m.quantile(990)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_read_on_another_within_the_staleness_bound() {
    use serde_json::json;
    use sessiond_core::storage;
    use sessiond_store::conformance::RedisServer;
    let server = RedisServer::start();
    let [a, b] = two_nodes(&server).await;
    let (id, now) = new_session_on(&a).await;
    for n in 1..=40u64 {
        assert!(b.get(&id, now).await.unwrap().is_some(), "cached on B");
        let mut f =
            |r: &mut SessionRecord| storage::merge_patch(r.storage_mut(), &json!({"cart": n}));
        a.update(&id, now, &mut f).await.unwrap();
        assert_eq!(
            a.get(&id, now).await.unwrap().unwrap().record.storage()["cart"],
            n,
            "the writing node reads its write at once"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            b.get(&id, now).await.unwrap().unwrap().record.storage()["cart"],
            n,
            "another node reads it once the bound has passed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_invalidation_channel_empties_the_cache() {
    use sessiond_store::conformance::RedisServer;
    let server = RedisServer::start();
    let [_a, b] = two_nodes(&server).await;
    let (id, now) = new_session_on(&b).await;
    assert!(b.get(&id, now).await.unwrap().is_some());
    let mut redis = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The listeners' connections are cut, and meanwhile the session goes without a
    // message: only emptying the cache can make it disappear.
    let _: () = ::redis::pipe()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .ignore()
        .cmd("FLUSHALL")
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(b.get(&id, now).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_writes_share_fsyncs_and_each_is_acknowledged_durable() {
    use serde_json::json;
    use sessiond_core::storage;
    use sessiond_store::EmbeddedStore;
    const SESSIONS: usize = 256;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let t0 = Timestamp(1_000_000);
    let store = EmbeddedStore::open(&path, t0).unwrap();
    let before = store.commit_stats();
    let tasks: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
                let id = r.id();
                store.insert(r, t0).await.unwrap();
                let mut f =
                    |r: &mut SessionRecord| storage::merge_patch(r.storage_mut(), &json!({"n": i}));
                store.update(&id, t0, &mut f).await.unwrap();
                (id, i)
            })
        })
        .collect();
    let mut written = Vec::new();
    for t in tasks {
        written.push(t.await.unwrap());
    }
    let stats = store.commit_stats();
    let (commits, writes) = (stats.commits - before.commits, stats.writes - before.writes);
    assert_eq!(writes, 2 * SESSIONS as u64);
    assert!(
        commits < writes / 2,
        "{writes} concurrent writes took {commits} commits"
    );
    drop(store);
    let store = EmbeddedStore::open(&path, t0).unwrap();
    for (id, i) in written {
        let s = store.get(&id, t0).await.unwrap().expect("acknowledged");
        assert_eq!(s.record.storage()["n"], i);
    }
}

/// The log is overwritten in place after each checkpoint: a crash image holds the new
/// log's frames, then what is left of the older log's. Only the new ones are applied.
/// Here the new log's frames are the same sizes as the old log's first ones, so the
/// old log's next frame starts right where the new log ends: applied, it would bring
/// an old value back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_crash_applies_only_the_current_log_not_older_frames_after_it() {
    use serde_json::json;
    use sessiond_core::storage;
    use sessiond_store::EmbeddedStore;
    let set = |n: i64| {
        move |r: &mut SessionRecord| storage::merge_patch(r.storage_mut(), &json!({ "n": n }))
    };
    let new = || SessionRecord::new_web(Timestamp(1_000_000), &SessionPolicy::default(), None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let t0 = Timestamp(1_000_000);
    let x = new();
    let x_id = x.id();
    {
        // One frame per write: insert, insert, n = 1, n = 3.
        let store = EmbeddedStore::open(&path, t0).unwrap();
        store.insert(x, t0).await.unwrap();
        store.insert(new(), t0).await.unwrap();
        store.update(&x_id, t0, &mut set(1)).await.unwrap();
        store.update(&x_id, t0, &mut set(3)).await.unwrap();
    } // closed: checkpointed (n = 3); the file still holds these frames
    let store = EmbeddedStore::open(&path, t0).unwrap();
    // Frames of the same sizes as the first three above: insert, insert, n = 2.
    store.insert(new(), t0).await.unwrap();
    store.insert(new(), t0).await.unwrap();
    store.update(&x_id, t0, &mut set(2)).await.unwrap();
    // The crash: the files as they are now.
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("sessions.redb");
    std::fs::copy(&path, &copy).unwrap();
    std::fs::copy(
        dir.path().join("sessions.redb.wal"),
        crashed.path().join("sessions.redb.wal"),
    )
    .unwrap();
    drop(store);
    let store = EmbeddedStore::open(&copy, t0).unwrap();
    let s = store.get(&x_id, t0).await.unwrap().expect("kept");
    assert_eq!(
        s.record.storage()["n"],
        2,
        "the older log's n = 3 is not applied"
    );
    assert_eq!(store.list(t0).await.unwrap().len(), 4);
}

/// A crash between checkpoints: the database file holds only its last synced commit,
/// the write-ahead log the groups acknowledged since. The files copied while the store
/// runs are what a crash leaves; opening them gives back every acknowledged write,
/// deletions included, and writes them into the database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_crash_between_checkpoints_is_recovered_from_the_log() {
    use serde_json::json;
    use sessiond_core::storage;
    use sessiond_store::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.redb");
    let t0 = Timestamp(1_000_000);
    let store = EmbeddedStore::open(&path, t0).unwrap();
    let mut written = Vec::new();
    for i in 0..64 {
        let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
        let id = r.id();
        store.insert(r, t0).await.unwrap();
        let mut f = |r: &mut SessionRecord| storage::merge_patch(r.storage_mut(), &json!({"n": i}));
        store.update(&id, t0, &mut f).await.unwrap();
        written.push((id, i));
    }
    let (gone, _) = written.pop().unwrap();
    assert!(store.remove(&gone).await.unwrap());
    // The crash: the files as they are now, the store still running.
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join("sessions.redb");
    std::fs::copy(&path, &copy).unwrap();
    let log = |db: &std::path::Path| {
        let mut p = db.as_os_str().to_owned();
        p.push(".wal");
        std::path::PathBuf::from(p)
    };
    std::fs::copy(log(&path), log(&copy)).unwrap();
    assert!(
        std::fs::metadata(log(&copy)).unwrap().len() > 0,
        "the writes are in the log, not yet checkpointed"
    );
    // Without its log, the database file alone has none of them.
    let bare = tempfile::tempdir().unwrap();
    std::fs::copy(&path, bare.path().join("sessions.redb")).unwrap();
    let alone = EmbeddedStore::open(&bare.path().join("sessions.redb"), t0).unwrap();
    assert!(alone.list(t0).await.unwrap().is_empty());
    drop(alone);
    drop(store);
    let store = EmbeddedStore::open(&copy, t0).unwrap();
    for (id, i) in &written {
        let s = store.get(id, t0).await.unwrap().expect("acknowledged");
        assert_eq!(s.record.storage()["n"], *i);
    }
    assert!(store.get(&gone, t0).await.unwrap().is_none(), "deleted");
    // Opening checkpointed them: the database file alone, as it is while the store
    // runs, now holds them all.
    let after = tempfile::tempdir().unwrap();
    std::fs::copy(&copy, after.path().join("sessions.redb")).unwrap();
    let alone = EmbeddedStore::open(&after.path().join("sessions.redb"), t0).unwrap();
    assert_eq!(alone.list(t0).await.unwrap().len(), written.len());
    assert!(alone.get(&gone, t0).await.unwrap().is_none(), "deleted");
}

/// The writer wakes one waiter per group, which wakes the others: a waiter whose task
/// never runs again (its runtime blocked or gone) must not hold up the rest. Here half
/// the writes are polled once and then abandoned by a runtime that never wakes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_writes_complete_when_other_waiters_of_their_group_never_run() {
    use sessiond_store::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let store =
        EmbeddedStore::open(&dir.path().join("sessions.redb"), Timestamp(1_000_000)).unwrap();
    let t0 = Timestamp(1_000_000);
    let mut stuck = Vec::new();
    let mut live = Vec::new();
    let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
    for _ in 0..200 {
        let s = store.clone();
        let mut f: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            Box::pin(async move {
                let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
                s.insert(r, t0).await.map(|_| ())
            });
        // Submitted, with a waker that wakes nothing: a task that will never run.
        if f.as_mut().poll(&mut noop).is_pending() {
            stuck.push(f);
        }
        let s = store.clone();
        live.push(tokio::spawn(async move {
            let r = SessionRecord::new_web(t0, &SessionPolicy::default(), None);
            s.insert(r, t0).await.map(|_| ())
        }));
    }
    for t in live {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("a write held up by a waiter that never runs")
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        store.list(t0).await.unwrap().len(),
        400,
        "the abandoned writes too"
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_updates_of_one_session_share_fsyncs_and_lose_nothing() {
    use sessiond_store::EmbeddedStore;
    const UPDATES: u64 = 128;
    let (dir, store, id) = embedded_with_a_session().await;
    let before = store.commit_stats();
    let tasks: Vec<_> = (0..UPDATES)
        .map(|_| tokio::spawn(add_one(store.clone(), id, "n")))
        .collect();
    for t in tasks {
        assert!(matches!(
            t.await.unwrap(),
            Ok(sessiond_store::Update::Updated(_))
        ));
    }
    let commits = store.commit_stats().commits - before.commits;
    assert!(
        commits < UPDATES / 2,
        "{UPDATES} concurrent updates of one session took {commits} commits"
    );
    drop(store);
    let store = EmbeddedStore::open(&dir.path().join("sessions.redb"), T0).unwrap();
    let s = store.get(&id, T0).await.unwrap().unwrap();
    assert_eq!(s.record.storage()["n"], UPDATES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_updates_abandoned_mid_flight_never_block_later_ones() {
    let (_dir, store, id) = embedded_with_a_session().await;
    for round in 0..20 {
        // Clients that go away while their update is in flight (the future is dropped).
        let tasks: Vec<_> = (0..16)
            .map(|_| tokio::spawn(add_one(store.clone(), id, "n")))
            .collect();
        tokio::task::yield_now().await;
        for (i, t) in tasks.iter().enumerate() {
            if i % 2 == 0 {
                t.abort();
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let after = tokio::time::timeout(Duration::from_secs(5), add_one(store.clone(), id, "n"))
            .await
            .unwrap_or_else(|_| panic!("round {round}: an update after abandoned ones hangs"));
        assert!(
            matches!(after, Ok(sessiond_store::Update::Updated(_))),
            "round {round}: {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_direct_compare_and_swap_racing_chained_updates_loses_nothing() {
    use sessiond_core::storage;
    use sessiond_store::Cas;
    const UPDATES: u64 = 64;
    const SWAPS: u64 = 32;
    let (_dir, store, id) = embedded_with_a_session().await;
    let t0 = T0;
    let one = serde_json::json!(1);
    let updates: Vec<_> = (0..UPDATES)
        .map(|_| tokio::spawn(add_one(store.clone(), id, "n")))
        .collect();
    // Another writer with its own read-modify-write loop over compare-and-swap.
    for _ in 0..SWAPS {
        loop {
            let current = store.get(&id, t0).await.unwrap().unwrap();
            let mut next = SessionRecord::clone(&current.record);
            storage::increment(next.storage_mut(), "m", &one).unwrap();
            next.set_version(next.version() + 1);
            match store
                .compare_and_swap(next, current.record.version(), t0)
                .await
                .unwrap()
            {
                Cas::Swapped(_) => break,
                Cas::Conflict => tokio::task::yield_now().await,
                Cas::NotFound => panic!("the session disappeared"),
            }
        }
    }
    for t in updates {
        t.await.unwrap().unwrap();
    }
    let s = store.get(&id, t0).await.unwrap().unwrap();
    assert_eq!(s.record.storage()["n"], UPDATES);
    assert_eq!(s.record.storage()["m"], SWAPS);
}

/// When the embedded-store tests run.
const T0: Timestamp = Timestamp(1_000_000);

/// An embedded store in a temporary folder, holding one web session.
async fn embedded_with_a_session() -> (
    tempfile::TempDir,
    sessiond_store::EmbeddedStore,
    sessiond_core::SessionId,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = sessiond_store::EmbeddedStore::open(&dir.path().join("sessions.redb"), T0).unwrap();
    let r = SessionRecord::new_web(T0, &SessionPolicy::default(), None);
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    (dir, store, id)
}

/// Adds 1 to storage `field` of session `id`, atomically.
async fn add_one(
    store: sessiond_store::EmbeddedStore,
    id: sessiond_core::SessionId,
    field: &'static str,
) -> Result<sessiond_store::Update, sessiond_store::StoreError> {
    let one = serde_json::json!(1);
    let mut f = |r: &mut SessionRecord| {
        sessiond_core::storage::increment(r.storage_mut(), field, &one).map(|_| ())
    };
    store.update(&id, T0, &mut f).await
}
