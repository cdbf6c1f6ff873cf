//! The results, their statistics, the ratios the targets name, and the Markdown
//! report.

use std::fmt::Write as _;

use serde::Serialize;

use crate::mobile::RefreshResult;
use crate::redis::BenchRun;
use crate::remote::IdleResult;
use crate::server::FillResult;
use crate::sys;
use crate::{Group, RunArgs, Stack};

/// Where and how the run happened.
#[derive(Debug, Serialize)]
pub(crate) struct Header {
    /// Start of the run, UTC (RFC 3339).
    pub date_utc: String,
    /// The command line.
    pub command: String,
    /// `nproc`.
    pub nproc: String,
    /// `MemTotal` of /proc/meminfo.
    pub mem_total: String,
    /// The CPU model.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// `rustc --version`.
    pub rustc: String,
    /// Locked versions of the crates compared and the HTTP stack.
    pub versions: Vec<(String, String)>,
    /// `git describe` of the workspace.
    pub git: String,
    /// How processes were placed on cores.
    pub placement: String,
    /// /proc/loadavg when the run started.
    pub loadavg: String,
    /// Clock ticks per second used for /proc/<pid>/stat.
    pub clk_tck: u64,
    /// Whether `clk_tck` was assumed.
    pub clk_tck_assumed: bool,
    /// Repetitions, seconds, warm-up, connections.
    pub reps: usize,
    /// Seconds per repetition.
    pub secs: u64,
    /// Warm-up seconds per stack and scenario.
    pub warmup_secs: u64,
    /// Connections.
    pub conns: usize,
    /// The groups run (`--only`).
    pub groups: Vec<Group>,
    /// Stores group: the redis-server, where and how it ran.
    pub redis_server: Option<String>,
    /// Stores group: `redis-benchmark --version`.
    pub redis_benchmark: Option<String>,
    /// Stores group: the Redis Cluster of C1 and C2.
    pub redis_cluster: Option<String>,
    /// The filesystem of the temporary folders (EmbeddedStore file, MobileApps).
    pub data_fs: Option<String>,
}

