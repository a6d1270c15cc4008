//! `export`: an organisation's stored exchanges as one HAR 1.2 file.
//!
//! Entries come out in storage order (the order batches were acknowledged, each batch in the
//! daemon's order), which is streamed: memory stays flat whatever the store's size. Each entry
//! is rendered by `capture_model::har` from the exchange read back with
//! `capture_model::wire`, so it is byte for byte the line the daemon's JSONL sink writes for
//! the same exchange. One entry per line, between the HAR `log` header and footer.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use capture_model::{clock::WallClock, har, wire};
use tracing::warn;

use crate::{
    org::OrgName,
    storage::{Selection, Storage, StorageError},
};

/// How much an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exported {
    pub batches: u64,
    pub exchanges: u64,
    /// Stored exchanges this version cannot read back (never expected: each was checked when
    /// it was stored); logged and left out.
    pub unreadable: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the store: {0}")]
    Store(StorageError),
    #[error("writing {}: {}", .0.display(), .1)]
    Write(PathBuf, io::Error),
}

/// Writes the HAR of `org` to `out`.
pub async fn write_har(
    storage: &Storage,
    org: &OrgName,
    out: &mut (dyn Write + Send),
) -> Result<Exported, ExportError> {
    let output = |e| ExportError::Write(PathBuf::from("the HAR"), e);
    let clock = WallClock::with_offset_ns(0);
    let mut summary = Exported::default();
    let mut line = Vec::with_capacity(64 * 1024);
    write!(
        out,
        "{{\"log\":{{\"version\":\"1.2\",\"creator\":{{\"name\":\"capture-collector\",\"version\":\"{}\"}},\"entries\":[",
        env!("CARGO_PKG_VERSION")
    )
    .map_err(output)?;
    let mut io_error = None;
    let mut last_batch = None;
    let read = storage
        .read(org, &Selection::default(), &mut |stored| {
            if last_batch != Some(stored.batch) {
                last_batch = Some(stored.batch);
                summary.batches += 1;
            }
            let exchange = match wire::from_proto(stored.exchange) {
                Ok(exchange) => exchange,
                Err(e) => {
                    summary.unreadable += 1;
                    warn!(org = %org, daemon = %stored.daemon_id, error = %e, "stored exchange unreadable; left out");
                    return Ok(());
                }
            };
            line.clear();
            line.extend_from_slice(if summary.exchanges == 0 {
                b"\n"
            } else {
                b",\n"
            });
            har::write_entry(&exchange, &clock, &mut line);
            if let Err(e) = out.write_all(&line) {
                io_error = Some(e);
                return Err(StorageError::Io("writing the HAR".into()));
            }
            summary.exchanges += 1;
            Ok(())
        })
        .await;
    if let Some(e) = io_error {
        return Err(output(e));
    }
    read.map_err(ExportError::Store)?;
    out.write_all(b"\n]}}\n").map_err(output)?;
    out.flush().map_err(output)?;
    Ok(summary)
}

/// Writes the HAR of `org` to `path` whole or not at all (a temporary file renamed over it),
/// or to standard output when `path` is `-`.
pub async fn export_to(
    storage: &Storage,
    org: &OrgName,
    path: &Path,
) -> Result<Exported, ExportError> {
    if path == Path::new("-") {
        let mut out = io::BufWriter::new(io::stdout());
        return write_har(storage, org, &mut out).await;
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "export.har".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = |e| ExportError::Write(path.to_owned(), e);
    let result = async {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write)?;
        let mut out = io::BufWriter::with_capacity(256 * 1024, file);
        let summary = write_har(storage, org, &mut out)
            .await
            .map_err(|e| match e {
                ExportError::Write(_, e) => write(e),
                other => other,
            })?;
        let file = out
            .into_inner()
            .map_err(io::IntoInnerError::into_error)
            .map_err(write)?;
        file.sync_all().map_err(write)?;
        fs::rename(&tmp, path).map_err(write)?;
        Ok(summary)
    }
    .await;
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
