//! [`EmbeddedStore`]: sessions that survive restarts and `kill -9`, in one redb file.
//!
//! Why redb: a pure-Rust embedded database with ACID transactions, built from
//! copy-on-write B-trees with checksums — a crash leaves the last durable commit, and a
//! damaged file is detected and reported instead of being read as garbage. (SQLite
//! would be as durable, but brings a C build and more moving parts.)
//!
//! Durability comes from a write-ahead log beside the file (`sessions.redb.wal`): a
//! group's row changes are appended to it and synced with one `fdatasync` (about a
//! tenth of a durable redb commit) before its writers are acknowledged; the mirror
//! serves them from then on. Every 64 MiB of log (or 30 s) a checkpoint writes the
//! rows logged since the last one (the latest value of each) to the database in one
//! synced commit, and the log starts over. Opening the store (and reopening it after
//! an I/O error) applies what the log still holds.
//!
//! Layout: every session and OTP lives in the file and the log; a [`MemoryStore`]
//! mirror answers reads at memory speed and only ever holds durable state. Session
//! rows are keyed by creation time, then id (see `row_key`): new sessions are
//! appended at the end of the B-tree instead of scattered across it.
//!
//! Writes — create, privileges, storage, delete, OTPs — go to one writer thread, which
//! **commits them in groups**: the writes that arrive while a group is being logged join
//! the next one (one log frame, one sync), each checked against the state the
//! earlier writes of its group leave (so compare-and-set stays exact), and each caller
//! is acknowledged only after the log's sync — with one cross-thread wake-up per
//! group (module `ack`). The server therefore writes at the disk's
//! sync rate times the group size instead of one commit per write. Updates of one
//! session are chained rather than queued: each applies its change to the version the
//! previous one submitted (committed or still in flight) and is submitted at once, so
//! the updates of a hot session share commits too; if an earlier one fails, the later
//! ones find a conflict and start again from the committed state. Every change of a
//! record (updates and direct compare-and-swaps) goes through the chain, so no two
//! writes ever build different records under one version number. Activity that
//! only reads moves the idle deadline in memory and is written back with the purge
//! (about every second): a crash can lose at most that much activity (a session may
//! then expire a second early), never an acknowledged change.
//!
//! Faults: a failed write (disk full, EIO) fails the writes of its group and nothing
//! else; the writer reopens the database and the log before the next group (redb
//! refuses every write after an I/O error until reopened), so service resumes by itself
//! once the cause is gone. A group whose log write failed part-way is cut off the log
//! when it is reopened; one whose sync reported an error may still have reached the
//! disk, and then it is applied. At open, sessions that expired while the server was
//! down are removed, and a record that cannot be read is moved to the `quarantine` table and
//! logged with its id instead of stopping the start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};

use crate::ack::{Ack, Acks, Wait};
use crate::memory::MemoryStore;
use crate::store::{
    Cas, MAX_CAS_RETRIES, SessionStore, Snapshot, StoreError, Update, UpdateFn, backoff,
};
use crate::wal::{Changes, Span, Wal};

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const OTPS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("otps");
/// The tables as the write-ahead log names them (their index in `write_rows`).
const LOG_SESSIONS: u8 = 0;
const LOG_OTPS: u8 = 1;
/// A checkpoint is due after this long, or this much log. Each costs a redb commit
/// that rewrites every B-tree page a logged row falls in, so rarer checkpoints cost
/// less per write (a page takes many rows); the log's size bounds the time the next
/// open takes to apply it (well under a second for 64 MiB) and the memory the rows
/// waiting for the checkpoint take.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Records that could not be read at open: key → the bytes as found.
const QUARANTINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("quarantine");

/// The key of a session's row: its creation time (milliseconds, big-endian), then its
/// id. New sessions' rows land at the end of the B-tree, next to each other, so a
/// checkpoint rewrites few pages for them (keyed by id alone, they would fall all over
/// the tree and a checkpoint would rewrite most of its pages). A record's creation time
/// never changes; a row keeps the key it was created under.
fn row_key(id: &SessionId, created: Timestamp) -> [u8; 24] {
    let mut key = [0; 24];
    key[..8].copy_from_slice(&created.0.to_be_bytes());
    key[8..].copy_from_slice(id.as_bytes());
    key
}

