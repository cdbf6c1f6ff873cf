//! First start, secrets, configuration, roles.json, users, shutdown, the mobile CLI.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{add_user, new_session_cookie, sessiond, start};

#[test]
fn first_start_creates_the_data_folder_and_shows_secrets_once() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path(), &[], &[]);
    assert!(dir.path().join("data/credentials.json").exists());
    let key = run
        .printed
        .iter()
        .position(|l| l.contains("API key"))
        .map(|i| run.printed[i + 1].trim().to_string())
        .unwrap();
    assert!(run.printed.iter().any(|l| l.contains("admin password")));
    assert!(
        run.printed
            .iter()
            .any(|l| l.contains("/admin") && l.contains("Admin console")),
        "{:?}",
        run.printed
    );
    assert!(
        run.printed
            .iter()
            .any(|l| l.contains("sessiond admin api-key")),
        "how to replace a lost key"
    );
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(format!("{}/service/v1/activity", run.base))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(new_session_cookie(&run.base).starts_with("4DSID_sessiond="));
    drop(run);
    let again = start(dir.path(), &[], &[]);
    assert!(
        again
            .printed
            .iter()
            .all(|l| !l.contains("API key") && !l.contains("password")),
        "{:?}",
        again.printed
    );
    let resp = client
        .get(format!("{}/service/v1/activity", again.base))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "the stored key still works");
    drop(again);
    // A lost key is replaced: the old one stops working.
    let out = sessiond(dir.path(), &["admin", "api-key"], &[])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let new_key = text.lines().nth(1).unwrap().trim().to_string();
    let third = start(dir.path(), &[], &[]);
    let status = |k: &str| {
        client
            .get(format!("{}/service/v1/activity", third.base))
            .bearer_auth(k)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(status(&key), 401);
    assert_eq!(status(&new_key), 200);
}

#[test]
fn secrets_from_the_environment_and_app_name_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(
        dir.path(),
        &["--app-name", "Shop", "--data", "d"],
        &[
            ("SESSIOND_API_KEY", "k-from-env"),
            ("SESSIOND_ADMIN_PASSWORD", "admin-from-env"),
        ],
    );
    assert!(
        run.printed.is_empty(),
        "nothing generated: {:?}",
        run.printed
    );
    let client = reqwest::blocking::Client::new();
    let resp = client
        .get(format!("{}/service/v1/activity", run.base))
        .bearer_auth("k-from-env")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(new_session_cookie(&run.base).starts_with("4DSID_Shop="));
    assert!(dir.path().join("d/credentials.json").exists());
}

#[test]
fn user_add_then_login() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/roles.json"),
        r#"{"privileges": [{"privilege": "sales"}], "roles": [{"role": "Seller", "privileges": ["sales"]}]}"#,
    )
    .unwrap();
    add_user(dir.path(), "ann", "ann-secret-pw", &["--role", "Seller"]);
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    let client = reqwest::blocking::Client::new();
    let resp = client
        .post(format!("{}/api/login", run.base))
        .json(&json!({"userName": "ann", "password": "ann-secret-pw"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["privileges"], json!(["sales"]));
    assert_eq!(v["userName"], "ann");
}

/// `serve` refuses to start, and `config check` refuses the configuration, alike.
#[test]
fn malformed_roles_json_refuses_to_start_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roles.json"),
        "{\n  \"privileges\": [\n    {\"privilege\": }\n  ]\n}",
    )
    .unwrap();
    for command in ["serve", "config check"] {
        let args = format!("{command} --roles roles.json --listen 127.0.0.1:0");
        let args: Vec<&str> = args.split(' ').collect();
        let out = sessiond(dir.path(), &args, &[]).output().unwrap();
        assert!(!out.status.success(), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("roles.json:3:"), "{command}: {err}");
    }
}

