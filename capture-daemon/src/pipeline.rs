//! The daemon's main loop: drains the ring buffer into the connection table, and writes every
//! finished exchange, redacted, to the sink. One task does all of it, so the per-event path
//! takes no locks and crosses no channels.

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use tracing::{error, info, warn};

use crate::{
    config::Config,
    conn::metrics::Metrics,
    conn::{ConnTable, TableLimits},
    control::{Applied, Control},
    kernel::{
        intake, procnet,
        programs::{Capture, KernelCounterReader},
    },
    output::{JsonlSink, SinkError, export::ExportHandle},
    redact::RedactionPolicy,
};
use capture_model::{clock::WallClock, exchange::Exchange};

/// Holes, idle connections and exited processes are looked at this often (on the next drain).
const MAINTAIN_EVERY: Duration = Duration::from_millis(100);
/// Records handled before the loop writes what they finished and looks at its timers again:
/// under sustained overload a drain that waited for an empty ring would never end, and nothing
/// would be written or flushed in the meantime.
const DRAIN_BATCH: usize = 4096;

pub struct Pipeline {
    table: ConnTable,
    redaction: RedactionPolicy,
    sink: JsonlSink,
    clock: WallClock,
    metrics: Arc<Metrics>,
    headers_only: bool,
    done: Vec<Exchange>,
    /// Live target set, workloads and pause switch; `None` when nothing changes at run time.
    control: Option<Control>,
    /// The gRPC exporter's queue, when `--collector` is set.
    exporter: Option<ExportHandle>,
    /// `--kernel-floor` (benchmark): records are drained and dropped unread.
    discard_events: bool,
    /// `--drain-interval`: the kernel never wakes the daemon for data.
    drain_interval: Duration,
    /// The kernel's lost-events counter, read before each drain, and its last value: when it
    /// moves, holes are gaps at once ([`ConnTable::kernel_lost`]).
    kernel: Option<(Arc<KernelCounterReader>, u64)>,
}

