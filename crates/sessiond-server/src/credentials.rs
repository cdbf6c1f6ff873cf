//! The server's own secrets: the service API key and the admin credential, created
//! on first start in `credentials.json` (mode 0600) and shown once. Only hashes are
//! stored: SHA-256 of the API key (a 256-bit random key needs no slow hash, and the
//! hot path compares it on every service call), argon2id of the admin password. The
//! file also keeps the key of unstored guest sessions ([`sessiond_core::GuestKey`]),
//! so that guests' cookies survive a restart and every node sharing the data folder
//! recognizes them.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use sessiond_core::id::to_hex;

use crate::users::{UsersError, hash_password};
use sessiond_store::fs::{atomic_write, private_dir};

use crate::passwords::{PasswordChecks, Refusal};

/// Name of the credentials file in the data folder.
pub const FILE: &str = "credentials.json";

/// The stored credentials.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Credentials {
    /// Hex SHA-256 of the service API key.
    pub api_key_sha256: String,
    /// argon2id hash of the admin password.
    pub admin_password: String,
    /// Hex of the guest-session key (made on first start; added to older files).
    #[serde(default)]
    pub guest_key: String,
}

impl Credentials {
    /// The key of unstored guest sessions.
    pub fn guest_key(&self) -> sessiond_core::GuestKey {
        sessiond_core::id::from_hex::<32>(&self.guest_key)
            .map(sessiond_core::GuestKey::from_bytes)
            .expect("ensure() keeps a valid guest key")
    }
}

/// Secrets created by [`Credentials::ensure`], to show the operator once.
#[derive(Debug, Default)]
pub struct Generated {
    /// A new API key.
    pub api_key: Option<String>,
    /// A new admin password.
    pub admin_password: Option<String>,
}

/// A verifier of the service API key (constant-time).
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(..)")
    }
}

