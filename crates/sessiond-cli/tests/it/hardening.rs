//! What a hostile client can make `sessiond serve` spend, and the faults it must
//! survive: slow headers, half-open connections under a low open-files limit, wrong
//! passwords from many addresses, announced oversize bodies, deep and large storage,
//! file modes whatever the umask, a full disk, and shutdown with a half-sent request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Running, start, start_in_shell};

const KEY: &str = "hardening-key";
const ADMIN: &str = "hardening-admin-pw";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SESSIOND_API_KEY", KEY),
        ("SESSIOND_ADMIN_PASSWORD", ADMIN),
    ]
}

fn addr(run: &Running) -> String {
    run.base.trim_start_matches("http://").to_string()
}

/// Whether the server closed `stream` (a read sees the end or a reset).
fn closed(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn service(
    run: &Running,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .request(method, format!("{}/service/v1{path}", run.base))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    (resp.status().as_u16(), resp.json().unwrap_or_default())
}

fn new_session(run: &Running) -> String {
    let v: Value = reqwest::blocking::get(format!("{}/api/session", run.base))
        .unwrap()
        .json()
        .unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn slow_headers_are_closed_within_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sessiond.toml"),
        "[limits]\nheader_read_timeout_seconds = 1\n",
    )
    .unwrap();
    let run = start(dir.path(), &[], &env());
    let mut slow = TcpStream::connect(addr(&run)).unwrap();
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // One header line every 200 ms: the head never completes.
    while !closed(&mut slow) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a slow request head is still open after 5 s"
        );
        std::thread::sleep(Duration::from_millis(150));
        let _ = slow.write_all(b"X-Slow: 1\r\n");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // A connection that sends nothing at all is closed the same way.
    let mut silent = TcpStream::connect(addr(&run)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(closed(&mut silent));
}

#[cfg(unix)]
#[test]
fn a_request_is_answered_while_1100_half_open_connections_are_held() {
    // The test holds 1,100 sockets itself.
    rlimit::increase_nofile_limit(4096).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = start_in_shell(dir.path(), "ulimit -n 1024", &[], &env());
    let mut held = Vec::new();
    for _ in 0..1100 {
        let mut s = TcpStream::connect(addr(&run)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        held.push(s);
    }
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = client.get(format!("{}/healthz", run.base)).send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered after {:?}",
        started.elapsed()
    );
    drop(held);
}

/// Resident memory of `pid` and its peak, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(target_os = "linux")]
#[test]
fn wrong_passwords_from_200_addresses_at_once_keep_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path(), &[], &env());
    // Warm up: one check, so that idle memory includes one worker's arena.
    let _ = reqwest::blocking::Client::new()
        .get(format!("{}/admin/api/mobile/apps", run.base))
        .bearer_auth("warm-up")
        .send();
    let (idle, _) = memory_kb(run.child.id());
    let answers: Vec<u16> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..200u8)
            .map(|i| {
                let base = run.base.clone();
                s.spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .local_address(std::net::IpAddr::from([127, 0, 1, i]))
                        .timeout(Duration::from_secs(30))
                        .build()
                        .unwrap();
                    client
                        .get(format!("{base}/admin/api/mobile/apps"))
                        .bearer_auth(format!("wrong-{i}"))
                        .send()
                        .map_or(0, |r| r.status().as_u16())
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let (_, peak) = memory_kb(run.child.id());
    eprintln!("memory under 200 concurrent wrong passwords: idle {idle} kB, peak {peak} kB");
    eprintln!(
        "THREADS {}",
        std::fs::read_to_string(format!("/proc/{}/status", run.child.id()))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Threads"))
            .unwrap()
    );
    assert!(
        answers.iter().all(|s| [401, 503].contains(s)),
        "{answers:?}"
    );
    assert!(
        answers.contains(&401) && answers.contains(&503),
        "{answers:?}"
    );
    assert!(
        peak.saturating_sub(idle) < 100 * 1024,
        "idle {idle} kB, peak {peak} kB"
    );
}

#[test]
fn an_announced_oversize_body_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path(), &[], &env());
    let id = new_session(&run);
    let mut s = TcpStream::connect(addr(&run)).unwrap();
    write!(
        s,
        "PATCH /service/v1/sessions/{id}/storage HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{{}}"
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut answer = [0u8; 512];
    let n = s.read(&mut answer).expect("an answer within a second");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("body_too_large"), "{text}");
}

