//! Watching `MobileApps` (Linux inotify), so that a refresh looks only at the files
//! that had an event since the last one instead of taking the metadata of every file.
//!
//! The kernel queues an event during the system call that changes a file, so every
//! change that returned before a refresh starts is in the queue the refresh drains
//! first. What is watched: the root (app folders created, removed, renamed) and each
//! app folder (files created, written, truncated, touched, renamed, removed). When
//! events may have been lost (queue overflow, a watch that could not be added, the
//! root moved, removed, or its path now leading to another folder: a restored backup,
//! a file system mounted over it), the next refresh scans everything and watches anew.
//!
//! Not seen, so watching is used only on local file systems (a folder shared over a
//! network file system changes on other hosts without local events): writes through
//! a shared memory mapping and through a hard link in another folder.

use std::collections::{HashMap, HashSet};

#[cfg(target_os = "linux")]
pub(super) use linux::Watch;
#[cfg(not(target_os = "linux"))]
pub(super) use other::Watch;

/// What changed since the last drain: app folder → the names that had an event, or
/// `None` when the whole folder must be listed again (new, removed, renamed). Folders
/// not listed did not change.
pub(super) type Changed = HashMap<String, Option<HashSet<String>>>;

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::{HashMap, HashSet};
    use std::mem::MaybeUninit;
    use std::os::fd::OwnedFd;
    use std::os::unix::fs::MetadataExt as _;
    use std::path::{Path, PathBuf};

    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

    use super::Changed;
    use crate::file::is_session_file_name;

    /// Names (files and app folders) pending before a refresh beyond which it checks
    /// every file instead.
    const MAX_PENDING: usize = 100_000;

    /// An inotify instance watching one `MobileApps` folder and its app folders.
    pub(in crate::apps) struct Watch {
        fd: OwnedFd,
        root: i32,
        /// The root's path, and the device and inode it led to when watched.
        root_path: PathBuf,
        root_id: (u64, u64),
        /// Watch descriptor → app folder name.
        folders: HashMap<i32, String>,
        /// A folder's watch could not be added: its events would be missed.
        broken: bool,
        /// Events read from the kernel's queue and not yet drained.
        pending: Changed,
        /// How many names `pending` holds.
        names: usize,
        /// Events were lost (queue overflow, too many pending, the root gone).
        lost: bool,
        /// Where the events are read.
        buf: Box<[MaybeUninit<u8>]>,
    }

    /// `statfs` magic numbers of the local file systems watched.
    const LOCAL_FILE_SYSTEMS: [u32; 8] = [
        0xEF53,      // ext2/3/4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x8584_58F6, // ramfs
        0x794C_7630, // overlayfs
        0x2FC1_2FC1, // zfs
        0xF2F5_2010, // f2fs
    ];

    fn is_local(root: &Path) -> std::io::Result<bool> {
        // `f_type` is a signed word of the target's width: its low 32 bits are the magic.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let kind = rustix::fs::statfs(root)?.f_type as u32;
        Ok(LOCAL_FILE_SYSTEMS.contains(&kind))
    }

    /// The device and inode `path` leads to.
    fn identity(path: &Path) -> std::io::Result<(u64, u64)> {
        let meta = std::fs::metadata(path)?;
        Ok((meta.dev(), meta.ino()))
    }

    impl Watch {
        /// Watches `root` (before it is listed); `Ok(None)` where it cannot be trusted
        /// (a file system that is not local) or does not exist yet.
        pub(in crate::apps) fn new(root: &Path) -> std::io::Result<Option<Self>> {
            match is_local(root) {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
            let root_id = identity(root)?;
            let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
            let wd = inotify::add_watch(
                &fd,
                root,
                WatchFlags::CREATE
                    | WatchFlags::DELETE
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::MOVED_TO
                    | WatchFlags::DELETE_SELF
                    | WatchFlags::MOVE_SELF
                    | WatchFlags::ONLYDIR,
            )?;
            if identity(root)? != root_id {
                return Ok(None); // replaced meanwhile: not watched this time
            }
            Ok(Some(Self {
                fd,
                root: wd,
                root_path: root.to_path_buf(),
                root_id,
                folders: HashMap::new(),
                broken: false,
                pending: Changed::new(),
                names: 0,
                lost: false,
                buf: vec![MaybeUninit::uninit(); 16 << 10].into_boxed_slice(),
            }))
        }

        /// Watches app folder `folder` at `dir`, before it is listed. A failure (the
        /// user's inotify watches used up) makes the next drain report lost events.
        pub(in crate::apps) fn folder(&mut self, dir: &Path, folder: &str) {
            if self.broken {
                return; // this refresh checks every file anyway
            }
            let added = inotify::add_watch(
                &self.fd,
                dir,
                WatchFlags::CREATE
                    | WatchFlags::MODIFY
                    | WatchFlags::ATTRIB
                    | WatchFlags::CLOSE_WRITE
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::MOVED_TO
                    | WatchFlags::DELETE
                    | WatchFlags::DELETE_SELF
                    | WatchFlags::MOVE_SELF
                    | WatchFlags::ONLYDIR
                    | WatchFlags::DONT_FOLLOW,
            );
            match added {
                Ok(wd) => drop(self.folders.insert(wd, folder.to_string())),
                // Gone or not a folder since it was listed: the listing says so.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {}
                Err(e) => {
                    tracing::warn!(folder, error = %e, "cannot watch a MobileApps folder: the next refresh checks every file");
                    self.broken = true;
                }
            }
        }

        /// Moves the events the kernel queued into the pending changes, so that its
        /// queue does not overflow between refreshes (called after each of sessiond's
        /// own writes, and by [`Watch::drain`]).
        pub(in crate::apps) fn absorb(&mut self) {
            if self.lost || self.broken {
                return; // the next refresh checks everything: nothing to keep
            }
            if let Err(e) = self.read_events() {
                tracing::warn!(error = %e, "reading MobileApps events failed: the next refresh checks every file");
                self.lost = true;
            }
            if self.lost {
                self.pending = Changed::new();
                self.names = 0;
            }
        }

        fn read_events(&mut self) -> std::io::Result<()> {
            let mut buf = std::mem::take(&mut self.buf);
            let read = self.read_events_into(&mut buf);
            self.buf = buf;
            read
        }

        fn read_events_into(&mut self, buf: &mut [MaybeUninit<u8>]) -> std::io::Result<()> {
            let mut events = inotify::Reader::new(&self.fd, buf);
            loop {
                let event = match events.next() {
                    Ok(event) => event,
                    Err(rustix::io::Errno::WOULDBLOCK) => return Ok(()),
                    Err(e) => return Err(e.into()),
                };
                let flags = event.events();
                // Names that are not UTF-8 are neither app folders nor session files
                // (a listing skips them too).
                let name = match event.file_name().map(|n| n.to_str()) {
                    Some(Ok(name)) => Some(name),
                    Some(Err(_)) => continue,
                    None => None,
                };
                if flags.contains(ReadFlags::QUEUE_OVERFLOW) || self.names > MAX_PENDING {
                    self.lost = true;
                    return Ok(());
                }
                if event.wd() == self.root {
                    match name {
                        Some(folder) => {
                            if self.pending.insert(folder.to_string(), None).is_none() {
                                self.names += 1;
                            }
                        }
                        // The root itself was removed, renamed or unmounted.
                        None => self.lost = true,
                    }
                    continue;
                }
                let Some(folder) = self.folders.get(&event.wd()).cloned() else {
                    continue; // a watch already removed
                };
                if let Some(name) = name {
                    if !is_session_file_name(name) {
                        continue; // sidecars, temporary files of atomic writes…
                    }
                    // Unless the whole folder is listed again anyway.
                    let entry = self.pending.entry(folder);
                    if let Some(names) = entry.or_insert_with(|| Some(HashSet::new()))
                        && names.insert(name.to_string())
                    {
                        self.names += 1;
                    }
                } else {
                    // The folder itself: removed, renamed (the watch would follow it
                    // under its new name), or its watch gone. Listed again, and watched
                    // anew under its name if it is still there.
                    if flags.contains(ReadFlags::MOVE_SELF) {
                        let _ = inotify::remove_watch(&self.fd, event.wd());
                    }
                    if flags.intersects(ReadFlags::MOVE_SELF | ReadFlags::IGNORED) {
                        self.folders.remove(&event.wd());
                    }
                    if self.pending.insert(folder, None).is_none() {
                        self.names += 1;
                    }
                }
            }
        }

        /// The changes since the last drain, or `None` when some may have been lost:
        /// then scan everything, with a new `Watch`.
        pub(in crate::apps) fn drain(&mut self) -> Option<Changed> {
            self.absorb();
            if self.lost || self.broken {
                return None;
            }
            // The path may lead elsewhere now, without an event on the folder watched.
            if identity(&self.root_path).ok() != Some(self.root_id) {
                return None;
            }
            self.names = 0;
            Some(std::mem::take(&mut self.pending))
        }
    }
}

/// Elsewhere, every refresh takes the metadata of every file.
#[cfg(not(target_os = "linux"))]
mod other {
    use std::path::Path;

    use super::Changed;

    pub(in crate::apps) enum Watch {}

    impl Watch {
        pub(in crate::apps) fn new(_: &Path) -> std::io::Result<Option<Self>> {
            Ok(None)
        }

        pub(in crate::apps) fn folder(&mut self, _: &Path, _: &str) {
            match *self {}
        }

        pub(in crate::apps) fn absorb(&mut self) {
            match *self {}
        }

        pub(in crate::apps) fn drain(&mut self) -> Option<Changed> {
            match *self {}
        }
    }
}
