//! 4D mobile-app sessions (the `/mobileapp/` protocol of 4D-generated iOS and
//! Android apps), without HTTP: the server crate maps requests onto these calls.
//!
//! | module | what lives there |
//! |---|---|
//! | [`token`] | session ids (random or 4D's SHA-1) and tokens (base64 JSON) |
//! | [`file`](mod@file) | session files: fields, validation (`mobi` 1–4), safe folder names |
//! | [`hook`] | the authentication hook trait and the config [`hook::Policy`] |
//! | [`activation`] | e-mail validation links for pending sessions (SMTP or an outbox) |
//! | [`apps`] | [`MobileSessions`]: memory + files, authenticate, authorize, logout, `$userInfo`, refresh |

pub mod activation;
pub mod apps;
pub mod file;
pub mod hook;
pub mod token;

pub use apps::{
    AuthAnswer, Authorized, MobileChange, MobileConfig, MobileError, MobileLimits, MobileSessions,
    RefreshReport, Relogin,
};
pub use file::{SessionFile, Status};
pub use hook::{AuthHook, HookResult, Policy};
pub use token::IdMode;
