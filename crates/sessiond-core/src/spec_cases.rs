//! The behavioural cases of spec §5 that the model decides on its own, named after
//! the case. (Cases that need a store or HTTP live in those crates.)

use std::time::Duration;

use serde_json::json;

use crate::*;

fn roles() -> Roles {
    Roles::parse(
        r#"{
        "privileges": [
            {"privilege": "a"}, {"privilege": "b"}, {"privilege": "Admin"}, {"privilege": "p"},
            {"privilege": "simple"}, {"privilege": "medium", "includes": ["simple"]}
        ],
        "roles": [{"role": "Medium", "privileges": ["medium"]}],
        "permissions": {"allowed": []}
    }"#,
        "roles.json",
    )
    .unwrap()
}

fn web() -> SessionRecord {
    SessionRecord::new_web(Timestamp(1_000_000), &SessionPolicy::default(), None)
}

fn set(s: &mut SessionRecord, v: &serde_json::Value) -> SetPrivilegesOutcome {
    let input = PrivilegeInput::from_json(v, &SessionPolicy::default()).unwrap();
    s.set_privileges(&roles(), &input, &SessionPolicy::default())
}

#[test]
fn case_04_idle_timeout_clamp() {
    let mut s = web();
    assert_eq!(s.set_idle_timeout(30, &SessionPolicy::default()), Ok(60));
    assert_eq!(s.idle_timeout, 60);
}

#[test]
fn case_05_expiration_date_recompute() {
    let mut s = web();
    let last = Timestamp(1_636_128_642_000); // 2021-11-05T16:10:42Z
    assert_eq!(s.expiration_date(last).unwrap(), "2021-11-05T17:10:42.000Z");
    s.set_idle_timeout(120, &SessionPolicy::default()).unwrap();
    assert_eq!(s.expiration_date(last).unwrap(), "2021-11-05T18:10:42.000Z");
}

#[test]
fn case_07_comma_list() {
    let mut s = web();
    assert!(set(&mut s, &json!("a,b")).applied);
    assert!(s.has_privilege("a", &[]) && s.has_privilege("b", &[]));
}

#[test]
fn case_08_unknown_name_ignored() {
    let mut s = web();
    let out = set(&mut s, &json!(["a", "nope"]));
    assert!(out.applied);
    assert_eq!(out.unknown, ["nope"]);
    assert!(!s.has_privilege("nope", &[]));
    assert_eq!(s.get_privileges(), ["a"]);
}

#[test]
fn case_09_role_expansion() {
    let mut s = web();
    set(&mut s, &json!({"roles": "Medium"}));
    assert_eq!(s.get_privileges(), ["simple", "medium"]);
}

#[test]
fn case_10_case_insensitive() {
    let mut s = web();
    set(&mut s, &json!("admin"));
    assert!(s.has_privilege("ADMIN", &[]));
    assert_eq!(
        s.get_privileges(),
        ["Admin"],
        "the declared spelling is kept"
    );
}

#[test]
fn case_11_user_name() {
    let mut s = web();
    set(&mut s, &json!({"privileges": "a", "userName": "Ann"}));
    assert_eq!(&*s.user_name, "Ann");
}

#[test]
fn case_12_clear_privileges_non_force_login() {
    let mut s = web();
    set(&mut s, &json!("a"));
    assert!(!s.is_guest(false));
    assert!(s.clear_privileges(&SessionPolicy::default()));
    assert!(s.is_guest(false));
}

#[test]
fn case_13_clear_privileges_force_login() {
    let mut s = web();
    assert!(s.is_guest(true));
    set(&mut s, &json!("a"));
    assert!(s.clear_privileges(&SessionPolicy::default()));
    assert!(s.get_privileges().is_empty());
    assert!(!s.is_guest(true));
    // With forceLogin, setPrivileges with only unknown names still ends guest status.
    let mut t = web();
    set(&mut t, &json!("zz"));
    assert!(!t.is_guest(true));
    assert!(t.is_guest(false));
}

#[test]
fn case_14_promote_scope() {
    let roles = roles();
    let s = web();
    let mut this_request = Promotions::default();
    let other_request = Promotions::default();
    let id = this_request.promote(&s, &roles, "p");
    assert!(id > 0);
    assert!(s.has_privilege("p", this_request.active()));
    assert!(!s.has_privilege("p", other_request.active()));
    assert!(s.get_privileges().is_empty());
    assert_eq!(this_request.promote(&s, &roles, "P"), 0);
    assert_eq!(this_request.promote(&s, &roles, "zz"), 0);
    this_request.demote(id);
    assert!(!s.has_privilege("p", this_request.active()));
    this_request.demote(999);
}