#[test]
fn deep_or_large_storage_is_refused_and_the_server_restarts_with_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path(), &[], &env());
    let id = new_session(&run);
    let path = format!("/sessions/{id}/storage");
    let deep: Value =
        serde_json::from_str(&format!("{}1{}", "{\"a\":".repeat(127), "}".repeat(127))).unwrap();
    let (st, e) = service(&run, reqwest::Method::PATCH, &path, Some(deep));
    assert_eq!((st, e["error"].as_str()), (400, Some("storage_too_deep")));
    let big = "x".repeat(700_000);
    let (st, _) = service(&run, reqwest::Method::PATCH, &path, Some(json!({"a": big})));
    assert_eq!(st, 200);
    let (st, e) = service(&run, reqwest::Method::PATCH, &path, Some(json!({"b": big})));
    assert_eq!((st, e["error"].as_str()), (413, Some("storage_too_large")));
    assert!(!e["message"].as_str().unwrap().contains('/'));
    drop(run);
    let run = start(dir.path(), &[], &env());
    let (st, v) = service(&run, reqwest::Method::GET, &path, None);
    assert_eq!(st, 200);
    assert_eq!(v["storage"]["a"].as_str().map(str::len), Some(700_000));
    assert!(
        v["storage"].get("b").is_none(),
        "the refused write changed nothing"
    );
}

#[cfg(unix)]
fn modes(root: &Path, out: &mut Vec<(String, u32, bool)>) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        let mode = meta.permissions().mode() & 0o777;
        out.push((entry.path().display().to_string(), mode, meta.is_dir()));
        if meta.is_dir() {
            modes(&entry.path(), out);
        }
    }
}

const IOS: &str = r#"{"email":"me@example.com","send":"link","application":{"name":"Contact","id":"com.contactApp.Contact","version":"1"},"team":{"id":"UTT7VDX8W5"},"device":{"id":"0DC5132E-1EF4-407C-A832-5FE33D818AF3","description":"iPhone X","version":"11.3","os":"iOS","simulator":true},"language":{"id":"en_US","code":"en","region":"US"}}"#;

#[cfg(unix)]
#[test]
fn every_file_is_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sessiond.toml"),
        "[mobile]\npolicy = \"verify\"\n[mobile.email]\nfrom = \"App <app@example.com>\"\nlink_base = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" user add ann")
        .arg(crate::BIN)
        .current_dir(dir.path())
        .env("SESSIOND_USER_PASSWORD", "ann-secret-pw")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = start_in_shell(dir.path(), "umask 000", &[], &env());
    let client = reqwest::blocking::Client::new();
    // A session in the store, a mobile login (session file, sidecar, activation
    // state, mail in the outbox), a console sign-in (audit log, console sessions).
    new_session(&run);
    let resp = client
        .post(format!("{}/mobileapp/$authenticate", run.base))
        .header("content-type", "application/json")
        .body(IOS)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .post(format!("{}/admin/login", run.base))
        .json(&json!({"password": ADMIN}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut found = Vec::new();
    modes(&dir.path().join("data"), &mut found);
    let names: Vec<&str> = found.iter().map(|(p, _, _)| p.as_str()).collect();
    for expected in [
        "sessions.redb",
        "credentials.json",
        "users.json",
        "audit.log",
        "console-sessions.json",
        ".eml",
        ".sessiond.json",
        "mobile-activations.json",
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.ends_with(expected) || n.contains(expected)),
            "{expected} in {names:?}"
        );
    }
    let data_mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("data"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(data_mode, 0o700);
    for (path, mode, is_dir) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{path}: {mode:o}");
    }
}

/// A small tmpfs mounted for the test (needs the right to mount; root in CI), unmounted
/// on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

