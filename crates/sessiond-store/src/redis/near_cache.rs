//! The near-cache: sessions this node read recently, served without a round trip to
//! Redis, and kept coherent with every node's writes.
//!
//! Every script that changes a session publishes on [`CHANNEL`] the session's id, the
//! writing node's origin tag, and the new version and last activity (nothing more when
//! the session is deleted). Each node listens on a connection of its own, on a thread of
//! its own (so a busy server does not delay invalidations), and drops what became
//! older. A node ignores its own messages: its writes refresh its cache themselves.
//!
//! **Staleness bound.** The listener sends a `PING` on its connection every
//! `staleness / 4`. Redis answers in order, so when the answer to a ping sent at `t`
//! arrives, every invalidation for a write Redis applied before `t` has been received
//! and applied. The cache serves entries only while the last answered ping was sent
//! less than `staleness` ago; otherwise every read goes to Redis. Hence a change
//! acknowledged to its writer more than `staleness` ago is never served stale, even if
//! the connection is cut silently. A reconnection empties the cache.
//!
//! Reads and writes that race an invalidation: each notes the epoch of its session's
//! stripe before asking Redis, and fills the cache only if no invalidation or flush
//! touched that stripe meanwhile, and never over a newer copy.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use parking_lot::Mutex;
use sessiond_core::SessionId;

use super::connection::Target;
use crate::store::Snapshot;

/// The invalidation channel.
pub(super) const CHANNEL: &str = "sessiond:invalidate";

/// The near-cache's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearCacheConfig {
    /// Sessions kept at most (0: no near-cache, every read goes to Redis).
    pub entries: usize,
    /// How old a change acknowledged on another node may be and still not be seen
    /// here (the bound on a stale read).
    pub staleness: Duration,
}

impl Default for NearCacheConfig {
    fn default() -> Self {
        Self {
            entries: 100_000,
            staleness: Duration::from_millis(50),
        }
    }
}

impl NearCacheConfig {
    /// No near-cache.
    pub fn off() -> Self {
        Self {
            entries: 0,
            ..Self::default()
        }
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.entries > 10_000_000 {
            return Err("near_cache_entries must be at most 10,000,000".into());
        }
        if self.staleness < Duration::from_millis(4) || self.staleness > Duration::from_secs(60) {
            return Err("near_cache_staleness_ms must be 4 to 60,000".into());
        }
        Ok(())
    }
}

const STRIPES: usize = 1024;

pub(super) struct NearCache {
    // Held for one map operation, never across an `.await`.
    map: Mutex<HashMap<SessionId, Snapshot>>,
    capacity: usize,
    staleness: Duration,
    /// Bumped by each invalidation of a session of the stripe and by flushes.
    epochs: Box<[AtomicU64]>,
    /// When the last answered ping was sent, in ns since `origin` (0: never, or the
    /// connection was lost).
    confirmed: AtomicU64,
    origin: Instant,
    hasher: std::hash::RandomState,
    /// This node's tag in the messages (random hex).
    pub tag: String,
}

