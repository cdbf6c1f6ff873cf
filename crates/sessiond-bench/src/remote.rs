//! The remote group: remote clients over the `/remote` WebSocket (protocol v1 of
//! `sessiond_core::protocol`).
//!
//! Two stacks, served like the others (`server --stack …`, one `current_thread`
//! runtime on core 1):
//! - `sessiond-remote`: the real `sessiond serve` router ([`crate::mobile::node`])
//!   with a users file holding one user ([`USER`], argon2id hash) and one registered
//!   function, [`FUNCTION`], that returns its params. A hello checks the password
//!   (argon2 on tokio's blocking pool) and opens a remote session in the
//!   `MemoryStore`; each call runs on a task of its own with `Session::current()`.
//! - `bare-ws`: an axum WebSocket endpoint with no session and no login: the same
//!   frames parsed with the same `parse_client`, a hello answered with a fixed
//!   welcome, a call with a result holding its params, in the connection's task.
//!
//! The driver's clients are `sessiond-client`'s [`RemoteClient`] (tokio-tungstenite,
//! a reader and a writer task per connection) on the driver's one-thread runtime.
//! Logins are made one at a time, before the clock starts: the server counts every
//! password attempt from one address before checking it, and argon2 takes 19 MiB
//! per concurrent check.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::routing::get;
use serde_json::{Value, json};
use sessiond_client::{ClientConfig, ClientError, RemoteClient};
use sessiond_core::SessionId;
use sessiond_core::protocol::{self, ClientMessage, ServerMessage};
use sessiond_server::users::Users;

use crate::load::{ConnResult, LoadResult};
use crate::sys;

/// The user every benchmark client logs in as.
pub(crate) const USER: &str = "bench";
/// Its password.
pub(crate) const PASSWORD: &str = "bench-password";
/// The function every call runs: it returns its params.
pub(crate) const FUNCTION: &str = "noop";

/// The params of every call (and so the value of every result).
pub(crate) fn params() -> Value {
    json!({"seq": 12345, "text": "sessiond-bench"})
}

/// The text frames of one call and its answer, bytes.
pub(crate) fn frame_sizes() -> (usize, usize) {
    let call = ClientMessage::Call {
        id: 1_000_000,
        function: FUNCTION.into(),
        params: params(),
    };
    let result = ServerMessage::Result {
        id: 1_000_000,
        value: params(),
    };
    let len = |json: serde_json::Result<String>| json.expect("serializable").len();
    (
        len(serde_json::to_string(&call)),
        len(serde_json::to_string(&result)),
    )
}

// ---------------------------------------------------------------- the stacks

/// The light argon2id parameters of `sessiond-remote-light`: memory KiB, passes.
pub(crate) const LIGHT_HASH: (u32, u32) = (64, 1);

/// `sessiond-remote`: the `sessiond serve` router with `users.json` under `data` and
/// the [`FUNCTION`] function (`light`: the password hashed with [`LIGHT_HASH`]
/// instead of the defaults). Starts the reaper (needs the runtime).
pub(crate) async fn sessiond_router(data: &Path, light: bool) -> anyhow::Result<Router> {
    let users = data.join("users.json");
    if light {
        write_light_users(&users)?;
    } else {
        Users::add(&users, USER, PASSWORD, Vec::new(), Vec::new())
            .with_context(|| format!("writing {}", users.display()))?;
    }
    let node = crate::mobile::node(data, "")?
        .without_mobile()
        .functions(|b| b.function(FUNCTION, |params| async move { Ok(params) }));
    crate::mobile::router(node).await
}

/// A users file with [`USER`], its password hashed with argon2id and [`LIGHT_HASH`]
/// (the login reads the parameters from the hash).
fn write_light_users(path: &Path) -> anyhow::Result<()> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let (m, t) = LIGHT_HASH;
    let params = argon2::Params::new(m, t, 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt =
        SaltString::encode_b64(b"sessiond-bench-salt").map_err(|e| anyhow::anyhow!("{e}"))?;
    let hash = argon
        .hash_password(PASSWORD.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let users = Users {
        users: vec![sessiond_server::users::User {
            user_name: USER.into(),
            password: hash,
            roles: Vec::new(),
            privileges: Vec::new(),
        }],
    };
    std::fs::write(path, serde_json::to_vec_pretty(&users)?)
        .with_context(|| format!("writing {}", path.display()))?;
    anyhow::ensure!(
        Users::load(path)?.verify(USER, PASSWORD).is_some(),
        "the light hash does not verify"
    );
    Ok(())
}

/// What `bare-ws` answers every hello with.
static WELCOME: LazyLock<String> = LazyLock::new(|| {
    serde_json::to_string(&ServerMessage::Welcome {
        protocol: protocol::VERSION,
        id: SessionId::random(),
        persistent_id: SessionId::random(),
        resumed: false,
        info: Value::Null,
    })
    .expect("serializable")
});

/// `bare-ws`: `/remote` with no session and no login, and `/healthz`. The same
/// WebSocket settings as sessiond's `/remote` (4 KiB read buffer).
pub(crate) fn bare_router() -> Router {
    async fn upgrade(ws: WebSocketUpgrade) -> axum::response::Response {
        ws.protocols([protocol::SUBPROTOCOL])
            .read_buffer_size(4096)
            .on_upgrade(bare_connection)
    }
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/remote", get(upgrade))
}

async fn bare_connection(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let reply = match protocol::parse_client(&text) {
            Ok(ClientMessage::Hello(_)) => WELCOME.clone(),
            Ok(ClientMessage::Call { id, params, .. }) => {
                serde_json::to_string(&ServerMessage::Result { id, value: params })
                    .expect("serializable")
            }
            // Goodbye, sleep, a bad frame: close.
            Ok(_) | Err(_) => break,
        };
        if socket.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------- the clients

/// One client, logged in and welcomed.
async fn connect(addr: SocketAddr) -> anyhow::Result<RemoteClient> {
    let config = ClientConfig::new(&format!("ws://{addr}/remote"), USER, PASSWORD);
    RemoteClient::connect(config)
        .await
        .with_context(|| format!("connecting a remote client to {addr}"))
}

/// `n` clients, connected one after the other.
async fn connect_many(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<RemoteClient>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(addr).await?);
    }
    Ok(clients)
}

