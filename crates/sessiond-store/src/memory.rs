//! [`MemoryStore`]: sessions in process memory, volatile.
//!
//! Layout: sessions are split over [`SHARDS`] maps, each behind a `parking_lot`
//! mutex — nothing is ever awaited while one is held, so a blocking mutex is cheaper
//! than an async one and cannot deadlock across `.await`. Records are `Arc`-shared
//! snapshots: a read clones a pointer, a write installs a new record (copy on write).
//!
//! Expiry: a deadline index (a min-heap of `(deadline, id)`) is scheduled lazily.
//! Activity only moves an entry's `last_activity`; when the heap's top comes due, the
//! purge re-checks the real deadline and either removes the session or re-schedules
//! it once. The cost of a purge is proportional to what comes due, not to the number
//! of sessions, and a read never touches the index.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry as Slot;
use parking_lot::Mutex;
use sessiond_core::{OtpRecord, SessionId, SessionRecord, Timestamp, TokenHash};

use crate::store::{Cas, SessionStore, Snapshot, StoreError, Update, UpdateFn};

/// Number of shards (a power of two).
pub const SHARDS: usize = 64;

/// Session ids are uniformly random and never chosen by a client when they are
/// inserted, so their first eight bytes are already a good hash (and lookups of
/// client-chosen ids cannot degrade a table of random keys). Guest ids too: all but
/// their version bits and their tag (bytes 10–15) are random.
pub(crate) fn hash(id: &SessionId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// One session. The table stores entries without a separate key: the id is read
/// from the record, which keeps a bucket at 24 bytes.
struct Entry {
    record: Arc<SessionRecord>,
    last_activity: Timestamp,
    /// The deadline this session is filed under in the index (0 = not filed).
    scheduled: u64,
}

impl Entry {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            record: self.record.clone(),
            last_activity: self.last_activity,
        }
    }

    fn live(&self, now: Timestamp) -> bool {
        !self.record.is_expired(self.last_activity, now)
    }
}

#[derive(Default)]
struct Shard(HashTable<Entry>);

impl Shard {
    fn get(&self, id: &SessionId) -> Option<&Entry> {
        self.0.find(hash(id), |e| e.record.id() == *id)
    }

    fn get_mut(&mut self, id: &SessionId) -> Option<&mut Entry> {
        self.0.find_mut(hash(id), |e| e.record.id() == *id)
    }

    fn remove(&mut self, id: &SessionId) -> Option<Entry> {
        self.0
            .find_entry(hash(id), |e| e.record.id() == *id)
            .ok()
            .map(|o| o.remove().0)
    }
}

#[derive(Default)]
struct Inner {
    shards: Vec<Mutex<Shard>>,
    deadlines: Mutex<BinaryHeap<Reverse<(u64, SessionId)>>>,
    otps: Mutex<HashMap<TokenHash, OtpRecord>>,
    otp_deadlines: Mutex<BinaryHeap<Reverse<(u64, TokenHash)>>>,
}

/// Sessions and OTPs in memory. Cheap to clone (shared).
///
/// ```
/// use sessiond_core::{SessionPolicy, SessionRecord, Timestamp};
/// use sessiond_store::{MemoryStore, SessionStore};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let record = SessionRecord::new_web(Timestamp(0), &SessionPolicy::default(), None);
/// let id = record.id();
/// store.insert(record, Timestamp(0)).await.unwrap();
/// assert!(store.get(&id, Timestamp(1)).await.unwrap().is_some());
/// # });
/// ```
#[derive(Clone)]
pub struct MemoryStore(Arc<Inner>);

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let inner = Inner {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            ..Inner::default()
        };
        Self(Arc::new(inner))
    }

    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        &self.0.shards[usize::from(id.as_bytes()[15]) % SHARDS]
    }

    /// Number of sessions held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.0.shards.iter().map(|s| s.lock().0.len()).sum()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of entries in the deadline index (for tests of the purge's cost).
    pub fn scheduled(&self) -> usize {
        self.0.deadlines.lock().len()
    }

    fn schedule(&self, id: SessionId, at: Timestamp) {
        self.0.deadlines.lock().push(Reverse((at.0, id)));
    }

    /// Files `entry` earlier in the index when its deadline moved before the one it
    /// is filed under (a later deadline is handled lazily by the purge).
    fn reschedule_if_earlier(&self, id: SessionId, entry: &mut Entry) {
        if let Some(d) = entry.record.deadline(entry.last_activity)
            && (entry.scheduled == 0 || d.0 < entry.scheduled)
        {
            entry.scheduled = d.0;
            self.schedule(id, d);
        }
    }
}