impl Pipeline {
    pub fn new(cfg: &Config, sink: JsonlSink, metrics: Arc<Metrics>) -> Self {
        let limits = TableLimits {
            max_connections: cfg.max_connections,
            max_conn_buffer_bytes: cfg.max_conn_buffer_bytes,
            max_buffered_bytes: cfg.max_buffered_bytes,
            idle_timeout_ns: u64::try_from(cfg.idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            http1: cfg.http1.clone(),
            http2: cfg.http2.clone(),
        };
        let node = cfg.node_name.clone().or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        });
        let table = ConnTable::new(
            limits,
            Arc::clone(&metrics),
            node,
            Box::new(procnet::classify),
            Box::new(|tgid| std::path::Path::new(&format!("/proc/{tgid}")).exists()),
        );
        Self {
            table,
            // --headers-only drops bodies after redaction: nothing to look for in them.
            redaction: RedactionPolicy::new(&cfg.redact_headers, &cfg.redact_query)
                .with_body_fields(
                    if cfg.headers_only {
                        &[]
                    } else {
                        &cfg.redact_body_fields
                    },
                    cfg.default_body_redaction && !cfg.headers_only,
                ),
            sink,
            clock: WallClock::now(),
            metrics,
            headers_only: cfg.headers_only,
            discard_events: false,
            drain_interval: cfg.drain_interval,
            done: Vec::new(),
            control: None,
            exporter: None,
            kernel: None,
        }
    }

    /// Applies live changes (targets, workloads, pause) from `control` while running.
    #[must_use]
    pub fn with_control(mut self, control: Control) -> Self {
        self.control = Some(control);
        self
    }

    /// Also hands every redacted exchange to the exporter (after the JSONL sink).
    #[must_use]
    pub fn with_exporter(mut self, exporter: ExportHandle) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// Runs until `shutdown` resolves, then drains what the kernel already sent and flushes
    /// every connection within `deadline`.
    pub async fn run(
        mut self,
        capture: &mut Capture,
        shutdown: impl std::future::Future<Output = ()>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        self.discard_events = capture.is_floor();
        let reader = capture.counter_reader();
        let lost = reader.events_lost();
        self.kernel = Some((reader, lost));
        let ring = capture.take_events()?;
        let mut ring = crate::kernel::programs::register(ring)?;
        let mut tick = tokio::time::interval(self.drain_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let maintain_every_drains =
            (MAINTAIN_EVERY.as_nanos() / self.drain_interval.as_nanos().max(1)).max(1);
        let mut drains: u128 = 0;
        tokio::pin!(shutdown);
        self.apply_control(capture, ring.get_mut());
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    // Readiness stays set while records remain, so this branch runs again
                    // right after the batch is written.
                    if !self.drain(guard.get_inner_mut(), DRAIN_BATCH) {
                        guard.clear_ready();
                    }
                }
                _ = tick.tick() => {
                    self.drain(ring.get_mut(), DRAIN_BATCH);
                    drains += 1;
                    if drains.is_multiple_of(maintain_every_drains) {
                        self.table.tick(monotonic_ns(), &mut self.done);
                    }
                }
                () = changed(&mut self.control) => self.apply_control(capture, ring.get_mut()),
                () = &mut shutdown => break,
            }
            self.table.enforce_budget(&mut self.done);
            self.apply_mutes(capture);
            self.write_done();
        }
        info!("shutting down: flushing in-flight exchanges");
        let flush = async {
            // Events the kernel handed over before we stopped reading.
            while self.drain(ring.get_mut(), DRAIN_BATCH) {
                self.write_done();
            }
            self.table.flush_all(&mut self.done);
            self.write_done();
        };
        if tokio::time::timeout(deadline, flush).await.is_err() {
            warn!(
                ?deadline,
                "shutdown deadline passed before every exchange was flushed"
            );
        }
        Ok(())
    }

    /// Handles up to `max` records; true when it stopped at `max` (more may be waiting).
    fn drain(&mut self, ring: &mut RingBuf<MapData>, max: usize) -> bool {
        if let Some((reader, seen)) = &mut self.kernel {
            let lost = reader.events_lost();
            if lost > *seen {
                *seen = lost;
                self.table.kernel_lost(monotonic_ns(), &mut self.done);
            }
        }
        for _ in 0..max {
            let Some(record) = ring.next() else {
                return false;
            };
            if self.discard_events {
                continue;
            }
            self.on_record(&record);
        }
        true
    }

    fn on_record(&mut self, record: &[u8]) {
        match intake::parse(record) {
            Ok(event) => self.table.on_event(event, &mut self.done),
            Err(e) => {
                Metrics::add(&self.metrics.malformed_events, 1);
                warn!(error = %e, "malformed ring buffer record");
            }
        }
    }

    /// What one turn of [`run`](Self::run)'s loop does with a drained batch, for records that
    /// come from elsewhere than the ring (the pipeline benchmark replays recorded ones):
    /// decodes them, enforces the memory budget, then redacts and writes what they finished.
    pub fn process<'r>(&mut self, records: impl IntoIterator<Item = &'r [u8]>) {
        for record in records {
            self.on_record(record);
        }
        self.table.enforce_budget(&mut self.done);
        self.write_done();
    }

    /// Flushes every connection (as at shutdown) and writes what that finished.
    pub fn finish(&mut self) {
        self.table.flush_all(&mut self.done);
        self.write_done();
    }

    /// Brings the programs in line with `control`; on pause, writes out what the kernel had
    /// already sent and flushes every exchange in flight.
    fn apply_control(&mut self, capture: &mut Capture, ring: &mut RingBuf<MapData>) {
        let Some(mut control) = self.control.take() else {
            return;
        };
        if control.apply(capture) == Applied::Paused {
            while self.drain(ring, DRAIN_BATCH) {
                self.write_done();
            }
            self.table.flush_all(&mut self.done);
        }
        self.control = Some(control);
        self.write_done();
    }

    fn apply_mutes(&mut self, capture: &mut Capture) {
        for key in self.table.take_mutes() {
            capture.mute(key);
        }
    }

    /// Redacts and writes every finished exchange, then flushes the sink: one write(2) per
    /// batch, and every line is out within a drain interval of its exchange completing.
    fn write_done(&mut self) {
        if self.done.is_empty() {
            return;
        }
        for mut ex in self.done.drain(..) {
            if let Some(control) = &self.control {
                control.fill(&mut ex);
            }
            if ex.routing_key.is_none() {
                ex.routing_key = crate::routing::routing_key(&ex.request.headers);
            }
            self.redaction.apply(&mut ex);
            if self.headers_only {
                strip_bodies(&mut ex);
            }
            if let Err(e) = self.sink.write_entry(&ex, &self.clock) {
                Self::count_write_error(&self.metrics, &e);
            }
            if let Some(exporter) = &mut self.exporter {
                exporter.offer(ex, &self.clock);
            }
        }
        if let Err(e) = self.sink.flush() {
            Self::count_write_error(&self.metrics, &e);
        }
    }

    fn count_write_error(metrics: &Metrics, e: &SinkError) {
        let lost = match e {
            SinkError::Write { lines, .. } => (*lines).max(1) as u64,
            _ => 1,
        };
        Metrics::add(&metrics.output_errors, lost);
        error!(error = %e, lines = lost, "writing exchanges failed; they are lost");
    }
}