/// The session id in a row's key (earlier files keyed rows by the id alone).
fn key_id(key: &[u8]) -> &[u8] {
    key.get(8..).filter(|id| id.len() == 16).unwrap_or(key)
}

/// Most writes committed together.
const MAX_GROUP: usize = 4096;

/// Update chains: sessions share one by their id's last byte.
const CHAINS: usize = 256;

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

/// An I/O fault of the database: the cause stays in the log and the error's source.
fn fault(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let e: redb::Error = e.into();
    StoreError::Unavailable {
        message: format!("{}: {e}", path.display()),
        source: Some(Box::new(e)),
    }
}

/// A write, as the writer thread applies it.
enum Op {
    Insert(Arc<SessionRecord>, Timestamp),
    Cas(Arc<SessionRecord>, u64, Timestamp),
    Remove(SessionId),
    InsertOtp(OtpRecord),
    TakeOtp(TokenHash, Timestamp),
    /// Frees what expired and writes back the activity of reads.
    Purge(Timestamp, HashMap<SessionId, Timestamp>),
}

/// What a write answers.
enum Done {
    Snapshot(Snapshot),
    Duplicate,
    Cas(Cas),
    Removed(bool),
    Otp(Option<OtpRecord>),
    Purged(usize),
    Nothing,
}

/// What the writer thread has committed since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Groups committed (one log sync each).
    pub commits: u64,
    /// Writes acknowledged by those commits.
    pub writes: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
}

struct Job {
    op: Op,
    reply: Ack<Result<Done, StoreError>>,
}

struct Inner {
    path: PathBuf,
    mirror: MemoryStore,
    /// Activity not yet written back: session → last activity. A blocking mutex,
    /// held only to insert or take the map.
    dirty: Mutex<HashMap<SessionId, Timestamp>>,
    /// The writer thread's queue (`None` once closing).
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
    /// The writer's answers: one cross-thread wake-up per group.
    acks: Arc<Acks>,
    /// Held while an update reads the version to build on and submits its write (no
    /// I/O is awaited under it).
    chains: Box<[tokio::sync::Mutex<()>]>,
    /// Per session, the last update submitted and not yet answered: what the next
    /// update builds on. A blocking mutex, held for one map operation.
    pending: Mutex<HashMap<SessionId, Snapshot>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer, which closes the file: a new store can
        // open it as soon as this one is dropped.
        self.jobs.lock().take();
        if let Some(w) = self.writer.lock().take() {
            let _ = w.join();
        }
    }
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

/// Opens the database file, telling "in use" apart from "damaged".
fn open_db(path: &Path) -> Result<Database, StoreError> {
    match Database::create(path) {
        Ok(db) => {
            if let Err(e) = crate::fs::make_private(path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot make the session database private");
            }
            Ok(db)
        }
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(StoreError::Unavailable {
            message: format!(
                "{} is in use by another process (another sessiond on this data folder?)",
                path.display()
            ),
            source: None,
        }),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
            Err(StoreError::Unavailable {
                message: format!("{}: {e}", path.display()),
                source: Some(Box::new(e)),
            })
        }
        Err(e) => Err(StoreError::Corrupt(format!("{}: {e}", path.display()))),
    }
}

/// Writes rows to the database in one synced commit (a checkpoint, or the log
/// applied at open).
fn write_rows<'a>(
    db: &Database,
    path: &Path,
    rows: impl Iterator<Item = (u8, &'a [u8], Option<&'a [u8]>)>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(|e| fault(path, e))?;
    {
        let mut tables = [
            txn.open_table(SESSIONS).map_err(|e| fault(path, e))?,
            txn.open_table(OTPS).map_err(|e| fault(path, e))?,
        ];
        for (table, key, value) in rows {
            let Some(t) = tables.get_mut(usize::from(table)) else {
                return Err(StoreError::Corrupt(format!(
                    "{}: unknown table {table}",
                    Wal::path(path).display()
                )));
            };
            match value {
                Some(v) => t.insert(key, v).map(|_| ()),
                None => t.remove(key).map(|_| ()),
            }
            .map_err(|e| fault(path, e))?;
        }
    }
    txn.commit().map_err(|e| fault(path, e))
}

