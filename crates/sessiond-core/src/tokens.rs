//! The token model (docs/tokens.md): which cookie tokens open a session, how they are
//! born and how they end. Every surface and every store goes through these rules.
//!
//! A session keeps, per client that holds it, the hash of that client's token
//! ([`TokenSlot`]), live slots in order of last use (most recent last). A token is
//! born when a session is created, when an OTP of the session is restored, and when
//! the session's rights are raised (the requester's fresh token). Raising the rights
//! ([`Rights::raised_by`]: a privilege gained, a first `setPrivileges`, another
//! `userName`) ends every other token at once; an ended token is remembered for
//! [`SessionPolicy::token_grace`] so that requests already in flight with it can be
//! answered as a guest without a new cookie ([`TokenState::Ended`]). Past
//! [`SessionPolicy::max_tokens_per_session`] live tokens, the least recently used one
//! is evicted — never the one used last.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::roles::names_eq;
use crate::{SessionPolicy, SessionRecord, Timestamp, TokenHash};

/// One cookie token of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenSlot {
    /// The hash of the token's secret.
    pub hash: TokenHash,
    /// When the token was issued or last presented out of turn (see
    /// [`Tokens::mark_used`]); informational, the order of the slots is what counts.
    #[serde(default)]
    pub last_used: Timestamp,
    /// Set when the token ended: until then a request with it is answered as a guest
    /// that is not stored and gets no cookie; after it, the token is unknown.
    #[serde(
        default,
        alias = "retired_until",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_until: Option<Timestamp>,
}

impl TokenSlot {
    fn live(&self) -> bool {
        self.ended_until.is_none()
    }
}

/// What a presented token does for its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// It opens the session.
    Opens,
    /// It ended less than the grace window ago: the request runs as a guest that is
    /// not stored, and the response sets no cookie (so that a request in flight does
    /// not replace the client's new cookie).
    Ended,
    /// It opens nothing: the request gets a new guest session and cookie.
    Unknown,
}

/// The cookie tokens of one session (almost always one: kept inline).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Tokens(SmallVec<[TokenSlot; 1]>);

impl Tokens {
    /// What `token` does at `now`. Every slot is compared, in constant time each, so
    /// the answer's timing does not depend on which slot matched.
    pub fn state(&self, token: &TokenHash, now: Timestamp) -> TokenState {
        let (mut opens, mut ended) = (false, false);
        for slot in &self.0 {
            let same = slot.hash.ct_eq(token);
            opens |= same & slot.live();
            ended |= same & slot.ended_until.is_some_and(|t| now < t);
        }
        match (opens, ended) {
            (true, _) => TokenState::Opens,
            (false, true) => TokenState::Ended,
            (false, false) => TokenState::Unknown,
        }
    }

    /// Whether presenting live `token` changes the order of use: it is not the token
    /// used last. (Keeps reads write-free for a session with one client, or whose
    /// most recent client keeps using it.)
    pub fn needs_use_mark(&self, token: &TokenHash) -> bool {
        self.0
            .iter()
            .rev()
            .find(|s| s.live())
            .is_some_and(|last| last.hash != *token)
            && self.position(token).is_some()
    }

    /// Records that live `token` was presented at `now`: it becomes the most recently
    /// used. False when it is not a live token of this session.
    pub fn mark_used(&mut self, token: &TokenHash, now: Timestamp) -> bool {
        let Some(i) = self.position(token) else {
            return false;
        };
        let mut slot = self.0.remove(i);
        slot.last_used = now;
        self.0.push(slot);
        true
    }

