//! Refresh (4D's Push): reading `MobileApps`, skipping files whose fingerprint did
//! not change, and reloading one session changed on another node.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::watch::{Changed, Watch};
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

/// What a refresh leaves for the next one. Used only under the gate's write lock, by
/// one refresh at a time.
#[derive(Default)]
pub(super) struct Last {
    seen: Seen,
    /// Files to read at the next refresh whatever happens to them: invalid, or
    /// written in the last two seconds.
    again: Vec<Key>,
    /// The watch of the folders since the last refresh, if any.
    watch: Option<Watch>,
}

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
    /// How many files were skipped (their fingerprint is the one in the last `seen`,
    /// or, watched, they had no event).
    pub(super) skipped: usize,
    /// How many files' metadata was taken.
    pub(super) examined: usize,
    /// Files to read again next time.
    again: Vec<Key>,
    /// The watch, kept for the next refresh.
    watch: Option<Watch>,
}

impl Scan {
    /// What the next refresh starts from.
    fn into_last(self) -> Last {
        Last {
            seen: self.seen,
            again: self.again,
            watch: self.watch,
        }
    }

    fn read_keys(&self) -> HashSet<&Key> {
        self.read.iter().map(|(key, _)| key).collect()
    }

    fn in_seen(&self, key: &Key) -> bool {
        self.seen
            .get(&key.0)
            .is_some_and(|files| files.contains_key(&key.1))
    }
}

/// Which files a scan looks at.
enum Scope {
    /// Every file of every folder.
    All,
    /// Only the files that had an event (see [`Changed`]); other files are skipped.
    Changed(Changed),
}

/// The session files under `root` that `last` says to look at; those whose
/// fingerprint is the one in `last.seen` are not read. With `watch` on, the folders
/// are watched (anew when events may have been lost), and a file with no event since
/// the last refresh is skipped without looking at it.
pub(super) fn scan_since(root: &Path, last: Last, watch: bool) -> std::io::Result<Scan> {
    let Last {
        seen,
        again,
        watch: mut watching,
    } = last;
    let changed = watching.as_mut().and_then(Watch::drain);
    let scope = if let Some(mut changed) = changed {
        for (folder, name) in again {
            if let Some(names) = changed
                .entry(folder)
                .or_insert_with(|| Some(HashSet::new()))
            {
                names.insert(name);
            }
        }
        Scope::Changed(changed)
    } else {
        // Watched from before the listing on: no change is missed in between.
        watching = if watch {
            Watch::new(root).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot watch MobileApps: every refresh checks every file");
                None
            })
        } else {
            None
        };
        Scope::All
    };
    let mut scan = scan(root, seen, &scope, watching.as_mut())?;
    scan.watch = watching;
    Ok(scan)
}

/// The session files under `root` in `scope`; `seen` is updated in place (one lookup
/// per file) and moved into the result.
fn scan(
    root: &Path,
    mut seen: Seen,
    scope: &Scope,
    mut watch: Option<&mut Watch>,
) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    match scope {
        Scope::All => {
            let dirs = match std::fs::read_dir(root) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
                Err(e) => return Err(e),
            };
            let mut folders = HashSet::new();
            for dir in dirs {
                let dir = dir?;
                if !dir.file_type()?.is_dir() {
                    continue;
                }
                let Ok(folder) = dir.file_name().into_string() else {
                    continue;
                };
                let here = seen.entry(folder.clone()).or_default();
                list_folder(
                    &dir.path(),
                    &folder,
                    here,
                    watch.as_deref_mut(),
                    &mut scan,
                    now,
                )?;
                folders.insert(folder);
            }
            seen.retain(|folder, files| folders.contains(folder) && !files.is_empty());
        }
        Scope::Changed(changed) => {
            scan.skipped = (seen.iter())
                .filter(|(folder, _)| !changed.contains_key(*folder))
                .map(|(_, files)| files.len())
                .sum();
            for (folder, names) in changed {
                let dir = root.join(folder);
                let here = seen.entry(folder.clone()).or_default();
                match names {
                    None => list_folder(&dir, folder, here, watch.as_deref_mut(), &mut scan, now)?,
                    Some(names) => {
                        let unchanged = here.keys().filter(|n| !names.contains(*n)).count();
                        scan.skipped += unchanged;
                        for name in names {
                            if !is_session_file_name(name) {
                                continue; // sidecars, temporary files…
                            }
                            let meta = match std::fs::symlink_metadata(dir.join(name)) {
                                Ok(meta) if meta.is_file() => Some(meta),
                                Ok(_) => None,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::NotFound
                                            | std::io::ErrorKind::NotADirectory
                                    ) =>
                                {
                                    None
                                }
                                Err(e) => return Err(e),
                            };
                            match meta {
                                Some(meta) => {
                                    examine(
                                        &dir, folder, name, &meta, here, false, &mut scan, now,
                                    )?;
                                }
                                None => drop(here.remove(name)),
                            }
                        }
                    }
                }
            }
            seen.retain(|_, files| !files.is_empty());
        }
    }
    scan.seen = seen;
    Ok(scan)
}