impl Header {
    pub(crate) fn collect(
        args: &RunArgs,
        nproc: String,
        pinned: bool,
        clk_tck: u64,
        assumed: bool,
    ) -> Self {
        let unknown = || "unknown".to_string();
        let date_utc = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(unknown);
        let command = std::iter::once("sessiond-bench".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ");
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let repo = repo.to_string_lossy();
        let git = sys::command_output(
            "git",
            &[
                "-C",
                &repo,
                "describe",
                "--always",
                "--dirty",
                "--abbrev=12",
            ],
        )
        .unwrap_or_else(unknown);
        let placement = if pinned {
            format!(
                "server `taskset -c 1` (tokio current_thread: one worker thread); load \
                 generator pinned with `taskset -a -p -c 0` (allowed CPUs now: {}), one \
                 current_thread runtime",
                sys::allowed_cpus().unwrap_or_else(unknown)
            )
        } else {
            "UNPINNED (see notes); server on a tokio current_thread runtime".to_string()
        };
        Self {
            date_utc,
            command,
            nproc,
            mem_total: sys::mem_total().unwrap_or_else(unknown),
            cpu_model: sys::cpu_model().unwrap_or_else(unknown),
            kernel: sys::command_output("uname", &["-r"]).unwrap_or_else(unknown),
            rustc: sys::command_output("rustc", &["--version"]).unwrap_or_else(unknown),
            versions: sys::locked_versions(&[
                "tower-sessions",
                "redb",
                "redis",
                "axum",
                "hyper",
                "hyper-util",
                "tokio",
                "tokio-tungstenite",
                "tungstenite",
            ]),
            git,
            placement,
            loadavg: sys::loadavg().unwrap_or_else(unknown),
            clk_tck,
            clk_tck_assumed: assumed,
            reps: args.reps,
            secs: args.secs,
            warmup_secs: args.warmup,
            conns: args.conns,
            groups: args.only.clone(),
            redis_server: None,
            redis_benchmark: None,
            redis_cluster: None,
            data_fs: None,
        }
    }
}

/// One repetition of one stack in one scenario.
#[derive(Debug, Serialize)]
pub(crate) struct RepResult {
    /// 0-based repetition.
    pub rep: usize,
    /// 2xx responses.
    pub ok: u64,
    /// Other responses.
    pub non_2xx: u64,
    /// 2xx responses failing the scenario's answer check (M1).
    pub invalid: u64,
    /// Requests with no response.
    pub errors: u64,
    /// Wall time.
    pub elapsed_secs: f64,
    /// 2xx responses per second.
    pub req_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Server utime+stime delta, clock ticks.
    pub server_cpu_ticks: u64,
    /// Server CPU time per response, µs.
    pub server_cpu_us_per_req: f64,
    /// Server CPU time / wall time (1.0 = its core was saturated).
    pub server_cpu_busy: f64,
    /// S3: how much the counter grew.
    pub counter_delta: Option<i64>,
    /// S3: successful increments − counter growth.
    pub lost_updates: Option<i64>,
    /// `sessiond-suspending`: compare-and-swap calls during the repetition.
    pub cas_calls: Option<u64>,
    /// `sessiond-suspending`: of which conflicts (each one a retry).
    pub cas_conflicts: Option<u64>,
    /// `sessiond-embedded`: (writes, commits) during the repetition: writes per fsync.
    pub group_commits: Option<(u64, u64)>,
    /// The share of the server's CPU time spent in user mode (the rest: kernel).
    pub server_user_share: f64,
    /// Load generator CPU time / wall time (1.0: its core is saturated).
    pub driver_cpu_busy: f64,
    /// Busy cores outside the server and the driver during the repetition.
    pub background_cores: f64,
    /// How many times the repetition was run (retried when the machine was busy).
    pub attempts: u32,
    /// `sessiond-redis`: Redis CPU time (utime+stime delta) per response, µs.
    pub redis_cpu_us_per_req: Option<f64>,
    /// `sessiond-redis`: Redis CPU time / wall time.
    pub redis_cpu_busy: Option<f64>,
    /// `sessiond-redis`: Redis commands per response (`INFO commandstats` delta).
    pub redis_calls_per_req: Option<Vec<(String, f64)>>,
    /// Stores and mobile groups: CPU time of all kernel threads (journal, writeback,
    /// softirq) during the repetition per response, µs.
    pub kernel_cpu_us_per_req: Option<f64>,
}

/// Median and spread.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Stat {
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Stat {
    fn of(values: impl IntoIterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
}

/// One stack in one scenario: its repetitions and their statistics.
#[derive(Debug, Serialize)]
pub(crate) struct StackResult {
    /// The stack.
    pub stack: Stack,
    /// req/s.
    pub req_per_sec: Stat,
    /// p50 latency, µs.
    pub p50_us: Stat,
    /// p99 latency, µs.
    pub p99_us: Stat,
    /// Server CPU µs per request.
    pub cpu_us_per_req: Stat,
    /// Server CPU busy fraction.
    pub cpu_busy: Stat,
    /// Share of the server's CPU time in user mode.
    pub user_share: Stat,
    /// Load generator CPU busy fraction.
    pub driver_busy: Stat,
    /// Busy cores outside the server and the driver.
    pub background_cores: Stat,
    /// S3: lost updates per repetition.
    pub lost_updates: Option<Stat>,
    /// S3: lost updates as a share of successful increments, %.
    pub lost_pct: Option<Stat>,
    /// Non-2xx responses, all repetitions.
    pub non_2xx: u64,
    /// 2xx answers failing the check, all repetitions.
    pub invalid: u64,
    /// Requests with no response, all repetitions.
    pub errors: u64,
    /// `sessiond-redis`: Redis CPU µs per request.
    pub redis_cpu_us_per_req: Option<Stat>,
    /// `sessiond-redis`: Redis CPU busy fraction.
    pub redis_busy: Option<Stat>,
    /// `sessiond-redis`: server + Redis CPU µs per request.
    pub total_cpu_us_per_req: Option<Stat>,
    /// Kernel threads' CPU µs per request (stores and mobile groups).
    pub kernel_cpu_us_per_req: Option<Stat>,
    /// The repetitions.
    pub reps: Vec<RepResult>,
}

impl StackResult {
    /// Requests without a good answer (non-2xx, failed check, no response) and all
    /// requests, over every repetition.
    fn failed_of_all(&self) -> (u64, u64) {
        let all = self
            .reps
            .iter()
            .map(|r| r.ok + r.non_2xx + r.invalid + r.errors)
            .sum();
        (self.non_2xx + self.invalid + self.errors, all)
    }

    pub(crate) fn new(stack: Stack, reps: Vec<RepResult>) -> Self {
        let lost: Vec<(f64, f64)> = reps
            .iter()
            .filter_map(|r| {
                r.lost_updates
                    .map(|l| (l as f64, 100.0 * l as f64 / (r.ok.max(1)) as f64))
            })
            .collect();
        let redis = reps.iter().any(|r| r.redis_cpu_us_per_req.is_some());
        Self {
            stack,
            req_per_sec: Stat::of(reps.iter().map(|r| r.req_per_sec)),
            p50_us: Stat::of(reps.iter().map(|r| r.p50_us)),
            p99_us: Stat::of(reps.iter().map(|r| r.p99_us)),
            cpu_us_per_req: Stat::of(reps.iter().map(|r| r.server_cpu_us_per_req)),
            cpu_busy: Stat::of(reps.iter().map(|r| r.server_cpu_busy)),
            driver_busy: Stat::of(reps.iter().map(|r| r.driver_cpu_busy)),
            user_share: Stat::of(reps.iter().map(|r| r.server_user_share)),
            background_cores: Stat::of(reps.iter().map(|r| r.background_cores)),
            lost_updates: (!lost.is_empty()).then(|| Stat::of(lost.iter().map(|l| l.0))),
            lost_pct: (!lost.is_empty()).then(|| Stat::of(lost.iter().map(|l| l.1))),
            non_2xx: reps.iter().map(|r| r.non_2xx).sum(),
            invalid: reps.iter().map(|r| r.invalid).sum(),
            errors: reps.iter().map(|r| r.errors).sum(),
            redis_cpu_us_per_req: redis
                .then(|| Stat::of(reps.iter().filter_map(|r| r.redis_cpu_us_per_req))),
            redis_busy: redis.then(|| Stat::of(reps.iter().filter_map(|r| r.redis_cpu_busy))),
            total_cpu_us_per_req: redis.then(|| {
                Stat::of(
                    reps.iter().filter_map(|r| {
                        r.redis_cpu_us_per_req.map(|x| x + r.server_cpu_us_per_req)
                    }),
                )
            }),
            kernel_cpu_us_per_req: reps
                .iter()
                .any(|r| r.kernel_cpu_us_per_req.is_some())
                .then(|| Stat::of(reps.iter().filter_map(|r| r.kernel_cpu_us_per_req))),
            reps,
        }
    }
}

/// One scenario, every stack.
#[derive(Debug, Serialize)]
pub(crate) struct ScenarioResult {
    /// `S1`…
    pub id: String,
    /// What it does.
    pub title: String,
    /// The request sent.
    pub request: String,
    /// Connections.
    pub conns: usize,
    /// Seconds per repetition.
    pub secs: u64,
    /// Repetitions.
    pub reps: usize,
    /// Warm-up seconds per stack.
    pub warmup_secs: u64,
    /// Whether the bodies of the answers were checked (M1).
    pub checks_answers: bool,
    /// What the table needs said.
    pub notes: Vec<String>,
    /// The stacks.
    pub stacks: Vec<StackResult>,
}

/// Results that are not per-stack tables.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Extras {
    /// R1: redis-benchmark against the stores group's Redis.
    pub redis_benchmark: Vec<BenchRun>,
    /// M3: refresh of many session files.
    pub refresh: Option<RefreshResult>,
    /// R3: the near-cache's staleness across two nodes.
    pub staleness: Option<StalenessResult>,
    /// X3: server RSS per idle remote client, per repetition and stack.
    pub remote_idle: Vec<IdleResult>,
}

/// R3: how long a node serves rights another node lowered or dropped.
#[derive(Debug, Serialize)]
pub(crate) struct StalenessResult {
    /// Lowerings and drops measured (half each).
    pub trials: usize,
    /// The configured bound (`near_cache_staleness_ms`).
    pub bound_ms: f64,
    /// From the acknowledgement on node A until node B refused the old rights.
    pub p50_ms: f64,
    /// The same, 99th percentile.
    pub p99_ms: f64,
    /// The same, the longest.
    pub max_ms: f64,
    /// Trials where a read on B right after the acknowledgement still saw them.
    pub stale_at_once: usize,
}

/// A ratio a target names.
#[derive(Debug, Serialize)]
pub(crate) struct Ratio {
    /// The scenario.
    pub scenario: String,
    /// What is compared.
    pub what: String,
    /// The value (NaN: not measured).
    pub value: f64,
    /// How it is printed.
    pub shown: String,
    /// The target, as text.
    pub target: String,
    /// Whether the target is met (`None`: informative only).
    pub meets: Option<bool>,
}

/// Everything.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// Where and how.
    pub header: Header,
    /// S1–S3.
    pub scenarios: Vec<ScenarioResult>,
    /// S6.
    pub memory: Vec<FillResult>,
    /// redis-benchmark (R1) and the refresh (M3).
    pub extras: Extras,
    /// The ratios the targets name.
    pub ratios: Vec<Ratio>,
    /// Anything unusual.
    pub notes: Vec<String>,
}

