//! [`UnstoredGuests`]: the guest sessions this node has issued or seen that hold
//! nothing yet and are therefore not in the store ([`SessionPolicy::lazy_guests`]).
//!
//! A guest's cookie (a guest ticket) is enough for its own requests; this registry
//! lets the service API reach such a guest by its id too (reads see an empty guest,
//! the first change stores it with its real creation time), and answers 404 once it
//! expired. It is bounded: past [`MAX_UNSTORED_GUESTS`] entries the oldest go (their
//! tickets keep working; only by-id access waits for the guest's next request).
//!
//! [`SessionPolicy::lazy_guests`]: sessiond_core::SessionPolicy::lazy_guests

use std::collections::VecDeque;
use std::net::IpAddr;

use hashbrown::HashTable;
use parking_lot::Mutex;
use sessiond_core::{SessionId, Timestamp, TokenHash};

use crate::memory::hash;

/// Entries kept at most (about 90 bytes each).
pub const MAX_UNSTORED_GUESTS: usize = 200_000;
const SHARDS: usize = 16;

/// What this node knows of an unstored guest: enough to build its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guest {
    /// Creation.
    pub created: Timestamp,
    /// Last activity.
    pub last: Timestamp,
    /// The client's address, if known.
    pub ip: Option<IpAddr>,
    /// The hash of its ticket's secret (its one token once stored), kept so that
    /// building the record takes no MAC.
    pub token: TokenHash,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    guest: Guest,
    /// Position in the eviction queue (entries seen again are queued again).
    seq: u64,
}

#[derive(Debug, Default)]
struct Shard {
    /// Keyed by id, hashed as the memory store hashes ids (no SipHash per call).
    map: HashTable<(SessionId, Entry)>,
    queue: VecDeque<(u64, SessionId)>,
    next: u64,
}

/// Unstored guests by id. Sharded plain mutexes, each
/// held for one map operation, never across an `.await`.
#[derive(Debug)]
pub struct UnstoredGuests {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for UnstoredGuests {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl UnstoredGuests {
    fn shard(&self, id: &SessionId) -> &Mutex<Shard> {
        // Not a byte of the hash (bytes 0–7), so that it spreads over each shard.
        &self.shards[usize::from(id.as_bytes()[15]) % SHARDS]
    }

    /// Notes `guest` under `id` (a later last activity wins; an address already
    /// known is kept when `guest.ip` is `None`).
    pub fn note(&self, id: SessionId, mut guest: Guest) {
        let mut s = self.shard(&id).lock();
        let seq = s.next;
        s.next += 1;
        match s.map.entry(hash(&id), |e| e.0 == id, |e| hash(&e.0)) {
            hashbrown::hash_table::Entry::Occupied(mut o) => {
                let known = &mut o.get_mut().1;
                guest.last = known.guest.last.max(guest.last);
                guest.ip = guest.ip.or(known.guest.ip);
                *known = Entry { guest, seq };
            }
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert((id, Entry { guest, seq }));
            }
        }
        s.queue.push_back((seq, id));
        while s.map.len() > MAX_UNSTORED_GUESTS / SHARDS
            || s.queue.len() > 2 * MAX_UNSTORED_GUESTS / SHARDS
        {
            let Some((seq, old)) = s.queue.pop_front() else {
                break;
            };
            if let Ok(e) = s
                .map
                .find_entry(hash(&old), |e| e.0 == old && e.1.seq == seq)
            {
                e.remove();
            }
        }
    }

    /// Guest `id`, if this node knows it.
    pub fn get(&self, id: &SessionId) -> Option<Guest> {
        let s = self.shard(id).lock();
        s.map.find(hash(id), |e| e.0 == *id).map(|e| e.1.guest)
    }

    /// Forgets guest `id` (it is stored now, or ended).
    pub fn forget(&self, id: &SessionId) {
        if let Ok(e) = self
            .shard(id)
            .lock()
            .map
            .find_entry(hash(id), |e| e.0 == *id)
        {
            e.remove();
        }
    }

    /// Every known guest.
    pub fn all(&self) -> Vec<(SessionId, Guest)> {
        let mut out = Vec::new();
        for s in &self.shards {
            out.extend(s.lock().map.iter().map(|(id, e)| (*id, e.guest)));
        }
        out
    }

    /// How many guests are known.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(created: u64, last: u64, ip: Option<IpAddr>) -> Guest {
        Guest {
            created: Timestamp(created),
            last: Timestamp(last),
            ip,
            token: TokenHash::of(b"ticket secret"),
        }
    }

    #[test]
    fn bounded_oldest_first_keeping_the_latest_activity_and_known_address() {
        let g = UnstoredGuests::default();
        let first = SessionId::random();
        g.note(first, guest(1, 1, None));
        for i in 0..2 * MAX_UNSTORED_GUESTS as u64 {
            g.note(SessionId::random(), guest(i, i, None));
        }
        assert!(g.len() <= MAX_UNSTORED_GUESTS);
        assert!(g.get(&first).is_none());
        let kept = SessionId::random();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        g.note(kept, guest(5, 9, ip));
        g.note(kept, guest(5, 7, None));
        assert_eq!(g.get(&kept), Some(guest(5, 9, ip)));
        g.forget(&kept);
        assert!(g.get(&kept).is_none());
    }
}
