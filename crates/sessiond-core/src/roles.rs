//! `roles.json`: privileges with transitive `includes`, roles, `forceLogin` and
//! `restrictedByDefault`, with 4D's schema (spec §3.1) and case-insensitive names.
//!
//! Beyond 4D: a malformed file is an error naming the file, line and column (4D
//! silently disables protection). Problems that are not fatal — an `includes` cycle,
//! an undeclared name in an `includes` or role list, a redefinition of the built-in
//! `WebAdmin` — are kept as [`RolesWarning`]s for the log and the API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::Error;

/// The built-in privilege, implicitly declared (spec §1.4 setPrivileges).
pub const WEB_ADMIN: &str = "WebAdmin";

/// Case-insensitive name comparison (Unicode-aware, with an ASCII fast path).
pub fn names_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.to_lowercase() == b.to_lowercase()
    }
}

fn key(name: &str) -> String {
    name.trim().to_lowercase()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    privileges: Vec<RawPrivilege>,
    #[serde(default)]
    roles: Vec<RawRole>,
    #[serde(default)]
    permissions: Option<serde_json::Value>,
    #[serde(default, rename = "forceLogin")]
    force_login: bool,
    #[serde(default, rename = "restrictedByDefault")]
    restricted_by_default: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivilege {
    privilege: String,
    #[serde(default)]
    includes: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    role: String,
    #[serde(default)]
    privileges: Vec<String>,
}

/// A non-fatal problem found in a roles.json.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RolesWarning {
    /// `includes` forms a cycle; it is tolerated (the closure stops at visited names).
    IncludesCycle {
        /// The privileges on the cycle, in order.
        cycle: Vec<String>,
    },
    /// A name used in an `includes` or role list is not declared; it is ignored.
    UndeclaredName {
        /// Where it is used (`privilege X` or `role Y`).
        used_in: String,
        /// The undeclared name.
        name: String,
    },
    /// roles.json declares the reserved `WebAdmin`; its `includes` are honoured.
    ReservedWebAdmin,
}

impl std::fmt::Display for RolesWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IncludesCycle { cycle } => write!(f, "includes cycle: {}", cycle.join(" -> ")),
            Self::UndeclaredName { used_in, name } => {
                write!(f, "{used_in} uses undeclared name {name:?} (ignored)")
            }
            Self::ReservedWebAdmin => {
                f.write_str("WebAdmin is built in and should not be declared")
            }
        }
    }
}

#[derive(Debug)]
struct Privilege {
    name: Arc<str>,
    includes: Vec<usize>,
}

#[derive(Debug)]
struct Role {
    privileges: Vec<usize>,
}

/// The privileges, roles and flags of a roles.json, ready for resolution.
///
/// ```
/// use sessiond_core::Roles;
/// let roles = Roles::parse(r#"{
///   "privileges": [{"privilege": "simple"}, {"privilege": "medium", "includes": ["simple"]}],
///   "roles": [{"role": "Medium", "privileges": ["medium"]}],
///   "permissions": {"allowed": []}
/// }"#, "roles.json").unwrap();
/// let r = roles.resolve(&[], &["medium".to_string()]);
/// assert_eq!(r.privileges.iter().map(|p| &**p).collect::<Vec<_>>(), ["simple", "medium"]);
/// ```
#[derive(Debug)]
pub struct Roles {
    privileges: Vec<Privilege>,
    by_key: HashMap<String, usize>,
    role_map: HashMap<String, Role>,
    force_login: bool,
    restricted_by_default: Option<bool>,
    permissions: Option<serde_json::Value>,
    warnings: Vec<RolesWarning>,
}

impl Default for Roles {
    /// Only the built-in `WebAdmin` privilege, no roles, `forceLogin` off.
    fn default() -> Self {
        Self::from_raw(RawFile {
            privileges: Vec::new(),
            roles: Vec::new(),
            permissions: None,
            force_login: false,
            restricted_by_default: None,
        })
        .expect("an empty roles file is valid")
    }
}

/// The outcome of resolving names against [`Roles`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The effective privileges: dependency order (included before including), then
    /// declaration order, no duplicates, with their declared spelling.
    pub privileges: Vec<Arc<str>>,
    /// The names that are not declared, ignored (4D: silently; here: reported).
    pub unknown: Vec<String>,
}