#[test]
fn writes_are_served_again_once_a_full_disk_is_freed() {
    let Some(disk) = Tmpfs::mount("8m") else {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    let data = disk.0.path().join("data");
    let cwd = tempfile::tempdir().unwrap();
    let run = start(cwd.path(), &["--data", data.to_str().unwrap()], &env());
    let id = new_session(&run);
    let path = format!("/sessions/{id}/storage");
    let (st, _) = service(
        &run,
        reqwest::Method::PATCH,
        &path,
        Some(json!({"before": 1})),
    );
    assert_eq!(st, 200);
    // Fill the file system.
    let filler = disk.0.path().join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // The write-ahead log keeps zero-filled room ahead of its end (up to 4 MiB): writes
    // go on into it, durably, until the log must grow.
    let mut failed = None;
    for i in 0..4000 {
        let patch = json!({ "k": "v".repeat(4096), "i": i });
        let (st, e) = service(&run, reqwest::Method::PATCH, &path, Some(patch));
        if st != 200 {
            failed = Some((st, e));
            break;
        }
    }
    let (st, e) = failed.expect("a write fails while the disk is full");
    assert_eq!((st, e["error"].as_str()), (503, Some("store_unavailable")));
    let message = e["message"].as_str().unwrap();
    assert!(
        !message.contains('/') && !message.to_lowercase().contains("redb"),
        "no path or library text reaches the client: {message}"
    );
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (st, _) = service(
            &run,
            reqwest::Method::PATCH,
            &path,
            Some(json!({"after": 1})),
        );
        if st == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes still fail after the disk was freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, v) = service(&run, reqwest::Method::GET, &path, None);
    assert_eq!(
        (
            v["storage"]["before"].as_i64(),
            v["storage"]["after"].as_i64()
        ),
        (Some(1), Some(1))
    );
    // New visitors are served too.
    new_session(&run);
    drop(run);
}

#[cfg(unix)]
#[test]
fn sigterm_exits_within_the_grace_period_with_a_half_sent_request_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sessiond.toml"),
        "[limits]\nshutdown_grace_seconds = 2\n",
    )
    .unwrap();
    let mut run = start(dir.path(), &[], &env());
    let mut half = TcpStream::connect(addr(&run)).unwrap();
    half.write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    // And an idle keep-alive connection after a whole request.
    let mut idle = TcpStream::connect(addr(&run)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(idle.read(&mut buf).unwrap() > 0);
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still running {:?} after SIGTERM",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop((half, idle));
}

#[test]
fn ten_thousand_cookieless_requests_store_nothing_and_others_stay_fast() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path(), &[], &env());
    let client = reqwest::blocking::Client::new();
    let first = client
        .get(format!("{}/api/session", run.base))
        .send()
        .unwrap();
    let cookie = first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let id = first.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let slowest = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let c = reqwest::blocking::Client::new();
            for _ in 0..10_000 {
                assert_eq!(
                    c.get(format!("{}/api/session", run.base))
                        .send()
                        .unwrap()
                        .status(),
                    200
                );
            }
        });
        let mut slowest = Duration::ZERO;
        while !flood.is_finished() {
            let t = Instant::now();
            let v: Value = client
                .get(format!("{}/api/session", run.base))
                .header("cookie", &cookie)
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(v["id"], id.as_str());
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(20));
        }
        flood.join().unwrap();
        slowest
    });
    assert!(
        slowest < Duration::from_millis(500),
        "another client waited {slowest:?}"
    );
    // Nothing was stored: after a restart no web session is left, and the guest's
    // cookie still opens its (empty) guest session.
    drop(run);
    let size = std::fs::metadata(dir.path().join("data/sessions.redb"))
        .unwrap()
        .len();
    assert!(size < 2 << 20, "sessions.redb is {size} bytes");
    let run = start(dir.path(), &[], &env());
    let (_, activity) = service(&run, reqwest::Method::GET, "/activity?kind=web", None);
    assert_eq!(activity["sessions"], json!([]));
    let v: Value = client
        .get(format!("{}/api/session", run.base))
        .header("cookie", &cookie)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["id"], id.as_str(), "a guest's cookie survives a restart");
}
