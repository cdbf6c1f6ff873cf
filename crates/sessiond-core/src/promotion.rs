//! `promote()` / `demote()`: privileges added for the current request only, never
//! visible to other requests of the same session, nor to `getPrivileges()`.

use std::sync::Arc;

use crate::roles::{Roles, names_eq};
use crate::{SessionKind, SessionRecord};

/// The promotions of one request (4D: of one process).
///
/// ```
/// use sessiond_core::{Promotions, Roles, SessionPolicy, SessionRecord, Timestamp};
/// let roles = Roles::parse(r#"{"privileges":[{"privilege":"p"}]}"#, "r").unwrap();
/// let session = SessionRecord::new_web(Timestamp(0), &SessionPolicy::default(), None);
/// let mut promos = Promotions::default();
/// let id = promos.promote(&session, &roles, "p");
/// assert!(id > 0 && session.has_privilege("p", promos.active()));
/// promos.demote(id);
/// assert!(!session.has_privilege("p", promos.active()));
/// ```
#[derive(Debug, Default, Clone)]
pub struct Promotions {
    next_id: u32,
    ids: Vec<u32>,
    names: Vec<Arc<str>>,
}

impl Promotions {
    /// `Session.promote(name)`: a new id > 0, or 0 (and nothing done) when the name is
    /// not declared, already held or promoted, or the session is a desktop session.
    pub fn promote(&mut self, session: &SessionRecord, roles: &Roles, name: &str) -> u32 {
        if session.kind.is_desktop() {
            return 0;
        }
        let Some(declared) = roles.privilege(name) else {
            return 0;
        };
        if self.names.iter().any(|p| names_eq(p, name))
            || session.privileges.iter().any(|p| names_eq(p, name))
        {
            return 0;
        }
        self.next_id += 1;
        self.ids.push(self.next_id);
        self.names.push(declared.clone());
        self.next_id
    }

    /// `Session.demote(id)`; an unknown id is a no-op.
    pub fn demote(&mut self, id: u32) {
        if let Some(i) = self.ids.iter().position(|&x| x == id) {
            self.ids.remove(i);
            self.names.remove(i);
        }
    }

    /// The privileges promoted now.
    pub fn active(&self) -> &[Arc<str>] {
        &self.names
    }

    /// Whether a session of this kind can promote at all.
    pub fn supported(kind: SessionKind) -> bool {
        !kind.is_desktop()
    }
}
