//! 4D's remote clients and stored procedures served by your own program: the whole
//! `sessiond serve` router (`/remote`, `/api`, `/service/v1`, the console) with your
//! server-side functions. Run it with `cargo run -p sessiond-server --example remote`
//! (data in `./data`, users from `./data/users.json`: `sessiond user add`), then
//! `sessiond remote --user ann call addToCart '"apple"'`.

use std::sync::Arc;

use serde_json::{Value, json};
use sessiond_core::{Roles, SessionPolicy, SystemClock};
use sessiond_server::config::ServerConfig;
use sessiond_server::console::Console;
use sessiond_server::credentials::{AdminAuth, Credentials};
use sessiond_server::desktop::{CallError, DesktopConfig, DesktopSessions};
use sessiond_server::{AppState, Session};
use sessiond_store::{MemoryStore, Sessions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data = std::path::Path::new("data");
    let (credentials, api_key, generated) = Credentials::ensure(data, None, None)?;
    if let (Some(key), Some(password)) = (generated.api_key, generated.admin_password) {
        println!("service API key: {key}\nadmin password: {password}");
    }
    let sessions = Sessions::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Roles::default()),
        Arc::new(SystemClock),
        SessionPolicy::default(),
    )
    .with_guest_key(credentials.guest_key());
    let desktop = DesktopSessions::builder(sessions.clone(), DesktopConfig::default())
        // An "Execute on server" method: runs in the calling client's remote session.
        .function("addToCart", |item: Value| async move {
            let session = Session::current().expect("the caller's remote session");
            let count = session
                .update_storage(|storage| {
                    let cart = storage.entry("cart").or_insert_with(|| json!([]));
                    if let Some(items) = cart.as_array_mut() {
                        items.push(item.clone());
                    }
                    Ok(cart.as_array().map_or(0, Vec::len))
                })
                .await?;
            Ok::<_, CallError>(json!({"user": session.user_name(), "items": count}))
        })
        // A stored procedure: runs in the one stored-procedures session.
        .procedure("nightly", |_| async { Ok(Value::Null) })
        .on_open(|| async { Ok(()) }) // On Server Open Connection
        .build();
    let state = AppState {
        sessions,
        config: Arc::new(ServerConfig::new("MyApp")?),
        api_key,
        users_file: Some(data.join("users.json")),
        admin: Arc::new(AdminAuth::new(data)),
        console: Arc::new(Console::new(data)),
        passwords: Arc::default(),
        mobile: None,
        desktop,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8044").await?;
    println!("listening on http://127.0.0.1:8044 (remote clients: ws://127.0.0.1:8044/remote)");
    sessiond_server::run(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
