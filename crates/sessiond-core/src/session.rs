//! [`SessionRecord`]: the state of one session, and the rules of every `4D.Session`
//! member per [`SessionKind`] (spec §1.4, and the 4D 21 column of the §4.5 matrix).

use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::policy::{SessionPolicy, SetPrivilegesMode};
use crate::roles::{Roles, WEB_ADMIN, names_eq};
use crate::tokens::Tokens;
use crate::{Error, PrivilegeInput, SessionId, Timestamp};

/// The three kinds of session of 4D's `Session` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SessionKind {
    /// A scalable web session (browser, REST, mobile): `info.type` = `"web"`.
    Web,
    /// A remote user session (4D client/server), server side: `"remote"`.
    Remote,
    /// The one shared session of stored procedures: `"storedProcedure"`.
    StoredProcedure,
}

impl SessionKind {
    /// The `info.type` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Remote => "remote",
            Self::StoredProcedure => "storedProcedure",
        }
    }

    /// Parses an `info.type` text.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Web, Self::Remote, Self::StoredProcedure]
            .into_iter()
            .find(|k| k.as_str() == s)
    }

    /// Desktop sessions (remote, stored procedure) in 4D's wording.
    pub fn is_desktop(self) -> bool {
        !matches!(self, Self::Web)
    }
}

/// Client facts of a desktop (remote) session, shown in `info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesktopInfo {
    /// `machineName`.
    pub machine_name: String,
    /// `systemUserName` (remote only).
    pub system_user_name: String,
    /// `hostType`: windows, mac or linux.
    pub host_type: String,
    /// `state`: active, postponed or sleeping.
    pub state: String,
    /// `persistentID` (remote only), 32 upper-case hex digits.
    pub persistent_id: Option<SessionId>,
}

static EMPTY_STORAGE: LazyLock<Arc<Map<String, Value>>> = LazyLock::new(|| Arc::new(Map::new()));

/// The whole state of a session, as stores keep it.
///
/// Not included: the time of last activity, which stores track on their own so that
/// a read can extend the idle deadline without rewriting the record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// `Session.id`.
    pub(crate) id: SessionId,
    /// The kind of session.
    pub(crate) kind: SessionKind,
    /// `Session.userName`.
    pub(crate) user_name: Box<str>,
    /// Effective privileges from `setPrivileges` (already expanded).
    pub(crate) privileges: Box<[Arc<str>]>,
    /// Whether `setPrivileges` was ever called (4D 21 R2+ `isGuest` under forceLogin).
    pub(crate) privileges_set: bool,
    /// `Session.idleTimeout`, minutes (web sessions).
    pub(crate) idle_timeout: u32,
    /// `info.creationDateTime`.
    pub(crate) created: Timestamp,
    /// Beyond 4D: the absolute end of the session, whatever its activity.
    pub(crate) hard_deadline: Option<Timestamp>,
    /// Bumped by every change of the record; stores use it for compare-and-set.
    pub(crate) version: u64,
    /// Bumped by every change of `storage`; clients use it with `If-Match`.
    pub(crate) storage_version: u64,
    /// `Session.storage`: a JSON object, shared between snapshots until changed.
    pub(crate) storage: Arc<Map<String, Value>>,
    /// The cookie tokens of the clients that hold this session ([`Tokens`]).
    pub(crate) tokens: Tokens,
    /// `info.IPAddress`.
    pub(crate) ip: Option<IpAddr>,
    /// Desktop-session facts.
    pub(crate) desktop: Option<Box<DesktopInfo>>,
    /// The node that created the session (several nodes sharing one store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) node: Option<std::sync::Arc<str>>,
    /// A guest session that ended (logout, drop) and is kept, empty and without
    /// tokens, only until its guest tickets have expired, so that none of them opens a
    /// session with this id again. Never listed, read or written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) ended: bool,
}

/// The result of a `setPrivileges` call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetPrivilegesOutcome {
    /// The function's return value (False on a stored-procedure session).
    pub applied: bool,
    /// Names that are not declared in roles.json (ignored).
    pub unknown: Vec<String>,
}

impl SessionRecord {
    /// `Session.id`.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The kind of session.
    pub fn kind(&self) -> SessionKind {
        self.kind
    }

    /// `Session.userName`.
    pub fn user_name(&self) -> &str {
        &self.user_name
    }

    /// The privileges held (already expanded); [`Self::get_privileges`] as strings.
    pub fn privileges(&self) -> &[Arc<str>] {
        &self.privileges
    }

    /// Whether `setPrivileges` was ever called (4D 21 R2+ `isGuest` under forceLogin).
    pub fn privileges_set(&self) -> bool {
        self.privileges_set
    }

    /// `Session.idleTimeout`, minutes (web sessions).
    pub fn idle_timeout(&self) -> u32 {
        self.idle_timeout
    }

    /// `info.creationDateTime`.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// Beyond 4D: the absolute end of the session, whatever its activity.
    pub fn hard_deadline(&self) -> Option<Timestamp> {
        self.hard_deadline
    }

