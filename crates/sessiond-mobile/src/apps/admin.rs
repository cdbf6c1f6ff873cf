//! What the management tools see and do: app and session listings, reading,
//! editing and deleting a session file.

use std::path::PathBuf;

use serde_json::Value;
use sessiond_store::fs::atomic_write;

use super::files::derived_web_id;
use super::refresh::read_all;
use super::{MobileError, MobileSessions};
use crate::file::{SessionFile, Status};

/// One app folder as the management tools list it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AppSummary {
    /// The folder name (`TEAM.bundle` or `bundle`).
    pub folder: String,
    /// `<application.name> (<folder>)`.
    pub label: String,
    /// Number of session files.
    pub sessions: usize,
    /// How many of them are pending.
    pub pending: usize,
}

/// One session file as the management tools list it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionSummary {
    /// `session.id`.
    pub id: String,
    /// `status`.
    pub status: Status,
    /// `device.description`.
    pub device: String,
    /// `device.os + " " + device.version`.
    pub os: String,
    /// `email`.
    pub email: String,
    /// `session.ip`.
    pub ip: String,
    /// The file's path on the server.
    pub file: String,
    /// The file's last modification, ms since the epoch.
    pub modified: Option<u64>,
    /// When its web session was created (its first login, or its first use after a
    /// file made elsewhere was loaded), ms since the epoch.
    pub created: Option<u64>,
    /// The last request made with its token (recorded to the second), ms since the
    /// epoch.
    pub last_seen: Option<u64>,
    /// The whole `device` object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub device_info: Value,
}

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

impl MobileSessions {
    /// The apps with at least one session file, read from disk (the files, not memory,
    /// as the Mobile Session Management component does).
    pub async fn list_apps(&self) -> Result<Vec<AppSummary>, MobileError> {
        let root = self.config.root.clone();
        let found = tokio::task::spawn_blocking(move || read_all(&root))
            .await
            .map_err(std::io::Error::other)??;
        let mut apps: std::collections::BTreeMap<String, AppSummary> =
            std::collections::BTreeMap::new();
        for ((folder, _), entry) in found {
            let name = str_at(
                &Value::Object(entry.file.json.clone()),
                &["application", "name"],
            )
            .to_string();
            let app = apps.entry(folder.clone()).or_insert_with(|| AppSummary {
                label: String::new(),
                folder: folder.clone(),
                sessions: 0,
                pending: 0,
            });
            app.sessions += 1;
            app.pending += usize::from(entry.file.status == Status::Pending);
            if app.label.is_empty() || !name.is_empty() {
                app.label = format!(
                    "{} ({folder})",
                    if name.is_empty() {
                        &entry.file.app_id
                    } else {
                        &name
                    }
                );
            }
        }
        Ok(apps.into_values().collect())
    }

    /// The session files of one app folder, from disk.
    pub async fn list_sessions(&self, folder: &str) -> Result<Vec<SessionSummary>, MobileError> {
        let dir = self.checked_dir(folder)?;
        let root = self.config.root.clone();
        let folder = folder.to_string();
        let found = tokio::task::spawn_blocking(move || read_all(&root))
            .await
            .map_err(std::io::Error::other)??;
        let mut out = Vec::new();
        for ((_, id), entry) in found.into_iter().filter(|((f, _), _)| *f == folder) {
            let web = entry
                .side
                .web_session
                .unwrap_or_else(|| derived_web_id(&entry.file));
            let seen = self.sessions.get(&web).await?;
            let json = Value::Object(entry.file.json);
            let path = dir.join(&id);
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_millis()).ok());
            let os = format!(
                "{} {}",
                str_at(&json, &["device", "os"]),
                str_at(&json, &["device", "version"])
            )
            .trim()
            .to_string();
            out.push(SessionSummary {
                status: entry.file.status,
                device: str_at(&json, &["device", "description"]).to_string(),
                os,
                email: entry.file.email,
                ip: str_at(&json, &["session", "ip"]).to_string(),
                file: path.display().to_string(),
                modified,
                created: seen.as_ref().map(|s| s.record.created().0),
                last_seen: seen.as_ref().map(|s| s.last_activity.0),
                device_info: json.get("device").cloned().unwrap_or(Value::Null),
                id,
            });
        }
        out.sort_by(|a, b| a.device.cmp(&b.device).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One session file, parsed and validated, with its path.
    pub async fn read_file(
        &self,
        folder: &str,
        id: &str,
    ) -> Result<(PathBuf, SessionFile), MobileError> {
        let path = self.checked_file(folder, id)?;
        let p = path.clone();
        let bytes = match tokio::task::spawn_blocking(move || std::fs::read(p))
            .await
            .map_err(std::io::Error::other)?
        {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MobileError::NotFound);
            }
            Err(e) => return Err(e.into()),
        };
        let file =
            SessionFile::parse(&bytes).map_err(|e| MobileError::BadRequest(e.to_string()))?;
        Ok((path, file))
    }

    /// Edits a session file on disk (status, e-mail). As in 4D, the session in memory
    /// changes only at the next [`MobileSessions::refresh`] (Push).
    pub async fn edit_file(
        &self,
        folder: &str,
        id: &str,
        edit: impl FnOnce(&mut SessionFile) + Send,
    ) -> Result<SessionFile, MobileError> {
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        let (path, mut file) = self.read_file(folder, id).await?;
        edit(&mut file);
        let bytes = file.to_bytes();
        tokio::task::spawn_blocking(move || atomic_write(&path, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(file)
    }

    /// Deletes a session file (and its sidecar) on disk; memory follows at the next
    /// refresh (Push), as in 4D.
    pub async fn delete_file(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        self.checked_file(folder, id)?;
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        if self.remove_files(folder, id).await? {
            Ok(())
        } else {
            Err(MobileError::NotFound)
        }
    }
}
