//! The stores group's Redis: a `redis-server` of the driver's own (no persistence,
//! a free port on 127.0.0.1, pinned to the load generator's core as the protocol
//! places Redis), and `redis-benchmark` against it as the reference.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::sys;

/// A running `redis-server`. Killed when dropped.
pub(crate) struct RedisProc {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `redis-server --version`.
    pub version: String,
}

impl RedisProc {
    /// Starts `program` on a free port, pinned to `core` (if given), and waits until it
    /// answers PING.
    pub(crate) fn start(program: &str, core: Option<usize>) -> anyhow::Result<Self> {
        let version = sys::command_output(program, &["--version"])
            .with_context(|| format!("`{program} --version` failed: is redis-server installed?"))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = crate::sys::pinned(program, core);
        let dir = std::env::temp_dir();
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        // `taskset -c N prog` execs `prog`: the child's pid is Redis's.
        let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        let redis = Self {
            child,
            port,
            version,
        };
        let start = Instant::now();
        loop {
            match redis.command("PING") {
                Ok(r) if r.starts_with("+PONG") => return Ok(redis),
                _ if start.elapsed() > Duration::from_secs(10) => {
                    bail!("redis-server on port {port} does not answer PING")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Redis's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime of Redis, clock ticks.
    pub(crate) fn cpu_ticks(&self) -> u64 {
        sys::cpu_ticks(self.pid()).unwrap_or(0)
    }

    /// Sends one inline command and returns the raw reply (one read; enough for
    /// short replies and for `INFO` sections, read until the bulk length is met).
    pub(crate) fn command(&self, cmd: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(format!("{cmd}\r\n").as_bytes())?;
        let mut buf = Vec::new();
        let mut chunk = [0_u8; 16 * 1024];
        loop {
            let k = s.read(&mut chunk)?;
            if k == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..k]);
            if complete_reply(&buf) {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// `INFO commandstats` as (command, calls).
    pub(crate) fn command_calls(&self) -> Vec<(String, u64)> {
        let Ok(text) = self.command("INFO commandstats") else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("cmdstat_")?;
                let (name, stats) = rest.split_once(':')?;
                let calls = stats
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), calls))
            })
            .collect()
    }
}

/// Whether `buf` holds a whole simple or bulk reply.
fn complete_reply(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if buf.first() != Some(&b'$') {
        return true;
    }
    let len: i64 = std::str::from_utf8(&buf[1..end])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1);
    len < 0 || buf.len() >= end + 2 + len as usize + 2
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The difference of two `INFO commandstats` readings: calls per command.
pub(crate) fn calls_delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = after
        .iter()
        .filter_map(|(name, calls)| {
            let b = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, c)| *c);
            (calls > &b && name != "info").then(|| (name.clone(), calls - b))
        })
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.1));
    out
}

/// One `redis-benchmark` run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct BenchRun {
    /// 0-based repetition.
    pub rep: usize,
    /// The core redis-benchmark ran on (`None`: unpinned).
    pub client_core: Option<usize>,
    /// The command line.
    pub command: String,
    /// Requests sent (`-n`).
    pub requests: u64,
    /// GET/s as redis-benchmark reports it.
    pub get_per_sec: f64,
    /// p50 latency, ms, if reported.
    pub p50_ms: Option<f64>,
    /// p99 latency, ms, if reported.
    pub p99_ms: Option<f64>,
    /// Wall time of the run, s.
    pub elapsed_secs: f64,
    /// Redis CPU (utime+stime delta) ÷ requests, µs.
    pub redis_cpu_us_per_req: f64,
    /// Redis CPU time ÷ wall time.
    pub redis_busy: f64,
}

/// Runs `redis-benchmark -h 127.0.0.1 -p PORT -c CONNS -n N -t get -P 1 -q --csv`,
/// pinned to `core` if given, and parses its GET rate.
pub(crate) fn run_benchmark(
    program: &str,
    redis: &RedisProc,
    core: Option<usize>,
    conns: usize,
    requests: u64,
    rep: usize,
) -> anyhow::Result<BenchRun> {
    let args: Vec<String> = [
        "-h",
        "127.0.0.1",
        "-p",
        &redis.port.to_string(),
        "-c",
        &conns.to_string(),
        "-n",
        &requests.to_string(),
        "-t",
        "get",
        "-P",
        "1",
        "-q",
        "--csv",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let mut cmd = crate::sys::pinned(program, core);
    cmd.args(&args);
    let shown = match core {
        Some(c) => format!("taskset -c {c} {program} {}", args.join(" ")),
        None => format!("{program} {}", args.join(" ")),
    };
    let (ticks_per_sec, _) = sys::clock_ticks_per_sec();
    let cpu0 = redis.cpu_ticks();
    let t0 = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {shown}"))?;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu_secs = (redis.cpu_ticks() - cpu0) as f64 / ticks_per_sec as f64;
    anyhow::ensure!(out.status.success(), "{shown} failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let (rate, p50, p99) =
        parse_output(&text).with_context(|| format!("{shown} printed no GET rate: {text:?}"))?;
    Ok(BenchRun {
        rep,
        client_core: core,
        command: shown,
        requests,
        get_per_sec: rate,
        p50_ms: p50,
        p99_ms: p99,
        elapsed_secs: elapsed,
        redis_cpu_us_per_req: cpu_secs * 1e6 / requests as f64,
        redis_busy: cpu_secs / elapsed,
    })
}

/// The GET rate (and p50, p99 in ms when present) of redis-benchmark's output, CSV
/// (`"GET","123.45","avg","min","p50","p95","p99","max"`) or quiet text (`GET:
/// 123.45 requests per second, p50=0.215 msec`).
fn parse_output(text: &str) -> Option<(f64, Option<f64>, Option<f64>)> {
    for line in text.split(['\n', '\r']) {
        let line = line.trim();
        if line.starts_with("\"GET\"") {
            let f: Vec<&str> = line.split(',').map(|x| x.trim_matches('"')).collect();
            let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
            if let Some(rate) = num(1) {
                // Redis ≥ 7 adds avg, min, p50, p95, p99, max latencies.
                return Some((rate, num(4), num(6)));
            }
        }
    }
    let line = text
        .split(['\n', '\r'])
        .rfind(|l| l.trim_start().starts_with("GET:"))?;
    let rate = line
        .trim_start()
        .strip_prefix("GET:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let p50 = line
        .split("p50=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok());
    Some((rate, p50, None))
}

#[cfg(test)]
mod tests {
    use super::parse_output;

    #[test]
    fn parses_csv_and_quiet_output() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"GET\",\"98328.42\",\"0.281\",\"0.064\",\"0.271\",\"0.391\",\"0.511\",\"1.751\"\n";
        assert_eq!(
            parse_output(csv),
            Some((98328.42, Some(0.271), Some(0.511)))
        );
        let quiet = "GET: rps=0.0 (overall: nan) avg_msec=nan (overall: nan)\rGET: 97087.38 requests per second, p50=0.263 msec\n";
        assert_eq!(parse_output(quiet), Some((97087.38, Some(0.263), None)));
        assert_eq!(parse_output("nothing"), None);
    }
}
