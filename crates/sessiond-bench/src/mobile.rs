//! The mobile group: the `sessiond-mobile` stack (the real `sessiond serve` router
//! with mobile apps enabled) and M3, the refresh of many session files.
//!
//! The stack is built by `Server::builder`, like `sessiond serve` and the server's
//! tests: sessions on a `MemoryStore`, `credentials.json` (API key `k`), mobile
//! sessions under `<temp>/MobileApps` with random ids, the accept-all
//! [`Policy::default`] as the login hook and no upstream (so authorized requests other
//! than `$licensecheck`, `$logout`, `$userInfo` answer 404). Every accepted login
//! writes its session file and its sidecar, each with an fsync of the file and of the
//! folder (`sessiond_store::fs::atomic_write`); logins are serialized by the module.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use serde_json::{Map, Value, json};
use sessiond_mobile::{
    AuthAnswer, IdMode, MobileConfig, MobileSessions, Policy, SessionFile, token,
};
use sessiond_server::config::ServerConfig;
use sessiond_server::settings::Settings;
use sessiond_server::{Server, ServerBuilder};
use sessiond_store::Sessions;

use crate::Stack;
use crate::server::DataDir;
use crate::sys;

/// The app every benchmark login belongs to (folder `TEAM123456.com.example.app`).
pub(crate) const APP_ID: &str = "com.example.app";
/// Its team.
pub(crate) const TEAM_ID: &str = "TEAM123456";

fn sessions(config: &ServerConfig) -> Sessions {
    Sessions::new(
        Arc::new(sessiond_store::MemoryStore::new()),
        Arc::new(sessiond_core::Roles::default()),
        Arc::new(sessiond_core::SystemClock),
        config.policy.clone(),
    )
}

fn mobile_config(data: &Path) -> MobileConfig {
    // One load generator on loopback makes every login: no per-address limit.
    let limits = sessiond_mobile::MobileLimits {
        new_devices_per_minute: u32::MAX,
        max_sessions_per_app: usize::MAX,
        ..sessiond_mobile::MobileLimits::default()
    };
    MobileConfig {
        limits,
        ids: IdMode::Random,
        localhost_accept: false,
        ..MobileConfig::new(data.join("MobileApps"))
    }
}

/// A `sessiond serve` node over a `MemoryStore`, its files under `data` (API key
/// `k`), with `toml` (`sessiond.toml` lines) over the defaults.
pub(crate) fn node(data: &Path, toml: &str) -> anyhow::Result<ServerBuilder> {
    let text = format!(
        "store = \"memory\"\nlisten = \"127.0.0.1:0\"\napp_name = \"Bench\"\ndata = {:?}\n{toml}",
        data.display().to_string()
    );
    let config = Settings::parse(&text)?.validate()?;
    Ok(Server::builder(config).secrets(Some("k".into()), Some("admin-pw".into())))
}

/// The router of a built node, with its reaper started (needs the runtime); the
/// stacks serve it with `axum::serve` like every other stack.
pub(crate) async fn router(node: ServerBuilder) -> anyhow::Result<Router> {
    let node = node.build().await?;
    let state = node.state();
    state.sessions.spawn_reaper(state.config.reaper_interval);
    Ok(node.router())
}

/// Accepts every login, after hanging 1.5 s for devices named `HANG-…`.
struct HangingHook;

#[async_trait::async_trait]
impl sessiond_mobile::AuthHook for HangingHook {
    async fn authenticate(&self, info: &Value) -> sessiond_mobile::HookResult {
        if info["device"]["id"]
            .as_str()
            .is_some_and(|d| d.starts_with("HANG-"))
        {
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        }
        sessiond_mobile::HookResult::accept("")
    }
}