#[test]
fn case_17_otp_lifespan_clamp_and_expiry() {
    let s = web();
    let now = Timestamp(5_000);
    let policy = SessionPolicy::default();
    let (_, otp) = OtpRecord::create(&s, Some(Duration::from_secs(3)), now, &policy).unwrap();
    assert_eq!(otp.expires, now.plus(Duration::from_secs(10)));
    assert!(otp.is_valid(now.plus(Duration::from_millis(9_999))));
    assert!(!otp.is_valid(now.plus(Duration::from_secs(10))));
    let (_, default) = OtpRecord::create(&s, None, now, &policy).unwrap();
    assert_eq!(
        default.expires,
        now.plus(Duration::from_secs(3600)),
        "default = idleTimeout"
    );
}

#[test]
fn case_18_stored_procedure_privilege_matrix_4d_21() {
    let policy = SessionPolicy::default();
    let mut sp = SessionRecord::new(
        SessionKind::StoredProcedure,
        Timestamp(0),
        &policy,
        None,
        None,
    );
    let input = PrivilegeInput::names(["a"]);
    assert!(!sp.set_privileges(&roles(), &input, &policy).applied);
    assert!(sp.clear_privileges(&policy));
    assert!(sp.has_privilege("any", &[]));
    assert_eq!(sp.get_privileges(), ["WebAdmin"]);
    assert!(!sp.is_guest(true) && !sp.is_guest(false));
    assert_eq!(Promotions::default().promote(&sp, &roles(), "p"), 0);
    let strict = SessionPolicy {
        stored_procedure_otp: false,
        ..SessionPolicy::default()
    };
    assert!(
        OtpRecord::create(&sp, None, Timestamp(0), &strict).is_none(),
        "4D 21: createOTP answers \"\" in the stored-procedures session"
    );
    let (_, otp) = OtpRecord::create(&sp, None, Timestamp(0), &policy)
        .expect("stored_procedure_otp (default): desktop sharing of the stored-procedures session");
    assert_eq!(otp.expires, Timestamp(10_000), "a desktop OTP lives 10 s");
    assert!(sp.set_idle_timeout(90, &policy).is_err());
    assert_eq!(sp.info()["type"], "storedProcedure");
}

#[test]
fn remote_session_privilege_matrix_4d_21() {
    let policy = SessionPolicy::default();
    let mut rem = SessionRecord::new(SessionKind::Remote, Timestamp(0), &policy, None, None);
    let input = PrivilegeInput {
        privileges: vec!["a".into()],
        user_name: Some("x".into()),
        ..Default::default()
    };
    assert!(rem.set_privileges(&roles(), &input, &policy).applied);
    assert_eq!(
        &*rem.user_name, "",
        "userName in setPrivileges is ignored for remote sessions"
    );
    assert!(rem.has_privilege("a", &[]) && !rem.has_privilege("b", &[]));
    assert_eq!(rem.get_privileges(), ["a"]);
    assert!(!rem.is_guest(false));
    assert_eq!(Promotions::default().promote(&rem, &roles(), "p"), 0);
    let (_, otp) = OtpRecord::create(&rem, None, Timestamp(0), &policy).unwrap();
    assert_eq!(
        otp.expires,
        Timestamp(10_000),
        "desktop OTP default lifespan is 10 s"
    );
    assert!(
        rem.deadline(Timestamp(0)).is_none(),
        "no idle expiry for remote sessions"
    );
}

#[test]
fn web_info_has_the_21_r4_shape() {
    let s = SessionRecord::new_web(
        Timestamp(0),
        &SessionPolicy::default(),
        Some("127.0.0.1".parse().unwrap()),
    );
    let info = s.info();
    assert_eq!(info["type"], "web");
    assert_eq!(info["hostType"], "browser");
    assert_eq!(info["state"], "active");
    assert_eq!(info["machineName"], "");
    assert_eq!(info["IPAddress"], "127.0.0.1");
    assert_eq!(info["ID"], s.id.to_string());
    assert_eq!(info["creationDateTime"], "1970-01-01T00:00:00.000Z");
}

#[test]
fn set_privileges_replace_and_merge_modes() {
    let mut s = web();
    set(&mut s, &json!("a"));
    set(&mut s, &json!("b"));
    assert_eq!(s.get_privileges(), ["b"], "default: replace");
    let merge = SessionPolicy {
        set_privileges_mode: SetPrivilegesMode::Merge,
        ..SessionPolicy::default()
    };
    s.set_privileges(&roles(), &PrivilegeInput::names(["a"]), &merge);
    assert_eq!(s.get_privileges(), ["b", "a"]);
}

#[test]
fn absolute_lifetime_caps_the_deadline() {
    let policy = SessionPolicy {
        absolute_lifetime: Some(Duration::from_secs(600)),
        min_idle_timeout_minutes: 1,
        ..SessionPolicy::default()
    };
    let s = SessionRecord::new_web(Timestamp(0), &policy, None);
    assert_eq!(s.deadline(Timestamp(0)), Some(Timestamp(600_000)));
    assert_eq!(
        s.deadline(Timestamp(3_000_000)),
        Some(Timestamp(600_000)),
        "activity never extends the cap"
    );
}