/// The stacks compared side by side: (scenario, a, b, target for a / b).
const PAIRS: [(&str, Stack, Stack, Option<f64>); 17] = [
    ("S1", Stack::Sessiond, Stack::TowerSessions, Some(1.2)),
    ("S2", Stack::Sessiond, Stack::Bare, Some(0.9)),
    ("S2", Stack::Sessiond, Stack::TowerSessions, Some(1.1)),
    ("S3", Stack::Sessiond, Stack::TowerSessions, Some(0.9)),
    (
        "S3",
        Stack::SessiondSuspending,
        Stack::TowerSessionsSuspending,
        None,
    ),
    ("X1", Stack::SessiondRemote, Stack::BareWs, None),
    ("X2", Stack::SessiondRemote, Stack::BareWs, None),
    ("W1", Stack::SessiondEmbedded, Stack::Sessiond, Some(0.8)),
    ("W1s", Stack::SessiondEmbedded, Stack::Sessiond, Some(0.8)),
    ("W2", Stack::SessiondEmbedded, Stack::Sessiond, Some(0.5)),
    ("R1", Stack::SessiondEmbedded, Stack::Sessiond, None),
    ("R1", Stack::SessiondRedis, Stack::Sessiond, Some(0.9)),
    ("R1", Stack::SessiondRedisUncached, Stack::Sessiond, None),
    ("R2", Stack::SessiondEmbedded, Stack::Sessiond, None),
    ("R2", Stack::SessiondRedis, Stack::Sessiond, None),
    (
        "C1",
        Stack::SessiondRedisCluster,
        Stack::SessiondRedis,
        None,
    ),
    (
        "C2",
        Stack::SessiondRedisCluster,
        Stack::SessiondRedis,
        None,
    ),
];

fn find<'a>(scenarios: &'a [ScenarioResult], id: &str, stack: Stack) -> Option<&'a StackResult> {
    scenarios
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| s.stacks.iter().find(|x| x.stack == stack))
}

/// Throughput: a / b of median req/s. CPU: b / a of median server CPU per request
/// (> 1: `a` costs the server less CPU per request than `b`).
fn pair_ratios(
    ratios: &mut Vec<Ratio>,
    scenarios: &[ScenarioResult],
    id: &str,
    a: Stack,
    b: Stack,
    min: Option<f64>,
) {
    let (Some(x), Some(y)) = (find(scenarios, id, a), find(scenarios, id, b)) else {
        return;
    };
    let tput = x.req_per_sec.median / y.req_per_sec.median;
    ratios.push(Ratio {
        scenario: id.to_string(),
        what: format!("{} / {} req/s", a.name(), b.name()),
        value: tput,
        shown: format!("{tput:.2}"),
        target: min.map_or_else(|| "(reference)".into(), |m| format!("≥ {m}")),
        meets: min.map(|m| tput >= m),
    });
    let cpu = y.cpu_us_per_req.median / x.cpu_us_per_req.median;
    ratios.push(Ratio {
        scenario: id.to_string(),
        what: format!(
            "{} / {} server CPU per request (the same ratio measured as server cost)",
            b.name(),
            a.name()
        ),
        value: cpu,
        shown: format!("{cpu:.2}"),
        target: min.map_or_else(|| "(reference)".into(), |m| format!("≥ {m}")),
        meets: min.map(|m| cpu >= m),
    });
}

impl Report {
    pub(crate) fn new(
        header: Header,
        scenarios: Vec<ScenarioResult>,
        memory: Vec<FillResult>,
        extras: Extras,
        notes: Vec<String>,
    ) -> Self {
        let mut ratios = Vec::new();
        for (id, a, b, min) in PAIRS {
            pair_ratios(&mut ratios, &scenarios, id, a, b, min);
        }
        let find = |id: &str, stack: Stack| find(&scenarios, id, stack);
        for (stack, target) in [
            (Stack::Sessiond, Some(0)),
            (Stack::TowerSessions, None),
            (Stack::SessiondSuspending, Some(0)),
            (Stack::TowerSessionsSuspending, None),
        ] {
            if let Some(x) = find("S3", stack) {
                let lost: i64 = x.reps.iter().filter_map(|r| r.lost_updates).sum();
                let ok: u64 = x.reps.iter().map(|r| r.ok).sum();
                let pct = 100.0 * lost as f64 / ok.max(1) as f64;
                ratios.push(Ratio {
                    scenario: "S3".into(),
                    what: format!("{} lost updates, all repetitions", stack.name()),
                    value: lost as f64,
                    shown: format!("{lost} of {ok} ({pct:.1} %)"),
                    target: target.map_or_else(|| "(reference)".into(), |t| format!("= {t}")),
                    meets: target.map(|t| lost == t),
                });
            }
        }
        for m in &memory {
            let sessiond = m.stack == Stack::Sessiond.name();
            ratios.push(Ratio {
                scenario: "S6".into(),
                what: format!("{} bytes per session at {} sessions", m.stack, m.sessions),
                value: m.bytes_per_session,
                shown: format!("{:.0}", m.bytes_per_session),
                target: if sessiond {
                    "≤ 300".into()
                } else {
                    "(reference)".into()
                },
                meets: sessiond.then_some(m.bytes_per_session <= 300.0),
            });
        }
        store_ratios(&mut ratios, &scenarios, &extras);
        remote_ratios(&mut ratios, &scenarios, &extras);
        Self {
            header,
            scenarios,
            memory,
            extras,
            ratios,
            notes,
        }
    }
}

