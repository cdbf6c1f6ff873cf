//! [`RedisStore`]: all session state in Redis (or Valkey), for several
//! `sessiond serve` nodes sharing one set of sessions.
//!
//! One hash per session, `sessiond:{<ID>}` (the id is the Cluster hash tag, so every
//! key of a session lands on one slot): `rec` (the record as JSON), `ver`, `la`
//! (last activity), `idle` and `hard` (idle timeout and absolute deadline, ms).
//! Every change is one Lua script: a compare-and-set on `ver`, atomic across nodes.
//! A read is one `HMGET`; a touch is one script that moves `la` and the key's TTL
//! without rewriting `rec`. Expiry is Redis's own (relative TTLs, so the nodes'
//! clocks need not agree with Redis's), and every read also checks the deadline.
//! Each call is bounded by a timeout; connections are re-established by themselves.
//!
//! | module | what lives there |
//! |---|---|
//! | `connection` | [`RedisConfig`]; one Redis or a Redis Cluster behind one connection |
//! | `near_cache` | [`NearCacheConfig`]; recent reads kept on the node, invalidated through pub/sub within a stated bound |
//!
//! **Redis Cluster** (`redis+cluster://host:port,…`): every key of a session carries
//! the `{ID}` hash tag and every script touches that one key, so each call goes to
//! one slot; listing scans every primary. During a failover, calls to the slots of
//! the failed primary fail (503 to the client, nothing half-written: each change is
//! one script) until a replica is promoted, and then go on; a write acknowledged by
//! the old primary but not yet replicated is lost, as Redis Cluster's replication is
//! asynchronous (`WAIT` is not used).

mod connection;
mod near_cache;

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use redis::Script;
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};

pub use connection::RedisConfig;
use connection::{Conn, Target};
pub use near_cache::NearCacheConfig;
use near_cache::{CHANNEL, Listener, NearCache};

use crate::store::{Cas, SessionStore, Snapshot, StoreError};

const PREFIX: &str = "sessiond:";

fn key(id: &SessionId) -> String {
    format!("{PREFIX}{{{id}}}")
}

fn otp_key(hash: &TokenHash) -> String {
    format!("{PREFIX}otp:{{{}}}", sessiond_core::id::to_hex(&hash.0))
}

/// The deadline parameters stored beside the record, in ms (0 = none).
fn limits(record: &SessionRecord) -> (u64, u64) {
    let idle = match record.kind() {
        sessiond_core::SessionKind::Web => u64::from(record.idle_timeout()) * 60_000,
        _ => 0,
    };
    (idle, record.hard_deadline().map_or(0, |t| t.0))
}

/// Lua helpers shared by the scripts: the deadline from `la`, `idle`, `hard`.
const DEADLINE: &str = r"
local function deadline(la, idle, hard)
  local d = 0
  if idle > 0 then d = la + idle end
  if hard > 0 and (d == 0 or hard < d) then d = hard end
  return d
end
local function changed(who, ver, la)
  redis.call('PUBLISH', 'CHANNEL', who .. ' ' .. ver .. ' ' .. la)
end
local function expire(k, d, now)
  if d == 0 then redis.call('PERSIST', k) return true end
  if d <= now then redis.call('DEL', k) return false end
  redis.call('PEXPIRE', k, d - now)
  return true
end
";

const INSERT: &str = r"
local now = tonumber(ARGV[3])
local old = redis.call('HMGET', KEYS[1], 'la', 'idle', 'hard')
if old[1] then
  local d = deadline(tonumber(old[1]), tonumber(old[2]), tonumber(old[3]))
  if d == 0 or d > now then return 0 end
end
redis.call('HSET', KEYS[1], 'rec', ARGV[1], 'ver', ARGV[2], 'la', ARGV[3], 'idle', ARGV[4], 'hard', ARGV[5])
expire(KEYS[1], deadline(now, tonumber(ARGV[4]), tonumber(ARGV[5])), now)
changed(ARGV[6], ARGV[2], ARGV[3])
return 1
";

const TOUCH: &str = r"
local v = redis.call('HMGET', KEYS[1], 'rec', 'la', 'idle', 'hard', 'ver')
if not v[1] then return false end
local now = tonumber(ARGV[1])
local la, idle, hard = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
local d = deadline(la, idle, hard)
if d > 0 and d <= now then return false end
if now > la then
  la = now
  redis.call('HSET', KEYS[1], 'la', la)
  expire(KEYS[1], deadline(la, idle, hard), now)
  changed(ARGV[2], v[5], la)
end
return {v[1], tostring(la)}
";

