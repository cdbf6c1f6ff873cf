//! The results, their statistics, the ratios the targets name, and the Markdown
//! report.

use std::fmt::Write as _;

use serde::Serialize;

use crate::server::FillResult;
use crate::sys;
use crate::{RunArgs, Stack};

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
                "axum",
                "hyper",
                "hyper-util",
                "tokio",
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
    /// The share of the server's CPU time spent in user mode (the rest: kernel).
    pub server_user_share: f64,
    /// Load generator CPU time / wall time (1.0: its core is saturated).
    pub driver_cpu_busy: f64,
    /// Busy cores outside the server and the driver during the repetition.
    pub background_cores: f64,
    /// How many times the repetition was run (retried when the machine was busy).
    pub attempts: u32,
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
    /// Requests with no response, all repetitions.
    pub errors: u64,
    /// The repetitions.
    pub reps: Vec<RepResult>,
}

impl StackResult {
    pub(crate) fn new(stack: Stack, reps: Vec<RepResult>) -> Self {
        let lost: Vec<(f64, f64)> = reps
            .iter()
            .filter_map(|r| {
                r.lost_updates
                    .map(|l| (l as f64, 100.0 * l as f64 / (r.ok.max(1)) as f64))
            })
            .collect();
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
            errors: reps.iter().map(|r| r.errors).sum(),
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
    /// The stacks.
    pub stacks: Vec<StackResult>,
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
    /// The ratios the targets name.
    pub ratios: Vec<Ratio>,
    /// Anything unusual.
    pub notes: Vec<String>,
}

impl Report {
    pub(crate) fn new(
        header: Header,
        scenarios: Vec<ScenarioResult>,
        memory: Vec<FillResult>,
        notes: Vec<String>,
    ) -> Self {
        let mut ratios = Vec::new();
        let find = |id: &str, stack: Stack| {
            scenarios
                .iter()
                .find(|s| s.id == id)
                .and_then(|s| s.stacks.iter().find(|x| x.stack == stack))
        };
        // Throughput: a / b of median req/s. CPU: b / a of median server CPU per
        // request (> 1: `a` costs the server less CPU per request than `b`).
        let mut pair = |id: &str, a: Stack, b: Stack, min: Option<f64>| {
            let (Some(x), Some(y)) = (find(id, a), find(id, b)) else {
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
        };
        pair("S1", Stack::Sessiond, Stack::TowerSessions, Some(1.2));
        pair("S2", Stack::Sessiond, Stack::Bare, Some(0.9));
        pair("S2", Stack::Sessiond, Stack::TowerSessions, Some(1.1));
        pair("S3", Stack::Sessiond, Stack::TowerSessions, Some(0.9));
        pair(
            "S3",
            Stack::SessiondSuspending,
            Stack::TowerSessionsSuspending,
            None,
        );
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
        Self {
            header,
            scenarios,
            memory,
            ratios,
            notes,
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
         connections (hyper 1), requests back to back; medians with (min–max) over the \
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
    let _ = writeln!(
        o,
        "- cookies: HttpOnly, SameSite=Strict, Path=/, session cookie, not Secure (plain HTTP) \
         in both session stacks; payload {} bytes",
        crate::server::PAYLOAD.len()
    );
    let _ = writeln!(o);
    for s in &r.scenarios {
        scenario_md(&mut o, s);
    }
    memory_md(&mut o, &r.memory);
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

fn scenario_md(o: &mut String, s: &ScenarioResult) {
    let _ = writeln!(o, "## {}\n", s.title);
    let _ = writeln!(
        o,
        "`{}`, {} connections, {} × {} s\n",
        s.request, s.conns, s.reps, s.secs
    );
    let s3 = s.stacks.iter().any(|x| x.lost_updates.is_some());
    let _ = write!(
        o,
        "| stack | req/s | p50 µs | p99 µs | server CPU µs/req | of which user % | server busy % | load gen busy % | other load, cores (max) | non-2xx / errors |"
    );
    if s3 {
        let _ = write!(o, " lost updates | lost % |");
    }
    let _ = writeln!(o);
    let _ = write!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if s3 {
        let _ = write!(o, "---:|---:|");
    }
    let _ = writeln!(o);
    for x in &s.stacks {
        let pct = |s: &Stat| Stat {
            median: s.median * 100.0,
            min: s.min * 100.0,
            max: s.max * 100.0,
        };
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
        let _ = writeln!(o);
    }
    let _ = writeln!(o);
    for x in &s.stacks {
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
