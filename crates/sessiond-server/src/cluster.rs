//! Several nodes on one Redis: what is not in Redis itself follows changes made on
//! other nodes through Redis pub/sub (channel [`CHANNEL`]):
//! - the mobile sessions each node holds in memory from the shared `MobileApps`
//!   folder (pub/sub can miss messages while a connection is down, so every
//!   (re)connection starts with a full reload);
//! - drops of remote sessions: a remote client is connected to one node, so a drop
//!   made on another node is passed on to it, which tells its client and runs the
//!   close hook.
//!
//! Web sessions need none of this: they live in Redis, so a privilege change or a
//! drop on one node is what every node reads next.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sessiond_core::SessionId;
use sessiond_mobile::{MobileChange, MobileSessions};
use sessiond_store::RedisStore;
use tokio::sync::broadcast;

use crate::desktop::DesktopSessions;

/// The channel of the nodes' messages.
pub const CHANNEL: &str = "sessiond:cluster";

/// What one node tells the others.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
enum Event {
    /// A mobile session file changed (or all of them: `Refresh`).
    Mobile(MobileChange),
    /// A remote session was dropped; the node its client is connected to closes it.
    RemoteDropped(SessionId),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Message {
    node: String,
    event: Event,
}

/// Publishes this node's mobile changes and remote drops, and applies the other
/// nodes' ones, until the returned tasks are aborted. `node` names this node (its
/// own messages are ignored).
pub fn spawn_sync(
    redis: RedisStore,
    node: String,
    mobile: Arc<MobileSessions>,
    desktop: DesktopSessions,
) -> [tokio::task::JoinHandle<()>; 2] {
    // A cluster: subscribed to one node at a time (messages reach every node).
    let clients = redis.pubsub_clients();
    let publisher = tokio::spawn(publish(
        redis,
        node.clone(),
        mobile.changes(),
        desktop.foreign_drops(),
    ));
    let subscriber = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        for client in clients.iter().cycle() {
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
                            match serde_json::from_str::<Message>(&payload) {
                                Ok(m) if m.node != node => apply(m.event, &mobile, &desktop).await,
                                _ => {}
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
    [publisher, subscriber]
}

async fn apply(event: Event, mobile: &MobileSessions, desktop: &DesktopSessions) {
    let result = match event {
        Event::Mobile(MobileChange::Session { folder, id }) => mobile.reload(&folder, &id).await,
        Event::Mobile(MobileChange::Refresh) => mobile.reload_all().await.map(|_| ()),
        Event::RemoteDropped(id) => {
            // Its close hook may take time: the subscriber reads on.
            let desktop = desktop.clone();
            tokio::spawn(async move { desktop.drop_connected(&id).await });
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "applying a change from another node failed");
    }
}

async fn publish(
    redis: RedisStore,
    node: String,
    mut changes: broadcast::Receiver<MobileChange>,
    mut drops: broadcast::Receiver<SessionId>,
) {
    use broadcast::error::RecvError;
    loop {
        let event = tokio::select! {
            change = changes.recv() => match change {
                Ok(c) => Event::Mobile(c),
                // Missed local changes: tell the others to reload everything.
                Err(RecvError::Lagged(_)) => Event::Mobile(MobileChange::Refresh),
                Err(RecvError::Closed) => return,
            },
            drop = drops.recv() => match drop {
                Ok(id) => Event::RemoteDropped(id),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "remote drops not passed on to other nodes");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        let payload = serde_json::to_string(&Message {
            node: node.clone(),
            event,
        })
        .expect("serializable");
        if let Err(e) = redis.publish(CHANNEL, &payload).await {
            // The others resync mobile sessions when their own connection comes back.
            tracing::warn!(error = %e, "cannot publish a change to Redis");
        }
    }
}
