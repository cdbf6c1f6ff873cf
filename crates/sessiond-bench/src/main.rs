//! `sessiond-bench`: sessiond side by side with tower-sessions and a bare axum
//! endpoint, following docs/spec/benchmark-protocol.md.
//!
//! The one command (builds in release mode and runs everything, about 20 minutes):
//!
//! ```text
//! cargo run --release -p sessiond-bench -- [--reps 3 --secs 10] [--json FILE]
//! cargo run --release -p sessiond-bench -- --quick        # smoke test: 1 × 2 s
//! cargo run --release -p sessiond-bench -- --only stores  # R1, R2 (needs redis-server, redis-benchmark)
//! cargo run --release -p sessiond-bench -- --only mobile  # M1, M2, M3
//! cargo run --release -p sessiond-bench -- --only remote  # X1, X2, X3
//! ```
//!
//! One binary, two roles:
//! - `sessiond-bench [run] [OPTIONS]` (the default): the driver. It pins itself to
//!   core 0 (`taskset -a -p -c 0`), starts each stack as
//!   `taskset -c 1 sessiond-bench server --stack … --listen 127.0.0.1:0` (one
//!   `current_thread` runtime: exactly one worker thread), and generates the load on
//!   its own one-thread runtime with hyper 1 keep-alive connections. Per scenario it
//!   warms every stack up, then runs R repetitions of D seconds per stack, the stacks
//!   interleaved (rotated each repetition), and reads the server's utime+stime from
//!   /proc/<pid>/stat before and after each. It prints a Markdown report on stdout
//!   (progress goes to stderr) and, with `--json FILE`, the same data as JSON.
//! - `sessiond-bench server --stack <bare|sessiond|tower-sessions|…> --listen ADDR`:
//!   one stack's HTTP server; `--fill N` instead creates N idle sessions through the
//!   stack's store and prints the RSS delta (S6); `--stack sessiond-mobile
//!   --refresh-files N` writes N mobile session files and times their refresh (M3).
//!
//! Four groups of scenarios, `--only peers,stores,mobile,remote` (default: all):
//! - peers: S1, S2, S3, S6 of the protocol against tower-sessions and bare axum.
//! - stores: R1 hot read (S2's `GET /read`) and R2 storage update (S3's `POST
//!   /incr`, lost updates counted) for sessiond over its `MemoryStore`,
//!   `EmbeddedStore` (redb, every change fsynced) and `RedisStore`. The driver starts
//!   its own `redis-server` (no persistence, a free port, pinned to core 0 like the
//!   load generator), reports Redis's CPU per request beside the server's, and runs
//!   `redis-benchmark -t get -c 32 -P 1` against the same Redis as the reference.
//! - mobile: the real `sessiond serve` router with mobile apps: M1 logins of new
//!   devices (each one two fsynced files), M2 authorized requests (`$licensecheck`),
//!   M3 `MobileSessions::refresh` of 100,000 session files (no HTTP, core 1).
//! - remote: remote clients over the `/remote` WebSocket (`sessiond-remote`: the real
//!   router with a users file and a `noop` function) against `bare-ws` (axum
//!   WebSocket answering the same frames with no session): X1 sequential calls over
//!   one connection, X2 over 100 connections at once, X3 server RSS per idle
//!   welcomed client. The clients are `sessiond-client`'s `RemoteClient`.
//!
//! S3 also runs `sessiond-suspending` and `tower-sessions-suspending` (unless
//! `--no-suspending`): the same stacks over a store whose calls suspend once, the
//! smallest model of a network store. On one runtime thread an in-process store that
//! never suspends runs each request's read and write without interleaving, so
//! read-modify-write code loses no update there; see `suspending.rs`.
//!
//! Noisy neighbours: before each repetition the driver waits (up to `--quiet-wait`
//! s) until the rest of the machine uses at most `--max-background` cores, and runs a
//! repetition again (up to `--retries` times) if other work exceeded that during it;
//! the report shows the background load of every row. `--max-background 99` turns
//! this off.
//!
//! Without `taskset` (util-linux) or with fewer than 2 cores it runs unpinned and
//! says so in the report. Traffic stays on 127.0.0.1.

#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "statistics over counters that stay far below 2^52; conversions are for display"
)]

