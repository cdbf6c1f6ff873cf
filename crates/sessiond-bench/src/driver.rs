//! The driver: starts the servers (and the stores group's Redis), warms them up,
//! runs the repetitions, collects the numbers and hands them to [`crate::report`].

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper::Method;
use hyper::header::{self, HeaderName, HeaderValue};

use crate::load::{self, BodySpec, Check, LoadResult, RequestSpec};
use crate::mobile::RefreshResult;
use crate::redis::{self, BenchRun, RedisProc};
use crate::report::{
    self, Extras, Header, RepResult, Report, ScenarioResult, StackResult, StalenessResult,
};
use crate::server::{FillResult, PAYLOAD};
use crate::sys;
use crate::{Group, RunArgs, Scenario, Stack};

/// The core the servers run on, and the core of the load generator (and Redis).
const SERVER_CORE: usize = 1;
const CLIENT_CORE: usize = 0;

/// How the processes are placed on the cores.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// Start servers under `taskset -c SERVER_CORE`.
    pin_servers: bool,
}

/// A running `sessiond-bench server`. Stopped when dropped: stacks with files get
/// their stdin closed (they delete their folder and exit), the others are killed.
struct ServerProc {
    stack: Stack,
    child: Child,
    addr: SocketAddr,
    stdin: Option<ChildStdin>,
    // Kept open so that the server's stdout never breaks.
    _stdout: BufReader<ChildStdout>,
}

