//! The embedded store's write-ahead log: each group of writes is appended as one
//! frame and made durable with one `fdatasync` before its writers are acknowledged;
//! a checkpoint writes what the log holds to the database in one synced commit and
//! lets the log start over. At open, the
//! frames still in the log are applied again, in order: every change is a whole row
//! put or deleted, so applying one twice changes nothing.
//!
//! A frame is `magic (4) | payload length (u32 LE) | payload | CRC-32 of the payload
//! (u32 LE)`. A frame cut short by a crash, or damaged, ends the log: it was never
//! acknowledged (its writers wait for the sync that follows the whole frame).

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"SWAL";

/// The row changes of one group, in order.
#[derive(Default)]
pub(crate) struct Changes(Vec<Change>);

impl Changes {
    /// `table[key] = value`.
    pub(crate) fn put(&mut self, table: u8, key: &[u8], value: &[u8]) {
        self.0.push((table, key.to_vec(), Some(value.to_vec())));
    }

    /// `table[key]` removed.
    pub(crate) fn delete(&mut self, table: u8, key: &[u8]) {
        self.0.push((table, key.to_vec(), None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The changes, emptying this.
    pub(crate) fn take(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.0)
    }

    /// The frame payload: per change, the table (one byte), the key (length-prefixed),
    /// then `1` and the value (length-prefixed) for a put or `0` for a delete.
    fn encode(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            let len = u32::try_from(b.len()).expect("a row is far below 4 GiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(b);
        }
        let mut out = Vec::new();
        for (table, key, value) in &self.0 {
            out.push(*table);
            bytes(&mut out, key);
            match value {
                Some(v) => {
                    out.push(1);
                    bytes(&mut out, v);
                }
                None => out.push(0),
            }
        }
        out
    }
}

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
    /// Bytes written since the log was last emptied.
    len: u64,
}

impl Wal {
    /// The log of the database at `db`.
    pub(crate) fn path(db: &Path) -> PathBuf {
        let mut p = db.as_os_str().to_owned();
        p.push(".wal");
        PathBuf::from(p)
    }

    /// Opens (or creates) the log of the database at `db`, to append.
    pub(crate) fn open(db: &Path) -> std::io::Result<Self> {
        let file = crate::fs::open_private_append(&Self::path(db))?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }

    /// The changes of every whole, intact frame of the log of `db`, in order (none
    /// when there is no log).
    pub(crate) fn read(db: &Path) -> std::io::Result<Vec<Change>> {
        let mut bytes = Vec::new();
        match File::open(Self::path(db)) {
            Ok(mut f) => f.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut rest = bytes.as_slice();
        let mut out = Vec::new();
        while let Some((changes, tail)) = frame(rest) {
            out.extend(changes);
            rest = tail;
        }
        if !rest.is_empty() {
            tracing::warn!(
                bytes = rest.len(),
                "the end of the write-ahead log is incomplete (a write cut short by a crash, never acknowledged): ignored"
            );
        }
        Ok(out)
    }

    /// Appends one frame and syncs it: when this returns, the changes survive a crash.
    pub(crate) fn append(&mut self, changes: &Changes) -> std::io::Result<()> {
        let payload = &changes.encode();
        let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
        let mut frame = Vec::with_capacity(payload.len() + 12);
        frame.extend_from_slice(MAGIC);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(payload);
        frame.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.file.write_all(&frame)?;
        self.file.sync_data()?;
        self.len += frame.len() as u64;
        Ok(())
    }

    /// Bytes in the log.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the log (after a synced commit of the database holds everything in it).
    pub(crate) fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        Ok(())
    }
}

/// The changes of the frame at the start of `bytes`, and what follows it; `None` at
/// the end of the log or at a frame that is cut short or damaged.
fn frame(bytes: &[u8]) -> Option<(Vec<Change>, &[u8])> {
    let (magic, rest) = bytes.split_at_checked(4)?;
    if magic != MAGIC {
        return None;
    }
    let (len, rest) = rest.split_at_checked(4)?;
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (payload, rest) = rest.split_at_checked(len)?;
    let (crc, rest) = rest.split_at_checked(4)?;
    if crc32fast::hash(payload).to_le_bytes() != crc {
        return None;
    }
    Some((decode(payload)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: u8) -> Changes {
        let mut c = Changes::default();
        c.put(0, &[n; 16], format!("record {n}").as_bytes());
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
            wal.append(&group(n)).unwrap();
        }
        let all = Wal::read(&db).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(all[0], (0, vec![0; 16], Some(b"record 0".to_vec())));
        assert_eq!(all[5], (1, vec![2; 32], None));
        let full = std::fs::read(Wal::path(&db)).unwrap();
        // Any cut inside the last frame drops that frame only.
        let third = full.len() - (full.len() / 3);
        for cut in third..full.len() {
            std::fs::write(Wal::path(&db), &full[..cut]).unwrap();
            assert_eq!(Wal::read(&db).unwrap().len(), 4, "cut at {cut}");
        }
        // A flipped bit in the second frame ends the log there.
        let mut damaged = full.clone();
        damaged[third - 3] ^= 1;
        std::fs::write(Wal::path(&db), &damaged).unwrap();
        assert_eq!(Wal::read(&db).unwrap().len(), 2);
        // Emptied, it starts over.
        std::fs::write(Wal::path(&db), &full).unwrap();
        let mut wal = Wal::open(&db).unwrap();
        assert_eq!(wal.len(), full.len() as u64);
        wal.clear().unwrap();
        wal.append(&group(9)).unwrap();
        assert_eq!(Wal::read(&db).unwrap()[0].1, vec![9; 16]);
    }
}
