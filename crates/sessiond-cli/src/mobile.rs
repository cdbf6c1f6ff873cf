//! `sessiond mobile …`: the admin API of a running server from the command line.

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::cli::{MobileCommand, SessionRef};

struct Admin {
    server: String,
    password: String,
    http: reqwest::blocking::Client,
}

impl Admin {
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!(
            "{}/admin/api/mobile{path}",
            self.server.trim_end_matches('/')
        );
        let mut req = self.http.request(method, &url).bearer_auth(&self.password);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status}: {}",
                body["message"].as_str().unwrap_or("request failed")
            );
        }
        Ok(body)
    }
}

fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Runs one `sessiond mobile` command.
pub fn run(server: String, password: String, command: MobileCommand) -> anyhow::Result<()> {
    let admin = Admin {
        server,
        password,
        http: reqwest::blocking::Client::new(),
    };
    match command {
        MobileCommand::Apps => {
            let v = admin.call(Method::GET, "/apps", None)?;
            println!("{:<50} {:>8} {:>8}", "APP", "SESSIONS", "PENDING");
            for app in v["apps"].as_array().into_iter().flatten() {
                println!(
                    "{:<50} {:>8} {:>8}",
                    app["label"].as_str().unwrap_or(""),
                    app["sessions"].as_u64().unwrap_or(0),
                    app["pending"].as_u64().unwrap_or(0)
                );
            }
        }
        MobileCommand::Sessions { folder } => {
            let v = admin.call(
                Method::GET,
                &format!("/apps/{}/sessions", segment(&folder)),
                None,
            )?;
            println!(
                "{:<42} {:<9} {:<20} {:<16} {:<30} IP",
                "ID", "STATUS", "DEVICE", "OS", "E-MAIL"
            );
            for s in v["sessions"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or("").to_string();
                println!(
                    "{:<42} {:<9} {:<20} {:<16} {:<30} {}",
                    text("id"),
                    text("status"),
                    text("device"),
                    text("os"),
                    text("email"),
                    text("ip")
                );
            }
        }
        MobileCommand::Accept(r) => change_status(&admin, &r, "accepted")?,
        MobileCommand::Pend(r) => change_status(&admin, &r, "pending")?,
        MobileCommand::Delete(r) => {
            let v = admin.call(
                Method::DELETE,
                &format!("{}{}", path(&r), apply(r.push)),
                None,
            )?;
            report_push(&v, "deleted");
        }
        MobileCommand::Show { folder, id } => {
            let v = admin.call(
                Method::GET,
                &format!("/apps/{}/sessions/{}", segment(&folder), segment(&id)),
                None,
            )?;
            println!("{}", v["path"].as_str().unwrap_or(""));
            println!("{}", serde_json::to_string_pretty(&v["json"])?);
        }
        MobileCommand::Push => {
            let v = admin.call(Method::POST, "/push", None)?;
            print_refresh(&v);
        }
    }
    Ok(())
}

fn path(r: &SessionRef) -> String {
    format!("/apps/{}/sessions/{}", segment(&r.folder), segment(&r.id))
}

fn apply(push: bool) -> &'static str {
    if push { "?apply=true" } else { "" }
}

fn change_status(admin: &Admin, r: &SessionRef, status: &str) -> anyhow::Result<()> {
    let v = admin.call(
        Method::PUT,
        &format!("{}/status{}", path(r), apply(r.push)),
        Some(json!({"status": status})),
    )?;
    report_push(&v, status);
    Ok(())
}

fn report_push(v: &Value, what: &str) {
    if v["pushNeeded"] == true {
        println!(
            "{what}; the file is written — run `sessiond mobile push` to apply it to the running server"
        );
    } else {
        println!("{what} and applied");
        print_refresh(&v["push"]);
    }
}

fn print_refresh(v: &Value) {
    println!(
        "loaded {}, updated {}, unchanged {} ({} not read), evicted {}",
        v["loaded"], v["updated"], v["unchanged"], v["skipped"], v["evicted"]
    );
    for e in v["errors"].as_array().into_iter().flatten() {
        println!(
            "  mobi {}: {}: {}",
            e["code"],
            e["file"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
}
