//! [`ApiError`]: the one error type of every HTTP surface. Each maps to a status
//! code and a JSON body `{"error": <code>, "message": <text>}`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use sessiond_core::Error as CoreError;
use sessiond_store::{SessionsError, StoreError};

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// The same error, answered with `Retry-After: <seconds>`.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 `session_not_found`.
    pub fn session_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            "no such session (unknown or expired)",
        )
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404 `not_found` for unknown routes.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// A password check refused by [`crate::passwords::PasswordChecks`]: 429
    /// `too_many_attempts` after repeated failures, 503 `busy` when every worker is
    /// taken; both with `Retry-After`.
    pub fn refused(refusal: crate::passwords::Refusal) -> Self {
        match refusal {
            crate::passwords::Refusal::TooManyAttempts(wait) => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "too many failed attempts; try again in {} s",
                    wait.as_secs().max(1)
                ),
            )
            .retry_after(wait.as_secs()),
            crate::passwords::Refusal::Busy => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many password checks at once; retry in a moment",
            )
            .retry_after(1),
        }
    }

    /// 500 for a fault of the server (details go to the log, not the client).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
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
        let body = serde_json::json!({"error": self.code, "message": self.message});
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
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            message,
        )
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        match &e {
            CoreError::VersionMismatch { .. } => {
                Self::new(StatusCode::CONFLICT, "version_mismatch", e.to_string())
            }
            CoreError::InvalidId => {
                Self::new(StatusCode::NOT_FOUND, "session_not_found", e.to_string())
            }
            CoreError::InvalidPrivileges(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_privileges", e.to_string())
            }
            CoreError::InvalidStorage(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_storage_update",
                e.to_string(),
            ),
            CoreError::StorageTooLarge { .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "storage_too_large",
                e.to_string(),
            ),
            CoreError::StorageTooDeep { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "storage_too_deep", e.to_string())
            }
            CoreError::NotSupported { .. } => {
                Self::new(StatusCode::CONFLICT, "not_supported", e.to_string())
            }
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
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "invalid_json",
        };
        Self::new(status, code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

impl From<crate::desktop::CallError> for ApiError {
    fn from(e: crate::desktop::CallError) -> Self {
        use sessiond_core::protocol::ErrorCode as C;
        let (status, code) = match e.code {
            C::UnknownFunction => (StatusCode::NOT_FOUND, "unknown_procedure"),
            C::InvalidParams => (StatusCode::BAD_REQUEST, "invalid_params"),
            C::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            C::SessionClosed => (StatusCode::NOT_FOUND, "session_not_found"),
            C::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "procedure_failed"),
        };
        Self::new(status, code, e.message)
    }
}

impl From<crate::desktop::DropError> for ApiError {
    fn from(e: crate::desktop::DropError) -> Self {
        match e {
            crate::desktop::DropError::StoredProcedures => {
                Self::new(StatusCode::CONFLICT, "cannot_drop", e.to_string())
            }
            crate::desktop::DropError::Sessions(e) => e.into(),
        }
    }
}
