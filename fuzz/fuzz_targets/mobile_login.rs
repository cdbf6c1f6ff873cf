//! The mobile login body (`POST /mobileapp/$authenticate`), whose parser
//! (`parse_login` in crates/sessiond-mobile/src/apps.rs) is private: it is reached
//! through the public `MobileSessions::authenticate`, with the config hook
//! `sessiond_mobile::hook::Policy` (deny/allow lists: `Matchers::matches` on the
//! body). Every login is made twice (a re-login of the same device). Accepted
//! sessions then go through `authorize` (Bearer token, also edited near-misses),
//! `set_user_info` (the `$userInfo` body), `reload` (the files written are read back)
//! and `delete`, so that every iteration starts from an empty folder.
//! The files live in a folder under /dev/shm.
//!
//! Input: first byte = flags (decision Accept/Verify/Deny = byte % 3, bit 2: 4D ids),
//! then `\n`-separated: login body (JSON), `$userInfo` body (JSON), edits
//! `(position, byte)` applied to the Bearer token.
//!
//! Properties: a body is refused with `BadRequest` (or `TooLarge`) or answered as the
//! hook decided; a body the login accepts always makes a valid session file (the
//! file's own validation never refuses it) in a folder the admin routes accept; a
//! re-login keeps a pending session, and gives an accepted one a new token retiring
//! the old one (random ids) or the same (4D ids); only the exact token authorizes; the
//! session survives a reload from its files with its `userInfo`; delete leaves
//! nothing.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sessiond_core::{ManualClock, Roles, SessionPolicy, Timestamp};
use sessiond_fuzz::{block_on, edit, split};
use sessiond_mobile::IdMode;
use sessiond_mobile::apps::{AuthAnswer, MobileConfig, MobileError, MobileLimits, MobileSessions};
use sessiond_mobile::file::{check_path_part, folder_name};
use sessiond_mobile::hook::{Decision, Matchers, Policy};
use sessiond_mobile::token;
use sessiond_store::{ActivityFilter, MemoryStore, Sessions};