    /// Adds a live token (a new client, or a fresh token after a raise) as the most
    /// recently used; forgets ended tokens past their grace window; evicts the least
    /// recently used live tokens past the cap. Returns how many live tokens were
    /// evicted (the caller logs it).
    pub fn issue(&mut self, token: TokenHash, now: Timestamp, policy: &SessionPolicy) -> usize {
        self.forget_ended(now, policy);
        self.0.push(TokenSlot {
            hash: token,
            last_used: now,
            ended_until: None,
        });
        let cap = policy.max_tokens_per_session.max(2);
        let mut evicted = 0;
        while self.live() > cap {
            let oldest = self.0.iter().position(TokenSlot::live).expect("over cap");
            self.0.remove(oldest);
            evicted += 1;
        }
        evicted
    }

    /// Ends every live token at `now` (a raise of the session's rights).
    pub fn end_all(&mut self, now: Timestamp, policy: &SessionPolicy) {
        let until = now.plus(policy.token_grace);
        for slot in self.0.iter_mut().filter(|s| s.live()) {
            slot.ended_until = Some(until);
        }
        self.forget_ended(now, policy);
    }

    /// Removes live `token` at once (its holder left a shared session); true if it
    /// was there.
    pub fn remove(&mut self, token: &TokenHash) -> bool {
        self.position(token).map(|i| self.0.remove(i)).is_some()
    }

    /// How many live tokens the session has.
    pub fn live(&self) -> usize {
        self.0.iter().filter(|s| s.live()).count()
    }

    /// Every slot, live ones in order of use (most recent last).
    pub fn slots(&self) -> &[TokenSlot] {
        &self.0
    }

    fn position(&self, token: &TokenHash) -> Option<usize> {
        self.0.iter().position(|s| s.live() && s.hash == *token)
    }

    /// Drops ended tokens past their grace window, and the earliest ended ones beyond
    /// the cap (so that repeated raises cannot grow the record).
    fn forget_ended(&mut self, now: Timestamp, policy: &SessionPolicy) {
        self.0.retain(|s| s.ended_until.is_none_or(|t| now < t));
        let ended = self.0.len() - self.live();
        let mut excess = ended.saturating_sub(policy.max_tokens_per_session.max(2));
        self.0.retain(|s| {
            let drop = excess > 0 && !s.live();
            excess -= usize::from(drop);
            !drop
        });
    }
}

/// What a session's holders may do, taken before a privilege change to tell a raise
/// from a lowering.
#[derive(Debug, Clone)]
pub struct Rights {
    privileges: Box<[Arc<str>]>,
    user_name: Box<str>,
    privileges_set: bool,
}

impl Rights {
    /// The rights of `record` now.
    pub fn of(record: &SessionRecord) -> Self {
        Self {
            privileges: record.privileges.clone(),
            user_name: record.user_name.clone(),
            privileges_set: record.privileges_set,
        }
    }

    /// Whether `after` grants more than these rights: a privilege these lack, another
    /// `userName`, or the first `setPrivileges` (which ends guest status under
    /// forceLogin). A raise ends every other token; anything else is a lowering (or
    /// no change), which leaves the tokens alone.
    pub fn raised_by(&self, after: &SessionRecord) -> bool {
        after.user_name != self.user_name
            || (after.privileges_set && !self.privileges_set)
            || after
                .privileges
                .iter()
                .any(|p| !self.privileges.iter().any(|q| names_eq(p, q)))
    }
}

