//! [`SessionPolicy`]: every point where 4D's documentation is silent or contradicts
//! itself, as a named choice whose default is the spec's recommendation.

use std::time::Duration;

/// The largest accepted [`SessionPolicy::max_storage_depth`]: a stored record nests
/// its storage two levels down, and records are read back with serde_json's limit of
/// 128 levels.
pub const MAX_STORAGE_DEPTH: usize = 100;

/// What `setPrivileges` does with the privileges a session already has
/// (spec §1.4 setPrivileges: \[UNSPECIFIED\]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetPrivilegesMode {
    /// The new set replaces the old one (spec recommendation; every 4D example calls
    /// `clearPrivileges()` first, which is then redundant but harmless).
    #[default]
    Replace,
    /// The new names are added to the existing ones.
    Merge,
}

/// The rules for session behaviour that the 4D documentation leaves open.
///
/// ```
/// use sessiond_core::SessionPolicy;
/// let p = SessionPolicy::default();
/// assert_eq!(p.min_idle_timeout_minutes, 60);
/// assert!(p.absolute_lifetime.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// `setPrivileges` replace vs merge. Default: replace.
    pub set_privileges_mode: SetPrivilegesMode,
    /// Whether the text form of `roles` in `setPrivileges({roles})` splits on commas
    /// like the text form of `privileges` (\[UNSPECIFIED\]; default: yes).
    pub split_roles_on_commas: bool,
    /// Whether `clearPrivileges()` keeps `userName` (\[UNSPECIFIED\]; default: keeps it).
    pub clear_privileges_keeps_user_name: bool,
    /// Idle timeout of a new web session, minutes (4D: 60).
    pub default_idle_timeout_minutes: u32,
    /// Smallest accepted idle timeout, minutes; smaller values are raised to it
    /// (4D: 60, not configurable; sessiond allows lowering it as an extension).
    pub min_idle_timeout_minutes: u32,
    /// Largest accepted idle timeout, minutes; larger values are lowered to it
    /// (4D: none; default 1 year).
    pub max_idle_timeout_minutes: u32,
    /// Minimum OTP lifespan (4D 20 R9/R10: 10 s; later texts are silent, the clamp is kept).
    pub otp_min_lifespan: Duration,
    /// Default OTP lifespan for desktop (remote) sessions (4D: 10 s).
    pub desktop_otp_lifespan: Duration,
    /// Beyond 4D: an absolute lifetime cap from creation that activity never extends.
    /// Default: off.
    pub absolute_lifetime: Option<Duration>,
    /// How long an ended cookie token (a raise of the session's rights ended it) is
    /// still recognized: a request in flight with it is answered as a guest that is not
    /// stored and gets no cookie, so it cannot replace the client's new cookie. It never
    /// opens the session again. Default 30 s.
    pub token_grace: Duration,
    /// How many clients may hold one session at once (each OTP restore adds one);
    /// past it the least recently used token is evicted (and logged), never the one
    /// used last. At least 2; default 32.
    pub max_tokens_per_session: usize,
    /// Beyond 4D: a guest session is stored only once it holds something (storage,
    /// privileges, an OTP, an idle timeout): until then its cookie is a guest ticket
    /// the server recognizes without a lookup, so first visits cost no store write and
    /// anonymous clients cannot fill the store (a node keeps a bounded registry of the
    /// guests it issued, so that the service API and the activity listing still see
    /// them). Default: yes (`false`: every guest is stored at once, as 4D).
    pub lazy_guests: bool,
    /// Largest `storage` of one session, as JSON bytes; a write past it is refused and
    /// changes nothing. Default 1 MiB: a session's shared state, not a document store,
    /// and every change rewrites (and, durably, commits) the whole record.
    pub max_storage_bytes: usize,
    /// Deepest nesting of objects and arrays in `storage` (the storage object itself is
    /// level 1); a write past it is refused. Default 32 (as deep as an increment path
    /// may go); at most [`MAX_STORAGE_DEPTH`], so that every stored record reads back.
    pub max_storage_depth: usize,
    /// Beyond 4D: whether the stored-procedures session can create OTPs, so that a web
    /// request can share it (4D 21 answers `""` there). The stored-procedures session
    /// holds every privilege, so its OTPs are for trusted server code only (stored
    /// procedures, the service API). Default: yes.
    pub stored_procedure_otp: bool,
}

impl Default for SessionPolicy {
    fn default() -> Self {
        Self {
            set_privileges_mode: SetPrivilegesMode::Replace,
            split_roles_on_commas: true,
            clear_privileges_keeps_user_name: true,
            default_idle_timeout_minutes: 60,
            min_idle_timeout_minutes: 60,
            max_idle_timeout_minutes: 525_600,
            otp_min_lifespan: Duration::from_secs(10),
            desktop_otp_lifespan: Duration::from_secs(10),
            absolute_lifetime: None,
            token_grace: Duration::from_secs(30),
            max_tokens_per_session: 32,
            stored_procedure_otp: true,
            lazy_guests: true,
            max_storage_bytes: 1 << 20,
            max_storage_depth: 32,
        }
    }
}