impl ServerProc {
    fn start(
        exe: &Path,
        stack: Stack,
        placement: Placement,
        redis_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut cmd = server_command(exe, placement);
        cmd.args(["server", "--stack", stack.name(), "--listen", "127.0.0.1:0"]);
        if let Some(url) = redis_url.filter(|_| stack.on_redis()) {
            cmd.args(["--redis-url", url]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {} server", stack.name()))?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {} server did not start (said {line:?})", stack.name());
        };
        let addr = addr.parse()?;
        Ok(Self {
            stack,
            child,
            addr,
            stdin,
            _stdout: stdout,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn cpu_ticks(&self) -> (u64, u64) {
        sys::cpu_ticks_split(self.pid()).unwrap_or((0, 0))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.stack.has_data_dir() {
            // It deletes its folder, then exits.
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "the {} server did not exit after its stdin closed: killed (its temporary \
                 folder may be left behind)",
                self.stack.name()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_command(exe: &Path, placement: Placement) -> Command {
    sys::pinned(exe, placement.pin_servers.then_some(SERVER_CORE))
}

/// What a scenario's requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `GET /create` with no cookie.
    Create,
    /// `GET /read` with no cookie: a first visit that stores nothing.
    Visit,
    /// `GET /read` with one session's cookie.
    Read,
    /// `POST /incr` on a fresh session per repetition; lost updates counted.
    Incr,
    /// `POST /incr` round robin over [`MANY`] fresh sessions per repetition; lost
    /// updates counted.
    IncrMany,
    /// `POST /mobileapp/$authenticate` of a new device each time.
    MobileLogin,
    /// `GET /mobileapp/$licensecheck` with one login's Bearer token.
    MobileData,
    /// Remote clients over the `/remote` WebSocket, each calling `noop` back to back.
    RemoteCall,
}

impl Kind {
    fn request(self) -> (Method, &'static str) {
        match self {
            Self::Create => (Method::GET, "/create"),
            Self::Read | Self::Visit => (Method::GET, "/read"),
            Self::Incr | Self::IncrMany => (Method::POST, "/incr"),
            Self::MobileLogin => (Method::POST, "/mobileapp/$authenticate"),
            Self::MobileData => (Method::GET, "/mobileapp/$licensecheck"),
            Self::RemoteCall => (Method::GET, "/remote"),
        }
    }

    /// What the report says each connection sends.
    fn describe(self) -> String {
        if self == Self::RemoteCall {
            format!(
                r#"WebSocket /remote: {{"type":"call","id":N,"function":"{}","params":{}}}"#,
                crate::remote::FUNCTION,
                crate::remote::params()
            )
        } else {
            let (method, path) = self.request();
            format!("{method} {path}")
        }
    }
}

/// One scenario to run.
struct Plan {
    id: &'static str,
    title: &'static str,
    kind: Kind,
    stacks: Vec<Stack>,
    /// Run `redis-benchmark` after each round of repetitions (R1).
    redis_benchmark: bool,
    /// Count kernel threads' CPU (journal, writeback: the fsyncs' work) as the
    /// scenario's own, not as other load.
    kernel_threads: bool,
    /// Said under the table.
    notes: Vec<String>,
    /// Connections (virtual users), when not `--conns`.
    conns: Option<usize>,
}

/// What every scenario of a run shares.
#[derive(Clone, Copy)]
struct Env<'a> {
    exe: &'a Path,
    placement: Placement,
    args: &'a RunArgs,
    ticks_per_sec: u64,
    /// The stores group's Redis.
    redis: Option<&'a RedisProc>,
    /// The stores group's Redis Cluster (its URL).
    cluster: Option<&'a str>,
}

/// Sessions of [`Kind::IncrMany`].
const MANY: usize = 1000;

fn peers_plan(scenario: Scenario, args: &RunArgs) -> Plan {
    let (id, title, kind) = match scenario {
        Scenario::S1 => (
            "S1",
            "S1 create: no cookie, a new session with a 200-byte payload per request",
            Kind::Create,
        ),
        Scenario::S2 => (
            "S2",
            "S2 hot read: one session, read the 200-byte payload",
            Kind::Read,
        ),
        Scenario::S3 => (
            "S3",
            "S3 hot write: one session, read counter + 1, write back",
            Kind::Incr,
        ),
        Scenario::S6 | Scenario::X1 | Scenario::X2 | Scenario::X3 => {
            unreachable!("not a peers scenario with requests")
        }
    };
    let mut stacks = args.stacks.clone();
    if scenario == Scenario::S3 && !args.no_suspending {
        for extra in [Stack::SessiondSuspending, Stack::TowerSessionsSuspending] {
            if !stacks.contains(&extra) {
                stacks.push(extra);
            }
        }
    }
    Plan {
        id,
        title,
        kind,
        stacks,
        redis_benchmark: false,
        kernel_threads: false,
        notes: Vec::new(),
        conns: None,
    }
}

/// The memory store against the embedded one (W1, W2).
const DURABLE_STACKS: [Stack; 2] = [Stack::Sessiond, Stack::SessiondEmbedded];

/// One Redis against a 3-primary cluster (C1, C2).
const CLUSTER_STACKS: [Stack; 2] = [Stack::SessiondRedis, Stack::SessiondRedisCluster];

fn plan(id: &'static str, title: &'static str, kind: Kind, stacks: &[Stack], note: &str) -> Plan {
    Plan {
        id,
        title,
        kind,
        stacks: stacks.to_vec(),
        redis_benchmark: false,
        kernel_threads: true,
        notes: vec![note.into()],
        conns: None,
    }
}

fn stores_plans() -> Vec<Plan> {
    let r1 = Plan {
        redis_benchmark: true,
        ..plan(
            "R1",
            "R1 hot read per store: one session, read the 200-byte payload (S2's route)",
            Kind::Read,
            &[
                Stack::Sessiond,
                Stack::SessiondEmbedded,
                Stack::SessiondRedis,
                Stack::SessiondRedisUncached,
            ],
            "The same sessiond app over its `SessionStore`s. A read is one store `get` and a \
             `touch` at most once per granularity period. EmbeddedStore answers reads from \
             its in-memory mirror; sessiond-redis from its near-cache (kept coherent by \
             invalidations over pub/sub), sessiond-redis-uncached with one `HMGET` and the \
             JSON decode of the record. \"Redis CPU\" = utime+stime delta of the \
             redis-server process ÷ responses; it runs on the load generator's core.",
        )
    };
    vec![
        plan(
            "W1",
            "W1 first visit per store: no cookie, a new guest that stores nothing (`GET /read`)",
            Kind::Visit,
            &DURABLE_STACKS,
            "A guest is stored at its first change (`lazy_guests`, the default): a first \
             visit that changes nothing costs no store write, on any store.",
        ),
        plan(
            "W1s",
            "W1s first visit that stores: no cookie, a new session with a 200-byte payload (S1's `GET /create`)",
            Kind::Create,
            &DURABLE_STACKS,
            "Each request creates and stores a session: on the embedded store, one durable \
             write (in the write-ahead log, synced before the answer, in a group with the \
             writes that arrive meanwhile).",
        ),
        plan(
            "W2",
            "W2 durable updates across 1,000 sessions: read counter + 1, write back (`POST /incr`, round robin)",
            Kind::IncrMany,
            &DURABLE_STACKS,
            "Connection i sends its updates to sessions i, i + 32, i + 64… of 1,000: \
             concurrent updates of different sessions, each acknowledged only once durable \
             on the embedded store (group commit: the writes that arrive during a commit \
             share the next one and its log sync).",
        ),
        r1,
        plan(
            "R2",
            "R2 storage update per store: one session, read counter + 1, write back \
             (S3's route, atomic `update_storage`)",
            Kind::Incr,
            &[
                Stack::Sessiond,
                Stack::SessiondEmbedded,
                Stack::SessiondRedis,
            ],
            "One hot session (W3 on the embedded store). Embedded: each update builds on the \
             version the previous one submitted and shares its group commit, and is \
             acknowledged once durable (its group's log sync). sessiond-redis: the updates of one session \
             are queued in the server, one Lua compare-and-set each (Redis without \
             persistence).",
        ),
        plan(
            "C1",
            "C1 hot read, one Redis vs a 3-primary Redis Cluster (S2's route)",
            Kind::Read,
            &CLUSTER_STACKS,
            "The cluster's three redis-server processes run unpinned, without persistence; \
             both stacks read through their near-cache.",
        ),
        plan(
            "C2",
            "C2 storage update, one Redis vs a 3-primary Redis Cluster (S3's route)",
            Kind::Incr,
            &CLUSTER_STACKS,
            "One session: every update is a compare-and-set on its slot's primary.",
        ),
    ]
}

fn mobile_plans() -> [Plan; 2] {
    [
        Plan {
            id: "M1",
            title: "M1 mobile login of new devices: `POST /mobileapp/$authenticate`, a new \
                    `device.id` per request, durable session files",
            kind: Kind::MobileLogin,
            stacks: vec![Stack::SessiondMobile, Stack::SessiondMobileHang],
            redis_benchmark: false,
            kernel_threads: true,
            notes: vec![
                "The real `sessiond serve` router (`sessiond_server::app`), accept-all hook \
                 (`Policy::default()`), random ids. Each login writes the session file and \
                 its sidecar atomically (temp files, fsync, rename, fsync of the folder); \
                 logins of different devices run in parallel (one lock per device). The \
                 file writes run on tokio's blocking pool: threads of the server process, \
                 on core 1 too, counted in its CPU. Every answer is checked: 200 with \
                 `success: true` and a non-empty `token`. `sessiond-mobile-hang`: the same, \
                 while the server keeps 4 logins in flight whose hook hangs 1.5 s (a callout \
                 at its timeout): the other devices' latency must not move."
                    .into(),
            ],
            conns: None,
        },
        Plan {
            id: "M2",
            title: "M2 authorized mobile requests: `GET /mobileapp/$licensecheck` with a \
                    Bearer token (token check only, no upstream)",
            kind: Kind::MobileData,
            stacks: vec![Stack::SessiondMobile],
            redis_benchmark: false,
            kernel_threads: true,
            notes: vec![
                "One login first; then every request decodes the token, finds the session \
                 in memory, compares the token in constant time and touches the session's \
                 web session (MemoryStore)."
                    .into(),
            ],
            conns: None,
        },
    ]
}

fn remote_plans(args: &RunArgs) -> Vec<Plan> {
    let (call, result) = crate::remote::frame_sizes();
    let common = format!(
        "sessiond-remote: the real `sessiond serve` router; each call is one text frame \
         ({call} bytes) parsed, checked against the connection's running calls, run on a \
         task of its own in the caller's remote session (`Session::current()`, the \
         registered `noop` returns its params) and answered with a `result` frame \
         ({result} bytes). bare-ws: axum's WebSocket with no session and no login; it \
         parses the same frame with the same `parse_client` and answers the same \
         `result` in the connection's task: the cost of the WebSocket and the JSON alone. \
         Clients: `sessiond-client`'s `RemoteClient` (tokio-tungstenite), logged in \
         (argon2id) before the clock starts and saying goodbye after it stops; a call \
         counts when its value equals its params. Latency = one round trip as the client \
         sees it. No target was set by the issue: the ratios \
         to bare-ws are for reference."
    );
    [
        Plan {
            id: "X1",
            title: "X1 remote calls over one connection: one client, trivial server-side \
                    calls back to back",
            kind: Kind::RemoteCall,
            stacks: vec![Stack::SessiondRemote, Stack::BareWs],
            redis_benchmark: false,
            kernel_threads: false,
            notes: vec![common.clone()],
            conns: Some(1),
        },
        Plan {
            id: "X2",
            title: "X2 remote calls over many connections: each client calls back to back, \
                    all at once",
            kind: Kind::RemoteCall,
            stacks: vec![Stack::SessiondRemote, Stack::BareWs],
            redis_benchmark: false,
            kernel_threads: false,
            notes: vec![common],
            conns: Some(args.remote_clients),
        },
    ]
    .into_iter()
    .filter(|p| match p.id {
        "X1" => args.scenarios.contains(&Scenario::X1),
        _ => args.scenarios.contains(&Scenario::X2),
    })
    .collect()
}

/// The whole benchmark.
pub(crate) fn run(mut args: RunArgs) -> anyhow::Result<()> {
    if args.quick {
        args.reps = 1;
        args.secs = 2;
        args.warmup = 1;
    }
    anyhow::ensure!(
        args.reps > 0 && args.secs > 0 && args.conns > 0,
        "--reps, --secs and --conns must be positive"
    );
    args.scenarios.sort_unstable();
    args.scenarios.dedup();
    args.only.sort_unstable();
    args.only.dedup();

    let exe = std::env::current_exe().context("locating this executable")?;
    let mut notes = Vec::new();
    if cfg!(debug_assertions) {
        notes.push(
            "**This is a debug build: the numbers mean nothing. Use `cargo run --release`.**"
                .to_string(),
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    // Before pinning: afterwards `nproc` would count only the driver's core.
    let nproc = sys::command_output("nproc", &[]).unwrap_or_else(|| cores.to_string());
    let placement = if !sys::taskset_available() {
        notes.push(
            "`taskset` not found (util-linux): server and load generator ran UNPINNED.".into(),
        );
        Placement { pin_servers: false }
    } else if cores < 2 {
        notes.push(format!(
            "only {cores} core available: server and load generator ran UNPINNED on it."
        ));
        Placement { pin_servers: false }
    } else {
        sys::pin_self(CLIENT_CORE)?;
        Placement { pin_servers: true }
    };
    let (ticks, ticks_assumed) = sys::clock_ticks_per_sec();
    if ticks_assumed {
        notes.push("`getconf CLK_TCK` failed: 100 clock ticks per second assumed.".into());
    }

    let mut header = Header::collect(&args, nproc, placement.pin_servers, ticks, ticks_assumed);
    eprintln!("sessiond-bench: {}", header.command);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut scenarios = Vec::new();
    let mut memory = Vec::new();
    let mut extras = Extras::default();
    let env = Env {
        exe: &exe,
        placement,
        args: &args,
        ticks_per_sec: ticks,
        redis: None,
        cluster: None,
    };

    if args.only.contains(&Group::Peers) {
        run_peers(&rt, &env, &mut scenarios, &mut memory)?;
    }
    if args.only.contains(&Group::Stores) {
        run_stores(&rt, &env, &mut header, &mut scenarios, &mut extras)?;
    }
    if args.only.contains(&Group::Mobile) {
        for plan in mobile_plans() {
            let (result, _) = rt.block_on(run_scenario(&env, &plan))?;
            scenarios.push(result);
        }
        let files = args
            .refresh_files
            .unwrap_or(if args.quick { 10_000 } else { 100_000 });
        eprintln!("M3: {files} session files");
        extras.refresh = Some(refresh(&exe, placement, files, args.reps)?);
    }
    if args.only.contains(&Group::Remote) {
        run_remote(&rt, &env, &mut scenarios, &mut extras)?;
    }
    drop(rt);

    header.data_fs = sys::filesystem_of(&std::env::temp_dir());
    notes.extend(scenario_notes(&scenarios, &args));
    if let Some(r) = &extras.refresh
        && (r.errors > 0 || !r.tokens_authorize)
    {
        notes.push(format!(
            "M3: {} unusable files reported; tokens authorize after refresh: {}.",
            r.errors, r.tokens_authorize
        ));
    }
    let report = Report::new(header, scenarios, memory, extras, notes);
    print!("{}", report::markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON written to {}", path.display());
    }
    Ok(())
}

/// S1, S2, S3 (against the peers), then S6.
fn run_peers(
    rt: &tokio::runtime::Runtime,
    env: &Env<'_>,
    scenarios: &mut Vec<ScenarioResult>,
    memory: &mut Vec<FillResult>,
) -> anyhow::Result<()> {
    let args = env.args;
    for &scenario in &args.scenarios {
        if !matches!(scenario, Scenario::S1 | Scenario::S2 | Scenario::S3) {
            continue;
        }
        let plan = peers_plan(scenario, args);
        let (result, _) = rt.block_on(run_scenario(env, &plan))?;
        scenarios.push(result);
    }
    if args.scenarios.contains(&Scenario::S6) {
        for &n in &args.fill {
            for stack in [Stack::Sessiond, Stack::TowerSessions] {
                eprintln!("S6: {} × {n} sessions", stack.name());
                memory.push(fill(env.exe, env.placement, stack, n)?);
            }
        }
    }
    Ok(())
}

/// X1, X2, then X3.
fn run_remote(
    rt: &tokio::runtime::Runtime,
    env: &Env<'_>,
    scenarios: &mut Vec<ScenarioResult>,
    extras: &mut Extras,
) -> anyhow::Result<()> {
    for plan in remote_plans(env.args) {
        let (result, _) = rt.block_on(run_scenario(env, &plan))?;
        scenarios.push(result);
    }
    if env.args.scenarios.contains(&Scenario::X3) {
        extras.remote_idle = rt.block_on(remote_idle(env))?;
    }
    Ok(())
}

/// X3: per repetition and stack (the stacks rotated), a fresh server, `--idle-clients` idle clients (after
/// 20 warm ones), the server's RSS before and after.
async fn remote_idle(env: &Env<'_>) -> anyhow::Result<Vec<crate::remote::IdleResult>> {
    let args = env.args;
    let n = args
        .idle_clients
        .unwrap_or(if args.quick { 100 } else { 1000 });
    let mut out = Vec::new();
    let stacks = [
        Stack::SessiondRemote,
        Stack::SessiondRemoteLight,
        Stack::BareWs,
    ];
    for rep in 0..args.reps {
        for k in 0..stacks.len() {
            let stack = stacks[(k + rep) % stacks.len()];
            eprintln!(
                "X3: {} × {n} idle clients, rep {}/{}",
                stack.name(),
                rep + 1,
                args.reps
            );
            let server = ServerProc::start(env.exe, stack, env.placement, None)?;
            wait_ready(&server).await?;
            let r = crate::remote::idle(
                stack.name(),
                rep,
                server.addr,
                server.pid(),
                20,
                n,
                env.ticks_per_sec,
            )
            .await?;
            eprintln!(
                "  {:.0} bytes per client, {} of {} still answering",
                r.bytes_per_client,
                r.alive,
                r.warm_clients + r.clients
            );
            out.push(r);
        }
    }
    Ok(out)
}

/// R1 (with redis-benchmark) and R2, with a Redis of our own for their run.
fn run_stores(
    rt: &tokio::runtime::Runtime,
    env: &Env<'_>,
    header: &mut Header,
    scenarios: &mut Vec<ScenarioResult>,
    extras: &mut Extras,
) -> anyhow::Result<()> {
    let args = env.args;
    let core = env.placement.pin_servers.then_some(CLIENT_CORE);
    let redis = RedisProc::start(&args.redis_server, core)?;
    eprintln!("stores: {} on port {}", redis.version, redis.port);
    header.redis_server = Some(format!(
        "{} on 127.0.0.1:{}{}, `--save '' --appendonly no` (no persistence)",
        redis.version,
        redis.port,
        if core.is_some() {
            " pinned with `taskset -c 0` (the load generator's core)"
        } else {
            ""
        }
    ));
    header.redis_benchmark = sys::command_output(&args.redis_benchmark, &["--version"]);
    let wanted = |id: &str| args.plans.is_empty() || args.plans.iter().any(|p| p == id);
    let cluster = (wanted("C1") || wanted("C2")).then(|| {
        let cluster = sessiond_store::conformance::RedisCluster::start();
        let url = cluster.url();
        eprintln!("stores: a 3-primary Redis Cluster at {url}");
        header.redis_cluster = Some(format!(
            "3 primaries ({url}), no replicas, `--save '' --appendonly no`, unpinned"
        ));
        (cluster, url)
    });
    let env = Env {
        redis: Some(&redis),
        cluster: cluster.as_ref().map(|(_, url)| url.as_str()),
        ..*env
    };
    if wanted("R3") {
        extras.staleness = Some(rt.block_on(staleness(&redis, args.quick))?);
    }
    for plan in stores_plans().into_iter().filter(|p| wanted(p.id)) {
        let (result, bench) = rt.block_on(run_scenario(&env, &plan))?;
        scenarios.push(result);
        extras.redis_benchmark.extend(bench);
    }
    Ok(())
}

/// R3: two near-cached `RedisStore`s (two nodes, in this process) on the stores
/// group's Redis; after each lowering or drop on one, how long the other serves the old
/// rights.
async fn staleness(redis: &RedisProc, quick: bool) -> anyhow::Result<StalenessResult> {
    let trials = if quick { 1000 } else { 10_000 };
    eprintln!("R3: {trials} lowerings and drops across two nodes");
    let config = sessiond_store::RedisConfig::new(redis.url());
    let a = sessiond_store::RedisStore::connect(&config).await?;
    let b = sessiond_store::RedisStore::connect(&config).await?;
    // Each node's cache serves once its invalidation channel answered a ping.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = sessiond_store::conformance::staleness::measure(&a, &b, trials).await;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(StalenessResult {
        trials,
        bound_ms: ms(config.near_cache.staleness),
        p50_ms: ms(m.quantile(500)),
        p99_ms: ms(m.quantile(990)),
        max_ms: ms(m.quantile(1000)),
        stale_at_once: m.stale_at_once,
    })
}

/// What the report must say about disturbed or failed repetitions.
fn scenario_notes(scenarios: &[ScenarioResult], args: &RunArgs) -> Vec<String> {
    let mut notes = Vec::new();
    for s in scenarios {
        for st in &s.stacks {
            let reruns: u32 = st.reps.iter().map(|r| r.attempts - 1).sum();
            if reruns > 0 {
                notes.push(format!(
                    "{} {}: {reruns} repetition(s) run again because other work kept more \
                     than {} cores busy.",
                    s.id,
                    st.stack.name(),
                    args.max_background
                ));
            }
            if st.background_cores.max > args.max_background {
                notes.push(format!(
                    "{} {}: up to {:.2} cores busy with other work during a repetition, \
                     even after {} retries (a noisy neighbour; compare with care).",
                    s.id,
                    st.stack.name(),
                    st.background_cores.max,
                    args.retries
                ));
            }
            if st.errors > 0 || st.non_2xx > 0 || st.invalid > 0 {
                notes.push(format!(
                    "{} {}: {} non-2xx responses, {} 2xx answers failing the check and {} \
                     failed requests.",
                    s.id,
                    st.stack.name(),
                    st.non_2xx,
                    st.invalid,
                    st.errors
                ));
            }
        }
    }
    notes
}

/// Gets a fresh session cookie from `/create` (None for `bare`, which sets none).
async fn new_session(server: &ServerProc) -> anyhow::Result<Option<String>> {
    let spec = RequestSpec::new(Method::GET, "/create");
    let r = load::fetch(server.addr, &spec).await?;
    anyhow::ensure!(
        r.status == 200,
        "{}: /create answered {}: {}",
        server.stack.name(),
        r.status,
        r.body
    );
    if server.stack != Stack::Bare && r.cookie.is_none() {
        bail!("{}: /create set no cookie", server.stack.name());
    }
    Ok(r.cookie)
}

/// `GET /counter` with `cookie`.
async fn read_counter(server: &ServerProc, cookie: Option<&String>) -> anyhow::Result<i64> {
    let spec = RequestSpec {
        cookie: cookie.cloned(),
        ..RequestSpec::new(Method::GET, "/counter")
    };
    let r = load::fetch(server.addr, &spec).await?;
    anyhow::ensure!(
        r.status == 200,
        "{}: /counter answered {}",
        server.stack.name(),
        r.status
    );
    r.body
        .trim()
        .parse()
        .with_context(|| format!("{}: /counter said {:?}", server.stack.name(), r.body))
}

/// The sum of `/counter` over `spec`'s sessions (its cookie, or every one of its
/// cookies).
async fn read_counters(server: &ServerProc, spec: &RequestSpec) -> anyhow::Result<i64> {
    if spec.cookies.is_empty() {
        return read_counter(server, spec.cookie.as_ref()).await;
    }
    let mut sum = 0;
    for c in spec.cookies.iter() {
        sum += read_counter(server, Some(c)).await?;
    }
    Ok(sum)
}

/// `GET /store-stats`, where the stack has it: `sessiond-suspending`'s
/// (compare-and-swap calls, conflicts), `sessiond-embedded`'s (writes, commits).
async fn store_stats(server: &ServerProc) -> anyhow::Result<Option<(u64, u64)>> {
    if !matches!(
        server.stack,
        Stack::SessiondSuspending | Stack::SessiondEmbedded
    ) {
        return Ok(None);
    }
    let spec = RequestSpec::new(Method::GET, "/store-stats");
    let r = load::fetch(server.addr, &spec).await?;
    let mut it = r.body.split_whitespace().map(str::parse::<u64>);
    match (r.status, it.next(), it.next()) {
        (200, Some(Ok(calls)), Some(Ok(conflicts))) => Ok(Some((calls, conflicts))),
        _ => bail!("/store-stats answered {} {:?}", r.status, r.body),
    }
}

fn named(name: &'static str, value: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    Ok((HeaderName::from_static(name), HeaderValue::from_str(value)?))
}

/// The headers the QMobile clients send with a JSON body.
fn mobile_headers(token: Option<&str>) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let mut h = vec![
        named("x-qmobile", "1")?,
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
    ];
    if let Some(t) = token {
        h.push((
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}"))?,
        ));
    }
    Ok(h)
}

/// M2's login: one new device, its token.
async fn mobile_login(server: &ServerProc) -> anyhow::Result<String> {
    let (method, path) = Kind::MobileLogin.request();
    let spec = RequestSpec {
        headers: mobile_headers(None)?,
        body: BodySpec::NewDevice,
        ..RequestSpec::new(method, path)
    };
    let r = load::fetch(server.addr, &spec).await?;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
    match v["token"].as_str() {
        Some(t) if r.status == 200 && !t.is_empty() => Ok(t.to_string()),
        _ => bail!(
            "{}: $authenticate answered {} {}",
            server.stack.name(),
            r.status,
            r.body
        ),
    }
}

/// The request every connection sends in one repetition (Incr: a fresh session),
/// and the counter before it. `fixed`: the Read cookie or the MobileData token.
async fn prepare(
    server: &ServerProc,
    kind: Kind,
    fixed: Option<&String>,
) -> anyhow::Result<(RequestSpec, Option<i64>)> {
    let (method, path) = kind.request();
    let base = RequestSpec::new(method, path);
    Ok(match kind {
        Kind::Create | Kind::Visit | Kind::RemoteCall => (base, None),
        Kind::Read => (
            RequestSpec {
                cookie: fixed.cloned(),
                ..base
            },
            None,
        ),
        Kind::Incr => {
            let cookie = new_session(server).await?;
            let before = read_counter(server, cookie.as_ref()).await?;
            (RequestSpec { cookie, ..base }, Some(before))
        }
        Kind::IncrMany => {
            let mut cookies = Vec::with_capacity(MANY);
            for _ in 0..MANY {
                cookies.push(new_session(server).await?.context("a cookie")?);
            }
            let spec = RequestSpec {
                cookies: cookies.into(),
                ..base
            };
            let before = read_counters(server, &spec).await?;
            (spec, Some(before))
        }
        Kind::MobileLogin => (
            RequestSpec {
                headers: mobile_headers(None)?,
                body: BodySpec::NewDevice,
                check: Check::MobileToken,
                ..base
            },
            None,
        ),
        Kind::MobileData => (
            RequestSpec {
                headers: mobile_headers(fixed.map(String::as_str))?,
                ..base
            },
            None,
        ),
    })
}

async fn wait_ready(server: &ServerProc) -> anyhow::Result<()> {
    let path = if matches!(
        server.stack,
        Stack::SessiondMobile
            | Stack::SessiondMobileHang
            | Stack::SessiondRemote
            | Stack::SessiondRemoteLight
            | Stack::BareWs
    ) {
        "/healthz"
    } else {
        "/counter"
    };
    let spec = RequestSpec::new(Method::GET, path);
    let mut last = None;
    for _ in 0..100 {
        match load::fetch(server.addr, &spec).await {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => last = Some(format!("status {}", r.status)),
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the {} server at {} does not answer: {}",
        server.stack.name(),
        server.addr,
        last.unwrap_or_default()
    )
}

/// S2's session: created through `/create`, checked to read back.
async fn s2_session(server: &ServerProc) -> anyhow::Result<Option<String>> {
    let cookie = new_session(server).await?;
    let spec = RequestSpec {
        cookie: cookie.clone(),
        ..RequestSpec::new(Method::GET, "/read")
    };
    let r = load::fetch(server.addr, &spec).await?;
    anyhow::ensure!(
        r.status == 200 && r.body == PAYLOAD.len().to_string(),
        "{}: /read answered {} {:?}",
        server.stack.name(),
        r.status,
        r.body
    );
    Ok(cookie)
}

async fn warm_up(
    server: &ServerProc,
    plan: &Plan,
    fixed: Option<&String>,
    args: &RunArgs,
) -> anyhow::Result<()> {
    eprintln!(
        "{}: warm-up {} ({} s)",
        plan.id,
        server.stack.name(),
        args.warmup
    );
    let (spec, _) = prepare(server, plan.kind, fixed).await?;
    let r = drive(
        server,
        plan,
        &spec,
        plan.conns.unwrap_or(args.conns),
        Duration::from_secs(args.warmup),
        || {},
        || {},
    )
    .await?;
    anyhow::ensure!(
        r.ok > 0,
        "{}: no successful request during the warm-up",
        server.stack.name()
    );
    Ok(())
}

/// Runs `conns` connections of `plan`'s kind against `server` for `duration`: HTTP
/// requests `spec` ([`load::run`]) or remote calls ([`crate::remote::run`]).
async fn drive(
    server: &ServerProc,
    plan: &Plan,
    spec: &RequestSpec,
    conns: usize,
    duration: Duration,
    on_start: impl FnMut(),
    on_end: impl FnMut(),
) -> anyhow::Result<LoadResult> {
    if plan.kind == Kind::RemoteCall {
        crate::remote::run(server.addr, conns, duration, on_start, on_end).await
    } else {
        load::run(server.addr, spec, conns, duration, on_start, on_end).await
    }
}

/// Fresh servers per scenario, so that sessions created earlier weigh on nothing
/// else; and what each one's requests need, made once (Read: one session; MobileData:
/// one login).
async fn start_servers(
    env: &Env<'_>,
    plan: &Plan,
) -> anyhow::Result<(Vec<ServerProc>, Vec<Option<String>>)> {
    let redis_url = env.redis.map(RedisProc::url);
    let mut servers = Vec::new();
    for &stack in &plan.stacks {
        let url = match stack {
            Stack::SessiondRedisCluster => env.cluster.map(str::to_string),
            _ => redis_url.clone(),
        };
        if stack.on_redis() && url.is_none() {
            bail!(
                "{}: {} needs the stores group's Redis",
                plan.id,
                stack.name()
            );
        }
        let server = ServerProc::start(env.exe, stack, env.placement, url.as_deref())?;
        wait_ready(&server).await?;
        servers.push(server);
    }
    let mut fixed = Vec::new();
    for server in &servers {
        fixed.push(match plan.kind {
            Kind::Read => s2_session(server).await?,
            Kind::MobileData => Some(mobile_login(server).await?),
            Kind::RemoteCall => {
                crate::remote::check(server.addr).await?;
                None
            }
            _ => None,
        });
    }
    Ok((servers, fixed))
}

/// Runs one scenario; with `plan.redis_benchmark`, also redis-benchmark after each
/// round of repetitions (client on the load generator's core, then on the server's).
async fn run_scenario(
    env: &Env<'_>,
    plan: &Plan,
) -> anyhow::Result<(ScenarioResult, Vec<BenchRun>)> {
    let args = env.args;
    let (servers, fixed) = start_servers(env, plan).await?;
    if args.warmup > 0 {
        for (server, f) in servers.iter().zip(&fixed) {
            warm_up(server, plan, f.as_ref(), args).await?;
        }
    }

    let bench_plan = calibrate_redis_benchmark(env, plan)?;
    let mut bench = Vec::new();
    let mut reps: Vec<Vec<RepResult>> = servers.iter().map(|_| Vec::new()).collect();
    for rep in 0..args.reps {
        // Interleave the stacks, rotating the order each repetition.
        for k in 0..servers.len() {
            let i = (k + rep) % servers.len();
            eprintln!(
                "{}: {} rep {}/{} ({} s)",
                plan.id,
                servers[i].stack.name(),
                rep + 1,
                args.reps,
                args.secs
            );
            let r = measure_retrying(env, &servers, i, plan, fixed[i].as_ref(), rep).await?;
            reps[i].push(r);
        }
        if let Some(b) = &bench_plan {
            bench.extend(redis_benchmark_round(env, &servers, b, plan, rep).await?);
        }
    }

    let stacks = servers
        .iter()
        .zip(reps)
        .map(|(s, reps)| StackResult::new(s.stack, reps))
        .collect();
    drop(servers);
    Ok((
        ScenarioResult {
            id: plan.id.to_string(),
            title: plan.title.to_string(),
            request: plan.kind.describe(),
            conns: plan.conns.unwrap_or(args.conns),
            secs: args.secs,
            reps: args.reps,
            warmup_secs: args.warmup,
            checks_answers: plan.kind == Kind::MobileLogin,
            notes: plan.notes.clone(),
            stacks,
        },
        bench,
    ))
}

/// redis-benchmark in a scenario: Redis, the cores its client runs on, `-n`.
struct BenchPlan<'a> {
    redis: &'a RedisProc,
    cores: Vec<Option<usize>>,
    requests: u64,
}

/// With `plan.redis_benchmark`: one warm-up run, whose rate sets `-n` so that a run
/// lasts about `--secs`.
fn calibrate_redis_benchmark<'a>(
    env: &Env<'a>,
    plan: &Plan,
) -> anyhow::Result<Option<BenchPlan<'a>>> {
    let (true, Some(redis)) = (plan.redis_benchmark, env.redis) else {
        return Ok(None);
    };
    let args = env.args;
    let cores = if env.placement.pin_servers {
        vec![Some(CLIENT_CORE), Some(SERVER_CORE)]
    } else {
        vec![None]
    };
    let n = if args.quick { 20_000 } else { 100_000 };
    eprintln!("{}: redis-benchmark warm-up ({n} GETs)", plan.id);
    let r = redis::run_benchmark(&args.redis_benchmark, redis, cores[0], args.conns, n, 0)?;
    Ok(Some(BenchPlan {
        redis,
        cores,
        requests: ((r.get_per_sec * args.secs as f64) as u64).max(10_000),
    }))
}

