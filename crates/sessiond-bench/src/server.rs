//! `sessiond-bench server`: the application under test, in three stacks that share
//! the same routes, the same logic and the same cookie settings (HttpOnly,
//! SameSite=Strict, Path=/, a session cookie, not Secure over plain HTTP), each on a
//! tokio `current_thread` runtime (exactly one worker thread).
//!
//! | route | S | what it does |
//! |---|---|---|
//! | `GET /create` | S1 | stores the 200-byte [`PAYLOAD`] under `"payload"` (no cookie sent, so a new session each time) |
//! | `GET /read` | S2 | the length of `"payload"` |
//! | `POST /incr` | S3 | `counter += 1` (sessiond: one atomic update; tower-sessions: get then insert) |
//! | `GET /counter` | S3 | the counter, to count lost updates |
//! | `GET /store-stats` | S3, W2 | `sessiond-suspending`: compare-and-swap calls and conflicts; `sessiond-embedded`: writes and commits (fsyncs) |
//!
//! `--fill N` (S6) serves nothing: it creates N idle guest sessions through the
//! stack's store API and prints the RSS delta as JSON.
//!
//! `sessiond-embedded` and `sessiond-redis` serve the same sessiond routes over
//! another `SessionStore`; `sessiond-mobile` serves the real `sessiond serve` router
//! (see [`crate::mobile`]); `sessiond-remote(-light)` and `bare-ws` serve `/remote` (see
//! [`crate::remote`]). Stacks with files (`sessiond-embedded`, `sessiond-mobile`,
//! `sessiond-remote`) create a temporary folder and delete it when their stdin
//! closes (the driver closes it to stop them), then exit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use serde_json::{Value, json};

use crate::Stack;
use crate::suspending::{SuspendingSessiond, SuspendingTower};
use crate::sys;

/// The ~200-byte string every stack stores in S1 (same size everywhere).
pub(crate) static PAYLOAD: LazyLock<String> = LazyLock::new(|| {
    let unit = "sessiond-bench payload 0123456789 ";
    let mut s = unit.repeat(200 / unit.len() + 1);
    s.truncate(200);
    s
});

/// What a handler answers on failure.
type HandlerError = (StatusCode, String);

fn internal(e: impl std::fmt::Display) -> HandlerError {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Serves `stack` on `listen` (port 0 allowed) and prints `listening <addr>` on stdout
/// once the socket is bound. Never returns unless the server fails.
pub(crate) fn serve(
    stack: Stack,
    listen: SocketAddr,
    redis_url: Option<&str>,
) -> anyhow::Result<()> {
    let data = if stack.has_data_dir() {
        let dir = DataDir::create(stack.name())?;
        exit_when_stdin_closes(dir.path().to_path_buf());
        Some(dir)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let data_path = data.as_ref().map(|d| d.path().to_path_buf());
        let router = match stack {
            Stack::Bare => bare_router(),
            Stack::Sessiond => sessiond_router(Arc::new(sessiond_store::MemoryStore::new())),
            Stack::SessiondEmbedded => {
                use sessiond_core::Clock as _;
                let path = data_path.context("no data folder")?.join("sessions.redb");
                let store =
                    sessiond_store::EmbeddedStore::open(&path, sessiond_core::SystemClock.now())
                        .with_context(|| format!("opening {}", path.display()))?;
                let stats = store.clone();
                sessiond_router(Arc::new(store)).route(
                    "/store-stats",
                    get(move || async move {
                        let s = stats.commit_stats();
                        format!("{} {}", s.writes, s.commits)
                    }),
                )
            }
            Stack::SessiondRedis | Stack::SessiondRedisUncached | Stack::SessiondRedisCluster => {
                let url = redis_url.context("the Redis stacks need --redis-url")?;
                let mut config = sessiond_store::RedisConfig::new(url);
                if stack == Stack::SessiondRedisUncached {
                    config.near_cache = sessiond_store::NearCacheConfig::off();
                }
                let store = sessiond_store::RedisStore::connect(&config)
                    .await
                    .with_context(|| format!("connecting to {url}"))?;
                sessiond_router(Arc::new(store))
            }
            Stack::SessiondMobile => {
                crate::mobile::app_router(&data_path.context("no data folder")?, false).await?
            }
            Stack::SessiondMobileHang => {
                crate::mobile::app_router(&data_path.context("no data folder")?, true).await?
            }
            Stack::SessiondRemote | Stack::SessiondRemoteLight => {
                crate::remote::sessiond_router(
                    &data_path.context("no data folder")?,
                    stack == Stack::SessiondRemoteLight,
                )
                .await?
            }
            Stack::BareWs => crate::remote::bare_router(),
            Stack::SessiondSuspending => {
                let store = Arc::new(SuspendingSessiond::default());
                let stats = store.clone();
                sessiond_router(store)
                    .route("/store-stats", get(move || async move { stats.stats() }))
            }
            Stack::TowerSessions => tower_router(tower_sessions::MemoryStore::default()),
            Stack::TowerSessionsSuspending => tower_router(SuspendingTower::default()),
        };
        // Same socket settings for every stack.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening {addr}")?;
            out.flush()?;
        }
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await?;
        drop(data);
        Ok(())
    })
}