mod driver;
mod load;
mod mobile;
mod redis;
mod remote;
mod report;
mod server;
mod suspending;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The stacks compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Stack {
    /// axum with no sessions (the limit).
    Bare,
    /// axum + sessiond's `SessionLayer` over its `MemoryStore`.
    Sessiond,
    /// axum + tower-sessions 0.15 over its `MemoryStore`.
    TowerSessions,
    /// sessiond over its `MemoryStore` behind a suspension per store call (a model of
    /// a network store; see [`suspending`]).
    SessiondSuspending,
    /// tower-sessions over its `MemoryStore` behind a suspension per store call.
    TowerSessionsSuspending,
    /// sessiond's app over its `EmbeddedStore` (redb, durable) in a temporary folder.
    SessiondEmbedded,
    /// sessiond's app over its `RedisStore` (`--redis-url`), near-cache on (the default).
    SessiondRedis,
    /// `sessiond-redis` with its near-cache off: every read is a round trip.
    SessiondRedisUncached,
    /// `sessiond-redis` on a 3-primary Redis Cluster (`--redis-url
    /// redis+cluster://…`).
    SessiondRedisCluster,
    /// The real `sessiond serve` router with mobile apps (`/mobileapp/`), files in a
    /// temporary `MobileApps` folder.
    SessiondMobile,
    /// `sessiond-mobile` whose login hook hangs 1.5 s (a callout at its timeout) for
    /// devices named `HANG-…`, with 4 such logins kept in flight by the server itself.
    SessiondMobileHang,
    /// The real `sessiond serve` router serving remote clients on `/remote`, with a
    /// users file in a temporary folder and a registered `noop` function.
    SessiondRemote,
    /// `sessiond-remote` with its user's password hashed with light argon2id
    /// parameters (64 KiB, 1 pass) instead of the defaults (19 MiB, 2 passes): X3
    /// without the login's transient 19 MiB, which glibc keeps per malloc arena.
    SessiondRemoteLight,
    /// axum WebSocket with no session and no login: answers a hello with a fixed
    /// welcome and each call frame with its params (the limit of the remote group).
    BareWs,
}

impl Stack {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Sessiond => "sessiond",
            Self::TowerSessions => "tower-sessions",
            Self::SessiondSuspending => "sessiond-suspending",
            Self::TowerSessionsSuspending => "tower-sessions-suspending",
            Self::SessiondEmbedded => "sessiond-embedded",
            Self::SessiondRedis => "sessiond-redis",
            Self::SessiondRedisUncached => "sessiond-redis-uncached",
            Self::SessiondRedisCluster => "sessiond-redis-cluster",
            Self::SessiondMobile => "sessiond-mobile",
            Self::SessiondMobileHang => "sessiond-mobile-hang",
            Self::SessiondRemote => "sessiond-remote",
            Self::SessiondRemoteLight => "sessiond-remote-light",
            Self::BareWs => "bare-ws",
        }
    }

    /// Whether the stack runs over Redis (and takes `--redis-url`).
    pub(crate) fn on_redis(self) -> bool {
        matches!(
            self,
            Self::SessiondRedis | Self::SessiondRedisUncached | Self::SessiondRedisCluster
        )
    }

    /// Whether the server keeps files in a temporary folder of its own, which it
    /// deletes when its stdin closes.
    pub(crate) fn has_data_dir(self) -> bool {
        matches!(
            self,
            Self::SessiondEmbedded
                | Self::SessiondMobile
                | Self::SessiondMobileHang
                | Self::SessiondRemote
                | Self::SessiondRemoteLight
        )
    }
}

/// Groups of scenarios (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Group {
    /// S1, S2, S3, S6 (`--scenarios`): sessiond vs tower-sessions vs bare axum.
    Peers,
    /// W1, W2, R1, R2 (W3), R3, C1, C2: sessiond over its memory, embedded (redb) and
    /// Redis stores, redis-benchmark against the same Redis, the near-cache's
    /// staleness across two nodes, a 3-primary Redis Cluster against one Redis.
    Stores,
    /// M1, M2, M3: mobile-app logins, authorized requests, refresh of session files.
    Mobile,
    /// X1, X2, X3: remote clients over `/remote` (calls over 1 and 100 connections,
    /// memory per idle client) against a bare axum WebSocket.
    Remote,
}

/// The scenarios of the protocol that this harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, serde::Serialize)]
pub(crate) enum Scenario {
    /// S1 create: no cookie → a new session with a 200-byte payload.
    S1,
    /// S2 hot read: one session, read a value.
    S2,
    /// S3 hot write: one session, read-increment-write a counter; lost updates.
    S3,
    /// S6 memory: bytes per idle session.
    S6,
    /// X1 (remote group): calls over one connection.
    X1,
    /// X2 (remote group): calls over `--remote-clients` connections at once.
    X2,
    /// X3 (remote group): memory per idle remote client.
    X3,
}