const CAS: &str = r"
local v = redis.call('HMGET', KEYS[1], 'ver', 'la', 'idle', 'hard')
if not v[1] then return -1 end
local now = tonumber(ARGV[4])
local la = tonumber(v[2])
local d = deadline(la, tonumber(v[3]), tonumber(v[4]))
if d > 0 and d <= now then return -1 end
if v[1] ~= ARGV[1] then return 0 end
if now > la then la = now end
redis.call('HSET', KEYS[1], 'rec', ARGV[2], 'ver', ARGV[3], 'la', la, 'idle', ARGV[5], 'hard', ARGV[6])
expire(KEYS[1], deadline(la, tonumber(ARGV[5]), tonumber(ARGV[6])), now)
changed(ARGV[7], ARGV[3], la)
return la
";

const REMOVE: &str = r"
local n = redis.call('DEL', KEYS[1])
redis.call('PUBLISH', 'CHANNEL', ARGV[1])
return n
";

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    timeout: Duration,
    insert: Script,
    touch: Script,
    cas: Script,
    remove: Script,
    target: Target,
    /// The near-cache, if on; its listener stops with the last clone.
    near: Option<std::sync::Arc<Listener>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("nodes", &self.target.nodes.len())
            .field("cluster", &self.target.cluster)
            .field("timeout", &self.timeout)
            .field("near_cache", &self.near.is_some())
            .finish_non_exhaustive()
    }
}

fn decode(rec: &[u8], la: u64) -> Result<Snapshot, serde_json::Error> {
    let record: SessionRecord = serde_json::from_slice(rec)?;
    Ok(Snapshot {
        record: std::sync::Arc::new(record),
        last_activity: Timestamp(la),
    })
}

/// Where an unreadable record is moved: the same hash tag, so the same Cluster slot.
fn quarantine_key(id: &SessionId) -> String {
    format!("{PREFIX}quarantine:{{{id}}}")
}

