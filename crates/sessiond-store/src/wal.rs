//! The embedded store's write-ahead log: each group of writes is appended as one
//! frame and made durable with one `fdatasync` before its writers are acknowledged;
//! a checkpoint writes what the log holds to the database in one synced commit and
//! lets the log start over. At open, the frames still in the log are applied again,
//! in order: every change is a whole row put or deleted, so applying one twice
//! changes nothing.
//!
//! A frame is `magic (4) | payload length (u32 LE) | generation (u64 LE) | payload |
//! CRC-32 of the generation and payload (u32 LE)`. The log is written from the start
//! of its file; each time it starts over it takes a new random generation and
//! overwrites the file in place, so the log is the frames from the start that carry
//! the first frame's generation. What follows them — zeros, or frames of earlier
//! generations — is not part of it, and neither is a frame cut short by a crash or
//! damaged: it was never acknowledged (its writers wait for the sync that follows
//! the whole frame). Starting over writes nothing: until a frame of the new
//! generation is synced, the old log is still the log, and applying it again over
//! the checkpoint that holds it changes nothing.
//!
//! The file is never shrunk, and it grows by zero-filled steps: overwriting blocks
//! that already exist lets each sync flush data alone, without a journal commit for
//! a new size or new blocks.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"SWAL";
/// Bytes of a frame around its payload.
const FRAMING: usize = 20;
/// The file grows by at least this much at a time.
const GROW: u64 = 4 << 20;

/// The row changes of one group, in order.
#[derive(Default)]
pub(crate) struct Changes(Vec<Change>);

impl Changes {
    /// `table[key] = value`.
    pub(crate) fn put(&mut self, table: u8, key: &[u8], value: Vec<u8>) {
        self.0.push((table, key.to_vec(), Some(value)));
    }

    /// `table[key]` removed.
    pub(crate) fn delete(&mut self, table: u8, key: &[u8]) {
        self.0.push((table, key.to_vec(), None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The frame payload: per change, the table (one byte), the key (length-prefixed),
    /// then `1` and the value (length-prefixed) for a put or `0` for a delete. Also,
    /// per change, where a put's value lies in the payload.
    fn encode(&self) -> (Vec<u8>, Vec<Option<(usize, u32)>>) {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) -> u32 {
            let len = u32::try_from(b.len()).expect("a row is far below 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(b);
            len
        }
        let mut out = Vec::new();
        let mut spans = Vec::with_capacity(self.0.len());
        for (table, key, value) in &self.0 {
            out.push(*table);
            bytes(&mut out, key);
            out.push(u8::from(value.is_some()));
            spans.push(value.as_ref().map(|v| (out.len() + 4, bytes(&mut out, v))));
        }
        (out, spans)
    }
}

/// Where a put's value lies in the log file, until the log starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    at: u64,
    len: u32,
}

impl Span {
    /// The value in `log` (what [`Wal::contents`] read); `None` if it lies outside.
    pub(crate) fn of(self, log: &[u8]) -> Option<&[u8]> {
        let at = usize::try_from(self.at).ok()?;
        log.get(at..)?.get(..usize::try_from(self.len).ok()?)
    }
}

/// One change as logged: table, key, and where the value of a put lies in the log
/// (`None`: a delete).
pub(crate) type Logged = (u8, Vec<u8>, Option<Span>);

/// One decoded change: table, key, the value of a put (`None`: a delete).
pub(crate) type Change = (u8, Vec<u8>, Option<Vec<u8>>);

/// Decodes a frame's payload; `None` if it is not a well-formed list of changes.
fn decode(mut p: &[u8]) -> Option<Vec<Change>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = p.split_at_checked(n)?;
        *p = tail;
        Some(head)
    }
    fn bytes(p: &mut &[u8]) -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(take(p, 4)?.try_into().ok()?);
        Some(take(p, usize::try_from(len).ok()?)?.to_vec())
    }
    let mut out = Vec::new();
    while !p.is_empty() {
        let table = take(&mut p, 1)?[0];
        let key = bytes(&mut p)?;
        let value = match take(&mut p, 1)?[0] {
            1 => Some(bytes(&mut p)?),
            0 => None,
            _ => return None,
        };
        out.push((table, key, value));
    }
    Some(out)
}

