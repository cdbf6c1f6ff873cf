//! The remote sessions of this node: which connection each one is attached to, its
//! state, and when a sleeping or postponed one expires (one deadline index, checked
//! by the one expiry task of [`super::DesktopSessions::start`]).

use std::collections::{BTreeSet, HashMap};

use parking_lot::Mutex;
use sessiond_core::protocol::CloseReason;
use sessiond_core::{SessionId, Timestamp};
use tokio::sync::mpsc;

/// `info.state` of a remote session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteState {
    /// Connected.
    Active,
    /// The client machine sleeps; kept until the sleep timeout.
    Sleeping,
    /// The connection was lost without goodbye; kept for a reconnection.
    Postponed,
}

impl RemoteState {
    /// The `info.state` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Sleeping => "sleeping",
            Self::Postponed => "postponed",
        }
    }
}

/// What the registry tells a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Send `closed` with this reason and close.
    Close(CloseReason),
}

/// A connection's link to its session.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    serial: u64,
    tx: mpsc::UnboundedSender<Control>,
}

impl Conn {
    pub fn close(&self, reason: CloseReason) {
        // The connection may be gone already; then there is nobody to tell.
        let _ = self.tx.send(Control::Close(reason));
    }
}

/// A connection attached to a remote session.
#[derive(Debug)]
pub(crate) struct Attached {
    /// `Session.id`.
    pub session: SessionId,
    /// `persistentID`.
    pub persistent: SessionId,
    serial: u64,
    /// What the registry tells this connection.
    pub control: mpsc::UnboundedReceiver<Control>,
}

struct Entry {
    session: SessionId,
    user: Box<str>,
    state: RemoteState,
    deadline: Option<Timestamp>,
    conn: Option<Conn>,
}

#[derive(Default)]
struct Table {
    next_serial: u64,
    by_persistent: HashMap<SessionId, Entry>,
    by_session: HashMap<SessionId, SessionId>,
    deadlines: BTreeSet<(Timestamp, SessionId)>,
}

impl Table {
    fn connect(&mut self) -> (Conn, u64, mpsc::UnboundedReceiver<Control>) {
        self.next_serial += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let serial = self.next_serial;
        (Conn { serial, tx }, serial, rx)
    }

    fn set_deadline(&mut self, persistent: &SessionId, deadline: Option<Timestamp>) {
        let Some(e) = self.by_persistent.get_mut(persistent) else {
            return;
        };
        if let Some(old) = e.deadline.take() {
            self.deadlines.remove(&(old, *persistent));
        }
        e.deadline = deadline;
        if let Some(d) = deadline {
            self.deadlines.insert((d, *persistent));
        }
    }
}

/// The table. A blocking mutex: held only for map operations, never across an
/// `.await` (store writes happen after it is released).
#[derive(Default)]
pub(crate) struct Registry(Mutex<Table>);

impl Registry {
    /// A new active session attached to a new connection.
    pub fn insert(&self, persistent: SessionId, session: SessionId, user: &str) -> Attached {
        let mut t = self.0.lock();
        let (conn, serial, control) = t.connect();
        t.by_persistent.insert(
            persistent,
            Entry {
                session,
                user: user.into(),
                state: RemoteState::Active,
                deadline: None,
                conn: Some(conn),
            },
        );
        t.by_session.insert(session, persistent);
        Attached {
            session,
            persistent,
            serial,
            control,
        }
    }

    /// Attaches a new connection to the session of `persistent` if `user` owns it:
    /// it becomes active; the connection it had (if any) is returned to be told.
    pub fn attach(
        &self,
        persistent: &SessionId,
        user: &str,
        now: Timestamp,
    ) -> Option<(Attached, Option<Conn>)> {
        let mut t = self.0.lock();
        let e = t.by_persistent.get(persistent)?;
        // Another user's, or already due (its expiry may be running): not resumable.
        if e.user.as_ref() != user || e.deadline.is_some_and(|d| d <= now) {
            return None;
        }
        t.set_deadline(persistent, None);
        let (conn, serial, control) = t.connect();
        let e = t.by_persistent.get_mut(persistent).expect("checked above");
        e.state = RemoteState::Active;
        let old = e.conn.replace(conn);
        Some((
            Attached {
                session: e.session,
                persistent: *persistent,
                serial,
                control,
            },
            old,
        ))
    }