/// One redis-benchmark run per client placement.
async fn redis_benchmark_round(
    env: &Env<'_>,
    servers: &[ServerProc],
    b: &BenchPlan<'_>,
    plan: &Plan,
    rep: usize,
) -> anyhow::Result<Vec<BenchRun>> {
    let args = env.args;
    let id = plan.id;
    let mut runs = Vec::new();
    for &core in &b.cores {
        eprintln!(
            "{id}: redis-benchmark, client on core {}, rep {}/{} ({} GETs)",
            core.map_or_else(|| "any".into(), |c| c.to_string()),
            rep + 1,
            args.reps,
            b.requests
        );
        wait_quiet(servers, env, plan.kernel_threads).await;
        runs.push(redis::run_benchmark(
            &args.redis_benchmark,
            b.redis,
            core,
            args.conns,
            b.requests,
            rep,
        )?);
    }
    Ok(runs)
}

/// [`measure`], run again (up to `--retries` times) while other work disturbs it.
async fn measure_retrying(
    env: &Env<'_>,
    servers: &[ServerProc],
    i: usize,
    plan: &Plan,
    fixed: Option<&String>,
    rep: usize,
) -> anyhow::Result<RepResult> {
    let args = env.args;
    let mut attempt = 1;
    loop {
        wait_quiet(servers, env, plan.kernel_threads).await;
        let mut r = measure(env, &servers[i], plan, fixed, rep).await?;
        r.attempts = attempt;
        if r.background_cores <= args.max_background || attempt > args.retries {
            return Ok(r);
        }
        eprintln!(
            "  {:.2} cores busy with other work during that repetition: again",
            r.background_cores
        );
        attempt += 1;
    }
}

