//! The session model of sessiond: 4D's `Session` semantics with no I/O and no runtime.
//!
//! | module | what lives there |
//! |---|---|
//! | [`session`] | [`SessionRecord`], [`SessionKind`], every `4D.Session` member's rule per kind |
//! | [`roles`] | roles.json: privileges, `includes`, roles, forceLogin; [`Roles::resolve`] |
//! | [`privileges`] | the three argument forms of `setPrivileges()` |
//! | [`policy`] | [`SessionPolicy`]: the named choices where 4D's docs are silent |
//! | [`storage`] | storage updates (merge patch, increment) applied atomically by stores |
//! | [`otp`] | one-time tokens (`createOTP` / `restore`) |
//! | [`tokens`] | the token model: which cookie tokens open a session, how they are born and end |
//! | [`promotion`] | request-scoped `promote` / `demote` |
//! | [`protocol`] | the remote-client WebSocket protocol: messages and error codes |
//! | [`id`] | session ids, cookie tokens, OTP tokens, hashing (OS CSPRNG) |
//! | [`clock`] | [`Timestamp`], [`Clock`], [`ManualClock`] for tests |

pub mod clock;
mod error;
pub mod id;
pub mod otp;
pub mod policy;
pub mod privileges;
pub mod promotion;
pub mod protocol;
pub mod roles;
pub mod session;
pub mod storage;
pub mod tokens;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::Error;
pub use id::{CookieToken, GuestKey, OtpToken, SessionId, TokenHash};
pub use otp::OtpRecord;
pub use policy::{MAX_STORAGE_DEPTH, SessionPolicy, SetPrivilegesMode};
pub use privileges::PrivilegeInput;
pub use promotion::Promotions;
pub use roles::{Resolved, Roles, RolesWarning};
pub use session::{DesktopInfo, SessionKind, SessionRecord, SetPrivilegesOutcome};
pub use tokens::{Rights, TokenSlot, TokenState, Tokens};

#[cfg(test)]
mod spec_cases;
