//! The core error type.

use crate::SessionKind;

/// Errors of the session model. Each is a bad input, not a fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session id is not 32 hex digits.
    #[error("invalid session id: expected 32 hexadecimal digits")]
    InvalidId,
    /// A cookie token or OTP is malformed.
    #[error("invalid token")]
    InvalidToken,
    /// A `setPrivileges` argument has the wrong shape.
    #[error("invalid privileges: {0}")]
    InvalidPrivileges(String),
    /// A storage update does not apply.
    #[error("invalid storage update: {0}")]
    InvalidStorage(String),
    /// The storage would exceed [`crate::SessionPolicy::max_storage_bytes`].
    #[error("the storage would take {size} bytes; the limit is {limit}")]
    StorageTooLarge {
        /// Its size as JSON, bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The storage would nest deeper than [`crate::SessionPolicy::max_storage_depth`].
    #[error("the storage would nest deeper than {limit} levels")]
    StorageTooDeep {
        /// The limit.
        limit: usize,
    },
    /// The storage changed since the version the caller read.
    #[error("storage version is {actual}, not {expected}")]
    VersionMismatch {
        /// The version the caller expected.
        expected: u64,
        /// The current version.
        actual: u64,
    },
    /// The member does not exist for this kind of session.
    #[error("{member} is not available on a {} session", kind.as_str())]
    NotSupported {
        /// The member.
        member: &'static str,
        /// The session's kind.
        kind: SessionKind,
    },
    /// roles.json cannot be used.
    #[error("{file}:{line}:{column}: {message}")]
    RolesFile {
        /// The file.
        file: String,
        /// 1-based line (0 when not tied to a position).
        line: usize,
        /// 1-based column (0 when not tied to a position).
        column: usize,
        /// What is wrong.
        message: String,
    },
}
