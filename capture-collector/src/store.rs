//! Durable storage, one directory per organisation, of append-only segment files.
//!
//! ```text
//! DIR/orgs/<org>/00000000000000000001.seg
//! segment := header record*
//! header  := "CAPSEG01" flags:u32le reserved:u32le        (flags bit 0: records are sealed)
//! record  := length:u32le crc32(payload):u32le payload
//! payload := ExchangeBatch (protobuf)                         plain
//!          | nonce | ChaCha20-Poly1305(ExchangeBatch) | tag  sealed (see `seal`)
//! ```
//!
//! One record is one acknowledged batch. A batch is acknowledged only after its record is
//! written and the segment is `fdatasync`ed; concurrent pushes of an organisation share one
//! fsync (group commit on the organisation's writer thread). A segment is closed for writing
//! once the next record would take it past `--segment-bytes`; the new segment and its directory
//! entry are fsynced before a record goes in.
//!
//! At start-up every segment is read back to rebuild the deduplication index (daemon id,
//! instance id, sequence). A record cut short or failing its checksum at the end of the last
//! segment is what a crash mid-write leaves: it was never acknowledged, so it is cut off,
//! counted and logged, and the daemon's retry stores it again. The same damage anywhere else
//! means the disk lost acknowledged data: the collector refuses to start and names the file
//! and offset.
//!
//! Readers (`export`) open the segments read-only while the server runs, and stop quietly at
//! a partial record at the very end (a write in flight).

use std::{
    collections::{BTreeSet, HashMap},
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use capture_proto::v1::ExchangeBatch;
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::{
    metrics::Metrics,
    org::OrgName,
    seal::{self, SealKey},
};

const SEGMENT_MAGIC: &[u8; 8] = b"CAPSEG01";
pub const SEGMENT_HEADER_LEN: u64 = 16;
pub const RECORD_HEADER_LEN: u64 = 8;
const FLAG_SEALED: u32 = 1;
/// Requests one fsync may cover.
const GROUP_MAX: usize = 256;
/// Pushes queued per organisation before senders wait.
const QUEUE: usize = 1024;

/// The key a batch is deduplicated by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchId {
    pub daemon_id: String,
    pub instance_id: String,
    pub sequence: u64,
}

/// The leading fields of an `ExchangeBatch`, decoded without its exchanges (prost skips them).
#[derive(Clone, PartialEq, prost::Message)]
struct BatchKey {
    #[prost(string, tag = "1")]
    daemon_id: String,
    #[prost(string, tag = "2")]
    instance_id: String,
    #[prost(uint64, tag = "3")]
    sequence: u64,
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: Arc<io::Error>,
    },
    #[error("{} at byte {offset}: {reason}; the store is damaged, not merely cut short", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("storage failed earlier ({0}); restart the collector to recover")]
    Poisoned(String),
    #[error("the store is shutting down")]
    Closed,
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appended {
    /// Written and fsynced: `bytes` went to disk (record with framing).
    Stored { bytes: u64 },
    /// Stored before; nothing written.
    Duplicate,
}

/// Sequences seen for one daemon run: all of `1..=through`, and those in `beyond`.
#[derive(Default)]
struct SeenSequences {
    through: u64,
    beyond: BTreeSet<u64>,
}

/// Batches stored, by daemon run. Sequences arrive mostly in order, so a run costs a counter
/// and the few out-of-order sequences above it.
#[derive(Default)]
struct DedupIndex {
    runs: HashMap<(String, String), SeenSequences>,
}

impl DedupIndex {
    fn contains(&self, id: &BatchId) -> bool {
        self.runs
            .get(&(id.daemon_id.clone(), id.instance_id.clone()))
            .is_some_and(|seen| id.sequence <= seen.through || seen.beyond.contains(&id.sequence))
    }

    fn insert(&mut self, id: &BatchId) {
        let seen = self
            .runs
            .entry((id.daemon_id.clone(), id.instance_id.clone()))
            .or_default();
        if id.sequence <= seen.through {
            return;
        }
        seen.beyond.insert(id.sequence);
        while seen.beyond.remove(&(seen.through + 1)) {
            seen.through += 1;
        }
    }
}