/// The remote group's: bytes per idle client against bare-ws, and calls that failed.
fn remote_ratios(ratios: &mut Vec<Ratio>, scenarios: &[ScenarioResult], extras: &Extras) {
    let per_client = |stack: Stack| {
        Stat::of(
            extras
                .remote_idle
                .iter()
                .filter(|r| r.stack == stack.name())
                .map(|r| r.bytes_per_client),
        )
    };
    if !extras.remote_idle.is_empty() {
        let b = per_client(Stack::BareWs);
        for stack in [Stack::SessiondRemoteLight, Stack::SessiondRemote] {
            let a = per_client(stack);
            let v = a.median / b.median;
            ratios.push(Ratio {
                scenario: "X3".into(),
                what: format!(
                    "{} / bare-ws RSS per idle client ({:.0} / {:.0} bytes; difference \
                     {:.0} bytes)",
                    stack.name(),
                    a.median,
                    b.median,
                    a.median - b.median
                ),
                value: v,
                shown: format!("{v:.2}"),
                target: "(reference)".into(),
                meets: None,
            });
        }
        let (alive, all) = extras.remote_idle.iter().fold((0, 0), |(x, y), r| {
            (x + r.alive, y + r.warm_clients + r.clients)
        });
        ratios.push(Ratio {
            scenario: "X3".into(),
            what: "idle clients that no longer answered a call after the reading, all \
                   repetitions"
                .into(),
            value: (all - alive) as f64,
            shown: format!("{} of {all}", all - alive),
            target: "= 0".into(),
            meets: Some(alive == all),
        });
    }
    for s in scenarios.iter().filter(|s| s.id.starts_with('X')) {
        for x in &s.stacks {
            let (bad, all) = x.failed_of_all();
            ratios.push(Ratio {
                scenario: s.id.clone(),
                what: format!(
                    "{} calls without their params back (error answers, wrong values, \
                     lost connections), all repetitions",
                    x.stack.name()
                ),
                value: bad as f64,
                shown: format!("{bad} of {all}"),
                target: "= 0".into(),
                meets: Some(bad == 0),
            });
        }
    }
}

/// W3 (one hot session on the embedded store against its rate before group commit),
/// R3 (the near-cache's staleness) and M3 (a refresh of unchanged files).
fn durability_ratios(ratios: &mut Vec<Ratio>, scenarios: &[ScenarioResult], extras: &Extras) {
    if let Some(x) = find(scenarios, "R2", Stack::SessiondEmbedded) {
        // The embedded store's hot-session rate before group commit (BENCHMARKS.md R2).
        const BEFORE: f64 = 3887.0;
        let v = x.req_per_sec.median / BEFORE;
        ratios.push(Ratio {
            scenario: "W3".into(),
            what: format!(
                "sessiond-embedded one hot session: {:.0} updates/s / {BEFORE:.0} (one fsync per update)",
                x.req_per_sec.median
            ),
            value: v,
            shown: format!("{v:.2}"),
            target: "≥ 2".into(),
            meets: Some(v >= 2.0),
        });
    }
    if let Some(r3) = &extras.staleness {
        ratios.push(Ratio {
            scenario: "R3".into(),
            what: format!(
                "p99 ms until another node refuses lowered or dropped rights ({} trials)",
                r3.trials
            ),
            value: r3.p99_ms,
            shown: format!("{:.2}", r3.p99_ms),
            target: "≤ 50".into(),
            meets: Some(r3.p99_ms <= 50.0),
        });
    }
    if let Some(m3) = &extras.refresh {
        let again = Stat::of(m3.again_ms.iter().copied()).median;
        ratios.push(Ratio {
            scenario: "M3".into(),
            what: format!("ms to refresh {} unchanged session files", m3.files),
            value: again,
            shown: format!("{again:.0}"),
            target: "≤ 300".into(),
            meets: Some(again <= 300.0),
        });
        if !m3.unwatched_ms.is_empty() {
            let unwatched = Stat::of(m3.unwatched_ms.iter().copied()).median;
            ratios.push(Ratio {
                scenario: "M3".into(),
                what: format!(
                    "ms to refresh {} unchanged session files, folders not watched",
                    m3.files
                ),
                value: unwatched,
                shown: format!("{unwatched:.0}"),
                target: "(reference)".into(),
                meets: None,
            });
        }
    }
}