/// The `sessiond serve` router with mobile apps, its files under `data`. Starts the
/// reaper (needs the runtime). With `hang`, the hook hangs for `HANG-…` devices and 4
/// such logins are kept in flight.
pub(crate) async fn app_router(data: &Path, hang: bool) -> anyhow::Result<Router> {
    let hook: Arc<dyn sessiond_mobile::AuthHook> = if hang {
        Arc::new(HangingHook)
    } else {
        Arc::new(Policy::default())
    };
    // One load generator on loopback makes every login: the highest per-address
    // limits the settings allow.
    let node = node(
        data,
        "[mobile]\nnew_devices_per_minute = 1000000\nmax_sessions_per_app = 100000000\n",
    )?
    .login_hook(hook.clone())
    .build()
    .await?;
    let state = node.state();
    state.sessions.spawn_reaper(state.config.reaper_interval);
    let mobile = state
        .mobile
        .as_ref()
        .context("mobile apps are on")?
        .sessions
        .clone();
    if hang {
        for worker in 0..4 {
            let (mobile, hook) = (mobile.clone(), hook.clone());
            tokio::spawn(async move {
                for n in 0u64.. {
                    let body = login_body(&format!("HANG-{worker}-{n}"));
                    let _ = mobile.authenticate(&body, None, hook.as_ref()).await;
                }
            });
        }
    }
    Ok(node.router())
}

/// What `--refresh-files` prints (one JSON line).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct RefreshResult {
    /// Session files (each with its sidecar `<id>.sessiond.json`).
    pub files: u64,
    /// Of which made by `MobileSessions::authenticate` (durable writes).
    pub via_login: u64,
    /// Seconds those logins took (in process, no HTTP).
    pub login_secs: f64,
    /// The rest, written directly in the same format (no fsync), seconds.
    pub write_secs: f64,
    /// Mean size of a session file, bytes.
    pub file_bytes: f64,
    /// Mean size of a sidecar, bytes.
    pub sidecar_bytes: f64,
    /// `refresh()` on a fresh `MobileSessions` (every file new: "loaded"), ms, per rep.
    pub load_ms: Vec<f64>,
    /// Process CPU time during each of those, ms.
    pub load_cpu_ms: Vec<f64>,
    /// `refresh()` again on the loaded instance (every file "unchanged"), ms, per rep.
    pub again_ms: Vec<f64>,
    /// Process CPU time during each of those, ms.
    pub again_cpu_ms: Vec<f64>,
    /// Files whose metadata each of those took (0 when the folders are watched).
    #[serde(default)]
    pub again_examined: Vec<usize>,
    /// The same second refresh with the folders not watched (`watch = false`: one
    /// `stat` per file), on an instance loaded the same way, ms, per rep.
    #[serde(default)]
    pub unwatched_ms: Vec<f64>,
    /// The floor, per rep right after the refresh above: listing the same folders and
    /// taking the metadata of each session file (`read_dir` + `DirEntry::metadata`,
    /// nothing else), ms.
    #[serde(default)]
    pub stat_floor_ms: Vec<f64>,
    /// Sessions reported loaded by the first refresh of each rep.
    pub loaded: Vec<usize>,
    /// Sessions reported unchanged by the second refresh of each rep.
    pub unchanged: Vec<usize>,
    /// Of those, the files the second refresh did not read (same size, times, inode).
    pub skipped: Vec<usize>,
    /// Files reported unusable (must be 0).
    pub errors: usize,
    /// RSS growth of the first load of the first rep, bytes per session.
    pub rss_bytes_per_session: f64,
    /// Whether a token of a directly written file and one of a login both authorize
    /// after the refresh.
    pub tokens_authorize: bool,
}

fn login_body(device: &str) -> Value {
    json!({
        "email": "",
        "application": {"id": APP_ID, "name": "App"},
        "team": {"id": TEAM_ID},
        "device": {"id": device, "description": "iPhone", "os": "iOS"},
    })
}

/// The file content `MobileSessions::authenticate` writes for `login_body(device)`
/// from 127.0.0.1, accepted, with session `id`.
fn file_json(device: &str, id: &str) -> Map<String, Value> {
    let Value::Object(mut m) = login_body(device) else {
        unreachable!("an object")
    };
    m.insert("session".into(), json!({"id": id, "ip": "127.0.0.1"}));
    m.insert("status".into(), "accepted".into());
    m.insert("token".into(), token::encode(APP_ID, id, TEAM_ID).into());
    m
}

