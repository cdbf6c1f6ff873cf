//! roles.json: `sessiond_core::Roles::parse(text, "roles.json")`, then resolution of
//! the file's own names (and a few others) with `Roles::resolve`.
//!
//! Properties: a parse error names the file; a parsed file lists the built-in
//! `WebAdmin` first, finds every declared privilege by its own name, and resolves
//! any names to declared privileges, without duplicates, closed under the file's
//! `includes`, with exactly the undeclared names reported unknown.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sessiond_core::roles::WEB_ADMIN;
use sessiond_core::{Error, Roles};

fn strings(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[field].as_str().map(str::to_string))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let roles = match Roles::parse(text, "roles.json") {
        Ok(r) => r,
        Err(e) => {
            assert!(
                matches!(&e, Error::RolesFile { file, .. } if file == "roles.json"),
                "{e:?}"
            );
            let _ = e.to_string();
            return;
        }
    };
    for w in roles.warnings() {
        let _ = w.to_string();
    }
    let names: Vec<&str> = roles.privilege_names().collect();
    assert_eq!(names.first(), Some(&WEB_ADMIN));
    for n in &names {
        assert_eq!(
            roles.privilege(n).map(|p| &**p),
            Some(*n),
            "{n:?} is not found by its own name"
        );
    }
    let _ = (
        roles.force_login(),
        roles.restricted_by_default(),
        roles.permissions(),
    );

    let v: Value = serde_json::from_str(text).expect("parsed once already");
    let role_names = strings(&v, "roles", "role");
    let mut privilege_names = strings(&v, "privileges", "privilege");
    privilege_names.extend([
        "webadmin".to_string(),
        String::new(),
        "undeclared ×".to_string(),
    ]);

    let r = roles.resolve(&role_names, &privilege_names);
    let mut seen = HashSet::new();
    for p in &r.privileges {
        assert!(seen.insert(p.to_string()), "{p} twice");
        assert_eq!(roles.privilege(p), Some(p), "{p} is not declared");
    }
    for u in &r.unknown {
        assert!(role_names.contains(u) || privilege_names.contains(u));
    }
    for p in &privilege_names {
        let known = roles.privilege(p).is_some();
        assert_eq!(r.unknown.contains(p), !known, "{p:?}");
        if let Some(d) = roles.privilege(p) {
            assert!(seen.contains(&**d), "{p:?} asked for but not granted");
        }
    }
    // Closure under includes.
    for entry in v["privileges"].as_array().into_iter().flatten() {
        let Some(declared) = entry["privilege"].as_str().and_then(|n| roles.privilege(n)) else {
            continue;
        };
        if !seen.contains(&**declared) {
            continue;
        }
        for inc in entry["includes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if let Some(i) = roles.privilege(inc) {
                assert!(
                    seen.contains(&**i),
                    "{declared} granted without its include {i}"
                );
            }
        }
    }
});
