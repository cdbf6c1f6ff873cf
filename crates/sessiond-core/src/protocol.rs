//! The remote-client protocol (`/remote`, WebSocket, JSON text frames), version 1:
//! the messages both ends exchange and the error codes. `docs/remote-protocol.md`
//! describes it for client authors in any language.
//!
//! Every frame is one JSON object with a `type`. The client opens with
//! [`ClientMessage::Hello`]; the server answers [`ServerMessage::Welcome`] or an
//! [`ServerMessage::Error`] and closes.
//!
//! ```
//! use sessiond_core::protocol::{ClientMessage, parse_client};
//! let frame = r#"{"type":"call","id":1,"function":"session.info"}"#;
//! let ClientMessage::Call { id, function, .. } = parse_client(frame).unwrap() else { panic!() };
//! assert_eq!((id, function.as_str()), (1, "session.info"));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SessionId;

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The WebSocket subprotocol name (optional in the handshake).
pub const SUBPROTOCOL: &str = "sessiond.remote.v1";

/// The operating system family of a client machine (`info.hostType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostType {
    /// Windows.
    Windows,
    /// macOS.
    Mac,
    /// Linux.
    Linux,
}

impl HostType {
    /// The `info.hostType` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Windows => "windows",
            Self::Mac => "mac",
            Self::Linux => "linux",
        }
    }

    /// The family of the machine this code runs on (Linux for other Unixes).
    pub fn this_machine() -> Self {
        match std::env::consts::OS {
            "windows" => Self::Windows,
            "macos" => Self::Mac,
            _ => Self::Linux,
        }
    }
}

/// The opening message of a client. `Debug` and `Display` never show the password.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    /// The protocol version the client speaks ([`VERSION`]).
    pub protocol: u32,
    /// The user name of the users file.
    pub user_name: String,
    /// Its password (checked, never stored).
    pub password: String,
    /// `info.machineName`.
    pub machine_name: String,
    /// `info.systemUserName`.
    pub system_user_name: String,
    /// `info.hostType`.
    pub host_type: HostType,
    /// Set when reconnecting: the `persistentID` the server gave this login.
    #[serde(
        default,
        rename = "persistentID",
        skip_serializing_if = "Option::is_none"
    )]
    pub persistent_id: Option<SessionId>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("protocol", &self.protocol)
            .field("user_name", &self.user_name)
            .field("password", &"<hidden>")
            .field("machine_name", &self.machine_name)
            .field("system_user_name", &self.system_user_name)
            .field("host_type", &self.host_type)
            .field("persistent_id", &self.persistent_id)
            .finish()
    }
}

impl std::fmt::Display for Hello {
    /// Never shows the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hello from {}@{}", self.user_name, self.machine_name)
    }
}

/// A message from the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    /// Opens (or resumes) the session; first message only.
    Hello(Hello),
    /// Runs a server-side function in the session ("Execute on server").
    Call {
        /// Chosen by the client; echoed in the answer. Unique among its running calls.
        id: u64,
        /// The registered name.
        function: String,
        /// Parameters (any JSON; `null` when absent).
        #[serde(default)]
        params: Value,
    },
    /// The client machine goes to sleep: the session becomes `sleeping`.
    Sleep {},
    /// Clean close: the session ends now.
    Goodbye {},
}

impl ClientMessage {
    /// The `type` texts the protocol knows.
    pub const TYPES: [&'static str; 4] = ["hello", "call", "sleep", "goodbye"];
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    /// The answer to a hello.
    #[serde(rename_all = "camelCase")]
    Welcome {
        /// The protocol version of the server.
        protocol: u32,
        /// `Session.id`.
        id: SessionId,
        /// The `persistentID` to present when reconnecting.
        #[serde(rename = "persistentID")]
        persistent_id: SessionId,
        /// Whether an existing session was resumed.
        resumed: bool,
        /// `Session.info`.
        info: Value,
    },
    /// A call's return value.
    Result {
        /// The call's id.
        id: u64,
        /// What the function returned.
        value: Value,
    },
    /// Something went wrong; `id` names the call when a call failed.
    Error {
        /// The call's id, when the error answers a call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// A stable code.
        code: ErrorCode,
        /// What happened, for people.
        message: String,
    },
    /// The session is now `sleeping`; the client may close the connection.
    Sleeping,
    /// The session ended (goodbye, admin drop) or moved to another connection; the
    /// server closes the connection next.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// Why the server closes a session's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CloseReason {
    /// The client said goodbye.
    Goodbye,
    /// An administrator dropped the session.
    Dropped,
    /// The same login reconnected on another connection.
    Replaced,
    /// A sleeping or postponed session reached its timeout.
    Expired,
    /// The server shuts down.
    Shutdown,
}

/// The error codes of [`ServerMessage::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, binary frame, or fields of the wrong shape.
    BadFrame,
    /// A frame over the size limit.
    FrameTooLarge,
    /// A `type` this version does not know.
    UnknownType,
    /// The first message must be a hello (and only the first).
    HelloRequired,
    /// The client speaks another protocol version.
    UnsupportedProtocol,
    /// Wrong user name or password.
    InvalidCredentials,
    /// Too many failed passwords for this user from this address; wait.
    TooManyAttempts,
    /// Too many password checks at once on the server; retry in a moment.
    Busy,
    /// The persistentID is unknown, expired, or belongs to another login.
    UnknownPersistentId,
    /// The open hook refused the connection.
    Refused,
    /// No function of that name.
    UnknownFunction,
    /// A built-in function clients may not call (the server's `[remote]
    /// client_builtins` does not list it).
    NotAllowed,
    /// The function rejected its parameters.
    InvalidParams,
    /// The function failed.
    FunctionFailed,
    /// Too many calls running on this connection.
    TooManyCalls,
    /// A call id already running on this connection.
    DuplicateCallId,
    /// The session store cannot be reached.
    StoreUnavailable,
    /// The session no longer exists.
    SessionClosed,
    /// A server fault.
    Internal,
}

