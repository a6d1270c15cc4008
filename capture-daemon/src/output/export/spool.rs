//! The disk spool (`--spool-dir`, `--spool-max-bytes`): batches the collector has not
//! acknowledged yet, kept on disk so a collector outage, or a daemon restart during one, loses
//! nothing.
//!
//! Layout: one file per batch, `<instance_id>-<sequence as 16 hex digits>.batch`. Instance ids
//! start with the run's start time in hex, so file names sort in the order the batches were
//! formed, across runs. A file is a 24-byte header (magic `CAPSPL01`, exchange count, payload
//! length, CRC-32 of the payload, all little-endian `u32`, then 4 zero bytes) followed by the
//! encoded `ExchangeBatch`. Files are written to a temporary name, fsynced, renamed into place
//! and the directory fsynced, so a crash leaves either the whole batch or no file; temporary
//! files left by a crash are removed at start-up. A batch file is removed only once the
//! collector acknowledged the batch.
//!
//! Cap: the sum of the file sizes stays at or below `--spool-max-bytes`. A batch that does not
//! fit is not written (the newest data is dropped, counted as `spool_full`): what the spool
//! holds is never deleted to make room, so the loss is one stretch at the end of an outage,
//! and what was written is delivered in order. Files from a previous run count against the
//! cap; if they exceed it (the cap was lowered) they are kept and sent, and nothing new is
//! written until they are.
//!
//! One daemon per directory: the spool holds an exclusive `flock` on `<dir>/lock`.

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use nix::fcntl::{Flock, FlockArg};

use super::batch::{BatchId, EncodedBatch};

const MAGIC: &[u8; 8] = b"CAPSPL01";
pub const HEADER_LEN: u64 = 24;
const SUFFIX: &str = ".batch";
const TMP_PREFIX: &str = ".tmp-";
/// Spooled batches are captured traffic: readable by the daemon's user only.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is in use by another capture-daemon", path.display())]
    Locked { path: PathBuf },
    #[error("the spool is full ({bytes} of {max} bytes used)")]
    Full { bytes: u64, max: u64 },
}

/// A spooled batch could not be read back; its file is removed.
#[derive(Debug, thiserror::Error)]
#[error("spooled batch {}: {reason}", path.display())]
pub struct CorruptBatch {
    pub path: PathBuf,
    pub reason: String,
    /// Exchanges the header declares (1 when the header itself is unreadable).
    pub exchanges: u32,
}

#[derive(Clone, Debug)]
struct Entry {
    id: BatchId,
    file_name: String,
    size: u64,
}

/// Batches on disk, oldest first.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    entries: VecDeque<Entry>,
    bytes: u64,
    _lock: Flock<File>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The file name of a batch.
pub fn file_name(id: &BatchId) -> String {
    format!("{}-{:016x}{SUFFIX}", id.instance_id, id.sequence)
}

fn parse_file_name(name: &str) -> Option<BatchId> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (instance, seq) = stem.rsplit_once('-')?;
    if instance.is_empty()
        || !instance.bytes().all(|b| b.is_ascii_alphanumeric())
        || seq.len() != 16
    {
        return None;
    }
    Some(BatchId {
        instance_id: Arc::from(instance),
        sequence: u64::from_str_radix(seq, 16).ok()?,
    })
}

