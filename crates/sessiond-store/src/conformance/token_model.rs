//! The token model (docs/tokens.md) as a property: random sequences of create /
//! restore / login / logout / setPrivileges / clearPrivileges / use / expire, on web
//! sessions and on desktop sessions shared through OTPs, run through [`Sessions`] on
//! a store and against a small model of the rules; after every step each client's
//! token must open exactly what the model says (the session, its privileges and
//! userName), end in a grace window, or open nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sessiond_core::{
    CookieToken, DesktopInfo, ManualClock, PrivilegeInput, Roles, SessionId, SessionKind,
    SessionPolicy, SessionRecord, Timestamp, TokenHash, TokenState,
};

use super::Store;
use crate::{Requester, Resolved, Sessions};

const CAP: usize = 4;
const GRACE: Duration = Duration::from_secs(30);
const IDLE_MS: u64 = 60 * 60 * 1000;
const NAMES: [&str; 3] = ["a", "b", "c"];

/// A small deterministic generator (splitmix64), so that a failing case is replayed
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }

    fn names(&mut self) -> Vec<String> {
        NAMES
            .iter()
            .filter(|_| self.next().is_multiple_of(2))
            .map(|n| (*n).to_string())
            .collect()
    }
}

/// One step of a sequence.
#[derive(Debug, Clone)]
enum Op {
    /// A new browser without a cookie.
    NewClient,
    /// Client `c` sends a request with its cookie (a new guest if it opens nothing).
    Use(usize),
    /// Client `c`'s session makes an OTP; client `to` (or a new one) restores it.
    Restore { c: usize, to: Option<usize> },
    /// Client `c` logs in as `user` (privilege `user`'s own plus userName).
    Login { c: usize, user: &'static str },
    /// Client `c` calls setPrivileges(names).
    Set { c: usize, names: Vec<String> },
    /// Client `c` calls clearPrivileges().
    Clear(usize),
    /// The backend calls setPrivileges(names) on client `c`'s session and hands it the
    /// new cookie, if any.
    Backend { c: usize, names: Vec<String> },
    /// Client `c` logs out.
    Logout(usize),
    /// Time passes.
    Advance(u64),
    /// A remote client connects (a desktop session, no cookie).
    NewDesktop,
    /// Desktop session `d` makes an OTP; client `to` (or a new one) restores it.
    ShareDesktop { d: usize, to: Option<usize> },
    /// Desktop session `d` calls setPrivileges(names) for itself.
    DesktopSet { d: usize, names: Vec<String> },
    /// Desktop session `d` ends.
    EndDesktop(usize),
}

fn op(rng: &mut Rng, clients: usize, desktops: usize) -> Op {
    let c = |rng: &mut Rng| rng.below(clients.max(1));
    let d = |rng: &mut Rng| rng.below(desktops.max(1));
    let to = |rng: &mut Rng| (!rng.next().is_multiple_of(3)).then(|| rng.below(clients.max(1)));
    match rng.below(if clients == 0 { 1 } else { 20 }) {
        0 | 1 => Op::NewClient,
        6 | 7 => Op::Restore {
            c: c(rng),
            to: to(rng),
        },
        8 => Op::Login {
            c: c(rng),
            user: ["a", "b"][rng.below(2)],
        },
        9 | 10 => Op::Set {
            c: c(rng),
            names: rng.names(),
        },
        11 => Op::Clear(c(rng)),
        12 => Op::Backend {
            c: c(rng),
            names: rng.names(),
        },
        13 => Op::Logout(c(rng)),
        14 | 15 => {
            Op::Advance([100, 1_500, 29_000, 31_000, 20 * 60_000, 61 * 60_000][rng.below(6)])
        }
        16 => Op::NewDesktop,
        17 if desktops > 0 => Op::ShareDesktop {
            d: d(rng),
            to: to(rng),
        },
        18 if desktops > 0 => Op::DesktopSet {
            d: d(rng),
            names: rng.names(),
        },
        19 if desktops > 0 => Op::EndDesktop(d(rng)),
        // 2..=5, and the desktop operations while there is no desktop session.
        _ => Op::Use(c(rng)),
    }
}

/// `t` truncated to whole seconds, as a guest ticket carries it.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp(t.0 / 1000 * 1000)
}

