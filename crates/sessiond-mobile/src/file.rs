//! Session files: `<data>/MobileApps/<TeamID>.<BundleID>/<sessionId>` (spec §3.1–3.2),
//! their validation (the `mobi` errors 1–4 of spec §3.7) and safe names.

use serde_json::{Map, Value};

use crate::token;

/// A session's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The device may use the app's data.
    Accepted,
    /// Waiting for validation: no token, every data request gets 401.
    Pending,
}

impl Status {
    /// The file's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Pending => "pending",
        }
    }
}

/// Why a session file cannot be used (4D's `mobi` component errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum FileError {
    /// mobi 1: the folder or file name does not match the content.
    #[error("mobi 1: file location does not match its content: {message}")]
    Location {
        /// Details.
        message: String,
    },
    /// mobi 2: not a JSON object.
    #[error("mobi 2: malformed JSON: {message}")]
    Malformed {
        /// Details.
        message: String,
    },
    /// mobi 3: a required field is missing or has the wrong type.
    #[error("mobi 3: schema violation: {message}")]
    Schema {
        /// Details.
        message: String,
    },
    /// mobi 4: the token does not match the other fields.
    #[error("mobi 4: connection token is not compliant with the current information")]
    Token,
}

impl FileError {
    /// The `mobi` error number.
    pub fn code(&self) -> u8 {
        match self {
            Self::Location { .. } => 1,
            Self::Malformed { .. } => 2,
            Self::Schema { .. } => 3,
            Self::Token => 4,
        }
    }
}

/// Longest accepted team id, bundle id or folder name, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest accepted device id (iOS DeviceCheck tokens are long), in bytes.
pub const MAX_DEVICE_ID: usize = 8192;

/// Whether `c` is an invisible formatting character (Unicode category Cf: bidi
/// overrides, zero-width characters, the BOM…), which could make a name look like
/// another one.
pub fn is_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}'
        | '\u{08E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// Checks a team or bundle id, or an app folder name, before it becomes part of a
/// path: 1–255 bytes, no `/`, `\`, `..`, NUL, control or formatting character, not
/// starting or ending with a dot.
pub fn check_path_part(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(format!("{what} must be 1 to {MAX_NAME} bytes"));
    }
    if s.starts_with('.')
        || s.ends_with('.')
        || s.contains("..")
        || s.chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || is_format_char(c))
    {
        return Err(format!(
            "{what} {s:?} contains characters not allowed in a folder name"
        ));
    }
    Ok(())
}

/// The app folder: `team.id + "." + application.id`, or `application.id` alone when
/// there is no team id.
pub fn folder_name(team_id: &str, app_id: &str) -> String {
    if team_id.is_empty() {
        app_id.to_string()
    } else {
        format!("{team_id}.{app_id}")
    }
}

/// Whether a directory entry name looks like a session file: no extension, hex only.
pub fn is_session_file_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A validated session file.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionFile {
    /// The whole JSON object (unknown keys are kept).
    pub json: Map<String, Value>,
    /// `application.id`.
    pub app_id: String,
    /// `team.id` (`""` when absent).
    pub team_id: String,
    /// `session.id`.
    pub id: String,
    /// `device.id` (`""` when absent, e.g. a hand-made file).
    pub device_id: String,
    /// `email`.
    pub email: String,
    /// `status`.
    pub status: Status,
    /// `token`.
    pub token: String,
}

fn text<'a>(obj: &'a Map<String, Value>, path: &[&str]) -> Result<Option<&'a str>, FileError> {
    let mut cur = obj;
    for (i, key) in path.iter().enumerate() {
        match cur.get(*key) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(m)) if i + 1 < path.len() => cur = m,
            Some(Value::String(s)) if i + 1 == path.len() => return Ok(Some(s)),
            Some(_) => {
                return Err(FileError::Schema {
                    message: format!("{} has the wrong type", path[..=i].join(".")),
                });
            }
        }
    }
    Ok(None)
}