/// Opens the database and its log, applies what the log holds (the writes
/// acknowledged since the last checkpoint), and checkpoints: the database then holds
/// everything and the log is empty.
fn recover(path: &Path) -> Result<(Database, Wal), StoreError> {
    let db = open_db(path)?;
    let io = |e: std::io::Error| StoreError::Unavailable {
        message: format!("{}: {e}", Wal::path(path).display()),
        source: Some(Box::new(e)),
    };
    let changes = Wal::read(path).map_err(io)?;
    let wal = Wal::open(path).map_err(io)?;
    if !changes.is_empty() {
        let rows = changes
            .iter()
            .map(|(t, k, v)| (*t, k.as_slice(), v.as_deref()));
        write_rows(&db, path, rows)?;
        tracing::info!(
            changes = changes.len(),
            "applied the write-ahead log of the session database"
        );
    }
    Ok((db, wal))
}

impl EmbeddedStore {
    /// Opens (or creates) the store file, loads every live session and OTP, deletes
    /// what expired while the server was down, and moves unreadable records to the
    /// quarantine table (logged with their ids). A file that is not a valid store is
    /// an error.
    pub fn open(path: &Path, now: Timestamp) -> Result<Self, StoreError> {
        let (db, wal) = recover(path)?;
        let mirror = MemoryStore::new();
        load(&db, path, &mirror, now)?;
        let (jobs, queue) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let acks = Arc::new(Acks::default());
        let writer = Writer {
            acks: acks.clone(),
            path: path.to_path_buf(),
            db: Some((db, wal)),
            checkpoint: std::time::Instant::now(),
            pending: HashMap::new(),
            mirror: mirror.clone(),
            counters: counters.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("sessiond-store-writer".into())
            .spawn(move || writer.run(&queue))
            .map_err(|e| StoreError::Unavailable {
                message: format!("cannot start the store's writer thread: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(Self(Arc::new(Inner {
            path: path.to_path_buf(),
            mirror,
            dirty: Mutex::new(HashMap::new()),
            jobs: Mutex::new(Some(jobs)),
            writer: Mutex::new(Some(handle)),
            counters,
            acks,
            chains: (0..CHAINS).map(|_| tokio::sync::Mutex::new(())).collect(),
            pending: Mutex::new(HashMap::new()),
        })))
    }

