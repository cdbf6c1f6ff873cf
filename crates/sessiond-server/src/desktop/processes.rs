//! The server-side calls running on this node (the `processes` of 4D's
//! `Process activity`). A call is listed from its start until its guard drops.

use std::collections::BTreeMap;
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
    Hook,
}

impl ProcessKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::RemoteCall => "remoteCall",
            Self::StoredProcedure => "storedProcedure",
            Self::Hook => "hook",
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
    running: Mutex<BTreeMap<u64, Process>>,
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
        self.table.running.lock().remove(&self.number);
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
        self.running.lock().insert(
            number,
            Process {
                number,
                name,
                session,
                kind,
                started: now,
            },
        );
        ProcessGuard {
            table: self.clone(),
            number,
        }
    }

    /// How many calls of `kind` run in `session`.
    pub fn count(&self, session: &SessionId, kind: ProcessKind) -> usize {
        self.running
            .lock()
            .values()
            .filter(|p| p.session == *session && p.kind == kind)
            .count()
    }

    /// The running calls, oldest first; only those of `session` when given.
    pub fn list(&self, session: Option<&SessionId>) -> Vec<Process> {
        self.running
            .lock()
            .values()
            .filter(|p| session.is_none_or(|s| *s == p.session))
            .cloned()
            .collect()
    }
}
