//! [`SessionLayer`]: the tower layer that gives every request its web session
//! (spec §2.3, and the token model of docs/tokens.md): the cookie `4DSID_<AppName>`
//! opens a live session → that session; a token a raise ended within the grace window
//! → a guest that is not stored, and no cookie; no cookie, or an unknown or expired
//! one → a new guest session and a new cookie; `?$4DSID=<otp>` → the OTP's session
//! (web, or a desktop session shared with the web) with a new cookie for this client
//! when the OTP is valid, the normal path when it is not.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use cookie::Cookie;
use http::{HeaderValue, Request, header};
use sessiond_core::CookieToken;
use sessiond_store::{Resolved, Sessions};
use tower::{Layer, Service};

use crate::config::{CookieConfig, SameSite, SecureMode};
use crate::error::ApiError;
use crate::session::{CookieChange, Session};

/// The reserved query parameter that carries an OTP (4D's `$4DSID`).
pub const OTP_PARAM: &str = "$4DSID";

#[derive(Debug)]
struct Shared {
    sessions: Sessions,
    cookie: CookieConfig,
    /// What follows `name=value` in a `Set-Cookie` that sets a value, without and with
    /// `Secure`: formatted once, by the cookie crate, instead of once per new session.
    attributes: [String; 2],
    trust_proxy_headers: bool,
}

impl Shared {
    fn new(sessions: Sessions, cookie: CookieConfig, trust_proxy_headers: bool) -> Self {
        let attributes = [false, true].map(|secure| {
            let text = build_cookie(&cookie, String::new(), secure).to_string();
            text[cookie.name.len() + 1..].to_string()
        });
        Self {
            sessions,
            cookie,
            attributes,
            trust_proxy_headers,
        }
    }

    /// The `Set-Cookie` value for a change, if any: `HttpOnly`, `SameSite`,
    /// `Path=/`, `Domain` when configured, `Secure` when `secure`.
    fn set_cookie(&self, change: CookieChange, secure: bool) -> Option<HeaderValue> {
        let text = match change {
            CookieChange::Keep => return None,
            CookieChange::Set(token) => {
                let value = token.encode();
                let attributes = &self.attributes[usize::from(secure)];
                let name = &self.cookie.name;
                let mut text =
                    String::with_capacity(name.len() + 1 + value.len() + attributes.len());
                text.push_str(name);
                text.push('=');
                text.push_str(&value);
                text.push_str(attributes);
                text
            }
            CookieChange::Remove => {
                let mut cookie = build_cookie(&self.cookie, String::new(), secure);
                cookie.make_removal();
                cookie.to_string()
            }
        };
        HeaderValue::try_from(text).ok()
    }
}

/// The session cookie with `value` and the configured attributes.
fn build_cookie(config: &CookieConfig, value: String, secure: bool) -> Cookie<'_> {
    let mut cookie = Cookie::build((config.name.as_str(), value))
        .http_only(true)
        .same_site(match config.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        })
        .path("/")
        // Explicit either way: the crate would add `Secure` to `SameSite=None`.
        .secure(secure);
    if let Some(domain) = &config.domain {
        cookie = cookie.domain(domain.as_str());
    }
    cookie.build()
}

/// Adds web sessions to a service: puts a [`Session`] in the request's extensions
/// (see the [`Session`] extractor), runs the inner service with it as
/// [`Session::current()`], and sets the cookie on the response when needed.
///
/// ```
/// use std::sync::Arc;
/// use axum::{Router, routing::get};
/// use sessiond::{CookieConfig, MemoryStore, Roles, Session, SessionLayer, SessionPolicy, Sessions, SystemClock};
///
/// let sessions = Sessions::new(Arc::new(MemoryStore::new()), Arc::new(Roles::default()), Arc::new(SystemClock), SessionPolicy::default());
/// let app: Router = Router::new()
///     .route("/", get(|s: Session| async move { s.id().to_string() }))
///     .layer(SessionLayer::new(sessions, CookieConfig::for_app("MyApp")));
/// ```
#[derive(Debug, Clone)]
pub struct SessionLayer(Arc<Shared>);

impl SessionLayer {
    /// A layer over `sessions` with cookie settings `cookie`.
    pub fn new(sessions: Sessions, cookie: CookieConfig) -> Self {
        Self(Arc::new(Shared::new(sessions, cookie, false)))
    }

    /// Believe `X-Forwarded-For` / `X-Forwarded-Proto` (only behind a reverse proxy
    /// that sets them).
    #[must_use]
    pub fn trust_proxy_headers(self, yes: bool) -> Self {
        Self(Arc::new(Shared::new(
            self.0.sessions.clone(),
            self.0.cookie.clone(),
            yes,
        )))
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            shared: self.0.clone(),
            inner,
        }
    }
}

