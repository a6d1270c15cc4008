//! Sinks: where redacted exchanges go.
//!
//! Every sink implements [`Sink`], which takes an exchange that redaction has already
//! rewritten (DESIGN.md §3: redaction runs before any sink) and delivers it in the sink's own
//! format: [`JsonlSink`] writes one HAR entry per line (DESIGN.md §5). The gRPC exporter
//! (`crate::output::export`) is not a sink: it takes exchanges through its own bounded queue and
//! delivers them on its own thread, so it never holds the pipeline up.
//!
//! Sinks may hold delivered exchanges back to send them in batches: [`Sink::flush`] sends what
//! is held. The caller flushes after every batch of exchanges, at least every 100 ms, and at
//! shutdown.
//!
//! Errors name where the data was going and the OS error, never what was being written.

pub mod export;

pub mod jsonl;

use std::{io, path::PathBuf};

pub use jsonl::JsonlSink;

use capture_model::{clock::WallClock, exchange::Exchange};

/// Something that delivers redacted exchanges.
pub trait Sink {
    /// Delivers one exchange. `ex` must already be redacted; `clock` dates its timestamps.
    /// The exchange may be held back until [`Sink::flush`].
    fn deliver(&mut self, ex: &Exchange, clock: &WallClock) -> Result<(), SinkError>;

    /// Sends every exchange held back. An error means they are lost (they are not retried).
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Why a sink could not take an exchange. Messages name the destination and the OS error only.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The output file could not be opened (or created).
    #[error("cannot open output file {}: {source}{}", path.display(), open_hint(source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing buffered lines failed (disk full, closed pipe, ...).
    #[error("cannot write to {destination}: {source}")]
    Write {
        /// The file path, or `stdout`.
        destination: String,
        #[source]
        source: io::Error,
        /// Lines lost: buffered and not written whole (they are not retried).
        lines: usize,
    },
    /// A record contained a line break, which would split it over two lines.
    #[error("refusing to write a record containing a line break to {destination}")]
    LineBreak { destination: String },
}

fn open_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::NotFound => " (the directory must exist; it is not created)",
        _ => "",
    }
}