/// `serve` and `config check` refuse the same values with the same message.
#[test]
fn config_file_unknown_keys_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("listen = \"127.0.0.1:0\"\nlisten_port = 3\n", "listen_port"),
        ("[cookie]\nsame_site = \"Loose\"\n", "Loose"),
        ("[sessions]\nidle_timeout = 5\n", "idle_timeout"),
        ("app_name = \"bad name\"\n", "app name"),
        ("store = \"postgres\"\n", "postgres"),
        ("[remote]\nsleep_timeout = 5\n", "sleep_timeout"),
        (
            "[remote]\npostponed_timeout_minutes = 0\n",
            "postponed_timeout_minutes",
        ),
        (
            "[remote]\nping_interval_seconds = 60\nping_timeout_seconds = 30\n",
            "ping_timeout_seconds",
        ),
        ("[remote]\nmax_frame_bytes = 10\n", "max_frame_bytes"),
        (
            "[remote]\nclient_builtins = [\"session.sudo\"]\n",
            "session.sudo",
        ),
        (
            "trust_proxy_headers = true\n[mobile]\nlocalhost_accept = true\n",
            "localhost_accept",
        ),
        (
            "[limits]\nidle_timeout_seconds = 0\n",
            "idle_timeout_seconds",
        ),
        ("[sessions]\nmax_storage_depth = 500\n", "max_storage_depth"),
        ("[mobile]\nmax_field_bytes = 1\n", "max_field_bytes"),
    ] {
        std::fs::write(dir.path().join("sessiond.toml"), text).unwrap();
        for command in [&["serve"][..], &["config", "check"]] {
            let out = sessiond(dir.path(), command, &[("SESSIOND_LISTEN", "127.0.0.1:0")])
                .output()
                .unwrap();
            assert!(!out.status.success(), "{command:?} {text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(needle), "{command:?} {text}: {err}");
        }
    }
}

#[test]
fn config_check_prints_the_effective_settings_without_secrets_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sessiond.toml"),
        "app_name = \"Shop\"\nstore = \"redis://:s3cret@127.0.0.1:1/0\"\n[sessions]\nidle_timeout_minutes = 90\n",
    )
    .unwrap();
    let out = sessiond(
        dir.path(),
        &["config", "check", "--listen", "127.0.0.1:9"],
        &[],
    )
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "configuration valid",
        "listen: 127.0.0.1:9",
        "store: redis (redis://***@127.0.0.1:1/0)",
        "app_name: Shop (cookie 4DSID_Shop)",
        "idle timeout 90 min",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert!(!text.contains("s3cret"), "{text}");
    // Nothing made: no data folder, no credentials; Redis was not contacted.
    assert!(!dir.path().join("data").exists());
}

#[test]
fn config_file_settings_apply_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("custom.toml"),
        "app_name = \"FromFile\"\n[cookie]\nsame_site = \"Lax\"\nsecure = \"always\"\n[sessions]\nidle_timeout_minutes = 90\n",
    )
    .unwrap();
    let run = start(
        dir.path(),
        &["--config", "custom.toml"],
        &[("SESSIOND_API_KEY", "k")],
    );
    let resp = reqwest::blocking::get(format!("{}/api/session", run.base)).unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("4DSID_FromFile=")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    assert_eq!(resp.json::<Value>().unwrap()["idleTimeout"], 90);
    drop(run);
    let run = start(
        dir.path(),
        &["--config", "custom.toml", "--app-name", "FromFlag"],
        &[("SESSIOND_API_KEY", "k")],
    );
    assert!(new_session_cookie(&run.base).starts_with("4DSID_FromFlag="));
}

#[cfg(unix)]
#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    let status = Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const IOS: &str = r#"{"email":"","send":"link","application":{"name":"Contact","id":"com.contactApp.Contact","version":"1"},"team":{"id":"UTT7VDX8W5"},"device":{"id":"0DC5132E-1EF4-407C-A832-5FE33D818AF3","description":"iPhone X","version":"11.3","os":"iOS","simulator":true},"language":{"id":"en_US","code":"en","region":"US"}}"#;

