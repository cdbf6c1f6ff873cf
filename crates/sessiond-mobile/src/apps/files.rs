//! The files of a session: writing a session file and its sidecar, deleting them,
//! and the web session each mobile session owns.

use serde_json::{Map, Value, json};
use sessiond_core::{PrivilegeInput, SessionId, SessionKind, SessionRecord};
use sessiond_store::fs::{atomic_write, private_dir};
use sessiond_store::{Requester, SessionsError, Snapshot, StoreError};

use super::{Entry, MobileChange, MobileError, MobileSessions, sidecar_path};
use crate::file::{SessionFile, Status};

/// The web session id of a mobile session that has no recorded link: the first 128
/// bits of SHA-256 over its app folder and id.
pub(super) fn derived_web_id(file: &SessionFile) -> SessionId {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(
        format!("sessiond-mobile-web:{}/{}", file.folder(), file.id).as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    SessionId::from_bytes(bytes)
}

/// The content of a session file: the file as it is (`base`: unknown keys and the
/// push token are kept), with the request's fields 4D keeps (never the password), the
/// session, status, e-mail and token.
pub(super) fn file_json(
    body: &Value,
    id: &str,
    ip: &str,
    status: Status,
    email: &str,
    token: &str,
    base: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut json = base.cloned().unwrap_or_default();
    let push = base.and_then(|b| b.get("device")?.get("token").cloned());
    for key in ["application", "team", "language", "device", "send"] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            json.insert(key.into(), v.clone());
        }
    }
    if let Some(push) = push
        && let Some(Value::Object(device)) = json.get_mut("device")
    {
        device.entry("token").or_insert(push);
    }
    json.insert("email".into(), email.into());
    json.insert("session".into(), json!({"id": id, "ip": ip}));
    json.insert("status".into(), status.as_str().into());
    json.insert("token".into(), token.into());
    json
}

impl MobileSessions {
    /// Deletes a session: memory, file, sidecar and its web session.
    pub async fn delete(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        self.delete_locked(folder, id).await
    }

    /// The device id of a session (memory, else its file), for its lock.
    pub(super) async fn device_of(&self, folder: &str, id: &str) -> Result<String, MobileError> {
        let known = self
            .index
            .read()
            .entries
            .get(&(folder.to_string(), id.to_string()))
            .map(|e| e.file.device_id.clone());
        Ok(match known {
            Some(d) => d,
            None => self
                .on_disk(folder, id)
                .await?
                .map(|f| f.device_id)
                .unwrap_or_default(),
        })
    }

    /// [`Self::delete`] under the device's lock.
    pub(super) async fn delete_locked(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        let removed = self
            .index
            .write()
            .remove(&(folder.to_string(), id.to_string()));
        self.remove_files(folder, id).await?;
        let Some(e) = removed else {
            return Err(MobileError::NotFound);
        };
        self.notify(MobileChange::Session {
            folder: folder.to_string(),
            id: id.to_string(),
        });
        if let Some(web) = e.side.web_session {
            self.sessions.remove(&web).await?;
        }
        Ok(())
    }

    /// Removes a session's file and sidecar (missing ones are fine); true if the file
    /// was there.
    pub(super) async fn remove_files(&self, folder: &str, id: &str) -> Result<bool, MobileError> {
        let dir = self.config.root.join(folder);
        let (file, side) = (dir.join(id), sidecar_path(&dir, id));
        let found = tokio::task::spawn_blocking(move || {
            let found = match std::fs::remove_file(&file) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            };
            match std::fs::remove_file(&side) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(found),
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        self.absorb_events();
        Ok(found)
    }

    pub(super) async fn write(&self, folder: &str, entry: &Entry) -> Result<(), MobileError> {
        let dir = self.config.root.join(folder);
        let bytes = entry.file.to_bytes();
        let side = serde_json::to_vec_pretty(&entry.side).expect("serializable");
        let id = entry.file.id.clone();
        tokio::task::spawn_blocking(move || {
            private_dir(&dir)?;
            atomic_write(&sidecar_path(&dir, &id), &side)?;
            atomic_write(&dir.join(&id), &bytes)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.absorb_events();
        Ok(())
    }

    /// The web session of a mobile session, created (with its saved id, privileges
    /// and userName) when it does not exist — after a restart, or for a file made by
    /// 4D. Mobile-owned web sessions do not expire by idleness: the token has no expiry.
    pub(super) async fn ensure_web(&self, entry: &Entry) -> Result<Snapshot, MobileError> {
        // A file without a link (made by 4D, or whose sidecar is lost) gets a web
        // session id derived from the mobile session, so every request, every node and
        // every restart finds the same one without writing anything.
        let id = entry
            .side
            .web_session
            .unwrap_or_else(|| derived_web_id(&entry.file));
        if let Some(s) = self.sessions.touch(&id).await? {
            return Ok(s);
        }
        let policy = self.sessions.policy();
        let mut record = SessionRecord::with_id(
            id,
            SessionKind::Web,
            self.sessions.now(),
            policy,
            entry.file.json["session"]["ip"]
                .as_str()
                .and_then(|s| s.parse().ok()),
            None,
        );
        record
            .set_idle_timeout(policy.max_idle_timeout_minutes, policy)
            .expect("a web session has an idle timeout");
        let mut snapshot = match self.sessions.insert(record).await {
            Ok(s) => s,
            // Another request created it meanwhile.
            Err(SessionsError::Store(StoreError::Duplicate(_))) => {
                return self.sessions.touch(&id).await?.ok_or(MobileError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        if !entry.side.privileges.is_empty() || !entry.side.user_name.is_empty() {
            let input = PrivilegeInput {
                privileges: entry.side.privileges.clone(),
                user_name: Some(entry.side.user_name.clone()).filter(|u| !u.is_empty()),
                ..PrivilegeInput::default()
            };
            snapshot = self
                .sessions
                .set_privileges(&id, &input, Requester::Server)
                .await?
                .snapshot;
        }
        Ok(snapshot)
    }
}