struct Fixture {
    root: PathBuf,
    sessions: Sessions,
    apps: [MobileSessions; 2],
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    // Folders left by earlier runs (libFuzzer exits without running destructors).
    for e in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("sessiond-fuzz-mobile-") {
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let root = PathBuf::from(format!(
        "/dev/shm/sessiond-fuzz-mobile-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let sessions = Sessions::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Roles::default()),
        Arc::new(ManualClock::new(Timestamp(1_700_000_000_000))),
        SessionPolicy::default(),
    );
    let app = |ids| {
        MobileSessions::new(
            MobileConfig {
                ids,
                // The per-address limit of new devices is a counter, not a parser; the
                // frozen clock would make it refuse every login after the 60th.
                limits: MobileLimits {
                    new_devices_per_minute: u32::MAX,
                    ..MobileLimits::default()
                },
                ..MobileConfig::new(root.clone())
            },
            sessions.clone(),
        )
    };
    let apps = [app(IdMode::Random), app(IdMode::FourD)];
    Fixture {
        root,
        sessions,
        apps,
    }
});

fn policy(default: Decision) -> Policy {
    Policy {
        default,
        allow: Matchers {
            emails: vec!["Ann@Example.COM".into()],
            email_domains: vec!["@allowed.test".into(), "ÉCOLE.fr".into()],
            app_ids: vec!["com.allowed.app".into()],
            device_ids: vec![],
        },
        deny: Matchers {
            emails: vec!["mallory@example.com".into()],
            email_domains: vec!["denied.test".into()],
            app_ids: vec![],
            device_ids: vec!["DENIED-DEVICE".into()],
        },
    }
}

fn unexpected(what: &str, e: &MobileError) -> ! {
    panic!("{what}: unexpected error {e:?}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest, 3);
    let Ok(body) = serde_json::from_slice::<Value>(parts[0]) else {
        return;
    };
    let user_info_body: Value = serde_json::from_slice(parts[1]).unwrap_or(Value::Null);
    let default = [Decision::Accept, Decision::Verify, Decision::Deny][usize::from(flags % 3)];
    let policy = policy(default);
    let f = &*FIXTURE;
    let mobile = &f.apps[usize::from(flags & 4 == 4)];
    let decision = policy.listed(&body).unwrap_or(default);

    let team = body["team"]["id"].as_str().unwrap_or("");
    let app = body["application"]["id"].as_str().unwrap_or("");
    let folder = folder_name(team, app);

    block_on(async {
        let answer = match mobile.authenticate(&body, None, &policy).await {
            Ok(a) => a,
            Err(MobileError::BadRequest(message)) => {
                assert!(
                    !message.starts_with("mobi"),
                    "the login accepted a body whose session file is invalid: {message}"
                );
                assert!(mobile.is_empty());
                return;
            }
            // The session file would be over the size limit.
            Err(MobileError::TooLarge(_)) => {
                assert!(mobile.is_empty());
                return;
            }
            Err(e) => unexpected("authenticate", &e),
        };
        // The folder of every login is one the admin routes accept.
        if !matches!(answer, AuthAnswer::Refused { .. }) {
            assert!(check_path_part("app folder", &folder).is_ok(), "{folder:?}");
        }
        match answer {
            AuthAnswer::Refused { .. } => assert_eq!(decision, Decision::Deny),
            AuthAnswer::Pending { id, .. } => {
                assert_eq!(decision, Decision::Verify);
                let bearer = token::encode(app, &id, team);
                assert!(
                    mobile.authorize(&bearer).await.unwrap().is_none(),
                    "a pending session has no access"
                );
                // The same device again: still pending, same session.
                match mobile.authenticate(&body, None, &policy).await {
                    Ok(AuthAnswer::Pending { id: again, .. }) => assert_eq!(again, id),
                    other => panic!("a pending device logging in again: {other:?}"),
                }
                mobile
                    .delete(&folder, &id)
                    .await
                    .unwrap_or_else(|e| unexpected("delete", &e));
            }
            AuthAnswer::Accepted {
                id: first_id,
                token: first,
                ..
            } => {
                assert_eq!(decision, Decision::Accept);
                assert_eq!(first, token::encode(app, &first_id, team));
                // The same device again (re-login): the hook runs again; with random ids
                // a new session id and token, the old token retired; with 4D's ids
                // (derived from the device) the same.
                let (id, bearer, user_info) = match mobile.authenticate(&body, None, &policy).await
                {
                    Ok(AuthAnswer::Accepted {
                        id,
                        token,
                        user_info,
                        ..
                    }) => (id, token, user_info),
                    other => panic!("an accepted device logging in again: {other:?}"),
                };
                assert_eq!(bearer, token::encode(app, &id, team));
                if flags & 4 == 4 {
                    assert_eq!((&id, &bearer), (&first_id, &first));
                } else {
                    assert_ne!(id, first_id);
                    assert!(
                        mobile.authorize(&first).await.unwrap().is_none(),
                        "a retired token still authorizes"
                    );
                }
                assert_eq!(mobile.len(), 1);
                let email = body["email"].as_str().unwrap_or("");
                let expected: Map<String, Value> = if email.is_empty() {
                    Map::new()
                } else {
                    json!({"email": email}).as_object().unwrap().clone()
                };
                assert_eq!(user_info, expected);

                let who = mobile
                    .authorize(&bearer)
                    .await
                    .unwrap()
                    .expect("the token authorizes its session");
                assert_eq!(
                    (&who.folder, &who.id, &who.app_id),
                    (&folder, &id, &app.to_string())
                );
                assert_eq!(who.email, email);

                if let Some(near) = edit(&bearer, parts[2]) {
                    let got = mobile.authorize(&near).await.unwrap();
                    assert_eq!(
                        got.is_some(),
                        near.trim() == bearer,
                        "Bearer {near:?} for {bearer:?}"
                    );
                }

                let mut info = user_info;
                match mobile.set_user_info(&who, &user_info_body).await {
                    Ok(()) => {
                        if let Some(Value::Object(u)) = user_info_body.get("userInfo") {
                            info = u.clone();
                        }
                    }
                    Err(MobileError::BadRequest(_)) => {}
                    Err(e) => unexpected("set_user_info", &e),
                }

                match mobile.reload(&folder, &id).await {
                    Ok(()) => {
                        let again = mobile
                            .authorize(&bearer)
                            .await
                            .unwrap()
                            .expect("the session survives a reload from its files");
                        assert_eq!(again.user_info, info, "userInfo changed across a reload");
                        assert_eq!(again.web.record.id, who.web.record.id);
                    }
                    Err(e) => unexpected(&format!("reload of {folder:?}/{id}"), &e),
                }

                mobile
                    .delete(&folder, &id)
                    .await
                    .unwrap_or_else(|e| unexpected("delete", &e));
                assert!(mobile.authorize(&bearer).await.unwrap().is_none());
            }
        }
        assert!(mobile.is_empty(), "a session is left in memory");
        let left = f
            .sessions
            .activity(&ActivityFilter::default())
            .await
            .unwrap();
        assert!(left.is_empty(), "{} web sessions left", left.len());
    });
    // Empty app folders would pile up: remove this one (it fails if a file is left).
    // Only a folder name the login accepts can have been made ("..", say, cannot).
    let dir = f.root.join(&folder);
    if check_path_part("app folder", &folder).is_ok() && dir.exists() {
        std::fs::remove_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (files left?)", dir.display()));
    }
});