    /// Commits and the writes they carried since the store was opened: the group
    /// commit's writes per fsync.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.0.counters.commits.load(Ordering::Relaxed),
            writes: self.0.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// How many records the quarantine table holds (records found unreadable at
    /// some open; they stay there for inspection).
    pub fn quarantined(path: &Path) -> Result<usize, StoreError> {
        let db = open_db(path)?;
        let txn = db.begin_read().map_err(|e| fault(path, e))?;
        match txn.open_table(QUARANTINE) {
            Ok(t) => Ok(usize::try_from(t.len().map_err(|e| fault(path, e))?).unwrap_or(0)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(fault(path, e)),
        }
    }

    /// Queues a write and waits until its group is committed.
    async fn write(&self, op: Op) -> Result<Done, StoreError> {
        Self::answer(self.submit(op)?).await
    }

    /// Queues `op` for the writer thread; [`EmbeddedStore::answer`] waits for its commit.
    fn submit(&self, op: Op) -> Result<Wait<Result<Done, StoreError>>, StoreError> {
        let (reply, done) = crate::ack::slot(&self.0.acks);
        let sent = self
            .0
            .jobs
            .lock()
            .as_ref()
            .is_some_and(|q| q.send(Job { op, reply }).is_ok());
        if sent {
            Ok(done)
        } else {
            Err(StoreError::Unavailable {
                message: "the session store is closed".into(),
                source: None,
            })
        }
    }

    async fn answer(done: Wait<Result<Done, StoreError>>) -> Result<Done, StoreError> {
        done.await.ok_or_else(|| StoreError::Unavailable {
            message: "the store's writer stopped".into(),
            source: None,
        })?
    }

    /// One write of a session's chain: `build` sees the chain's head (the last version
    /// submitted and not yet answered, else the committed one) and returns the next
    /// version, or an outcome without a write. Every change of a record goes through
    /// here, so each version number is built by one write only.
    async fn chained(
        &self,
        id: &SessionId,
        now: Timestamp,
        build: impl FnOnce(Option<Snapshot>) -> Build,
    ) -> Result<Result<Cas, Update>, StoreError> {
        let chain = self.0.chains[usize::from(id.as_bytes()[15]) % CHAINS]
            .lock()
            .await;
        let base = self.0.pending.lock().get(id).cloned();
        let head = base.or_else(|| self.0.mirror.get_now(id, now));
        let next = match build(head) {
            Build::Write(next) => next,
            Build::Done(outcome) => return Ok(outcome),
        };
        let version = next.version();
        let next = Arc::new(next);
        let done = self.submit(Op::Cas(next.clone(), version.saturating_sub(1), now))?;
        self.0.pending.lock().insert(
            *id,
            Snapshot {
                record: next,
                last_activity: now,
            },
        );
        drop(chain);
        // Whatever happens next — an answer, or this future dropped by a client that
        // went away — the chain must not keep building on this version once it is
        // answered.
        let mut link = Link {
            pending: &self.0.pending,
            id: *id,
            version,
            failed: true,
        };
        let answer = Self::answer(done).await;
        link.failed = !matches!(answer, Ok(Done::Cas(Cas::Swapped(_))));
        drop(link);
        match answer? {
            Done::Cas(c) => Ok(Ok(c)),
            _ => unreachable!("a compare-and-swap answers Cas"),
        }
    }
}

/// What a write of a chain does, given the chain's head.
enum Build {
    /// Submit this version (its `version` is the head's + 1).
    Write(SessionRecord),
    /// Nothing to write: this outcome.
    Done(Result<Cas, Update>),
}

/// One submitted update of a chain. When dropped, forgets its version as the one to
/// build on; a link that did not commit (or whose outcome is unknown) also forgets the
/// later links built on it, which cannot commit either: their updates start again from
/// the committed state.
struct Link<'a> {
    pending: &'a Mutex<HashMap<SessionId, Snapshot>>,
    id: SessionId,
    version: u64,
    failed: bool,
}

impl Drop for Link<'_> {
    fn drop(&mut self) {
        let mut pending = self.pending.lock();
        let stale = pending.get(&self.id).is_some_and(|s| {
            s.record.version() == self.version || (self.failed && s.record.version() > self.version)
        });
        if stale {
            pending.remove(&self.id);
        }
    }
}

