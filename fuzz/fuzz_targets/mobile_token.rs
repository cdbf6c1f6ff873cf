//! Mobile Bearer tokens (`sessiond_mobile::token`): `decode` of any text (either
//! base64 alphabet, padded or not, JSON inside), `encode` of any three fields, and
//! 4D's SHA-1 session ids.
//!
//! Input: the whole input is a token to decode; split on `\n` it is also
//! `app id`, `session id`, `team id` to encode.
//!
//! Properties: whatever decodes re-encodes to a token that decodes to the same
//! fields; an encoded token is unpadded and decodes to its fields (up to the 4096-byte
//! limit); 4D ids are 40 lower-case hex digits, valid session file names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond_fuzz::split_str;
use sessiond_mobile::file::is_session_file_name;
use sessiond_mobile::token::{TokenFields, decode, encode, four_d_session_id};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(fields) = decode(s) {
            assert!(s.len() <= 4096);
            let again = encode(&fields.app_id, &fields.id, &fields.team_id);
            if again.len() <= 4096 {
                assert_eq!(decode(&again).as_ref(), Some(&fields));
            }
        }
    }
    let Some(parts) = split_str(data, 3) else {
        return;
    };
    let (app, id, team) = (parts[0], parts[1], parts[2]);
    let token = encode(app, id, team);
    assert!(!token.ends_with('='));
    let expected = TokenFields {
        app_id: app.into(),
        id: id.into(),
        team_id: team.into(),
    };
    if token.len() <= 4096 {
        assert_eq!(decode(&token), Some(expected), "{token}");
    } else {
        assert_eq!(decode(&token), None);
    }
    let four_d = four_d_session_id(team, app, id);
    assert_eq!(four_d.len(), 40);
    assert!(is_session_file_name(&four_d));
    assert!(four_d.bytes().all(|b| !b.is_ascii_uppercase()));
});
