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
//! Each call is bounded by a timeout; the connection manager reconnects by itself.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};

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
    let idle = match record.kind {
        sessiond_core::SessionKind::Web => u64::from(record.idle_timeout) * 60_000,
        _ => 0,
    };
    (idle, record.hard_deadline.map_or(0, |t| t.0))
}

/// Lua helpers shared by the scripts: the deadline from `la`, `idle`, `hard`.
const DEADLINE: &str = r"
local function deadline(la, idle, hard)
  local d = 0
  if idle > 0 then d = la + idle end
  if hard > 0 and (d == 0 or hard < d) then d = hard end
  return d
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
return 1
";

const TOUCH: &str = r"
local v = redis.call('HMGET', KEYS[1], 'rec', 'la', 'idle', 'hard')
if not v[1] then return false end
local now = tonumber(ARGV[1])
local la, idle, hard = tonumber(v[2]), tonumber(v[3]), tonumber(v[4])
local d = deadline(la, idle, hard)
if d > 0 and d <= now then return false end
if now > la then
  la = now
  redis.call('HSET', KEYS[1], 'la', la)
  expire(KEYS[1], deadline(la, idle, hard), now)
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
return la
";

/// Sessions in Redis.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    insert: Script,
    touch: Script,
    cas: Script,
    url: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable {
        message: e.to_string(),
        source: Some(Box::new(e)),
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
    /// Connects to `url` (`redis://host:port/db`); every call later is bounded by
    /// `timeout`. The connection is re-established automatically after a failure.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn =
            tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| StoreError::Unavailable {
                    message: format!("no answer from {url} within {timeout:?}"),
                    source: None,
                })?
                .map_err(unavailable)?;
        let script = |body: &str| Script::new(&format!("{DEADLINE}{body}"));
        Ok(Self {
            conn,
            timeout,
            insert: script(INSERT),
            touch: script(TOUCH),
            cas: script(CAS),
            url: url.to_string(),
        })
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable {
                message: format!("Redis did not answer within {:?}", self.timeout),
                source: None,
            }),
        }
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
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        let (idle, hard) = limits(&record);
        let rec = serde_json::to_vec(&record).expect("a record serializes");
        let mut conn = self.conn.clone();
        let mut inv = self.insert.key(key(&record.id));
        inv.arg(rec)
            .arg(record.version)
            .arg(now.0)
            .arg(idle)
            .arg(hard);
        let done: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
        if done == 0 {
            Err(StoreError::Duplicate(record.id))
        } else {
            Ok(Snapshot {
                record: std::sync::Arc::new(record),
                last_activity: now,
            })
        }
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        self.read(id, now).await
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.touch.key(key(id));
        inv.arg(now.0);
        let out: Option<(Vec<u8>, u64)> = self.bounded(inv.invoke_async(&mut conn)).await?;
        match out {
            Some((rec, la)) => Ok(self.decode_or_quarantine(id, &rec, la).await),
            None => Ok(None),
        }
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        let (idle, hard) = limits(&record);
        let rec = serde_json::to_vec(&record).expect("a record serializes");
        let mut conn = self.conn.clone();
        let mut inv = self.cas.key(key(&record.id));
        inv.arg(expected_version)
            .arg(rec)
            .arg(record.version)
            .arg(now.0)
            .arg(idle)
            .arg(hard);
        let out: i64 = self.bounded(inv.invoke_async(&mut conn)).await?;
        Ok(match out {
            -1 => Cas::NotFound,
            0 => Cas::Conflict,
            la => Cas::Swapped(Snapshot {
                record: std::sync::Arc::new(record),
                last_activity: Timestamp(la.unsigned_abs()),
            }),
        })
    }

    fn shared(&self) -> bool {
        true
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let n: i64 = self.bounded(conn.del(key(id))).await?;
        Ok(n > 0)
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        let mut conn = self.conn.clone();
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{PREFIX}{{*}}"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            keys.extend(batch.into_iter().filter(|k| {
                !k.starts_with(&format!("{PREFIX}otp:"))
                    && !k.starts_with(&format!("{PREFIX}quarantine:"))
            }));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("HMGET").arg(k).arg("rec").arg("la");
            }
            let rows: Vec<(Option<Vec<u8>>, Option<u64>)> =
                self.bounded(pipe.query_async(&mut conn)).await?;
            for (k, row) in chunk.iter().zip(rows) {
                if let (Some(rec), Some(la)) = row {
                    let id = k
                        .trim_start_matches(PREFIX)
                        .trim_matches(|c| c == '{' || c == '}')
                        .parse()
                        .unwrap_or(SessionId::from_bytes([0; 16]));
                    let Some(s) = self.decode_or_quarantine(&id, &rec, la).await else {
                        continue;
                    };
                    if !s.record.is_expired(s.last_activity, now) {
                        out.push(s);
                    }
                }
            }
        }
        Ok(out)
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