/// The associated data a record is sealed with: its organisation and place.
fn record_aad(org: &str, segment: u64, offset: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(org.len() + 17);
    aad.extend_from_slice(org.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&segment.to_le_bytes());
    aad.extend_from_slice(&offset.to_le_bytes());
    aad
}

pub fn orgs_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("orgs")
}

fn segment_path(org_dir: &Path, number: u64) -> PathBuf {
    org_dir.join(format!("{number:020}.seg"))
}

/// The segments of an organisation directory, in order. Other files are ignored.
pub fn list_segments(org_dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let entries = match fs::read_dir(org_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(org_dir, e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(org_dir, e))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push((number, entry.path()));
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Whether any organisation has a segment (decides whether a key may be applied).
pub fn has_data(data_dir: &Path) -> Result<bool, StoreError> {
    let dir = orgs_dir(data_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
        if !list_segments(&entry.path())?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// One frame read from a segment.
enum Frame {
    Record {
        offset: u64,
        payload: Vec<u8>,
    },
    /// Cut short or failing its checksum at `offset`.
    Torn {
        offset: u64,
        reason: &'static str,
    },
}

/// Reads the records of one segment in order.
struct SegmentReader {
    file: BufReader<File>,
    path: PathBuf,
    len: u64,
    offset: u64,
    sealed: bool,
}

enum Opened {
    Reader(SegmentReader),
    /// Shorter than a header, or a header that is not ours.
    BadHeader(&'static str),
}

impl SegmentReader {
    fn open(path: &Path) -> Result<Opened, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
        let len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
        let mut file = BufReader::with_capacity(256 * 1024, file);
        if len < SEGMENT_HEADER_LEN {
            return Ok(Opened::BadHeader("segment header cut short"));
        }
        let mut header = [0_u8; 16];
        file.read_exact(&mut header)
            .map_err(|e| StoreError::io(path, e))?;
        if &header[..8] != SEGMENT_MAGIC {
            return Ok(Opened::BadHeader("not a segment header"));
        }
        let flags = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        Ok(Opened::Reader(Self {
            file,
            path: path.to_owned(),
            len,
            offset: SEGMENT_HEADER_LEN,
            sealed: flags & FLAG_SEALED != 0,
        }))
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, StoreError> {
        let offset = self.offset;
        let left = self.len - offset;
        if left == 0 {
            return Ok(None);
        }
        if left < RECORD_HEADER_LEN {
            return Ok(Some(Frame::Torn {
                offset,
                reason: "record header cut short",
            }));
        }
        let mut header = [0_u8; 8];
        self.file
            .read_exact(&mut header)
            .map_err(|e| StoreError::io(&self.path, e))?;
        let length = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if length > left - RECORD_HEADER_LEN {
            return Ok(Some(Frame::Torn {
                offset,
                reason: "record cut short",
            }));
        }
        let mut payload = vec![0_u8; usize::try_from(length).unwrap_or(usize::MAX)];
        self.file
            .read_exact(&mut payload)
            .map_err(|e| StoreError::io(&self.path, e))?;
        if crc32fast::hash(&payload) != crc {
            return Ok(Some(Frame::Torn {
                offset,
                reason: "record checksum mismatch",
            }));
        }
        self.offset = offset + RECORD_HEADER_LEN + length;
        Ok(Some(Frame::Record { offset, payload }))
    }
}

/// Opens a record's payload: the plaintext `ExchangeBatch` bytes.
fn open_payload<'a>(
    key: Option<&SealKey>,
    sealed: bool,
    org: &str,
    segment: u64,
    path: &Path,
    offset: u64,
    payload: &'a mut [u8],
) -> Result<&'a [u8], StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.to_owned(),
    };
    match (key, sealed) {
        (None, false) => Ok(payload),
        (Some(key), true) => key
            .open(&record_aad(org, segment, offset), payload)
            .map_err(|e| corrupt(&e.to_string())),
        (None, true) => Err(corrupt("the segment is encrypted and no key was given")),
        (Some(_), false) => Err(corrupt("the segment is not encrypted but a key was given")),
    }
}

/// Calls `visit` with every batch stored for `org`, in storage order. Read-only: a partial
/// record at the end of the last segment (a write in flight, or a crash the server has not
/// recovered yet) ends the reading quietly.
pub fn read_batches(
    data_dir: &Path,
    org: &OrgName,
    key: Option<&SealKey>,
    mut visit: impl FnMut(ExchangeBatch) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let org_dir = orgs_dir(data_dir).join(org.as_str());
    let segments = list_segments(&org_dir)?;
    let last = segments.len().saturating_sub(1);
    for (i, (number, path)) in segments.iter().enumerate() {
        let mut reader = match SegmentReader::open(path)? {
            Opened::Reader(reader) => reader,
            Opened::BadHeader(_) if i == last => return Ok(()),
            Opened::BadHeader(reason) => {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: reason.to_owned(),
                });
            }
        };
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Record {
                    offset,
                    mut payload,
                } => {
                    let plain = open_payload(
                        key,
                        reader.sealed,
                        org.as_str(),
                        *number,
                        path,
                        offset,
                        &mut payload,
                    )?;
                    let batch = ExchangeBatch::decode(plain).map_err(|e| StoreError::Corrupt {
                        path: path.clone(),
                        offset,
                        reason: format!("record does not decode: {e}"),
                    })?;
                    visit(batch)?;
                }
                Frame::Torn { .. } if i == last => return Ok(()),
                Frame::Torn { offset, reason } => {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        offset,
                        reason: reason.to_owned(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The writing side of one organisation's store, owned by its writer thread.
struct OrgWriter {
    org: OrgName,
    dir: PathBuf,
    key: Option<Arc<SealKey>>,
    segment_bytes: u64,
    file: File,
    path: PathBuf,
    number: u64,
    len: u64,
    index: DedupIndex,
    /// Set when a write or fsync failed: nothing more is accepted until a restart recovers.
    poisoned: Option<String>,
    record: Vec<u8>,
    metrics: Arc<Metrics>,
}

impl OrgWriter {
    /// Opens (creating if needed) the organisation's directory, reads every segment back into
    /// the dedup index, and cuts a torn record off the end of the last segment.
    fn open(
        data_dir: &Path,
        org: OrgName,
        key: Option<Arc<SealKey>>,
        segment_bytes: u64,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let dir = orgs_dir(data_dir).join(org.as_str());
        create_dir(&orgs_dir(data_dir))?;
        create_dir(&dir)?;
        let mut segments = list_segments(&dir)?;
        let mut index = DedupIndex::default();
        let mut records = 0_u64;
        let last = segments.len().saturating_sub(1);
        let mut drop_last = false;
        for (i, (number, path)) in segments.iter().enumerate() {
            let mut reader = match SegmentReader::open(path)? {
                Opened::Reader(reader) => reader,
                Opened::BadHeader(reason) if i == last => {
                    // A crash while the segment was being created: it holds no record.
                    warn!(org = %org, path = %path.display(), reason, "removing a segment torn at creation");
                    fs::remove_file(path).map_err(|e| StoreError::io(path, e))?;
                    sync_dir(&dir)?;
                    Metrics::add(&metrics.torn_records, 1);
                    drop_last = true;
                    continue;
                }
                Opened::BadHeader(reason) => {
                    return Err(StoreError::Corrupt {
                        path: path.clone(),
                        offset: 0,
                        reason: reason.to_owned(),
                    });
                }
            };
            if reader.sealed != key.is_some() {
                return Err(StoreError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    reason: if reader.sealed {
                        "the segment is encrypted and no key was given".into()
                    } else {
                        "the segment is not encrypted but a key was given".into()
                    },
                });
            }
            while let Some(frame) = reader.next_frame()? {
                match frame {
                    Frame::Record {
                        offset,
                        mut payload,
                    } => {
                        let plain = open_payload(
                            key.as_deref(),
                            reader.sealed,
                            org.as_str(),
                            *number,
                            path,
                            offset,
                            &mut payload,
                        )?;
                        let k = BatchKey::decode(plain).map_err(|e| StoreError::Corrupt {
                            path: path.clone(),
                            offset,
                            reason: format!("record does not decode: {e}"),
                        })?;
                        index.insert(&BatchId {
                            daemon_id: k.daemon_id,
                            instance_id: k.instance_id,
                            sequence: k.sequence,
                        });
                        records += 1;
                    }
                    Frame::Torn { offset, reason } if i == last => {
                        warn!(
                            org = %org,
                            path = %path.display(),
                            offset,
                            cut = reader.len - offset,
                            reason,
                            "cutting a torn record off the end of the last segment (never acknowledged)"
                        );
                        let file = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(|e| StoreError::io(path, e))?;
                        file.set_len(offset).map_err(|e| StoreError::io(path, e))?;
                        file.sync_all().map_err(|e| StoreError::io(path, e))?;
                        Metrics::add(&metrics.torn_records, 1);
                        break;
                    }
                    Frame::Torn { offset, reason } => {
                        return Err(StoreError::Corrupt {
                            path: path.clone(),
                            offset,
                            reason: reason.to_owned(),
                        });
                    }
                }
            }
        }
        if drop_last {
            segments.pop();
        }
        let (number, path, file, len) = match segments.last() {
            Some((number, path)) => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| StoreError::io(path, e))?;
                let len = file
                    .seek(SeekFrom::End(0))
                    .map_err(|e| StoreError::io(path, e))?;
                (*number, path.clone(), file, len)
            }
            None => {
                let (path, file) = create_segment(&dir, 1, key.is_some())?;
                (1, path, file, SEGMENT_HEADER_LEN)
            }
        };
        info!(org = %org, segments = number, records, "organisation store open");
        Ok(Self {
            org,
            dir,
            key,
            segment_bytes,
            file,
            path,
            number,
            len,
            index,
            poisoned: None,
            record: Vec::new(),
            metrics,
        })
    }

    /// Writes one batch record unless the batch is stored already; the caller fsyncs.
    fn append(&mut self, id: &BatchId, batch: &[u8]) -> Result<Appended, StoreError> {
        if let Some(why) = &self.poisoned {
            return Err(StoreError::Poisoned(why.clone()));
        }
        if self.index.contains(id) {
            return Ok(Appended::Duplicate);
        }
        let payload_len = batch.len()
            + if self.key.is_some() {
                seal::OVERHEAD
            } else {
                0
            };
        let record_len = RECORD_HEADER_LEN + payload_len as u64;
        if self.len > SEGMENT_HEADER_LEN && self.len + record_len > self.segment_bytes {
            self.rotate()?;
        }
        let offset = self.len;
        self.record.clear();
        self.record.extend_from_slice(&[0; 8]);
        match &self.key {
            Some(key) => key
                .seal(
                    &record_aad(self.org.as_str(), self.number, offset),
                    batch,
                    &mut self.record,
                )
                .map_err(|e| self.poison(e.to_string()))?,
            None => self.record.extend_from_slice(batch),
        }
        let payload = &self.record[8..];
        let length = u32::try_from(payload.len())
            .map_err(|_| StoreError::Poisoned("record larger than 4 GiB".into()))?;
        let crc = crc32fast::hash(payload);
        self.record[..4].copy_from_slice(&length.to_le_bytes());
        self.record[4..8].copy_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.file.write_all(&self.record) {
            // Take the partial record back so the segment stays a sequence of whole records;
            // if even that fails, stop writing until a restart recovers.
            if self.file.set_len(offset).is_err()
                || self.file.seek(SeekFrom::Start(offset)).is_err()
            {
                return Err(self.poison(format!("{}: {e}", self.path.display())));
            }
            return Err(StoreError::io(&self.path, e));
        }
        self.len = offset + self.record.len() as u64;
        self.index.insert(id);
        Ok(Appended::Stored {
            bytes: self.record.len() as u64,
        })
    }

    /// Makes every record written so far durable. A failed fsync leaves the page cache in an
    /// unknown state (Linux may drop the dirty pages and clear the error): nothing is trusted
    /// after it until a restart reads the segments back.
    fn sync(&mut self) -> Result<(), StoreError> {
        if let Some(why) = &self.poisoned {
            return Err(StoreError::Poisoned(why.clone()));
        }
        self.file
            .sync_data()
            .map_err(|e| self.poison(format!("fsync {}: {e}", self.path.display())))
    }

    fn poison(&mut self, why: String) -> StoreError {
        error!(org = %self.org, error = %why, "storage failed; refusing writes until restart");
        self.poisoned = Some(why.clone());
        StoreError::Poisoned(why)
    }

    fn rotate(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        let next = self.number + 1;
        let (path, file) = create_segment(&self.dir, next, self.key.is_some())
            .map_err(|e| self.poison(e.to_string()))?;
        info!(org = %self.org, segment = next, "segment rotated");
        self.file = file;
        self.path = path;
        self.number = next;
        self.len = SEGMENT_HEADER_LEN;
        Ok(())
    }

    /// Serves append requests until every sender is gone. Requests queued together share one
    /// fsync; each is answered after it.
    fn run(mut self, mut rx: mpsc::Receiver<AppendRequest>) {
        let mut group = Vec::with_capacity(GROUP_MAX);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < GROUP_MAX {
                match rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            let mut results: Vec<Result<Appended, StoreError>> = group
                .iter()
                .map(|request| self.append(&request.id, &request.batch))
                .collect();
            if results
                .iter()
                .any(|r| matches!(r, Ok(Appended::Stored { .. })))
                && let Err(e) = self.sync()
            {
                for result in &mut results {
                    if matches!(result, Ok(Appended::Stored { .. })) {
                        *result = Err(e.clone());
                    }
                }
            }
            for (request, result) in group.drain(..).zip(results) {
                if let Ok(Appended::Stored { bytes }) = result {
                    Metrics::add(&self.metrics.bytes_stored, bytes);
                }
                let _ = request.reply.send(result);
            }
        }
    }
}

fn create_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(dir, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Creates segment `number` with its header, durably (file and directory entry).
fn create_segment(dir: &Path, number: u64, sealed: bool) -> Result<(PathBuf, File), StoreError> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    let mut header = [0_u8; 16];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&(if sealed { FLAG_SEALED } else { 0 }).to_le_bytes());
    file.write_all(&header)
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)?;
    Ok((path, file))
}

