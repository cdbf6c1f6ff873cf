//! The HTTP routes of `sessiond serve`, and what they share.

pub mod admin;
pub mod browser;
pub mod mobile;
pub mod remote;
pub mod service;

use axum::extract::{FromRequest, FromRequestParts};
use sessiond::ApiError;
use sessiond::error::ErrorCode;
use sessiond_core::SessionId;
use sessiond_core::protocol::ErrorCode as Remote;

use crate::desktop::{CallError, DropError};

/// `axum::Json` whose rejections are [`ApiError`]s (JSON bodies).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for ApiJson<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A `kind` query parameter: `web`, `remote` or `storedProcedure` (absent or empty:
/// every kind).
pub fn parse_kind(kind: Option<&str>) -> Result<Option<sessiond_core::SessionKind>, ApiError> {
    kind.filter(|k| !k.is_empty())
        .map(|k| {
            sessiond_core::SessionKind::parse(k)
                .ok_or_else(|| ApiError::bad_request("kind must be web, remote or storedProcedure"))
        })
        .transpose()
}

/// Parses a session id from a URL; a malformed one is answered like an unknown one.
pub fn parse_id(text: &str) -> Result<SessionId, ApiError> {
    text.parse().map_err(|_| ApiError::session_not_found())
}

/// A server-side function's error as the service API answers it.
impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        let code = match e.code {
            Remote::UnknownFunction => ErrorCode::UnknownProcedure,
            Remote::InvalidParams => ErrorCode::InvalidParams,
            Remote::StoreUnavailable => ErrorCode::StoreUnavailable,
            Remote::SessionClosed => ErrorCode::SessionNotFound,
            Remote::Internal => ErrorCode::Internal,
            _ => ErrorCode::ProcedureFailed,
        };
        ApiError::new(code, e.message)
    }
}

/// Dropping a session: the stored-procedures session cannot be dropped.
impl From<DropError> for ApiError {
    fn from(e: DropError) -> Self {
        match e {
            DropError::StoredProcedures => ApiError::new(ErrorCode::CannotDrop, e.to_string()),
            DropError::Sessions(e) => e.into(),
        }
    }
}