/// Lists app folder `folder` (at `dir`) and looks at each of its session files;
/// watched from before the listing. A folder gone, or not a folder (a file, a
/// symbolic link: not followed, as a listing of the root does not), has no session.
fn list_folder(
    dir: &Path,
    folder: &str,
    here: &mut HashMap<String, (Fingerprint, bool)>,
    watch: Option<&mut Watch>,
    scan: &mut Scan,
    now: i128,
) -> std::io::Result<()> {
    if let Some(watch) = watch {
        watch.folder(dir, folder);
    }
    let gone = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
        )
    };
    let files = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(dir),
        Ok(_) => Err(std::io::ErrorKind::NotADirectory.into()),
        Err(e) => Err(e),
    };
    let files = match files {
        Ok(files) => files,
        Err(e) if gone(&e) => {
            here.clear();
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for file in files {
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
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        examine(dir, folder, name, &meta, here, true, scan, now)?;
    }
    // What was not found (or not kept) this time goes; the marks are reset.
    here.retain(|_, (_, found)| std::mem::take(found));
    Ok(())
}

/// Skips session file `name` if its fingerprint is the one in `here`, else reads it.
/// `mark`: the folder is being listed, and what is not marked goes at its end.
#[allow(clippy::too_many_arguments)]
fn examine(
    dir: &Path,
    folder: &str,
    name: &str,
    meta: &std::fs::Metadata,
    here: &mut HashMap<String, (Fingerprint, bool)>,
    mark: bool,
    scan: &mut Scan,
    now: i128,
) -> std::io::Result<()> {
    scan.examined += 1;
    let print = Fingerprint::of(meta);
    if let Some((last, found)) = here.get_mut(name)
        && *last == print
    {
        *found = mark;
        scan.skipped += 1;
        return Ok(());
    }
    let key = (folder.to_string(), name.to_string());
    let entry = match read_entry(dir, &key.0, &key.1) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            here.remove(name);
            return Ok(());
        }
        read => read?,
    };
    match entry {
        // Keep the fingerprint taken before reading: a write since then
        // changes it, and the file is read again next time.
        Ok(entry) if !print.is_recent(now) => {
            here.insert(key.1.clone(), (print, mark));
            scan.read.push((key, entry));
        }
        Ok(entry) => {
            here.remove(name);
            scan.again.push(key.clone());
            scan.read.push((key, entry));
        }
        Err(e) => {
            here.remove(name);
            scan.errors.push(RefreshError::of(&key, &e));
            scan.again.push(key);
        }
    }
    Ok(())
}