impl ApiKey {
    /// The verifier of `key`.
    pub fn from_key(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    fn from_hex(hex: &str) -> Option<Self> {
        sessiond_core::id::from_hex(hex).map(Self)
    }

    /// Whether `presented` is the key.
    pub fn verify(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(sessiond_core::id::random_bytes::<32>())
}

impl Credentials {
    /// Loads `credentials.json` from `data_dir`, creating it (and any missing
    /// secret) on first start. `api_key` / `admin_password` given by the operator
    /// (environment) take precedence and are stored hashed.
    pub fn ensure(
        data_dir: &Path,
        api_key: Option<&str>,
        admin_password: Option<&str>,
    ) -> Result<(Self, ApiKey, Generated), UsersError> {
        let path = data_dir.join(FILE);
        let io = |source| UsersError::Io {
            path: path.display().to_string(),
            source,
        };
        let existing: Option<Self> = match std::fs::read_to_string(&path) {
            Ok(text) => Some(
                serde_json::from_str(&text).map_err(|e| UsersError::Invalid {
                    path: path.display().to_string(),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let mut generated = Generated::default();
        let (key_hash, key) = match (api_key, &existing) {
            (Some(k), _) => (to_hex(&Sha256::digest(k.as_bytes())), ApiKey::from_key(k)),
            (None, Some(c)) => {
                let key =
                    ApiKey::from_hex(&c.api_key_sha256).ok_or_else(|| UsersError::Invalid {
                        path: path.display().to_string(),
                        line: 0,
                        column: 0,
                        message: "apiKeySha256 is not 64 hex digits".into(),
                    })?;
                (c.api_key_sha256.clone(), key)
            }
            (None, None) => {
                let k = new_secret();
                let v = (to_hex(&Sha256::digest(k.as_bytes())), ApiKey::from_key(&k));
                generated.api_key = Some(k);
                v
            }
        };
        let admin = match (admin_password, &existing) {
            (Some(p), Some(c)) if crate::users::verify_password(p, &c.admin_password) => {
                c.admin_password.clone()
            }
            (Some(p), _) => hash_password(p)?,
            (None, Some(c)) => c.admin_password.clone(),
            (None, None) => {
                let p = new_secret();
                let h = hash_password(&p)?;
                generated.admin_password = Some(p);
                h
            }
        };
        let guest_key = existing
            .as_ref()
            .map(|c| c.guest_key.clone())
            .filter(|k| sessiond_core::id::from_hex::<32>(k).is_some())
            .unwrap_or_else(|| to_hex(sessiond_core::GuestKey::random().as_bytes()));
        let creds = Self {
            api_key_sha256: key_hash,
            admin_password: admin,
            guest_key,
        };
        if existing.as_ref() != Some(&creds) {
            private_dir(data_dir).map_err(io)?;
            atomic_write(
                &path,
                &serde_json::to_vec_pretty(&creds).expect("serializable"),
            )
            .map_err(io)?;
        }
        Ok((creds, key, generated))
    }

    /// Replaces the admin password in `data_dir`'s credentials file.
    pub fn set_admin_password(data_dir: &Path, password: &str) -> Result<(), UsersError> {
        crate::users::check_password(password)?;
        let (mut creds, _, _) = Self::ensure(data_dir, None, None)?;
        creds.admin_password = hash_password(password)?;
        creds.save(data_dir)
    }

    /// Makes a new service API key in `data_dir`'s credentials file (the old one
    /// stops working) and returns it, to show once.
    pub fn new_api_key(data_dir: &Path) -> Result<String, UsersError> {
        let (mut creds, _, _) = Self::ensure(data_dir, None, None)?;
        let key = new_secret();
        creds.api_key_sha256 = to_hex(&Sha256::digest(key.as_bytes()));
        creds.save(data_dir)?;
        Ok(key)
    }

    fn save(&self, data_dir: &Path) -> Result<(), UsersError> {
        let path = data_dir.join(FILE);
        atomic_write(
            &path,
            &serde_json::to_vec_pretty(self).expect("serializable"),
        )
        .map_err(|source| UsersError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

/// Checks the admin credential presented as `Authorization: Bearer <password>`.
///
/// The hash is re-read from `credentials.json` on every check (a small file), so
/// `sessiond admin password` takes effect at once; a password already verified
/// against the current hash is remembered by its SHA-256, so argon2 runs once, not on
/// every call.
#[derive(Debug)]
pub struct AdminAuth {
    data_dir: std::path::PathBuf,
    verified: parking_lot::Mutex<Option<(String, [u8; 32])>>,
}

impl AdminAuth {
    /// Checks against `<data_dir>/credentials.json`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            verified: parking_lot::Mutex::new(None),
        }
    }

    async fn read(&self) -> Option<Credentials> {
        let path = self.data_dir.join(FILE);
        let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
            .await
            .ok()?
            .ok()?;
        serde_json::from_str(&text).ok()
    }

    /// A fingerprint of the current admin credential (hex SHA-256 of its stored
    /// hash): it changes when the password does, which ends the console's sessions.
    /// `None` when the credentials file cannot be read.
    pub async fn fingerprint(&self) -> Option<String> {
        let creds = self.read().await?;
        Some(to_hex(&Sha256::digest(creds.admin_password.as_bytes())))
    }

    /// Whether `presented` (from `client`) is the admin password, checked through
    /// `checks` (bounded, limited per address like every password check). A password
    /// already verified against the current hash is recognized without argon2.
    pub async fn verify(
        &self,
        presented: &str,
        checks: &PasswordChecks,
        client: Option<std::net::IpAddr>,
        now: sessiond_core::Timestamp,
    ) -> Result<bool, Refusal> {
        let Some(creds) = self.read().await else {
            return Ok(false);
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let known = self.verified.lock().as_ref().is_some_and(|(phc, known)| {
            *phc == creds.admin_password && bool::from(known.ct_eq(&digest))
        });
        // Through the limits even when known: a locked-out address must not test
        // guesses against the remembered digest at no cost.
        let (pw, phc) = (presented.to_string(), creds.admin_password.clone());
        let ok = checks
            .check(client, ADMIN_USER, now, move || {
                let ok = known || crate::users::verify_password(&pw, &phc);
                (Some(ok), ok)
            })
            .await?;
        if ok {
            *self.verified.lock() = Some((creds.admin_password, digest));
        }
        Ok(ok)
    }
}

/// The user name under which admin credential checks are counted.
const ADMIN_USER: &str = "\u{0}admin";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_generates_then_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, key, generated) = Credentials::ensure(dir.path(), None, None).unwrap();
        let api_key = generated.api_key.unwrap();
        assert!(key.verify(&api_key) && !key.verify("nope"));
        assert!(generated.admin_password.is_some());
        let (c2, key2, again) = Credentials::ensure(dir.path(), None, None).unwrap();
        assert_eq!(c1, c2);
        assert!(again.api_key.is_none() && again.admin_password.is_none());
        assert!(key2.verify(&api_key));
        let (_, key3, _) = Credentials::ensure(dir.path(), Some("from-env"), None).unwrap();
        assert!(key3.verify("from-env"));
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(
            !text.contains("from-env") && !text.contains(&api_key),
            "only hashes are stored"
        );
    }
}
