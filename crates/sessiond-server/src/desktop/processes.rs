//! The server-side calls running on this node (the `processes` of 4D's
//! `Process activity`). A call is listed from its start until its guard drops.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};
use sessiond_core::{SessionId, Timestamp};

/// What runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    /// A remote client's call ("Execute on server" method).
    RemoteCall,
    /// A stored procedure.
    StoredProcedure,
    /// An open/close connection or startup/shutdown hook.
    ServerHook,
}

impl ProcessKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::RemoteCall => "remoteCall",
            Self::StoredProcedure => "storedProcedure",
            Self::ServerHook => "hook",
        }
    }
}

/// One running call.
#[derive(Debug, Clone)]
pub struct Process {
    /// Its number (unique for the server's life).
    pub number: u64,
    /// The function's name.
    pub name: Arc<str>,
    /// The session it runs in.
    pub session: SessionId,
    /// What runs.
    pub kind: ProcessKind,
    /// When it started.
    pub started: Timestamp,
}

impl Process {
    /// The listing's view: `{number, name, sessionID, type, state, creationDateTime}`.
    pub fn json(&self) -> Value {
        json!({
            "number": self.number,
            "name": &*self.name,
            "sessionID": self.session.to_string(),
            "type": self.kind.as_str(),
            "state": "executing",
            "creationDateTime": self.started.to_iso8601(),
        })
    }
}

/// The table. A blocking mutex: held only to insert, remove or copy entries.
#[derive(Debug, Default)]
pub(crate) struct Processes {
    next: AtomicU64,
    running: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    by_number: BTreeMap<u64, Process>,
    /// Remote calls running per session (the per-session call limit reads it).
    remote_calls: HashMap<SessionId, usize>,
}

/// Removes its process from the table when dropped (also when the call panics or its
/// task is cancelled).
pub(crate) struct ProcessGuard {
    table: Arc<Processes>,
    number: u64,
}

impl ProcessGuard {
    /// The process number.
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let mut t = self.table.running.lock();
        if let Some(p) = t.by_number.remove(&self.number)
            && p.kind == ProcessKind::RemoteCall
            && let Some(n) = t.remote_calls.get_mut(&p.session)
        {
            *n -= 1;
            if *n == 0 {
                t.remote_calls.remove(&p.session);
            }
        }
    }
}

impl Processes {
    /// Lists a new running call.
    pub fn start(
        self: &Arc<Self>,
        name: Arc<str>,
        session: SessionId,
        kind: ProcessKind,
        now: Timestamp,
    ) -> ProcessGuard {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut t = self.running.lock();
        if kind == ProcessKind::RemoteCall {
            *t.remote_calls.entry(session).or_default() += 1;
        }
        t.by_number.insert(
            number,
            Process {
                number,
                name,
                session,
                kind,
                started: now,
            },
        );
        drop(t);
        ProcessGuard {
            table: self.clone(),
            number,
        }
    }

    /// How many remote calls run in `session`.
    pub fn remote_calls(&self, session: &SessionId) -> usize {
        self.running
            .lock()
            .remote_calls
            .get(session)
            .copied()
            .unwrap_or(0)
    }

    /// The running calls, oldest first; only those of `session` when given.
    pub fn list(&self, session: Option<&SessionId>) -> Vec<Process> {
        self.running
            .lock()
            .by_number
            .values()
            .filter(|p| session.is_none_or(|s| *s == p.session))
            .cloned()
            .collect()
    }
}