/// The model of one session.
#[derive(Debug, Clone)]
struct Model {
    kind: SessionKind,
    privileges: BTreeSet<String>,
    user: String,
    privileges_set: bool,
    /// Stored; a guest is not until its first change ([`SessionPolicy::lazy_guests`]):
    /// then `last_activity` is its ticket's (whole seconds).
    stored: bool,
    last_activity: Timestamp,
    /// Live tokens, least recently used first.
    live: Vec<TokenHash>,
    /// Ended tokens with the end of their grace window, earliest ended first.
    ended: Vec<(TokenHash, Timestamp)>,
}

impl Model {
    fn new(kind: SessionKind, now: Timestamp) -> Self {
        Self {
            kind,
            privileges: BTreeSet::new(),
            user: String::new(),
            privileges_set: false,
            stored: true,
            last_activity: now,
            live: Vec::new(),
            ended: Vec::new(),
        }
    }

    fn expired(&self, now: Timestamp) -> bool {
        self.kind == SessionKind::Web && now.0 >= self.last_activity.0 + IDLE_MS
    }

    fn forget_ended(&mut self, now: Timestamp) {
        self.ended.retain(|(_, until)| now < *until);
        let excess = self.ended.len().saturating_sub(CAP);
        self.ended.drain(..excess);
    }

    fn issue(&mut self, token: TokenHash, now: Timestamp) {
        self.forget_ended(now);
        self.live.push(token);
        let excess = self.live.len().saturating_sub(CAP);
        self.live.drain(..excess);
    }

    /// A privilege change: setPrivileges(`privileges`, `user`), or clearPrivileges()
    /// when `privileges` is `None`; `fresh` is the requester's new token if it gets one.
    fn change(
        &mut self,
        privileges: Option<BTreeSet<String>>,
        user: Option<&str>,
        fresh: Option<TokenHash>,
        now: Timestamp,
    ) -> bool {
        let user = match (self.kind, user) {
            (SessionKind::Web, Some(u)) => u.to_string(),
            _ => self.user.clone(),
        };
        let set = privileges.is_some();
        let privileges = privileges.unwrap_or_default();
        let raised = user != self.user
            || (set && !self.privileges_set)
            || privileges.iter().any(|p| !self.privileges.contains(p));
        self.privileges = privileges;
        self.user = user;
        self.privileges_set |= set;
        self.stored = true;
        self.last_activity = now;
        if raised {
            let until = now.plus(GRACE);
            self.ended.extend(self.live.drain(..).map(|t| (t, until)));
            self.forget_ended(now);
            if let Some(t) = fresh {
                self.issue(t, now);
            }
        }
        raised
    }

    fn state(&self, token: &TokenHash, now: Timestamp) -> TokenState {
        if self.expired(now) {
            TokenState::Unknown
        } else if self.live.contains(token) {
            TokenState::Opens
        } else if self
            .ended
            .iter()
            .any(|(t, until)| t == token && now < *until)
        {
            TokenState::Ended
        } else {
            TokenState::Unknown
        }
    }
}

struct World {
    sessions: Sessions,
    clock: ManualClock,
    models: HashMap<SessionId, Model>,
    clients: Vec<CookieToken>,
    desktops: Vec<SessionId>,
}

impl World {
    fn now(&self) -> Timestamp {
        self.sessions.now()
    }

    /// The model state of client `c`'s token, and its session's model.
    fn expect(&self, c: usize) -> (TokenState, Option<&Model>) {
        let token = &self.clients[c];
        match self.models.get(&token.session_id()) {
            Some(m) => (m.state(&token.hash(), self.now()), Some(m)),
            None => (TokenState::Unknown, None),
        }
    }

    fn opens(&self, c: usize) -> bool {
        self.expect(c).0 == TokenState::Opens
    }

    async fn new_client(&mut self) -> CookieToken {
        let (snapshot, token) = self.sessions.create_web(None).await.unwrap();
        let mut m = Model::new(SessionKind::Web, whole_seconds(self.now()));
        m.stored = false;
        m.live.push(token.hash());
        self.models.insert(snapshot.record.id(), m);
        token
    }

    async fn restore(&mut self, session: SessionId, to: Option<usize>) {
        let otp = self.sessions.create_otp(&session, None).await.unwrap();
        let otp = otp.expect("web and remote sessions make OTPs").to_string();
        let (snapshot, cookie) = self.sessions.restore_otp(&otp).await.unwrap().unwrap();
        assert_eq!(snapshot.record.id(), session);
        let now = self.now();
        let m = self.models.get_mut(&session).unwrap();
        m.issue(cookie.hash(), now);
        m.stored = true;
        m.last_activity = now;
        match to {
            Some(c) => self.clients[c] = cookie,
            None => self.clients.push(cookie),
        }
    }

