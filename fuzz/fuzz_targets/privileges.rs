//! The `setPrivileges()` argument as every surface receives it (login JSON, service
//! API, remote `session.setPrivileges`, the mobile hook callout):
//! `PrivilegeInput::from_json(&Value, &SessionPolicy)` on arbitrary JSON, under
//! both `split_roles_on_commas` settings, then `Roles::resolve` of the result
//! against the roles.json of crates/sessiond-server/tests/it/http.rs.
//!
//! Input: first byte = flags (bit 0: split roles on commas), rest = JSON.
//!
//! Properties: accepted names are trimmed, non-empty, at most 255 bytes, at most
//! 1024 per list; the privileges never depend on the roles setting; the object form
//! of a parsed input parses back to the same input; resolution gives declared
//! privileges without duplicates, closed under `includes`.
#![no_main]

use std::collections::HashSet;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use sessiond_core::privileges::{MAX_NAME_LEN, MAX_NAMES};
use sessiond_core::{PrivilegeInput, Roles, SessionPolicy};

const ROLES: &str = r#"{
  "privileges": [{"privilege": "a"}, {"privilege": "b"}, {"privilege": "p"},
                 {"privilege": "simple"}, {"privilege": "medium", "includes": ["simple"]},
                 {"privilege": "x", "includes": ["y"]}, {"privilege": "y", "includes": ["x", "medium"]}],
  "roles": [{"role": "Medium", "privileges": ["medium"]},
            {"role": "Clerk", "privileges": ["a"]}, {"role": "Boss", "privileges": ["b", "x"]}],
  "permissions": {"allowed": []}
}"#;

static ROLES_PARSED: LazyLock<Roles> = LazyLock::new(|| Roles::parse(ROLES, "roles.json").unwrap());

fn policy(split: bool) -> SessionPolicy {
    SessionPolicy {
        split_roles_on_commas: split,
        ..SessionPolicy::default()
    }
}

fn check_names(names: &[String]) {
    assert!(names.len() <= MAX_NAMES);
    for n in names {
        assert!(
            !n.is_empty() && n.len() <= MAX_NAME_LEN && n.trim() == n,
            "{n:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(v) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    let split = flags & 1 == 1;
    let parsed = PrivilegeInput::from_json(&v, &policy(split));
    let other = PrivilegeInput::from_json(&v, &policy(!split));
    // The roles setting only matters for a text `roles`.
    if !matches!(&v, Value::Object(m) if m.get("roles").is_some_and(Value::is_string)) {
        assert_eq!(parsed.is_ok(), other.is_ok());
    }
    let Ok(p) = parsed else {
        let _ = parsed.unwrap_err().to_string();
        return;
    };
    check_names(&p.privileges);
    check_names(&p.roles);
    if let Some(u) = &p.user_name {
        assert!(u.len() <= MAX_NAME_LEN);
    }
    if let Ok(o) = &other {
        assert_eq!(o.privileges, p.privileges);
        assert_eq!(o.user_name, p.user_name);
    }
    if let Value::String(s) = &v {
        assert!(p.privileges.iter().all(|n| !n.contains(',')), "{s:?}");
    }
    if !split && matches!(&v["roles"], Value::String(_)) {
        assert!(p.roles.len() <= 1);
    }

    // The object form of what was parsed parses back to it.
    let mut obj = json!({"privileges": p.privileges, "roles": p.roles});
    if let Some(u) = &p.user_name {
        obj["userName"] = u.clone().into();
    }
    assert_eq!(
        PrivilegeInput::from_json(&obj, &policy(split))
            .as_ref()
            .ok(),
        Some(&p)
    );

    let roles = &*ROLES_PARSED;
    let r = roles.resolve(&p.roles, &p.privileges);
    let mut seen = HashSet::new();
    for name in &r.privileges {
        assert!(seen.insert(name.to_string()), "{name} twice");
        assert_eq!(roles.privilege(name), Some(name), "{name} is not declared");
    }
    for u in &r.unknown {
        assert!(p.roles.contains(u) || p.privileges.contains(u));
    }
    // Closed under includes (medium → simple, x ↔ y, y → medium).
    let has = |n: &str| seen.contains(n);
    if has("medium") || has("y") {
        assert!(has("simple"));
    }
    if has("x") || has("y") {
        assert!(has("x") && has("y") && has("medium"));
    }
});
