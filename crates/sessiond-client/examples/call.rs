//! A remote client calling a server-side function, like a 4D remote client running
//! an "Execute on server" method: start the server example
//! (`cargo run -p sessiond-server --example remote`, users from `sessiond user add`),
//! then `SESSIOND_REMOTE_PASSWORD=… cargo run -p sessiond-client --example call -- ann apple`.

use sessiond_client::{ClientConfig, RemoteClient};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let user = args.next().unwrap_or_else(|| "ann".into());
    let item = args.next().unwrap_or_else(|| "apple".into());
    let password = std::env::var("SESSIOND_REMOTE_PASSWORD")?;
    let url = std::env::var("SESSIOND_REMOTE_URL")
        .unwrap_or_else(|_| "ws://127.0.0.1:8044/remote".into());
    // One remote session per connection; its id and info come with the welcome.
    let client = RemoteClient::connect(ClientConfig::new(&url, &user, &password)).await?;
    println!(
        "remote session {} ({})",
        client.id(),
        client.info()["userName"]
    );
    // Runs `addToCart` on the server in this session: `Session.storage` is shared
    // with every other call of this session.
    let answer = client.call("addToCart", serde_json::json!(item)).await?;
    println!("{answer}");
    client.goodbye().await?;
    Ok(())
}