/// The service made by [`SessionLayer`].
#[derive(Debug, Clone)]
pub struct SessionService<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S> Service<Request<Body>> for SessionService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        // Take the service that was driven to readiness; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Read what the session lookup needs now: the request body is not `Sync`, so
        // the request cannot be borrowed across an `.await`.
        let cookie = cookie_value(req.headers(), &shared.cookie.name)
            .and_then(|v| v.parse::<CookieToken>().ok());
        let otp = otp_param(&req);
        let ip = client_ip(&req, shared.trust_proxy_headers);
        Box::pin(async move {
            let session = match open(&shared, cookie.as_ref(), otp.as_deref(), ip).await {
                Ok(s) => s,
                Err(e) => return Ok(e.into_response()),
            };
            let secure = cookie_is_secure(shared.cookie.secure, &req, shared.trust_proxy_headers);
            req.extensions_mut().insert(session.clone());
            let mut response = session.clone().scope(inner.call(req)).await?;
            if let Some(value) = shared.set_cookie(session.take_cookie_change(), secure) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            Ok(response)
        })
    }
}

async fn open(
    shared: &Shared,
    cookie: Option<&CookieToken>,
    otp: Option<&str>,
    ip: Option<IpAddr>,
) -> Result<Session, ApiError> {
    let sessions = &shared.sessions;
    if let Some(otp) = otp
        && let Ok((snapshot, cookie)) = sessions.restore_otp(otp).await?
    {
        let session = Session::new(sessions.clone(), snapshot, Some(cookie.hash()));
        session.set_cookie(CookieChange::Set(cookie));
        return Ok(session);
    }
    if let Some(token) = cookie {
        match sessions.resolve_token(token).await? {
            Resolved::Open(snapshot, hash) => {
                return Ok(Session::new(sessions.clone(), snapshot, Some(hash)));
            }
            Resolved::Unstored {
                mut snapshot,
                hash,
                refreshed,
            } => {
                Arc::make_mut(&mut snapshot.record).set_ip(ip);
                let session = Session::unstored(sessions.clone(), snapshot, hash);
                if let Some(ticket) = refreshed {
                    session.set_cookie(CookieChange::Set(ticket));
                }
                return Ok(session);
            }
            // In flight while a raise ended its token: a guest, and no cookie that
            // would replace the client's new one.
            Resolved::Ended => return Ok(Session::unstored_guest(sessions, ip)),
            Resolved::Unknown => {}
        }
    }
    let (snapshot, cookie) = sessions.create_web(ip).await?;
    let session = if sessions.policy().lazy_guests {
        Session::unstored(sessions.clone(), snapshot, cookie.hash())
    } else {
        Session::new(sessions.clone(), snapshot, Some(cookie.hash()))
    };
    session.set_cookie(CookieChange::Set(cookie));
    Ok(session)
}

/// The value of cookie `name` in a request's `Cookie` headers, surrounding double
/// quotes removed (`None` when absent or empty).
pub fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .and_then(|c| c.value_raw())
        .map(|v| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

fn otp_param(req: &Request<Body>) -> Option<String> {
    let query = req.uri().query().filter(|q| q.contains("4DSID"))?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == OTP_PARAM)
        .map(|(_, v)| v.into_owned())
}

/// The client's address: the socket peer, or — only when trusted — the last
/// address of `X-Forwarded-For` (the one the proxy added).
pub fn client_ip(req: &Request<Body>, trust_proxy_headers: bool) -> Option<IpAddr> {
    if trust_proxy_headers {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            // The last entry is the one the trusted proxy added; earlier ones are
            // whatever the client sent.
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Whether a cookie set in answer to `req` carries `Secure`.
pub fn cookie_is_secure(mode: SecureMode, req: &Request<Body>, trust_proxy_headers: bool) -> bool {
    match mode {
        SecureMode::Always => true,
        SecureMode::Never => false,
        SecureMode::Auto => is_tls(req, trust_proxy_headers),
    }
}

/// Whether the request arrived over TLS ([`SecureMode::Auto`]).
fn is_tls(req: &Request<Body>, trust_proxy_headers: bool) -> bool {
    req.uri().scheme_str() == Some("https")
        || (trust_proxy_headers
            && req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                == Some("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::{Roles, SessionPolicy, SystemClock};
    use sessiond_store::MemoryStore;

    #[test]
    fn a_set_cookie_is_the_cookie_crates_formatting_for_every_setting() {
        let sessions = Sessions::new(
            Arc::new(MemoryStore::new()),
            Arc::new(Roles::default()),
            Arc::new(SystemClock),
            SessionPolicy::default(),
        );
        for same_site in [SameSite::Strict, SameSite::Lax, SameSite::None] {
            for domain in [None, Some("example.com".to_string())] {
                let config = CookieConfig {
                    same_site,
                    domain,
                    ..CookieConfig::for_app("App_1.x")
                };
                let shared = Shared::new(sessions.clone(), config.clone(), false);
                for secure in [false, true] {
                    let token = CookieToken::new_session();
                    let expected = build_cookie(&config, token.encode(), secure).to_string();
                    let header = shared.set_cookie(CookieChange::Set(token), secure).unwrap();
                    assert_eq!(header.to_str().unwrap(), expected);
                    let removal = shared.set_cookie(CookieChange::Remove, secure).unwrap();
                    let removal = removal.to_str().unwrap();
                    assert!(
                        removal.starts_with("4DSID_App_1.x=;") && removal.contains("Max-Age=0")
                    );
                    assert_eq!(removal.contains("; Secure"), secure, "{removal}");
                }
            }
        }
    }
}
