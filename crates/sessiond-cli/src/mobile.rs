//! `sessiond mobile …`: the admin API of a running server from the command line,
//! read through the server's own answer types ([`sessiond_server::contract`]).

use anyhow::{Context, bail};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sessiond_server::ErrorBody;
use sessiond_server::contract::{
    MobileAppList, MobileEdit, MobileFile, MobileSessionList, RefreshReport,
};

use crate::cli::{MobileCommand, SessionRef};

struct Admin {
    server: String,
    password: String,
    http: reqwest::blocking::Client,
}

impl Admin {
    fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<T> {
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
        if !status.is_success() {
            let error: Option<ErrorBody> = resp.json().ok();
            bail!(
                "{status}: {}",
                error.map_or_else(|| "request failed".into(), |e| e.message)
            );
        }
        resp.json()
            .with_context(|| format!("{url} answered something else than expected"))
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
            let list: MobileAppList = admin.call(Method::GET, "/apps", None)?;
            println!("{:<50} {:>8} {:>8}", "APP", "SESSIONS", "PENDING");
            for app in list.apps {
                println!("{:<50} {:>8} {:>8}", app.label, app.sessions, app.pending);
            }
        }
        MobileCommand::Sessions { folder } => {
            let list: MobileSessionList = admin.call(
                Method::GET,
                &format!("/apps/{}/sessions", segment(&folder)),
                None,
            )?;
            println!(
                "{:<42} {:<9} {:<20} {:<16} {:<30} IP",
                "ID", "STATUS", "DEVICE", "OS", "E-MAIL"
            );
            for s in list.sessions {
                println!(
                    "{:<42} {:<9} {:<20} {:<16} {:<30} {}",
                    s.id,
                    s.status.as_str(),
                    s.device,
                    s.os,
                    s.email,
                    s.ip
                );
            }
        }
        MobileCommand::Accept(r) => change_status(&admin, &r, "accepted")?,
        MobileCommand::Pend(r) => change_status(&admin, &r, "pending")?,
        MobileCommand::Delete(r) => {
            let edit: MobileEdit = admin.call(
                Method::DELETE,
                &format!("{}{}", path(&r), apply(r.push)),
                None,
            )?;
            report_push(&edit, "deleted");
        }
        MobileCommand::Show { folder, id } => {
            let file: MobileFile = admin.call(
                Method::GET,
                &format!("/apps/{}/sessions/{}", segment(&folder), segment(&id)),
                None,
            )?;
            println!("{}", file.path);
            println!("{}", serde_json::to_string_pretty(&file.json)?);
        }
        MobileCommand::Push => {
            let report: RefreshReport = admin.call(Method::POST, "/push", None)?;
            print_refresh(&report);
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
    let edit: MobileEdit = admin.call(
        Method::PUT,
        &format!("{}/status{}", path(r), apply(r.push)),
        Some(json!({"status": status})),
    )?;
    report_push(&edit, status);
    Ok(())
}

fn report_push(edit: &MobileEdit, what: &str) {
    match &edit.push {
        Some(report) if !edit.push_needed => {
            println!("{what} and applied");
            print_refresh(report);
        }
        _ => println!(
            "{what}; the file is written — run `sessiond mobile push` to apply it to the running server"
        ),
    }
}

fn print_refresh(r: &RefreshReport) {
    println!(
        "loaded {}, updated {}, unchanged {} ({} not read), evicted {}; {} files looked at",
        r.loaded, r.updated, r.unchanged, r.skipped, r.evicted, r.examined
    );
    for e in &r.errors {
        println!("  mobi {}: {}: {}", e.code, e.file, e.message);
    }
}
