//! 4D's remote clients and stored procedures served by your own program: the whole
//! `sessiond serve` router (`/remote`, `/api`, `/service/v1`, the console) with your
//! server-side functions. Run it with `cargo run -p sessiond-server --example remote`
//! (data in `./data`, users from `./data/users.json`: `sessiond user add`), then
//! `sessiond remote --user ann call addToCart '"apple"'`.

use serde_json::{Value, json};
use sessiond_server::desktop::CallError;
use sessiond_server::settings::Settings;
use sessiond_server::{Server, Session};

/// An "Execute on server" method: runs in the calling client's remote session.
async fn add_to_cart(item: Value) -> Result<Value, CallError> {
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
    Ok(json!({"user": session.user_name(), "items": count}))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The settings `sessiond serve` would read from sessiond.toml.
    let config = Settings::parse(
        r#"
        app_name = "MyApp"
        data = "data"
        store = "memory"
        "#,
    )?
    .validate()?;
    let server = Server::builder(config)
        .without_mobile()
        .functions(|desktop| {
            desktop
                .function("addToCart", add_to_cart)
                // A stored procedure: runs in the one stored-procedures session.
                .procedure("nightly", |_| async { Ok(Value::Null) })
                .on_open(|| async { Ok(()) }) // On Server Open Connection
        })
        .build()
        .await?;
    let generated = server.generated();
    if let (Some(key), Some(password)) = (&generated.api_key, &generated.admin_password) {
        println!("service API key: {key}\nadmin password: {password}");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8044").await?;
    println!("listening on http://127.0.0.1:8044 (remote clients: ws://127.0.0.1:8044/remote)");
    server
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
