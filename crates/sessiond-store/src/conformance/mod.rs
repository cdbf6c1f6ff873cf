//! One conformance suite for every [`SessionStore`] (tower-sessions' pattern): a store
//! crate calls [`conformance_tests!`](crate::conformance_tests) with a factory and gets
//! the same tests as every other store. Time is passed explicitly, so nothing sleeps.
//!
//! The kit also has [`faults::FaultyStore`] (a store that fails or hangs on chosen
//! calls), [`staleness`] (how long one node serves what another changed), and real
//! Redis servers and clusters for tests ([`RedisServer`], [`RedisCluster`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sessiond_core::{
    Error as CoreError, OtpRecord, SessionPolicy, SessionRecord, Timestamp, storage,
};

use crate::{Cas, SessionStore, Update};

pub mod faults;
pub mod staleness;
mod token_model;
pub use token_model::token_model;

/// A store under test.
pub type Store = Arc<dyn SessionStore>;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const HOUR: Duration = Duration::from_secs(3600);

fn web() -> SessionRecord {
    SessionRecord::new_web(
        T0,
        &SessionPolicy::default(),
        Some("127.0.0.1".parse().unwrap()),
    )
}

/// Generates the conformance tests for a store; `$make` is an expression evaluating
/// to an async closure that returns a fresh, empty `Arc<dyn SessionStore>` and a
/// guard kept alive for the test (a temporary folder, a Redis server).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            create_then_load, touch_extends_idle_without_rewriting, idle_expiry, absolute_deadline,
            concurrent_updates_lose_nothing, compare_and_swap_detects_conflicts, rejected_update_writes_nothing,
            shorter_idle_timeout_expires_sooner, otp_is_single_use, otp_expires, remove_deletes, list_shows_live_sessions,
            duplicate_insert_is_refused, token_model);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, guard): ($crate::conformance::Store, _) = ($make)().await;
                $crate::conformance::$name(store).await;
                drop(guard);
            }
        )*
    };
}

/// A stored session loads back equal.
pub async fn create_then_load(store: Store) {
    let mut r = web();
    storage::merge_patch(r.storage_mut(), &json!({"k": "v"})).unwrap();
    let id = r.id();
    store.insert(r.clone(), T0).await.unwrap();
    let got = store.get(&id, T0).await.unwrap().expect("stored");
    assert_eq!(*got.record, r);
    assert_eq!(got.last_activity, T0);
    assert!(
        store
            .get(&sessiond_core::SessionId::random(), T0)
            .await
            .unwrap()
            .is_none()
    );
}

/// `touch` moves the idle deadline and leaves the record (and its version) alone.
pub async fn touch_extends_idle_without_rewriting(store: Store) {
    let r = web();
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    let later = T0.plus(Duration::from_secs(50 * 60));
    let touched = store.touch(&id, later).await.unwrap().unwrap();
    assert_eq!(touched.last_activity, later);
    assert_eq!(touched.record.version(), 1);
    let past_first_deadline = T0.plus(HOUR).plus(Duration::from_secs(1));
    assert!(
        store.get(&id, past_first_deadline).await.unwrap().is_some(),
        "activity extended the deadline"
    );
    assert!(store.get(&id, later.plus(HOUR)).await.unwrap().is_none());
}

/// A session idle past its timeout is gone, before and after a purge.
pub async fn idle_expiry(store: Store) {
    let r = web();
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    let almost = T0.plus(Duration::from_millis(3_599_999));
    assert!(store.get(&id, almost).await.unwrap().is_some());
    assert!(store.get(&id, T0.plus(HOUR)).await.unwrap().is_none());
    assert!(
        store.touch(&id, T0.plus(HOUR)).await.unwrap().is_none(),
        "an expired session cannot be revived"
    );
    // Stores with native expiry (Redis TTLs) may purge nothing themselves: the
    // promise is only that the session is gone.
    assert!(store.purge_expired(T0.plus(HOUR)).await.unwrap() <= 1);
    assert!(store.list(T0.plus(HOUR)).await.unwrap().is_empty());
}

