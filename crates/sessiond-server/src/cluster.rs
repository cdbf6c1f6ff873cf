//! Several nodes on one Redis: what is not in Redis itself — the mobile sessions
//! each node holds in memory from the shared `MobileApps` folder — follows changes
//! made on other nodes through Redis pub/sub. Pub/sub can miss messages while a
//! connection is down, so every (re)connection starts with a full reload (resync).
//!
//! Web sessions need none of this: they live in Redis, so a privilege change or a
//! drop on one node is what every node reads next.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sessiond_mobile::{MobileChange, MobileSessions};

/// The channel mobile changes go through.
pub const CHANNEL: &str = "sessiond:mobile";

#[derive(serde::Serialize, serde::Deserialize)]
struct Message {
    node: String,
    #[serde(flatten)]
    change: MobileChange,
}

/// Publishes this node's mobile changes and applies the other nodes' ones, until
/// the returned tasks are aborted. `node` names this node (its own messages are
/// ignored).
pub fn spawn_mobile_sync(
    redis_url: &str,
    node: String,
    mobile: Arc<MobileSessions>,
) -> Result<[tokio::task::JoinHandle<()>; 2], redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let publisher = {
        let (client, node, mut changes) = (client.clone(), node.clone(), mobile.changes());
        tokio::spawn(async move {
            let mut conn: Option<redis::aio::MultiplexedConnection> = None;
            loop {
                let change = match changes.recv().await {
                    Ok(c) => c,
                    // Missed local changes: tell the others to reload everything.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        MobileChange::Refresh
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let payload = serde_json::to_string(&Message {
                    node: node.clone(),
                    change,
                })
                .expect("serializable");
                if conn.is_none() {
                    conn = client.get_multiplexed_async_connection().await.ok();
                }
                let sent = match conn.as_mut() {
                    Some(c) => redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(&payload)
                        .query_async::<i64>(c)
                        .await
                        .is_ok(),
                    None => false,
                };
                if !sent {
                    // The others resync when their own connection comes back.
                    conn = None;
                    tracing::warn!("cannot publish a mobile change to Redis");
                }
            }
        })
    };
    let subscriber = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match client.get_async_pubsub().await {
                Ok(mut pubsub) => {
                    if pubsub.subscribe(CHANNEL).await.is_ok() {
                        backoff = Duration::from_millis(100);
                        if let Err(e) = mobile.reload_all().await {
                            tracing::warn!(error = %e, "mobile resync failed");
                        }
                        let mut stream = pubsub.on_message();
                        while let Some(msg) = stream.next().await {
                            let Ok(payload) = msg.get_payload::<String>() else {
                                continue;
                            };
                            let Ok(m) = serde_json::from_str::<Message>(&payload) else {
                                continue;
                            };
                            if m.node == node {
                                continue;
                            }
                            let result = match m.change {
                                MobileChange::Session { folder, id } => {
                                    mobile.reload(&folder, &id).await
                                }
                                MobileChange::Refresh => mobile.reload_all().await.map(|_| ()),
                            };
                            if let Err(e) = result {
                                tracing::warn!(error = %e, "applying a mobile change from another node failed");
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "Redis pub/sub unavailable; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    Ok([publisher, subscriber])
}
