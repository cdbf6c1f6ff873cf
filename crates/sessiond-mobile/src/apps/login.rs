//! The `/mobileapp/` flows: `$authenticate` (with the hook, e-mail validation and
//! the per-address limits), a Bearer token's authorization, `$logout`, `$userInfo`,
//! and the validation link.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};
use sessiond_store::Requester;
use subtle::ConstantTimeEq;

use super::files::file_json;
use super::{
    AuthAnswer, Authorized, Entry, Key, MobileChange, MobileError, MobileLimits, MobileSessions,
};
use crate::activation::{EmailError, Requested};
use crate::file::{SessionFile, Status, check_path_part, folder_name};
use crate::hook::{AuthHook, HookResult};
use crate::token::{self, IdMode};

pub(super) fn obj<'a>(
    body: &'a Value,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, MobileError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(MobileError::BadRequest(format!("{key} must be an object"))),
    }
}

pub(super) fn string<'a>(
    m: Option<&'a Map<String, Value>>,
    key: &str,
    what: &str,
) -> Result<Option<&'a str>, MobileError> {
    match m.and_then(|m| m.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MobileError::BadRequest(format!("{what} must be a string"))),
    }
}

/// The validated parts of a `$authenticate` body.
pub(super) struct Login<'a> {
    body: &'a Value,
    app_id: &'a str,
    team_id: &'a str,
    device_id: &'a str,
    email: &'a str,
}

/// The answer to a login; a pending one whose validation mail is still to go out
/// gets its status text from the mail step.
pub(super) fn login_answer(
    id: String,
    status: Status,
    token: String,
    status_text: String,
    user_info: Map<String, Value>,
    mail_follows: bool,
) -> AuthAnswer {
    match status {
        Status::Accepted => AuthAnswer::Accepted {
            id,
            token,
            status_text,
            user_info,
        },
        Status::Pending if mail_follows => AuthAnswer::Pending {
            id,
            status_text: String::new(),
        },
        Status::Pending => AuthAnswer::Pending { id, status_text },
    }
}

/// Whether `s` holds a control or invisible formatting character.
pub(super) fn has_hidden_chars(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_control() || crate::file::is_format_char(c))
}

pub(super) fn parse_login<'a>(
    body: &'a Value,
    limits: &MobileLimits,
) -> Result<Login<'a>, MobileError> {
    let Some(fields) = body.as_object() else {
        return Err(MobileError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    };
    for (key, value) in fields {
        if serde_json::to_vec(value).map_or(0, |v| v.len()) > limits.max_field_bytes {
            return Err(MobileError::BadRequest(format!(
                "{key} is longer than {} bytes",
                limits.max_field_bytes
            )));
        }
    }
    let app = obj(body, "application")?;
    let app_id = string(app, "id", "application.id")?
        .ok_or_else(|| MobileError::BadRequest("application.id is required".into()))?;
    check_path_part("application.id", app_id).map_err(MobileError::BadRequest)?;
    let team_id = string(obj(body, "team")?, "id", "team.id")?.unwrap_or("");
    if !team_id.is_empty() {
        check_path_part("team.id", team_id).map_err(MobileError::BadRequest)?;
    }
    if folder_name(team_id, app_id).len() > crate::file::MAX_NAME {
        return Err(MobileError::BadRequest(
            "team.id + application.id is too long".into(),
        ));
    }
    let device_id = string(obj(body, "device")?, "id", "device.id")?.unwrap_or("");
    if device_id.is_empty()
        || device_id.len() > crate::file::MAX_DEVICE_ID
        || has_hidden_chars(device_id)
    {
        return Err(MobileError::BadRequest(
            "device.id is required (1 to 8192 printable characters)".into(),
        ));
    }
    let email = match body.get("email") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) if s.len() <= 320 && !has_hidden_chars(s) => s,
        Some(_) => {
            return Err(MobileError::BadRequest(
                "email must be a string of at most 320 printable bytes".into(),
            ));
        }
    };
    for key in ["language", "parameters"] {
        obj(body, key)?;
    }
    if let Some(v) = body.get("send")
        && !v.is_string()
    {
        return Err(MobileError::BadRequest("send must be a string".into()));
    }
    Ok(Login {
        body,
        app_id,
        team_id,
        device_id,
        email,
    })
}

