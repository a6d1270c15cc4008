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
    seal::SealKey,
    store::{self, StoreError},
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
    Store(StoreError),
    #[error("writing {}: {}", .0.display(), .1)]
    Write(PathBuf, io::Error),
}

/// Writes the HAR of `org` to `out`.
pub fn write_har(
    data_dir: &Path,
    org: &OrgName,
    key: Option<&SealKey>,
    out: &mut dyn Write,
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
    let read = store::read_batches(data_dir, org, key, |batch| {
        summary.batches += 1;
        for exchange in batch.exchanges {
            let exchange = match wire::from_proto(exchange) {
                Ok(exchange) => exchange,
                Err(e) => {
                    summary.unreadable += 1;
                    warn!(org = %org, daemon = %batch.daemon_id, sequence = batch.sequence, error = %e, "stored exchange unreadable; left out");
                    continue;
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
                return Err(StoreError::Closed);
            }
            summary.exchanges += 1;
        }
        Ok(())
    });
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
pub fn export_to(
    data_dir: &Path,
    org: &OrgName,
    key: Option<&SealKey>,
    path: &Path,
) -> Result<Exported, ExportError> {
    if path == Path::new("-") {
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        return write_har(data_dir, org, key, &mut out);
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
    let result = (|| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(write)?;
        let mut out = io::BufWriter::with_capacity(256 * 1024, file);
        let summary = write_har(data_dir, org, key, &mut out).map_err(|e| match e {
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
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