/// The operations, synchronous: nothing here blocks on I/O, so the async trait
/// methods call them directly, and stores that keep a memory copy (the embedded
/// store) call them under their own write lock.
impl MemoryStore {
    /// Puts a session whose last activity was `last_activity` (a new one, or one
    /// loaded from disk).
    pub(crate) fn put(
        &self,
        record: SessionRecord,
        last_activity: Timestamp,
        now: Timestamp,
    ) -> Result<Snapshot, StoreError> {
        let id = record.id();
        let deadline = record.deadline(last_activity);
        let entry = Entry {
            record: Arc::new(record),
            last_activity,
            scheduled: deadline.map_or(0, |d| d.0),
        };
        let snapshot = entry.snapshot();
        {
            let mut shard = self.shard(&id).lock();
            match shard
                .0
                .entry(hash(&id), |e| e.record.id() == id, |e| hash(&e.record.id()))
            {
                Slot::Occupied(o) if o.get().live(now) => return Err(StoreError::Duplicate(id)),
                Slot::Occupied(mut o) => *o.get_mut() = entry,
                Slot::Vacant(v) => {
                    v.insert(entry);
                }
            }
        }
        if let Some(d) = deadline {
            self.schedule(id, d);
        }
        Ok(snapshot)
    }

    /// Puts a committed session, replacing whatever the id held (the embedded store's
    /// writer, after a commit).
    #[cfg(feature = "embedded")]
    pub(crate) fn replace_now(&self, record: Arc<SessionRecord>, last_activity: Timestamp) {
        let id = record.id();
        let deadline = record.deadline(last_activity);
        let mut shard = self.shard(&id).lock();
        match shard
            .0
            .entry(hash(&id), |e| e.record.id() == id, |e| hash(&e.record.id()))
        {
            Slot::Occupied(mut o) => {
                let e = o.get_mut();
                e.record = record;
                e.last_activity = e.last_activity.max(last_activity);
                self.reschedule_if_earlier(id, e);
            }
            Slot::Vacant(v) => {
                v.insert(Entry {
                    record,
                    last_activity,
                    scheduled: deadline.map_or(0, |d| d.0),
                });
                drop(shard);
                if let Some(d) = deadline {
                    self.schedule(id, d);
                }
            }
        }
    }

    pub(crate) fn get_now(&self, id: &SessionId, now: Timestamp) -> Option<Snapshot> {
        self.shard(id)
            .lock()
            .get(id)
            .filter(|e| e.live(now))
            .map(Entry::snapshot)
    }

    pub(crate) fn touch_now(&self, id: &SessionId, now: Timestamp) -> Option<Snapshot> {
        let mut shard = self.shard(id).lock();
        shard.get_mut(id).filter(|e| e.live(now)).map(|e| {
            e.last_activity = e.last_activity.max(now);
            e.snapshot()
        })
    }

