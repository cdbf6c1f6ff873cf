//! [`ConfigHook`]: the authentication hook of `sessiond serve` — the config's deny
//! and allow lists first, then (when configured) an HTTP callout to the user's own
//! service, else the policy's default decision.

use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use http::{Request, header};
use http_body_util::BodyExt;
use serde_json::{Map, Value};
use sessiond_core::{PrivilegeInput, SessionPolicy};
use sessiond_mobile::hook::{AuthHook, HookResult, Policy};

/// Largest callout answer read, bytes.
const MAX_ANSWER: usize = 64 * 1024;

/// The user's authentication service.
#[derive(Debug, Clone)]
pub struct Callout {
    /// Where the `$mobileInfo` JSON is POSTed (`http://` or `https://`).
    pub url: http::Uri,
    /// How long to wait for the answer.
    pub timeout: Duration,
}

/// Lists, then callout, then default.
pub struct ConfigHook {
    policy: Policy,
    callout: Option<Callout>,
    /// How the callout's `privileges` are parsed (the `[sessions]` policy).
    sessions: SessionPolicy,
    client: crate::outbound::Client,
}

impl std::fmt::Debug for ConfigHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigHook")
            .field("policy", &self.policy)
            .field("callout", &self.callout)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    success: Option<bool>,
    #[serde(default)]
    status_text: String,
    #[serde(default)]
    verify: bool,
    #[serde(default)]
    user_info: Map<String, Value>,
    privileges: Option<Value>,
}

impl ConfigHook {
    /// A hook from the config; the callout's `privileges` are read under `sessions`
    /// (the server's session policy), like every other `setPrivileges` argument. The
    /// callout trusts the Mozilla roots ([`with_client`](Self::with_client) for more).
    pub fn new(policy: Policy, callout: Option<Callout>, sessions: SessionPolicy) -> Self {
        Self {
            policy,
            callout,
            sessions,
            client: crate::outbound::client(&[]),
        }
    }

    /// The same, calling out with `client` (one that trusts an internal CA).
    #[must_use]
    pub fn with_client(mut self, client: crate::outbound::Client) -> Self {
        self.client = client;
        self
    }

    async fn call(&self, callout: &Callout, info: &Value) -> Result<HookResult, String> {
        let req = Request::post(callout.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(info.to_string()))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(callout.timeout, async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok::<_, String>((status, body))
        })
        .await
        .map_err(|_| "timeout".to_string())??;
        if !resp.0.is_success() {
            return Err(format!("HTTP {}", resp.0));
        }
        let answer: Answer =
            serde_json::from_slice(&resp.1).map_err(|e| format!("invalid answer: {e}"))?;
        let privileges = match &answer.privileges {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(PrivilegeInput::from_json(v, &self.sessions).map_err(|e| e.to_string())?)
            }
        };
        Ok(HookResult {
            success: answer.success == Some(true),
            status_text: answer.status_text,
            verify: answer.verify,
            user_info: answer.user_info,
            privileges,
        })
    }
}

#[async_trait]
impl AuthHook for ConfigHook {
    async fn authenticate(&self, info: &Value) -> HookResult {
        if let Some(decision) = self.policy.listed(info) {
            return Policy::answer(decision, info);
        }
        let Some(callout) = &self.callout else {
            return Policy::answer(self.policy.default, info);
        };
        match self.call(callout, info).await {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(url = %callout.url, error = %e, "mobile authentication callout failed");
                HookResult::deny(
                    "The authentication service is unavailable. Please try again later.",
                )
            }
        }
    }
}