impl NearCache {
    fn new(config: NearCacheConfig) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: config.entries,
            staleness: config.staleness,
            epochs: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            confirmed: AtomicU64::new(0),
            origin: Instant::now(),
            hasher: std::hash::RandomState::new(),
            tag: sessiond_core::id::to_hex(&sessiond_core::id::random_bytes::<8>()),
        }
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn usable(&self) -> bool {
        let confirmed = self.confirmed.load(Ordering::Acquire);
        confirmed != 0
            && self.nanos().saturating_sub(confirmed)
                < u64::try_from(self.staleness.as_nanos()).unwrap_or(u64::MAX)
    }

    fn stripe(&self, id: &SessionId) -> &AtomicU64 {
        let i = usize::try_from(self.hasher.hash_one(id) % STRIPES as u64).expect("< STRIPES");
        &self.epochs[i]
    }

    /// The session, if cached and the cache is within its staleness bound.
    pub fn get(&self, id: &SessionId) -> Option<Snapshot> {
        if !self.usable() {
            return None;
        }
        self.map.lock().get(id).cloned()
    }

    /// The epoch to pass to [`NearCache::fill`] after reading `id` from Redis.
    pub fn epoch(&self, id: &SessionId) -> u64 {
        self.stripe(id).load(Ordering::Acquire)
    }

    /// Keeps what was read (or written) at `epoch`, unless an invalidation came since.
    pub fn fill(&self, epoch: u64, snapshot: &Snapshot) {
        let id = snapshot.record.id();
        let mut map = self.map.lock();
        if self.stripe(&id).load(Ordering::Acquire) != epoch || !self.usable() {
            return;
        }
        if map.len() >= self.capacity
            && !map.contains_key(&id)
            && let Some(victim) = map.keys().next().copied()
        {
            map.remove(&victim);
        }
        match map.get(&id) {
            Some(cached) if newer(cached, snapshot) => {}
            _ => {
                map.insert(id, snapshot.clone());
            }
        }
    }

    /// Forgets `id` (a write of this node that may have left an older copy).
    pub fn forget(&self, id: &SessionId) {
        let mut map = self.map.lock();
        self.stripe(id).fetch_add(1, Ordering::AcqRel);
        map.remove(id);
    }

    /// Applies one message of [`CHANNEL`]: `ID TAG` (deleted) or `ID TAG VERSION
    /// LAST_ACTIVITY` (changed): a copy older than that is dropped, unless the message is
    /// this node's own.
    fn invalidate(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let Some(Ok(id)) = parts.next().map(str::parse::<SessionId>) else {
            return;
        };
        if parts.next() == Some(self.tag.as_str()) {
            return;
        }
        let newer: Option<(u64, u64)> =
            (|| Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?)))();
        let mut map = self.map.lock();
        self.stripe(&id).fetch_add(1, Ordering::AcqRel);
        let keep = match (map.get(&id), newer) {
            (Some(s), Some((version, la))) => {
                s.record.version() >= version && s.last_activity.0 >= la
            }
            _ => false,
        };
        if !keep {
            map.remove(&id);
        }
    }

    fn flush(&self) {
        let mut map = self.map.lock();
        for e in &*self.epochs {
            e.fetch_add(1, Ordering::AcqRel);
        }
        map.clear();
    }

    fn lose(&self) {
        self.confirmed.store(0, Ordering::Release);
        self.flush();
    }
}

/// Whether `a` is a newer copy than `b` (a later version, or the same one touched later).
fn newer(a: &Snapshot, b: &Snapshot) -> bool {
    (a.record.version(), a.last_activity) > (b.record.version(), b.last_activity)
}