/// Resolves when `control` has something new; never without one.
async fn changed(control: &mut Option<Control>) {
    match control {
        Some(c) => c.changed().await,
        None => std::future::pending().await,
    }
}

/// `--headers-only`: bodies go, their sizes and truncation flags stay. gRPC's `grpc-message`
/// goes too (from `_grpc`, the headers of a trailers-only response and the trailers, listed in
/// `_capture.redacted`): servers often quote the request in it, so it may carry payload.
fn strip_bodies(ex: &mut Exchange) {
    ex.request.body.data = Vec::new();
    if let Some(r) = &mut ex.response {
        r.body.data = Vec::new();
    }
    let Some(grpc) = &mut ex.grpc else {
        return;
    };
    let mut removed = grpc.message.take().is_some();
    if let Some(r) = &mut ex.response {
        for fields in [&mut r.headers, &mut r.trailers] {
            let before = fields.len();
            fields.retain(|h| !h.name.eq_ignore_ascii_case(GRPC_MESSAGE));
            removed |= fields.len() != before;
        }
    }
    if removed && !ex.redacted.iter().any(|n| n == GRPC_MESSAGE) {
        ex.redacted.push(GRPC_MESSAGE.to_owned());
    }
}

/// The gRPC status message (gRPC over HTTP/2, "Responses").
const GRPC_MESSAGE: &str = "grpc-message";

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use capture_common::{EventHeader, direction, flags, kind};

    use super::*;
    use crate::kernel::intake::encode;
    use std::sync::atomic::Ordering;

    fn header(kind: u8, dir: u8, pos: u64, len: usize, ts_ns: u64) -> EventHeader {
        EventHeader {
            kind,
            direction: dir,
            fd: 9,
            tgid: 77,
            tid: 77,
            generation: 1,
            pos,
            len: len as u32,
            cap_len: len as u32,
            ts_ns,
            cgroup_id: 5,
            ..EventHeader::default()
        }
    }

    /// Records replayed through `process` come out as the run loop writes them: decoded,
    /// redacted, one JSON line each; a malformed record is counted and loses nothing else.
    #[test]
    fn process_decodes_redacts_and_writes_replayed_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let path = path.to_str().unwrap();
        let cfg =
            Config::from_args(["capture-daemon", "--target-pid", "77", "--output", path]).unwrap();
        let metrics = Arc::new(Metrics::default());
        let mut pipeline =
            Pipeline::new(&cfg, JsonlSink::open(path).unwrap(), Arc::clone(&metrics));

        let request = b"GET /a?access_token=s3cret&page=2 HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer x\r\n\r\n";
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let mut addrs = vec![0u8; 48];
        addrs[..2].copy_from_slice(&2u16.to_ne_bytes());
        addrs[24..26].copy_from_slice(&2u16.to_ne_bytes());
        let open = EventHeader {
            flags: flags::ROLE_SERVER | flags::ENDPOINTS,
            ..header(kind::OPEN, direction::INGRESS, 0, addrs.len(), 1)
        };
        let records = [
            encode(&open, &addrs),
            encode(
                &header(kind::DATA, direction::INGRESS, 0, request.len(), 2),
                request,
            ),
            vec![1, 2, 3],
            encode(
                &header(kind::DATA, direction::EGRESS, 0, response.len(), 3),
                response,
            ),
        ];
        pipeline.process(records.iter().map(Vec::as_slice));
        pipeline.finish();

        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let entry: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        let url = entry["request"]["url"].as_str().unwrap();
        assert!(
            url.starts_with("http://h/a?") && url.ends_with("page=2"),
            "{url}"
        );
        assert_eq!(entry["response"]["content"]["text"], "ok");
        assert_eq!(entry["connection"], "77:9:1");
        assert!(!text.contains("s3cret") && !text.contains("Bearer"));
        assert_eq!(metrics.malformed_events.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.exchanges_h1.load(Ordering::Relaxed), 1);
    }
}