impl MobileSessions {
    /// Opens an activation link: accepts its session (file and memory), if the
    /// session's address is still the one the link was sent to. False when the link is
    /// unknown, used or expired, its session is gone, or its address changed.
    pub async fn activate(&self, token: &str) -> Result<bool, MobileError> {
        let Some(activations) = &self.activations else {
            return Ok(false);
        };
        let consumed = activations
            .consume(token, self.sessions.now())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let Some(link) = consumed else {
            return Ok(false);
        };
        let mut same_address = false;
        match self
            .edit_file(&link.folder, &link.id, |f| {
                same_address = f.email == link.email;
                if same_address {
                    f.set_status(Status::Accepted);
                }
            })
            .await
        {
            Ok(_) => {}
            Err(MobileError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        }
        if !same_address {
            tracing::warn!(app = %link.folder, session = %link.id, "an activation link for an address the session no longer has was refused");
            return Ok(false);
        }
        self.reload(&link.folder, &link.id).await?;
        self.notify(MobileChange::Session {
            folder: link.folder.clone(),
            id: link.id.clone(),
        });
        tracing::info!(app = %link.folder, session = %link.id, "mobile session activated by e-mail");
        Ok(true)
    }

    pub(super) async fn email_validation(
        &self,
        folder: &str,
        id: &str,
        email: &str,
        client: Option<IpAddr>,
        status_text: String,
    ) -> String {
        let Some(activations) = &self.activations else {
            return status_text;
        };
        match activations
            .request(folder, id, email, client, self.sessions.now())
            .await
        {
            Ok(Requested::Sent) if status_text.is_empty() => "Verify your email address".into(),
            Ok(Requested::Sent) => status_text,
            Ok(Requested::AlreadySent) => {
                "The mail is already sent, please wait before sending again".into()
            }
            Ok(Requested::Limited) => {
                "Too many validation e-mails were sent; please try again later.".into()
            }
            Err(EmailError::Address(_)) => "The e-mail address is not valid.".into(),
            Err(e) => {
                tracing::warn!(error = %e, "e-mail validation");
                "The validation e-mail could not be sent; please try again later.".into()
            }
        }
    }

    /// Counts a login of a new device from `peer`, or refuses it past the limit.
    pub(super) fn count_new_device(&self, peer: Option<IpAddr>) -> Result<(), MobileError> {
        let limit = self.config.limits.new_devices_per_minute;
        let now = self.sessions.now();
        let minute = std::time::Duration::from_secs(60);
        let mut counts = self.new_devices.lock();
        if now >= counts.0.plus(minute) {
            *counts = (now, HashMap::new());
        }
        let n = counts.1.entry(peer).or_default();
        if *n >= limit {
            return Err(MobileError::TooMany {
                message: "Too many new devices from this address; please try again later.".into(),
                retry_after: counts.0.plus(minute).since(now),
            });
        }
        *n += 1;
        Ok(())
    }

    /// A session file as it is on disk now (`None`: deleted, or not a valid file).
    pub(super) async fn on_disk(
        &self,
        folder: &str,
        id: &str,
    ) -> Result<Option<SessionFile>, MobileError> {
        match self.read_file(folder, id).await {
            Ok((_, file)) => Ok(Some(file)),
            Err(MobileError::NotFound | MobileError::BadRequest(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `$authenticate`. The hook runs — outside every lock — for a new or pending
    /// device, and for an accepted one unless [`super::Relogin::hook`] is off; then, under the
    /// device's lock, the session file is written (onto the file as it is on disk: an
    /// administrator's edit not pushed yet is kept) and the answer is accepted,
    /// pending or refused. A changed e-mail of a pending session starts a new
    /// validation; the mail goes out after the lock is released.
    pub async fn authenticate(
        &self,
        body: &Value,
        peer: Option<IpAddr>,
        hook: &dyn AuthHook,
    ) -> Result<AuthAnswer, MobileError> {
        let login = parse_login(body, &self.config.limits)?;
        let folder = folder_name(login.team_id, login.app_id);
        check_path_part("app folder", &folder).map_err(MobileError::BadRequest)?;
        let agent: Key = (folder.clone(), login.device_id.to_string());
        let known = self.index.read().of_agent(&agent);
        if known.is_none() {
            if self.index.read().in_folder(&folder) >= self.config.limits.max_sessions_per_app {
                return Err(MobileError::TooMany {
                    message: "This app has too many sessions; please try again later.".into(),
                    retry_after: std::time::Duration::from_secs(60),
                });
            }
            self.count_new_device(peer)?;
        }
        let accepted = known.as_ref().filter(|e| e.file.status == Status::Accepted);
        let accepted_again = accepted.filter(|e| e.file.email == login.email);
        let fresh_id = || match self.config.ids {
            IdMode::Random => token::random_session_id(),
            IdMode::FourD => token::four_d_session_id(login.team_id, login.app_id, login.device_id),
        };
        // The session id the login will have: a new one for a new device, or for an
        // accepted device that gets a new token; else the device's.
        let id = match &known {
            Some(_)
                if accepted.is_some()
                    && self.config.relogin.new_token
                    && self.config.ids == IdMode::Random =>
            {
                fresh_id()
            }
            Some(e) => e.file.id.clone(),
            None => fresh_id(),
        };
        let ip = peer.map(|p| p.to_string()).unwrap_or_default();
        let result = match accepted_again {
            Some(e) if !self.config.relogin.hook => HookResult {
                success: true,
                user_info: e.side.user_info.clone(),
                ..HookResult::default()
            },
            _ if self.config.localhost_accept && peer.is_some_and(|p| p.is_loopback()) => {
                HookResult::accept("")
            }
            _ => {
                let mut info = body.clone();
                info["session"] = json!({"id": id, "ip": ip});
                hook.authenticate(&info).await
            }
        };
        if !result.success {
            return Ok(AuthAnswer::Refused {
                status_text: result.status_text,
            });
        }
        let (answer, mail) = {
            let _device = self.lock_device(&folder, login.device_id).await;
            let _gate = self.gate.read().await;
            self.write_login(&login, &folder, &agent, id, &ip, result)
                .await?
        };
        if let Some((id, email, status_text)) = mail {
            let status_text = self
                .email_validation(&folder, &id, &email, peer, status_text)
                .await;
            return Ok(AuthAnswer::Pending { id, status_text });
        }
        Ok(answer)
    }

    /// The write phase of a login, under the device's lock: (answer, the validation
    /// mail to send).
    #[allow(clippy::type_complexity)]
    pub(super) async fn write_login(
        &self,
        login: &Login<'_>,
        folder: &str,
        agent: &Key,
        mut id: String,
        ip: &str,
        result: HookResult,
    ) -> Result<(AuthAnswer, Option<(String, String, String)>), MobileError> {
        // The device's session now (another login of it may have finished meanwhile),
        // and its file as on disk: a session an administrator deleted is gone.
        let mut current = self.index.read().of_agent(agent);
        let mut disk = match &current {
            Some(e) => self.on_disk(folder, &e.file.id).await?,
            None => None,
        };
        if disk.is_none() {
            current = None;
        }
        let retiring = current.as_ref().filter(|e| e.file.id != id).cloned();
        match (&current, &retiring) {
            // Same session (no new token): keep its id even if another login chose one.
            (Some(e), None) => id.clone_from(&e.file.id),
            // A new session (its previous file, if any, was deleted).
            (None, _) => disk = None,
            (Some(_), Some(_)) => {}
        }
        // An administrator's edit of status or e-mail not pushed yet is kept: the
        // files are their truth until Push, and memory answers until then.
        let held = match (&current, &disk) {
            (Some(e), Some(d)) => d.status != e.file.status || d.email != e.file.email,
            _ => false,
        };
        // An accepted device logging in with the same e-mail has proven it already: a
        // "verify" answer does not send it back to pending.
        let proven = current
            .as_ref()
            .is_some_and(|e| e.file.status == Status::Accepted && e.file.email == login.email);
        let (status, email) = match (&disk, held) {
            (Some(d), true) => (d.status, d.email.clone()),
            _ => (
                if result.verify && !proven {
                    Status::Pending
                } else {
                    Status::Accepted
                },
                login.email.to_string(),
            ),
        };
        let token = match (&disk, held) {
            (Some(d), true) => d.token.clone(),
            _ => token::encode(login.app_id, &id, login.team_id),
        };
        let base = disk.as_ref().map(|d| &d.json);
        let json = file_json(login.body, &id, ip, status, &email, &token, base);
        let file =
            SessionFile::from_json(json).map_err(|e| MobileError::BadRequest(e.to_string()))?;
        if file.to_bytes().len() > self.config.limits.max_file_bytes {
            return Err(MobileError::TooLarge(format!(
                "the session would take more than {} bytes",
                self.config.limits.max_file_bytes
            )));
        }
        let mut side = current.as_ref().map(|e| e.side.clone()).unwrap_or_default();
        if !held {
            side.user_info = result.user_info.clone();
        }
        let web = self
            .ensure_web(&Entry {
                file: file.clone(),
                side: side.clone(),
            })
            .await?;
        side.web_session = Some(web.record.id());
        if let Some(input) = result.privileges.as_ref().filter(|_| !held) {
            let change = self
                .sessions
                .set_privileges(&web.record.id(), input, Requester::Server)
                .await?;
            side.privileges = change.snapshot.record.get_privileges();
            side.user_name = change.snapshot.record.user_name().to_string();
        }
        self.store_login(folder, &Entry { file, side }, retiring.as_ref(), held)
            .await?;
        // What the running server answers: memory's view (until a Push for a held
        // session).
        let (status, token, user_info) = match (&current, held) {
            (Some(e), true) => (
                e.file.status,
                e.file.token.clone(),
                e.side.user_info.clone(),
            ),
            _ => (status, token, result.user_info.clone()),
        };
        tracing::info!(app = %folder, session = %id, status = status.as_str(), "mobile login");
        let mail = (status == Status::Pending && !email.is_empty() && !held)
            .then(|| (id.clone(), email, result.status_text.clone()));
        Ok((
            login_answer(
                id,
                status,
                token,
                result.status_text,
                user_info,
                mail.is_some(),
            ),
            mail,
        ))
    }

    /// Writes a login's session (files, memory unless `held`, other nodes told),
    /// retiring the session it replaces.
    pub(super) async fn store_login(
        &self,
        folder: &str,
        entry: &Entry,
        retiring: Option<&Entry>,
        held: bool,
    ) -> Result<(), MobileError> {
        self.write(folder, entry).await?;
        if let Some(old) = retiring {
            self.remove_files(folder, &old.file.id).await?;
        }
        {
            let mut index = self.index.write();
            if let Some(old) = retiring {
                index.remove(&(folder.to_string(), old.file.id.clone()));
            }
            if !held {
                index.insert(folder, entry.clone());
            }
        }
        for changed in retiring.iter().map(|e| &e.file.id).chain([&entry.file.id]) {
            self.notify(MobileChange::Session {
                folder: folder.to_string(),
                id: changed.clone(),
            });
        }
        Ok(())
    }

    /// The session a Bearer token opens, if it exists and is accepted.
    pub async fn authorize(&self, bearer: &str) -> Result<Option<Authorized>, MobileError> {
        let Some(fields) = token::decode(bearer.trim()) else {
            return Ok(None);
        };
        if check_path_part("application.id", &fields.app_id).is_err() {
            return Ok(None);
        }
        let folder = folder_name(&fields.team_id, &fields.app_id);
        let entry = self
            .index
            .read()
            .entries
            .get(&(folder.clone(), fields.id.clone()))
            .cloned();
        let Some(entry) = entry else { return Ok(None) };
        let same: bool = entry
            .file
            .token
            .as_bytes()
            .ct_eq(bearer.trim().as_bytes())
            .into();
        if !same || entry.file.status != Status::Accepted {
            return Ok(None);
        }
        let web = self.ensure_web(&entry).await?;
        Ok(Some(Authorized {
            folder,
            id: entry.file.id.clone(),
            app_id: entry.file.app_id.clone(),
            email: entry.file.email.clone(),
            user_info: entry.side.user_info.clone(),
            token: entry.file.token.clone(),
            device_id: entry.file.device_id.clone(),
            web,
        }))
    }

    /// `$logout`: removes the session from memory and disk.
    pub async fn logout(&self, who: &Authorized) -> Result<(), MobileError> {
        let _device = self.lock_device(&who.folder, &who.device_id).await;
        let _gate = self.gate.read().await;
        self.delete_locked(&who.folder, &who.id).await
    }

    /// `$userInfo`: stores `device.token` (push) and/or `userInfo` — device-owned
    /// fields only, onto the file as it is on disk: an administrator's edit waiting
    /// for a Push is kept, and a session deleted on disk stays deleted.
    pub async fn set_user_info(&self, who: &Authorized, body: &Value) -> Result<(), MobileError> {
        let device_token = match body.get("device").map(|d| d.get("token")) {
            None | Some(None | Some(Value::Null)) => None,
            Some(Some(Value::String(t))) if t.len() <= 4096 => Some(t.clone()),
            Some(_) => {
                return Err(MobileError::BadRequest(
                    "device.token must be a string of at most 4096 bytes".into(),
                ));
            }
        };
        let user_info = match body.get("userInfo") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m))
                if serde_json::to_vec(m).map_or(0, |v| v.len())
                    <= self.config.limits.max_field_bytes =>
            {
                Some(m.clone())
            }
            Some(Value::Object(_)) => {
                return Err(MobileError::BadRequest(format!(
                    "userInfo is longer than {} bytes",
                    self.config.limits.max_field_bytes
                )));
            }
            Some(_) => return Err(MobileError::BadRequest("userInfo must be an object".into())),
        };
        let _device = self.lock_device(&who.folder, &who.device_id).await;
        let _gate = self.gate.read().await;
        let key = (who.folder.clone(), who.id.clone());
        let Some(mut entry) = self.index.read().entries.get(&key).cloned() else {
            return Err(MobileError::NotFound);
        };
        let Some(mut disk) = self.on_disk(&who.folder, &who.id).await? else {
            // Deleted by an administrator: nothing brings it back.
            return Ok(());
        };
        if let Some(t) = device_token {
            for json in [&mut disk.json, &mut entry.file.json] {
                let device = json
                    .entry("device")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(d) = device {
                    d.insert("token".into(), t.clone().into());
                }
            }
        }
        if let Some(u) = user_info {
            entry.side.user_info = u;
        }
        // The file as on disk plus the device's fields; memory keeps its own view.
        self.write(
            &who.folder,
            &Entry {
                file: disk,
                side: entry.side.clone(),
            },
        )
        .await?;
        self.index.write().insert(&who.folder, entry);
        self.notify(MobileChange::Session {
            folder: who.folder.clone(),
            id: who.id.clone(),
        });
        Ok(())
    }
}