impl SessionFile {
    /// Parses and validates file content (mobi 2, 3, 4).
    pub fn parse(bytes: &[u8]) -> Result<Self, FileError> {
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(FileError::Malformed {
                message: "the content must be a JSON object".into(),
            });
        }
        let json: Map<String, Value> =
            serde_json::from_slice(bytes).map_err(|e| FileError::Malformed {
                message: e.to_string(),
            })?;
        Self::from_json(json)
    }

    /// Validates a JSON object (mobi 3, 4).
    pub fn from_json(json: Map<String, Value>) -> Result<Self, FileError> {
        let schema = |m: &str| FileError::Schema { message: m.into() };
        let app_id = text(&json, &["application", "id"])?
            .ok_or_else(|| schema("application.id is required"))?
            .to_string();
        let team_id = text(&json, &["team", "id"])?.unwrap_or("").to_string();
        let id = text(&json, &["session", "id"])?
            .ok_or_else(|| schema("session.id is required"))?
            .to_string();
        if !is_session_file_name(&id) {
            return Err(schema("session.id must be hexadecimal"));
        }
        let status = match text(&json, &["status"])? {
            Some("accepted") => Status::Accepted,
            Some("pending") => Status::Pending,
            _ => return Err(schema("status must be \"accepted\" or \"pending\"")),
        };
        let token = text(&json, &["token"])?
            .ok_or_else(|| schema("token is required"))?
            .to_string();
        let email = text(&json, &["email"])?.unwrap_or("").to_string();
        let device_id = text(&json, &["device", "id"])?.unwrap_or("").to_string();
        check_path_part("application.id", &app_id).map_err(|m| FileError::Schema { message: m })?;
        if !team_id.is_empty() {
            check_path_part("team.id", &team_id).map_err(|m| FileError::Schema { message: m })?;
        }
        let fields = token::decode(&token).ok_or(FileError::Token)?;
        if fields.app_id != app_id || fields.id != id || fields.team_id != team_id {
            return Err(FileError::Token);
        }
        Ok(Self {
            json,
            app_id,
            team_id,
            id,
            device_id,
            email,
            status,
            token,
        })
    }

    /// The app folder this file belongs in.
    pub fn folder(&self) -> String {
        folder_name(&self.team_id, &self.app_id)
    }

    /// Checks that the file lies where its content says (mobi 1).
    pub fn check_location(&self, folder: &str, file_name: &str) -> Result<(), FileError> {
        if folder != self.folder() || file_name != self.id {
            return Err(FileError::Location {
                message: format!(
                    "{folder}/{file_name} holds session {} of app folder {}",
                    self.id,
                    self.folder()
                ),
            });
        }
        Ok(())
    }

    /// Sets `status` in the JSON too.
    pub fn set_status(&mut self, status: Status) {
        self.status = status;
        self.json.insert("status".into(), status.as_str().into());
    }

    /// Sets `email` in the JSON too.
    pub fn set_email(&mut self, email: &str) {
        self.email = email.to_string();
        self.json.insert("email".into(), email.into());
    }

    /// The bytes to write: pretty UTF-8 JSON, no BOM, first byte `{`.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.json).expect("a JSON map serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"application":{"id":"com.contactApp.Contact","name":"Contact","version":"1.0.0"},
 "team":{"id":"UTT7VDX8W5"},
 "language":{"id":"en_US","code":"en","region":"US"},
 "email":"",
 "device":{"description":"iPhone X","version":"11.3","id":"0DC5132E-1EF4-407C-A832-5FE33D818AF3","simulator":true},
 "send":"link",
 "session":{"id":"7023d9205074199d1c16fc00d24354e778137675","ip":"::ffff:192.168.5.4"},
 "status":"accepted",
 "token":"eyJhcHBOYW1lSUQiOiJjb20uY29udGFjdEFwcC5Db250YWN0IiwiaWQiOiI3MDIzZDkyMDUwNzQxOTlkMWMxNmZjMDBkMjQzNTRlNzc4MTM3Njc1IiwidGVhbUlEIjoiVVRUN1ZEWDhXNSJ9"}"#;

    #[test]
    fn the_documented_4d_file_is_valid() {
        let f = SessionFile::parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(f.folder(), "UTT7VDX8W5.com.contactApp.Contact");
        assert_eq!(f.status, Status::Accepted);
        f.check_location(
            "UTT7VDX8W5.com.contactApp.Contact",
            "7023d9205074199d1c16fc00d24354e778137675",
        )
        .unwrap();
        assert_eq!(
            f.check_location("com.contactApp.Contact", &f.id)
                .unwrap_err()
                .code(),
            1
        );
    }

    #[test]
    fn mobi_errors_2_3_4() {
        assert_eq!(SessionFile::parse(b"[1]").unwrap_err().code(), 2);
        assert_eq!(SessionFile::parse(b"{oops").unwrap_err().code(), 2);
        assert_eq!(
            SessionFile::parse(SAMPLE.replace("accepted", "maybe").as_bytes())
                .unwrap_err()
                .code(),
            3
        );
        assert_eq!(
            SessionFile::parse(SAMPLE.replace("\"email\":\"\"", "\"email\":3").as_bytes())
                .unwrap_err()
                .code(),
            3
        );
        let wrong_team = SAMPLE.replace("{\"id\":\"UTT7VDX8W5\"}", "{\"id\":\"OTHERTEAM\"}");
        assert_eq!(
            SessionFile::parse(wrong_team.as_bytes())
                .unwrap_err()
                .code(),
            4
        );
    }

    #[test]
    fn path_parts_that_could_leave_the_folder_are_refused() {
        for bad in [
            "",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            ".hidden",
            "a..b",
            "T.",
            "com.app\u{202E}gpj",
            "a\u{200B}b",
            &"x".repeat(256),
        ] {
            assert!(check_path_part("team.id", bad).is_err(), "{bad:?}");
        }
        check_path_part("application.id", "com.company.app").unwrap();
    }
}