#[derive(Debug, Parser)]
#[command(
    name = "sessiond-bench",
    about = "sessiond vs tower-sessions vs bare axum (benchmark protocol S1, S2, S3, S6); sessiond's stores (R1, R2); mobile apps (M1, M2, M3); remote clients (X1, X2, X3)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the benchmark (the default).
    Run(RunArgs),
    /// One stack's server (started by `run`, pinned to core 1).
    Server(ServerArgs),
}

/// Options of the driver.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// Repetitions per stack and scenario.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Seconds per repetition.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Warm-up seconds per stack and scenario.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Keep-alive connections (virtual users) in S1, S2 and S3.
    #[arg(long, default_value_t = 32)]
    pub conns: usize,
    /// Smoke test: 1 repetition of 2 s, 1 s warm-up.
    #[arg(long)]
    pub quick: bool,
    /// Groups of scenarios to run: peers (S1, S2, S3, S6 as `--scenarios` says),
    /// stores (R1, R2), mobile (M1, M2, M3), remote (X1, X2, X3).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Group::Peers, Group::Stores, Group::Mobile, Group::Remote])]
    pub only: Vec<Group>,
    /// Scenarios of the peers (S*) and remote (X*) groups to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S6, Scenario::X1, Scenario::X2, Scenario::X3])]
    pub scenarios: Vec<Scenario>,
    /// Scenarios of the stores group to run (W1, W1s, W2, R1, R2, R3, C1, C2; all when
    /// not given). The Redis Cluster starts only for C1 and C2.
    #[arg(long, value_delimiter = ',', value_parser = ["W1", "W1s", "W2", "R1", "R2", "R3", "C1", "C2"])]
    pub plans: Vec<String>,
    /// Stacks to compare in S1–S3 (S6 always measures sessiond and tower-sessions).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Stack::Bare, Stack::Sessiond, Stack::TowerSessions])]
    pub stacks: Vec<Stack>,
    /// Do not add the two `*-suspending` stacks to S3.
    #[arg(long)]
    pub no_suspending: bool,
    /// Session counts for S6.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000_u64, 1_000_000])]
    pub fill: Vec<u64>,
    /// A repetition during which the rest of the machine kept more than this many
    /// cores busy is run again (and each repetition waits for such a quiet machine).
    #[arg(long, default_value_t = 0.15)]
    pub max_background: f64,
    /// How many times a disturbed repetition is run again.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// Longest wait for a quiet machine before a repetition, seconds.
    #[arg(long, default_value_t = 120)]
    pub quiet_wait: u64,
    /// Stores group: the `redis-server` to start (pinned to core 0, on a free port).
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// Stores group: the `redis-benchmark` to run against it.
    #[arg(long, default_value = "redis-benchmark")]
    pub redis_benchmark: String,
    /// M3: how many session files to refresh (default 100000; 10000 with --quick).
    #[arg(long)]
    pub refresh_files: Option<u64>,
    /// X2: remote clients calling at once.
    #[arg(long, default_value_t = 100)]
    pub remote_clients: usize,
    /// X3: idle remote clients connected before the server's RSS is read (default
    /// 1000; 100 with --quick).
    #[arg(long)]
    pub idle_clients: Option<usize>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServerArgs {
    /// The stack to serve.
    #[arg(long, value_enum)]
    stack: Stack,
    /// Where to listen (port 0: any free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0", conflicts_with_all = ["fill", "refresh_files"])]
    listen: SocketAddr,
    /// S6: create this many idle sessions, print the RSS delta as JSON, exit.
    #[arg(long, conflicts_with = "refresh_files")]
    fill: Option<u64>,
    /// `sessiond-redis`: the Redis to use (`redis://127.0.0.1:PORT/`).
    #[arg(long)]
    redis_url: Option<String>,
    /// M3 (`sessiond-mobile`): write this many session files, time
    /// `MobileSessions::refresh`, print the result as JSON, exit.
    #[arg(long)]
    refresh_files: Option<u64>,
    /// M3: how many timed refreshes of each kind.
    #[arg(long, default_value_t = 3)]
    refresh_reps: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Server(args)) => match (args.fill, args.refresh_files) {
            (Some(n), _) => server::fill(args.stack, n),
            (None, Some(n)) => mobile::refresh_bench(args.stack, n, args.refresh_reps),
            (None, None) => server::serve(args.stack, args.listen, args.redis_url.as_deref()),
        },
        Some(Command::Run(args)) => driver::run(args),
        None => driver::run(cli.run),
    }
}
