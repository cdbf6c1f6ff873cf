//! Mobile session ids and tokens (spec §3.3, §3.4).
//!
//! The token is what 4D sends: unpadded base64 of the compact JSON
//! `{"appNameID":…,"id":…,"teamID":…}`. It is unguessable only because sessiond's
//! default session id is 160 random bits; 4D's deterministic id
//! (`sha1(team + app + device)`) is available as a compatibility mode.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sessiond_core::id::to_hex;
use sha1::{Digest, Sha1};

/// How new mobile session ids are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdMode {
    /// 160 random bits as 40 lower-case hex digits (default; tokens cannot be forged).
    #[default]
    Random,
    /// 4D's `sha1(team.id + application.id + device.id)` (byte-compatible with 4D).
    #[serde(rename = "4d")]
    FourD,
}

/// 4D's session id: lower-case hex SHA-1 of `team + app + device`.
///
/// ```
/// assert_eq!(
///     sessiond_mobile::token::four_d_session_id("UTT7VDX8W5", "com.contactApp.Contact", "0DC5132E-1EF4-407C-A832-5FE33D818AF3"),
///     "7023d9205074199d1c16fc00d24354e778137675"
/// );
/// ```
pub fn four_d_session_id(team: &str, app: &str, device: &str) -> String {
    let mut h = Sha1::new();
    h.update(team.as_bytes());
    h.update(app.as_bytes());
    h.update(device.as_bytes());
    to_hex(&h.finalize())
}

/// A random session id: 160 bits from the OS CSPRNG, 40 lower-case hex digits.
pub fn random_session_id() -> String {
    to_hex(&sessiond_core::id::random_bytes::<20>())
}

/// The token of a session.
///
/// ```
/// let t = sessiond_mobile::token::encode("com.myCompany.My-App", "547302015c7366daf048dfa58048d2ae37ae2bc8", "58P9JF46LX");
/// assert!(!t.ends_with('='));
/// assert_eq!(sessiond_mobile::token::decode(&t).unwrap().id, "547302015c7366daf048dfa58048d2ae37ae2bc8");
/// ```
pub fn encode(app_id: &str, session_id: &str, team_id: &str) -> String {
    let json = serde_json::json!({"appNameID": app_id, "id": session_id, "teamID": team_id});
    // serde_json's default map is ordered by key: appNameID, id, teamID — 4D's order.
    STANDARD_NO_PAD.encode(json.to_string())
}

/// The fields of a decoded token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct TokenFields {
    /// `application.id`.
    #[serde(rename = "appNameID")]
    pub app_id: String,
    /// `session.id`.
    pub id: String,
    /// `team.id` (`""` when none).
    #[serde(rename = "teamID", default)]
    pub team_id: String,
}

/// Decodes a token (either base64 alphabet, padded or not); `None` if it is not one.
pub fn decode(token: &str) -> Option<TokenFields> {
    if token.len() > 4096 {
        return None;
    }
    let bytes = [STANDARD_NO_PAD, URL_SAFE_NO_PAD, STANDARD, URL_SAFE]
        .iter()
        .find_map(|e| e.decode(token).ok())?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_1_id_and_token() {
        let id = four_d_session_id(
            "UTT7VDX8W5",
            "com.contactApp.Contact",
            "0DC5132E-1EF4-407C-A832-5FE33D818AF3",
        );
        assert_eq!(id, "7023d9205074199d1c16fc00d24354e778137675");
        assert_eq!(
            encode("com.contactApp.Contact", &id, "UTT7VDX8W5"),
            "eyJhcHBOYW1lSUQiOiJjb20uY29udGFjdEFwcC5Db250YWN0IiwiaWQiOiI3MDIzZDkyMDUwNzQxOTlkMWMxNmZjMDBkMjQzNTRlNzc4MTM3Njc1IiwidGVhbUlEIjoiVVRUN1ZEWDhXNSJ9"
        );
    }

    #[test]
    fn vector_2_id_and_unpadded_token() {
        let id = four_d_session_id(
            "58P9JF46LX",
            "com.myCompany.My-App",
            "42A08892-63DB-4FD5-991A-0EB213219AE0",
        );
        assert_eq!(id, "547302015c7366daf048dfa58048d2ae37ae2bc8");
        assert_eq!(
            encode("com.myCompany.My-App", &id, "58P9JF46LX"),
            "eyJhcHBOYW1lSUQiOiJjb20ubXlDb21wYW55Lk15LUFwcCIsImlkIjoiNTQ3MzAyMDE1YzczNjZkYWYwNDhkZmE1ODA0OGQyYWUzN2FlMmJjOCIsInRlYW1JRCI6IjU4UDlKRjQ2TFgifQ"
        );
    }

    #[test]
    fn random_ids_are_40_hex() {
        let a = random_session_id();
        assert_eq!(a.len(), 40);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(a, random_session_id());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(decode("").is_none());
        assert!(decode("!!!").is_none());
        assert!(decode(&STANDARD.encode("[1]")).is_none());
        let padded = STANDARD.encode(r#"{"appNameID":"a","id":"b","teamID":""}"#);
        assert_eq!(decode(&padded).unwrap().app_id, "a");
    }
}
