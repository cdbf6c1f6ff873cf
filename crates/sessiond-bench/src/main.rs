//! `sessiond-bench`: sessiond side by side with tower-sessions and a bare axum
//! endpoint, following shared/spec/benchmark-protocol.md.
//!
//! The one command (builds in release mode and runs everything, a few minutes):
//!
//! ```text
//! cargo run --release -p sessiond-bench -- [--reps 3 --secs 10] [--json FILE]
//! cargo run --release -p sessiond-bench -- --quick        # smoke test: 1 × 2 s
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
//! - `sessiond-bench server --stack <bare|sessiond|tower-sessions> --listen ADDR`:
//!   one stack's HTTP server; `--fill N` instead creates N idle sessions through the
//!   stack's store and prints the RSS delta (S6).
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
        }
    }
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
}

#[derive(Debug, Parser)]
#[command(
    name = "sessiond-bench",
    about = "sessiond vs tower-sessions vs bare axum (benchmark protocol S1, S2, S3, S6)",
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
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Scenario::S1, Scenario::S2, Scenario::S3, Scenario::S6])]
    pub scenarios: Vec<Scenario>,
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
    #[arg(long, default_value = "127.0.0.1:0", conflicts_with = "fill")]
    listen: SocketAddr,
    /// S6: create this many idle sessions, print the RSS delta as JSON, exit.
    #[arg(long)]
    fill: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Server(args)) => match args.fill {
            Some(n) => server::fill(args.stack, n),
            None => server::serve(args.stack, args.listen),
        },
        Some(Command::Run(args)) => driver::run(args),
        None => driver::run(cli.run),
    }
}
