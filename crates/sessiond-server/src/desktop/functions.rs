//! Server-side functions: what remote clients call by name ("Execute on server") and
//! what runs as a stored procedure. Each runs with [`Session::current()`] set to the
//! session it runs in. The built-in `session.*` functions work on that session, so
//! `sessiond serve` is useful without application code.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sessiond_core::protocol::ErrorCode;
use sessiond_core::storage;
use sessiond_store::SessionsError;

use sessiond::Session;

/// Why a server-side function failed: a protocol error code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CallError {
    /// The code sent to the client.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

impl CallError {
    /// The function failed ([`ErrorCode::FunctionFailed`]).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::FunctionFailed,
            message: message.into(),
        }
    }

    /// The parameters are not what the function takes ([`ErrorCode::InvalidParams`]).
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidParams,
            message: message.into(),
        }
    }

    pub(crate) fn not_allowed(name: &str) -> Self {
        Self {
            code: ErrorCode::NotAllowed,
            message: format!(
                "{name} is not allowed for clients (see [remote] client_builtins in the server's sessiond.toml)"
            ),
        }
    }

    pub(crate) fn unknown_function(name: &str) -> Self {
        Self {
            code: ErrorCode::UnknownFunction,
            message: format!(
                "no function named {:?}",
                name.chars().take(128).collect::<String>()
            ),
        }
    }
}

impl From<SessionsError> for CallError {
    fn from(e: SessionsError) -> Self {
        match e {
            SessionsError::NotFound => Self {
                code: ErrorCode::SessionClosed,
                message: "the session no longer exists".into(),
            },
            SessionsError::Invalid(e) => Self::invalid_params(e.to_string()),
            SessionsError::Store(e) => {
                tracing::warn!(error = %e, "server-side call: store failed");
                Self {
                    code: ErrorCode::StoreUnavailable,
                    message: "the session store is unavailable".into(),
                }
            }
            e => {
                tracing::warn!(error = %e, "server-side call failed");
                Self {
                    code: ErrorCode::Internal,
                    message: "the session operation failed".into(),
                }
            }
        }
    }
}

/// The future a server-side function returns.
pub type CallFuture = BoxFuture<'static, Result<Value, CallError>>;

/// A registered function: JSON parameters in, JSON value out.
pub type Function = Arc<dyn Fn(Value) -> CallFuture + Send + Sync>;

/// A hook (open/close connection, startup/shutdown); an `Err` from the open hook
/// refuses the connection.
pub type ServerHook = Arc<dyn Fn() -> BoxFuture<'static, Result<(), CallError>> + Send + Sync>;

/// Wraps an async closure as a [`Function`].
pub(crate) fn function<F, Fut>(f: F) -> Function
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, CallError>> + Send + 'static,
{
    Arc::new(move |params| Box::pin(f(params)))
}

/// Wraps an async closure as a [`ServerHook`].
pub(crate) fn hook<F, Fut>(f: F) -> ServerHook
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CallError>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

/// The prefix of the built-in functions; application names may not use it.
pub const BUILTIN_PREFIX: &str = "session.";

/// Every built-in function (all run as stored procedures; remote clients get those of
/// [`crate::desktop::DesktopConfig::client_builtins`]).
pub const BUILTINS: [&str; 9] = [
    "session.info",
    "session.storage",
    "session.patch",
    "session.increment",
    "session.setPrivileges",
    "session.clearPrivileges",
    "session.hasPrivilege",
    "session.createOTP",
    "session.wait",
];

/// The built-ins remote clients may call by default: the read-only ones. Writing the
/// session's storage or privileges from a client is the application's decision.
pub const CLIENT_BUILTINS: [&str; 3] = ["session.info", "session.storage", "session.hasPrivilege"];

/// Named functions.
#[derive(Clone, Default)]
pub(crate) struct Functions(HashMap<Box<str>, Function>);

impl Functions {
    /// The built-in `session.*` functions whose names `keep` accepts.
    pub fn builtins(keep: impl Fn(&str) -> bool) -> Self {
        let mut all = Self::all_builtins();
        all.0.retain(|name, _| keep(name));
        all
    }

    fn all_builtins() -> Self {
        let mut f = Self::default();
        f.insert("session.info", function(|_| info()));
        f.insert("session.storage", function(|_| read_storage()));
        f.insert("session.patch", function(patch));
        f.insert("session.increment", function(increment));
        f.insert("session.setPrivileges", function(set_privileges));
        f.insert("session.clearPrivileges", function(|_| clear_privileges()));
        f.insert("session.hasPrivilege", function(has_privilege));
        f.insert("session.createOTP", function(create_otp));
        f.insert("session.wait", function(wait));
        f
    }

