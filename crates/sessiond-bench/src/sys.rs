//! What the harness reads from the machine: `/proc`, `taskset`, `getconf`, the
//! toolchain and `Cargo.lock`.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// Runs `program args…` and returns its trimmed stdout, if it ran and succeeded.
pub(crate) fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `taskset` (util-linux) can be run.
/// `program`, run as `taskset -c CORE program` when `core` is given (taskset execs
/// the program, so the child's pid is the program's).
pub(crate) fn pinned(
    program: impl AsRef<std::ffi::OsStr>,
    core: Option<usize>,
) -> std::process::Command {
    match core {
        Some(c) => {
            let mut cmd = std::process::Command::new("taskset");
            cmd.arg("-c").arg(c.to_string()).arg(program);
            cmd
        }
        None => std::process::Command::new(program),
    }
}

pub(crate) fn taskset_available() -> bool {
    command_output("taskset", &["-V"]).is_some()
}

/// Pins every thread of this process to `core` with `taskset -a -p -c`. Threads
/// created later inherit the affinity.
pub(crate) fn pin_self(core: usize) -> anyhow::Result<()> {
    let pid = std::process::id().to_string();
    let core = core.to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &core, &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset -a -p -c {core} {pid} failed");
    Ok(())
}

/// The CPU cores this process may run on (`Cpus_allowed_list` of /proc/self/status).
pub(crate) fn allowed_cpus() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}

/// `utime + stime` of process `pid` in clock ticks (fields 14 and 15 of
/// /proc/<pid>/stat).
pub(crate) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    cpu_ticks_split(pid).map(|(u, s)| u + s)
}

/// `(utime, stime)` of process `pid` in clock ticks.
pub(crate) fn cpu_ticks_split(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime, stime))
}

/// Clock ticks per second (`getconf CLK_TCK`), and whether it was assumed (100).
pub(crate) fn clock_ticks_per_sec() -> (u64, bool) {
    match command_output("getconf", &["CLK_TCK"]).and_then(|s| s.parse().ok()) {
        Some(t) => (t, false),
        None => (100, true),
    }
}

/// The page size (`getconf PAGESIZE`, else 4096).
pub(crate) fn page_size() -> u64 {
    command_output("getconf", &["PAGESIZE"])
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096)
}

/// The resident set size of this process, bytes (/proc/self/statm, field 2).
pub(crate) fn rss_bytes() -> anyhow::Result<u64> {
    statm_rss("/proc/self/statm")
}

/// The resident set size of process `pid`, bytes (/proc/<pid>/statm, field 2).
pub(crate) fn rss_bytes_of(pid: u32) -> anyhow::Result<u64> {
    statm_rss(&format!("/proc/{pid}/statm"))
}

fn statm_rss(path: &str) -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("malformed {path}"))?
        .parse()?;
    Ok(pages * page_size())
}

/// `MemTotal` of /proc/meminfo, as written there.
pub(crate) fn mem_total() -> Option<String> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|v| v.trim().to_string())
}

/// The CPU model name of /proc/cpuinfo.
pub(crate) fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// The workspace's `Cargo.lock` (found from this crate's source directory).
pub(crate) fn cargo_lock_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.lock")
}

/// The locked versions of `names` in `Cargo.lock` (all versions, comma-separated, if
/// a crate appears more than once).
pub(crate) fn locked_versions(names: &[&str]) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string(cargo_lock_path()).unwrap_or_default();
    names
        .iter()
        .map(|name| {
            let mut versions = Vec::new();
            let mut lines = lock.lines();
            while let Some(line) = lines.next() {
                if line.trim() == format!("name = \"{name}\"")
                    && let Some(v) = lines
                        .next()
                        .and_then(|l| l.trim().strip_prefix("version = "))
                {
                    versions.push(v.trim_matches('"').to_string());
                }
            }
            let v = if versions.is_empty() {
                "not in Cargo.lock".to_string()
            } else {
                versions.join(", ")
            };
            ((*name).to_string(), v)
        })
        .collect()
}

/// Busy clock ticks of the whole machine (/proc/stat `cpu` line: user, nice, system,
/// irq, softirq, steal).
pub(crate) fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum()
}

/// /proc/loadavg, first three fields.
pub(crate) fn loadavg() -> Option<String> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// The device, type and mount options of the filesystem holding `path` (`findmnt`),
/// else its type (`stat -f`).
pub(crate) fn filesystem_of(path: &Path) -> Option<String> {
    let p = path.to_string_lossy();
    command_output(
        "findmnt",
        &["-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--target", &p],
    )
    .or_else(|| command_output("stat", &["-f", "-c", "%T", &p]))
    .map(|s| {
        format!(
            "{p}: {}",
            s.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })
}

/// utime + stime of every kernel thread (kthreadd, pid 2, and its children), clock
/// ticks, per pid: the journal (jbd2), writeback and I/O workers that do a
/// process's fsyncs, and ksoftirqd. Kernel workers come and go: compare two readings
/// with [`kernel_ticks_delta`].
pub(crate) fn kernel_thread_ticks() -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid: u32 = f.get(1).and_then(|x| x.parse().ok()).unwrap_or(0);
        if pid == 2 || ppid == 2 {
            let t = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
            out.push((pid, t(11) + t(12)));
        }
    }
    out
}

/// Kernel-thread CPU between two [`kernel_thread_ticks`] readings: threads present at
/// the end count from their start value (0 if new); threads that exited in between
/// are left out.
pub(crate) fn kernel_ticks_delta(before: &[(u32, u64)], after: &[(u32, u64)]) -> u64 {
    let start: std::collections::HashMap<u32, u64> = before.iter().copied().collect();
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(start.get(pid).copied().unwrap_or(0)))
        .sum()
}
