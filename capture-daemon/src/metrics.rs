//! Counters for everything the pipeline does or loses, served in the Prometheus text format
//! with `/healthz` and `/readyz` on `--metrics-addr`. Counting is a relaxed atomic add, cheap
//! enough for the per-event path. No label or value here ever carries captured content.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use crate::ebpf::{KernelCounterReader, KernelCounters};
use capture_http::{
    http1::ParseErrorReason,
    http2::{H2ErrorReason, H2Limit},
};

/// Ways a connection stops being tracked before it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    Idle,
    ProcessGone,
    Memory,
}

#[derive(Default)]
pub struct Metrics {
    pub events: AtomicU64,
    pub event_bytes: AtomicU64,
    pub gap_bytes: AtomicU64,
    pub reorder_gaps: AtomicU64,
    pub body_truncations: AtomicU64,
    pub exchanges_h1: AtomicU64,
    pub incomplete_exchanges: AtomicU64,
    pub connections_tracked: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_muted: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_not_http: AtomicU64,
    pub evicted_idle: AtomicU64,
    pub evicted_process_gone: AtomicU64,
    pub evicted_memory: AtomicU64,
    pub output_errors: AtomicU64,
    pub malformed_events: AtomicU64,
    /// Targets, pause, Kubernetes opt-in and configuration reloads (see `control`).
    pub control: Arc<crate::control::ControlMetrics>,
    parse_errors: [AtomicU64; 32],
    pub exchanges_h2: AtomicU64,
    pub exchanges_grpc: AtomicU64,
    /// HTTP/2 exchanges written with `incomplete: hpack_state_unknown`.
    pub h2_hpack_state_unknown: AtomicU64,
    /// HTTP/2 connections by how they were recognised.
    pub h2_connections_preface: AtomicU64,
    pub h2_connections_upgrade: AtomicU64,
    pub h2_connections_mid_stream: AtomicU64,
    /// Bytes of HTTP/2 connections joined mid-way with the role unknown, dropped before the
    /// frames said which end is the client (`--max-conn-buffer-bytes`, or the connection ended).
    pub h2_undecided_bytes_dropped: AtomicU64,
    h2_parse_errors: [AtomicU64; 16],
    h2_limits: [AtomicU64; 8],
    kernel: std::sync::OnceLock<Arc<KernelCounterReader>>,
    ready: AtomicBool,
    /// The gRPC exporter's counters (`capture_export_*`), served when `--collector` is set.
    pub export: crate::export::metrics::ExportMetrics,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn parse_error(&self, reason: ParseErrorReason) {
        if let Some(i) = ParseErrorReason::ALL.iter().position(|r| *r == reason) {
            self.parse_errors[i.min(31)].fetch_add(1, Relaxed);
        }
    }