/// The stores and mobile groups' ratios (R1 against redis-benchmark, lost updates
/// of R2, answers of M1 and M2).
fn store_ratios(ratios: &mut Vec<Ratio>, scenarios: &[ScenarioResult], extras: &Extras) {
    let find = |id: &str, stack: Stack| {
        scenarios
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.stacks.iter().find(|x| x.stack == stack))
    };
    if let Some(redis) = find("R1", Stack::SessiondRedis) {
        for (core, target) in [(Some(0), Some(0.7)), (Some(1), None), (None, Some(0.7))] {
            let runs: Vec<&BenchRun> = extras
                .redis_benchmark
                .iter()
                .filter(|b| b.client_core == core)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let get = Stat::of(runs.iter().map(|b| b.get_per_sec)).median;
            let v = redis.req_per_sec.median / get;
            let place = match core {
                Some(0) => "its client on core 0 with Redis, as the load generator",
                Some(_) => "its client on core 1, Redis alone on core 0",
                None => "unpinned",
            };
            ratios.push(Ratio {
                scenario: "R1".into(),
                what: format!(
                    "sessiond-redis req/s / redis-benchmark GET/s ({place}; {:.0} / {get:.0})",
                    redis.req_per_sec.median
                ),
                value: v,
                shown: format!("{v:.2}"),
                target: target.map_or_else(|| "(reference)".into(), |t| format!("≥ {t}")),
                meets: target.map(|t| v >= t),
            });
        }
        if let (Some(total), Some(mem)) = (&redis.total_cpu_us_per_req, find("R1", Stack::Sessiond))
        {
            let v = total.median / mem.cpu_us_per_req.median;
            ratios.push(Ratio {
                scenario: "R1".into(),
                what: "sessiond-redis (server + Redis) / sessiond (memory) CPU per request".into(),
                value: v,
                shown: format!("{v:.2}"),
                target: "(reference)".into(),
                meets: None,
            });
        }
    }
    durability_ratios(ratios, scenarios, extras);
    for (id, stack) in [
        ("R2", Stack::Sessiond),
        ("R2", Stack::SessiondEmbedded),
        ("R2", Stack::SessiondRedis),
        ("W2", Stack::Sessiond),
        ("W2", Stack::SessiondEmbedded),
        ("C2", Stack::SessiondRedisCluster),
    ] {
        if let Some(x) = find(id, stack) {
            let lost: i64 = x.reps.iter().filter_map(|r| r.lost_updates).sum();
            let ok: u64 = x.reps.iter().map(|r| r.ok).sum();
            ratios.push(Ratio {
                scenario: id.into(),
                what: format!("{} lost updates, all repetitions", stack.name()),
                value: lost as f64,
                shown: format!("{lost} of {ok}"),
                target: "= 0".into(),
                meets: Some(lost == 0),
            });
        }
    }
    for (id, what) in [
        ("M1", "answers that were not 200 with a token"),
        ("M2", "answers that were not 2xx"),
    ] {
        if let Some(x) = find(id, Stack::SessiondMobile) {
            let (bad, all) = x.failed_of_all();
            ratios.push(Ratio {
                scenario: id.into(),
                what: format!("{what} (incl. failed requests), all repetitions"),
                value: bad as f64,
                shown: format!("{bad} of {all}"),
                target: "= 0".into(),
                meets: Some(bad == 0),
            });
        }
    }
}

fn spread(s: &Stat, digits: usize) -> String {
    if s.median.is_nan() {
        return "n/a".into();
    }
    format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits)
}

/// The report as Markdown.
pub(crate) fn markdown(r: &Report) -> String {
    let h = &r.header;
    let mut o = String::new();
    let _ = writeln!(o, "# sessiond-bench report\n");
    let _ = writeln!(o, "- date (UTC): {}", h.date_utc);
    let _ = writeln!(o, "- command: `{}`", h.command);
    let _ = writeln!(
        o,
        "  (the same as `cargo run --release -p sessiond-bench -- {}`)",
        h.command.trim_start_matches("sessiond-bench").trim()
    );
    let _ = writeln!(
        o,
        "- machine: nproc {}, MemTotal {}, CPU {}, kernel {}",
        h.nproc, h.mem_total, h.cpu_model, h.kernel
    );
    let _ = writeln!(o, "- toolchain: {}", h.rustc);
    let versions: Vec<String> = h.versions.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let _ = writeln!(o, "- versions (Cargo.lock): {}", versions.join(", "));
    let _ = writeln!(o, "- sessiond: workspace at `{}`", h.git);
    let _ = writeln!(o, "- placement: {}", h.placement);
    let _ = writeln!(o, "- load average at start: {}", h.loadavg);
    let _ = writeln!(
        o,
        "- method: per scenario, fresh servers; {} s warm-up per stack; then {} × {} s per \
         stack, stacks interleaved (order rotated each repetition); {} keep-alive HTTP/1.1 \
         connections (hyper 1) in the HTTP scenarios, requests back to back; medians with (min–max) over the \
         repetitions",
        h.warmup_secs, h.reps, h.secs, h.conns
    );
    let _ = writeln!(
        o,
        "- server CPU = utime+stime delta of the server process (/proc/<pid>/stat) over the \
         repetition ÷ responses; CLK_TCK = {}{}; \"busy\" = server CPU time ÷ wall time \
         (100 % = its core is saturated; below that, the load generator is the limit and \
         req/s ratios understate differences: read the CPU column); \"other load\" = busy \
         CPU of the whole machine (/proc/stat) minus the server and the load generator",
        h.clk_tck,
        if h.clk_tck_assumed { " (assumed)" } else { "" }
    );
    if h.groups
        .iter()
        .any(|g| matches!(g, Group::Peers | Group::Stores))
    {
        let _ = writeln!(
            o,
            "- cookies: HttpOnly, SameSite=Strict, Path=/, session cookie, not Secure (plain HTTP) \
             in both session stacks; payload {} bytes",
            crate::server::PAYLOAD.len()
        );
    }
    groups_md(&mut o, &h.groups);
    if let Some(redis) = &h.redis_server {
        let _ = writeln!(o, "- Redis (stores group): {redis}");
    }
    if let Some(b) = &h.redis_benchmark {
        let _ = writeln!(o, "- redis-benchmark: {b}");
    }
    if let Some(c) = &h.redis_cluster {
        let _ = writeln!(o, "- Redis Cluster (C1, C2): {c}");
    }
    if let Some(fs) = &h.data_fs {
        let _ = writeln!(
            o,
            "- temporary files (EmbeddedStore's redb file, MobileApps): {fs}"
        );
    }
    let _ = writeln!(o);
    let peers = |s: &&ScenarioResult| s.id.starts_with('S');
    for s in r.scenarios.iter().filter(peers) {
        scenario_md(&mut o, s);
    }
    memory_md(&mut o, &r.memory);
    for s in r.scenarios.iter().filter(|s| !peers(s)) {
        scenario_md(&mut o, s);
        if s.id == "R1" {
            redis_benchmark_md(&mut o, &r.extras.redis_benchmark);
            if let Some(r3) = &r.extras.staleness {
                staleness_md(&mut o, r3);
            }
        }
    }
    if let Some(m3) = &r.extras.refresh {
        refresh_md(&mut o, m3);
    }
    remote_idle_md(&mut o, &r.extras.remote_idle);
    ratios_md(&mut o, &r.ratios);
    if !r.notes.is_empty() {
        let _ = writeln!(o, "## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {n}");
        }
        let _ = writeln!(o);
    }
    o
}