impl RedisStore {
    /// Connects as `config` says (checked first); every call later is bounded by its
    /// timeout.
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        config
            .validate()
            .map_err(|message| StoreError::Unavailable {
                message,
                source: None,
            })?;
        let target = Target::parse(&config.url).expect("validated");
        let conn = Conn::open(&target, config.timeout).await?;
        let script = |body: &str| {
            Script::new(&format!("{DEADLINE}{body}").replace("'CHANNEL'", &format!("'{CHANNEL}'")))
        };
        let near = (config.near_cache.entries > 0).then(|| {
            std::sync::Arc::new(Listener::start(config.near_cache, &target, config.timeout))
        });
        Ok(Self {
            conn,
            timeout: config.timeout,
            insert: script(INSERT),
            touch: script(TOUCH),
            cas: script(CAS),
            remove: script(REMOVE),
            target,
            near,
        })
    }

    /// Clients of the nodes the URL names, for pub/sub between sessiond nodes (in a
    /// cluster a message published on any node reaches subscribers on every node).
    pub fn pubsub_clients(&self) -> Vec<redis::Client> {
        self.target
            .nodes
            .iter()
            .filter_map(|n| redis::Client::open(n.as_str()).ok())
            .collect()
    }

    /// Publishes `payload` on `channel`.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .bounded(
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    fn cache(&self) -> Option<&NearCache> {
        self.near.as_deref().map(|l| &*l.cache)
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        connection::bounded(self.timeout, fut).await
    }

    async fn read(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.conn.clone();
        let (rec, la): (Option<Vec<u8>>, Option<u64>) = self
            .bounded(
                redis::cmd("HMGET")
                    .arg(key(id))
                    .arg("rec")
                    .arg("la")
                    .query_async(&mut conn),
            )
            .await?;
        let (Some(rec), Some(la)) = (rec, la) else {
            return Ok(None);
        };
        let Some(s) = self.decode_or_quarantine(id, &rec, la).await else {
            return Ok(None);
        };
        Ok((!s.record.is_expired(s.last_activity, now)).then_some(s))
    }

    /// Decodes a record; one that cannot be read is moved aside (logged with its id)
    /// and reads as absent, so that one bad record never stops the server.
    async fn decode_or_quarantine(&self, id: &SessionId, rec: &[u8], la: u64) -> Option<Snapshot> {
        match decode(rec, la) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(session = %id, error = %e, "an unreadable session record was moved to {}", quarantine_key(id));
                let mut conn = self.conn.clone();
                let moved: Result<(), StoreError> = self
                    .bounded(
                        redis::cmd("RENAME")
                            .arg(key(id))
                            .arg(quarantine_key(id))
                            .query_async(&mut conn),
                    )
                    .await;
                if let Err(e) = moved {
                    tracing::warn!(session = %id, error = %e, "cannot quarantine the record");
                }
                None
            }
        }
    }

    /// What the scripts publish to name a session and the node that changed it.
    fn who(&self, id: &SessionId) -> String {
        format!("{id} {}", self.cache().map_or("-", |c| c.tag.as_str()))
    }

    /// Runs a write whose result is the session's new view (or none), keeping the
    /// near-cache coherent: the result is kept unless an invalidation raced it; a
    /// failure forgets the cached copy.
    async fn written(
        &self,
        id: &SessionId,
        write: impl Future<Output = Result<Option<Snapshot>, StoreError>>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let Some(cache) = self.cache() else {
            return write.await;
        };
        let epoch = cache.epoch(id);
        let out = write.await;
        match &out {
            Ok(Some(s)) => cache.fill(epoch, s),
            _ => cache.forget(id),
        }
        out
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        let id = record.id();
        let write = async {
            let (idle, hard) = limits(&record);
            let rec = serde_json::to_vec(&record).expect("a record serializes");
            let mut conn = self.conn.clone();
            let mut inv = self.insert.key(key(&id));
            inv.arg(rec)
                .arg(record.version())
                .arg(now.0)
                .arg(idle)
                .arg(hard)
                .arg(self.who(&id));
            let done: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
            if done == 0 {
                return Err(StoreError::Duplicate(id));
            }
            Ok(Some(Snapshot {
                record: std::sync::Arc::new(record),
                last_activity: now,
            }))
        };
        Ok(self.written(&id, write).await?.expect("inserted"))
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        let Some(cache) = self.cache() else {
            return self.read(id, now).await;
        };
        if let Some(s) = cache.get(id) {
            return Ok((!s.record.is_expired(s.last_activity, now)).then_some(s));
        }
        let epoch = cache.epoch(id);
        let read = self.read(id, now).await?;
        if let Some(s) = &read {
            cache.fill(epoch, s);
        }
        Ok(read)
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        let write = async {
            let mut conn = self.conn.clone();
            let mut inv = self.touch.key(key(id));
            inv.arg(now.0).arg(self.who(id));
            let out: Option<(Vec<u8>, u64)> = self.bounded(inv.invoke_async(&mut conn)).await?;
            Ok(match out {
                Some((rec, la)) => self.decode_or_quarantine(id, &rec, la).await,
                None => None,
            })
        };
        self.written(id, write).await
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        let id = record.id();
        let mut outcome = Cas::Conflict;
        let write = async {
            let (idle, hard) = limits(&record);
            let rec = serde_json::to_vec(&record).expect("a record serializes");
            let mut conn = self.conn.clone();
            let mut inv = self.cas.key(key(&id));
            inv.arg(expected_version)
                .arg(rec)
                .arg(record.version())
                .arg(now.0)
                .arg(idle)
                .arg(hard)
                .arg(self.who(&id));
            let out: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
            Ok(match out {
                -1 => {
                    outcome = Cas::NotFound;
                    None
                }
                // The cached copy, if any, is older than Redis's: forgotten.
                0 => None,
                la => Some(Snapshot {
                    record: std::sync::Arc::new(record),
                    last_activity: Timestamp(la.unsigned_abs()),
                }),
            })
        };
        Ok(match self.written(&id, write).await? {
            Some(s) => Cas::Swapped(s),
            None => outcome,
        })
    }

    fn shared(&self) -> bool {
        true
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.remove.key(key(id));
        inv.arg(self.who(id));
        let n: Result<i64, _> = self.bounded(inv.invoke_async(&mut conn)).await;
        if let Some(cache) = self.cache() {
            cache.forget(id);
        }
        Ok(n? > 0)
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        let keys = self
            .conn
            .clone()
            .scan(&format!("{PREFIX}{{*}}"), self.timeout)
            .await?;
        let ids: Vec<SessionId> = keys
            .iter()
            .filter_map(|k| {
                let tag = k
                    .strip_prefix(PREFIX)?
                    .strip_prefix('{')?
                    .strip_suffix('}')?;
                tag.parse().ok()
            })
            .collect();
        // One read per session (a cluster's pipelines cannot span slots), 64 at a time.
        let reads = futures::stream::iter(ids)
            .map(|id| async move { self.read(&id, now).await })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        reads.into_iter().filter_map(Result::transpose).collect()
    }

    async fn insert_otp(&self, otp: OtpRecord, now: Timestamp) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let bytes = serde_json::to_vec(&otp).expect("an OTP serializes");
        // A relative TTL (validity is also checked on use, in the caller's clock).
        let px = otp.expires.0.saturating_sub(now.0).max(1);
        let (): () = self
            .bounded(
                redis::cmd("SET")
                    .arg(otp_key(&otp.hash))
                    .arg(bytes)
                    .arg("PX")
                    .arg(px)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = self
            .bounded(
                redis::cmd("GETDEL")
                    .arg(otp_key(hash))
                    .query_async(&mut conn),
            )
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        let otp: OtpRecord = serde_json::from_slice(&raw)
            .map_err(|e| StoreError::Corrupt(format!("OTP in Redis: {e}")))?;
        Ok(otp.is_valid(now).then_some(otp))
    }

    async fn purge_expired(&self, _now: Timestamp) -> Result<usize, StoreError> {
        Ok(0)
    }
}
