//! Who may use the admin surface: the admin credential as a Bearer, or the console's
//! cookie session (signed in at `/admin/login`) with its CSRF token on every change.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use http::{HeaderMap, HeaderValue, Method, header};
use serde_json::Value;
use sessiond::ApiError;
use sessiond::error::ErrorCode;
use sessiond::layer::cookie_value;

use super::audit::audit;
use crate::app::AppState;
use crate::console::{Actor, AuditEntry, COOKIE, CSRF_HEADER, Console, SignedIn, Via};
use crate::contract::{SignInAnswer, SignOutAnswer};
use crate::routes::{ApiJson, bearer};

/// The console session named by the request's cookie, if live and opened with the
/// current admin credential (its idle time starts over), with the cookie's token.
pub(crate) async fn console_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Option<(String, SignedIn)> {
    let token = cookie_value(headers, COOKIE)?.to_string();
    let credential = state.admin.fingerprint().await?;
    let signed = state
        .console
        .check(&token, state.sessions.now(), true, &credential)?;
    Some((token, signed))
}

/// Whether the request carries the console cookie at all.
pub(crate) fn has_console_cookie(headers: &HeaderMap) -> bool {
    cookie_value(headers, COOKIE).is_some()
}

/// Every method but GET and HEAD must send the console session's CSRF token.
pub(crate) fn check_csrf(
    method: &Method,
    headers: &HeaderMap,
    signed: &SignedIn,
) -> Result<(), ApiError> {
    if *method == Method::GET || *method == Method::HEAD {
        return Ok(());
    }
    match headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        Some(t) if Console::csrf_matches(&signed.csrf, t) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::Csrf,
            "this change needs the console's X-CSRF-Token header; reload the console",
        )),
    }
}

/// Whether the console cookie gets `Secure` (the session cookie's [`crate::SecureMode`]).
pub(super) fn secure(state: &AppState, req: &Request) -> bool {
    sessiond::layer::cookie_is_secure(
        state.config.cookie.secure,
        req,
        state.config.trust_proxy_headers,
    )
}

/// The console cookie carrying `value`; an empty value removes it.
pub(super) fn cookie_header(value: &str, secure: bool) -> HeaderValue {
    let mut cookie = Cookie::build((COOKIE, value))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/admin")
        .secure(secure)
        .build();
    if value.is_empty() {
        cookie.make_removal();
    }
    HeaderValue::from_str(&cookie.to_string()).expect("token is base64url")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginBody {
    password: String,
}

pub(super) async fn login(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let client = sessiond::layer::client_ip(&req, state.config.trust_proxy_headers);
    let now = state.sessions.now();
    let secure = secure(&state, &req);
    // Only a well-formed JSON sign-in counts as an attempt: a cross-site form post
    // (which cannot send JSON without CORS) cannot lock the admin out.
    let ApiJson(body) = ApiJson::<LoginBody>::from_request(req, &state).await?;
    let ok = state
        .admin
        .verify(&body.password, &state.passwords, client, now)
        .await
        .map_err(ApiError::from)?;
    let entry = |outcome: &str, via| AuditEntry {
        time: now.to_iso8601(),
        who: "admin".into(),
        ip: client.map(|ip| ip.to_string()).unwrap_or_default(),
        via,
        action: "sign-in".into(),
        target: String::new(),
        detail: Value::Null,
        outcome: outcome.into(),
    };
    if !ok {
        state.console.record(entry("unauthorized", None)).await;
        return Err(ApiError::unauthorized("wrong admin password"));
    }
    let credential = state.admin.fingerprint().await.unwrap_or_default();
    let signed_in = state.console.sign_in(now, &credential).await;
    state.console.record(entry("ok", Some(Via::Console))).await;
    Ok((
        [(header::SET_COOKIE, cookie_header(&signed_in.token, secure))],
        Json(SignInAnswer {
            csrf: signed_in.csrf,
        }),
    )
        .into_response())
}

pub(super) async fn logout(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let clear = cookie_header("", secure(&state, &req));
    if let Some((token, signed)) = console_session(&state, req.headers()).await {
        check_csrf(req.method(), req.headers(), &signed)?;
        state.console.sign_out(&token).await;
        let actor = Actor {
            ip: sessiond::layer::client_ip(&req, state.config.trust_proxy_headers),
            via: Via::Console,
        };
        audit(
            &state,
            &actor,
            "sign-out",
            String::new(),
            Value::Null,
            &Ok::<(), ApiError>(()),
        )
        .await;
    }
    Ok((
        [(header::SET_COOKIE, clear)],
        Json(SignOutAnswer { signed_out: true }),
    )
        .into_response())
}

/// Middleware: the console's cookie session (with its CSRF token on every method but
/// GET and HEAD), or the admin credential as a Bearer token. Only password checks
/// count against the [`crate::passwords::PasswordChecks`] limits. Puts an [`Actor`] in the
/// request's extensions.
pub async fn require_admin(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let client = sessiond::layer::client_ip(&req, state.config.trust_proxy_headers);
    let via = if let Some((_, signed)) = console_session(&state, req.headers()).await {
        check_csrf(req.method(), req.headers(), &signed)?;
        Via::Console
    } else {
        let Some(password) = bearer(req.headers()) else {
            return Err(ApiError::unauthorized(
                if has_console_cookie(req.headers()) {
                    "the console session has ended: sign in again"
                } else {
                    "the admin credential is required: Authorization: Bearer <admin password>"
                },
            ));
        };
        let now = state.sessions.now();
        let ok = state
            .admin
            .verify(password, &state.passwords, client, now)
            .await
            .map_err(ApiError::from)?;
        if !ok {
            return Err(ApiError::unauthorized("wrong admin credential"));
        }
        Via::Bearer
    };
    req.extensions_mut().insert(Actor { ip: client, via });
    Ok(next.run(req).await)
}