impl ErrorCode {
    /// The code's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnknownType => "unknown_type",
            Self::HelloRequired => "hello_required",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyAttempts => "too_many_attempts",
            Self::Busy => "busy",
            Self::UnknownPersistentId => "unknown_persistent_id",
            Self::Refused => "refused",
            Self::UnknownFunction => "unknown_function",
            Self::NotAllowed => "not_allowed",
            Self::InvalidParams => "invalid_params",
            Self::FunctionFailed => "function_failed",
            Self::TooManyCalls => "too_many_calls",
            Self::DuplicateCallId => "duplicate_call_id",
            Self::StoreUnavailable => "store_unavailable",
            Self::SessionClosed => "session_closed",
            Self::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses a client frame, telling an unknown `type` ([`ErrorCode::UnknownType`]) from
/// a malformed frame ([`ErrorCode::BadFrame`]).
pub fn parse_client(text: &str) -> Result<ClientMessage, (ErrorCode, String)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (ErrorCode::BadFrame, format!("not JSON: {e}")))?;
    let Some(kind) = value.get("type").and_then(Value::as_str) else {
        return Err((
            ErrorCode::BadFrame,
            "a frame is a JSON object with a string \"type\"".into(),
        ));
    };
    let Some(&kind) = ClientMessage::TYPES.iter().find(|t| **t == kind) else {
        return Err((
            ErrorCode::UnknownType,
            format!(
                "unknown message type {:?}; this server knows {}",
                kind.chars().take(64).collect::<String>(),
                ClientMessage::TYPES.join(", ")
            ),
        ));
    };
    serde_json::from_value(value).map_err(|e| (ErrorCode::BadFrame, format!("{kind}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_with_the_wire_names() {
        let text = r#"{"type":"hello","protocol":1,"userName":"ann","password":"pw","machineName":"m","systemUserName":"ann","hostType":"mac","persistentID":"0123456789ABCDEF0123456789ABCDEF"}"#;
        let ClientMessage::Hello(h) = parse_client(text).unwrap() else {
            panic!("not a hello")
        };
        assert_eq!(h.host_type, HostType::Mac);
        assert!(h.persistent_id.is_some());
        assert!(!h.to_string().contains("pw"), "Display hides the password");
        assert!(
            !format!("{h:?}").contains("\"pw\""),
            "Debug hides the password"
        );
        let back = serde_json::to_value(ClientMessage::Hello(h)).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn unknown_types_and_malformed_frames_get_their_codes() {
        let code = |t: &str| parse_client(t).unwrap_err().0;
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code("not json"), ErrorCode::BadFrame);
        assert_eq!(code("[1]"), ErrorCode::BadFrame);
        assert_eq!(
            code(r#"{"type":"call","id":-1,"function":"f"}"#),
            ErrorCode::BadFrame
        );
        assert_eq!(code(r#"{"type":"call","id":1}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"type":"sleep","x":1}"#), ErrorCode::BadFrame);
        assert_eq!(
            code(
                r#"{"type":"hello","protocol":1,"userName":"a","password":"p","machineName":"m","systemUserName":"s","hostType":"amiga"}"#
            ),
            ErrorCode::BadFrame
        );
    }

    #[test]
    fn server_messages_use_camel_case_tags() {
        let m = ServerMessage::Error {
            id: Some(3),
            code: ErrorCode::UnknownFunction,
            message: "no".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"error","id":3,"code":"unknown_function","message":"no"}"#
        );
        let closed = ServerMessage::Closed {
            reason: CloseReason::Dropped,
        };
        assert_eq!(
            serde_json::to_string(&closed).unwrap(),
            r#"{"type":"closed","reason":"dropped"}"#
        );
    }
}