/// The near-cache and its listener thread, which stops when this is dropped.
pub(super) struct Listener {
    pub cache: Arc<NearCache>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Listener {
    /// Starts listening to `target`'s invalidations (nothing is served from the cache
    /// until the first ping is answered).
    pub fn start(config: NearCacheConfig, target: &Target, timeout: Duration) -> Self {
        let cache = Arc::new(NearCache::new(config));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let nodes = target.nodes.clone();
        let listening = cache.clone();
        std::thread::Builder::new()
            .name("sessiond-near-cache".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime");
                runtime.block_on(async move {
                    tokio::select! {
                        () = listen(&listening, &nodes, timeout) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("a thread for the near-cache");
        Self {
            cache,
            stop: Some(stop),
        }
    }
}

/// Subscribes (to each node in turn, in a cluster: a message published on any node
/// reaches subscribers on all) and applies invalidations, forever.
async fn listen(cache: &NearCache, nodes: &[String], timeout: Duration) {
    let mut backoff = Duration::from_millis(50);
    for node in nodes.iter().cycle() {
        match subscribe(node, timeout).await {
            Ok(pubsub) => {
                cache.flush();
                backoff = Duration::from_millis(50);
                if let Err(e) = serve(cache, pubsub, timeout).await {
                    tracing::warn!(error = %e, "near-cache invalidations lost; the cache is emptied");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "near-cache invalidations unavailable; reading Redis");
            }
        }
        cache.lose();
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn subscribe(node: &str, timeout: Duration) -> redis::RedisResult<redis::aio::PubSub> {
    let connect = async {
        let mut pubsub = redis::Client::open(node)?.get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        Ok(pubsub)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))?
}

/// Applies messages, and pings every `staleness / 4` to confirm that nothing was
/// missed; returns when the connection fails.
async fn serve(
    cache: &NearCache,
    pubsub: redis::aio::PubSub,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let lost =
        || redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let (mut sink, mut stream) = pubsub.split();
    let apply = |msg: redis::Msg| {
        if let Ok(payload) = msg.get_payload::<String>() {
            cache.invalidate(&payload);
        }
    };
    let mut tick = tokio::time::interval((cache.staleness / 4).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Invalidations are applied as they arrive; the tick starts a ping.
        tokio::select! {
            _ = tick.tick() => {}
            next = stream.next() => {
                apply(next.ok_or_else(lost)?);
                continue;
            }
        }
        let sent = cache.nanos();
        let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>());
        tokio::pin!(ping);
        loop {
            tokio::select! {
                answer = &mut ping => {
                    answer.map_err(|_| lost())??;
                    break;
                }
                next = stream.next() => apply(next.ok_or_else(lost)?),
            }
        }
        // Messages Redis sent before the answer are queued by now: apply them before
        // vouching for the cache.
        while let Some(next) = stream.next().now_or_never() {
            apply(next.ok_or_else(lost)?);
        }
        cache.confirmed.fetch_max(sent.max(1), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{SessionKind, SessionPolicy, SessionRecord, Timestamp};

    fn snapshot(version: u64, la: u64) -> Snapshot {
        snapshot_of(SessionId::from_bytes([7; 16]), version, la)
    }

    fn snapshot_of(id: SessionId, version: u64, la: u64) -> Snapshot {
        let policy = SessionPolicy::default();
        let mut record =
            SessionRecord::with_id(id, SessionKind::Web, Timestamp(0), &policy, None, None);
        record.set_version(version);
        Snapshot {
            record: Arc::new(record),
            last_activity: Timestamp(la),
        }
    }

    fn live_cache(entries: usize) -> NearCache {
        let cache = NearCache::new(NearCacheConfig {
            entries,
            staleness: Duration::from_secs(60),
        });
        cache
            .confirmed
            .store(cache.nanos().max(1), Ordering::Release);
        cache
    }

    #[test]
    fn an_invalidation_drops_only_older_copies() {
        let cache = live_cache(10);
        let s = snapshot(3, 1000);
        let id = s.record.id();
        cache.fill(cache.epoch(&id), &s);
        cache.invalidate(&format!("{id} other 3 1000"));
        assert!(cache.get(&id).is_some(), "the same version stays");
        cache.invalidate(&format!("{id} other 3 2000"));
        assert!(cache.get(&id).is_none(), "a later activity drops it");
        cache.fill(cache.epoch(&id), &s);
        cache.invalidate(&format!("{id} other"));
        assert!(cache.get(&id).is_none(), "a deletion drops it");
    }

    #[test]
    fn a_node_ignores_its_own_messages_and_never_fills_over_a_newer_copy() {
        let cache = live_cache(10);
        let (old, new) = (snapshot(3, 1000), snapshot(4, 1000));
        let id = old.record.id();
        let epoch = cache.epoch(&id);
        // This node's own write of version 4, echoed while an older read was in flight.
        cache.invalidate(&format!("{id} {} 4 1000", cache.tag));
        cache.fill(epoch, &new);
        cache.fill(epoch, &old);
        assert_eq!(cache.get(&id).unwrap().record.version(), 4);
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = live_cache(10);
        let s = snapshot(3, 1000);
        let id = s.record.id();
        let epoch = cache.epoch(&id);
        cache.invalidate(&format!("{id} other 4 1000"));
        cache.fill(epoch, &s);
        assert!(cache.get(&id).is_none());
    }

    #[test]
    fn nothing_is_served_past_the_staleness_bound_or_after_a_loss() {
        let s = snapshot(1, 1);
        let id = s.record.id();
        let cache = live_cache(10);
        cache.fill(cache.epoch(&id), &s);
        assert!(cache.get(&id).is_some());
        cache.lose();
        assert!(
            cache.get(&id).is_none(),
            "a lost connection empties the cache"
        );
        let never = NearCache::new(NearCacheConfig::default());
        never.fill(never.epoch(&id), &s);
        assert!(never.get(&id).is_none(), "never confirmed: not filled");
        // A bound shorter than the time since the last answered ping.
        let late = NearCache::new(NearCacheConfig {
            entries: 10,
            staleness: Duration::from_nanos(1),
        });
        late.confirmed.store(1, Ordering::Release);
        late.map.lock().insert(id, s.clone());
        assert!(late.get(&id).is_none(), "the last confirmation is too old");
    }

    #[test]
    fn the_cache_holds_at_most_its_capacity() {
        let cache = live_cache(2);
        for i in 0..5u8 {
            let s = snapshot_of(SessionId::from_bytes([i; 16]), 1, 1);
            cache.fill(cache.epoch(&s.record.id()), &s);
        }
        assert_eq!(cache.map.lock().len(), 2);
    }
}
