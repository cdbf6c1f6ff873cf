//! Where sessions live, and the operations on them.
//!
//! | module | what lives there |
//! |---|---|
//! | [`store`] | the [`SessionStore`] trait every backend implements, [`Snapshot`], [`StoreError`] |
//! | [`fs`] | atomic file writes (temp, fsync, rename, fsync of the folder) |
//! | [`memory`] | [`MemoryStore`]: sharded in-process maps, lazy deadline index |
//! | [`sessions`] | [`Sessions`]: create, resolve a cookie, privileges with token rotation, atomic storage updates, OTPs, activity, the reaper |
//! | `conformance` | (feature `conformance`) [`conformance_tests!`], one suite for every store |

pub mod fs;
pub mod memory;
pub mod sessions;
pub mod store;

#[cfg(feature = "conformance")]
#[doc(hidden)]
pub mod conformance;

pub use memory::MemoryStore;
pub use sessions::{ActivityFilter, PrivilegeChange, Rotation, Sessions, SessionsError};
pub use store::{Cas, SessionStore, Snapshot, StoreError, Update, UpdateFn};
