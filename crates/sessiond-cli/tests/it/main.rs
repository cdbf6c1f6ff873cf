//! The `sessiond` binary as an operator runs it, in one test binary: first start,
//! secrets, config errors, roles.json, users, graceful shutdown, the mobile CLI,
//! persistence across `kill -9`, and several nodes on one Redis.

#![allow(clippy::too_many_lines, reason = "scenario tests read top to bottom")]

mod cluster;
mod hardening;
mod readme;
mod serve;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_sessiond");

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) printed: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn sessiond(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .args(args)
        .env_remove("SESSIOND_API_KEY")
        .env_remove("SESSIOND_ADMIN_PASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Adds user `name` with `password` to `<cwd>/data/users.json` (`sessiond user add`).
pub(crate) fn add_user(cwd: &Path, name: &str, password: &str, args: &[&str]) {
    let out = sessiond(
        cwd,
        &[&["user", "add", name], args].concat(),
        &[("SESSIOND_USER_PASSWORD", password)],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `Set-Cookie` header a cookie-less `GET /api/session` gets from `base`.
pub(crate) fn new_session_cookie(base: &str) -> String {
    let resp = reqwest::blocking::get(format!("{base}/api/session")).unwrap();
    resp.headers()["set-cookie"].to_str().unwrap().to_string()
}

/// Starts `sessiond serve` on a free port and waits for its "listening" line.
pub(crate) fn start(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Running {
    start_in_shell(cwd, "", args, env)
}

/// [`start`], after the shell commands `prelude` (e.g. `ulimit -n 1024; umask 000`).
pub(crate) fn start_in_shell(
    cwd: &Path,
    prelude: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Running {
    let mut env = env.to_vec();
    env.push(("SESSIOND_LISTEN", "127.0.0.1:0"));
    let mut cmd = sessiond(cwd, &[&["serve"], args].concat(), &env);
    if !prelude.is_empty() {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("{prelude}; exec \"$0\" \"$@\""))
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .current_dir(cwd)
            .env_remove("SESSIOND_API_KEY")
            .env_remove("SESSIOND_ADMIN_PASSWORD");
        for (k, v) in &env {
            shell.env(k, v);
        }
        cmd = shell;
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Owned by `Running` at once, so the process is killed and reaped on any panic.
    let mut run = Running {
        child,
        base: String::new(),
        printed: Vec::new(),
    };
    let mut lines = BufReader::new(run.child.stdout.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("sessiond exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("sessiond listening on ") {
            run.base = addr.to_string();
            return run;
        }
        run.printed.push(line);
    }
}
