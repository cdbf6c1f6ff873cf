//! One-time tokens (`createOTP()` / `restore()`, spec §1.4 and §2.5).

use std::time::Duration;

use crate::{OtpToken, SessionId, SessionKind, SessionPolicy, SessionRecord, Timestamp, TokenHash};

/// A stored OTP: only the token's hash, the session it opens and its expiry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OtpRecord {
    /// Hash of the token.
    pub hash: TokenHash,
    /// The session that created it.
    pub session: SessionId,
    /// End of validity.
    pub expires: Timestamp,
}

impl OtpRecord {
    /// `Session.createOTP({lifespan})` for `record`: a token and its record, or `None`
    /// where 4D returns `""` (the stored-procedures session, unless
    /// [`SessionPolicy::stored_procedure_otp`]). The lifespan defaults to the idle
    /// timeout (web) or 10 s (desktop); it is at least 10 s and at most the longest
    /// idle timeout.
    pub fn create(
        record: &SessionRecord,
        lifespan: Option<Duration>,
        now: Timestamp,
        policy: &SessionPolicy,
    ) -> Option<(OtpToken, Self)> {
        let default = match record.kind {
            SessionKind::Web => Duration::from_secs(u64::from(record.idle_timeout) * 60),
            SessionKind::Remote => policy.desktop_otp_lifespan,
            SessionKind::StoredProcedure if policy.stored_procedure_otp => {
                policy.desktop_otp_lifespan
            }
            SessionKind::StoredProcedure => return None,
        };
        let longest = Duration::from_secs(u64::from(policy.max_idle_timeout_minutes) * 60);
        let lifespan = lifespan
            .unwrap_or(default)
            .clamp(policy.otp_min_lifespan, longest);
        let token = OtpToken::random();
        let rec = Self {
            hash: token.hash(),
            session: record.id,
            expires: now.plus(lifespan),
        };
        Some((token, rec))
    }

    /// Whether the OTP is still valid at `now`.
    pub fn is_valid(&self, now: Timestamp) -> bool {
        now < self.expires
    }
}
