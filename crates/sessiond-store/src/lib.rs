//! Where sessions live, and the operations on them.
//!
//! | module | what lives there |
//! |---|---|
//! | [`store`] | the [`SessionStore`] trait every backend implements, [`Snapshot`], [`StoreError`] |
//! | `embedded` | (feature `embedded`) `EmbeddedStore`: a redb file mirrored in memory; survives restarts and `kill -9`; its write-ahead log (`wal`) and its writer's answers, one wake-up per group (`ack`) |
//! | [`fs`] | private, atomic file writes (temp, fsync, rename, fsync of the folder) |
//! | [`guests`] | [`guests::UnstoredGuests`]: guest sessions not stored yet, by id |
//! | [`memory`] | [`MemoryStore`]: sharded in-process maps, lazy deadline index |
//! | `redis` | (feature `redis`) `RedisStore`: all state in Redis/Valkey, Lua compare-and-set, TTL expiry — for several nodes |
//! | [`sessions`] | [`Sessions`]: create, resolve a cookie, privileges and the token rules (docs/tokens.md), atomic storage updates, OTPs, activity, the reaper |
//! | `conformance` | (feature `conformance`) `conformance_tests!`, one suite for every store; `FaultyStore`, staleness, test Redis servers and clusters |

#[cfg(feature = "embedded")]
mod ack;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod fs;
pub mod guests;
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sessions;
pub mod store;
#[cfg(feature = "embedded")]
mod wal;

#[cfg(feature = "conformance")]
#[doc(hidden)]
pub mod conformance;

#[cfg(feature = "embedded")]
pub use embedded::{CommitStats, EmbeddedStore};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::{NearCacheConfig, RedisConfig, RedisStore};
pub use sessions::{
    ActivityFilter, OtpRefusal, PrivilegeChange, Requester, Resolved, Sessions, SessionsError,
};
pub use store::{Cas, SessionStore, Snapshot, StoreError, Update, UpdateFn};