    pub fn insert(&mut self, name: &str, f: Function) {
        self.0.insert(name.into(), f);
    }

    pub fn get(&self, name: &str) -> Option<&Function> {
        self.0.get(name)
    }
}

/// Checks an application function name: 1–128 printable characters, not `session.*`.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(format!(
            "function name {name:?}: 1 to 128 printable characters"
        ));
    }
    if name.starts_with(BUILTIN_PREFIX) {
        return Err(format!(
            "function name {name:?}: the {BUILTIN_PREFIX}* names are built in"
        ));
    }
    Ok(())
}

fn current() -> Result<Session, CallError> {
    Session::current().ok_or_else(|| CallError::failed("no session in this task"))
}

fn object(params: &Value) -> Result<&serde_json::Map<String, Value>, CallError> {
    match params {
        Value::Object(m) => Ok(m),
        _ => Err(CallError::invalid_params(
            "parameters must be a JSON object",
        )),
    }
}

async fn info() -> Result<Value, CallError> {
    let s = current()?;
    let storage = s.storage().await?;
    Ok(json!({
        "id": s.id().to_string(),
        "userName": s.user_name(),
        "isGuest": s.is_guest(),
        "privileges": s.get_privileges(),
        "info": s.info(),
        "storage": &*storage,
    }))
}

async fn read_storage() -> Result<Value, CallError> {
    Ok(Value::Object(Arc::unwrap_or_clone(
        current()?.storage().await?,
    )))
}

/// `{"patch": <JSON merge patch>}` → the new storage.
async fn patch(params: Value) -> Result<Value, CallError> {
    let patch = object(&params)?
        .get("patch")
        .cloned()
        .ok_or_else(|| CallError::invalid_params("expected {\"patch\": {...}}"))?;
    let storage = current()?
        .update_storage(|s| {
            storage::merge_patch(s, &patch)?;
            Ok(Value::Object(s.clone()))
        })
        .await?;
    Ok(storage)
}

/// `{"path": "a.b", "by": 1}` (as the service API's increment) → the new value.
async fn increment(params: Value) -> Result<Value, CallError> {
    let p = object(&params)?;
    let path = p
        .get("path")
        .and_then(Value::as_str)
        .ok_or_else(|| CallError::invalid_params("expected {\"path\": \"a.b\", \"by\": 1}"))?
        .to_owned();
    let by = p.get("by").cloned().unwrap_or_else(|| 1.into());
    Ok(current()?
        .update_storage(|s| storage::increment(s, &path, &by))
        .await?)
}

/// `setPrivileges(...)`: a name, a list, or `{privileges, roles}` (read under the
/// `[sessions]` policy, like every surface) → the function's result.
async fn set_privileges(params: Value) -> Result<Value, CallError> {
    let session = current()?;
    let input = session.privilege_input(&params)?;
    Ok(session.set_privileges(&input).await?.into())
}

async fn clear_privileges() -> Result<Value, CallError> {
    Ok(current()?.clear_privileges().await?.into())
}

/// `{"privilege": "..."}` (as the service API; `{"name"}` too) → `hasPrivilege(name)`.
async fn has_privilege(params: Value) -> Result<Value, CallError> {
    let p = object(&params)?;
    let name = p
        .get("privilege")
        .or_else(|| p.get("name"))
        .and_then(Value::as_str)
        .ok_or_else(|| CallError::invalid_params("expected {\"privilege\": \"name\"}"))?;
    Ok(current()?.has_privilege(name).into())
}

/// `{"lifespan": seconds}` (optional) → the OTP, or `""` where 4D returns it.
async fn create_otp(params: Value) -> Result<Value, CallError> {
    let lifespan = match &params {
        Value::Null => None,
        p => object(p)?
            .get("lifespan")
            .map(|v| {
                v.as_u64()
                    .map(Duration::from_secs)
                    .ok_or_else(|| CallError::invalid_params("lifespan: whole seconds"))
            })
            .transpose()?,
    };
    Ok(current()?.create_otp(lifespan).await?.into())
}

/// The longest `session.wait`.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// `{"ms": n}`: waits (at most a minute) and answers `n`; shows a running call in
/// the activity listing.
async fn wait(params: Value) -> Result<Value, CallError> {
    let ms = object(&params)?
        .get("ms")
        .and_then(Value::as_u64)
        .ok_or_else(|| CallError::invalid_params("expected {\"ms\": milliseconds}"))?;
    let d = Duration::from_millis(ms);
    if d > MAX_WAIT {
        return Err(CallError::invalid_params("ms: at most 60000"));
    }
    tokio::time::sleep(d).await;
    Ok(ms.into())
}
