//! Desktop sessions (4D's wording): remote-client sessions and the one
//! stored-procedures session, with the server-side functions that run in them.
//!
//! | module | what lives there |
//! |---|---|
//! | this one | [`DesktopSessions`] and its builder: functions, stored procedures, hooks, [`DesktopConfig`] |
//! | [`functions`] | [`CallError`], the function and hook types, the built-in `session.*` functions |
//! | [`processes`] | the running calls (`processes` of the activity listing) |
//! | `remote` | the remote sessions of this node: states, deadlines, connections |
//!
//! The WebSocket endpoint that remote clients speak to is `routes::remote`.
//!
//! ```
//! use std::sync::Arc;
//! use serde_json::json;
//! use sessiond_core::{Roles, SessionPolicy, SystemClock};
//! use sessiond_server::Session;
//! use sessiond_server::desktop::{CallError, DesktopConfig, DesktopSessions};
//! use sessiond_store::{MemoryStore, Sessions};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let sessions = Sessions::new(Arc::new(MemoryStore::new()), Arc::new(Roles::default()),
//!     Arc::new(SystemClock), SessionPolicy::default());
//! let desktop = DesktopSessions::builder(sessions, DesktopConfig::default())
//!     .procedure("nightly", |_params| async {
//!         let session = Session::current().expect("runs in the stored-procedures session");
//!         session.update_storage(|s| { s.insert("ran".into(), true.into()); Ok(()) }).await?;
//!         Ok::<_, CallError>(json!(session.info()["type"]))
//!     })
//!     .build();
//! let run = desktop.execute_on_server("nightly", json!(null)).await.unwrap();
//! assert_eq!(run.result.await.unwrap(), json!("storedProcedure"));
//! # });
//! ```

pub mod functions;
pub mod processes;
mod remote;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use serde_json::Value;
use sessiond::Session;
use sessiond_core::protocol::{CloseReason, ErrorCode, Hello};
use sessiond_core::{DesktopInfo, SessionId, SessionKind, SessionRecord, Timestamp};
use sessiond_store::{ActivityFilter, Sessions, SessionsError, Snapshot};
use tokio::sync::OnceCell;

use crate::users::User;
use functions::Functions;
use processes::Processes;

pub use functions::{CallError, CallFuture, Function, ServerHook};
pub use processes::{Process, ProcessKind};
pub use remote::RemoteState;
pub(crate) use remote::{Attached, Control};

/// How long a remote session dropped here for another node stays in the store if
/// that node does not close it (the node may be gone).
const FOREIGN_DROP_GRACE: Duration = Duration::from_secs(10);

/// Settings of remote-client sessions (`[remote]` in `sessiond.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopConfig {
    /// How long a `sleeping` session is kept (4D: `Remote connection sleep timeout`,
    /// 48 h).
    pub sleep_timeout: Duration,
    /// How long a `postponed` session (connection lost without goodbye) waits for a
    /// reconnection (15 minutes, 4D's QUIC session timeout).
    pub postponed_timeout: Duration,
    /// The server pings every connection this often.
    pub ping_interval: Duration,
    /// A connection that sent nothing (not even a pong) for this long is lost.
    pub ping_timeout: Duration,
    /// A new connection must say hello within this time.
    pub hello_timeout: Duration,
    /// The largest frame accepted: larger ones are answered with `frame_too_large`;
    /// frames past four times this end the connection.
    pub max_frame_bytes: usize,
    /// Calls running at once in one remote session (whatever its connections).
    pub max_calls_per_connection: usize,
    /// How often sleeping and postponed sessions are checked for expiry.
    pub check_interval: Duration,
    /// `userName` of the stored-procedures session.
    pub stored_procedures_user: String,
    /// The built-in `session.*` functions remote clients may call (default: the
    /// read-only [`functions::CLIENT_BUILTINS`]; `session.setPrivileges` here lets
    /// every user of the users file grant itself any privilege).
    pub client_builtins: Vec<String>,
}

impl Default for DesktopConfig {
    fn default() -> Self {
        Self {
            sleep_timeout: Duration::from_secs(48 * 3600),
            postponed_timeout: Duration::from_secs(15 * 60),
            ping_interval: Duration::from_secs(30),
            ping_timeout: Duration::from_secs(75),
            hello_timeout: Duration::from_secs(10),
            max_frame_bytes: 1 << 20,
            max_calls_per_connection: 64,
            check_interval: Duration::from_secs(1),
            stored_procedures_user: "Designer".into(),
            client_builtins: functions::CLIENT_BUILTINS.map(String::from).to_vec(),
        }
    }
}

