//! Refresh (4D's Push): reading `MobileApps`, skipping files whose fingerprint did
//! not change, and reloading one session changed on another node.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{
    Entry, Index, Key, MobileChange, MobileError, MobileSessions, RefreshError, RefreshReport,
    sidecar_path,
};
use crate::file::{FileError, SessionFile, is_session_file_name};

/// What identifies one version of a session file without reading it: any write (in
/// place or by rename) changes it.
///
/// The sidecar has no stamp of its own: sessiond is its only writer, and every write
/// of a sidecar is followed by an atomic write of its session file (a new inode and a
/// new change time), so a sidecar never changes without its session file's stamp
/// changing too. (A sidecar edited by hand is read at the next start, or once its
/// session file changes.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint {
    len: u64,
    inode: u64,
    /// Modification and change times, ns since the epoch.
    modified: i128,
    changed: i128,
}

impl Fingerprint {
    pub(super) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        Self {
            len: meta.len(),
            inode: meta.ino(),
            modified: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            changed: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    /// Whether the file was written so recently that another write in the same tick
    /// of a coarse file-system clock (up to 2 s) would not change this stamp: such a
    /// file is read again at the next refresh.
    pub(super) fn is_recent(&self, now: i128) -> bool {
        now - self.modified < 2_000_000_000
    }
}

/// The fingerprints of the valid session files at the last refresh: app folder →
/// file name → fingerprint (nested, so that a file is looked up by its names as
/// read from the folder, without building a key), with a mark used during a scan.
pub(super) type Seen = HashMap<String, HashMap<String, (Fingerprint, bool)>>;

impl RefreshError {
    pub(super) fn of(key: &Key, e: &FileError) -> Self {
        Self {
            file: format!("{}/{}", key.0, key.1),
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// Reads session file `name` of app folder `folder` (in `dir`) and its sidecar.
pub(super) fn read_entry(
    dir: &Path,
    folder: &str,
    name: &str,
) -> std::io::Result<Result<Entry, FileError>> {
    let bytes = std::fs::read(dir.join(name))?;
    let file =
        match SessionFile::parse(&bytes).and_then(|f| f.check_location(folder, name).map(|()| f)) {
            Ok(file) => file,
            Err(e) => return Ok(Err(e)),
        };
    let side = std::fs::read(sidecar_path(dir, name))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    Ok(Ok(Entry { file, side }))
}

/// What a scan of `MobileApps` found.
#[derive(Default)]
pub(super) struct Scan {
    /// The files read: new, changed, or not skipped.
    pub(super) read: Vec<(Key, Entry)>,
    /// The files that could not be used.
    pub(super) errors: Vec<RefreshError>,
    /// The fingerprint of every valid file, skipped or read (except those written in
    /// the last two seconds, which are read again next time).
    pub(super) seen: Seen,
    /// How many files were skipped (their fingerprint is the one in the last `seen`).
    pub(super) skipped: usize,
}

impl Scan {
    fn read_keys(&self) -> HashSet<&Key> {
        self.read.iter().map(|(key, _)| key).collect()
    }

    fn in_seen(&self, key: &Key) -> bool {
        self.seen
            .get(&key.0)
            .is_some_and(|files| files.contains_key(&key.1))
    }
}

/// Every session file under `root`; those whose fingerprint is the one in `seen` are
/// not read. `seen` is updated in place (one lookup per file) and moved into the
/// result.
pub(super) fn scan(root: &Path, mut seen: Seen) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    let dirs = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
        Err(e) => return Err(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    let mut folders = HashSet::new();
    for dir in dirs {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        let Ok(folder) = dir.file_name().into_string() else {
            continue;
        };
        let dir = dir.path();
        let here = seen.entry(folder.clone()).or_default();
        for file in std::fs::read_dir(&dir)? {
            let file = file?;
            let name = file.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            if !is_session_file_name(name) || !file.file_type()?.is_file() {
                continue; // manifest.json, AuthKey_*.p8, sidecars…: not sessions
            }
            // Relative to the open folder: no walk of the whole path. A file removed
            // since the listing (a logout on another node) is simply gone.
            let print = match file.metadata() {
                Ok(meta) => Fingerprint::of(&meta),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if let Some((last, found)) = here.get_mut(name)
                && *last == print
            {
                *found = true;
                scan.skipped += 1;
                continue;
            }
            let key = (folder.clone(), name.to_string());
            let entry = match read_entry(&dir, &key.0, &key.1) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                read => read?,
            };
            match entry {
                // Keep the fingerprint taken before reading: a write since then
                // changes it, and the file is read again next time.
                Ok(entry) if !print.is_recent(now) => {
                    here.insert(key.1.clone(), (print, true));
                    scan.read.push((key, entry));
                }
                Ok(entry) => scan.read.push((key, entry)),
                Err(e) => scan.errors.push(RefreshError::of(&key, &e)),
            }
        }
        // What was not found (or not kept) this time goes; the marks are reset.
        here.retain(|_, (_, found)| std::mem::take(found));
        folders.insert(folder);
    }
    seen.retain(|folder, files| !files.is_empty() && folders.contains(folder));
    scan.seen = seen;
    Ok(scan)
}

/// Every valid session file under `root`, read.
pub(super) fn read_all(root: &Path) -> std::io::Result<Vec<(Key, Entry)>> {
    Ok(scan(root, Seen::new())?.read)
}

/// What putting a file's entry in the index did.
#[derive(Clone, Copy)]
enum Update {
    Loaded,
    Updated,
    Unchanged,
}

impl Index {
    /// Puts the entry read from a file in place of the session's (keeping its web
    /// session when the sidecar names none).
    fn update(&mut self, key: &Key, mut entry: Entry) -> Update {
        let prev = self.remove(key);
        let update = match &prev {
            Some(p) if p.file == entry.file && p.side.web_session == entry.side.web_session => {
                Update::Unchanged
            }
            Some(_) => Update::Updated,
            None => Update::Loaded,
        };
        if entry.side.web_session.is_none() {
            entry.side.web_session = prev.and_then(|p| p.side.web_session);
        }
        self.insert(&key.0, entry);
        update
    }
}

impl RefreshReport {
    fn count(&mut self, update: Update) {
        match update {
            Update::Loaded => self.loaded += 1,
            Update::Updated => self.updated += 1,
            Update::Unchanged => self.unchanged += 1,
        }
    }
}

impl MobileSessions {
    /// MOBILE APP REFRESH SESSIONS: reads every session file; modified files update
    /// their session, new ones are loaded, deleted or invalid ones are evicted, and
    /// each unusable file is reported with its `mobi` error. Other nodes are told
    /// (see [`MobileSessions::changes`]).
    pub async fn refresh(&self) -> Result<RefreshReport, MobileError> {
        let report = self.reload_all().await?;
        self.notify(MobileChange::Refresh);
        Ok(report)
    }

    /// Reloads one session from its file (a change made by another node): a valid
    /// file updates or adds it, a missing or invalid one evicts it.
    pub async fn reload(&self, folder: &str, id: &str) -> Result<(), MobileError> {
        let path = self.checked_file(folder, id)?;
        let dir = path.parent().expect("a file in a folder").to_path_buf();
        let device = self.device_of(folder, id).await?;
        let _device = self.lock_device(folder, &device).await;
        let _gate = self.gate.read().await;
        let (folder, id) = (folder.to_string(), id.to_string());
        let loaded = {
            let (folder, id) = (folder.clone(), id.clone());
            tokio::task::spawn_blocking(move || read_entry(&dir, &folder, &id).ok()?.ok())
                .await
                .map_err(std::io::Error::other)?
        };
        let mut index = self.index.write();
        match loaded {
            Some(entry) => drop(index.update(&(folder, id), entry)),
            None => drop(index.remove(&(folder, id))),
        }
        Ok(())
    }

    /// Like [`MobileSessions::refresh`], without telling other nodes.
    pub async fn reload_all(&self) -> Result<RefreshReport, MobileError> {
        // Waits for device writes in progress (never for a callout), and holds new
        // ones until the index is updated.
        let _gate = self.gate.write().await;
        let root = self.config.root.clone();
        let last = std::mem::take(&mut *self.seen.lock());
        let mut scan = tokio::task::spawn_blocking(move || scan(&root, last))
            .await
            .map_err(std::io::Error::other)??;
        let mut report = RefreshReport {
            skipped: scan.skipped,
            unchanged: scan.skipped,
            ..RefreshReport::default()
        };
        let mut evicted_web = Vec::new();
        let skipped_in_memory = {
            // Changed in place, without an `.await`: a session that did not change
            // stays readable throughout.
            let mut index = self.index.write();
            let read = scan.read_keys();
            let (mut gone, mut skipped_in_memory) = (Vec::new(), 0);
            for key in index.entries.keys().filter(|key| !read.contains(key)) {
                if scan.in_seen(key) {
                    skipped_in_memory += 1;
                } else {
                    gone.push(key.clone());
                }
            }
            for key in gone {
                if let Some(prev) = index.remove(&key) {
                    report.evicted += 1;
                    evicted_web.extend(prev.side.web_session);
                }
            }
            for (key, entry) in std::mem::take(&mut scan.read) {
                report.count(index.update(&key, entry));
            }
            skipped_in_memory
        };
        // A file skipped as unchanged whose session is not in memory (removed since
        // the last refresh) is read after all. Rare: the keys are listed only then.
        if skipped_in_memory != scan.skipped {
            let missing: Vec<Key> = {
                let index = self.index.read();
                (scan.seen.iter())
                    .flat_map(|(folder, files)| files.keys().map(|n| (folder.clone(), n.clone())))
                    .filter(|key| !index.entries.contains_key(key))
                    .collect()
            };
            let root = self.config.root.clone();
            let read = tokio::task::spawn_blocking(move || {
                missing
                    .into_iter()
                    .map(|key| Ok((read_entry(&root.join(&key.0), &key.0, &key.1)?, key)))
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .await
            .map_err(std::io::Error::other)??;
            for (entry, key) in read {
                report.skipped -= 1;
                report.unchanged -= 1;
                match entry {
                    Ok(entry) => report.count(self.index.write().update(&key, entry)),
                    Err(e) => {
                        scan.errors.push(RefreshError::of(&key, &e));
                        scan.seen.get_mut(&key.0).map(|f| f.remove(&key.1));
                    }
                }
            }
        }
        report.errors = scan.errors;
        *self.seen.lock() = scan.seen;
        for id in evicted_web {
            self.sessions.remove(&id).await?;
        }
        tracing::info!(
            loaded = report.loaded,
            updated = report.updated,
            evicted = report.evicted,
            errors = report.errors.len(),
            "mobile sessions refreshed"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use sessiond_store::Sessions;

    use super::*;
    use crate::{AuthAnswer, MobileConfig, Policy};

    async fn three_sessions() -> (tempfile::TempDir, MobileSessions, Vec<Key>) {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(
            Arc::new(sessiond_store::MemoryStore::new()),
            Arc::new(sessiond_core::Roles::default()),
            Arc::new(sessiond_core::SystemClock),
            sessiond_core::SessionPolicy::default(),
        );
        let m = MobileSessions::new(MobileConfig::new(dir.path().join("MobileApps")), sessions);
        let mut keys = Vec::new();
        for device in ["A", "B", "C"] {
            let body = json!({
                "email": "",
                "application": {"id": "com.example.App", "name": "App"},
                "team": {"id": "TEAM123456"},
                "device": {"id": device, "description": "iPhone", "os": "iOS"},
            });
            let peer = Some("127.0.0.1".parse().unwrap());
            let AuthAnswer::Accepted { id, .. } = m
                .authenticate(&body, peer, &Policy::default())
                .await
                .unwrap()
            else {
                panic!("accepted from localhost")
            };
            keys.push(("TEAM123456.com.example.App".to_string(), id));
        }
        (dir, m, keys)
    }

    #[tokio::test]
    async fn a_skipped_file_whose_session_left_memory_is_loaded_again() {
        let (dir, m, keys) = three_sessions().await;
        // Written an hour ago: a refresh keeps their fingerprints (files written in
        // the last 2 s are read every time).
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let folder = dir.path().join("MobileApps").join(&keys[0].0);
        for key in &keys {
            let file = std::fs::File::options()
                .write(true)
                .open(folder.join(&key.1));
            file.unwrap().set_modified(hour_ago).unwrap();
        }
        m.refresh().await.unwrap();
        // Out of memory, file untouched (a delete whose file removal failed).
        m.index.write().remove(&keys[1]);
        let report = m.refresh().await.unwrap();
        assert_eq!((report.loaded, report.skipped), (1, 2), "{report:?}");
        assert!(m.index.read().entries.contains_key(&keys[1]));
        assert_eq!(m.index.read().entries.len(), 3);
    }

    #[tokio::test]
    async fn files_removed_while_a_refresh_runs_never_fail_it() {
        let (dir, m, keys) = three_sessions().await;
        let folder = dir.path().join("MobileApps").join(&keys[0].0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Another node logs devices out and in again, as fast as it can.
        let churn = {
            let (folder, stop) = (folder.clone(), stop.clone());
            let bytes = std::fs::read(folder.join(&keys[0].1)).unwrap();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("{:040X}", n % 64);
                    let _ = std::fs::write(folder.join(&name), &bytes);
                    let _ = std::fs::remove_file(folder.join(&name));
                    n += 1;
                }
            })
        };
        for _ in 0..200 {
            m.refresh().await.expect("a vanished file is not an error");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert!(m.index.read().entries.contains_key(&keys[2]));
    }

    #[tokio::test]
    async fn a_file_gone_or_made_invalid_is_evicted_in_place() {
        let (dir, m, keys) = three_sessions().await;
        m.refresh().await.unwrap();
        let folder = dir.path().join("MobileApps").join(&keys[0].0);
        std::fs::remove_file(folder.join(&keys[0].1)).unwrap();
        std::fs::write(folder.join(&keys[1].1), b"{not json").unwrap();
        let report = m.refresh().await.unwrap();
        assert_eq!((report.evicted, report.errors.len()), (2, 1), "{report:?}");
        let index = m.index.read();
        assert_eq!(index.entries.len(), 1);
        assert!(index.entries.contains_key(&keys[2]));
        assert_eq!(index.in_folder(&keys[2].0), 1);
    }
}