    async fn apply(&mut self, op: &Op) {
        let now = self.now();
        match *op {
            Op::NewClient => {
                let t = self.new_client().await;
                self.clients.push(t);
            }
            Op::Use(c) => self.use_token(c).await,
            Op::Restore { c, to } if self.opens(c) => {
                self.restore(self.clients[c].session_id(), to).await;
            }
            Op::Login { c, user } if self.opens(c) => {
                let input = PrivilegeInput {
                    privileges: vec![user.to_string()],
                    user_name: Some(user.to_string()),
                    ..PrivilegeInput::default()
                };
                self.change(c, &input, Requester::Cookie, Some(user)).await;
            }
            Op::Set { c, ref names } if self.opens(c) => {
                let input = PrivilegeInput::names(names.clone());
                self.change(c, &input, Requester::Cookie, None).await;
            }
            Op::Backend { c, ref names } if self.opens(c) => {
                let input = PrivilegeInput::names(names.clone());
                self.change(c, &input, Requester::Backend, None).await;
            }
            Op::Clear(c) if self.opens(c) => {
                let id = self.clients[c].session_id();
                let change = self
                    .sessions
                    .clear_privileges(&id, Requester::Cookie)
                    .await
                    .unwrap();
                let m = self.models.get_mut(&id).unwrap();
                assert!(!m.change(None, None, None, now), "a lowering");
                assert!(
                    !change.raised && change.cookie.is_none(),
                    "clearPrivileges raised"
                );
            }
            Op::Logout(c) if self.opens(c) => {
                let token = self.clients[c].clone();
                let id = token.session_id();
                assert!(
                    self.sessions
                        .logout(&id, Some(&token.hash()))
                        .await
                        .unwrap()
                );
                let m = self.models.get_mut(&id).unwrap();
                if m.kind == SessionKind::Web {
                    self.models.remove(&id);
                } else {
                    m.live.retain(|t| *t != token.hash());
                    m.last_activity = now;
                }
            }
            Op::Advance(ms) => self.clock.advance(Duration::from_millis(ms)),
            Op::NewDesktop => {
                let policy = self.sessions.policy().clone();
                let record = SessionRecord::new(
                    SessionKind::Remote,
                    now,
                    &policy,
                    None,
                    Some(DesktopInfo::default()),
                );
                let id = self.sessions.insert(record).await.unwrap().record.id();
                self.models.insert(id, Model::new(SessionKind::Remote, now));
                self.desktops.push(id);
            }
            Op::ShareDesktop { d, to } if self.models.contains_key(&self.desktops[d]) => {
                self.restore(self.desktops[d], to).await;
            }
            Op::DesktopSet { d, ref names } if self.models.contains_key(&self.desktops[d]) => {
                let id = self.desktops[d];
                let input = PrivilegeInput::names(names.clone());
                let change = self
                    .sessions
                    .set_privileges(&id, &input, Requester::Server)
                    .await
                    .unwrap();
                let m = self.models.get_mut(&id).unwrap();
                let raised = m.change(Some(names.iter().cloned().collect()), None, None, now);
                assert_eq!((change.raised, change.cookie.is_some()), (raised, false));
            }
            Op::EndDesktop(d) if self.models.contains_key(&self.desktops[d]) => {
                assert!(self.sessions.remove(&self.desktops[d]).await.unwrap());
                self.models.remove(&self.desktops[d]);
            }
            _ => {}
        }
    }

    /// Client `c` sends a request with its cookie, as the web layer handles it.
    async fn use_token(&mut self, c: usize) {
        let now = self.now();
        let (state, _) = self.expect(c);
        let token = self.clients[c].clone();
        match (self.sessions.resolve_token(&token).await.unwrap(), state) {
            (Resolved::Open(..), TokenState::Opens) => {
                let m = self.models.get_mut(&token.session_id()).unwrap();
                let hash = token.hash();
                if m.live.last() != Some(&hash) {
                    m.live.retain(|t| *t != hash);
                    m.live.push(hash);
                    m.last_activity = now;
                } else if now.since(m.last_activity) >= Duration::from_secs(1) {
                    m.last_activity = now;
                }
            }
            (Resolved::Unstored { refreshed, .. }, TokenState::Opens) => {
                let m = self.models.get_mut(&token.session_id()).unwrap();
                assert!(!m.stored, "an unstored guest in the store");
                let due = now.since(m.last_activity) >= Duration::from_secs(60);
                assert_eq!(refreshed.is_some(), due, "ticket renewal");
                if let Some(ticket) = refreshed {
                    m.last_activity = whole_seconds(now);
                    self.clients[c] = ticket;
                }
            }
            (Resolved::Ended, TokenState::Ended) => {}
            (Resolved::Unknown, TokenState::Unknown) => {
                self.clients[c] = self.new_client().await;
            }
            (got, want) => panic!("resolve: got {got:?}, the model says {want:?}"),
        }
    }

