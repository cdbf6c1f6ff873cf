//! Remote-client WebSocket frames (`/remote`): `sessiond_core::protocol::parse_client`
//! (what the server reads), and `ServerMessage` deserialization (what
//! `sessiond-client` reads from the server).
//!
//! Properties: a parsed client frame serializes to a frame that parses to the same
//! message; `unknown_type` is answered only to a JSON object whose string `type` is
//! not a known one; a hello's `Debug` and `Display` do not depend on its password;
//! a parsed server message round-trips and its error code serializes as `as_str`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sessiond_core::protocol::{ClientMessage, ErrorCode, ServerMessage, parse_client};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_client(text) {
        Ok(m) => {
            let frame = serde_json::to_string(&m).expect("a client message serializes");
            let back = parse_client(&frame)
                .unwrap_or_else(|e| panic!("{frame} does not parse back: {e:?}"));
            assert_eq!(m, back, "{frame}");
            if let ClientMessage::Hello(h) = &m {
                let mut other = h.clone();
                other.password = format!("{}-other", h.password);
                assert_eq!(
                    format!("{h:?}"),
                    format!("{other:?}"),
                    "Debug shows the password"
                );
                assert_eq!(
                    h.to_string(),
                    other.to_string(),
                    "Display shows the password"
                );
            }
        }
        Err((code, message)) => {
            let _ = message.len();
            let v: Option<Value> = serde_json::from_str(text).ok();
            let kind = v
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(Value::as_str);
            match code {
                ErrorCode::UnknownType => {
                    let kind = kind.expect("unknown_type names a type");
                    assert!(!ClientMessage::TYPES.contains(&kind));
                }
                ErrorCode::BadFrame => {
                    assert!(kind.is_none_or(|k| ClientMessage::TYPES.contains(&k)));
                }
                other => panic!("parse_client answered {other}"),
            }
        }
    }

    if let Ok(m) = serde_json::from_str::<ServerMessage>(text) {
        let frame = serde_json::to_string(&m).expect("a server message serializes");
        let back: ServerMessage =
            serde_json::from_str(&frame).unwrap_or_else(|e| panic!("{frame}: {e}"));
        assert_eq!(m, back, "{frame}");
        if let ServerMessage::Error { code, .. } = &m {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                Value::from(code.as_str())
            );
        }
    }
});