/// Applies the token rules after a privilege change of `record` (whose rights were
/// `before`): on a raise every token ends and `fresh` (the requester's new token, if
/// it gets one) is issued. Returns (raised, live tokens evicted).
pub fn after_rights_change(
    record: &mut SessionRecord,
    before: &Rights,
    fresh: Option<TokenHash>,
    now: Timestamp,
    policy: &SessionPolicy,
) -> (bool, usize) {
    if !before.raised_by(record) {
        return (false, 0);
    }
    record.tokens.end_all(now, policy);
    let evicted = fresh.map_or(0, |t| record.tokens.issue(t, now, policy));
    (true, evicted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionKind;

    fn h(n: u8) -> TokenHash {
        TokenHash::of(&[n])
    }

    fn policy(cap: usize) -> SessionPolicy {
        SessionPolicy {
            max_tokens_per_session: cap,
            ..SessionPolicy::default()
        }
    }

    #[test]
    fn an_ended_token_is_a_grace_guest_then_unknown() {
        let p = SessionPolicy::default();
        let mut t = Tokens::default();
        t.issue(h(1), Timestamp(0), &p);
        assert_eq!(t.state(&h(1), Timestamp(0)), TokenState::Opens);
        t.end_all(Timestamp(1_000), &p);
        t.issue(h(2), Timestamp(1_000), &p);
        assert_eq!(t.state(&h(1), Timestamp(30_999)), TokenState::Ended);
        assert_eq!(t.state(&h(1), Timestamp(31_000)), TokenState::Unknown);
        assert_eq!(t.state(&h(2), Timestamp(99_999)), TokenState::Opens);
        assert_eq!(t.state(&h(3), Timestamp(0)), TokenState::Unknown);
    }

    #[test]
    fn eviction_takes_the_least_recently_used_never_the_last_used() {
        let p = policy(3);
        let mut t = Tokens::default();
        t.issue(h(0), Timestamp(0), &p); // the creator
        for n in 1..=50 {
            if t.needs_use_mark(&h(0)) {
                t.mark_used(&h(0), Timestamp(u64::from(n)));
            }
            t.issue(h(n), Timestamp(u64::from(n)), &p);
            assert_eq!(t.state(&h(0), Timestamp(100)), TokenState::Opens, "{n}");
            assert!(t.live() <= 3);
        }
        assert_eq!(t.state(&h(50), Timestamp(100)), TokenState::Opens);
        assert_eq!(t.state(&h(49), Timestamp(100)), TokenState::Opens);
        assert_eq!(t.state(&h(48), Timestamp(100)), TokenState::Unknown);
    }

    #[test]
    fn only_a_token_used_out_of_turn_needs_a_write() {
        let p = SessionPolicy::default();
        let mut t = Tokens::default();
        t.issue(h(1), Timestamp(0), &p);
        assert!(
            !t.needs_use_mark(&h(1)),
            "one client: reads stay write-free"
        );
        t.issue(h(2), Timestamp(0), &p);
        assert!(!t.needs_use_mark(&h(2)));
        assert!(t.needs_use_mark(&h(1)));
        assert!(!t.needs_use_mark(&h(9)), "not a token of this session");
    }

    #[test]
    fn repeated_raises_keep_the_record_bounded() {
        let p = policy(4);
        let mut t = Tokens::default();
        for n in 0..100 {
            t.end_all(Timestamp(u64::from(n)), &p);
            t.issue(h(n), Timestamp(u64::from(n)), &p);
        }
        assert!(t.slots().len() <= 8);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn raise_and_lowering() {
        let p = SessionPolicy::default();
        let roles = crate::Roles::parse(
            r#"{"privileges":[{"privilege":"a"},{"privilege":"b"}]}"#,
            "roles.json",
        )
        .unwrap();
        let mut r = SessionRecord::new(SessionKind::Web, Timestamp(0), &p, None, None);
        let set = |r: &mut SessionRecord, names: &[&str]| {
            let before = Rights::of(r);
            r.set_privileges(
                &roles,
                &crate::PrivilegeInput::names(names.iter().copied()),
                &p,
            );
            before.raised_by(r)
        };
        assert!(set(&mut r, &[]), "the first setPrivileges is a raise");
        assert!(set(&mut r, &["a", "b"]));
        assert!(!set(&mut r, &["a"]), "fewer privileges: a lowering");
        assert!(!set(&mut r, &["A"]), "same privileges");
        assert!(set(&mut r, &["b"]), "a privilege gained, one lost: a raise");
        let before = Rights::of(&r);
        r.user_name = "ann".into();
        assert!(before.raised_by(&r), "another userName");
        let before = Rights::of(&r);
        r.clear_privileges(&p);
        assert!(!before.raised_by(&r));
    }
}
