//! Sinks: where redacted exchanges go.
//!
//! Every sink implements [`Sink`], which takes an exchange that redaction has already
//! rewritten (DESIGN.md §3: redaction runs before any sink) and delivers it in the sink's own
//! format: [`JsonlSink`] writes one HAR entry per line (DESIGN.md §5). A gRPC exporter will be
//! another implementation.
//!
//! Errors name where the data was going and the OS error, never what was being written.

pub mod jsonl;

use std::{io, path::PathBuf};

pub use jsonl::JsonlSink;

use crate::{clock::WallClock, exchange::Exchange};

/// Something that delivers redacted exchanges.
pub trait Sink {
    /// Delivers one exchange. `ex` must already be redacted; `clock` dates its timestamps.
    fn deliver(&mut self, ex: &Exchange, clock: &WallClock) -> Result<(), SinkError>;
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
    /// Writing or flushing a line failed (disk full, closed pipe, ...).
    #[error("cannot write to {destination}: {source}")]
    Write {
        /// The file path, or `stdout`.
        destination: String,
        #[source]
        source: io::Error,
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