struct AppendRequest {
    id: BatchId,
    batch: Vec<u8>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

struct OrgHandle {
    tx: mpsc::Sender<AppendRequest>,
    thread: JoinHandle<()>,
}

/// Settings of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    /// A segment is closed once the next record would take it past this many bytes.
    pub segment_bytes: u64,
}

/// Every organisation's store, each behind its own writer thread.
pub struct Store {
    config: StoreConfig,
    key: Option<Arc<SealKey>>,
    metrics: Arc<Metrics>,
    orgs: Mutex<HashMap<OrgName, OrgHandle>>,
}

impl Store {
    /// Opens the store and every organisation already in it (recovering torn records), so
    /// damage is reported at start-up, not at the first push.
    pub fn open(
        config: StoreConfig,
        key: Option<Arc<SealKey>>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        create_dir(&config.data_dir)?;
        let store = Self {
            config,
            key,
            metrics,
            orgs: Mutex::new(HashMap::new()),
        };
        let dir = orgs_dir(&store.config.data_dir);
        if let Ok(entries) = fs::read_dir(&dir) {
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
                let name = entry.file_name();
                match name.to_str().map(OrgName::parse) {
                    Some(Ok(org)) => {
                        store.handle(&org)?;
                    }
                    _ => {
                        warn!(entry = %entry.path().display(), "not an organisation directory; ignored")
                    }
                }
            }
        }
        Ok(store)
    }

    fn handle(&self, org: &OrgName) -> Result<mpsc::Sender<AppendRequest>, StoreError> {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(handle) = orgs.get(org) {
            return Ok(handle.tx.clone());
        }
        let writer = OrgWriter::open(
            &self.config.data_dir,
            org.clone(),
            self.key.clone(),
            self.config.segment_bytes,
            Arc::clone(&self.metrics),
        )?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("store-{}", org.as_str()))
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::io(&self.config.data_dir, e))?;
        orgs.insert(
            org.clone(),
            OrgHandle {
                tx: tx.clone(),
                thread,
            },
        );
        Ok(tx)
    }

    /// Stores `batch` (an encoded `ExchangeBatch`) for `org` durably, unless `id` is stored.
    pub async fn append(
        &self,
        org: &OrgName,
        id: BatchId,
        batch: Vec<u8>,
    ) -> Result<Appended, StoreError> {
        // Opening an organisation seen for the first time creates and fsyncs its directory and
        // first segment: off the async worker when the runtime allows it.
        let open = self
            .orgs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(org)
            .map(|handle| handle.tx.clone());
        let tx = match (
            open,
            tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()),
        ) {
            (Some(tx), _) => tx,
            (None, Ok(tokio::runtime::RuntimeFlavor::MultiThread)) => {
                tokio::task::block_in_place(|| self.handle(org))?
            }
            (None, _) => self.handle(org)?,
        };
        let (reply, answer) = oneshot::channel();
        tx.send(AppendRequest { id, batch, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Stops every writer thread once its queue is empty.
    pub fn close(self) {
        let orgs = self.orgs.into_inner().unwrap_or_else(|p| p.into_inner());
        for (_, handle) in orgs {
            drop(handle.tx);
            let _ = handle.thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use capture_proto::v1::Exchange;

    use super::*;

    fn org(name: &str) -> OrgName {
        OrgName::parse(name).unwrap()
    }

    fn batch(seq: u64, body: &str) -> (BatchId, Vec<u8>) {
        let b = ExchangeBatch {
            daemon_id: "node-a".into(),
            instance_id: "run-1".into(),
            sequence: seq,
            exchanges: vec![Exchange {
                pid: u32::try_from(seq).unwrap(),
                redacted: vec![body.into()],
                ..Exchange::default()
            }],
        };
        (
            BatchId {
                daemon_id: b.daemon_id.clone(),
                instance_id: b.instance_id.clone(),
                sequence: seq,
            },
            b.encode_to_vec(),
        )
    }

    fn open(dir: &Path, key: Option<Arc<SealKey>>, segment_bytes: u64) -> (Store, Arc<Metrics>) {
        let metrics = Metrics::new();
        let store = Store::open(
            StoreConfig {
                data_dir: dir.to_owned(),
                segment_bytes,
            },
            key,
            Arc::clone(&metrics),
        )
        .unwrap();
        (store, metrics)
    }

    fn sequences(dir: &Path, o: &str, key: Option<&SealKey>) -> Vec<u64> {
        let mut seqs = Vec::new();
        read_batches(dir, &org(o), key, |b| {
            seqs.push(b.sequence);
            Ok(())
        })
        .unwrap();
        seqs
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn dedup_index_tracks_out_of_order_sequences() {
        let mut index = DedupIndex::default();
        let id = |s| BatchId {
            daemon_id: "d".into(),
            instance_id: "i".into(),
            sequence: s,
        };
        for s in [3, 1, 5, 2] {
            assert!(!index.contains(&id(s)));
            index.insert(&id(s));
        }
        let seen = &index.runs[&("d".to_owned(), "i".to_owned())];
        assert_eq!(seen.through, 3);
        assert_eq!(seen.beyond.iter().copied().collect::<Vec<_>>(), [5]);
        assert!(index.contains(&id(5)) && index.contains(&id(1)) && !index.contains(&id(4)));
        let other_run = BatchId {
            instance_id: "j".into(),
            ..id(1)
        };
        assert!(!index.contains(&other_run));
    }

    #[test]
    fn appends_dedup_rotate_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (store, metrics) = open(dir.path(), None, 100);
        rt.block_on(async {
            for seq in 1..=10 {
                let (id, bytes) = batch(seq, "x");
                assert!(matches!(
                    store.append(&org("acme"), id, bytes).await.unwrap(),
                    Appended::Stored { .. }
                ));
            }
            let (id, bytes) = batch(4, "again");
            assert_eq!(
                store.append(&org("acme"), id, bytes).await.unwrap(),
                Appended::Duplicate
            );
        });
        store.close();
        assert!(
            metrics
                .bytes_stored
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        let segments = list_segments(&orgs_dir(dir.path()).join("acme")).unwrap();
        assert!(segments.len() > 2, "{segments:?}");
        assert_eq!(
            sequences(dir.path(), "acme", None),
            (1..=10).collect::<Vec<_>>()
        );

        let (store, _) = open(dir.path(), None, 100);
        rt.block_on(async {
            let (id, bytes) = batch(7, "x");
            assert_eq!(
                store.append(&org("acme"), id, bytes).await.unwrap(),
                Appended::Duplicate
            );
            let (id, bytes) = batch(11, "x");
            assert!(matches!(
                store.append(&org("acme"), id, bytes).await.unwrap(),
                Appended::Stored { .. }
            ));
        });
        store.close();
        assert_eq!(
            sequences(dir.path(), "acme", None),
            (1..=11).collect::<Vec<_>>()
        );
        assert!(sequences(dir.path(), "other", None).is_empty());
    }

    #[test]
    fn torn_tail_is_cut_counted_and_stored_again() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (store, _) = open(dir.path(), None, 1 << 20);
        rt.block_on(async {
            for seq in 1..=3 {
                let (id, bytes) = batch(seq, "x");
                store.append(&org("acme"), id, bytes).await.unwrap();
            }
        });
        store.close();
        let (_, path) = list_segments(&orgs_dir(dir.path()).join("acme"))
            .unwrap()
            .pop()
            .unwrap();
        let full = fs::metadata(&path).unwrap().len();
        // Every cut inside the last record, and a flipped byte in it, is a torn record.
        let pristine = fs::read(&path).unwrap();
        let (_, third) = batch(3, "x");
        let record_start = full - RECORD_HEADER_LEN - third.len() as u64;
        for cut in (record_start + 1..full).step_by(3).chain([full]) {
            let mut bytes = pristine[..usize::try_from(cut).unwrap()].to_vec();
            if cut == full {
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
            }
            fs::write(&path, &bytes).unwrap();
            assert_eq!(sequences(dir.path(), "acme", None), [1, 2], "cut at {cut}");
            let (store, metrics) = open(dir.path(), None, 1 << 20);
            assert_eq!(
                metrics
                    .torn_records
                    .load(std::sync::atomic::Ordering::Relaxed),
                1
            );
            assert_eq!(fs::metadata(&path).unwrap().len(), record_start);
            rt.block_on(async {
                let (id, bytes) = batch(3, "x");
                assert!(matches!(
                    store.append(&org("acme"), id, bytes).await.unwrap(),
                    Appended::Stored { .. }
                ));
            });
            store.close();
            assert_eq!(sequences(dir.path(), "acme", None), [1, 2, 3]);
            assert_eq!(fs::read(&path).unwrap(), pristine);
        }
    }

    #[test]
    fn damage_before_the_end_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let (store, _) = open(dir.path(), None, 120);
        rt.block_on(async {
            for seq in 1..=6 {
                let (id, bytes) = batch(seq, "x");
                store.append(&org("acme"), id, bytes).await.unwrap();
            }
        });
        store.close();
        let segments = list_segments(&orgs_dir(dir.path()).join("acme")).unwrap();
        let (_, first) = &segments[0];
        let mut bytes = fs::read(first).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(first, &bytes).unwrap();
        let err = Store::open(
            StoreConfig {
                data_dir: dir.path().to_owned(),
                segment_bytes: 120,
            },
            None,
            Metrics::new(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains("00000000000000000001.seg"),
            "{err}"
        );
    }

    #[test]
    fn sealed_records_hide_their_content_and_need_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let key = Arc::new(SealKey::from_bytes(&[9; 32]).unwrap());
        let (store, _) = open(dir.path(), Some(Arc::clone(&key)), 1 << 20);
        rt.block_on(async {
            for seq in 1..=3 {
                let (id, bytes) = batch(seq, "hunter2-secret-body");
                store.append(&org("acme"), id, bytes).await.unwrap();
            }
        });
        store.close();
        let (_, path) = list_segments(&orgs_dir(dir.path()).join("acme"))
            .unwrap()
            .pop()
            .unwrap();
        let raw = fs::read(&path).unwrap();
        for needle in [&b"hunter2"[..], b"node-a", b"run-1"] {
            assert!(!raw.windows(needle.len()).any(|w| w == needle));
        }
        assert_eq!(sequences(dir.path(), "acme", Some(&key)), [1, 2, 3]);
        let other = SealKey::from_bytes(&[8; 32]).unwrap();
        assert!(read_batches(dir.path(), &org("acme"), Some(&other), |_| Ok(())).is_err());
        assert!(read_batches(dir.path(), &org("acme"), None, |_| Ok(())).is_err());
        // A record moved to another organisation does not open there.
        let moved = orgs_dir(dir.path()).join("evil");
        fs::create_dir_all(&moved).unwrap();
        fs::copy(&path, moved.join(path.file_name().unwrap())).unwrap();
        assert!(read_batches(dir.path(), &org("evil"), Some(&key), |_| Ok(())).is_err());
    }
}
