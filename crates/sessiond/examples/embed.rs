//! 4D sessions in an axum app: `SessionLayer` on the router, the `Session` extractor.
//! Run it with `cargo run -p sessiond --example embed`, then
//! `curl -c jar -b jar http://127.0.0.1:3000/hello`.

use std::sync::Arc;

use axum::{Router, routing::get};
use sessiond::{
    CookieConfig, MemoryStore, Roles, Session, SessionLayer, SessionPolicy, Sessions, SystemClock,
};

async fn hello(session: Session) -> String {
    // Use(Session.storage) … End use: atomic, never loses a concurrent write.
    let visits = session
        .update_storage(|storage| {
            let n = storage
                .get("n")
                .and_then(serde_json::value::Value::as_i64)
                .unwrap_or(0)
                + 1;
            storage.insert("n".into(), n.into());
            Ok(n)
        })
        .await;
    match visits {
        Ok(n) => format!("session {} visit {n}\n", session.id()),
        Err(e) => format!("no storage: {e}\n"),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // roles.json has 4D's schema; without one, only the built-in WebAdmin exists.
    let roles = if std::path::Path::new("roles.json").exists() {
        Roles::load("roles.json".as_ref())?
    } else {
        Roles::default()
    };
    let sessions = Sessions::new(
        Arc::new(MemoryStore::new()),
        Arc::new(roles),
        Arc::new(SystemClock),
        SessionPolicy::default(),
    );
    sessions.spawn_reaper(std::time::Duration::from_secs(1));
    let app: Router = Router::new()
        .route("/hello", get(hello))
        .layer(SessionLayer::new(sessions, CookieConfig::for_app("MyApp")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