/// The log file beside the database (`<database>.wal`, private).
pub(crate) struct Wal {
    file: File,
    /// The generation of the frames of the current log.
    generation: u64,
    /// The end of the log: where the next frame goes.
    end: u64,
    /// The file's size (what lies between `end` and it is not part of the log).
    size: u64,
}

impl Wal {
    /// The log of the database at `db`.
    pub(crate) fn path(db: &Path) -> PathBuf {
        let mut p = db.as_os_str().to_owned();
        p.push(".wal");
        PathBuf::from(p)
    }

    /// Opens (or creates) the log of the database at `db`, empty: call it once what
    /// [`Wal::read`] returned is in the database.
    pub(crate) fn open(db: &Path) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true);
        let file = crate::fs::open_private(&options, &Self::path(db))?;
        let size = file.metadata()?.len();
        Ok(Self {
            file,
            generation: new_generation(),
            end: 0,
            size,
        })
    }

    /// The changes of the log of `db`, in order (none when there is no log).
    pub(crate) fn read(db: &Path) -> std::io::Result<Vec<Change>> {
        let mut bytes = Vec::new();
        match File::open(Self::path(db)) {
            Ok(mut f) => f.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut rest = bytes.as_slice();
        let mut out = Vec::new();
        let mut generation = None;
        while let Some((g, changes, tail)) = frame(rest) {
            if *generation.get_or_insert(g) != g {
                break;
            }
            out.extend(changes);
            rest = tail;
        }
        let torn = generation.is_some_and(|g| {
            rest.starts_with(MAGIC) && rest.get(8..16) == Some(g.to_le_bytes().as_slice())
        });
        if torn {
            tracing::warn!(
                "the write-ahead log ends with an incomplete frame (a write cut short by a crash, never acknowledged): ignored"
            );
        }
        Ok(out)
    }

    /// Appends one frame and syncs it: when this returns, the changes survive a crash.
    /// Returns them with where each put's value lies in the log.
    pub(crate) fn append(&mut self, changes: Changes) -> std::io::Result<Vec<Logged>> {
        let (payload, spans) = changes.encode();
        let payload = &payload;
        let payload_at = self.end + 16;
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(payload.len() + FRAMING);
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&self.generation.to_le_bytes());
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&checksum(self.generation, payload).to_le_bytes());
        let end = self.end + frame.len() as u64;
        if end > self.size {
            // Zeros first, so that the next frames overwrite blocks that exist.
            let size = end.max(self.size + GROW);
            let zeros = vec![0; usize::try_from(size - self.size).map_err(std::io::Error::other)?];
            self.file.write_all_at(&zeros, self.size)?;
            self.size = size;
        }
        self.file.write_all_at(&frame, self.end)?;
        self.file.sync_data()?;
        self.end = end;
        Ok(changes
            .0
            .into_iter()
            .zip(spans)
            .map(|((table, key, _), span)| {
                let span = span.map(|(at, len)| Span {
                    at: payload_at + at as u64,
                    len,
                });
                (table, key, span)
            })
            .collect())
    }

    /// The log as written so far: where [`Span`]s point.
    pub(crate) fn contents(&self) -> std::io::Result<Vec<u8>> {
        let mut log = vec![0; usize::try_from(self.end).map_err(std::io::Error::other)?];
        self.file.read_exact_at(&mut log, 0)?;
        Ok(log)
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.end
    }

    /// Starts the log over (once a synced commit of the database holds everything in
    /// it): the next frame is written at the start of the file, in a new generation.
    pub(crate) fn clear(&mut self) {
        self.generation = new_generation();
        self.end = 0;
    }
}

/// A random generation: no frame of an earlier log carries it.
fn new_generation() -> u64 {
    u64::from_le_bytes(sessiond_core::id::random_bytes())
}