    /// The connection `a` ended: if it is still the session's connection, an active
    /// session becomes postponed until `deadline`. True if the state changed.
    pub fn detach(&self, a: &Attached, deadline: Timestamp) -> bool {
        let mut t = self.0.lock();
        let Some(e) = t.by_persistent.get_mut(&a.persistent) else {
            return false;
        };
        if e.conn.as_ref().is_none_or(|c| c.serial != a.serial) {
            return false;
        }
        e.conn = None;
        if e.state != RemoteState::Active {
            return false;
        }
        e.state = RemoteState::Postponed;
        t.set_deadline(&a.persistent, Some(deadline));
        true
    }

    /// The session of `a` sleeps until `deadline`, if `a` is still its connection.
    pub fn sleep(&self, a: &Attached, deadline: Timestamp) -> bool {
        let mut t = self.0.lock();
        match t.by_persistent.get_mut(&a.persistent) {
            Some(e) if e.conn.as_ref().is_some_and(|c| c.serial == a.serial) => {
                e.state = RemoteState::Sleeping;
                t.set_deadline(&a.persistent, Some(deadline));
                true
            }
            _ => false,
        }
    }

    /// Forgets a session: its id and its connection, if any.
    pub fn remove(&self, persistent: &SessionId) -> Option<(SessionId, Option<Conn>)> {
        self.remove_if(persistent, |_| true)
    }

    /// Forgets the session of `a` if `a` is still its connection (a replaced
    /// connection cannot end the session that moved on).
    pub fn remove_attached(&self, a: &Attached) -> Option<(SessionId, Option<Conn>)> {
        self.remove_if(&a.persistent, |e| {
            e.conn.as_ref().is_some_and(|c| c.serial == a.serial)
        })
    }

    /// Forgets a session if its deadline is at or before `now` (it was not resumed
    /// since [`Registry::due`] listed it).
    pub fn remove_due(
        &self,
        persistent: &SessionId,
        now: Timestamp,
    ) -> Option<(SessionId, Option<Conn>)> {
        self.remove_if(persistent, |e| e.deadline.is_some_and(|d| d <= now))
    }

    fn remove_if(
        &self,
        persistent: &SessionId,
        ok: impl Fn(&Entry) -> bool,
    ) -> Option<(SessionId, Option<Conn>)> {
        let mut t = self.0.lock();
        if !ok(t.by_persistent.get(persistent)?) {
            return None;
        }
        t.set_deadline(persistent, None);
        let e = t.by_persistent.remove(persistent)?;
        t.by_session.remove(&e.session);
        Some((e.session, e.conn))
    }

    /// The current state of a session.
    pub fn state_of(&self, session: &SessionId) -> Option<RemoteState> {
        let t = self.0.lock();
        let p = t.by_session.get(session)?;
        t.by_persistent.get(p).map(|e| e.state)
    }

    /// The `persistentID` of a remote session of this node.
    pub fn persistent_of(&self, session: &SessionId) -> Option<SessionId> {
        self.0.lock().by_session.get(session).copied()
    }

    /// Every session's `persistentID`.
    pub fn all(&self) -> Vec<SessionId> {
        self.0.lock().by_persistent.keys().copied().collect()
    }

    /// The sessions whose deadline is at or before `now`.
    pub fn due(&self, now: Timestamp) -> Vec<SessionId> {
        self.0
            .lock()
            .deadlines
            .iter()
            .take_while(|(d, _)| *d <= now)
            .map(|(_, p)| *p)
            .collect()
    }
}