/// A temporary folder of this process, deleted on drop.
#[derive(Debug)]
pub(crate) struct DataDir(PathBuf);

impl DataDir {
    /// Creates `<temp dir>/sessiond-bench-<what>-<pid>-<ns>`.
    pub(crate) fn create(what: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "sessiond-bench-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deletes `dir` and exits once stdin reaches its end: the driver closes the pipe to
/// stop a server with files (and if the driver dies, the pipe closes too). The
/// thread sleeps in `read` until then.
fn exit_when_stdin_closes(dir: PathBuf) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(0);
    });
}

// ---------------------------------------------------------------- bare (the limit)

fn bare_router() -> Router {
    let counter = Arc::new(Mutex::new(0_i64));
    let incr = {
        let counter = counter.clone();
        move || async move {
            let mut n = counter.lock().expect("counter lock");
            *n += 1;
            n.to_string()
        }
    };
    let read_counter = move || async move { counter.lock().expect("counter lock").to_string() };
    Router::new()
        .route("/create", get(|| async { "ok" }))
        .route("/read", get(|| async { PAYLOAD.len().to_string() }))
        .route("/incr", post(incr))
        .route("/counter", get(read_counter))
}

// ---------------------------------------------------------------- sessiond

fn sessiond_sessions(store: Arc<dyn sessiond_store::SessionStore>) -> sessiond_store::Sessions {
    sessiond_store::Sessions::new(
        store,
        Arc::new(sessiond_core::Roles::default()),
        Arc::new(sessiond_core::SystemClock),
        sessiond_core::SessionPolicy::default(),
    )
}

fn sessiond_router(store: Arc<dyn sessiond_store::SessionStore>) -> Router {
    use sessiond_server::Session;

    async fn create(session: Session) -> Result<&'static str, HandlerError> {
        session
            .update_storage(|map| {
                map.insert("payload".into(), json!(PAYLOAD.as_str()));
                Ok(())
            })
            .await
            .map_err(internal)?;
        Ok("ok")
    }

    async fn read(session: Session) -> String {
        // The request's consistent snapshot: no extra store round trip.
        let snapshot = session.snapshot();
        let len = snapshot
            .record
            .storage()
            .get("payload")
            .and_then(Value::as_str)
            .map_or(0, str::len);
        len.to_string()
    }

    async fn incr(session: Session) -> Result<String, HandlerError> {
        let n = session
            .update_storage(|map| {
                let n = map.get("counter").and_then(Value::as_i64).unwrap_or(0) + 1;
                map.insert("counter".into(), n.into());
                Ok(n)
            })
            .await
            .map_err(internal)?;
        Ok(n.to_string())
    }

    async fn counter(session: Session) -> String {
        let snapshot = session.snapshot();
        let n = snapshot
            .record
            .storage()
            .get("counter")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        n.to_string()
    }

    let sessions = sessiond_sessions(store);
    // Needs a runtime: called inside `block_on`.
    sessions.spawn_reaper(Duration::from_secs(1));
    Router::new()
        .route("/create", get(create))
        .route("/read", get(read))
        .route("/incr", post(incr))
        .route("/counter", get(counter))
        .layer(sessiond_server::SessionLayer::new(
            sessions,
            sessiond_server::CookieConfig::for_app("bench"),
        ))
}

// ---------------------------------------------------------------- tower-sessions

