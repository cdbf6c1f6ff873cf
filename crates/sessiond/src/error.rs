//! [`ApiError`]: the one error type of every HTTP surface, and [`ErrorCode`]: every
//! code it can carry, with its status. The body is always
//! `{"error": <code>, "message": <text>}` ([`ErrorBody`]); causes (file paths, a
//! library's text) go to the log, never to the client.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use sessiond_core::Error as CoreError;
use sessiond_store::{OtpRefusal, SessionsError, StoreError};

/// Declares [`ErrorCode`] from one table: variant, wire name, status, meaning.
macro_rules! error_codes {
    ($($variant:ident = $name:literal, $status:ident: $doc:literal;)*) => {
        /// Every machine-readable error code of sessiond's HTTP surfaces (the
        /// `"error"` member of an error body), with the status it is answered with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(Self::$variant),*];

            /// The code as sent (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The status the code is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(Self::$variant => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    BadRequest = "bad_request", BAD_REQUEST: "The request is malformed (a path, query or value is invalid).";
    InvalidJson = "invalid_json", BAD_REQUEST: "The body is not the JSON the endpoint takes.";
    BodyTooLarge = "body_too_large", PAYLOAD_TOO_LARGE: "The request body is over the limit.";
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE: "The body is not `application/json`.";
    Unauthorized = "unauthorized", UNAUTHORIZED: "Credentials (API key, admin sign-in, mobile token) are missing or wrong.";
    NotFound = "not_found", NOT_FOUND: "No such endpoint, or the feature behind it is not configured.";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED: "The endpoint does not take that method.";
    SessionNotFound = "session_not_found", NOT_FOUND: "No such session (unknown or expired).";
    VersionMismatch = "version_mismatch", CONFLICT: "`If-Match` names another storage version.";
    InvalidPrivileges = "invalid_privileges", BAD_REQUEST: "A privilege or role argument is malformed.";
    InvalidStorageUpdate = "invalid_storage_update", BAD_REQUEST: "The storage update cannot apply (e.g. incrementing a string).";
    StorageTooLarge = "storage_too_large", PAYLOAD_TOO_LARGE: "The storage would be over `max_storage_bytes`.";
    StorageTooDeep = "storage_too_deep", BAD_REQUEST: "The storage would be nested deeper than `max_storage_depth`.";
    NotSupported = "not_supported", CONFLICT: "The operation does not apply to this kind of session.";
    OtpInvalid = "otp_invalid", NOT_FOUND: "The one-time token is unknown, used or expired.";
    OtpSessionEnded = "otp_session_ended", NOT_FOUND: "The session that created the one-time token has ended.";
    StoreUnavailable = "store_unavailable", SERVICE_UNAVAILABLE: "The session store cannot be reached; retry.";
    Unavailable = "unavailable", SERVICE_UNAVAILABLE: "Mobile logins cannot be stored right now; retry.";
    Busy = "busy", SERVICE_UNAVAILABLE: "Every password check is taken; retry after `Retry-After`.";
    TooManyAttempts = "too_many_attempts", TOO_MANY_REQUESTS: "Too many failed password checks; retry after `Retry-After`.";
    TooMany = "too_many", TOO_MANY_REQUESTS: "Over a rate limit (mobile logins, validation mails).";
    TooLarge = "too_large", PAYLOAD_TOO_LARGE: "A mobile login field or file is over its limit.";
    Internal = "internal", INTERNAL_SERVER_ERROR: "A fault of the server (details in its log).";
    LoginDisabled = "login_disabled", NOT_FOUND: "The built-in login has no users file.";
    InvalidCredentials = "invalid_credentials", UNAUTHORIZED: "Wrong user name or password.";
    Csrf = "csrf", FORBIDDEN: "A console change without its `X-CSRF-Token`.";
    CannotDrop = "cannot_drop", CONFLICT: "The stored-procedures session cannot be dropped.";
    UnknownProcedure = "unknown_procedure", NOT_FOUND: "No server-side function or stored procedure of that name.";
    InvalidParams = "invalid_params", BAD_REQUEST: "The function's parameters are refused.";
    ProcedureFailed = "procedure_failed", UNPROCESSABLE_ENTITY: "The function answered an error.";
    WebsocketRequired = "websocket_required", UPGRADE_REQUIRED: "`/remote` takes WebSocket connections only.";
    MobileDisabled = "mobile_disabled", NOT_FOUND: "Mobile apps are not enabled.";
    MobileSessionNotFound = "mobile_session_not_found", NOT_FOUND: "No such mobile session file.";
    Refused = "refused", UNAUTHORIZED: "The mobile login was refused.";
    IdentityUnsendable = "identity_unsendable", BAD_GATEWAY: "The session's identity cannot be sent to the upstream as a header.";
    UpstreamUnavailable = "upstream_unavailable", BAD_GATEWAY: "The mobile upstream cannot be reached.";
    UpstreamTimeout = "upstream_timeout", GATEWAY_TIMEOUT: "The mobile upstream did not answer in time.";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error code {name:?}")))
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorBody {
    /// The code.
    pub error: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status (the code's, unless [`ApiError::with_status`] changed it).
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code`, answered with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error with another status (a rejection whose status varies).
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The same error, answered with `Retry-After: <seconds>`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 404 `session_not_found`.
    pub fn session_not_found() -> Self {
        Self::new(
            ErrorCode::SessionNotFound,
            "no such session (unknown or expired)",
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 404 `not_found` for unknown routes.
    pub fn no_route() -> Self {
        Self::new(ErrorCode::NotFound, "no such endpoint")
    }

    /// 500 for a fault of the server (details go to the log, not the client).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    /// The cause (which may name files or carry a library's text) goes to the log;
    /// the client gets the code and a public message.
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "session store failure");
        let message = match e {
            StoreError::Contention(_) => "too many concurrent updates of this session; retry",
            _ => "the session store is unavailable; retry later",
        };
        Self::new(ErrorCode::StoreUnavailable, message)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match &e {
            CoreError::VersionMismatch { .. } => {
                Self::new(ErrorCode::VersionMismatch, e.to_string())
            }
            CoreError::InvalidId => Self::new(ErrorCode::SessionNotFound, e.to_string()),
            CoreError::InvalidPrivileges(_) => {
                Self::new(ErrorCode::InvalidPrivileges, e.to_string())
            }
            CoreError::InvalidStorage(_) => {
                Self::new(ErrorCode::InvalidStorageUpdate, e.to_string())
            }
            CoreError::StorageTooLarge { .. } => {
                Self::new(ErrorCode::StorageTooLarge, e.to_string())
            }
            CoreError::StorageTooDeep { .. } => Self::new(ErrorCode::StorageTooDeep, e.to_string()),
            CoreError::NotSupported { .. } => Self::new(ErrorCode::NotSupported, e.to_string()),
            // InvalidToken, RolesFile, and any later kind of refusal.
            _ => Self::bad_request(e.to_string()),
        }
    }
}

impl From<SessionsError> for ApiError {
    fn from(e: SessionsError) -> Self {
        match e {
            SessionsError::NotFound => Self::session_not_found(),
            SessionsError::Invalid(e) => e.into(),
            SessionsError::Store(e) => e.into(),
            e => {
                tracing::error!(error = %e, "session operation failed");
                Self::internal("the session operation failed")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            _ => ErrorCode::InvalidJson,
        };
        // A body that parses but has the wrong shape is 422, as axum answers.
        Self::new(code, r.body_text()).with_status(status)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<OtpRefusal> for ApiError {
    fn from(why: OtpRefusal) -> Self {
        let code = match why {
            OtpRefusal::Invalid => ErrorCode::OtpInvalid,
            OtpRefusal::SessionEnded => ErrorCode::OtpSessionEnded,
        };
        Self::new(code, why.message())
    }
}

/// The OpenAPI schemas of [`ErrorCode`] (a string enum of every code) and
/// [`ErrorBody`] (feature `openapi`).
#[cfg(feature = "openapi")]
mod openapi {
    use super::{ErrorBody, ErrorCode};

    impl utoipa::PartialSchema for ErrorCode {
        fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
            utoipa::openapi::schema::ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::Type::String)
                .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
                .description(Some(
                    "The error code; its status is listed with each route.",
                ))
                .into()
        }
    }

    impl utoipa::ToSchema for ErrorCode {}

    impl utoipa::PartialSchema for ErrorBody {
        fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
            utoipa::openapi::schema::ObjectBuilder::new()
                .property("error", <ErrorCode as utoipa::PartialSchema>::schema())
                .property(
                    "message",
                    utoipa::openapi::schema::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String),
                )
                .required("error")
                .required("message")
                .into()
        }
    }

    impl utoipa::ToSchema for ErrorBody {
        fn schemas(
            schemas: &mut Vec<(
                String,
                utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
            )>,
        ) {
            schemas.push((
                "ErrorCode".into(),
                <ErrorCode as utoipa::PartialSchema>::schema(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_unique_snake_case_and_an_error_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let name = code.as_str();
            assert!(seen.insert(name), "{name} twice");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{name}"
            );
            assert_eq!(serde_json::to_value(code).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<ErrorCode>(name.into()).unwrap(),
                *code
            );
        }
    }

    #[test]
    fn the_body_is_error_and_message_and_the_status_is_the_codes() {
        let response = ApiError::new(ErrorCode::VersionMismatch, "stale").into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let e = ApiError::new(ErrorCode::Busy, "later").retry_after(0);
        assert_eq!(e.retry_after, Some(1));
        let body = serde_json::to_value(ErrorBody {
            error: e.code,
            message: e.message,
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": "busy", "message": "later"})
        );
    }
}
