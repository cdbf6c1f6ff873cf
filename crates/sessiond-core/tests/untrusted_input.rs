//! Every parser of outside input, fed arbitrary input: it never panics, and a
//! rejected storage update leaves the storage exactly as it was.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sessiond_core::{CookieToken, OtpToken, PrivilegeInput, Roles, SessionId, storage};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z.,]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn ids_and_tokens_never_panic(s in ".{0,80}") {
        if let Ok(id) = s.parse::<SessionId>() {
            prop_assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        }
        if let Ok(t) = s.parse::<CookieToken>() {
            prop_assert_eq!(t.encode().parse::<CookieToken>().unwrap(), t);
        }
        let _ = s.parse::<OtpToken>();
    }

    #[test]
    fn privilege_input_never_panics(v in arb_json(), split in any::<bool>()) {
        let policy = sessiond_core::SessionPolicy { split_roles_on_commas: split, ..Default::default() };
        let _ = PrivilegeInput::from_json(&v, &policy);
    }

    #[test]
    fn remote_frames_never_panic(s in ".{0,200}") {
        let _ = sessiond_core::protocol::parse_client(&s);
    }

    #[test]
    fn remote_frames_of_json_never_panic(v in arb_json(), kind in prop::sample::select(vec!["hello", "call", "sleep", "goodbye", "x"])) {
        let mut frame = v;
        if let Some(m) = frame.as_object_mut() {
            m.insert("type".into(), kind.into());
        }
        if let Ok(m) = sessiond_core::protocol::parse_client(&frame.to_string()) {
            // What parses re-serializes to a frame that parses to the same message.
            let again = serde_json::to_string(&m).unwrap();
            prop_assert_eq!(sessiond_core::protocol::parse_client(&again).unwrap(), m);
        }
    }

    #[test]
    fn roles_parse_never_panics(s in ".{0,200}") {
        let _ = Roles::parse(&s, "roles.json");
    }

    #[test]
    fn roles_parse_of_json_never_panics(v in arb_json()) {
        let _ = Roles::parse(&v.to_string(), "roles.json");
    }

    #[test]
    fn increment_is_all_or_nothing(start in arb_json(), path in "[a-z.]{0,10}", by in arb_json()) {
        let mut s: Map<String, Value> = match start { Value::Object(m) => m, other => Map::from_iter([("x".to_string(), other)]) };
        let before = s.clone();
        if let Ok(v) = storage::increment(&mut s, &path, &by) {
            prop_assert!(v.is_number());
        } else {
            prop_assert_eq!(s, before);
        }
    }

    #[test]
    fn merge_patch_keeps_an_object(start in arb_json(), patch in arb_json()) {
        let mut s: Map<String, Value> = match start { Value::Object(m) => m, _ => Map::new() };
        let before = s.clone();
        if storage::merge_patch(&mut s, &patch).is_err() {
            prop_assert_eq!(&s, &before);
        }
        prop_assert!(json!(s).is_object());
    }
}