fn checksum(generation: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The generation and changes of the frame at the start of `bytes`, and what follows
/// it; `None` at zeros or at a frame that is cut short or damaged.
fn frame(bytes: &[u8]) -> Option<(u64, Vec<Change>, &[u8])> {
    let (magic, rest) = bytes.split_at_checked(4)?;
    if magic != MAGIC {
        return None;
    }
    let (len, rest) = rest.split_at_checked(4)?;
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (generation, rest) = rest.split_at_checked(8)?;
    let generation = u64::from_le_bytes(generation.try_into().ok()?);
    let (payload, rest) = rest.split_at_checked(len)?;
    let (crc, rest) = rest.split_at_checked(4)?;
    if checksum(generation, payload).to_le_bytes() != crc {
        return None;
    }
    Some((generation, decode(payload)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u8) -> Changes {
        let mut c = Changes::default();
        c.put(0, &[n; 16], format!("record {n}").into_bytes());
        c.delete(1, &[n; 32]);
        c
    }

    #[test]
    fn frames_read_back_in_order_and_a_cut_or_damaged_tail_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sessions.redb");
        assert!(Wal::read(&db).unwrap().is_empty(), "no log yet");
        let mut wal = Wal::open(&db).unwrap();
        for n in 0..3 {
            wal.append(group(n)).unwrap();
        }
        let all = Wal::read(&db).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], (0, vec![0; 16], Some(b"record 0".to_vec())));
        // Each put's span points at its value in the log.
        let logged = wal.append(group(3)).unwrap();
        let log = wal.contents().unwrap();
        assert_eq!(logged[0].2.unwrap().of(&log), Some(b"record 3".as_slice()));
        assert_eq!(
            (logged[1].0, &logged[1].1, logged[1].2),
            (1, &vec![3; 32], None)
        );
        let mut wal = Wal::open(&db).unwrap();
        for n in 0..3 {
            wal.append(group(n)).unwrap();
        }
        assert_eq!(all[5], (1, vec![2; 32], None));
        let full = std::fs::read(Wal::path(&db)).unwrap();
        assert!(
            full.len() as u64 >= GROW,
            "the file grows by zero-filled steps"
        );
        // Any cut inside the last frame drops that frame only (the three are the
        // same size).
        let used = usize::try_from(wal.len()).unwrap();
        let third = used - (used / 3);
        for cut in third..used {
            std::fs::write(Wal::path(&db), &full[..cut]).unwrap();
            assert_eq!(Wal::read(&db).unwrap().len(), 4, "cut at {cut}");
        }
        // A flipped bit in the second frame ends the log there.
        let mut damaged = full.clone();
        damaged[third - 3] ^= 1;
        std::fs::write(Wal::path(&db), &damaged).unwrap();
        assert_eq!(Wal::read(&db).unwrap().len(), 2);
    }

    #[test]
    fn a_log_started_over_is_overwritten_in_place_and_ends_at_its_own_frames() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sessions.redb");
        let mut wal = Wal::open(&db).unwrap();
        for n in 0..3 {
            wal.append(group(n)).unwrap();
        }
        let size = std::fs::metadata(Wal::path(&db)).unwrap().len();
        wal.clear();
        assert_eq!(wal.len(), 0);
        // Until a frame of the new log is synced, the old one is still read (applying
        // it again over the checkpoint that holds it changes nothing).
        assert_eq!(Wal::read(&db).unwrap().len(), 6);
        wal.append(group(9)).unwrap();
        let all = Wal::read(&db).unwrap();
        assert_eq!(
            all.len(),
            2,
            "the old frames after it are not part of the log"
        );
        assert_eq!(all[0].1, vec![9; 16]);
        assert_eq!(
            std::fs::metadata(Wal::path(&db)).unwrap().len(),
            size,
            "overwritten in place"
        );
        // Reopened (a restart), the log starts over in another generation.
        drop(wal);
        let mut wal = Wal::open(&db).unwrap();
        assert_eq!(Wal::read(&db).unwrap().len(), 2);
        wal.append(group(7)).unwrap();
        let all = Wal::read(&db).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1, vec![7; 16]);
    }
}