/// What the method line leaves out for the groups other than peers.
fn groups_md(o: &mut String, groups: &[Group]) {
    if groups.contains(&Group::Remote) {
        let _ = writeln!(
            o,
            "- remote group (X1, X2): the same warm-up, repetitions and interleaving, but \
             WebSocket clients (`sessiond-client`'s `RemoteClient`, tokio-tungstenite) on \
             the load generator's runtime instead of HTTP connections, each awaiting its \
             call's result before the next: X1 one client, X2 the count in its table; \
             every client logs in (hello, argon2id) one at a time before the clock starts. \
             X3: a fresh server per stack and repetition, warm clients, a reading of the \
             server's RSS (/proc/<pid>/statm), more idle welcomed clients, 2 s, another \
             reading"
        );
    }
    if groups
        .iter()
        .any(|g| matches!(g, Group::Stores | Group::Mobile))
    {
        let _ = writeln!(
            o,
            "- stores and mobile groups: \"other load\" also leaves out Redis's CPU and \
             that of all kernel threads (the journal and writeback work an fsync hands to \
             them, softirqs), which get their own columns"
        );
    }
}

/// The head of a scenario's table; which optional columns it has (lost updates,
/// Redis, kernel threads).
fn scenario_head_md(o: &mut String, s: &ScenarioResult) -> (bool, bool, bool) {
    let s3 = s.stacks.iter().any(|x| x.lost_updates.is_some());
    let redis = s.stacks.iter().any(|x| x.redis_cpu_us_per_req.is_some());
    let (unit, failures) = if s.id.starts_with('X') {
        ("calls/s", "error answers / lost connections")
    } else {
        ("req/s", "non-2xx / errors")
    };
    let _ = write!(
        o,
        "| stack | {unit} | p50 µs | p99 µs | server CPU µs/{} | of which user % | server busy % | load gen busy % | other load, cores (max) | {failures} |",
        if s.id.starts_with('X') { "call" } else { "req" }
    );
    if s3 {
        let _ = write!(o, " lost updates | lost % |");
    }
    if redis {
        let _ = write!(
            o,
            " Redis CPU µs/req | server + Redis CPU µs/req | Redis busy % |"
        );
    }
    let kernel = s.stacks.iter().any(|x| x.kernel_cpu_us_per_req.is_some());
    if kernel {
        let _ = write!(o, " kernel threads CPU µs/req |");
    }
    if s.checks_answers {
        let _ = write!(o, " 200s without a token |");
    }
    let _ = writeln!(o);
    let _ = write!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if s3 {
        let _ = write!(o, "---:|---:|");
    }
    if redis {
        let _ = write!(o, "---:|---:|---:|");
    }
    if kernel {
        let _ = write!(o, "---:|");
    }
    if s.checks_answers {
        let _ = write!(o, "---:|");
    }
    let _ = writeln!(o);
    (s3, redis, kernel)
}