/// Says goodbye on every connection at once (`bare-ws` closes instead of
/// confirming: its error is expected), within 10 s.
async fn close_all(clients: Vec<RemoteClient>) {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.goodbye()))
        .collect();
    let all = async {
        for t in tasks {
            let _ = t.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
}

/// Checks that `addr` takes a login and answers a call.
pub(crate) async fn check(addr: SocketAddr) -> anyhow::Result<()> {
    let client = connect(addr).await?;
    let v = client.call(FUNCTION, params()).await?;
    anyhow::ensure!(v == params(), "{FUNCTION} answered {v}");
    close_all(vec![client]).await;
    Ok(())
}

/// X1, X2: `clients` clients (connected before the clock starts), each calling
/// [`FUNCTION`] back to back for `duration`, on this runtime. `on_start` runs right
/// before the clock starts and `on_end` right after the last call (the CPU readings
/// go there); the clients say goodbye after that.
pub(crate) async fn run(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    mut on_start: impl FnMut(),
    mut on_end: impl FnMut(),
) -> anyhow::Result<LoadResult> {
    let connected = connect_many(addr, clients).await?;
    on_start();
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = connected
        .into_iter()
        .map(|c| tokio::spawn(client_loop(c, deadline)))
        .collect();
    let mut total = LoadResult::default();
    let mut done = Vec::with_capacity(clients);
    for t in tasks {
        let (r, c) = t.await?;
        total.absorb(&r);
        done.push(c);
    }
    total.elapsed = start.elapsed();
    on_end();
    total.latencies_us.sort_unstable();
    close_all(done).await;
    Ok(total)
}

async fn client_loop(client: RemoteClient, deadline: Instant) -> (ConnResult, RemoteClient) {
    let params = params();
    let mut r = ConnResult::with_capacity();
    while Instant::now() < deadline {
        let t0 = Instant::now();
        let answer = client.call(FUNCTION, params.clone()).await;
        let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
        match answer {
            Ok(v) => {
                r.latencies_us.push(us);
                if v == params {
                    r.ok += 1;
                } else {
                    r.invalid += 1;
                }
            }
            Err(ClientError::Server { .. }) => {
                r.latencies_us.push(us);
                r.non_2xx += 1;
            }
            Err(_) => {
                // The connection is gone: this client stops.
                r.errors += 1;
                break;
            }
        }
    }
    (r, client)
}

/// X3: what one server's RSS did while idle clients connected.
#[derive(Debug, serde::Serialize)]
pub(crate) struct IdleResult {
    /// The stack.
    pub stack: String,
    /// 0-based repetition (a fresh server each).
    pub rep: usize,
    /// Clients connected before the first reading (they warm up allocator arenas and
    /// the login path).
    pub warm_clients: usize,
    /// Clients connected between the two readings.
    pub clients: usize,
    /// Server RSS at the first reading, bytes.
    pub rss_before_bytes: u64,
    /// Server RSS at the second reading, bytes.
    pub rss_after_bytes: u64,
    /// `(after − before) / clients`.
    pub bytes_per_client: f64,
    /// Wall time of the `clients` connections (one at a time), seconds.
    pub connect_secs: f64,
    /// Server CPU time per connection (upgrade, hello, login, welcome), µs.
    pub server_cpu_us_per_connect: f64,
    /// Clients that answered a call after the second reading (all should).
    pub alive: usize,
}

/// X3 against the server `pid` at `addr`: `warm` clients, a reading of its RSS,
/// `n` more clients, 2 s of idleness, another reading; then one call on every
/// client to check they are all still connected.
pub(crate) async fn idle(
    stack: &str,
    rep: usize,
    addr: SocketAddr,
    pid: u32,
    warm: usize,
    n: usize,
    ticks_per_sec: u64,
) -> anyhow::Result<IdleResult> {
    let mut clients = connect_many(addr, warm).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = sys::rss_bytes_of(pid)?;
    let cpu0 = sys::cpu_ticks(pid)?;
    let start = Instant::now();
    clients.extend(connect_many(addr, n).await?);
    let connect_secs = start.elapsed().as_secs_f64();
    let cpu1 = sys::cpu_ticks(pid)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = sys::rss_bytes_of(pid)?;
    let calls: Vec<_> = clients
        .into_iter()
        .map(|c| {
            tokio::spawn(async move {
                let ok = c.call(FUNCTION, params()).await.is_ok();
                (ok, c)
            })
        })
        .collect();
    let mut alive = 0;
    let mut clients = Vec::new();
    for t in calls {
        let (ok, c) = t.await?;
        alive += usize::from(ok);
        clients.push(c);
    }
    drop(clients);
    let cpu_secs = (cpu1 - cpu0) as f64 / ticks_per_sec as f64;
    Ok(IdleResult {
        stack: stack.to_string(),
        rep,
        warm_clients: warm,
        clients: n,
        rss_before_bytes: rss0,
        rss_after_bytes: rss1,
        bytes_per_client: (rss1 as f64 - rss0 as f64) / n.max(1) as f64,
        connect_secs,
        server_cpu_us_per_connect: cpu_secs * 1e6 / n.max(1) as f64,
        alive,
    })
}