fn mobile_cli(cwd: &Path, base: &str, args: &[&str]) -> String {
    let out = sessiond(
        cwd,
        &[&["mobile", "--server", base], args].concat(),
        &[("SESSIOND_ADMIN_PASSWORD", "admin-pw-123")],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn mobile_config_and_the_mobile_cli_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sessiond.toml"),
        "[mobile]\nids = \"4d\"\npolicy = \"verify\"\nlocalhost_accept = false\n",
    )
    .unwrap();
    let run = start(
        dir.path(),
        &[],
        &[
            ("SESSIOND_API_KEY", "k"),
            ("SESSIOND_ADMIN_PASSWORD", "admin-pw-123"),
        ],
    );
    let http = reqwest::blocking::Client::new();
    let login = || -> Value {
        http.post(format!("{}/mobileapp/$authenticate", run.base))
            .header("content-type", "application/json")
            .body(IOS)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let v = login();
    assert_eq!(
        v["id"], "7023d9205074199d1c16fc00d24354e778137675",
        "ids = \"4d\""
    );
    assert!(v.get("token").is_none(), "policy = \"verify\" → pending");
    let folder = "UTT7VDX8W5.com.contactApp.Contact";
    let id = "7023d9205074199d1c16fc00d24354e778137675";
    assert!(
        mobile_cli(dir.path(), &run.base, &["apps"])
            .contains("Contact (UTT7VDX8W5.com.contactApp.Contact)")
    );
    assert!(mobile_cli(dir.path(), &run.base, &["sessions", folder]).contains("pending"));
    assert!(
        mobile_cli(dir.path(), &run.base, &["accept", folder, id]).contains("sessiond mobile push")
    );
    assert!(mobile_cli(dir.path(), &run.base, &["push"]).contains("updated 1"));
    let token = login()["token"].as_str().unwrap().to_string();
    let data = |t: &str| {
        http.get(format!("{}/mobileapp/$licensecheck", run.base))
            .bearer_auth(t)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(data(&token), 200);
    let resp = http
        .get(format!("{}/mobileapp/Event(1)", run.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        resp.status(),
        404,
        "authorized, but no upstream is configured"
    );
    assert_eq!(resp.json::<Value>().unwrap()["error"], "not_found");
    mobile_cli(dir.path(), &run.base, &["pend", folder, id, "--push"]);
    assert_eq!(data(&token), 401);
    assert!(
        mobile_cli(dir.path(), &run.base, &["show", folder, id])
            .contains("\"status\": \"pending\"")
    );
    mobile_cli(dir.path(), &run.base, &["delete", folder, id, "--push"]);
    assert!(
        !dir.path()
            .join("data/MobileApps")
            .join(folder)
            .join(id)
            .exists()
    );
    let out = sessiond(
        dir.path(),
        &["mobile", "--server", &run.base, "apps"],
        &[("SESSIOND_ADMIN_PASSWORD", "wrong-password")],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// Runs `sessiond remote --url <base>/remote --user ann <args>` with `stdin`;
/// returns (stdout, stderr).
fn remote_cli(cwd: &Path, base: &str, args: &[&str], stdin: &str) -> (String, String) {
    use std::io::Write as _;
    let url = format!("{}/remote", base.replace("http://", "ws://"));
    let mut child = sessiond(
        cwd,
        &[&["remote", "--url", &url, "--user", "ann"], args].concat(),
        &[("SESSIOND_REMOTE_PASSWORD", "ann-secret-pw")],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    );
    assert!(out.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

#[test]
fn remote_cli_calls_keeps_resumes_sleeps_and_wakes_a_remote_session() {
    let dir = tempfile::tempdir().unwrap();
    add_user(dir.path(), "ann", "ann-secret-pw", &[]);
    std::fs::write(
        dir.path().join("sessiond.toml"),
        "[remote]\nclient_builtins = [\"session.info\", \"session.storage\", \"session.patch\", \"session.increment\"]\n",
    )
    .unwrap();
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    // A call that leaves the session postponed, then a resume by persistentID.
    let (first, stderr) = remote_cli(
        dir.path(),
        &run.base,
        &["call", "session.increment", r#"{"path":"n"}"#, "--keep"],
        "",
    );
    assert_eq!(first.trim(), "1");
    let persistent = stderr
        .split_whitespace()
        .skip_while(|w| *w != "persistentID")
        .nth(1)
        .unwrap()
        .to_string();
    let (second, _) = remote_cli(
        dir.path(),
        &run.base,
        &[
            "--persistent-id",
            &persistent,
            "call",
            "session.increment",
            r#"{"path":"n"}"#,
        ],
        "",
    );
    assert_eq!(second.trim(), "2", "the same session and storage");
    // That call ended with a goodbye: the persistentID is spent.
    let out = sessiond(
        dir.path(),
        &[
            "remote",
            "--url",
            &format!("{}/remote", run.base.replace("http://", "ws://")),
            "--user",
            "ann",
            "--persistent-id",
            &persistent,
            "call",
            "session.info",
        ],
        &[("SESSIOND_REMOTE_PASSWORD", "ann-secret-pw")],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_persistent_id"));
    // The shell: sleep, wake, storage kept; bad commands answered, not fatal.
    let (shell, _) = remote_cli(
        dir.path(),
        &run.base,
        &["shell"],
        "call session.patch {\"patch\":{\"doc\":\"draft\"}}\nsleep\nwake\ncall session.storage\ncall nope\ndance\ncall session.info\nbye\n",
    );
    let lines: Vec<&str> = shell.lines().collect();
    assert_eq!(lines[0], r#"{"doc":"draft"}"#);
    assert_eq!(lines[1], "sleeping");
    assert!(lines[2].starts_with("resumed true session "), "{shell}");
    assert_eq!(lines[3], r#"{"doc":"draft"}"#);
    assert!(lines[4].starts_with("error: unknown_function"), "{shell}");
    assert!(lines[5].starts_with("error: unknown command"), "{shell}");
    let info: Value = serde_json::from_str(lines[6]).unwrap();
    assert_eq!(info["info"]["type"], "remote");
    assert_eq!(info["info"]["state"], "active");
    assert_eq!(lines[7], "goodbye");
    // The stored-procedures session through the service API.
    let client = reqwest::blocking::Client::new();
    let v: Value = client
        .post(format!(
            "{}/service/v1/stored-procedures/session.info",
            run.base
        ))
        .bearer_auth("k")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["result"]["info"]["type"], "storedProcedure");
}

/// The declared `rust-version` is what the locked dependencies need: the highest
/// `rust-version` among them.
#[test]
fn rust_version_matches_what_the_locked_dependencies_need() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Only this platform's dependencies: the others (macOS, Windows) are not downloaded.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("-vV").output().unwrap();
    let host = String::from_utf8_lossy(&version.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let mut needed = vec![0];
    let mut ours = None;
    for p in meta["packages"].as_array().unwrap() {
        let Some(v) = p["rust_version"].as_str() else {
            continue;
        };
        if members.contains(&p["id"].as_str().unwrap()) {
            ours = Some(version(v));
        } else {
            needed = needed.max(version(v));
        }
    }
    let ours = ours.expect("the workspace declares rust-version");
    let trim = |mut v: Vec<u32>| {
        while v.len() > 2 && v.last() == Some(&0) {
            v.pop();
        }
        v
    };
    assert_eq!(
        trim(ours),
        trim(needed),
        "workspace rust-version vs the dependencies' highest"
    );
}

/// `user add` on a terminal asks twice with hidden input, states the rule, and warns
/// about roles roles.json does not declare.
#[cfg(unix)]
#[test]
fn user_add_prompts_twice_hidden_on_a_terminal() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let run = |answers: &[&str]| {
        let mut child = Command::new("script")
            .args([
                "-qec",
                &format!("{} user add ann --role Medium", crate::BIN),
                "/dev/null",
            ])
            .current_dir(dir.path())
            .env_remove("SESSIOND_USER_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for a in answers {
            std::thread::sleep(Duration::from_millis(400));
            stdin.write_all(format!("{a}\n").as_bytes()).unwrap();
        }
        std::thread::sleep(Duration::from_millis(400));
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child.wait().unwrap();
        out
    };
    let out = run(&["first-pass-1", "other-pass-2"]);
    assert!(out.contains("at least 8 characters"), "{out}");
    assert!(out.contains("differ"), "{out}");
    assert!(!dir.path().join("data/users.json").exists());
    let out = run(&["good-pass-123", "good-pass-123"]);
    assert!(
        !out.contains("good-pass-123"),
        "the password is not echoed: {out}"
    );
    assert!(
        out.contains("roles.json"),
        "a warning about the role: {out}"
    );
    assert!(out.contains("saved"), "{out}");
    let users = std::fs::read_to_string(dir.path().join("data/users.json")).unwrap();
    assert!(users.contains("\"ann\""));
}

#[test]
fn user_list_remove_and_passwd() {
    let dir = tempfile::tempdir().unwrap();
    let out = sessiond(dir.path(), &["init"], &[]).output().unwrap();
    assert!(out.status.success());
    assert!(
        dir.path().join("sessiond.toml").exists() && dir.path().join("data/roles.json").exists()
    );
    crate::add_user(dir.path(), "ann", "ann-secret-pw", &["--role", "Medium"]);
    crate::add_user(dir.path(), "bob", "bob-secret-pw", &[]);
    let list = |cwd: &Path| {
        let out = sessiond(cwd, &["user", "list"], &[]).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = list(dir.path());
    assert!(
        listed.contains("ann\troles: Medium") && listed.contains("bob"),
        "{listed}"
    );
    let out = sessiond(
        dir.path(),
        &["user", "passwd", "ann"],
        &[("SESSIOND_USER_PASSWORD", "short")],
    )
    .output()
    .unwrap();
    assert!(!out.status.success(), "the rule holds");
    let out = sessiond(
        dir.path(),
        &["user", "passwd", "ann"],
        &[("SESSIOND_USER_PASSWORD", "new-secret-pw")],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    let login = |pw: &str| {
        reqwest::blocking::Client::new()
            .post(format!("{}/api/login", run.base))
            .json(&json!({"userName": "ann", "password": pw}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(login("ann-secret-pw"), 401);
    assert_eq!(login("new-secret-pw"), 200);
    let out = sessiond(dir.path(), &["user", "remove", "bob"], &[])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!list(dir.path()).contains("bob"));
    let out = sessiond(dir.path(), &["user", "remove", "bob"], &[])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no such user");
}

/// A remote call that fails still says goodbye: no postponed session is left behind.
#[test]
fn a_failed_remote_call_leaves_no_session() {
    let dir = tempfile::tempdir().unwrap();
    crate::add_user(dir.path(), "ann", "ann-secret-pw", &[]);
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    let url = format!("{}/remote", run.base.replace("http://", "ws://"));
    for function in ["no.such.function", "session.patch"] {
        let out = sessiond(
            dir.path(),
            &[
                "remote", "--url", &url, "--user", "ann", "call", function, "{}",
            ],
            &[("SESSIOND_REMOTE_PASSWORD", "ann-secret-pw")],
        )
        .output()
        .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        if function == "session.patch" {
            assert!(err.contains("not allowed for clients"), "{err}");
        }
    }
    let activity: Value = reqwest::blocking::Client::new()
        .get(format!("{}/service/v1/activity?kind=remote", run.base))
        .bearer_auth("k")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(activity["sessions"], json!([]), "{activity}");
}

/// `examples/python/backend.py`: a backend in another language drives the service
/// API with the standard library only (resolve a cookie, log in, a cart, an
/// optimistic write, an OTP).
#[test]
fn the_python_backend_example_runs_against_a_fresh_server() {
    let dir = tempfile::tempdir().unwrap();
    let key = "python-example-key";
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", key)]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/backend.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([run.base.as_str(), key, "ann"])
        .output()
        .expect("python3 (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "resolve",
            "login",
            "cart",
            "add",
            "stale write",
            "otp",
            "storage"
        ]
    );
    assert_eq!(steps[6]["answer"]["storage"], json!({"cart": {"items": 3}}));
}

/// A TLS service on loopback: Python's `ssl` module with a certificate for
/// 127.0.0.1 issued by a test CA (`openssl`). It answers every POST (the login
/// callout) with an accepting answer and every GET (a forwarded data request) with
/// its path and the session header the upstream receives.
struct TlsService {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl Drop for TlsService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TLS_SERVICE: &str = r#"
import http.server, json, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, value):
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.answer({"success": True, "statusText": "Welcome over TLS"})
    def do_GET(self):
        self.answer({"path": self.path, "session": self.headers.get("X-Session-Mobile-Id")})
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl TlsService {
    fn start(dir: &Path) -> Self {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl must be installed (scripts/test installs it)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=sessiond test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "1",
            "-extfile",
            "leaf.ext",
        ]);
        let mut child = Command::new("python3")
            .args(["-c", TLS_SERVICE, "leaf.pem", "leaf.key"])
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        Self {
            port: line.trim().parse().expect("the service prints its port"),
            child,
            ca: dir.join("ca.pem"),
        }
    }
}

#[test]
fn mobile_callout_and_upstream_over_https_trust_the_configured_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let service = TlsService::start(dir.path());
    let url = format!("https://127.0.0.1:{}", service.port);
    let settings = |ca: &str| {
        format!(
            "[mobile]\nlocalhost_accept = false\ncallout = \"{url}/auth\"\nupstream = \"{url}\"\n{ca}"
        )
    };
    let login = |base: &str| -> Value {
        reqwest::blocking::Client::new()
            .post(format!("{base}/mobileapp/$authenticate"))
            .header("content-type", "application/json")
            .body(IOS)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    // Trusting the test CA: the callout decides, and data requests reach the upstream.
    let ca = format!("tls_ca_file = {:?}\n", service.ca.display().to_string());
    std::fs::write(dir.path().join("sessiond.toml"), settings(&ca)).unwrap();
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    let v = login(&run.base);
    assert_eq!(v["statusText"], "Welcome over TLS", "{v}");
    let token = v["token"].as_str().expect("accepted").to_string();
    let data: Value = reqwest::blocking::Client::new()
        .get(format!("{}/mobileapp/Employee?$top=1", run.base))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(data["path"], "/mobileapp/Employee?$top=1", "{data}");
    assert_eq!(data["session"], v["id"], "{data}");
    drop(run);
    // Without it the certificate is not trusted: the callout fails closed.
    std::fs::write(dir.path().join("sessiond.toml"), settings("")).unwrap();
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let run = start(dir.path(), &[], &[("SESSIOND_API_KEY", "k")]);
    let v = login(&run.base);
    assert!(v.get("token").is_none(), "{v}");
    assert!(
        v["statusText"].as_str().unwrap().contains("unavailable"),
        "{v}"
    );
    drop(run);
    // A CA file that holds no certificate is refused at start.
    std::fs::write(dir.path().join("empty.pem"), "").unwrap();
    std::fs::write(
        dir.path().join("sessiond.toml"),
        settings("tls_ca_file = \"empty.pem\"\n"),
    )
    .unwrap();
    let out = sessiond(dir.path(), &["config", "check"], &[])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mobile.tls_ca_file"));
}