fn scenario_md(o: &mut String, s: &ScenarioResult) {
    let _ = writeln!(o, "## {}\n", s.title);
    let _ = writeln!(
        o,
        "`{}`, {} connections, {} × {} s\n",
        s.request, s.conns, s.reps, s.secs
    );
    let (s3, redis, kernel) = scenario_head_md(o, s);
    let pct = |s: &Stat| Stat {
        median: s.median * 100.0,
        min: s.min * 100.0,
        max: s.max * 100.0,
    };
    for x in &s.stacks {
        let _ = write!(
            o,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {:.2} | {} / {} |",
            x.stack.name(),
            spread(&x.req_per_sec, 0),
            spread(&x.p50_us, 0),
            spread(&x.p99_us, 0),
            spread(&x.cpu_us_per_req, 2),
            x.user_share.median * 100.0,
            spread(&pct(&x.cpu_busy), 0),
            spread(&pct(&x.driver_busy), 0),
            x.background_cores.max,
            x.non_2xx,
            x.errors
        );
        if s3 {
            let _ = write!(
                o,
                " {} | {} |",
                x.lost_updates
                    .as_ref()
                    .map_or("n/a".into(), |l| spread(l, 0)),
                x.lost_pct.as_ref().map_or("n/a".into(), |l| spread(l, 1)),
            );
        }
        if redis {
            let or_na = |v: Option<&Stat>, d| v.map_or("n/a".into(), |v| spread(v, d));
            let _ = write!(
                o,
                " {} | {} | {} |",
                or_na(x.redis_cpu_us_per_req.as_ref(), 2),
                or_na(x.total_cpu_us_per_req.as_ref(), 2),
                or_na(x.redis_busy.as_ref().map(pct).as_ref(), 0),
            );
        }
        if kernel {
            let _ = write!(
                o,
                " {} |",
                x.kernel_cpu_us_per_req
                    .as_ref()
                    .map_or("n/a".into(), |v| spread(v, 2))
            );
        }
        if s.checks_answers {
            let _ = write!(o, " {} |", x.invalid);
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o);
    scenario_tail_md(o, s);
}

/// What follows a scenario's table: Redis commands, compare-and-swap counts, notes.
fn scenario_tail_md(o: &mut String, s: &ScenarioResult) {
    for x in &s.stacks {
        if let Some(calls) = x.reps.first().and_then(|r| r.redis_calls_per_req.as_ref()) {
            let list: Vec<String> = calls
                .iter()
                .map(|(name, n)| format!("`{}` {n:.3}", name.to_uppercase()))
                .collect();
            let _ = writeln!(
                o,
                "{}: Redis commands per request (`INFO commandstats`, repetition 1): {}.\n",
                x.stack.name(),
                if list.is_empty() {
                    "none".into()
                } else {
                    list.join(", ")
                }
            );
        }
    }
    for n in &s.notes {
        let _ = writeln!(o, "{n}\n");
    }
    for x in &s.stacks {
        let (writes, commits) = x
            .reps
            .iter()
            .filter_map(|r| r.group_commits)
            .fold((0, 0), |(w, c), (a, b)| (w + a, c + b));
        if commits > 0 {
            let _ = writeln!(
                o,
                "{}: {writes} writes in {commits} commits, {:.1} writes per commit (fsync), \
                 all repetitions.\n",
                x.stack.name(),
                writes as f64 / commits as f64
            );
        }
        let calls: u64 = x.reps.iter().filter_map(|r| r.cas_calls).sum();
        let conflicts: u64 = x.reps.iter().filter_map(|r| r.cas_conflicts).sum();
        let updates: u64 = x.reps.iter().map(|r| r.ok).sum();
        if calls > 0 {
            let _ = writeln!(
                o,
                "{}: {calls} compare-and-swap calls for {updates} updates ({:.1} per update; \
                 {conflicts} conflicts, each one retry).\n",
                x.stack.name(),
                calls as f64 / updates.max(1) as f64
            );
        }
    }
}

fn staleness_md(o: &mut String, r: &StalenessResult) {
    let _ = writeln!(
        o,
        "### R3 near-cache staleness across two nodes\n\n\
         Two `RedisStore`s (two nodes, near-cache on, bound {:.0} ms) in the driver's \
         process on the same Redis. {} times: a session with a privilege is created on A \
         and read (cached) on B; A lowers its privileges (half the trials) or drops it (the \
         other half), and B is read every 0.1 ms until it refuses the old rights.\n\n\
         | p50 | p99 | max | B still served the old rights at its first read |\n\
         |---:|---:|---:|---:|\n\
         | {:.2} ms | {:.2} ms | {:.2} ms | {} of {} |\n",
        r.bound_ms, r.trials, r.p50_ms, r.p99_ms, r.max_ms, r.stale_at_once, r.trials
    );
}

fn redis_benchmark_md(o: &mut String, runs: &[BenchRun]) {
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "### R1 reference: redis-benchmark GET against the same Redis\n"
    );
    let _ = writeln!(
        o,
        "Run after each round of R1 repetitions, at the same concurrency; `-n` set from a \
         warm-up run so that a run lasts about as long as a repetition. The key \
         (`key:__rand_int__`) does not exist: each GET answers nil, Redis's cheapest read. \
         \"Redis CPU\" = utime+stime delta of redis-server ÷ requests.\n"
    );
    let _ = writeln!(
        o,
        "| client | GET/s | p50 ms | p99 ms | Redis CPU µs/GET | Redis busy % | runs |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    let mut cores: Vec<Option<usize>> = runs.iter().map(|r| r.client_core).collect();
    cores.sort_unstable();
    cores.dedup();
    for core in cores {
        let rs: Vec<&BenchRun> = runs.iter().filter(|r| r.client_core == core).collect();
        let opt = |f: fn(&BenchRun) -> Option<f64>| {
            let v: Vec<f64> = rs.iter().filter_map(|r| f(r)).collect();
            if v.is_empty() {
                "n/a".to_string()
            } else {
                spread(&Stat::of(v), 3)
            }
        };
        let client = match core {
            Some(0) => "core 0 (with Redis and the load generator's core)".to_string(),
            Some(c) => format!("core {c} (Redis alone on core 0)"),
            None => "unpinned".to_string(),
        };
        let _ = writeln!(
            o,
            "| {client} | {} | {} | {} | {} | {} | {} |",
            spread(&Stat::of(rs.iter().map(|r| r.get_per_sec)), 0),
            opt(|r| r.p50_ms),
            opt(|r| r.p99_ms),
            spread(&Stat::of(rs.iter().map(|r| r.redis_cpu_us_per_req)), 2),
            spread(&Stat::of(rs.iter().map(|r| r.redis_busy * 100.0)), 0),
            rs.len()
        );
    }
    if let Some(r) = runs.first() {
        let _ = writeln!(o, "\nCommand: `{}`\n", r.command);
    }
}

/// The rows of M3's table after "again": the same unwatched, and the floor.
fn refresh_floor_md(o: &mut String, r: &RefreshResult) {
    if !r.unwatched_ms.is_empty() {
        let _ = writeln!(
            o,
            "| again, unwatched (`watch = false`) | {} | {} | | |",
            spread(&Stat::of(r.unwatched_ms.iter().copied()), 0),
            spread(
                &Stat::of(r.unwatched_ms.iter().map(|m| r.files as f64 * 1000.0 / m)),
                0
            ),
        );
    }
    if !r.stat_floor_ms.is_empty() {
        let floor = Stat::of(r.stat_floor_ms.iter().copied());
        let again = Stat::of(r.again_ms.iter().copied());
        let _ = writeln!(
            o,
            "| floor: list the folders, one `stat` per session file, nothing else | {} | {} | | |",
            spread(&floor, 0),
            spread(
                &Stat::of(r.stat_floor_ms.iter().map(|m| r.files as f64 * 1000.0 / m)),
                0
            ),
        );
        let _ = writeln!(
            o,
            "\n\"again\" takes {:.2}× the floor measured right after it (files looked \
             at: {}).",
            again.median / floor.median,
            (r.again_examined.iter())
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn refresh_md(o: &mut String, r: &RefreshResult) {
    let _ = writeln!(
        o,
        "## M3 refresh: `MobileSessions::refresh()` of {} session files\n",
        r.files
    );
    let _ = writeln!(
        o,
        "No HTTP; one process pinned to core 1, one current_thread runtime. {} files made \
         by `MobileSessions::authenticate` (durable writes, {:.2} s), \
         the other {} written directly in the same format (checked against a login's \
         file; {:.1} s, not timed), all in one app folder, each with its sidecar: {:.0} + \
         {:.0} bytes on average. The files were just written: the page cache is warm. \
         The files rest 2 s before the first refresh (a refresh reads again every file \
         written in the last 2 s). \"load\": a fresh `MobileSessions` reads every file \
         (all new); \"again\": a second refresh of the same instance (all unchanged; \
         files whose size, times and inode did not change are not read; the folders are \
         watched, so a file with no event since the last refresh is not even looked at); \
         \"again, unwatched\": the same with `watch = false` (one `stat` per file). \
         Medians with (min–max) of {} repetitions.\n",
        r.via_login,
        r.login_secs,
        r.files - r.via_login,
        r.write_secs,
        r.file_bytes,
        r.sidecar_bytes,
        r.load_ms.len()
    );
    let _ = writeln!(
        o,
        "| refresh | ms | files/s | process CPU ms | sessions reported |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for (name, ms, cpu, count) in [
        ("load (all new)", &r.load_ms, &r.load_cpu_ms, &r.loaded),
        (
            "again (all unchanged)",
            &r.again_ms,
            &r.again_cpu_ms,
            &r.unchanged,
        ),
    ] {
        if ms.is_empty() {
            continue;
        }
        let rate = Stat::of(ms.iter().map(|m| r.files as f64 * 1000.0 / m));
        let counts: Vec<String> = count.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            o,
            "| {name} | {} | {} | {} | {} |",
            spread(&Stat::of(ms.iter().copied()), 0),
            spread(&rate, 0),
            spread(&Stat::of(cpu.iter().copied()), 0),
            counts.join(", ")
        );
    }
    refresh_floor_md(o, r);
    let _ = writeln!(
        o,
        "\nFiles not read by the second refresh: {}. Unusable files reported: {}. Tokens (a login's and a written file's) authorize \
         after the refresh: {}. Memory after the first load: {:.0} bytes per session (RSS \
         delta).\n",
        r.skipped
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        r.errors,
        if r.tokens_authorize { "yes" } else { "**no**" },
        r.rss_bytes_per_session
    );
}

fn remote_idle_md(o: &mut String, idle: &[IdleResult]) {
    let Some(first) = idle.first() else {
        return;
    };
    let _ = writeln!(
        o,
        "## X3 memory per idle remote client: {} welcomed connections\n",
        first.clients
    );
    let _ = writeln!(
        o,
        "A fresh server per stack and repetition (pinned like the others); {} clients \
         connected first, then the server's RSS read (/proc/<pid>/statm), then {} more \
         clients connected one at a time (sessiond-remote: each a login checked with \
         argon2id on tokio's blocking pool and a remote session in the `MemoryStore`; \
         bare-ws: the WebSocket alone), 2 s idle, the RSS read again. Per client = RSS \
         delta ÷ clients; system allocator (glibc malloc). Afterwards every client makes \
         one call, to check that none was dropped. Medians with (min–max) over the \
         repetitions, stacks rotated.\n\n\
         sessiond-remote's users file has the default argon2id hash (19 MiB, 2 passes): \
         each login allocates and frees 19 MiB on a blocking-pool thread, and glibc keeps \
         such freed memory resident per malloc arena (up to 8 arenas per core), so its \
         RSS moves with the logins in steps of ~19 MiB that have nothing to do with the \
         clients kept (or the delta hides in memory freed by earlier logins). \
         sessiond-remote-light is the same server with the password hashed with \
         argon2id m = {} KiB, t = {} (the login reads the parameters from the hash): its \
         delta is the memory an idle remote client keeps.\n",
        first.warm_clients,
        first.clients,
        crate::remote::LIGHT_HASH.0,
        crate::remote::LIGHT_HASH.1
    );
    let _ = writeln!(
        o,
        "| stack | bytes per idle client | RSS before MiB | RSS after MiB | connect time s | server CPU µs per connection | still answering | repetitions |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut stacks: Vec<&str> = Vec::new();
    for r in idle {
        if !stacks.contains(&r.stack.as_str()) {
            stacks.push(&r.stack);
        }
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for stack in stacks {
        let rs: Vec<&IdleResult> = idle.iter().filter(|r| r.stack == stack).collect();
        let stat = |f: &dyn Fn(&IdleResult) -> f64| Stat::of(rs.iter().map(|r| f(r)));
        let alive: usize = rs.iter().map(|r| r.alive).sum();
        let all: usize = rs.iter().map(|r| r.warm_clients + r.clients).sum();
        let _ = writeln!(
            o,
            "| {stack} | {} | {} | {} | {} | {} | {alive} of {all} | {} |",
            spread(&stat(&|r| r.bytes_per_client), 0),
            spread(&stat(&|r| mib(r.rss_before_bytes)), 1),
            spread(&stat(&|r| mib(r.rss_after_bytes)), 1),
            spread(&stat(&|r| r.connect_secs), 2),
            spread(&stat(&|r| r.server_cpu_us_per_connect), 0),
            rs.len()
        );
    }
    let _ = writeln!(o);
}

fn memory_md(o: &mut String, memory: &[FillResult]) {
    if !memory.is_empty() {
        let _ = writeln!(
            o,
            "## S6 memory: idle guest sessions created through each store's API\n"
        );
        let _ = writeln!(
            o,
            "RSS delta from /proc/self/statm, system allocator (glibc malloc), no HTTP. \
             sessiond: `Sessions::create_web(None)` on its `MemoryStore`; tower-sessions: \
             `SessionStore::create` of an empty `Record` (2-week expiry) on its `MemoryStore`.\n"
        );
        let _ = writeln!(
            o,
            "| stack | sessions | RSS delta | bytes/session | fill time s |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|");
        for m in memory {
            let _ = writeln!(
                o,
                "| {} | {} | {:.1} MiB | {:.0} | {:.2} |",
                m.stack,
                m.sessions,
                m.rss_delta_bytes as f64 / (1024.0 * 1024.0),
                m.bytes_per_session,
                m.fill_secs
            );
        }
        let _ = writeln!(o);
    }
}

fn ratios_md(o: &mut String, ratios: &[Ratio]) {
    if !ratios.is_empty() {
        let _ = writeln!(o, "## Ratios against the targets\n");
        let _ = writeln!(o, "| scenario | ratio | value | target | met |");
        let _ = writeln!(o, "|---|---|---:|---|---|");
        for x in ratios {
            let met = match x.meets {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                x.scenario, x.what, x.shown, x.target, met
            );
        }
        let _ = writeln!(o);
    }
}