fn tower_router<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
    use tower_sessions::cookie::SameSite;
    use tower_sessions::{Session, SessionManagerLayer};

    async fn create(session: Session) -> Result<&'static str, HandlerError> {
        session
            .insert("payload", PAYLOAD.as_str())
            .await
            .map_err(internal)?;
        Ok("ok")
    }

    async fn read(session: Session) -> Result<String, HandlerError> {
        let payload: Option<String> = session.get("payload").await.map_err(internal)?;
        Ok(payload.map_or(0, |p| p.len()).to_string())
    }

    // What every tower-sessions user writes: read, add one, write back. Two requests
    // that interleave both read the same value: one update is lost.
    async fn incr(session: Session) -> Result<String, HandlerError> {
        let n: i64 = session.get("counter").await.map_err(internal)?.unwrap_or(0);
        session.insert("counter", n + 1).await.map_err(internal)?;
        Ok((n + 1).to_string())
    }

    async fn counter(session: Session) -> Result<String, HandlerError> {
        let n: i64 = session.get("counter").await.map_err(internal)?.unwrap_or(0);
        Ok(n.to_string())
    }

    let layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_same_site(SameSite::Strict)
        .with_http_only(true);
    Router::new()
        .route("/create", get(create))
        .route("/read", get(read))
        .route("/incr", post(incr))
        .route("/counter", get(counter))
        .layer(layer)
}

// ---------------------------------------------------------------- S6 memory

/// What `--fill` prints (one JSON line).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct FillResult {
    /// The stack.
    pub stack: String,
    /// How many sessions were created.
    pub sessions: u64,
    /// RSS after − RSS before, bytes.
    pub rss_delta_bytes: i64,
    /// `rss_delta_bytes / sessions`.
    pub bytes_per_session: f64,
    /// RSS before the sessions were created, bytes.
    pub rss_before_bytes: u64,
    /// Seconds spent creating them.
    pub fill_secs: f64,
    /// How many sessions the store reports holding afterwards (a sanity check).
    pub stored: u64,
}

/// Creates `n` idle guest sessions through `stack`'s store API, prints [`FillResult`].
pub(crate) fn fill(stack: Stack, n: u64) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async move {
        match stack {
            Stack::Bare
            | Stack::SessiondSuspending
            | Stack::TowerSessionsSuspending
            | Stack::SessiondEmbedded
            | Stack::SessiondRedis
            | Stack::SessiondRedisUncached
            | Stack::SessiondRedisCluster
            | Stack::SessiondMobile
            | Stack::SessiondMobileHang
            | Stack::SessiondRemote
            | Stack::SessiondRemoteLight
            | Stack::BareWs => {
                anyhow::bail!("--fill takes sessiond or tower-sessions")
            }
            Stack::Sessiond => {
                let store = Arc::new(sessiond_store::MemoryStore::new());
                let sessions = sessiond_store::Sessions::new(
                    store.clone(),
                    Arc::new(sessiond_core::Roles::default()),
                    Arc::new(sessiond_core::SystemClock),
                    sessiond_core::SessionPolicy::default(),
                );
                let before = sys::rss_bytes()?;
                let start = Instant::now();
                for _ in 0..n {
                    let (snapshot, token) = sessions.create_web(None).await?;
                    drop((snapshot, token));
                }
                let secs = start.elapsed().as_secs_f64();
                let after = sys::rss_bytes()?;
                Ok(fill_result(
                    stack,
                    n,
                    before,
                    after,
                    secs,
                    store.len() as u64,
                ))
            }
            Stack::TowerSessions => {
                use tower_sessions::SessionStore as _;
                use tower_sessions::session::{Id, Record};

                let store = tower_sessions::MemoryStore::default();
                let before = sys::rss_bytes()?;
                let start = Instant::now();
                let expiry = time::OffsetDateTime::now_utc() + time::Duration::weeks(2);
                let mut last = None;
                for _ in 0..n {
                    let mut record = Record {
                        id: Id::default(),
                        data: std::collections::HashMap::default(),
                        expiry_date: expiry,
                    };
                    store.create(&mut record).await?;
                    last = Some(record.id);
                }
                let secs = start.elapsed().as_secs_f64();
                let after = sys::rss_bytes()?;
                // tower-sessions' MemoryStore has no length; check one record is there.
                let found = match last {
                    Some(id) => store.load(&id).await?.is_some(),
                    None => false,
                };
                let stored = if found { n } else { 0 };
                Ok(fill_result(stack, n, before, after, secs, stored))
            }
        }
    })?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

fn fill_result(
    stack: Stack,
    n: u64,
    before: u64,
    after: u64,
    secs: f64,
    stored: u64,
) -> FillResult {
    let delta = after as i64 - before as i64;
    FillResult {
        stack: stack.name().to_string(),
        sessions: n,
        rss_delta_bytes: delta,
        bytes_per_session: if n == 0 { 0.0 } else { delta as f64 / n as f64 },
        rss_before_bytes: before,
        fill_secs: secs,
        stored,
    }
}