/// Every valid session file under `root`, read.
pub(super) fn read_all(root: &Path) -> std::io::Result<Vec<(Key, Entry)>> {
    Ok(scan(root, Seen::new(), &Scope::All, None)?.read)
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
    /// Moves the events of the watched folders into the watch's pending changes: after
    /// each of sessiond's own writes, so that logins between two refreshes do not
    /// overflow the kernel's queue. Quick: one non-blocking read.
    pub(super) fn absorb_events(&self) {
        if let Some(watch) = self.last.lock().watch.as_mut() {
            watch.absorb();
        }
    }

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
        let (root, watch) = (self.config.root.clone(), self.config.watch);
        let last = std::mem::take(&mut *self.last.lock());
        let mut scan = tokio::task::spawn_blocking(move || scan_since(&root, last, watch))
            .await
            .map_err(std::io::Error::other)??;
        let mut report = RefreshReport {
            skipped: scan.skipped,
            unchanged: scan.skipped,
            examined: scan.examined,
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
                        scan.again.push(key);
                    }
                }
            }
        }
        report.errors = std::mem::take(&mut scan.errors);
        *self.last.lock() = scan.into_last();
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

    use std::os::unix::fs::FileExt as _;

    use super::*;
    use crate::{AuthAnswer, MobileConfig, Policy};

    async fn three_sessions() -> (tempfile::TempDir, MobileSessions, Vec<Key>) {
        three_sessions_watched(true).await
    }

    /// [`three_sessions`], written an hour ago and refreshed once: what the next
    /// refresh finds unchanged. Also returns their app folder.
    async fn settled() -> (
        tempfile::TempDir,
        MobileSessions,
        Vec<Key>,
        std::path::PathBuf,
    ) {
        let (dir, m, keys) = three_sessions().await;
        let folder = dir.path().join("MobileApps").join(&keys[0].0);
        age(&folder);
        m.refresh().await.unwrap();
        (dir, m, keys, folder)
    }

    async fn three_sessions_watched(watch: bool) -> (tempfile::TempDir, MobileSessions, Vec<Key>) {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::new(
            Arc::new(sessiond_store::MemoryStore::new()),
            Arc::new(sessiond_core::Roles::default()),
            Arc::new(sessiond_core::SystemClock),
            sessiond_core::SessionPolicy::default(),
        );
        let config = MobileConfig {
            watch,
            ..MobileConfig::new(dir.path().join("MobileApps"))
        };
        let m = MobileSessions::new(config, sessions);
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

    /// Sets the modification time of every file of `folder` an hour back: files written
    /// in the last 2 s are read at every refresh.
    fn age(folder: &Path) {
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in std::fs::read_dir(folder).unwrap() {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.unwrap().path());
            file.unwrap().set_modified(hour_ago).unwrap();
        }
    }

    fn counts(r: &RefreshReport) -> (usize, usize, usize, usize, usize, usize) {
        (
            r.loaded,
            r.updated,
            r.unchanged,
            r.skipped,
            r.evicted,
            r.examined,
        )
    }

    #[tokio::test]
    async fn a_watched_refresh_looks_only_at_files_with_an_event() {
        let (dir, m, keys) = three_sessions().await;
        let folder = dir.path().join("MobileApps").join(&keys[0].0);
        age(&folder);
        let first = m.refresh().await.unwrap();
        assert_eq!(counts(&first), (0, 0, 3, 0, 0, 3), "{first:?}");
        let quiet = m.refresh().await.unwrap();
        assert_eq!(
            counts(&quiet),
            (0, 0, 3, 3, 0, 0),
            "nothing examined: {quiet:?}"
        );
        // Edited in place (no rename, same length), then aged again.
        let path = folder.join(&keys[0].1);
        let text = std::fs::read_to_string(&path).unwrap();
        let edited = text.replace(r#""accepted""#, r#""pending" "#);
        assert_ne!(text, edited);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(edited.as_bytes(), 0)
            .unwrap();
        age(&folder);
        let report = m.refresh().await.unwrap();
        // Every file was aged (an event each, and a new change time): all three
        // looked at and read, one changed.
        assert_eq!(counts(&report), (0, 1, 2, 0, 0, 3), "{report:?}");
        assert_eq!(m.refresh().await.unwrap().examined, 0);
        // Removed: evicted. Renamed out of its name: evicted. A new app folder with a
        // session (in memory since its login): listed.
        std::fs::remove_file(folder.join(&keys[1].1)).unwrap();
        std::fs::rename(folder.join(&keys[2].1), folder.join("kept-aside")).unwrap();
        let body = json!({
            "email": "",
            "application": {"id": "com.example.Other", "name": "Other"},
            "team": {"id": "TEAM123456"},
            "device": {"id": "D", "description": "iPhone", "os": "iOS"},
        });
        let peer = Some("127.0.0.1".parse().unwrap());
        m.authenticate(&body, peer, &Policy::default())
            .await
            .unwrap();
        let report = m.refresh().await.unwrap();
        assert_eq!(counts(&report), (0, 0, 2, 1, 2, 1), "{report:?}");
        assert_eq!(m.len(), 2);
        // A whole app folder removed: its sessions are evicted.
        std::fs::remove_dir_all(&folder).unwrap();
        let report = m.refresh().await.unwrap();
        assert_eq!((report.evicted, m.len()), (1, 1), "{report:?}");
    }

    #[tokio::test]
    async fn a_renamed_app_folder_is_listed_under_its_new_name() {
        let (_dir, m, keys, folder) = settled().await;
        let root = folder.parent().unwrap().to_path_buf();
        std::fs::rename(
            root.join(&keys[0].0),
            root.join("TEAM123456.com.example.Moved"),
        )
        .unwrap();
        let report = m.refresh().await.unwrap();
        // Files under another app's folder are invalid there (spec: location check).
        assert_eq!((report.evicted, report.errors.len()), (3, 3), "{report:?}");
        // Renamed back: watched under its name again, an in-place edit is seen.
        std::fs::rename(
            root.join("TEAM123456.com.example.Moved"),
            root.join(&keys[0].0),
        )
        .unwrap();
        let report = m.refresh().await.unwrap();
        assert_eq!((report.loaded, report.errors.len()), (3, 0), "{report:?}");
        age(&root.join(&keys[0].0));
        m.refresh().await.unwrap();
        std::fs::write(root.join(&keys[0].0).join(&keys[0].1), b"{not json").unwrap();
        let report = m.refresh().await.unwrap();
        assert_eq!((report.evicted, report.examined), (1, 1), "{report:?}");
    }

    #[tokio::test]
    async fn an_invalid_file_is_reported_at_every_watched_refresh() {
        let (dir, m, keys) = three_sessions().await;
        let folder = dir.path().join("MobileApps").join(&keys[0].0);
        std::fs::write(folder.join(&keys[0].1), b"{not json").unwrap();
        age(&folder);
        for _ in 0..3 {
            let report = m.refresh().await.unwrap();
            assert_eq!(report.errors.len(), 1, "{report:?}");
        }
        assert_eq!(m.refresh().await.unwrap().examined, 1);
    }

    #[tokio::test]
    async fn unwatched_refreshes_look_at_every_file() {
        let (dir, m, keys) = three_sessions_watched(false).await;
        age(&dir.path().join("MobileApps").join(&keys[0].0));
        for _ in 0..3 {
            let report = m.refresh().await.unwrap();
            assert_eq!(report.examined, 3, "{report:?}");
        }
    }

    /// How many events the kernel queues for an inotify instance.
    fn queued_events() -> usize {
        std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
            .map_or(16384, |s| s.trim().parse().unwrap())
    }

    /// Touches the session files of `keys` in turn (consecutive identical events would
    /// merge), `times` in all; with `m`, absorbs the events every 1,000 touches as
    /// sessiond's own writes do.
    fn touch_in_turns(folder: &Path, keys: &[Key], times: usize, m: Option<&MobileSessions>) {
        let files: Vec<_> = (keys.iter())
            .map(|k| {
                std::fs::File::options()
                    .write(true)
                    .open(folder.join(&k.1))
                    .unwrap()
            })
            .collect();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..times {
            files[i % files.len()].set_modified(hour_ago).unwrap();
            if let Some(m) = m
                && i % 1000 == 0
            {
                m.absorb_events();
            }
        }
    }

    #[tokio::test]
    async fn lost_events_make_the_next_refresh_check_every_file() {
        let (_dir, m, keys, folder) = settled().await;
        // More events than the kernel queues.
        touch_in_turns(&folder, &keys, queued_events() + 10, None);
        let report = m.refresh().await.unwrap();
        assert_eq!((report.examined, report.unchanged), (3, 3), "{report:?}");
        // Watched again from there.
        assert_eq!(m.refresh().await.unwrap().examined, 0);
    }

    #[tokio::test]
    async fn events_absorbed_between_refreshes_never_overflow_the_queue() {
        let (_dir, m, keys, folder) = settled().await;
        // Twice the kernel's queue in events on two of the files, absorbed.
        touch_in_turns(&folder, &keys[..2], 2 * queued_events(), Some(&m));
        let report = m.refresh().await.unwrap();
        assert_eq!((report.examined, report.unchanged), (2, 3), "{report:?}");
    }

    #[tokio::test]
    async fn a_root_path_that_leads_to_another_folder_is_checked_in_full() {
        let (dir, m, keys, folder) = settled().await;
        // A backup restored over the data folder: no event on the folder watched.
        let kept = std::fs::read(folder.join(&keys[0].1)).unwrap();
        let old = dir.path().with_extension("old");
        std::fs::rename(dir.path(), &old).unwrap();
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(&keys[0].1), kept).unwrap();
        let report = m.refresh().await;
        std::fs::remove_dir_all(&old).unwrap();
        let report = report.unwrap();
        assert_eq!((report.evicted, report.examined), (2, 1), "{report:?}");
        assert_eq!(m.len(), 1);
    }

    #[tokio::test]
    async fn a_symbolic_link_to_an_app_folder_is_not_followed() {
        let (_dir, m, keys, folder) = settled().await;
        let root = folder.parent().unwrap().to_path_buf();
        std::os::unix::fs::symlink(
            root.join(&keys[0].0),
            root.join("TEAM123456.com.example.Link"),
        )
        .unwrap();
        let watched = m.refresh().await.unwrap();
        assert_eq!(
            (watched.loaded, watched.errors.len(), watched.examined),
            (0, 0, 0),
            "{watched:?}"
        );
        assert_eq!(m.len(), 3);
    }
}