    pub fn parse_errors(&self, reason: ParseErrorReason) -> u64 {
        ParseErrorReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.parse_errors[i.min(31)].load(Relaxed))
    }

    pub fn h2_parse_error(&self, reason: H2ErrorReason) {
        if let Some(i) = H2ErrorReason::ALL.iter().position(|r| *r == reason) {
            self.h2_parse_errors[i.min(15)].fetch_add(1, Relaxed);
        }
    }

    pub fn h2_parse_errors(&self, reason: H2ErrorReason) -> u64 {
        H2ErrorReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.h2_parse_errors[i.min(15)].load(Relaxed))
    }

    pub fn h2_limit(&self, limit: H2Limit) {
        if let Some(i) = H2Limit::ALL.iter().position(|l| *l == limit) {
            self.h2_limits[i.min(7)].fetch_add(1, Relaxed);
        }
    }

    pub fn h2_limits(&self, limit: H2Limit) -> u64 {
        H2Limit::ALL
            .iter()
            .position(|l| *l == limit)
            .map_or(0, |i| self.h2_limits[i.min(7)].load(Relaxed))
    }

    pub fn evicted(&self, why: Eviction) {
        let c = match why {
            Eviction::Idle => &self.evicted_idle,
            Eviction::ProcessGone => &self.evicted_process_gone,
            Eviction::Memory => &self.evicted_memory,
        };
        c.fetch_add(1, Relaxed);
    }

    /// Where the kernel's own counters are read at scrape time.
    pub fn set_kernel(&self, reader: Arc<KernelCounterReader>) {
        let _ = self.kernel.set(reader);
    }

    pub fn kernel(&self) -> KernelCounters {
        self.kernel.get().map(|k| k.read()).unwrap_or_default()
    }

    /// The hook label and each kernel program's run statistics.
    fn render_kernel_programs(&self, out: &mut String) {
        if let Some(reader) = self.kernel.get() {
            let _ = writeln!(
                out,
                "# HELP capture_kernel_hook_info The hook the kernel programs are attached to.\n# TYPE capture_kernel_hook_info gauge\ncapture_kernel_hook_info{{hook=\"{}\"}} 1",
                reader.hook().label()
            );
            let stats = reader.program_stats();
            let _ = writeln!(
                out,
                "# HELP capture_kernel_program_run_ns_total Time the kernel programs ran (counted while kernel.bpf_stats_enabled is 1).\n# TYPE capture_kernel_program_run_ns_total counter"
            );
            for (name, s) in &stats {
                let _ = writeln!(
                    out,
                    "capture_kernel_program_run_ns_total{{program=\"{name}\"}} {}",
                    s.run_time_ns
                );
            }
            let _ = writeln!(
                out,
                "# HELP capture_kernel_program_runs_total Times the kernel programs ran (counted while kernel.bpf_stats_enabled is 1).\n# TYPE capture_kernel_program_runs_total counter"
            );
            for (name, s) in &stats {
                let _ = writeln!(
                    out,
                    "capture_kernel_program_runs_total{{program=\"{name}\"}} {}",
                    s.run_count
                );
            }
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.render_kernel_programs(&mut out);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let g = |c: &AtomicU64| c.load(Relaxed);
        let k = self.kernel();
        one(
            "capture_kernel_events_total",
            "counter",
            "Events the kernel programs handed to the ring buffer.",
            k.events,
        );
        one(
            "capture_kernel_events_lost_total",
            "counter",
            "Events the kernel could not hand over (ring buffer full).",
            k.events_lost,
        );
        one(
            "capture_kernel_bytes_lost_total",
            "counter",
            "Payload bytes of the events lost in the kernel.",
            k.bytes_lost,
        );
        one(
            "capture_kernel_truncations_total",
            "counter",
            "Transfers the kernel copied only in part (iovec or chunk limits); the rest is a gap.",
            k.truncations,
        );
        one(
            "capture_kernel_conn_table_full_total",
            "counter",
            "Connections the kernel could not track (connection map full).",
            k.conn_table_full,
        );
        one(
            "capture_kernel_unknown_syscall_total",
            "counter",
            "Socket I/O of a target process through a syscall the programs do not walk (sendmmsg, recvmmsg, splice, io_uring); its bytes are not seen.",
            k.unknown_syscall,
        );
        one(
            "capture_events_total",
            "counter",
            "Events read from the ring buffer.",
            g(&self.events),
        );
        one(
            "capture_event_bytes_total",
            "counter",
            "Payload bytes read from the ring buffer.",
            g(&self.event_bytes),
        );
        one(
            "capture_malformed_events_total",
            "counter",
            "Ring buffer records that did not parse as events.",
            g(&self.malformed_events),
        );
        one(
            "capture_gap_bytes_total",
            "counter",
            "Bytes that crossed a socket but were not captured.",
            g(&self.gap_bytes),
        );
        one(
            "capture_reorder_gaps_total",
            "counter",
            "Holes in a byte stream given up on after waiting for out-of-order events.",
            g(&self.reorder_gaps),
        );
        one(
            "capture_body_truncations_total",
            "counter",
            "Bodies cut at --max-body-bytes.",
            g(&self.body_truncations),
        );
        let _ = writeln!(
            out,
            "# HELP capture_exchanges_total Exchanges written to the sinks.\n# TYPE capture_exchanges_total counter"
        );
        let _ = writeln!(
            out,
            "capture_exchanges_total{{protocol=\"h1\"}} {}",
            g(&self.exchanges_h1)
        );
        for (protocol, c) in [("h2", &self.exchanges_h2), ("grpc", &self.exchanges_grpc)] {
            let _ = writeln!(
                out,
                "capture_exchanges_total{{protocol=\"{protocol}\"}} {}",
                g(c)
            );
        }
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        one(
            "capture_incomplete_exchanges_total",
            "counter",
            "Exchanges written with _capture.incomplete set.",
            g(&self.incomplete_exchanges),
        );
        one(
            "capture_connections_tracked",
            "gauge",
            "Connections tracked now.",
            g(&self.connections_tracked),
        );
        one(
            "capture_connections_opened_total",
            "counter",
            "Connections seen (accepted, connected or first seen mid-stream).",
            g(&self.connections_opened),
        );
        one(
            "capture_connections_muted_total",
            "counter",
            "Fds found not to be TCP sockets and switched off in the kernel.",
            g(&self.connections_muted),
        );
        one(
            "capture_connections_not_http_total",
            "counter",
            "TCP connections whose traffic was not HTTP (HTTP/1 or HTTP/2) and was switched off.",
            g(&self.connections_not_http),
        );
        one(
            "capture_connections_refused_total",
            "counter",
            "Connections not tracked because --max-connections was reached.",
            g(&self.connections_refused),
        );
        one(
            "capture_output_errors_total",
            "counter",
            "Exchanges a sink failed to write.",
            g(&self.output_errors),
        );
        let _ = writeln!(
            out,
            "# HELP capture_connections_evicted_total Connections forgotten before their close.\n# TYPE capture_connections_evicted_total counter"
        );
        for (reason, c) in [
            ("idle", &self.evicted_idle),
            ("process_gone", &self.evicted_process_gone),
            ("memory", &self.evicted_memory),
        ] {
            let _ = writeln!(
                out,
                "capture_connections_evicted_total{{reason=\"{reason}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP capture_parse_errors_total Protocol parse errors by reason.\n# TYPE capture_parse_errors_total counter"
        );
        for (i, reason) in ParseErrorReason::ALL.iter().enumerate().take(32) {
            let _ = writeln!(
                out,
                "capture_parse_errors_total{{protocol=\"h1\",reason=\"{}\"}} {}",
                reason.as_str(),
                g(&self.parse_errors[i])
            );
        }
        for (i, reason) in H2ErrorReason::ALL.iter().enumerate().take(16) {
            let _ = writeln!(
                out,
                "capture_parse_errors_total{{protocol=\"h2\",reason=\"{}\"}} {}",
                reason.as_str(),
                g(&self.h2_parse_errors[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP capture_h2_limit_hits_total HTTP/2 limits hit (--max-h2-header-list-bytes, --max-h2-streams, --max-hpack-table-bytes, --max-h2-conn-body-bytes).\n# TYPE capture_h2_limit_hits_total counter"
        );
        for (i, limit) in H2Limit::ALL.iter().enumerate().take(8) {
            let _ = writeln!(
                out,
                "capture_h2_limit_hits_total{{limit=\"{}\"}} {}",
                limit.as_str(),
                g(&self.h2_limits[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP capture_h2_connections_total HTTP/2 connections recognised, by how.\n# TYPE capture_h2_connections_total counter"
        );
        for (how, c) in [
            ("preface", &self.h2_connections_preface),
            ("upgrade", &self.h2_connections_upgrade),
            ("mid_stream", &self.h2_connections_mid_stream),
        ] {
            let _ = writeln!(
                out,
                "capture_h2_connections_total{{detected=\"{how}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            out,
            "# HELP capture_h2_hpack_state_unknown_total HTTP/2 exchanges whose header fields could not all be decoded (connection older than the capture, or bytes lost).\n# TYPE capture_h2_hpack_state_unknown_total counter\ncapture_h2_hpack_state_unknown_total {}",
            g(&self.h2_hpack_state_unknown)
        );
        let _ = writeln!(
            out,
            "# HELP capture_h2_undecided_bytes_dropped_total Bytes of HTTP/2 connections joined mid-way, with the role unknown, dropped before their frames said which end is the client (--max-conn-buffer-bytes, or the connection ended).\n# TYPE capture_h2_undecided_bytes_dropped_total counter\ncapture_h2_undecided_bytes_dropped_total {}",
            g(&self.h2_undecided_bytes_dropped)
        );
        self.control.render(&mut out);
        self.export.render(&mut out);
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the task is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    info!(%addr, "metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = Arc::clone(&metrics);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let metrics = Arc::clone(&metrics);
                    async move { Ok::<_, std::convert::Infallible>(route(&req, &metrics)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(error = %e, "metrics connection");
                }
            });
        }
    });
    Ok(())
}

fn route(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" if metrics.is_ready() => (StatusCode::OK, "ready\n".to_string()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