/// Reads the file into the mirror at open: expired records go, unreadable ones are
/// quarantined.
fn load(
    db: &Database,
    path: &Path,
    mirror: &MemoryStore,
    now: Timestamp,
) -> Result<(), StoreError> {
    let corrupt =
        |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{}: {e}", path.display()));
    let mut expired_sessions = Vec::new();
    let mut expired_otps = Vec::new();
    let mut unreadable: Vec<(Vec<u8>, Vec<u8>, bool)> = Vec::new();
    // Rows under another key than their record's (files written before rows were
    // keyed by creation time): old key, new key, value.
    let mut rekeyed: Vec<(Vec<u8>, [u8; 24], Vec<u8>)> = Vec::new();
    let txn = db.begin_write().map_err(|e| fault(path, e))?;
    {
        let sessions = txn.open_table(SESSIONS).map_err(|e| corrupt(&e))?;
        for row in sessions.iter().map_err(|e| corrupt(&e))? {
            let (key, value) = row.map_err(|e| corrupt(&e))?;
            match serde_json::from_slice::<Stored>(value.value()) {
                Ok(stored) if stored.record.is_expired(stored.last_activity, now) => {
                    expired_sessions.push(key.value().to_vec());
                }
                Ok(stored) => {
                    let id = stored.record.id();
                    let wanted = row_key(&id, stored.record.created());
                    match mirror.put(stored.record, stored.last_activity, now) {
                        Ok(_) if key.value() != wanted => {
                            rekeyed.push((key.value().to_vec(), wanted, value.value().to_vec()));
                        }
                        Ok(_) => {}
                        Err(StoreError::Duplicate(_)) => {
                            tracing::error!(
                                session = %id,
                                "a second record of one session was moved to the quarantine table"
                            );
                            unreadable.push((key.value().to_vec(), value.value().to_vec(), true));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    tracing::error!(
                        session = %sessiond_core::id::to_hex(key_id(key.value())),
                        error = %e,
                        "an unreadable session record was moved to the quarantine table"
                    );
                    unreadable.push((key.value().to_vec(), value.value().to_vec(), true));
                }
            }
        }
        let otps = txn.open_table(OTPS).map_err(|e| corrupt(&e))?;
        for row in otps.iter().map_err(|e| corrupt(&e))? {
            let (key, value) = row.map_err(|e| corrupt(&e))?;
            match serde_json::from_slice::<OtpRecord>(value.value()) {
                Ok(otp) if otp.is_valid(now) => mirror.insert_otp_now(otp),
                Ok(_) => expired_otps.push(key.value().to_vec()),
                Err(e) => {
                    tracing::error!(error = %e, "an unreadable OTP record was moved to the quarantine table");
                    unreadable.push((key.value().to_vec(), value.value().to_vec(), false));
                }
            }
        }
    }
    {
        let mut sessions = txn.open_table(SESSIONS).map_err(|e| corrupt(&e))?;
        let mut otps = txn.open_table(OTPS).map_err(|e| corrupt(&e))?;
        let mut quarantine = txn.open_table(QUARANTINE).map_err(|e| corrupt(&e))?;
        for key in &expired_sessions {
            sessions
                .remove(key.as_slice())
                .map_err(|e| fault(path, e))?;
        }
        for key in &expired_otps {
            otps.remove(key.as_slice()).map_err(|e| fault(path, e))?;
        }
        for (key, value, is_session) in &unreadable {
            let table = if *is_session {
                &mut sessions
            } else {
                &mut otps
            };
            table.remove(key.as_slice()).map_err(|e| fault(path, e))?;
            let tag = if *is_session { b's' } else { b'o' };
            let qkey = [&[tag], key.as_slice()].concat();
            quarantine
                .insert(qkey.as_slice(), value.as_slice())
                .map_err(|e| fault(path, e))?;
        }
        // After the quarantine: a second record may sit under the key a row moves to.
        for (old, new, value) in &rekeyed {
            sessions
                .remove(old.as_slice())
                .map_err(|e| fault(path, e))?;
            sessions
                .insert(new.as_slice(), value.as_slice())
                .map_err(|e| fault(path, e))?;
        }
    }
    txn.commit().map_err(|e| fault(path, e))?;
    if !expired_sessions.is_empty() {
        tracing::info!(
            expired = expired_sessions.len(),
            "removed sessions that expired while the server was down"
        );
    }
    Ok(())
}

/// The writer thread: owns the database and its log, commits writes in groups.
struct Writer {
    path: PathBuf,
    /// `None` after a failed write, until both are reopened (and the log applied).
    db: Option<(Database, Wal)>,
    /// When the database last held everything (a synced commit).
    checkpoint: std::time::Instant,
    /// The rows logged since the last checkpoint, with where the latest value of each
    /// lies in the log (`None`: deleted): what the next checkpoint writes to the
    /// database, reading the values back from the log. Holding the values here too
    /// would allocate (and give back) up to a log's worth of memory per checkpoint.
    pending: HashMap<(u8, Vec<u8>), Option<Span>>,
    mirror: MemoryStore,
    counters: Arc<Counters>,
    acks: Arc<Acks>,
}

/// The writes of one group, not yet committed: what they changed, for the later
/// writes of the group to see, and for the mirror once committed; the row changes,
/// for the log.
#[derive(Default)]
struct Group {
    sessions: HashMap<SessionId, Option<Snapshot>>,
    otps: HashMap<TokenHash, Option<OtpRecord>>,
    rows: Changes,
}

impl Writer {
    fn run(mut self, queue: &mpsc::Receiver<Job>) {
        loop {
            let next = if self.acks.pending() {
                queue.recv_timeout(Acks::STRAGGLERS)
            } else {
                queue
                    .recv()
                    .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            };
            let first = match next {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.acks.deliver();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            // Let the threads that submit writes run before the group closes: on a
            // busy core they are runnable right now (a wake-up does not preempt them),
            // and their writes join this group and its one sync instead of each
            // waiting for a sync of its own. Free when nothing else waits for the core.
            std::thread::yield_now();
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let results = self.commit_group(jobs.iter().map(|j| &j.op));
            let wakers = jobs
                .into_iter()
                .zip(results)
                .filter_map(|(job, result)| job.reply.answer(result))
                .collect();
            self.acks.wake(wakers);
            let due = self.db.as_ref().is_some_and(|(_, wal)| {
                wal.len() > 0
                    && (wal.len() >= CHECKPOINT_BYTES
                        || self.checkpoint.elapsed() >= CHECKPOINT_EVERY)
            });
            if due {
                self.checkpoint();
            }
        }
        // Closing: the database takes everything, the log starts empty next time.
        self.acks.deliver();
        self.checkpoint();
    }

    /// Writes the rows logged since the last checkpoint to the database in one synced
    /// commit, then empties the log. On failure the log keeps them: the database is
    /// reopened (and the log applied) before the next write.
    fn checkpoint(&mut self) {
        let Some((db, wal)) = self.db.as_mut() else {
            return;
        };
        let mut rows: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        // In key order: each page of the B-tree is visited once, in file order.
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let path = &self.path;
        let written = wal
            .contents()
            .map_err(|e| StoreError::Unavailable {
                message: format!("{}: {e}", Wal::path(path).display()),
                source: Some(Box::new(e)),
            })
            .and_then(|log| {
                let values = rows
                    .iter()
                    .map(|((t, k), span)| {
                        let value = match span {
                            Some(s) => Some(s.of(&log).ok_or_else(|| {
                                StoreError::Corrupt(format!(
                                    "{}: a logged value lies past its end",
                                    Wal::path(path).display()
                                ))
                            })?),
                            None => None,
                        };
                        Ok((*t, k.as_slice(), value))
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                write_rows(db, path, values.into_iter())
            });
        match written {
            Ok(()) => {
                wal.clear();
                self.checkpoint = std::time::Instant::now();
            }
            Err(e) => {
                tracing::error!(error = %e, "a checkpoint of the session database failed; it is reopened from the log before the next write");
                self.db = None;
            }
        }
    }

    /// Applies `ops` as one group: one log frame and one sync; every answer, or the
    /// log's error for all.
    fn commit_group<'a>(
        &mut self,
        ops: impl ExactSizeIterator<Item = &'a Op>,
    ) -> Vec<Result<Done, StoreError>> {
        let n = ops.len();
        let all_failed = |e: &StoreError| {
            (0..n)
                .map(|_| {
                    Err(StoreError::Unavailable {
                        message: e.to_string(),
                        source: None,
                    })
                })
                .collect()
        };
        if self.db.is_none() {
            match recover(&self.path) {
                Ok(opened) => {
                    tracing::info!(file = %self.path.display(), "the session database was reopened after an I/O error");
                    // Recovery applied the whole log, what was pending included.
                    self.pending.clear();
                    self.db = Some(opened);
                    self.checkpoint = std::time::Instant::now();
                }
                Err(e) => {
                    tracing::error!(error = %e, "the session database cannot be reopened yet");
                    std::thread::sleep(Duration::from_millis(50));
                    return all_failed(&e);
                }
            }
        }
        let mut group = Group::default();
        let answers: Vec<Done> = ops.map(|op| self.apply(op, &mut group)).collect();
        let (_, wal) = self.db.as_mut().expect("opened above");
        let rows = std::mem::take(&mut group.rows);
        let logged = if rows.is_empty() {
            Ok(Vec::new())
        } else {
            wal.append(rows)
        };
        let logged = match logged {
            Ok(logged) => logged,
            Err(e) => {
                // The log may end with part of this frame: reopening cuts it off.
                let e = StoreError::Unavailable {
                    message: format!("{}: {e}", Wal::path(&self.path).display()),
                    source: Some(Box::new(e)),
                };
                tracing::error!(error = %e, "a group could not be logged: its writes are refused; the database is reopened before the next one");
                self.db = None;
                return all_failed(&e);
            }
        };
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.counters.writes.fetch_add(n as u64, Ordering::Relaxed);
        for (table, key, span) in logged {
            self.pending.insert((table, key), span);
        }
        self.publish(group);
        answers.into_iter().map(Ok).collect()
    }

    /// The live view of a session: this group's writes first, then the mirror.
    fn current(&self, group: &Group, id: &SessionId, now: Timestamp) -> Option<Snapshot> {
        match group.sessions.get(id) {
            Some(s) => s
                .clone()
                .filter(|s| !s.record.is_expired(s.last_activity, now)),
            None => self.mirror.get_now(id, now),
        }
    }

    /// The creation time of the session stored under `id` (live or not purged yet) as
    /// the group leaves it so far: what its row's key holds.
    fn stored_created(&self, group: &Group, id: &SessionId) -> Option<Timestamp> {
        match group.sessions.get(id) {
            Some(s) => s.as_ref().map(|s| s.record.created()),
            None => self.mirror.created_now(id),
        }
    }

    /// Checks one write against the state the group leaves so far and records what it
    /// changes (for the group's later writes, the mirror and the log).
    fn apply(&self, op: &Op, group: &mut Group) -> Done {
        match op {
            Op::Insert(record, now) => {
                let id = record.id();
                if self.current(group, &id, *now).is_some() {
                    return Done::Duplicate;
                }
                let key = row_key(&id, record.created());
                // An expired session not purged yet, created at another time, has
                // another row.
                if let Some(old) = self.stored_created(group, &id)
                    && old != record.created()
                {
                    group.rows.delete(LOG_SESSIONS, &row_key(&id, old));
                }
                group.rows.put(LOG_SESSIONS, &key, encode(record, *now));
                let s = Snapshot {
                    record: record.clone(),
                    last_activity: *now,
                };
                group.sessions.insert(record.id(), Some(s.clone()));
                Done::Snapshot(s)
            }
            Op::Cas(record, expected, now) => {
                let Some(current) = self.current(group, &record.id(), *now) else {
                    return Done::Cas(Cas::NotFound);
                };
                if current.record.version() != *expected {
                    return Done::Cas(Cas::Conflict);
                }
                let last_activity = current.last_activity.max(*now);
                // The row keeps the key it was created under, whatever the new record
                // says.
                group.rows.put(
                    LOG_SESSIONS,
                    &row_key(&record.id(), current.record.created()),
                    encode(record, last_activity),
                );
                let s = Snapshot {
                    record: record.clone(),
                    last_activity,
                };
                group.sessions.insert(record.id(), Some(s.clone()));
                Done::Cas(Cas::Swapped(s))
            }
            Op::Remove(id) => {
                // Stored, live or not yet purged.
                let stored = self.stored_created(group, id);
                if let Some(created) = stored {
                    group.rows.delete(LOG_SESSIONS, &row_key(id, created));
                }
                group.sessions.insert(*id, None);
                Done::Removed(stored.is_some())
            }
            Op::InsertOtp(otp) => {
                let bytes = serde_json::to_vec(otp).expect("an OTP serializes");
                group.rows.put(LOG_OTPS, &otp.hash.0, bytes);
                group.otps.insert(otp.hash, Some(otp.clone()));
                Done::Nothing
            }
            Op::TakeOtp(hash, now) => {
                // The mirror holds every stored OTP: an unknown token (anyone can send
                // one with `?$4DSID=`) costs no write.
                let found = match group.otps.get(hash) {
                    Some(o) => o.clone(),
                    None => self.mirror.peek_otp_now(hash),
                };
                let Some(otp) = found else {
                    return Done::Otp(None);
                };
                group.rows.delete(LOG_OTPS, &hash.0);
                group.otps.insert(*hash, None);
                Done::Otp(otp.is_valid(*now).then_some(otp))
            }
            Op::Purge(now, dirty) => {
                let (sessions, otps) = self.mirror.purge_now(*now);
                for (id, created) in &sessions {
                    group.rows.delete(LOG_SESSIONS, &row_key(id, *created));
                }
                for id in dirty.keys() {
                    if let Some(s) = self.current(group, id, *now) {
                        group.rows.put(
                            LOG_SESSIONS,
                            &row_key(id, s.record.created()),
                            encode(&s.record, s.last_activity),
                        );
                    }
                }
                for hash in &otps {
                    group.rows.delete(LOG_OTPS, &hash.0);
                }
                Done::Purged(sessions.len())
            }
        }
    }

    /// After the commit: the mirror takes the group's changes, in order of effect.
    fn publish(&self, group: Group) {
        for (id, change) in group.sessions {
            match change {
                Some(s) => self.mirror.replace_now(s.record, s.last_activity),
                None => {
                    self.mirror.remove_now(&id);
                }
            }
        }
        for (hash, change) in group.otps {
            match change {
                Some(otp) => self.mirror.insert_otp_now(otp),
                None => {
                    self.mirror.remove_otp_now(&hash);
                }
            }
        }
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        let id = record.id();
        match self.write(Op::Insert(Arc::new(record), now)).await? {
            Done::Snapshot(s) => Ok(s),
            _ => Err(StoreError::Duplicate(id)),
        }
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
        let id = record.id();
        let outcome = self
            .chained(&id, now, |head| match head {
                None => Build::Done(Ok(Cas::NotFound)),
                Some(h) if h.record.version() != expected_version => Build::Done(Ok(Cas::Conflict)),
                Some(_) => Build::Write(record),
            })
            .await?;
        Ok(outcome.expect("a compare-and-swap has no update outcome"))
    }

    async fn update(
        &self,
        id: &SessionId,
        now: Timestamp,
        change: &mut UpdateFn<'_>,
    ) -> Result<Update, StoreError> {
        for attempt in 0..MAX_CAS_RETRIES {
            let build = |head: Option<Snapshot>| {
                let Some(current) = head else {
                    return Build::Done(Err(Update::NotFound));
                };
                let mut next = SessionRecord::clone(&current.record);
                if let Err(e) = change(&mut next) {
                    return Build::Done(Err(Update::Rejected(e)));
                }
                next.set_version(current.record.version() + 1);
                Build::Write(next)
            };
            match self.chained(id, now, build).await? {
                Ok(Cas::Swapped(s)) => return Ok(Update::Updated(s)),
                Ok(Cas::NotFound) => return Ok(Update::NotFound),
                // An earlier update of the chain failed, or another writer came first.
                Ok(Cas::Conflict) => backoff(attempt).await,
                Err(outcome) => return Ok(outcome),
            }
        }
        Err(StoreError::Contention(*id))
    }

    fn updates_in_place(&self) -> bool {
        true
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.0.dirty.lock().remove(id);
        match self.write(Op::Remove(*id)).await? {
            Done::Removed(b) => Ok(b),
            _ => unreachable!("a removal answers Removed"),
        }
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        Ok(self.0.mirror.list_now(now))
    }

    async fn insert_otp(&self, otp: OtpRecord, _now: Timestamp) -> Result<(), StoreError> {
        self.write(Op::InsertOtp(otp)).await.map(|_| ())
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        if self.0.mirror.peek_otp_now(hash).is_none() {
            // Unknown (anyone can send one with `?$4DSID=`): no write. An OTP inserted
            // by a write still in flight is not acknowledged yet, so not usable yet.
            return Ok(None);
        }
        match self.write(Op::TakeOtp(*hash, now)).await? {
            Done::Otp(o) => Ok(o),
            _ => unreachable!("taking an OTP answers Otp"),
        }
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        let dirty = std::mem::take(&mut *self.0.dirty.lock());
        let kept = dirty.clone();
        match self.write(Op::Purge(now, dirty)).await {
            Ok(Done::Purged(n)) => Ok(n),
            Ok(_) => unreachable!("a purge answers Purged"),
            Err(e) => {
                // Keep the activity for the next purge.
                let mut again = self.0.dirty.lock();
                for (id, at) in kept {
                    again.entry(id).or_insert(at);
                }
                Err(e)
            }
        }
    }
}