fn key_shape(v: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Value::Object(m) = v {
        for (k, v) in m {
            keys.push(k.clone());
            keys.extend(key_shape(v).into_iter().map(|s| format!("{k}.{s}")));
        }
    }
    keys.sort();
    keys
}

/// Writes session files `range` (and their sidecars, `sidecar` with a new web
/// session id) into `folder` as a login would, without fsync. Returns the bytes
/// written (files, sidecars) and the first file's token.
fn write_files(
    folder: &Path,
    range: std::ops::Range<u64>,
    sidecar: &Map<String, Value>,
) -> anyhow::Result<(u64, u64, Option<String>)> {
    let (mut file_bytes, mut sidecar_bytes) = (0_u64, 0_u64);
    let mut first_token = None;
    for i in range {
        let id = token::random_session_id();
        let file = SessionFile::from_json(file_json(&format!("FILE-{i:012}"), &id))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let bytes = file.to_bytes();
        let mut side = sidecar.clone();
        side.insert(
            "webSession".into(),
            serde_json::to_value(sessiond_core::SessionId::random())?,
        );
        let side = serde_json::to_vec_pretty(&side)?;
        std::fs::write(folder.join(&id), &bytes)?;
        std::fs::write(folder.join(format!("{id}.sessiond.json")), &side)?;
        file_bytes += bytes.len() as u64;
        sidecar_bytes += side.len() as u64;
        first_token.get_or_insert(file.token);
    }
    Ok((file_bytes, sidecar_bytes, first_token))
}

/// M3: writes `n` session files under a temporary `MobileApps` (the first up to 100
/// through `MobileSessions::authenticate`, the rest directly in the same format),
/// then `reps` times: a fresh `MobileSessions` + `refresh()` (all loaded), and a
/// second `refresh()` (all unchanged). Prints [`RefreshResult`] as one JSON line.
pub(crate) fn refresh_bench(stack: Stack, n: u64, reps: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        stack == Stack::SessiondMobile,
        "--refresh-files takes --stack sessiond-mobile"
    );
    anyhow::ensure!(
        n > 0 && reps > 0,
        "--refresh-files and --refresh-reps must be positive"
    );
    let dir = DataDir::create("refresh")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(refresh_run(dir.path(), n, reps))?;
    drop(rt);
    eprintln!("M3: removing {} files", 2 * n);
    drop(dir);
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// `n` logins of new devices through `MobileSessions::authenticate` (durable
/// writes); the last one's session id and token.
async fn logins(data: &Path, config: &ServerConfig, n: u64) -> anyhow::Result<(String, String)> {
    let hook = Policy::default();
    let peer = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let m = MobileSessions::new(mobile_config(data), sessions(config));
    let mut last = (String::new(), String::new());
    for i in 0..n {
        let body = login_body(&format!("LOGIN-{i:012}"));
        match m.authenticate(&body, peer, &hook).await? {
            AuthAnswer::Accepted { id, token, .. } => last = (id, token),
            other => anyhow::bail!("login {i} was not accepted: {other:?}"),
        }
    }
    Ok(last)
}