/// Builds a [`DesktopSessions`]: register functions, procedures and hooks.
pub struct DesktopBuilder {
    sessions: Sessions,
    config: DesktopConfig,
    functions: Functions,
    procedures: Functions,
    hooks: Hooks,
}

#[derive(Default)]
struct Hooks {
    open: Option<ServerHook>,
    close: Option<ServerHook>,
    startup: Option<ServerHook>,
    shutdown: Option<ServerHook>,
}

impl DesktopBuilder {
    fn checked(name: &str) -> &str {
        if let Err(e) = functions::check_name(name) {
            panic!("{e}");
        }
        name
    }

    /// Registers a function remote clients call by name; it runs with
    /// [`Session::current()`] = the caller's remote session.
    ///
    /// # Panics
    /// When `name` is empty, over 128 bytes, has control characters or starts with
    /// `session.` (the built-in functions).
    #[must_use]
    pub fn function<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CallError>> + Send + 'static,
    {
        self.functions
            .insert(Self::checked(name), functions::function(f));
        self
    }

    /// Registers a stored procedure, started by
    /// [`DesktopSessions::execute_on_server`] or `POST /service/v1/stored-procedures/{name}`;
    /// it runs in the stored-procedures session.
    ///
    /// # Panics
    /// As [`DesktopBuilder::function`].
    #[must_use]
    pub fn procedure<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, CallError>> + Send + 'static,
    {
        self.procedures
            .insert(Self::checked(name), functions::function(f));
        self
    }

    /// On Server Open Connection: runs in each new remote session before the client
    /// is welcomed; an `Err` refuses the connection.
    #[must_use]
    pub fn on_open<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallError>> + Send + 'static,
    {
        self.hooks.open = Some(functions::hook(f));
        self
    }

    /// On Server Close Connection: runs in a remote session when it ends (goodbye,
    /// drop, expiry, shutdown).
    #[must_use]
    pub fn on_close<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallError>> + Send + 'static,
    {
        self.hooks.close = Some(functions::hook(f));
        self
    }

    /// On Server Startup: runs in the stored-procedures session when the server starts.
    #[must_use]
    pub fn on_startup<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallError>> + Send + 'static,
    {
        self.hooks.startup = Some(functions::hook(f));
        self
    }

    /// On Server Shutdown: runs in the stored-procedures session when the server stops.
    #[must_use]
    pub fn on_shutdown<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), CallError>> + Send + 'static,
    {
        self.hooks.shutdown = Some(functions::hook(f));
        self
    }

    /// The finished registry.
    pub fn build(self) -> DesktopSessions {
        DesktopSessions(Arc::new(Inner {
            sessions: self.sessions,
            config: self.config,
            functions: self.functions,
            procedures: self.procedures,
            hooks: self.hooks,
            processes: Arc::default(),
            remotes: remote::Registry::default(),
            stored: OnceCell::new(),
            foreign_drops: tokio::sync::broadcast::channel(256).0,
        }))
    }
}

struct Inner {
    sessions: Sessions,
    config: DesktopConfig,
    functions: Functions,
    procedures: Functions,
    hooks: Hooks,
    processes: Arc<Processes>,
    remotes: remote::Registry,
    stored: OnceCell<SessionId>,
    /// Remote sessions dropped here whose client is connected to another node.
    foreign_drops: tokio::sync::broadcast::Sender<SessionId>,
}

/// Remote-client sessions, the stored-procedures session, and what runs in them.
/// Cheap to clone.
#[derive(Clone)]
pub struct DesktopSessions(Arc<Inner>);

impl std::fmt::Debug for DesktopSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DesktopSessions")
            .field("config", &self.0.config)
            .finish_non_exhaustive()
    }
}

/// A stored procedure started by [`DesktopSessions::execute_on_server`].
pub struct StartedProcedure {
    /// Its process number in the activity listing.
    pub number: u64,
    /// Its result, when it ends.
    pub result: futures::future::BoxFuture<'static, Result<Value, CallError>>,
}

/// What an activity listing shows (4D's `Process activity` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivityMode {
    /// Sessions and processes (each process with its session's `info`).
    #[default]
    All,
    /// Sessions only.
    SessionsOnly,
    /// Processes only (without `session`).
    ProcessesOnly,
}