/// One measured repetition of `plan` against `server`.
async fn measure(
    env: &Env<'_>,
    server: &ServerProc,
    plan: &Plan,
    fixed: Option<&String>,
    rep: usize,
) -> anyhow::Result<RepResult> {
    let args = env.args;
    let ticks_per_sec = env.ticks_per_sec;
    let (spec, before) = prepare(server, plan.kind, fixed).await?;
    let stats0 = store_stats(server).await?;
    // Redis's own CPU and commands are read from the single Redis.
    let uses_redis = matches!(
        server.stack,
        Stack::SessiondRedis | Stack::SessiondRedisUncached
    );
    let calls0 = match env.redis {
        Some(r) if uses_redis => r.command_calls(),
        _ => Vec::new(),
    };
    let me = std::process::id();
    let redis_ticks = || env.redis.map_or(0, RedisProc::cpu_ticks);
    let kernel_ticks = || {
        if plan.kernel_threads {
            sys::kernel_thread_ticks()
        } else {
            Vec::new()
        }
    };
    let (mut cpu0, mut cpu1) = (((0, 0), 0, 0, 0, Vec::new()), ((0, 0), 0, 0, 0, Vec::new()));
    let sample = || {
        (
            server.cpu_ticks(),
            sys::cpu_ticks(me).unwrap_or(0),
            sys::machine_busy_ticks(),
            redis_ticks(),
            kernel_ticks(),
        )
    };
    let result = drive(
        server,
        plan,
        &spec,
        plan.conns.unwrap_or(args.conns),
        Duration::from_secs(args.secs),
        || cpu0 = sample(),
        || cpu1 = sample(),
    )
    .await?;
    // Busy time of everything else on the machine (other servers idle, other
    // users' jobs): a noisy neighbour shows here. Redis is ours.
    let user = cpu1.0.0 - cpu0.0.0;
    let server_ticks = user + (cpu1.0.1 - cpu0.0.1);
    let redis_delta = cpu1.3 - cpu0.3;
    let kernel_delta = sys::kernel_ticks_delta(&cpu0.4, &cpu1.4);
    let other = (cpu1.2 - cpu0.2)
        .saturating_sub(server_ticks + (cpu1.1 - cpu0.1) + redis_delta + kernel_delta);
    let counter = match before {
        Some(b) => Some(read_counters(server, &spec).await? - b),
        None => None,
    };
    let stats = match (stats0, store_stats(server).await?) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    let mut r = rep_result(rep, &result, server_ticks, ticks_per_sec, counter);
    r.server_user_share = user as f64 / server_ticks.max(1) as f64;
    r.driver_cpu_busy = (cpu1.1 - cpu0.1) as f64 / ticks_per_sec as f64 / r.elapsed_secs;
    r.background_cores = other as f64 / ticks_per_sec as f64 / r.elapsed_secs;
    if server.stack == Stack::SessiondEmbedded {
        r.group_commits = stats;
    } else {
        r.cas_calls = stats.map(|c| c.0);
        r.cas_conflicts = stats.map(|c| c.1);
    }
    if plan.kernel_threads {
        r.kernel_cpu_us_per_req = Some(
            kernel_delta as f64 / ticks_per_sec as f64 * 1e6 / result.responses().max(1) as f64,
        );
    }
    if let (Some(redis), true) = (env.redis, uses_redis) {
        let secs = redis_delta as f64 / ticks_per_sec as f64;
        let responses = result.responses().max(1) as f64;
        r.redis_cpu_us_per_req = Some(secs * 1e6 / responses);
        r.redis_cpu_busy = Some(secs / r.elapsed_secs);
        r.redis_calls_per_req = Some(
            redis::calls_delta(&calls0, &redis.command_calls())
                .into_iter()
                .map(|(name, calls)| (name, calls as f64 / responses))
                .collect(),
        );
    }
    Ok(r)
}

