//! The README's quick start, run as written — in order, in one shell, in a fresh
//! folder — against the `sessiond` built for the tests; every answer is checked
//! against what the README shows under the command (`…` matches anything). The only
//! changes: `cargo install` is skipped (the built binary is put first on `PATH`) and the
//! server listens on a free port instead of 8044.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use serde_json::Value;

const README: &str = include_str!("../../../../README.md");
const EMBED_EXAMPLE: &str = include_str!("../../../sessiond/examples/embed.rs");

/// A shell block of the quick start and the block of output shown under it.
#[derive(Debug)]
struct Step {
    code: String,
    expected: Option<(String, String)>,
}

/// The fenced blocks between the quick start's markers: (language, body).
fn blocks() -> Vec<(String, String)> {
    let start = README
        .find("<!-- quickstart:start -->")
        .expect("quick start markers");
    let end = README.find("<!-- quickstart:end -->").expect("end marker");
    let mut out = Vec::new();
    let mut lines = README[start..end].lines();
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            out.push((lang.to_string(), body.join("\n")));
        }
    }
    out
}

fn steps() -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (lang, body) in blocks() {
        if lang == "sh" {
            steps.push(Step {
                code: body,
                expected: None,
            });
        } else {
            let last = steps.last_mut().expect("an output follows a command");
            last.expected = Some((lang, body));
        }
    }
    steps
}

/// Whether `actual` matches `pattern`, where `…` stands for any text.
fn matches_text(pattern: &str, actual: &str) -> bool {
    let mut parts = pattern.split('…');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// JSON equality where the string `"…"` matches any value.
fn matches_json(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "…" => true,
        (Value::Object(e), Value::Object(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| matches_json(v, av)))
        }
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| matches_json(x, y))
        }
        (e, a) => e == a,
    }
}

/// One bash process that runs the steps one after the other (so that variables
/// carry over, as in the reader's terminal).
struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Shell {
    fn start(cwd: &std::path::Path, path: &str, addr: &str) -> Self {
        let mut child = Command::new("bash")
            .arg("-o")
            .arg("pipefail")
            .current_dir(cwd)
            .env("PATH", path)
            // Where the CLI's defaults point (127.0.0.1:8044 in the README).
            .env("SESSIOND_REMOTE_URL", format!("ws://{addr}/remote"))
            .env("SESSIOND_SERVER", format!("http://{addr}"))
            .env_remove("SESSIOND_API_KEY")
            .env_remove("SESSIOND_ADMIN_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("bash");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Runs `code`; its standard output and exit status.
    fn run(&mut self, code: &str) -> (String, i32) {
        writeln!(self.stdin, "{code}\necho \"@@done $?\"").unwrap();
        let mut out = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the shell ended"
            );
            // Output without a final newline runs into the marker.
            if let Some((before, status)) = line.trim_end().split_once("@@done ") {
                out.push_str(before);
                if !before.is_empty() {
                    out.push('\n');
                }
                return (out, status.parse().unwrap());
            }
            out.push_str(&line);
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn readme_embeds_the_compiled_example_verbatim() {
    assert!(
        README.contains(EMBED_EXAMPLE.trim_end()),
        "README's Rust example differs from crates/sessiond/examples/embed.rs"
    );
}

#[test]
fn readme_quick_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let bin_dir = std::path::Path::new(crate::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Shell::start(dir.path(), &path, &addr);
    let mut server: Option<crate::Running> = None;
    let steps = steps();
    assert!(steps.len() >= 10, "{steps:?}");
    for step in &steps {
        let code: String = step
            .code
            .lines()
            .filter(|l| !l.starts_with("cargo install"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("127.0.0.1:8044", &addr);
        let expected = step
            .expected
            .as_ref()
            .map(|(lang, body)| (lang.as_str(), body.replace("127.0.0.1:8044", &addr)));
        let output = if code.lines().any(|l| l.trim() == "sessiond serve") {
            let env: Vec<(String, String)> = code
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .flat_map(|l| l.split_whitespace())
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let run = crate::start(dir.path(), &["--listen", &addr], &env);
            let listening = format!("sessiond listening on {}", run.base);
            let printed = run
                .printed
                .iter()
                .chain([&listening])
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("\n");
            server = Some(run);
            printed
        } else {
            let (out, status) = shell.run(&code);
            assert_eq!(status, 0, "`{code}` failed: {out}");
            out
        };
        match expected {
            Some(("json", body)) => {
                let want: Value = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("README JSON after `{code}`: {e}"));
                let got: Value = serde_json::from_str(output.trim())
                    .unwrap_or_else(|e| panic!("`{code}` printed {output:?}: {e}"));
                assert!(
                    matches_json(&want, &got),
                    "`{code}`:\nREADME shows {want}\nit printed {got}"
                );
            }
            Some((_, body)) => {
                let want: Vec<&str> = body.lines().collect();
                let got: Vec<&str> = output.lines().collect();
                assert!(
                    want.len() == got.len()
                        && want.iter().zip(&got).all(|(w, g)| matches_text(w, g)),
                    "`{code}`:\nREADME shows\n{body}\nit printed\n{output}"
                );
            }
            None => {}
        }
    }
    drop(server);
}

#[test]
fn wildcards() {
    assert!(matches_text("a…c", "abbbc"));
    assert!(matches_text("…", "x"));
    assert!(!matches_text("a…c", "abbb"));
    assert!(matches_text("abc", "abc"));
    assert!(matches_json(
        &serde_json::json!({"id": "…", "n": 1}),
        &serde_json::json!({"id": "X", "n": 1})
    ));
    assert!(!matches_json(
        &serde_json::json!({"id": "…"}),
        &serde_json::json!({"id": "X", "extra": 1})
    ));
}
