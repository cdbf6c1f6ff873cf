//! The authentication hook (4D's `On Mobile App Authentication`, spec §2.1): a trait
//! for library users, and [`Policy`], the rules `sessiond serve` reads from its config.

use async_trait::async_trait;
use serde_json::{Map, Value};
use sessiond_core::PrivilegeInput;

/// What the hook answers (4D's `$result`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookResult {
    /// True → the session is created (or kept); false → the login is refused.
    pub success: bool,
    /// Shown by the app (welcome text, or why it was refused).
    pub status_text: String,
    /// True → the session is written `pending` and gets no token until accepted.
    pub verify: bool,
    /// Returned to the app (`userInfo`), e.g. `{"email": …}` for filter queries.
    pub user_info: Map<String, Value>,
    /// Beyond 4D's `$result`: privileges/roles/userName for the session's `Session`
    /// (4D code would call `Session.setPrivileges()` in the hook).
    pub privileges: Option<PrivilegeInput>,
}

impl HookResult {
    /// Accept, with a status text.
    pub fn accept(status_text: impl Into<String>) -> Self {
        Self {
            success: true,
            status_text: status_text.into(),
            ..Self::default()
        }
    }

    /// Accept as pending (needs validation).
    pub fn verify(status_text: impl Into<String>) -> Self {
        Self {
            success: true,
            verify: true,
            status_text: status_text.into(),
            ..Self::default()
        }
    }

    /// Refuse.
    pub fn deny(status_text: impl Into<String>) -> Self {
        Self {
            success: false,
            status_text: status_text.into(),
            ..Self::default()
        }
    }
}

/// Decides on a login of a new or pending user agent. `mobile_info` is 4D's
/// `$mobileInfo`: the request's fields plus `session{id, ip}`.
#[async_trait]
pub trait AuthHook: Send + Sync + 'static {
    /// The decision.
    async fn authenticate(&self, mobile_info: &Value) -> HookResult;
}

/// One of the three outcomes a [`Policy`] can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Accepted at once.
    #[default]
    Accept,
    /// Created pending: an administrator (or an e-mail link) must accept it.
    Verify,
    /// Refused.
    Deny,
}

/// Which logins a list matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    /// Exact e-mail addresses (case-insensitive).
    #[serde(default)]
    pub emails: Vec<String>,
    /// E-mail domains (`example.com` matches `ann@example.com`).
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// `application.id`s.
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// `device.id`s.
    #[serde(default)]
    pub device_ids: Vec<String>,
}

impl Matchers {
    /// Whether a login (`$mobileInfo`) matches any entry.
    pub fn matches(&self, info: &Value) -> bool {
        let email = info["email"].as_str().unwrap_or("").to_lowercase();
        let domain = email.rsplit_once('@').map(|(_, d)| d.to_string());
        self.emails
            .iter()
            .any(|e| !email.is_empty() && e.to_lowercase() == email)
            || domain.is_some_and(|d| {
                self.email_domains
                    .iter()
                    .any(|x| x.trim_start_matches('@').eq_ignore_ascii_case(&d))
            })
            || info["application"]["id"]
                .as_str()
                .is_some_and(|a| self.app_ids.iter().any(|x| x == a))
            || info["device"]["id"]
                .as_str()
                .is_some_and(|a| self.device_ids.iter().any(|x| x == a))
    }
}

/// Rules from the config: the deny list wins, then the allow list accepts, else the
/// default decision applies.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use sessiond_mobile::hook::{AuthHook, Decision, Matchers, Policy};
/// let policy = Policy {
///     default: Decision::Verify,
///     allow: Matchers { email_domains: vec!["example.com".into()], ..Matchers::default() },
///     ..Policy::default()
/// };
/// let r = policy.authenticate(&serde_json::json!({"email": "ann@example.com"})).await;
/// assert!(r.success && !r.verify);
/// let r = policy.authenticate(&serde_json::json!({"email": "bob@other.org"})).await;
/// assert!(r.success && r.verify);
/// # });
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Decision when no list matches.
    #[serde(default)]
    pub default: Decision,
    /// Logins accepted at once.
    #[serde(default)]
    pub allow: Matchers,
    /// Logins refused.
    #[serde(default)]
    pub deny: Matchers,
}

impl Policy {
    /// The decision of the deny and allow lists, if one of them matches.
    pub fn listed(&self, info: &Value) -> Option<Decision> {
        if self.deny.matches(info) {
            Some(Decision::Deny)
        } else if self.allow.matches(info) {
            Some(Decision::Accept)
        } else {
            None
        }
    }

    /// The hook's answer for a decision (with `userInfo.email` when there is one).
    pub fn answer(decision: Decision, info: &Value) -> HookResult {
        let mut result = match decision {
            Decision::Accept => HookResult::accept(""),
            Decision::Verify => {
                HookResult::verify("Your access must be validated before you can connect.")
            }
            Decision::Deny => HookResult::deny("You are not allowed to connect."),
        };
        if let Some(email) = info["email"].as_str().filter(|e| !e.is_empty()) {
            result.user_info.insert("email".into(), email.into());
        }
        result
    }
}

#[async_trait]
impl AuthHook for Policy {
    async fn authenticate(&self, info: &Value) -> HookResult {
        Self::answer(self.listed(info).unwrap_or(self.default), info)
    }
}
