//! [`EmbeddedStore`]: sessions that survive restarts and `kill -9`, in one redb file.
//!
//! Why redb: a pure-Rust embedded database with ACID transactions whose commits are
//! durable when they return (fsync, `Durability::Immediate`), built from
//! copy-on-write B-trees with checksums — a crash leaves the last committed state,
//! with no recovery step and no write-ahead log to replay, and a damaged file is
//! detected and reported instead of being read as garbage. (SQLite would be as
//! durable, but brings a C build and more moving parts.)
//!
//! Layout: every session and OTP lives in the file; a [`MemoryStore`] mirror answers
//! reads at memory speed. Every change — create, privileges, storage, delete, OTP —
//! is committed to the file before it is acknowledged, under one writer lock that
//! also orders the mirror's updates. Activity that only reads moves the idle deadline
//! in memory and is written back once per purge (about every second): a crash can
//! lose at most that much activity (a session may then expire a second early), never
//! an acknowledged change. Sessions that expired while the server was down are
//! removed when the file is opened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{Database, ReadableTable, TableDefinition};
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};

use crate::memory::MemoryStore;
use crate::store::{Cas, SessionStore, Snapshot, StoreError};

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const OTPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("otps");

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    record: SessionRecord,
    last_activity: Timestamp,
}

fn encode(record: &SessionRecord, last_activity: Timestamp) -> Vec<u8> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct StoredRef<'a> {
        record: &'a SessionRecord,
        last_activity: Timestamp,
    }
    serde_json::to_vec(&StoredRef {
        record,
        last_activity,
    })
    .expect("a record serializes")
}

fn fault(path: &Path) -> impl Fn(redb::Error) -> StoreError + '_ {
    move |e| StoreError::Unavailable {
        message: format!("{}: {e}", path.display()),
        source: Some(Box::new(e)),
    }
}

struct Inner {
    path: PathBuf,
    db: Database,
    mirror: MemoryStore,
    /// Orders commits and the mirror's updates. A blocking mutex, taken only on the
    /// blocking thread pool, where the fsync happens.
    writer: Mutex<()>,
    /// Activity not yet written back: session → last activity.
    dirty: Mutex<HashMap<SessionId, Timestamp>>,
}

/// Sessions in a redb file, mirrored in memory. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore(Arc<Inner>);

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.0.path)
            .field("sessions", &self.0.mirror.len())
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, loads every live session and OTP, and
    /// deletes what expired while the server was down. A file that is not a valid
    /// store, or holds a record that cannot be read, is an error: nothing is dropped
    /// silently.
    pub fn open(path: &Path, now: Timestamp) -> Result<Self, StoreError> {
        let corrupt =
            |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{}: {e}", path.display()));
        let db = Database::create(path).map_err(|e| corrupt(&e))?;
        let mirror = MemoryStore::new();
        let mut expired_sessions = Vec::new();
        let mut expired_otps = Vec::new();
        {
            let txn = db.begin_write().map_err(|e| corrupt(&e))?;
            {
                let sessions = txn.open_table(SESSIONS).map_err(|e| corrupt(&e))?;
                for row in sessions.iter().map_err(|e| corrupt(&e))? {
                    let (key, value) = row.map_err(|e| corrupt(&e))?;
                    let stored: Stored = serde_json::from_slice(value.value()).map_err(|e| {
                        corrupt(&format!("session record {:02x?}: {e}", key.value()))
                    })?;
                    if stored.record.is_expired(stored.last_activity, now) {
                        expired_sessions.push(key.value().to_vec());
                    } else {
                        mirror.put(stored.record, stored.last_activity, now)?;
                    }
                }
                let otps = txn.open_table(OTPS).map_err(|e| corrupt(&e))?;
                for row in otps.iter().map_err(|e| corrupt(&e))? {
                    let (key, value) = row.map_err(|e| corrupt(&e))?;
                    let otp: OtpRecord = serde_json::from_slice(value.value())
                        .map_err(|e| corrupt(&format!("OTP record: {e}")))?;
                    if otp.is_valid(now) {
                        mirror.insert_otp_now(otp);
                    } else {
                        expired_otps.push(key.value().to_vec());
                    }
                }
            }
            {
                let mut sessions = txn.open_table(SESSIONS).map_err(|e| corrupt(&e))?;
                for key in &expired_sessions {
                    sessions.remove(key.as_slice()).map_err(|e| corrupt(&e))?;
                }
                let mut otps = txn.open_table(OTPS).map_err(|e| corrupt(&e))?;
                for key in &expired_otps {
                    otps.remove(key.as_slice()).map_err(|e| corrupt(&e))?;
                }
            }
            txn.commit().map_err(|e| corrupt(&e))?;
        }
        if !expired_sessions.is_empty() {
            tracing::info!(
                expired = expired_sessions.len(),
                "removed sessions that expired while the server was down"
            );
        }
        Ok(Self(Arc::new(Inner {
            path: path.to_path_buf(),
            db,
            mirror,
            writer: Mutex::new(()),
            dirty: Mutex::new(HashMap::new()),
        })))
    }

    /// Runs `f` on the blocking pool under the writer lock.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let _writer = inner.writer.lock();
            f(&inner)
        })
        .await
        .map_err(|e| StoreError::Unavailable {
            message: format!("store task failed: {e}"),
            source: None,
        })?
    }
}