/// The absolute lifetime cap is never extended by activity.
pub async fn absolute_deadline(store: Store) {
    let policy = SessionPolicy {
        absolute_lifetime: Some(Duration::from_secs(90 * 60)),
        ..SessionPolicy::default()
    };
    let mut r = SessionRecord::new_web(T0, &policy, None);
    r.set_idle_timeout(120, &policy).unwrap();
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    store
        .touch(&id, T0.plus(Duration::from_secs(80 * 60)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .get(&id, T0.plus(Duration::from_secs(90 * 60)))
            .await
            .unwrap()
            .is_none()
    );
}

/// 64 concurrent writers × 100 increments of one counter → exactly 6,400.
pub async fn concurrent_updates_lose_nothing(store: Store) {
    let r = web();
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let mut f = |rec: &mut SessionRecord| {
                    storage::increment(rec.storage_mut(), "n", &json!(1)).map(|_| ())
                };
                assert!(matches!(
                    store.update(&id, T0, &mut f).await.unwrap(),
                    Update::Updated(_)
                ));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = store.get(&id, T0).await.unwrap().unwrap();
    assert_eq!(got.record.storage()["n"], json!(6400));
    assert_eq!(got.record.version(), 6401);
}

/// A stale compare-and-swap writes nothing.
pub async fn compare_and_swap_detects_conflicts(store: Store) {
    let r = web();
    let id = r.id();
    store.insert(r.clone(), T0).await.unwrap();
    let mut a = r.clone();
    a.set_version(2);
    a.set_user_name("a");
    assert!(matches!(
        store.compare_and_swap(a, 1, T0).await.unwrap(),
        Cas::Swapped(_)
    ));
    let mut b = r;
    b.set_version(2);
    b.set_user_name("b");
    assert!(matches!(
        store.compare_and_swap(b, 1, T0).await.unwrap(),
        Cas::Conflict
    ));
    assert_eq!(
        store
            .get(&id, T0)
            .await
            .unwrap()
            .unwrap()
            .record
            .user_name(),
        "a"
    );
}

/// A change that fails leaves the session as it was.
pub async fn rejected_update_writes_nothing(store: Store) {
    let r = web();
    let id = r.id();
    store.insert(r.clone(), T0).await.unwrap();
    let mut f = |rec: &mut SessionRecord| {
        rec.set_user_name("changed");
        Err(CoreError::InvalidStorage("no".into()))
    };
    assert!(matches!(
        store.update(&id, T0, &mut f).await.unwrap(),
        Update::Rejected(_)
    ));
    assert_eq!(*store.get(&id, T0).await.unwrap().unwrap().record, r);
    let mut g = |_: &mut SessionRecord| Ok(());
    let unknown = sessiond_core::SessionId::random();
    assert!(matches!(
        store.update(&unknown, T0, &mut g).await.unwrap(),
        Update::NotFound
    ));
}

/// Lowering the idle timeout brings expiry (and its purge) forward.
pub async fn shorter_idle_timeout_expires_sooner(store: Store) {
    let mut r = web();
    r.set_idle_timeout(120, &SessionPolicy::default()).unwrap();
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    let mut f = |rec: &mut SessionRecord| {
        rec.set_idle_timeout(60, &SessionPolicy::default())
            .map(|_| ())
    };
    store.update(&id, T0, &mut f).await.unwrap();
    assert!(store.get(&id, T0.plus(HOUR)).await.unwrap().is_none());
    assert!(store.purge_expired(T0.plus(HOUR)).await.unwrap() <= 1);
    assert!(store.list(T0.plus(HOUR)).await.unwrap().is_empty());
}

/// An OTP can be taken once.
pub async fn otp_is_single_use(store: Store) {
    let r = web();
    store.insert(r.clone(), T0).await.unwrap();
    let (token, otp) = OtpRecord::create(&r, None, T0, &SessionPolicy::default()).unwrap();
    store.insert_otp(otp.clone(), T0).await.unwrap();
    let hash = token.hash();
    let (a, b) = tokio::join!(store.take_otp(&hash, T0), store.take_otp(&hash, T0));
    let taken: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(taken, [otp], "exactly one of two concurrent uses succeeds");
    assert!(store.take_otp(&token.hash(), T0).await.unwrap().is_none());
}

/// An OTP past its lifespan is refused.
pub async fn otp_expires(store: Store) {
    let r = web();
    let (token, otp) = OtpRecord::create(
        &r,
        Some(Duration::from_secs(10)),
        T0,
        &SessionPolicy::default(),
    )
    .unwrap();
    store.insert_otp(otp, T0).await.unwrap();
    store
        .purge_expired(T0.plus(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(
        store
            .take_otp(&token.hash(), T0.plus(Duration::from_secs(10)))
            .await
            .unwrap()
            .is_none()
    );
}

/// `remove` deletes at once.
pub async fn remove_deletes(store: Store) {
    let r = web();
    let id = r.id();
    store.insert(r, T0).await.unwrap();
    assert!(store.remove(&id).await.unwrap());
    assert!(!store.remove(&id).await.unwrap());
    assert!(store.get(&id, T0).await.unwrap().is_none());
}

/// `list` returns every live session and no expired one.
pub async fn list_shows_live_sessions(store: Store) {
    let mut ids = Vec::new();
    for i in 0..10u64 {
        let r = web();
        ids.push(r.id());
        store
            .insert(r, T0.plus(Duration::from_secs(i * 60)))
            .await
            .unwrap();
    }
    let mut listed: Vec<_> = store
        .list(T0.plus(HOUR))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.record.id())
        .collect();
    listed.sort();
    let mut want = ids[1..].to_vec();
    want.sort();
    assert_eq!(listed, want, "the first session expired at T0 + 1 h");
}

/// Inserting an id that is live is an error.
pub async fn duplicate_insert_is_refused(store: Store) {
    let r = web();
    store.insert(r.clone(), T0).await.unwrap();
    assert!(store.insert(r, T0).await.is_err());
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` of the tests' own, on a free loopback port, stopped on drop.
pub struct RedisServer {
    child: std::process::Child,
    port: u16,
    /// A cluster node's `nodes.conf`, removed on drop.
    cluster_file: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts one (the Debian package `redis-server` must be installed; the test
    /// command installs it).
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts one on `port` (to restart a stopped one where clients expect it).
    pub fn start_on(port: u16) -> Self {
        Self::spawn(port, &[], None)
    }

    fn spawn(port: u16, extra: &[&str], cluster_file: Option<std::path::PathBuf>) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let server = Self {
            child,
            port,
            cluster_file,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    /// Its URL, database 0.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(f) = &self.cluster_file {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A Redis Cluster of the tests' own: three primaries on free loopback ports (data
/// and cluster bus), all slots assigned, stopped on drop.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three `redis-server --cluster-enabled yes` and joins them with
    /// `redis-cli --cluster create` (package `redis-tools`, installed with
    /// `redis-server`); returns once every node reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let (port, bus) = (free_port(), free_port());
                let file = std::env::temp_dir().join(format!("sessiond-cluster-{port}-{bus}.conf"));
                let _ = std::fs::remove_file(&file);
                RedisServer::spawn(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-config-file",
                        &file.to_string_lossy(),
                        "--cluster-node-timeout",
                        "2000",
                    ],
                    Some(file.clone()),
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("redis-cli must be installed (package redis-tools)");
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = std::process::Command::new("redis-cli")
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the Redis Cluster did not become ready"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self { nodes }
    }

    /// `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}
