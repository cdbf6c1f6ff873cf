//! The three argument forms of `setPrivileges()` (spec §1.4): a text of one or
//! comma-separated names, a list of names, or an object `{privileges, roles, userName}`.

use serde_json::Value;

use crate::{Error, SessionPolicy};

/// A parsed `setPrivileges()` argument.
///
/// ```
/// use sessiond_core::PrivilegeInput;
/// use serde_json::json;
/// use sessiond_core::SessionPolicy;
/// let policy = SessionPolicy::default();
/// let p = PrivilegeInput::from_json(&json!("a, b"), &policy).unwrap();
/// assert_eq!(p.privileges, ["a", "b"]);
/// let p = PrivilegeInput::from_json(&json!({"roles": "Medium", "userName": "Ann"}), &policy).unwrap();
/// assert_eq!(p.roles, ["Medium"]);
/// assert_eq!(p.user_name.as_deref(), Some("Ann"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivilegeInput {
    /// Privilege names.
    pub privileges: Vec<String>,
    /// Role names.
    pub roles: Vec<String>,
    /// `userName`, when given (object form only).
    pub user_name: Option<String>,
}

/// Longest accepted name (privilege, role or user), in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most names accepted in one call.
pub const MAX_NAMES: usize = 1024;

impl PrivilegeInput {
    /// Names only (the text and list forms).
    pub fn names<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self {
            privileges: names.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Parses any of the three JSON forms, under `policy` (the text form of `roles`
    /// splits on commas when [`SessionPolicy::split_roles_on_commas`]). Every surface
    /// (web, service API, remote built-ins, mobile hook) parses through here.
    pub fn from_json(v: &Value, policy: &SessionPolicy) -> Result<Self, Error> {
        let split_roles_on_commas = policy.split_roles_on_commas;
        match v {
            Value::String(_) | Value::Array(_) => Ok(Self {
                privileges: names(v, "privileges", true)?,
                ..Self::default()
            }),
            Value::Object(map) => {
                let mut out = Self::default();
                for (k, v) in map {
                    match k.as_str() {
                        "privileges" => out.privileges = names(v, "privileges", true)?,
                        "roles" => out.roles = names(v, "roles", split_roles_on_commas)?,
                        "userName" => match v {
                            Value::String(s) if s.len() <= MAX_NAME_LEN => {
                                out.user_name = Some(s.clone());
                            }
                            Value::String(_) => {
                                return Err(bad(format!(
                                    "userName is longer than {MAX_NAME_LEN} bytes"
                                )));
                            }
                            _ => return Err(bad("userName must be a string".into())),
                        },
                        other => {
                            return Err(bad(format!(
                                "unknown key {other:?} (expected privileges, roles, userName)"
                            )));
                        }
                    }
                }
                Ok(out)
            }
            _ => Err(bad(
                "expected a text, a list of names, or an object {privileges, roles, userName}"
                    .into(),
            )),
        }
    }
}

fn bad(message: String) -> Error {
    Error::InvalidPrivileges(message)
}

fn names(v: &Value, field: &str, split: bool) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut push = |s: &str| -> Result<(), Error> {
        let s = s.trim();
        if s.len() > MAX_NAME_LEN {
            return Err(bad(format!(
                "a name in {field} is longer than {MAX_NAME_LEN} bytes"
            )));
        }
        if !s.is_empty() {
            out.push(s.to_string());
        }
        Ok(())
    };
    match v {
        Value::String(s) if split => s.split(',').try_for_each(&mut push)?,
        Value::String(s) => push(s)?,
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::String(s) => push(s)?,
                    _ => return Err(bad(format!("{field} must contain only strings"))),
                }
            }
        }
        _ => return Err(bad(format!("{field} must be a text or a list of texts"))),
    }
    if out.len() > MAX_NAMES {
        return Err(bad(format!("{field} has more than {MAX_NAMES} names")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(split_roles_on_commas: bool) -> SessionPolicy {
        SessionPolicy {
            split_roles_on_commas,
            ..SessionPolicy::default()
        }
    }

    #[test]
    fn three_forms() {
        assert_eq!(
            PrivilegeInput::from_json(&json!("a,b"), &split(true))
                .unwrap()
                .privileges,
            ["a", "b"]
        );
        assert_eq!(
            PrivilegeInput::from_json(&json!(["a", " b "]), &split(true))
                .unwrap()
                .privileges,
            ["a", "b"]
        );
        let o = PrivilegeInput::from_json(
            &json!({"privileges": ["x"], "roles": "R1,R2", "userName": "Ann"}),
            &split(true),
        )
        .unwrap();
        assert_eq!(o.roles, ["R1", "R2"]);
        let o = PrivilegeInput::from_json(&json!({"roles": "R1,R2"}), &split(false)).unwrap();
        assert_eq!(o.roles, ["R1,R2"]);
    }

    #[test]
    fn wrong_types_are_errors() {
        for v in [
            json!(1),
            json!(null),
            json!([1]),
            json!({"privileges": 3}),
            json!({"userName": 1}),
            json!({"x": 1}),
        ] {
            assert!(PrivilegeInput::from_json(&v, &split(true)).is_err(), "{v}");
        }
        assert!(PrivilegeInput::from_json(&json!("x".repeat(300)), &split(true)).is_err());
    }
}
