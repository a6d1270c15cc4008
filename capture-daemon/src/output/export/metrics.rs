//! What the exporter counts: deliveries, retries, every drop with its reason, and the gauges
//! of what it holds (queue and spool bytes, connection state). Served with the daemon's other
//! metrics (`capture_export_*`), and only when `--collector` is set.
//!
//! Every drop goes through [`ExportMetrics::dropped`], which counts it and logs it with its
//! reason; the log is rate-limited per reason (one line at most every [`DROP_LOG_EVERY`],
//! saying how many were dropped since the last line), the counter never is.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use prometheus::proto::MetricType;
use tracing::{error, warn};

use crate::telemetry::metrics::{Families, Source};

/// Least time between two log lines about drops of one reason.
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why the exporter gave up on exchanges (`capture_export_dropped_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The in-memory queue (`--export-queue-max-bytes`) was full, and the spool could not
    /// take the overflow (disabled, or the exporter could not keep up).
    QueueFull,
    /// The spool was at `--spool-max-bytes`: the newest batch was not written.
    SpoolFull,
    /// The collector refused the batch as malformed or too large (INVALID_ARGUMENT,
    /// OUT_OF_RANGE); sending it again would fail again.
    Rejected,
    /// The daemon stopped before the exchanges were delivered, and no spool could keep them.
    Shutdown,
    /// A spooled batch failed its checksum or could not be read back.
    SpoolCorrupt,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::SpoolFull,
        DropReason::Rejected,
        DropReason::Shutdown,
        DropReason::SpoolCorrupt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::SpoolFull => "spool_full",
            DropReason::Rejected => "rejected",
            DropReason::Shutdown => "shutdown",
            DropReason::SpoolCorrupt => "spool_corrupt",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn explain(self) -> &'static str {
        match self {
            DropReason::QueueFull => {
                "the export queue is full (collector down or slow); raise --export-queue-max-bytes or set --spool-dir"
            }
            DropReason::SpoolFull => {
                "the spool is full (collector down for long); raise --spool-max-bytes"
            }
            DropReason::Rejected => "the collector rejected the batch",
            DropReason::Shutdown => "the daemon stopped before they were delivered",
            DropReason::SpoolCorrupt => "a spooled batch could not be read back",
        }
    }
}

#[derive(Default)]
struct DropLog {
    last: Option<Instant>,
    since_last: u64,
}

/// The exporter's counters and gauges. Counting is a relaxed atomic add; the pipeline thread
/// and the exporter thread share it.
#[derive(Default)]
pub struct ExportMetrics {
    /// Set when an exporter is configured: the `capture_export_*` series are served then only.
    pub enabled: AtomicBool,
    /// Exchanges handed to the exporter by the pipeline (dropped ones included).
    pub exchanges_offered: AtomicU64,
    pub batches_acked: AtomicU64,
    pub exchanges_acked: AtomicU64,
    /// Batches the collector acknowledged as already stored.
    pub batches_duplicate: AtomicU64,
    /// Push attempts that failed with a transient status and will be retried.
    pub retries: AtomicU64,
    /// Push attempts refused with UNAUTHENTICATED or PERMISSION_DENIED.
    pub auth_failures: AtomicU64,
    pub batches_spooled: AtomicU64,
    /// Bytes (estimated) of exchanges the pipeline handed over that the exporter has not
    /// batched yet. The pipeline adds, the exporter subtracts.
    pub handoff_bytes: AtomicU64,
    /// Bytes the exporter holds in memory: the open batch and closed batches not yet
    /// acknowledged or spooled. Set by the exporter.
    pub held_bytes: AtomicU64,
    pub queue_max_bytes: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_batches: AtomicU64,
    pub spool_max_bytes: AtomicU64,
    pub connected: AtomicBool,
    /// Pushes wait for the token file to change.
    pub auth_blocked: AtomicBool,
    pub last_success_unix_ms: AtomicU64,
    dropped: [AtomicU64; 5],
    drop_log: Mutex<[DropLog; 5]>,
}

impl ExportMetrics {
    /// Counts `exchanges` dropped for `reason` and logs it (rate-limited per reason).
    pub fn dropped(&self, reason: DropReason, exchanges: u64) {
        if exchanges == 0 {
            return;
        }
        self.dropped[reason.index()].fetch_add(exchanges, Relaxed);
        let Ok(mut logs) = self.drop_log.lock() else {
            return;
        };
        let log = &mut logs[reason.index()];
        log.since_last += exchanges;
        let now = Instant::now();
        if log
            .last
            .is_some_and(|t| now.duration_since(t) < DROP_LOG_EVERY)
        {
            return;
        }
        let n = std::mem::take(&mut log.since_last);
        log.last = Some(now);
        drop(logs);
        let total = self.dropped[reason.index()].load(Relaxed);
        match reason {
            DropReason::Rejected | DropReason::SpoolCorrupt => error!(
                reason = reason.as_str(),
                dropped = n,
                total,
                "exchanges dropped: {}",
                reason.explain()
            ),
            _ => warn!(
                reason = reason.as_str(),
                dropped = n,
                total,
                "exchanges dropped: {}",
                reason.explain()
            ),
        }
    }

    /// Exchanges dropped so far for `reason`.
    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()].load(Relaxed)
    }

    /// Bytes of exchanges in memory, handed over or batched: what `--export-queue-max-bytes`
    /// bounds.
    pub fn queue_bytes(&self) -> u64 {
        self.handoff_bytes
            .load(Relaxed)
            .saturating_add(self.held_bytes.load(Relaxed))
    }

    pub fn add_handoff_bytes(&self, n: u64) {
        self.handoff_bytes.fetch_add(n, Relaxed);
    }

    pub fn sub_handoff_bytes(&self, n: u64) {
        // Never below zero, even if a bug made the two sides disagree.
        let _ = self
            .handoff_bytes
            .fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    pub fn mark_success(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_success_unix_ms.store(ms, Relaxed);
    }
}

impl Source for ExportMetrics {
    /// The `capture_export_*` series (nothing when no exporter is configured).
    fn collect(&self, out: &mut Families) {
        if !self.enabled.load(Relaxed) {
            return;
        }
        let g = |c: &AtomicU64| c.load(Relaxed);
        let b = |c: &AtomicBool| u64::from(c.load(Relaxed));
        for (name, help, value) in [
            (
                "capture_export_exchanges_total",
                "Exchanges handed to the exporter (delivered, held or dropped).",
                g(&self.exchanges_offered),
            ),
            (
                "capture_export_batches_acked_total",
                "Batches the collector acknowledged (duplicates included).",
                g(&self.batches_acked),
            ),
            (
                "capture_export_exchanges_acked_total",
                "Exchanges in batches the collector acknowledged.",
                g(&self.exchanges_acked),
            ),
            (
                "capture_export_duplicate_batches_total",
                "Batches acknowledged as already stored (a retry after a lost acknowledgement).",
                g(&self.batches_duplicate),
            ),
            (
                "capture_export_retries_total",
                "Push attempts that failed with a transient status and were retried.",
                g(&self.retries),
            ),
            (
                "capture_export_auth_failures_total",
                "Push attempts refused as UNAUTHENTICATED or PERMISSION_DENIED.",
                g(&self.auth_failures),
            ),
            (
                "capture_export_batches_spooled_total",
                "Batches written to the spool directory.",
                g(&self.batches_spooled),
            ),
        ] {
            out.counter(name, help, value);
        }
        for (name, help, value) in [
            (
                "capture_export_auth_blocked",
                "1 while pushes wait for the token file to change after an auth failure.",
                b(&self.auth_blocked),
            ),
            (
                "capture_export_queue_bytes",
                "Bytes of exchanges held in memory by the exporter.",
                self.queue_bytes(),
            ),
            (
                "capture_export_queue_max_bytes",
                "--export-queue-max-bytes.",
                g(&self.queue_max_bytes),
            ),
            (
                "capture_export_spool_bytes",
                "Bytes of batches in the spool directory.",
                g(&self.spool_bytes),
            ),
            (
                "capture_export_spool_batches",
                "Batches in the spool directory.",
                g(&self.spool_batches),
            ),
            (
                "capture_export_spool_max_bytes",
                "--spool-max-bytes (0 without a spool).",
                g(&self.spool_max_bytes),
            ),
            (
                "capture_export_connected",
                "1 when the last push reached the collector.",
                b(&self.connected),
            ),
        ] {
            out.gauge(name, help, value);
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "milliseconds since 1970 stay exact in an f64 for millennia"
        )]
        let last = g(&self.last_success_unix_ms) as f64 / 1000.0;
        out.gauge_f64(
            "capture_export_last_success_timestamp_seconds",
            "Unix time of the last acknowledged push (0: none yet).",
            last,
        );
        let reasons: Vec<[&str; 1]> = DropReason::ALL.iter().map(|r| [r.as_str()]).collect();
        out.labelled(
            "capture_export_dropped_total",
            "Exchanges the exporter gave up on, by reason.",
            MetricType::COUNTER,
            &["reason"],
            reasons
                .iter()
                .zip(DropReason::ALL)
                .map(|(labels, r)| (&labels[..], self.dropped_total(r))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_only_when_enabled_and_counts_every_drop() {
        let m = ExportMetrics::default();
        let render = |m: &ExportMetrics| {
            let mut f = Families::default();
            m.collect(&mut f);
            f.render()
        };
        assert!(render(&m).is_empty());
        m.enabled.store(true, Relaxed);
        // Logged once, counted every time.
        for _ in 0..3 {
            m.dropped(DropReason::QueueFull, 2);
        }
        m.dropped(DropReason::Shutdown, 0);
        let out = render(&m);
        assert!(
            out.contains("capture_export_dropped_total{reason=\"queue_full\"} 6\n"),
            "{out}"
        );
        assert!(
            out.contains("capture_export_dropped_total{reason=\"shutdown\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("capture_export_connected 0\n"), "{out}");
    }

    #[test]
    fn queue_bytes_never_go_below_zero() {
        let m = ExportMetrics::default();
        m.add_handoff_bytes(5);
        m.held_bytes.store(3, Relaxed);
        assert_eq!(m.queue_bytes(), 8);
        m.sub_handoff_bytes(7);
        assert_eq!(m.queue_bytes(), 3);
    }
}