    /// Bumped by every change of the record; stores use it for compare-and-set.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Bumped by every change of `storage`; clients use it with `If-Match`.
    pub fn storage_version(&self) -> u64 {
        self.storage_version
    }

    /// `Session.storage`.
    pub fn storage(&self) -> &Arc<Map<String, Value>> {
        &self.storage
    }

    /// The cookie tokens of the clients that hold this session.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The same, to issue, use or remove a token ([`Tokens`] keeps its own rules).
    pub fn tokens_mut(&mut self) -> &mut Tokens {
        &mut self.tokens
    }

    /// `info.IPAddress`.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// Desktop-session facts.
    pub fn desktop(&self) -> Option<&DesktopInfo> {
        self.desktop.as_deref()
    }

    /// The same, to update them (a remote client's state).
    pub fn desktop_mut(&mut self) -> Option<&mut DesktopInfo> {
        self.desktop.as_deref_mut()
    }

    /// The node that created the session (several nodes sharing one store).
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// A guest session that ended and is kept only until its guest tickets expired.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The tombstone of guest session `id`: empty, without tokens, never listed, read
    /// or written, kept only until the guest tickets that could name it expired.
    pub fn ended_guest(
        id: SessionId,
        created: Timestamp,
        version: u64,
        policy: &SessionPolicy,
    ) -> Self {
        Self {
            ended: true,
            version,
            hard_deadline: None,
            ..Self::with_id(id, SessionKind::Web, created, policy, None, None)
        }
    }