impl Spool {
    /// Opens (creating it, mode 0700) the spool directory, locks it, removes temporary files a
    /// crash left, and lists the batches it holds.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, SpoolError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_err(dir))?;
        let lock_path = dir.join("lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                SpoolError::Locked {
                    path: dir.to_owned(),
                }
            } else {
                SpoolError::Io {
                    path: lock_path.clone(),
                    source: e.into(),
                }
            }
        })?;
        let mut entries = Vec::new();
        for dirent in fs::read_dir(dir).map_err(io_err(dir))? {
            let dirent = dirent.map_err(io_err(dir))?;
            let Ok(name) = dirent.file_name().into_string() else {
                continue;
            };
            if name.starts_with(TMP_PREFIX) {
                let path = dir.join(&name);
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let Some(id) = parse_file_name(&name) else {
                continue;
            };
            let size = dirent.metadata().map_err(io_err(&dir.join(&name)))?.len();
            entries.push(Entry {
                id,
                file_name: name,
                size,
            });
        }
        entries.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        let bytes = entries.iter().map(|e| e.size).sum();
        Ok(Self {
            dir: dir.to_owned(),
            max_bytes,
            entries: entries.into(),
            bytes,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest batch's id.
    pub fn front(&self) -> Option<&BatchId> {
        self.entries.front().map(|e| &e.id)
    }

    pub fn contains(&self, id: &BatchId) -> bool {
        self.entries.iter().any(|e| e.id == *id)
    }

    /// Writes `batch` durably, unless it would take the spool past its cap.
    pub fn push(&mut self, batch: &EncodedBatch) -> Result<(), SpoolError> {
        let size = HEADER_LEN + batch.len();
        if self.bytes + size > self.max_bytes {
            return Err(SpoolError::Full {
                bytes: self.bytes,
                max: self.max_bytes,
            });
        }
        let name = file_name(&batch.id);
        let tmp = self.dir.join(format!("{TMP_PREFIX}{name}"));
        let path = self.dir.join(&name);
        let write = || -> io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(FILE_MODE)
                .open(&tmp)?;
            file.write_all(&header(batch))?;
            file.write_all(&batch.bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable once the directory is.
            File::open(&self.dir)?.sync_all()
        };
        if let Err(source) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(SpoolError::Io { path, source });
        }
        // Keep the order by name: a batch of the current run always sorts last, but a retried
        // write after an error may not.
        let at = self
            .entries
            .iter()
            .position(|e| e.file_name > name)
            .unwrap_or(self.entries.len());
        self.entries.insert(
            at,
            Entry {
                id: batch.id.clone(),
                file_name: name,
                size,
            },
        );
        self.bytes += size;
        Ok(())
    }

    /// The batches held, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = &BatchId> {
        self.entries.iter().map(|e| &e.id)
    }

    /// Reads the oldest batch back. A batch that fails its checks is removed and reported.
    pub fn read_front(&mut self) -> Option<Result<EncodedBatch, CorruptBatch>> {
        let id = self.entries.front()?.id.clone();
        self.read(&id)
    }

    /// Reads a batch back. A batch that fails its checks is removed and reported.
    pub fn read(&mut self, id: &BatchId) -> Option<Result<EncodedBatch, CorruptBatch>> {
        let entry = self.entries.iter().find(|e| e.id == *id)?.clone();
        let path = self.dir.join(&entry.file_name);
        let result = read_batch(&path, &entry.id);
        if result.is_err() {
            self.remove(&entry.id);
        }
        Some(result)
    }

    /// Removes a batch (acknowledged, or unreadable). Returns whether it was here.
    pub fn remove(&mut self, id: &BatchId) -> bool {
        let Some(at) = self.entries.iter().position(|e| e.id == *id) else {
            return false;
        };
        let Some(entry) = self.entries.remove(at) else {
            return false;
        };
        self.bytes = self.bytes.saturating_sub(entry.size);
        // A file that outlives its acknowledgement (the unlink failed, or a crash came first)
        // is sent again later and stored once: the collector deduplicates.
        if let Err(e) = fs::remove_file(self.dir.join(&entry.file_name))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = entry.file_name, error = %e, "cannot remove an acknowledged spool file");
        }
        true
    }
}

fn header(batch: &EncodedBatch) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&batch.exchanges.to_le_bytes());
    let len = u32::try_from(batch.bytes.len()).unwrap_or(u32::MAX);
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h[16..20].copy_from_slice(&crc32fast::hash(&batch.bytes).to_le_bytes());
    h
}

