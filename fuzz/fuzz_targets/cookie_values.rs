//! Cookie and id values as clients send them: the session cookie
//! (`CookieToken: FromStr`: cookie tokens and guest tickets; `GuestKey::made` /
//! `recognizes`), `$4DSID` / `restore()` OTPs (`OtpToken: FromStr`),
//! session ids in URLs and frames (`SessionId: FromStr`, its serde form,
//! `sessiond_server::routes::parse_id`), `?kind=` (`routes::parse_kind`,
//! `SessionKind::parse`), hex secrets (`id::from_hex`) and ISO-8601 dates
//! (`Timestamp::parse_iso8601`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond_core::id::{from_hex, to_hex};
use sessiond_core::{CookieToken, GuestKey, OtpToken, SessionId, SessionKind, Timestamp};
use sessiond_server::routes::{parse_id, parse_kind};

static KEY: std::sync::LazyLock<GuestKey> =
    std::sync::LazyLock::new(|| GuestKey::from_bytes(*b"sessiond fuzz guest key, 32 byte"));

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };

    // Session ids: 32 hex digits (either case) or the dashed UUID form.
    let id = s.parse::<SessionId>();
    match &id {
        Ok(id) => {
            let text = id.to_string();
            assert_eq!(text.len(), 32);
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
            );
            assert_eq!(text.parse::<SessionId>().ok().as_ref(), Some(id));
            assert!(s.len() == 32 || s.len() == 36, "accepted {s:?}");
            let digits: String = s.chars().filter(|&c| c != '-').collect();
            assert!(digits.eq_ignore_ascii_case(&text), "{s:?} parsed as {text}");
            assert_eq!(SessionId::from_bytes(*id.as_bytes()), *id);
            let json = serde_json::to_string(id).unwrap();
            assert_eq!(
                serde_json::from_str::<SessionId>(&json).ok().as_ref(),
                Some(id)
            );
            assert_eq!(parse_id(s).ok().as_ref(), Some(id));
        }
        Err(_) => {
            assert!(parse_id(s).is_err());
            assert!(serde_json::from_value::<SessionId>(serde_json::Value::from(s)).is_err());
        }
    }

    // OTPs: the same grammar as session ids.
    match s.parse::<OtpToken>() {
        Ok(otp) => {
            let text = otp.to_string();
            let back: OtpToken = text.parse().expect("an OTP's text parses");
            assert!(back == otp);
            assert!(back.hash().ct_eq(&otp.hash()));
            assert_eq!(Some(text), id.as_ref().ok().map(ToString::to_string));
        }
        Err(_) => assert!(id.is_err()),
    }

    // Guest keys: nobody without the key makes a guest id or ticket.
    if let Ok(id) = &id {
        assert!(
            !KEY.made(id),
            "{s:?} is a guest id of a key it does not know"
        );
    }

    // Cookie tokens: exactly one spelling per token (canonical unpadded base64url);
    // 43 characters, or 64 for a guest ticket (with its creation and last activity and
    // their MAC).
    if let Ok(token) = s.parse::<CookieToken>() {
        assert_eq!(s.len(), if token.stamp().is_some() { 64 } else { 43 });
        assert!(
            !KEY.recognizes(&token),
            "{s:?} is a guest ticket of a key it does not know"
        );
        let text = token.encode();
        assert_eq!(text, s, "a cookie token has a second spelling");
        let back: CookieToken = text.parse().expect("an encoded token parses");
        assert!(back == token);
        assert!(back.hash().ct_eq(&token.hash()));
        assert_eq!(back.session_id(), token.session_id());
    }

    // `from_hex` takes hex digits only (no sign, no space), in either case.
    if let Some(bytes) = from_hex::<16>(s) {
        assert!(
            to_hex(&bytes).eq_ignore_ascii_case(s),
            "from_hex::<16> took {s:?}"
        );
    }
    if let Some(bytes) = from_hex::<32>(s) {
        assert!(
            to_hex(&bytes).eq_ignore_ascii_case(s),
            "from_hex::<32> took {s:?}"
        );
    }

    if let Some(kind) = SessionKind::parse(s) {
        assert_eq!(kind.as_str(), s);
    }
    match parse_kind(Some(s)) {
        Ok(Some(kind)) => assert_eq!(kind.as_str(), s),
        Ok(None) => assert!(s.is_empty()),
        Err(_) => assert!(SessionKind::parse(s).is_none()),
    }

    let _ = Timestamp::parse_iso8601(s);
});