    async fn change(
        &mut self,
        c: usize,
        input: &PrivilegeInput,
        requester: Requester,
        user: Option<&str>,
    ) {
        let id = self.clients[c].session_id();
        let now = self.now();
        let change = self
            .sessions
            .set_privileges(&id, input, requester)
            .await
            .unwrap();
        let m = self.models.get_mut(&id).unwrap();
        let issues = requester == Requester::Cookie || m.kind == SessionKind::Web;
        let fresh = change.cookie.as_ref().map(CookieToken::hash);
        let raised = m.change(
            Some(input.privileges.iter().cloned().collect()),
            user,
            fresh,
            now,
        );
        assert_eq!(change.raised, raised, "raise detection");
        assert_eq!(change.cookie.is_some(), raised && issues, "fresh token");
        if let Some(cookie) = change.cookie {
            self.clients[c] = cookie;
        }
    }

    /// Every client's token opens what the model says.
    async fn check(&self, step: usize) {
        for (c, token) in self.clients.iter().enumerate() {
            let (want, model) = self.expect(c);
            let (got, snapshot) = self.sessions.token_state(token).await.unwrap();
            let got = if snapshot.is_some() {
                got
            } else {
                TokenState::Unknown
            };
            assert_eq!(got, want, "step {step}: client {c}");
            if let (TokenState::Opens, Some(m), Some(s)) = (want, model, snapshot) {
                let r = &s.record;
                let privileges: BTreeSet<String> = r.get_privileges().into_iter().collect();
                assert_eq!(
                    privileges, m.privileges,
                    "step {step}: client {c} privileges"
                );
                assert_eq!(r.user_name(), m.user, "step {step}: client {c} userName");
                assert!(r.tokens().live() <= CAP && r.tokens().slots().len() <= 2 * CAP);
            }
        }
    }
}

/// Runs `cases` random sequences of `steps` operations on `store`; the seed of a
/// failing sequence is in the panic message (`SESSIOND_TOKEN_SEED` replays one).
pub async fn token_model(store: Store) {
    let roles = Roles::parse(
        r#"{"privileges":[{"privilege":"a"},{"privilege":"b"},{"privilege":"c"}]}"#,
        "roles.json",
    )
    .unwrap();
    let policy = SessionPolicy {
        max_tokens_per_session: CAP,
        token_grace: GRACE,
        ..SessionPolicy::default()
    };
    let first = std::env::var("SESSIOND_TOKEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let seeds: Vec<u64> = match first {
        Some(seed) => vec![seed],
        None => (0..24).map(|i| 0x5E55_10D0 + i).collect(),
    };
    let roles = Arc::new(roles);
    for seed in seeds {
        let clock = ManualClock::new(Timestamp(1_700_000_000_000 + (seed % 1000) * 86_400_000));
        let mut world = World {
            sessions: Sessions::new(
                store.clone(),
                roles.clone(),
                Arc::new(clock.clone()),
                policy.clone(),
            ),
            clock,
            models: HashMap::new(),
            clients: Vec::new(),
            desktops: Vec::new(),
        };
        let mut rng = Rng(seed);
        let mut log = Vec::new();
        for step in 0..60 {
            let op = op(&mut rng, world.clients.len(), world.desktops.len());
            log.push(op.clone());
            let run = async {
                world.apply(&op).await;
                world.check(step).await;
            };
            if let Err(panic) = futures_catch(run).await {
                panic!("token model, seed {seed}, steps {log:?}: {panic}");
            }
        }
    }
}

/// Runs `f`, turning a panic into its message (so the failing sequence is printed).
async fn futures_catch(f: impl Future<Output = ()>) -> Result<(), String> {
    use std::panic::AssertUnwindSafe;
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(e) => std::task::Poll::Ready(Err(e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default())),
        }
    })
    .await
}
