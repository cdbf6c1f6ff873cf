//! The users file (`users.json` in the data folder) of the built-in login: each user
//! has an argon2id password hash and the roles/privileges a login grants.
//!
//! ```json
//! {"users": [{"userName": "ann", "password": "$argon2id$v=19$...", "roles": ["Medium"], "privileges": []}]}
//! ```

use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};

use sessiond_store::fs::atomic_write;

use crate::passwords::{PasswordChecks, Refusal};

/// Errors of the users file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// The file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid users file.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A user name or password is not acceptable.
    #[error("{0}")]
    Rejected(String),
}

/// Why a login could not be checked.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoginError {
    /// The password limits refused the attempt.
    Refused(Refusal),
    /// The users file cannot be used.
    File(UsersError),
}

/// One user of the built-in login.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    /// The login name (becomes `Session.userName`).
    pub user_name: String,
    /// argon2id hash in PHC format.
    pub password: String,
    /// Roles granted at login.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Privileges granted at login.
    #[serde(default)]
    pub privileges: Vec<String>,
}

/// The users file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// The users.
    pub users: Vec<User>,
}

/// A valid argon2id hash of a random password, verified against when a user name is
/// unknown, so that a failed login takes the same time either way.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("sessiond-dummy-password").expect("hashing works"));

/// Hashes a password with argon2id (default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let salt = SaltString::encode_b64(&sessiond_core::id::random_bytes::<16>())
        .map_err(|e| UsersError::Rejected(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Rejected(format!("cannot hash password: {e}")))
}

/// The rule every password follows: at least 8 characters.
pub fn check_password(password: &str) -> Result<(), UsersError> {
    if password.chars().count() < 8 {
        return Err(UsersError::Rejected(
            "the password must have at least 8 characters".into(),
        ));
    }
    Ok(())
}

/// Largest argon2 memory a stored hash may ask for, in 1 KiB blocks (64 MiB).
const MAX_BLOCKS: usize = 64 * 1024;

/// Checks a password against a PHC hash (false for a malformed one, or one asking
/// for more than 64 MiB). The argon2 working memory (19 MiB with the default
/// parameters) is allocated once per thread and reused: password checks run on a few
/// dedicated threads ([`crate::passwords`]), so memory stays flat however many checks
/// run (freeing and reallocating it made the allocator keep several copies per thread).
pub fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::{Algorithm, Block, Params, Version};
    use subtle::ConstantTimeEq as _;
    thread_local! {
        static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return false;
    }
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let hasher = Argon2::new(algorithm, version, params);
    let computed = MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        hasher
            .hash_password_into_with_memory(
                password.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
            .is_ok()
    });
    computed && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

impl Users {
    /// Reads the file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(UsersError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let users: Self = serde_json::from_str(&text).map_err(|e| UsersError::Invalid {
            path: path.display().to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        for u in &users.users {
            if PasswordHash::new(&u.password).is_err() {
                return Err(UsersError::Invalid {
                    path: path.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("user {:?}: password is not a PHC hash", u.user_name),
                });
            }
        }
        Ok(users)
    }

    /// Writes the file atomically.
    fn save(&self, path: &Path) -> Result<(), UsersError> {
        let json = serde_json::to_vec_pretty(self).expect("serializable");
        atomic_write(path, &json).map_err(|source| UsersError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    /// Removes user `user_name`; false when there is none.
    pub fn remove(path: &Path, user_name: &str) -> Result<bool, UsersError> {
        let mut users = Self::load(path)?;
        let before = users.users.len();
        users.users.retain(|u| u.user_name != user_name);
        if users.users.len() == before {
            return Ok(false);
        }
        users.save(path)?;
        Ok(true)
    }

    /// Sets the password of user `user_name` (its roles and privileges stay); false
    /// when there is no such user.
    pub fn set_password(path: &Path, user_name: &str, password: &str) -> Result<bool, UsersError> {
        check_password(password)?;
        let mut users = Self::load(path)?;
        let Some(user) = users.users.iter_mut().find(|u| u.user_name == user_name) else {
            return Ok(false);
        };
        user.password = hash_password(password)?;
        users.save(path)?;
        Ok(true)
    }

    /// Adds or replaces a user, hashing `password`, and writes the file atomically.
    pub fn add(
        path: &Path,
        user_name: &str,
        password: &str,
        roles: Vec<String>,
        privileges: Vec<String>,
    ) -> Result<(), UsersError> {
        if user_name.trim().is_empty() || user_name.len() > sessiond_core::privileges::MAX_NAME_LEN
        {
            return Err(UsersError::Rejected(
                "user name must be 1 to 255 bytes".into(),
            ));
        }
        check_password(password)?;
        let mut users = Self::load(path)?;
        let user = User {
            user_name: user_name.to_string(),
            password: hash_password(password)?,
            roles,
            privileges,
        };
        users.users.retain(|u| u.user_name != user_name);
        users.users.push(user);
        users.save(path)
    }

    /// Loads `path` and checks a login through `checks` (a bounded pool, with the
    /// failure limits of [`PasswordChecks`]): the matching user, or `None`.
    pub async fn check(
        checks: &PasswordChecks,
        client: Option<std::net::IpAddr>,
        now: sessiond_core::Timestamp,
        path: std::path::PathBuf,
        user_name: String,
        password: String,
    ) -> Result<Option<User>, LoginError> {
        let key = user_name.clone();
        checks
            .check(client, &key, now, move || {
                match Users::load(&path).map(|u| u.verify(&user_name, &password).cloned()) {
                    Ok(user) => (Some(user.is_some()), Ok(user)),
                    Err(e) => (None, Err(e)),
                }
            })
            .await
            .map_err(LoginError::Refused)?
            .map_err(LoginError::File)
    }

    /// The user whose name and password match (CPU-heavy: run off the async threads).
    pub fn verify(&self, user_name: &str, password: &str) -> Option<&User> {
        if let Some(u) = self.users.iter().find(|u| u.user_name == user_name) {
            verify_password(password, &u.password).then_some(u)
        } else {
            verify_password(password, &DUMMY_HASH);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        Users::add(&path, "ann", "correct horse", vec!["Medium".into()], vec![]).unwrap();
        let users = Users::load(&path).unwrap();
        assert_eq!(
            users.verify("ann", "correct horse").unwrap().roles,
            ["Medium"]
        );
        assert!(users.verify("ann", "wrong").is_none());
        assert!(users.verify("bob", "correct horse").is_none());
        assert!(users.users[0].password.starts_with("$argon2id$"));
        // The same verdicts as the argon2 crate's own verifier, on other parameters too.
        for (params, pw) in [
            (argon2::Params::new(8, 1, 1, None).unwrap(), "p1"),
            (argon2::Params::default(), "p2"),
        ] {
            use argon2::password_hash::PasswordVerifier as _;
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let phc = argon
                .hash_password(pw.as_bytes(), &salt)
                .unwrap()
                .to_string();
            let parsed = PasswordHash::new(&phc).unwrap();
            for attempt in [pw, "other"] {
                assert_eq!(
                    verify_password(attempt, &phc),
                    argon.verify_password(attempt.as_bytes(), &parsed).is_ok()
                );
            }
        }
        assert!(Users::add(&path, "x", "short", vec![], vec![]).is_err());
    }

    #[test]
    fn malformed_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.json");
        std::fs::write(&path, "{\"users\": [{\"userName\": 1}]}").unwrap();
        let e = Users::load(&path).unwrap_err().to_string();
        assert!(e.contains("users.json:1:"), "{e}");
    }
}
