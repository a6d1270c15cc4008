//! The exporter's settings: plain values, built and validated by `config::export` from the
//! flags and the configuration file, so the exporter never sees the flag parser.

use std::{path::PathBuf, time::Duration};

use tonic::transport::Endpoint;

use super::batch::BatchLimits;

/// Defaults, documented in docs/configuration.md.
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024 * 1024;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Pushes in flight: enough to overlap the collector's fsync with the next batches (it commits
/// concurrent batches together).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;
/// Largest `--export-batch-max-bytes`: gRPC servers refuse messages past 4 MiB by default.
pub const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024;

/// How the exporter reaches the collector and what it may hold.
#[derive(Clone)]
pub struct ExportSettings {
    /// `--collector`, as given.
    pub url: String,
    /// Plaintext (`http://` with `--collector-insecure`).
    pub insecure: bool,
    /// The endpoint with its TLS configuration, checked.
    pub endpoint: Endpoint,
    pub token_file: Option<PathBuf>,
    /// `--daemon-id`, or the node name.
    pub daemon_id: String,
    pub batch: BatchLimits,
    pub queue_max_bytes: u64,
    pub spool: Option<SpoolSettings>,
    pub compression: Compression,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_in_flight: usize,
}

/// How each push is compressed (`--export-compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// zstd (level 3), compressed by the exporter with a context kept between pushes: about
    /// twice as fast as gzip for a smaller batch. A collector that does not take it (older
    /// than this option) is sent gzip instead.
    Zstd,
    Gzip,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolSettings {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

impl std::fmt::Debug for ExportSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportSettings")
            .field("url", &self.url)
            .field("insecure", &self.insecure)
            .field("token_file", &self.token_file)
            .field("daemon_id", &self.daemon_id)
            .field("batch", &self.batch)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("spool", &self.spool)
            .field("compression", &self.compression)
            .field("request_timeout", &self.request_timeout)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}
