//! Private, atomic files: every file sessiond writes is `0600` and every folder it
//! makes `0700`, whatever the umask (the data folder holds token hashes, Bearer tokens,
//! activation links and the audit log). Writes are atomic: temp file in the same
//! folder, fsync, rename, fsync of the folder — a reader sees the old file or the new
//! one, never half of one; a crash leaves at most a `.…tmp` file, which
//! [`remove_stale_temps`] clears at start.

use std::io::Write;
use std::path::Path;

/// Mode of every file sessiond writes.
pub const FILE_MODE: u32 = 0o600;
/// Mode of every folder sessiond makes.
pub const DIR_MODE: u32 = 0o700;

/// Writes `bytes` to `path` atomically, as a private file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let suffix = u64::from_le_bytes(sessiond_core::id::random_bytes());
    let tmp = dir.join(format!(".{}.{suffix:016x}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut file = create_private(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Opens `path` for appending, creating it as a private file.
pub fn open_private_append(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    open_private(&options, path)
}

/// Creates a new private file (never an existing one).
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    open_private(&options, path)
}

pub(crate) fn open_private(
    options: &std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<std::fs::File> {
    #[cfg(unix)]
    let options = {
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = options.clone();
        o.mode(FILE_MODE);
        o
    };
    let file = options.open(path)?;
    // The umask may have taken bits away from the mode (or an older file may be wider).
    set_mode(&file, FILE_MODE)?;
    Ok(file)
}

#[cfg(unix)]
fn set_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if file.metadata()?.permissions().mode() & 0o777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn set_mode(_: &std::fs::File, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// Makes `path` (and missing parents) as private folders; a folder that already
/// exists keeps its mode, and is reported when others can read or enter it.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        warn_if_open(path);
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(DIR_MODE);
    }
    builder.create(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Makes `file` private (a file another program made, e.g. the session database).
pub fn make_private(file: &Path) -> std::io::Result<()> {
    set_mode(&std::fs::File::open(file)?, FILE_MODE)
}

#[cfg(unix)]
fn warn_if_open(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                folder = %path.display(),
                mode = format!("{mode:o}"),
                "this folder holds secrets and other users can read or enter it: chmod 700 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_open(_: &Path) {}

/// Removes the temporary files a crash left behind in `dir` and the folders below it
/// (`.<name>.<16 hex>.tmp`, made by [`atomic_write`]); returns how many.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            removed += remove_stale_temps(&path);
        } else if kind.is_file()
            && is_temp_name(&entry.file_name().to_string_lossy())
            && std::fs::remove_file(&path).is_ok()
        {
            tracing::info!(file = %path.display(), "removed a temporary file left by a crash");
            removed += 1;
        }
    }
    removed
}

/// `.<name>.<16 hex digits>.tmp`.
fn is_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    rest.rsplit_once('.').is_some_and(|(base, hex)| {
        !base.is_empty() && hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_replaces_without_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temps_are_recognized_by_name_only() {
        assert!(is_temp_name(".abc.json.0123456789abcdef.tmp"));
        assert!(!is_temp_name("abc.json.0123456789abcdef.tmp"));
        assert!(!is_temp_name(".abc.tmp"));
        assert!(!is_temp_name(".x.0123.tmp"));
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("MobileApps").join("T.app");
        private_dir(&sub).unwrap();
        std::fs::write(sub.join(".id.0123456789abcdef.tmp"), b"half").unwrap();
        std::fs::write(sub.join("id"), b"{}").unwrap();
        assert_eq!(remove_stale_temps(dir.path()), 1);
        assert!(sub.join("id").exists());
    }
}
