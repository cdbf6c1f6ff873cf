//! The path parts of the mobile admin routes and of mobile logins: app folder names
//! (`TeamID.BundleID`, checked by `sessiond_mobile::file::check_path_part`, which
//! the private `MobileSessions::checked_dir` applies to the `{folder}` of every admin
//! route), session ids (`file::is_session_file_name`, applied by the private
//! `checked_file` to `{id}`), and `file::folder_name`.
//!
//! Input: `\n`-separated `team`, `app`, `id`.
//!
//! Properties: an accepted part is one normal path component (it cannot leave the
//! `MobileApps` folder), 1–255 bytes, no separator, control or formatting
//! character, `..`, leading or trailing dot; an accepted id is 1–128 hex digits; and the folder that a login
//! with an accepted team and app id creates is accepted by the admin routes too.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use sessiond_fuzz::split_str;
use sessiond_mobile::file::{
    MAX_NAME, check_path_part, folder_name, is_format_char, is_session_file_name,
};

fn one_component(part: &str) {
    let root = Path::new("/data/MobileApps");
    let joined = root.join(part);
    assert_eq!(joined.parent(), Some(root), "{part:?} leaves the folder");
    assert!(matches!(joined.components().last(), Some(Component::Normal(c)) if c == part));
}

fn check_part(what: &str, s: &str) -> bool {
    let ok = check_path_part(what, s).is_ok();
    if ok {
        assert!(!s.is_empty() && s.len() <= MAX_NAME);
        assert!(!s.starts_with('.') && !s.ends_with('.') && !s.contains(".."));
        assert!(
            !s.chars()
                .any(|c| c == '/' || c == '\\' || c.is_control() || is_format_char(c))
        );
        one_component(s);
    }
    ok
}

fuzz_target!(|data: &[u8]| {
    let Some(parts) = split_str(data, 3) else {
        return;
    };
    let (team, app, id) = (parts[0], parts[1], parts[2]);
    let team_ok = check_part("team.id", team);
    let app_ok = check_part("application.id", app);
    check_part("app folder", id);

    if is_session_file_name(id) {
        assert!(!id.is_empty() && id.len() <= 128);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        one_component(id);
        assert!(
            !is_session_file_name(&format!("{id}.sessiond.json")),
            "a sidecar is not a session file"
        );
    }

    // What `$authenticate` accepts (team empty or a valid part, app a valid part, the
    // folder at most 255 bytes) must be manageable through the admin routes.
    if app_ok && (team.is_empty() || team_ok) {
        let folder = folder_name(team, app);
        if team.is_empty() {
            assert_eq!(folder, app);
        } else {
            assert_eq!(folder, format!("{team}.{app}"));
        }
        if folder.len() <= MAX_NAME {
            assert!(
                check_path_part("app folder", &folder).is_ok(),
                "login folder {folder:?} (team {team:?}, app {app:?}) is refused by the admin routes"
            );
        }
    }
});