/// Waits (at most `--quiet-wait` seconds) until the rest of the machine uses at most
/// `--max-background` cores, measured over one second. Our servers and Redis do
/// not count, nor kernel threads with `kernel_threads` (a journal commit may
/// still be finishing the last repetition's fsyncs).
async fn wait_quiet(servers: &[ServerProc], env: &Env<'_>, kernel_threads: bool) {
    let args = env.args;
    let me = std::process::id();
    let ticks_per_sec = env.ticks_per_sec;
    let busy = |servers: &[ServerProc]| {
        let ours: u64 = servers
            .iter()
            .map(|s| {
                let (u, k) = s.cpu_ticks();
                u + k
            })
            .sum::<u64>()
            + sys::cpu_ticks(me).unwrap_or(0)
            + env.redis.map_or(0, RedisProc::cpu_ticks);
        let kernel = if kernel_threads {
            sys::kernel_thread_ticks()
        } else {
            Vec::new()
        };
        (sys::machine_busy_ticks(), ours, kernel)
    };
    let start = Instant::now();
    loop {
        let (m0, o0, k0) = busy(servers);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (m1, o1, k1) = busy(servers);
        let ours = o1.saturating_sub(o0) + sys::kernel_ticks_delta(&k0, &k1);
        let other = (m1 - m0).saturating_sub(ours) as f64 / ticks_per_sec as f64;
        if other <= args.max_background {
            return;
        }
        if start.elapsed() > Duration::from_secs(args.quiet_wait) {
            eprintln!("  the machine stays busy ({other:.2} cores): measuring anyway");
            return;
        }
        eprintln!("  waiting for a quiet machine ({other:.2} cores busy with other work)");
    }
}