    pub(crate) fn cas_now(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Cas {
        let id = record.id();
        let mut shard = self.shard(&id).lock();
        let Some(entry) = shard.get_mut(&id).filter(|e| e.live(now)) else {
            return Cas::NotFound;
        };
        if entry.record.version() != expected_version {
            return Cas::Conflict;
        }
        entry.record = Arc::new(record);
        entry.last_activity = entry.last_activity.max(now);
        self.reschedule_if_earlier(id, entry);
        Cas::Swapped(entry.snapshot())
    }

    /// The creation time of the session held under `id`, live or not yet purged.
    #[cfg(feature = "embedded")]
    pub(crate) fn created_now(&self, id: &SessionId) -> Option<Timestamp> {
        self.shard(id).lock().get(id).map(|e| e.record.created())
    }

    pub(crate) fn remove_now(&self, id: &SessionId) -> bool {
        self.shard(id).lock().remove(id).is_some()
    }

    pub(crate) fn list_now(&self, now: Timestamp) -> Vec<Snapshot> {
        let mut out = Vec::new();
        for shard in &self.0.shards {
            out.extend(
                shard
                    .lock()
                    .0
                    .iter()
                    .filter(|e| e.live(now))
                    .map(Entry::snapshot),
            );
        }
        out
    }

    pub(crate) fn insert_otp_now(&self, otp: OtpRecord) {
        self.0
            .otp_deadlines
            .lock()
            .push(Reverse((otp.expires.0, otp.hash)));
        self.0.otps.lock().insert(otp.hash, otp);
    }

    pub(crate) fn take_otp_now(&self, hash: &TokenHash, now: Timestamp) -> Option<OtpRecord> {
        self.remove_otp_now(hash).filter(|o| o.is_valid(now))
    }

    /// An OTP, whether or not it is still valid, left in place.
    #[cfg(feature = "embedded")]
    pub(crate) fn peek_otp_now(&self, hash: &TokenHash) -> Option<OtpRecord> {
        self.0.otps.lock().get(hash).cloned()
    }

    /// Removes an OTP whether or not it is still valid.
    pub(crate) fn remove_otp_now(&self, hash: &TokenHash) -> Option<OtpRecord> {
        self.0.otps.lock().remove(hash)
    }

    /// Frees what came due; returns the sessions removed (id and creation time) and
    /// the hashes of the OTPs removed.
    pub(crate) fn purge_now(
        &self,
        now: Timestamp,
    ) -> (Vec<(SessionId, Timestamp)>, Vec<TokenHash>) {
        let mut removed = Vec::new();
        loop {
            let due = {
                let mut heap = self.0.deadlines.lock();
                match heap.peek() {
                    Some(Reverse((at, _))) if *at <= now.0 => heap.pop().map(|Reverse(x)| x),
                    _ => None,
                }
            };
            let Some((at, id)) = due else { break };
            let mut shard = self.shard(&id).lock();
            let Some(entry) = shard.get_mut(&id) else {
                continue;
            };
            if entry.scheduled != at {
                continue; // stale index entry: the session was filed again since
            }
            match entry.record.deadline(entry.last_activity) {
                Some(d) if d <= now => {
                    removed.push((id, entry.record.created()));
                    shard.remove(&id);
                }
                Some(d) => {
                    entry.scheduled = d.0;
                    drop(shard);
                    self.schedule(id, d);
                }
                None => entry.scheduled = 0,
            }
        }
        let mut otps_removed = Vec::new();
        loop {
            let due = {
                let mut heap = self.0.otp_deadlines.lock();
                match heap.peek() {
                    Some(Reverse((at, _))) if *at <= now.0 => heap.pop().map(|Reverse(x)| x),
                    _ => None,
                }
            };
            let Some((_, hash)) = due else { break };
            let mut otps = self.0.otps.lock();
            if otps.get(&hash).is_some_and(|o| !o.is_valid(now)) {
                otps.remove(&hash);
                otps_removed.push(hash);
            }
        }
        (removed, otps_removed)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn insert(&self, record: SessionRecord, now: Timestamp) -> Result<Snapshot, StoreError> {
        self.put(record, now, now)
    }

    async fn get(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.get_now(id, now))
    }

    async fn touch(&self, id: &SessionId, now: Timestamp) -> Result<Option<Snapshot>, StoreError> {
        Ok(self.touch_now(id, now))
    }

    async fn compare_and_swap(
        &self,
        record: SessionRecord,
        expected_version: u64,
        now: Timestamp,
    ) -> Result<Cas, StoreError> {
        Ok(self.cas_now(record, expected_version, now))
    }

    async fn update(
        &self,
        id: &SessionId,
        now: Timestamp,
        change: &mut UpdateFn<'_>,
    ) -> Result<Update, StoreError> {
        let mut shard = self.shard(id).lock();
        let Some(entry) = shard.get_mut(id).filter(|e| e.live(now)) else {
            return Ok(Update::NotFound);
        };
        let mut next = SessionRecord::clone(&entry.record);
        if let Err(e) = change(&mut next) {
            return Ok(Update::Rejected(e));
        }
        next.set_version(entry.record.version() + 1);
        entry.record = Arc::new(next);
        entry.last_activity = entry.last_activity.max(now);
        self.reschedule_if_earlier(*id, entry);
        Ok(Update::Updated(entry.snapshot()))
    }

    fn updates_in_place(&self) -> bool {
        true
    }

    async fn remove(&self, id: &SessionId) -> Result<bool, StoreError> {
        Ok(self.remove_now(id))
    }

    async fn list(&self, now: Timestamp) -> Result<Vec<Snapshot>, StoreError> {
        Ok(self.list_now(now))
    }

    async fn insert_otp(&self, otp: OtpRecord, _now: Timestamp) -> Result<(), StoreError> {
        self.insert_otp_now(otp);
        Ok(())
    }

    async fn take_otp(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<OtpRecord>, StoreError> {
        Ok(self.take_otp_now(hash, now))
    }

    async fn purge_expired(&self, now: Timestamp) -> Result<usize, StoreError> {
        Ok(self.purge_now(now).0.len())
    }
}