impl Roles {
    /// Reads and parses a roles.json file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::RolesFile {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses roles.json text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, Error> {
        let raw: RawFile = serde_json::from_str(text).map_err(|e| Error::RolesFile {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        Self::from_raw(raw).map_err(|message| Error::RolesFile {
            file: file.to_string(),
            line: 0,
            column: 0,
            message,
        })
    }

    fn from_raw(raw: RawFile) -> Result<Self, String> {
        let mut warnings = Vec::new();
        let mut privileges = vec![Privilege {
            name: Arc::from(WEB_ADMIN),
            includes: Vec::new(),
        }];
        let mut by_key = HashMap::from([(key(WEB_ADMIN), 0usize)]);
        for (i, p) in raw.privileges.iter().enumerate() {
            let name = p.privilege.trim();
            if name.is_empty() {
                return Err(format!("privileges[{i}].privilege is empty"));
            }
            if by_key.get(&key(name)) == Some(&0) {
                warnings.push(RolesWarning::ReservedWebAdmin);
                continue;
            }
            if by_key.insert(key(name), privileges.len()).is_some() {
                return Err(format!(
                    "privileges[{i}]: privilege {name:?} is declared twice"
                ));
            }
            privileges.push(Privilege {
                name: Arc::from(name),
                includes: Vec::new(),
            });
        }
        for p in &raw.privileges {
            let idx = by_key[&key(&p.privilege)];
            for inc in &p.includes {
                match by_key.get(&key(inc)) {
                    Some(&j) => privileges[idx].includes.push(j),
                    None => warnings.push(RolesWarning::UndeclaredName {
                        used_in: format!("privilege {}", p.privilege.trim()),
                        name: inc.clone(),
                    }),
                }
            }
        }
        let mut roles = HashMap::new();
        for (i, r) in raw.roles.iter().enumerate() {
            let name = r.role.trim();
            if name.is_empty() {
                return Err(format!("roles[{i}].role is empty"));
            }
            let mut list = Vec::new();
            for p in &r.privileges {
                match by_key.get(&key(p)) {
                    Some(&j) => list.push(j),
                    None => warnings.push(RolesWarning::UndeclaredName {
                        used_in: format!("role {name}"),
                        name: p.clone(),
                    }),
                }
            }
            if roles.insert(key(name), Role { privileges: list }).is_some() {
                return Err(format!("roles[{i}]: role {name:?} is declared twice"));
            }
        }
        let mut this = Self {
            privileges,
            by_key,
            role_map: roles,
            force_login: raw.force_login,
            restricted_by_default: raw.restricted_by_default,
            permissions: raw.permissions,
            warnings,
        };
        this.warnings.extend(this.find_cycles());
        Ok(this)
    }

    fn find_cycles(&self) -> Vec<RolesWarning> {
        // Iterative-free DFS with colours; each cycle reported once, from its first node.
        fn visit(
            roles: &Roles,
            i: usize,
            colour: &mut [u8],
            stack: &mut Vec<usize>,
            out: &mut Vec<RolesWarning>,
        ) {
            colour[i] = 1;
            stack.push(i);
            for &j in &roles.privileges[i].includes {
                match colour[j] {
                    0 => visit(roles, j, colour, stack, out),
                    1 => {
                        let start = stack.iter().position(|&k| k == j).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|&k| roles.privileges[k].name.to_string())
                            .collect();
                        cycle.push(roles.privileges[j].name.to_string());
                        out.push(RolesWarning::IncludesCycle { cycle });
                    }
                    _ => {}
                }
            }
            stack.pop();
            colour[i] = 2;
        }
        let mut colour = vec![0u8; self.privileges.len()];
        let mut out = Vec::new();
        for i in 0..self.privileges.len() {
            if colour[i] == 0 {
                visit(self, i, &mut colour, &mut Vec::new(), &mut out);
            }
        }
        out
    }

    /// `forceLogin` (20 R5+): guests stay guests until `setPrivileges` is called.
    pub fn force_login(&self) -> bool {
        self.force_login
    }

    /// `restrictedByDefault` (21), when present.
    pub fn restricted_by_default(&self) -> Option<bool> {
        self.restricted_by_default
    }

    /// The `permissions` object, kept as written (sessiond does not enforce ORDA permissions).
    pub fn permissions(&self) -> Option<&serde_json::Value> {
        self.permissions.as_ref()
    }

    /// Non-fatal problems found while loading.
    pub fn warnings(&self) -> &[RolesWarning] {
        &self.warnings
    }

    /// The declared spelling of a privilege, if declared (case-insensitive).
    pub fn privilege(&self, name: &str) -> Option<&Arc<str>> {
        self.by_key
            .get(&key(name))
            .map(|&i| &self.privileges[i].name)
    }

    /// Every declared privilege name, built-in `WebAdmin` first.
    pub fn privilege_names(&self) -> impl Iterator<Item = &str> {
        self.privileges.iter().map(|p| &*p.name)
    }