fn rep_result(
    rep: usize,
    r: &LoadResult,
    cpu_ticks: u64,
    ticks_per_sec: u64,
    counter: Option<i64>,
) -> RepResult {
    let elapsed = r.elapsed.as_secs_f64();
    let cpu_secs = cpu_ticks as f64 / ticks_per_sec as f64;
    let responses = r.responses();
    RepResult {
        rep,
        ok: r.ok,
        non_2xx: r.non_2xx,
        invalid: r.invalid,
        errors: r.errors,
        elapsed_secs: elapsed,
        req_per_sec: r.ok as f64 / elapsed,
        p50_us: r.quantile_us(0.50),
        p99_us: r.quantile_us(0.99),
        server_cpu_ticks: cpu_ticks,
        server_cpu_us_per_req: if responses == 0 {
            f64::NAN
        } else {
            cpu_secs * 1e6 / responses as f64
        },
        server_cpu_busy: cpu_secs / elapsed,
        counter_delta: counter,
        lost_updates: counter.map(|c| r.ok as i64 - c),
        cas_calls: None,
        cas_conflicts: None,
        group_commits: None,
        server_user_share: f64::NAN,
        driver_cpu_busy: f64::NAN,
        attempts: 1,
        background_cores: f64::NAN,
        redis_cpu_us_per_req: None,
        redis_cpu_busy: None,
        redis_calls_per_req: None,
        kernel_cpu_us_per_req: None,
    }
}

fn fill(exe: &Path, placement: Placement, stack: Stack, n: u64) -> anyhow::Result<FillResult> {
    let mut cmd = server_command(exe, placement);
    cmd.args(["server", "--stack", stack.name(), "--fill", &n.to_string()]);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running the {} fill", stack.name()))?;
    anyhow::ensure!(
        out.status.success(),
        "the {} fill of {n} failed: {}",
        stack.name(),
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("the fill printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// M3: `server --stack sessiond-mobile --refresh-files N`, pinned like a server.
fn refresh(
    exe: &Path,
    placement: Placement,
    files: u64,
    reps: usize,
) -> anyhow::Result<RefreshResult> {
    let mut cmd = server_command(exe, placement);
    cmd.args([
        "server",
        "--stack",
        Stack::SessiondMobile.name(),
        "--refresh-files",
        &files.to_string(),
        "--refresh-reps",
        &reps.to_string(),
    ]);
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running the M3 refresh")?;
    anyhow::ensure!(
        out.status.success(),
        "the M3 refresh failed: {}",
        out.status
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .last()
        .context("the M3 refresh printed nothing")?;
    Ok(serde_json::from_str(line)?)
}