async fn refresh_run(data: &Path, n: u64, reps: usize) -> anyhow::Result<RefreshResult> {
    let config = ServerConfig::new("Bench").map_err(anyhow::Error::msg)?;
    let folder = data
        .join("MobileApps")
        .join(sessiond_mobile::file::folder_name(TEAM_ID, APP_ID));

    // Real logins first: they show the exact file and sidecar format.
    let via_login = n.min(100);
    let start = Instant::now();
    let (login_id, login_token) = logins(data, &config, via_login).await?;
    let login_secs = start.elapsed().as_secs_f64();
    let real_file: Value = serde_json::from_slice(&std::fs::read(folder.join(&login_id))?)?;
    let sidecar: Map<String, Value> = serde_json::from_slice(&std::fs::read(
        folder.join(format!("{login_id}.sessiond.json")),
    )?)
    .context("reading a sidecar")?;
    anyhow::ensure!(
        sidecar.contains_key("webSession"),
        "a login's sidecar has no webSession: {sidecar:?}"
    );
    let probe = Value::Object(file_json("LOGIN-000000000000", &login_id));
    anyhow::ensure!(
        key_shape(&probe) == key_shape(&real_file),
        "the written format differs from a login's file: {probe} vs {real_file}"
    );

    // The rest: the same content, written without fsync (setup, not measured).
    eprintln!("M3: writing {} session files", n - via_login);
    let start = Instant::now();
    let (file_bytes, sidecar_bytes, direct_token) = write_files(&folder, via_login..n, &sidecar)?;
    let write_secs = start.elapsed().as_secs_f64();
    let written = (n - via_login).max(1);
    // A refresh reads again every file written in the last 2 s (a coarse file-system
    // clock could hide a second write): measure the steady state of files at rest.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;

    let ticks = sys::clock_ticks_per_sec().0 as f64;
    let me = std::process::id();
    let cpu_ms = |t0: u64| (sys::cpu_ticks(me).unwrap_or(0) - t0) as f64 * 1000.0 / ticks;
    let mut r = RefreshResult {
        files: n,
        via_login,
        login_secs,
        write_secs,
        file_bytes: file_bytes as f64 / written as f64,
        sidecar_bytes: sidecar_bytes as f64 / written as f64,
        ..RefreshResult::default()
    };
    for rep in 0..reps {
        eprintln!("M3: refresh rep {}/{reps}", rep + 1);
        let m = MobileSessions::new(mobile_config(data), sessions(&config));
        let rss0 = sys::rss_bytes()?;
        let cpu0 = sys::cpu_ticks(me).unwrap_or(0);
        let t0 = Instant::now();
        let report = m.refresh().await?;
        r.load_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        r.load_cpu_ms.push(cpu_ms(cpu0));
        if rep == 0 {
            let rss1 = sys::rss_bytes()?;
            r.rss_bytes_per_session = (rss1 as f64 - rss0 as f64) / n as f64;
        }
        r.loaded.push(report.loaded);
        r.errors += report.errors.len();
        if let Some(e) = report.errors.first() {
            eprintln!(
                "M3: {} unusable files, e.g. {}: {}",
                report.errors.len(),
                e.file,
                e.message
            );
        }
        let cpu0 = sys::cpu_ticks(me).unwrap_or(0);
        let t0 = Instant::now();
        let again = m.refresh().await?;
        r.again_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        r.again_cpu_ms.push(cpu_ms(cpu0));
        r.again_examined.push(again.examined);
        let t0 = Instant::now();
        let stats = stat_every_file(&data.join("MobileApps"))?;
        r.stat_floor_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(stats == n, "the floor saw {stats} of {n} files");
        r.unchanged.push(again.unchanged);
        r.skipped.push(again.skipped);
        r.errors += again.errors.len();
        if rep + 1 == reps {
            let mut ok = m.authorize(&login_token).await?.is_some();
            if let Some(t) = &direct_token {
                ok &= m.authorize(t).await?.is_some();
            }
            r.tokens_authorize = ok;
        }
        drop(m);
        r.unwatched_ms
            .push(unwatched_again_ms(data, &config, n).await?);
    }
    Ok(r)
}

/// The second refresh of an instance loaded with `watch = false`, ms.
async fn unwatched_again_ms(data: &Path, config: &ServerConfig, n: u64) -> anyhow::Result<f64> {
    let unwatched = MobileConfig {
        watch: false,
        ..mobile_config(data)
    };
    let m = MobileSessions::new(unwatched, sessions(config));
    m.refresh().await?;
    let t0 = Instant::now();
    let again = m.refresh().await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        again.examined as u64 == n && again.skipped as u64 == n,
        "unwatched, the second refresh looked at {} and skipped {} of {n} files",
        again.examined,
        again.skipped
    );
    Ok(ms)
}

/// The least a refresh that checks every file must do: list each app folder and take
/// each session file's metadata. Returns the number of files.
fn stat_every_file(root: &Path) -> anyhow::Result<u64> {
    let mut files = 0;
    for dir in std::fs::read_dir(root)? {
        for file in std::fs::read_dir(dir?.path())? {
            let file = file?;
            if sessiond_mobile::file::is_session_file_name(&file.file_name().to_string_lossy()) {
                std::hint::black_box(file.metadata()?);
                files += 1;
            }
        }
    }
    Ok(files)
}