fn read_batch(path: &Path, id: &BatchId) -> Result<EncodedBatch, CorruptBatch> {
    let corrupt = |reason: String, exchanges: u32| CorruptBatch {
        path: path.to_owned(),
        reason,
        exchanges,
    };
    let mut file = File::open(path).map_err(|e| corrupt(e.to_string(), 1))?;
    let mut head = [0u8; HEADER_LEN as usize];
    file.read_exact(&mut head)
        .map_err(|e| corrupt(format!("header: {e}"), 1))?;
    if &head[..8] != MAGIC {
        return Err(corrupt("not a spool file (bad magic)".into(), 1));
    }
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let exchanges = word(8).max(1);
    let len = word(12) as usize;
    let crc = word(16);
    let mut payload = Vec::with_capacity(len);
    file.read_to_end(&mut payload)
        .map_err(|e| corrupt(e.to_string(), exchanges))?;
    if payload.len() != len {
        return Err(corrupt(
            format!("{} payload bytes, header says {len}", payload.len()),
            exchanges,
        ));
    }
    if crc32fast::hash(&payload) != crc {
        return Err(corrupt("checksum mismatch".into(), exchanges));
    }
    Ok(EncodedBatch {
        id: id.clone(),
        exchanges: word(8),
        bytes: Bytes::from(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(instance: &str, sequence: u64, len: usize) -> EncodedBatch {
        EncodedBatch {
            id: BatchId {
                instance_id: Arc::from(instance),
                sequence,
            },
            exchanges: 3,
            bytes: Bytes::from(vec![sequence as u8; len]),
        }
    }

    #[test]
    fn batches_survive_a_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
            spool.push(&batch("0190b", 2, 10)).unwrap();
            spool.push(&batch("0190b", 1, 10)).unwrap();
            spool.push(&batch("0190a", 9, 10)).unwrap();
            assert_eq!(spool.bytes(), 3 * (HEADER_LEN + 10));
            // A crash mid-write leaves a temporary file.
            fs::write(
                dir.path().join(".tmp-0190c-0000000000000001.batch"),
                b"half",
            )
            .unwrap();
            fs::write(dir.path().join("README"), b"not ours").unwrap();
        }
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.len(), 3);
        assert!(
            !dir.path()
                .join(".tmp-0190c-0000000000000001.batch")
                .exists()
        );
        assert!(dir.path().join("README").exists());
        let mut order = Vec::new();
        while let Some(b) = spool.read_front() {
            let b = b.unwrap();
            assert_eq!(b.exchanges, 3);
            assert_eq!(&b.bytes[..], &vec![b.id.sequence as u8; 10][..]);
            order.push(b.id.to_string());
            assert!(spool.remove(&b.id));
        }
        assert_eq!(order, ["0190a/9", "0190b/1", "0190b/2"]);
        assert_eq!(spool.bytes(), 0);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "lock and README left"
        );
    }

    #[test]
    fn cap_refuses_the_newest_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 2 * (HEADER_LEN + 100)).unwrap();
        spool.push(&batch("a", 1, 100)).unwrap();
        spool.push(&batch("a", 2, 100)).unwrap();
        assert!(matches!(
            spool.push(&batch("a", 3, 1)),
            Err(SpoolError::Full { .. })
        ));
        assert_eq!(spool.len(), 2);
        assert!(spool.remove(&batch("a", 1, 0).id));
        spool.push(&batch("a", 3, 100)).unwrap();
    }

    #[test]
    fn one_daemon_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Spool::open(dir.path(), 1000).unwrap();
        assert!(matches!(
            Spool::open(dir.path(), 1000),
            Err(SpoolError::Locked { .. })
        ));
    }

    #[test]
    fn corrupt_files_are_reported_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        let b = batch("a", 1, 50);
        spool.push(&b).unwrap();
        spool.push(&batch("a", 2, 50)).unwrap();
        let path = dir.path().join(file_name(&b.id));
        let mut bytes = fs::read(&path).unwrap();
        bytes[30] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let err = spool.read_front().unwrap().unwrap_err();
        assert!(err.reason.contains("checksum"), "{err}");
        assert_eq!(err.exchanges, 3);
        assert!(!path.exists());
        assert_eq!(spool.read_front().unwrap().unwrap().id.sequence, 2);
    }

    #[test]
    fn file_names_round_trip() {
        let id = BatchId {
            instance_id: Arc::from("0190abc0123456789abcdef"),
            sequence: 0x1234,
        };
        assert_eq!(parse_file_name(&file_name(&id)), Some(id));
        assert_eq!(parse_file_name("x-12.batch"), None);
        assert_eq!(parse_file_name("../x-0000000000000001.batch"), None);
    }
}
