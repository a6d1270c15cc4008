//! The gRPC exporter: sends redacted exchanges to a collector (`--collector`) over TLS, with
//! at-least-once delivery, and never slows the capture loop down.
//!
//! The pipeline hands each redacted exchange to an [`ExportHandle`]: a non-blocking send on an
//! unbounded channel whose contents are bounded in bytes by `--export-queue-max-bytes` (an
//! exchange that does not fit is dropped and counted, `queue_full`), of the exchange already
//! converted to its wire form (`capture_model::wire`). Everything else happens on the
//! exporter's own thread and tokio runtime ([`Exporter`]): batching (`batch`), pushing with
//! TLS, gzip, token and timeout (`client`), retries (`backoff`), the disk spool (`spool`),
//! token rotation (`token`); `delivery` is the loop that ties them together.
//!
//! Delivery is at least once: a batch is forgotten only when the collector acknowledged it,
//! and each batch carries (daemon id, instance id, sequence) so the collector stores a batch
//! it receives twice only once. Every exchange handed over is eventually acknowledged, held
//! (queue, spool) or counted in `capture_export_dropped_total{reason}`.

pub mod backoff;
pub mod batch;
pub mod client;
pub mod delivery;
pub mod metrics;
pub mod settings;
pub mod spool;
pub mod token;

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tracing::{error, info, warn};

use self::metrics::ExportMetrics;
pub use self::settings::{Compression, ExportSettings, SpoolSettings};
use self::{
    backoff::Backoff,
    batch::Batcher,
    client::Collector,
    delivery::{Delivery, DeliveryParts},
    metrics::DropReason,
    spool::{Spool, SpoolError},
    token::{TokenError, TokenFile},
};
use capture_model::{clock::WallClock, exchange::Exchange, wire};

/// HTTP/2 keepalive pings on the collector connection, so a silently dead peer (a node gone,
/// a NAT entry expired) is noticed between pushes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// One exchange on its way from the pipeline to the exporter thread: its `capture.v1.Exchange`
/// message, encoded on the pipeline's thread. The exchange itself is freed there, where it was
/// allocated (freeing its many parts on the exporter's thread cost mimalloc cross-thread
/// frees), and the queue counts the bytes it really holds.
pub struct Offered {
    pub message: Vec<u8>,
}

/// Why the exporter could not start. `flag` is what to name in the exit-2 message.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("--spool-dir {0}")]
    Spool(#[source] SpoolError),
    #[error("--token-file {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: TokenError,
    },
    #[error("starting the exporter: {0}")]
    Runtime(#[source] std::io::Error),
}

impl ExportError {
    /// Whether this is a configuration problem (exit 2) rather than a runtime failure (exit 1).
    pub fn is_config(&self) -> bool {
        !matches!(self, ExportError::Runtime(_))
    }
}

/// The pipeline's end of the exporter: hands exchanges over without ever blocking.
pub struct ExportHandle {
    tx: mpsc::UnboundedSender<Offered>,
    metrics: Arc<ExportMetrics>,
    queue_max_bytes: u64,
}

impl ExportHandle {
    /// Hands one redacted exchange to the exporter, or drops it (counted, logged) when the
    /// queue is full or the exporter has stopped.
    pub fn offer(&mut self, exchange: Exchange, clock: &WallClock) {
        let m = &*self.metrics;
        m.exchanges_offered.fetch_add(1, Relaxed);
        // Encoded straight from the borrowed exchange: no message copy of its headers and
        // bodies on the way.
        let encoder = wire::Encoder::new(&exchange, clock);
        let len = encoder.encoded_len();
        let bytes = len as u64;
        if m.queue_bytes().saturating_add(bytes) > self.queue_max_bytes {
            m.dropped(DropReason::QueueFull, 1);
            return;
        }
        let mut message = Vec::with_capacity(len);
        encoder.encode(&mut message);
        drop(exchange);
        m.add_handoff_bytes(bytes);
        if self.tx.send(Offered { message }).is_err() {
            m.sub_handoff_bytes(bytes);
            m.dropped(DropReason::Shutdown, 1);
        }
    }
}

/// Tells the exporter to wind down: it has `within` to send what it holds.
#[derive(Clone, Debug)]
pub struct ShutdownSignal(watch::Sender<Option<Duration>>);

impl ShutdownSignal {
    pub fn begin(&self, within: Duration) {
        if self.0.borrow().is_none() {
            let _ = self.0.send(Some(within));
        }
    }
}

/// A new instance id: the run's start time (Unix milliseconds, 12 hex digits) then 16 random
/// hex digits. Spool file names start with it, so they sort by run.
pub fn new_instance_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{:012x}{:016x}", ms & 0xffff_ffff_ffff, random_u64())
}

