//! The driver: starts the servers, warms them up, runs the repetitions, collects the
//! numbers and hands them to [`crate::report`].

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::Method;

use crate::load::{self, LoadResult, RequestSpec};
use crate::report::{self, Header, RepResult, Report, ScenarioResult, StackResult};
use crate::server::{FillResult, PAYLOAD};
use crate::sys;
use crate::{RunArgs, Scenario, Stack};

/// The core the servers run on, and the core of the load generator.
const SERVER_CORE: usize = 1;
const CLIENT_CORE: usize = 0;

/// How the processes are placed on the cores.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// Start servers under `taskset -c SERVER_CORE`.
    pin_servers: bool,
}

/// A running `sessiond-bench server`. Killed when dropped.
struct ServerProc {
    stack: Stack,
    child: Child,
    addr: SocketAddr,
    // Kept open so that the server's stdout never breaks.
    _stdout: BufReader<ChildStdout>,
}

impl ServerProc {
    fn start(exe: &Path, stack: Stack, placement: Placement) -> anyhow::Result<Self> {
        let mut cmd = server_command(exe, placement);
        cmd.args(["server", "--stack", stack.name(), "--listen", "127.0.0.1:0"]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {} server", stack.name()))?;
        let mut stdout = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {} server did not start (said {line:?})", stack.name());
        };
        let addr = addr.parse()?;
        Ok(Self {
            stack,
            child,
            addr,
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_command(exe: &Path, placement: Placement) -> Command {
    if placement.pin_servers {
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(SERVER_CORE.to_string()).arg(exe);
        cmd
    } else {
        Command::new(exe)
    }
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

    let header = Header::collect(&args, nproc, placement.pin_servers, ticks, ticks_assumed);
    eprintln!("sessiond-bench: {}", header.command);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut scenarios = Vec::new();
    for &scenario in &args.scenarios {
        if scenario == Scenario::S6 {
            continue;
        }
        let result = rt.block_on(run_scenario(&exe, placement, &args, scenario, ticks))?;
        scenarios.push(result);
    }
    let mut memory = Vec::new();
    if args.scenarios.contains(&Scenario::S6) {
        for &n in &args.fill {
            for stack in [Stack::Sessiond, Stack::TowerSessions] {
                eprintln!("S6: {} × {n} sessions", stack.name());
                memory.push(fill(&exe, placement, stack, n)?);
            }
        }
    }
    drop(rt);

    notes.extend(scenario_notes(&scenarios, &args));
    let report = Report::new(header, scenarios, memory, notes);
    print!("{}", report::markdown(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON written to {}", path.display());
    }
    Ok(())
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
            if st.errors > 0 || st.non_2xx > 0 {
                notes.push(format!(
                    "{} {}: {} non-2xx responses and {} failed requests.",
                    s.id,
                    st.stack.name(),
                    st.non_2xx,
                    st.errors
                ));
            }
        }
    }
    notes
}

/// Which request a scenario sends, and how.
fn request_of(scenario: Scenario) -> (Method, &'static str) {
    match scenario {
        Scenario::S1 => (Method::GET, "/create"),
        Scenario::S2 => (Method::GET, "/read"),
        Scenario::S3 => (Method::POST, "/incr"),
        Scenario::S6 => unreachable!("S6 sends no requests"),
    }
}

fn title_of(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::S1 => "S1 create: no cookie, a new session with a 200-byte payload per request",
        Scenario::S2 => "S2 hot read: one session, read the 200-byte payload",
        Scenario::S3 => "S3 hot write: one session, read counter + 1, write back",
        Scenario::S6 => "S6 memory",
    }
}

/// Gets a fresh session cookie from `/create` (None for `bare`, which sets none).
async fn new_session(server: &ServerProc) -> anyhow::Result<Option<String>> {
    let spec = RequestSpec {
        method: Method::GET,
        path: "/create",
        cookie: None,
    };
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
        method: Method::GET,
        path: "/counter",
        cookie: cookie.cloned(),
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

/// `GET /store-stats`: (compare-and-swap calls, conflicts), where the stack has it.
async fn store_stats(server: &ServerProc) -> anyhow::Result<Option<(u64, u64)>> {
    if server.stack != Stack::SessiondSuspending {
        return Ok(None);
    }
    let spec = RequestSpec {
        method: Method::GET,
        path: "/store-stats",
        cookie: None,
    };
    let r = load::fetch(server.addr, &spec).await?;
    let mut it = r.body.split_whitespace().map(str::parse::<u64>);
    match (r.status, it.next(), it.next()) {
        (200, Some(Ok(calls)), Some(Ok(conflicts))) => Ok(Some((calls, conflicts))),
        _ => bail!("/store-stats answered {} {:?}", r.status, r.body),
    }
}

/// The request every connection sends in one repetition (S3: a fresh session), and
/// the counter before it.
async fn prepare(
    server: &ServerProc,
    scenario: Scenario,
    s2_cookie: Option<&String>,
) -> anyhow::Result<(RequestSpec, Option<i64>)> {
    let (method, path) = request_of(scenario);
    let (cookie, before) = match scenario {
        Scenario::S1 => (None, None),
        Scenario::S2 => (s2_cookie.cloned(), None),
        Scenario::S3 => {
            let cookie = new_session(server).await?;
            let before = read_counter(server, cookie.as_ref()).await?;
            (cookie, Some(before))
        }
        Scenario::S6 => unreachable!(),
    };
    Ok((
        RequestSpec {
            method,
            path,
            cookie,
        },
        before,
    ))
}

async fn wait_ready(server: &ServerProc) -> anyhow::Result<()> {
    let spec = RequestSpec {
        method: Method::GET,
        path: "/counter",
        cookie: None,
    };
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
        method: Method::GET,
        path: "/read",
        cookie: cookie.clone(),
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
    scenario: Scenario,
    s2_cookie: Option<&String>,
    args: &RunArgs,
) -> anyhow::Result<()> {
    eprintln!(
        "{scenario:?}: warm-up {} ({} s)",
        server.stack.name(),
        args.warmup
    );
    let (spec, _) = prepare(server, scenario, s2_cookie).await?;
    let r = load::run(
        server.addr,
        &spec,
        args.conns,
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

async fn run_scenario(
    exe: &Path,
    placement: Placement,
    args: &RunArgs,
    scenario: Scenario,
    ticks_per_sec: u64,
) -> anyhow::Result<ScenarioResult> {
    let (method, path) = request_of(scenario);
    // Fresh servers per scenario, so that sessions created by S1 weigh on nothing else.
    let mut stacks = args.stacks.clone();
    if scenario == Scenario::S3 && !args.no_suspending {
        for extra in [Stack::SessiondSuspending, Stack::TowerSessionsSuspending] {
            if !stacks.contains(&extra) {
                stacks.push(extra);
            }
        }
    }
    let mut servers = Vec::new();
    for &stack in &stacks {
        let server = ServerProc::start(exe, stack, placement)?;
        wait_ready(&server).await?;
        servers.push(server);
    }

    // S2: one session per stack, created once.
    let mut s2_cookies = Vec::new();
    for server in &servers {
        s2_cookies.push(if scenario == Scenario::S2 {
            s2_session(server).await?
        } else {
            None
        });
    }

    if args.warmup > 0 {
        for (server, cookie) in servers.iter().zip(&s2_cookies) {
            warm_up(server, scenario, cookie.as_ref(), args).await?;
        }
    }

    let mut reps: Vec<Vec<RepResult>> = servers.iter().map(|_| Vec::new()).collect();
    for rep in 0..args.reps {
        // Interleave the stacks, rotating the order each repetition.
        for k in 0..servers.len() {
            let i = (k + rep) % servers.len();
            let server = &servers[i];
            eprintln!(
                "{scenario:?}: {} rep {}/{} ({} s)",
                server.stack.name(),
                rep + 1,
                args.reps,
                args.secs
            );
            let mut attempt = 1;
            let r = loop {
                wait_quiet(&servers, args).await;
                let mut r = measure(
                    server,
                    scenario,
                    s2_cookies[i].as_ref(),
                    args,
                    ticks_per_sec,
                    rep,
                )
                .await?;
                r.attempts = attempt;
                if r.background_cores <= args.max_background || attempt > args.retries {
                    break r;
                }
                eprintln!(
                    "  {:.2} cores busy with other work during that repetition: again",
                    r.background_cores
                );
                attempt += 1;
            };
            reps[i].push(r);
        }
    }

    let stacks = servers
        .iter()
        .zip(reps)
        .map(|(s, reps)| StackResult::new(s.stack, reps))
        .collect();
    drop(servers);
    Ok(ScenarioResult {
        id: format!("{scenario:?}"),
        title: title_of(scenario).to_string(),
        request: format!("{method} {path}"),
        conns: args.conns,
        secs: args.secs,
        reps: args.reps,
        warmup_secs: args.warmup,
        stacks,
    })
}

/// One measured repetition of `scenario` against `server`.
async fn measure(
    server: &ServerProc,
    scenario: Scenario,
    s2_cookie: Option<&String>,
    args: &RunArgs,
    ticks_per_sec: u64,
    rep: usize,
) -> anyhow::Result<RepResult> {
    let (spec, before) = prepare(server, scenario, s2_cookie).await?;
    let stats0 = store_stats(server).await?;
    let me = std::process::id();
    let (mut cpu0, mut cpu1) = (((0, 0), 0, 0), ((0, 0), 0, 0));
    let sample = || {
        (
            server.cpu_ticks(),
            sys::cpu_ticks(me).unwrap_or(0),
            sys::machine_busy_ticks(),
        )
    };
    let result = load::run(
        server.addr,
        &spec,
        args.conns,
        Duration::from_secs(args.secs),
        || cpu0 = sample(),
        || cpu1 = sample(),
    )
    .await?;
    // Busy time of everything else on the machine (other servers idle, other
    // users' jobs): a noisy neighbour shows here.
    let user = cpu1.0.0 - cpu0.0.0;
    let server_ticks = user + (cpu1.0.1 - cpu0.0.1);
    let other = (cpu1.2 - cpu0.2).saturating_sub(server_ticks + (cpu1.1 - cpu0.1));
    let counter = match before {
        Some(b) => Some(read_counter(server, spec.cookie.as_ref()).await? - b),
        None => None,
    };
    let cas = match (stats0, store_stats(server).await?) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    let mut r = rep_result(rep, &result, server_ticks, ticks_per_sec, counter);
    r.server_user_share = user as f64 / server_ticks.max(1) as f64;
    r.driver_cpu_busy = (cpu1.1 - cpu0.1) as f64 / ticks_per_sec as f64 / r.elapsed_secs;
    r.background_cores = other as f64 / ticks_per_sec as f64 / r.elapsed_secs;
    r.cas_calls = cas.map(|c| c.0);
    r.cas_conflicts = cas.map(|c| c.1);
    Ok(r)
}

/// Waits (at most `--quiet-wait` seconds) until the rest of the machine uses at most
/// `--max-background` cores, measured over one second.
async fn wait_quiet(servers: &[ServerProc], args: &RunArgs) {
    let me = std::process::id();
    let (ticks_per_sec, _) = sys::clock_ticks_per_sec();
    let busy = |servers: &[ServerProc]| {
        let ours: u64 = servers
            .iter()
            .map(|s| {
                let (u, k) = s.cpu_ticks();
                u + k
            })
            .sum::<u64>()
            + sys::cpu_ticks(me).unwrap_or(0);
        (sys::machine_busy_ticks(), ours)
    };
    let start = std::time::Instant::now();
    loop {
        let (m0, o0) = busy(servers);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (m1, o1) = busy(servers);
        let other = (m1 - m0).saturating_sub(o1 - o0) as f64 / ticks_per_sec as f64;
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
        server_user_share: f64::NAN,
        driver_cpu_busy: f64::NAN,
        attempts: 1,
        background_cores: f64::NAN,
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