/// Why a session cannot be dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DropError {
    /// The stored-procedures session lives as long as the server.
    #[error("the stored-procedures session lives as long as the server")]
    StoredProcedures,
    /// The store failed.
    #[error(transparent)]
    Sessions(#[from] SessionsError),
}

impl DesktopSessions {
    /// A builder with the built-in `session.*` functions: all of them as stored
    /// procedures, those of [`DesktopConfig::client_builtins`] for remote clients.
    pub fn builder(sessions: Sessions, config: DesktopConfig) -> DesktopBuilder {
        DesktopBuilder {
            sessions,
            functions: Functions::builtins(|name| config.client_builtins.iter().any(|b| b == name)),
            procedures: Functions::builtins(|_| true),
            config,
            hooks: Hooks::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DesktopConfig {
        &self.0.config
    }

    /// The session operations.
    pub fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    fn now(&self) -> Timestamp {
        self.0.sessions.now()
    }

    /// Server start: removes the remote and stored-procedure sessions an earlier run
    /// left in a persistent store (on a store shared by several nodes, only those of
    /// this node's name), opens the stored-procedures session, runs the startup hook,
    /// and starts the expiry of sleeping and postponed sessions.
    pub async fn start(&self) -> Result<tokio::task::JoinHandle<()>, SessionsError> {
        let shared = self.0.sessions.store().shared();
        let node = self.0.sessions.node().map(str::to_owned);
        for s in self.0.sessions.activity(&ActivityFilter::default()).await? {
            if s.record.kind().is_desktop()
                && (!shared || s.record.node() == node.as_deref())
                && Some(&s.record.id()) != self.0.stored.get()
            {
                self.0.sessions.remove(&s.record.id()).await?;
            }
        }
        let stored = self.stored_procedures_session().await?;
        if let Some(h) = &self.0.hooks.startup {
            self.run_hook(h, stored, "onServerStartup").await;
        }
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.0.config.check_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                this.expire_due().await;
            }
        }))
    }

    /// Server stopping: ends every remote session of this node (clients are told,
    /// close hooks run).
    pub async fn close_clients(&self) {
        for persistent in self.0.remotes.all() {
            self.close_remote(&persistent, CloseReason::Shutdown).await;
        }
    }

    /// Server stop: ends what remote sessions are left ([`Self::close_clients`]),
    /// runs the shutdown hook, ends the stored-procedures session.
    pub async fn shutdown(&self) {
        self.close_clients().await;
        if let Some(&stored) = self.0.stored.get() {
            if let Some(h) = &self.0.hooks.shutdown {
                self.run_hook(h, stored, "onServerShutdown").await;
            }
            if let Err(e) = self.0.sessions.remove(&stored).await {
                tracing::warn!(error = %e, "cannot remove the stored-procedures session");
            }
        }
    }

    /// The id of the stored-procedures session (opened on first use).
    pub async fn stored_procedures_session(&self) -> Result<SessionId, SessionsError> {
        let id = self
            .0
            .stored
            .get_or_try_init(|| async {
                let desktop = DesktopInfo {
                    machine_name: host_name(),
                    host_type: sessiond_core::protocol::HostType::this_machine()
                        .as_str()
                        .into(),
                    state: "active".into(),
                    ..DesktopInfo::default()
                };
                let mut record = SessionRecord::new(
                    SessionKind::StoredProcedure,
                    self.now(),
                    self.0.sessions.policy(),
                    None,
                    Some(desktop),
                );
                // It lives as long as the server, whatever the absolute lifetime.
                record.set_hard_deadline(None);
                record.set_user_name(&self.0.config.stored_procedures_user);
                Ok::<_, SessionsError>(self.0.sessions.insert(record).await?.record.id())
            })
            .await?;
        Ok(*id)
    }

    /// Starts stored procedure `name` with `params` in the stored-procedures session
    /// (4D's `Execute on server`); it runs on its own task.
    pub async fn execute_on_server(
        &self,
        name: &str,
        params: Value,
    ) -> Result<StartedProcedure, CallError> {
        let f = self
            .0
            .procedures
            .get(name)
            .cloned()
            .ok_or_else(|| CallError::unknown_function(name))?;
        let session = self.stored_procedures_session().await?;
        let guard = self.0.processes.start(
            name.into(),
            session,
            ProcessKind::StoredProcedure,
            self.now(),
        );
        let number = guard.number();
        let this = self.clone();
        let task = tokio::spawn(async move {
            let _guard = guard;
            this.run_in(session, f(params)).await
        });
        Ok(StartedProcedure {
            number,
            result: Box::pin(async move {
                task.await
                    .unwrap_or_else(|_| Err(CallError::failed("the procedure was cancelled")))
            }),
        })
    }

    /// Runs remote function `name` in session `session` (listed as a process while
    /// it runs).
    pub(crate) async fn call(
        &self,
        session: SessionId,
        name: &str,
        params: Value,
    ) -> Result<Value, CallError> {
        let f = self.0.functions.get(name).ok_or_else(|| {
            if functions::BUILTINS.contains(&name) {
                CallError::not_allowed(name)
            } else {
                CallError::unknown_function(name)
            }
        })?;
        let _guard =
            self.0
                .processes
                .start(name.into(), session, ProcessKind::RemoteCall, self.now());
        self.run_in(session, f(params)).await
    }

    /// Runs `call` with a fresh handle on `session` as [`Session::current()`]; a panic
    /// becomes an internal error.
    async fn run_in(&self, session: SessionId, call: CallFuture) -> Result<Value, CallError> {
        let snapshot = self
            .0
            .sessions
            .get(&session)
            .await?
            .ok_or(SessionsError::NotFound)?;
        let handle = Session::new(self.0.sessions.clone(), snapshot, None);
        std::panic::AssertUnwindSafe(handle.scope(call))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(session = %session, "a server-side function panicked");
                Err(CallError {
                    code: ErrorCode::Internal,
                    message: "the function failed unexpectedly".into(),
                })
            })
    }

    async fn run_hook(&self, hook: &ServerHook, session: SessionId, name: &str) -> bool {
        let _guard =
            self.0
                .processes
                .start(name.into(), session, ProcessKind::ServerHook, self.now());
        let run = hook();
        match self
            .run_in(
                session,
                Box::pin(async move { run.await.map(|()| Value::Null) }),
            )
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(session = %session, hook = name, error = %e, "hook failed");
                false
            }
        }
    }

    /// How many remote calls run in `session` (on this node), whatever connection
    /// started them.
    pub(crate) fn running_calls(&self, session: &SessionId) -> usize {
        self.0.processes.remote_calls(session)
    }

    /// The running calls, oldest first (only those of `session` when given).
    pub fn processes(&self, session: Option<&SessionId>) -> Vec<Process> {
        self.0.processes.list(session)
    }

    /// 4D's `Process activity`: `{"sessions": [...], "processes": [...]}` per `mode`.
    /// Sessions (every kind, every node) carry their `info` plus `privileges`,
    /// `expirationDate` and `node`; processes are this node's running calls of the
    /// listed sessions. `None` when `filter.session` names no live session.
    pub async fn activity(
        &self,
        filter: &ActivityFilter,
        mode: ActivityMode,
    ) -> Result<Option<Value>, SessionsError> {
        let found = self.0.sessions.activity(filter).await?;
        if filter.session.is_some() && found.is_empty() {
            return Ok(None);
        }
        let mut out = serde_json::Map::new();
        if mode != ActivityMode::ProcessesOnly {
            let list: Vec<Value> = found
                .iter()
                .map(|s| {
                    let mut info = s.record.info();
                    info["privileges"] = s.record.get_privileges().into();
                    info["expirationDate"] = s.expiration_date().into();
                    info["node"] = s.record.node().into();
                    info
                })
                .collect();
            out.insert("sessions".into(), list.into());
        }
        if mode != ActivityMode::SessionsOnly {
            let infos: HashMap<_, _> = found
                .iter()
                .map(|s| (s.record.id(), s.record.info()))
                .collect();
            let list: Vec<Value> = self
                .processes(filter.session.as_ref())
                .iter()
                .filter_map(|p| {
                    let info = infos.get(&p.session)?;
                    let mut v = p.json();
                    if mode == ActivityMode::All {
                        v["session"] = info.clone();
                    }
                    Some(v)
                })
                .collect();
            out.insert("processes".into(), list.into());
        }
        Ok(Some(Value::Object(out)))
    }

    /// Opens a remote session for `user` (checked by the caller), or resumes the one
    /// of `hello.persistent_id`, attached to a new connection: (the connection's link,
    /// whether it was resumed, `Session.info`).
    pub(crate) async fn open_remote(
        &self,
        user: &User,
        hello: &Hello,
        ip: Option<IpAddr>,
    ) -> Result<(Attached, bool, Value), CallError> {
        if let Some(persistent) = hello.persistent_id {
            let (attached, info) = self.resume_remote(&user.user_name, persistent, ip).await?;
            return Ok((attached, true, info));
        }
        let persistent = SessionId::random();
        let desktop = DesktopInfo {
            machine_name: hello.machine_name.clone(),
            system_user_name: hello.system_user_name.clone(),
            host_type: hello.host_type.as_str().into(),
            state: RemoteState::Active.as_str().into(),
            persistent_id: Some(persistent),
        };
        let sessions = &self.0.sessions;
        let mut record = SessionRecord::new(
            SessionKind::Remote,
            self.now(),
            sessions.policy(),
            ip,
            Some(desktop),
        );
        record.set_user_name(&user.user_name);
        // Its life follows the connection (sleep and postponed timeouts), not the web
        // sessions' absolute lifetime.
        record.set_hard_deadline(None);
        if !(user.roles.is_empty() && user.privileges.is_empty()) {
            let input = sessiond_core::PrivilegeInput {
                privileges: user.privileges.clone(),
                roles: user.roles.clone(),
                user_name: None,
            };
            record.set_privileges(sessions.roles(), &input, sessions.policy());
        }
        let inserted = sessions.insert(record).await?;
        let (id, info) = (inserted.record.id(), inserted.record.info());
        let attached = self
            .0
            .remotes
            .insert(persistent, id, user.user_name.as_str());
        if let Some(h) = &self.0.hooks.open
            && !self.run_hook(h, id, "onServerOpenConnection").await
        {
            self.0.remotes.remove(&persistent);
            if let Err(e) = sessions.remove(&id).await {
                // The next start removes it (this node's leftovers).
                tracing::warn!(session = %id, error = %e, "cannot remove a refused remote session");
            }
            return Err(CallError {
                code: ErrorCode::Refused,
                message: "the server refused the connection".into(),
            });
        }
        Ok((attached, false, info))
    }

    async fn resume_remote(
        &self,
        user: &str,
        persistent: SessionId,
        ip: Option<IpAddr>,
    ) -> Result<(Attached, Value), CallError> {
        let unknown = || {
            CallError {
            code: ErrorCode::UnknownPersistentId,
            message: "no session to resume with this persistentID (unknown, expired, or of another login)"
                .into(),
        }
        };
        let (attached, replaced) = self
            .0
            .remotes
            .attach(&persistent, user, self.now())
            .ok_or_else(unknown)?;
        if let Some(old) = replaced {
            old.close(CloseReason::Replaced);
        }
        match self.write_state(&attached.session, ip).await {
            Ok(snapshot) => Ok((attached, snapshot.record.info())),
            Err(SessionsError::NotFound) => {
                self.0.remotes.remove(&persistent);
                Err(unknown())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the registry's current state of a remote session into its record (and
    /// its new address): whatever the order of concurrent writes, the last one
    /// carries the latest state.
    async fn write_state(
        &self,
        session: &SessionId,
        ip: Option<IpAddr>,
    ) -> Result<Snapshot, SessionsError> {
        let registry = &self.0.remotes;
        self.0
            .sessions
            .update(session, |r| {
                if let (Some(d), Some(state)) = (r.desktop_mut(), registry.state_of(session)) {
                    state.as_str().clone_into(&mut d.state);
                }
                if ip.is_some() {
                    r.set_ip(ip);
                }
                Ok(())
            })
            .await
            .map(|(snapshot, ())| snapshot)
    }

    /// The connection ended without a goodbye: an active session is postponed.
    pub(crate) async fn detach_remote(&self, attached: &Attached) {
        let deadline = self.now().plus(self.0.config.postponed_timeout);
        if self.0.remotes.detach(attached, deadline)
            && let Err(e) = self.write_state(&attached.session, None).await
        {
            tracing::warn!(session = %attached.session, error = %e, "cannot record the postponed state");
        }
    }

    /// The client announced sleep (ignored from a connection that was replaced).
    pub(crate) async fn sleep_remote(&self, attached: &Attached) -> Result<(), CallError> {
        let deadline = self.now().plus(self.0.config.sleep_timeout);
        if self.0.remotes.sleep(attached, deadline) {
            self.write_state(&attached.session, None).await?;
        }
        Ok(())
    }

    /// The client said goodbye: its session ends, unless this connection was replaced.
    pub(crate) async fn goodbye_remote(&self, attached: &Attached) {
        if let Some((session, conn)) = self.0.remotes.remove_attached(attached) {
            self.finish_close(session, conn, CloseReason::Goodbye).await;
        }
    }

    /// Ends a remote session: tells its connection, runs the close hook, removes it.
    pub(crate) async fn close_remote(&self, persistent: &SessionId, reason: CloseReason) -> bool {
        let Some((session, conn)) = self.0.remotes.remove(persistent) else {
            return false;
        };
        self.finish_close(session, conn, reason).await;
        true
    }

    async fn finish_close(
        &self,
        session: SessionId,
        conn: Option<remote::Conn>,
        reason: CloseReason,
    ) {
        if let Some(conn) = conn {
            conn.close(reason);
        }
        if let Some(h) = &self.0.hooks.close {
            self.run_hook(h, session, "onServerCloseConnection").await;
        }
        if let Err(e) = self.0.sessions.remove(&session).await {
            tracing::warn!(session = %session, error = %e, "cannot remove a closed remote session");
        }
        tracing::info!(session = %session, ?reason, "remote session closed");
    }

    /// Closes the sleeping and postponed sessions whose time is up (not those resumed
    /// meanwhile).
    pub async fn expire_due(&self) {
        let now = self.now();
        for persistent in self.0.remotes.due(now) {
            if let Some((session, conn)) = self.0.remotes.remove_due(&persistent, now) {
                self.finish_close(session, conn, CloseReason::Expired).await;
            }
        }
    }

    /// Ends a session of any kind (admin drop): a remote client is told and its close
    /// hook runs (on the node it is connected to, through [`Self::foreign_drops`]);
    /// the stored-procedures session cannot be dropped. True if it existed.
    pub async fn drop_session(&self, id: &SessionId) -> Result<bool, DropError> {
        if self.0.stored.get() == Some(id) {
            return Err(DropError::StoredProcedures);
        }
        if self.drop_connected(id).await {
            return Ok(true);
        }
        let Some(s) = self.0.sessions.get(id).await? else {
            return Ok(false);
        };
        match s.record.kind() {
            SessionKind::StoredProcedure => Err(DropError::StoredProcedures),
            SessionKind::Remote
                if s.record.node() != self.0.sessions.node()
                    && self.0.foreign_drops.send(*id).is_ok() =>
            {
                // The node its client is connected to closes it: tells the client,
                // runs the close hook, removes the record. Should that node be gone,
                // the record goes anyway after a grace period.
                let (sessions, id) = (self.0.sessions.clone(), *id);
                tokio::spawn(async move {
                    tokio::time::sleep(FOREIGN_DROP_GRACE).await;
                    if let Err(e) = sessions.remove(&id).await {
                        tracing::warn!(session = %id, error = %e, "cannot remove a dropped remote session");
                    }
                });
                Ok(true)
            }
            _ => Ok(self.0.sessions.remove(id).await?),
        }
    }

    /// Closes remote session `id` if its client is connected to this node (reason
    /// `dropped`); false otherwise.
    pub async fn drop_connected(&self, id: &SessionId) -> bool {
        match self.0.remotes.persistent_of(id) {
            Some(persistent) => self.close_remote(&persistent, CloseReason::Dropped).await,
            None => false,
        }
    }

    /// Remote sessions dropped on this node whose client is connected elsewhere (for
    /// [`crate::cluster`] to pass on).
    pub fn foreign_drops(&self) -> tokio::sync::broadcast::Receiver<SessionId> {
        self.0.foreign_drops.subscribe()
    }

    /// Ends every session of one user (the stored-procedures session excepted);
    /// returns how many.
    pub async fn drop_user(&self, user_name: &str) -> Result<usize, DropError> {
        let filter = ActivityFilter {
            user_name: Some(user_name.to_string()),
            ..ActivityFilter::default()
        };
        let mut n = 0;
        for s in self.0.sessions.activity(&filter).await? {
            if s.record.kind() != SessionKind::StoredProcedure {
                n += usize::from(self.drop_session(&s.record.id()).await?);
            }
        }
        Ok(n)
    }
}

/// This machine's host name (`machineName` of the stored-procedures session).
fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