fn random_u64() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_ne_bytes(bytes);
    }
    // No /dev/urandom (a very bare container): std's per-process random hash keys.
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// What the exporter opens at start-up: the spool (locked) and the token file.
pub struct Resources {
    pub spool: Option<Spool>,
    pub token: Option<TokenFile>,
}

impl Resources {
    pub fn open(settings: &ExportSettings) -> Result<Self, ExportError> {
        let spool = settings
            .spool
            .as_ref()
            .map(|s| Spool::open(&s.dir, s.max_bytes))
            .transpose()
            .map_err(ExportError::Spool)?;
        let token = settings
            .token_file
            .as_deref()
            .map(|path| {
                TokenFile::open(path).map_err(|source| ExportError::Token {
                    path: path.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        Ok(Self { spool, token })
    }
}

/// The exporter's pieces before they run: the pipeline's handle, the shutdown signal and the
/// loop. [`Exporter::start`] runs the loop on its own thread; tests run it in theirs.
pub struct Parts {
    pub handle: ExportHandle,
    pub shutdown: ShutdownSignal,
    pub delivery: Delivery,
}

/// Assembles the exporter around `channel` (already configured for the collector).
pub fn build(
    settings: &ExportSettings,
    metrics: Arc<ExportMetrics>,
    channel: Channel,
    resources: Resources,
    instance_id: String,
) -> Parts {
    metrics.enabled.store(true, Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let seed = random_u64();
    let parts = DeliveryParts {
        collector: Collector::new(channel, settings.compression, settings.request_timeout),
        endpoint: settings.url.clone(),
        token: resources.token,
        spool: resources.spool,
        batcher: Batcher::new(
            settings.daemon_id.clone(),
            Arc::from(instance_id),
            settings.batch,
        ),
        backoff: Backoff::new(settings.backoff_initial, settings.backoff_max, seed),
        queue_max_bytes: settings.queue_max_bytes,
        max_in_flight: settings.max_in_flight,
    };
    Parts {
        handle: ExportHandle {
            tx,
            metrics: Arc::clone(&metrics),
            queue_max_bytes: settings.queue_max_bytes,
        },
        shutdown: ShutdownSignal(shutdown_tx),
        delivery: Delivery::new(parts, metrics, rx, shutdown_rx),
    }
}

/// The running exporter: its thread, and the signal that winds it down.
pub struct Exporter {
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown: ShutdownSignal,
}

impl Exporter {
    /// Opens the spool and token file, then starts the exporter thread. Returns the
    /// pipeline's handle with it.
    pub fn start(
        settings: &ExportSettings,
        metrics: Arc<ExportMetrics>,
    ) -> Result<(Self, ExportHandle), ExportError> {
        let resources = Resources::open(settings)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ExportError::Runtime)?;
        let instance_id = new_instance_id();
        info!(
            collector = %settings.url,
            daemon_id = %settings.daemon_id,
            instance_id = %instance_id,
            spool = ?settings.spool.as_ref().map(|s| s.dir.display().to_string()),
            "exporter starting"
        );
        if settings.insecure {
            warn!(
                collector = %settings.url,
                "--collector-insecure: captured exchanges and the token go to the collector \
                 unencrypted and the collector is not authenticated"
            );
        }
        let endpoint = settings
            .endpoint
            .clone()
            .connect_timeout(settings.request_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(settings.request_timeout)
            .tcp_nodelay(true);
        let settings = settings.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("exporter".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // The channel connects when first used and reconnects by itself; it
                    // needs the runtime to exist, hence here.
                    let channel = endpoint.connect_lazy();
                    let parts = build(&settings, metrics, channel, resources, instance_id);
                    if tx.send((parts.handle, parts.shutdown)).is_err() {
                        return;
                    }
                    parts.delivery.run().await;
                });
            })
            .map_err(ExportError::Runtime)?;
        let (handle, shutdown) = rx.recv().map_err(|_| {
            ExportError::Runtime(std::io::Error::other(
                "the exporter thread stopped at start",
            ))
        })?;
        Ok((
            Self {
                thread: Some(thread),
                shutdown,
            },
            handle,
        ))
    }

    /// The signal to give at SIGTERM: from then the exporter has `within` to deliver.
    pub fn shutdown_signal(&self) -> ShutdownSignal {
        self.shutdown.clone()
    }

    /// Waits for the exporter thread to finish (after the pipeline dropped its handle), at
    /// most `timeout`. Begins the shutdown if nobody did.
    pub async fn finish(mut self, within: Duration, timeout: Duration) {
        self.shutdown.begin(within);
        let Some(thread) = self.thread.take() else {
            return;
        };
        let join = tokio::task::spawn_blocking(move || thread.join());
        match tokio::time::timeout(timeout, join).await {
            Ok(Ok(Ok(()))) => {}
            Ok(_) => error!("the exporter thread panicked"),
            Err(_) => error!(
                ?timeout,
                "the exporter did not stop in time; exiting without it"
            ),
        }
    }
}