impl Inner {
    /// One committed write transaction.
    fn commit(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| fault(&self.path)(e.into()))?;
        f(&txn).map_err(fault(&self.path))?;
        txn.commit().map_err(|e| fault(&self.path)(e.into()))
    }

    fn save(
        txn: &redb::WriteTransaction,
        record: &SessionRecord,
        last_activity: Timestamp,
    ) -> Result<(), redb::Error> {
        txn.open_table(SESSIONS)?.insert(
            record.id.as_bytes().as_slice(),
            encode(record, last_activity).as_slice(),
        )?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        self.blocking(move |inner| {
            if inner.mirror.get_now(&record.id, now).is_some() {
                return Err(StoreError::Duplicate(record.id));
            }
            inner.commit(|txn| Inner::save(txn, &record, now))?;
            inner.mirror.put(record, now, now)
        })
        .await
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.0.mirror.get_now(id, now))
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        let snapshot = self.0.mirror.touch_now(id, now);
        if let Some(s) = &snapshot {
            self.0.dirty.lock().insert(*id, s.last_activity);
        }
        Ok(snapshot)
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        self.blocking(move |inner| {
            let Some(current) = inner.mirror.get_now(&record.id, now) else {
                return Ok(Cas::NotFound);
            };
            if current.record.version != expected_version {
                return Ok(Cas::Conflict);
            }
            let last_activity = current.last_activity.max(now);
            inner.commit(|txn| Inner::save(txn, &record, last_activity))?;
            Ok(inner.mirror.cas_now(record, expected_version, now))
        })
        .await
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        let id = *id;
        self.blocking(move |inner| {
            let mut existed = false;
            inner.commit(|txn| {
                existed = txn
                    .open_table(SESSIONS)?
                    .remove(id.as_bytes().as_slice())?
                    .is_some();
                Ok(())
            })?;
            inner.mirror.remove_now(&id);
            inner.dirty.lock().remove(&id);
            Ok(existed)
        })
        .await
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        Ok(self.0.mirror.list_now(now))
    }

    async fn insert_otp(&self, otp: OtpRecord, _now: Timestamp) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            let bytes = serde_json::to_vec(&otp).expect("an OTP serializes");
            inner.commit(|txn| {
                txn.open_table(OTPS)?
                    .insert(otp.hash.0.as_slice(), bytes.as_slice())?;
                Ok(())
            })?;
            inner.mirror.insert_otp_now(otp);
            Ok(())
        })
        .await
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        let hash = *hash;
        // The mirror holds every stored OTP: an unknown token (anyone can send one
        // with `?$4DSID=`) costs no write to the file.
        self.blocking(move |inner| {
            let Some(otp) = inner.mirror.remove_otp_now(&hash) else {
                return Ok(None);
            };
            inner.commit(|txn| {
                txn.open_table(OTPS)?.remove(hash.0.as_slice())?;
                Ok(())
            })?;
            Ok(otp.is_valid(now).then_some(otp))
        })
        .await
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        self.blocking(move |inner| {
            let (sessions, otps) = inner.mirror.purge_now(now);
            let dirty = std::mem::take(&mut *inner.dirty.lock());
            if sessions.is_empty() && otps.is_empty() && dirty.is_empty() {
                return Ok(0);
            }
            let written = inner.commit(|txn| {
                let mut table = txn.open_table(SESSIONS)?;
                for id in &sessions {
                    table.remove(id.as_bytes().as_slice())?;
                }
                for id in dirty.keys() {
                    if let Some(s) = inner.mirror.get_now(id, now) {
                        table.insert(
                            id.as_bytes().as_slice(),
                            encode(&s.record, s.last_activity).as_slice(),
                        )?;
                    }
                }
                drop(table);
                let mut table = txn.open_table(OTPS)?;
                for hash in &otps {
                    table.remove(hash.0.as_slice())?;
                }
                Ok(())
            });
            if let Err(e) = written {
                // Keep the activity for the next purge.
                let mut again = inner.dirty.lock();
                for (id, at) in dirty {
                    again.entry(id).or_insert(at);
                }
                return Err(e);
            }
            Ok(sessions.len())
        })
        .await
    }
}