    /// Resolves role names and privilege names into the effective privilege list
    /// (transitive `includes`, cycles tolerated). Undeclared names are returned in
    /// [`Resolved::unknown`] and otherwise ignored.
    pub fn resolve(&self, roles: &[String], privileges: &[String]) -> Resolved {
        let mut unknown = Vec::new();
        let mut wanted = vec![false; self.privileges.len()];
        for r in roles {
            match self.role_map.get(&key(r)) {
                Some(role) => role.privileges.iter().for_each(|&i| wanted[i] = true),
                None => unknown.push(r.clone()),
            }
        }
        for p in privileges {
            match self.by_key.get(&key(p)) {
                Some(&i) => wanted[i] = true,
                None => unknown.push(p.clone()),
            }
        }
        let mut seen = vec![false; self.privileges.len()];
        let mut out = Vec::new();
        for i in (0..self.privileges.len()).filter(|&i| wanted[i]) {
            self.post_order(i, &mut seen, &mut out);
        }
        Resolved {
            privileges: out,
            unknown,
        }
    }

    fn post_order(&self, i: usize, seen: &mut [bool], out: &mut Vec<Arc<str>>) {
        if seen[i] {
            return;
        }
        seen[i] = true;
        for &j in &self.privileges[i].includes {
            self.post_order(j, seen, out);
        }
        out.push(self.privileges[i].name.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(r: &Resolved) -> Vec<&str> {
        r.privileges.iter().map(|p| &**p).collect()
    }

    const FILE: &str = r#"{
      "privileges": [
        {"privilege": "simple", "includes": []},
        {"privilege": "medium", "includes": ["simple"]},
        {"privilege": "high", "includes": ["medium", "ghost"], "id": "x1"},
        {"privilege": "a", "includes": ["b"]},
        {"privilege": "b", "includes": ["a"]}
      ],
      "roles": [{"role": "Medium", "privileges": ["medium"]}, {"role": "Boss", "privileges": ["high", "nope"]}],
      "permissions": {"allowed": [{"applyTo": "ds", "type": "datastore", "read": ["simple"]}]},
      "forceLogin": true,
      "restrictedByDefault": false
    }"#;

    #[test]
    fn transitive_includes_in_dependency_order() {
        let roles = Roles::parse(FILE, "roles.json").unwrap();
        assert_eq!(
            names(&roles.resolve(&[], &["HIGH".into()])),
            ["simple", "medium", "high"]
        );
        assert_eq!(
            names(&roles.resolve(&["boss".into()], &["simple".into()])),
            ["simple", "medium", "high"]
        );
        assert!(roles.force_login());
        assert_eq!(roles.restricted_by_default(), Some(false));
    }

    #[test]
    fn cycles_are_tolerated_and_reported() {
        let roles = Roles::parse(FILE, "roles.json").unwrap();
        let r = roles.resolve(&[], &["a".into()]);
        let mut got = names(&r);
        got.sort_unstable();
        assert_eq!(got, ["a", "b"]);
        assert!(
            roles
                .warnings()
                .iter()
                .any(|w| matches!(w, RolesWarning::IncludesCycle { cycle } if cycle.len() == 3))
        );
    }

    #[test]
    fn undeclared_names_are_reported_not_fatal() {
        let roles = Roles::parse(FILE, "roles.json").unwrap();
        assert!(roles.warnings().contains(&RolesWarning::UndeclaredName {
            used_in: "privilege high".into(),
            name: "ghost".into()
        }));
        assert!(roles.warnings().contains(&RolesWarning::UndeclaredName {
            used_in: "role Boss".into(),
            name: "nope".into()
        }));
        let r = roles.resolve(&["Nobody".into()], &["zz".into(), "simple".into()]);
        assert_eq!(names(&r), ["simple"]);
        assert_eq!(r.unknown, ["Nobody", "zz"]);
    }

    #[test]
    fn web_admin_is_built_in() {
        let roles = Roles::default();
        assert_eq!(
            names(&roles.resolve(&[], &["webadmin".into()])),
            ["WebAdmin"]
        );
        let declared = Roles::parse(
            r#"{"privileges":[{"privilege":"WebAdmin","includes":["x"]},{"privilege":"x"}]}"#,
            "r",
        )
        .unwrap();
        assert!(
            declared
                .warnings()
                .contains(&RolesWarning::ReservedWebAdmin)
        );
    }

    #[test]
    fn malformed_file_names_file_line_and_column() {
        let err = Roles::parse(
            "{\n  \"privileges\": [\n    {\"privilege\": 3}\n  ]\n}",
            "/p/roles.json",
        )
        .unwrap_err();
        match err {
            Error::RolesFile {
                file, line, column, ..
            } => {
                assert_eq!(file, "/p/roles.json");
                assert_eq!(line, 3);
                assert!(column > 0);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            Roles::parse("{\"privileges\": [], \"forcelogin\": true}", "r").is_err(),
            "unknown keys are refused"
        );
        assert!(
            Roles::parse("{\"roles\": []}", "r").is_err(),
            "privileges is mandatory"
        );
        assert!(
            Roles::parse(
                "{\"privileges\": [{\"privilege\":\"a\"},{\"privilege\":\"A\"}]}",
                "r"
            )
            .is_err()
        );
    }
}