    /// For stores: the version this record is written with (compare-and-set: one more
    /// than the version it replaces).
    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }

    /// Sets `Session.userName` (`setPrivileges` sets it too).
    pub fn set_user_name(&mut self, name: &str) {
        self.user_name = name.into();
    }

    /// Records the client's address (`info.IPAddress`).
    pub fn set_ip(&mut self, ip: Option<IpAddr>) {
        self.ip = ip;
    }

    /// Sets (or, with `None`, removes) the absolute end of the session.
    pub fn set_hard_deadline(&mut self, deadline: Option<Timestamp>) {
        self.hard_deadline = deadline;
    }

    /// Names the node that created the session.
    pub fn set_node(&mut self, node: Option<Arc<str>>) {
        self.node = node;
    }

    /// A new guest web session with an empty storage.
    pub fn new_web(now: Timestamp, policy: &SessionPolicy, ip: Option<IpAddr>) -> Self {
        Self::new(SessionKind::Web, now, policy, ip, None)
    }

    /// A new session of any kind.
    pub fn new(
        kind: SessionKind,
        now: Timestamp,
        policy: &SessionPolicy,
        ip: Option<IpAddr>,
        desktop: Option<DesktopInfo>,
    ) -> Self {
        Self::with_id(SessionId::random(), kind, now, policy, ip, desktop)
    }

    /// A new session with a given id.
    pub fn with_id(
        id: SessionId,
        kind: SessionKind,
        now: Timestamp,
        policy: &SessionPolicy,
        ip: Option<IpAddr>,
        desktop: Option<DesktopInfo>,
    ) -> Self {
        Self {
            id,
            kind,
            user_name: Box::from(""),
            privileges: Box::new([]),
            privileges_set: false,
            idle_timeout: policy.default_idle_timeout_minutes,
            created: now,
            hard_deadline: policy.absolute_lifetime.map(|d| now.plus(d)),
            version: 1,
            storage_version: 1,
            storage: EMPTY_STORAGE.clone(),
            tokens: Tokens::default(),
            ip,
            desktop: desktop.map(Box::new),
            node: None,
            ended: false,
        }
    }

    /// When the session expires if its last activity was at `last_activity`; `None`
    /// for desktop sessions without a cap (their life cycle follows the connection).
    pub fn deadline(&self, last_activity: Timestamp) -> Option<Timestamp> {
        let idle = match self.kind {
            SessionKind::Web => {
                Some(last_activity.plus(Duration::from_secs(u64::from(self.idle_timeout) * 60)))
            }
            _ => None,
        };
        match (idle, self.hard_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the session is expired at `now`.
    pub fn is_expired(&self, last_activity: Timestamp, now: Timestamp) -> bool {
        self.deadline(last_activity).is_some_and(|d| d <= now)
    }

    /// `Session.expirationDate`: ISO-8601 UTC (web sessions; `None` otherwise).
    pub fn expiration_date(&self, last_activity: Timestamp) -> Option<String> {
        match self.kind {
            SessionKind::Web => self.deadline(last_activity).map(Timestamp::to_iso8601),
            _ => None,
        }
    }

    /// `Session.isGuest()`. Desktop sessions: always false. Web: with `forceLogin`,
    /// true until `setPrivileges` is called (4D 21 R2+); otherwise true iff the
    /// session has no privileges.
    pub fn is_guest(&self, force_login: bool) -> bool {
        match self.kind {
            SessionKind::Web if force_login => !self.privileges_set,
            SessionKind::Web => self.privileges.is_empty(),
            _ => false,
        }
    }

    /// `Session.hasPrivilege(name)`, case-insensitive. `promoted` are the privileges
    /// promoted in the current request. Stored procedure: always true (4D 21).
    pub fn has_privilege(&self, name: &str, promoted: &[Arc<str>]) -> bool {
        match self.kind {
            SessionKind::StoredProcedure => true,
            _ => self
                .privileges
                .iter()
                .chain(promoted)
                .any(|p| names_eq(p, name)),
        }
    }

    /// `Session.getPrivileges()`: promoted privileges excluded. Stored procedure:
    /// `["WebAdmin"]` (4D 21).
    pub fn get_privileges(&self) -> Vec<String> {
        match self.kind {
            SessionKind::StoredProcedure => vec![WEB_ADMIN.to_string()],
            _ => self.privileges.iter().map(ToString::to_string).collect(),
        }
    }

    /// `Session.setPrivileges(...)`. Undeclared names are ignored and reported.
    /// Stored procedure: no-op returning false; remote: works, `userName` ignored.
    pub fn set_privileges(
        &mut self,
        roles: &Roles,
        input: &PrivilegeInput,
        policy: &SessionPolicy,
    ) -> SetPrivilegesOutcome {
        if self.kind == SessionKind::StoredProcedure {
            return SetPrivilegesOutcome::default();
        }
        let resolved = roles.resolve(&input.roles, &input.privileges);
        let privileges = match policy.set_privileges_mode {
            SetPrivilegesMode::Replace => resolved.privileges,
            SetPrivilegesMode::Merge => {
                let mut all: Vec<Arc<str>> = self.privileges.to_vec();
                for p in resolved.privileges {
                    if !all.iter().any(|q| names_eq(q, &p)) {
                        all.push(p);
                    }
                }
                all
            }
        };
        self.privileges = privileges.into_boxed_slice();
        self.privileges_set = true;
        if self.kind == SessionKind::Web
            && let Some(name) = &input.user_name
        {
            self.user_name = name.as_str().into();
        }
        SetPrivilegesOutcome {
            applied: true,
            unknown: resolved.unknown,
        }
    }

    /// `Session.clearPrivileges()`: true. Stored procedure: no-op. Does not make a
    /// forceLogin session a guest again; keeps `userName` unless the policy says not to.
    pub fn clear_privileges(&mut self, policy: &SessionPolicy) -> bool {
        if self.kind != SessionKind::StoredProcedure {
            self.privileges = Box::new([]);
            if !policy.clear_privileges_keeps_user_name {
                self.user_name = Box::from("");
            }
        }
        true
    }

    /// Sets `Session.idleTimeout` (minutes), raised to the policy minimum (4D: 60).
    /// Only web sessions have an idle timeout.
    pub fn set_idle_timeout(&mut self, minutes: u32, policy: &SessionPolicy) -> Result<u32, Error> {
        if self.kind != SessionKind::Web {
            return Err(Error::NotSupported {
                member: "idleTimeout",
                kind: self.kind,
            });
        }
        self.idle_timeout = minutes.clamp(
            policy.min_idle_timeout_minutes,
            policy.max_idle_timeout_minutes,
        );
        Ok(self.idle_timeout)
    }

    /// `Session.info` (spec §1.4), computed.
    pub fn info(&self) -> Value {
        let ip = self.ip.map_or_else(String::new, |ip| ip.to_string());
        let mut info = json!({
            "type": self.kind.as_str(),
            "userName": &*self.user_name,
            "creationDateTime": self.created.to_iso8601(),
            "ID": self.id.to_string(),
        });
        let map = info.as_object_mut().expect("object literal");
        match (&self.kind, &self.desktop) {
            (SessionKind::Web, _) => {
                map.insert("machineName".into(), "".into());
                map.insert("IPAddress".into(), ip.into());
                map.insert("hostType".into(), "browser".into());
                map.insert("state".into(), "active".into());
            }
            (kind, desktop) => {
                let d = desktop.as_deref().cloned().unwrap_or_default();
                map.insert("machineName".into(), d.machine_name.into());
                map.insert("hostType".into(), d.host_type.into());
                map.insert(
                    "state".into(),
                    if d.state.is_empty() {
                        "active".into()
                    } else {
                        d.state.into()
                    },
                );
                if *kind == SessionKind::Remote {
                    map.insert("systemUserName".into(), d.system_user_name.into());
                    map.insert("IPAddress".into(), ip.into());
                    if let Some(p) = d.persistent_id {
                        map.insert("persistentID".into(), p.to_string().into());
                    }
                }
            }
        }
        info
    }

    /// The storage map, to change in place (copied first if a snapshot shares it),
    /// bumping `storage_version`.
    pub fn storage_mut(&mut self) -> &mut Map<String, Value> {
        self.storage_version += 1;
        Arc::make_mut(&mut self.storage)
    }

    /// Replaces the storage map, bumping `storage_version`.
    pub fn set_storage(&mut self, storage: Map<String, Value>) {
        self.storage_version += 1;
        self.storage = Arc::new(storage);
    }
}
