//! What the capture path counts, from the ring buffer to the sinks: events and bytes, gaps,
//! connections and their evictions, exchanges by protocol, parse errors and HTTP/2 limits.
//! Counting is a relaxed atomic add, cheap enough for the per-event path; the pipeline and the
//! connection table share one [`Metrics`], registered with the daemon's telemetry.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use capture_http::{
    http1::ParseErrorReason,
    http2::{H2ErrorReason, H2Limit},
};
use prometheus::proto::MetricType;

use crate::telemetry::metrics::{Families, Source};

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
    pub loss_gaps: AtomicU64,
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
    /// What all connections held at the last look (`--max-buffered-bytes`).
    pub buffered_bytes: AtomicU64,
    /// Times a connection's bodies (and bytes waiting behind holes) were dropped because all
    /// connections together held more than `--max-buffered-bytes`, and the bytes freed.
    pub memory_sheds: AtomicU64,
    pub memory_shed_bytes: AtomicU64,
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
}

impl Source for Metrics {
    fn collect(&self, out: &mut Families) {
        let g = |c: &AtomicU64| c.load(Relaxed);
        for (name, help, value) in [
            (
                "capture_events_total",
                "Events read from the ring buffer.",
                &self.events,
            ),
            (
                "capture_event_bytes_total",
                "Payload bytes read from the ring buffer.",
                &self.event_bytes,
            ),
            (
                "capture_malformed_events_total",
                "Ring buffer records that did not parse as events.",
                &self.malformed_events,
            ),
            (
                "capture_gap_bytes_total",
                "Bytes that crossed a socket but were not captured.",
                &self.gap_bytes,
            ),
            (
                "capture_reorder_gaps_total",
                "Holes in a byte stream given up on after waiting for out-of-order events.",
                &self.reorder_gaps,
            ),
            (
                "capture_loss_gaps_total",
                "Holes in a byte stream taken as gaps at once because the kernel had just lost events (ring buffer full).",
                &self.loss_gaps,
            ),
            (
                "capture_body_truncations_total",
                "Bodies cut at --max-body-bytes, as captured or as content-decoded.",
                &self.body_truncations,
            ),
            (
                "capture_incomplete_exchanges_total",
                "Exchanges written with _capture.incomplete set.",
                &self.incomplete_exchanges,
            ),
            (
                "capture_connections_opened_total",
                "Connections seen (accepted, connected or first seen mid-stream).",
                &self.connections_opened,
            ),
            (
                "capture_connections_muted_total",
                "Fds found not to be TCP sockets and switched off in the kernel.",
                &self.connections_muted,
            ),
            (
                "capture_connections_not_http_total",
                "TCP connections whose traffic was not HTTP (HTTP/1 or HTTP/2) and was switched off.",
                &self.connections_not_http,
            ),
            (
                "capture_connections_refused_total",
                "Connections not tracked because --max-connections was reached.",
                &self.connections_refused,
            ),
            (
                "capture_output_errors_total",
                "Exchanges a sink failed to write.",
                &self.output_errors,
            ),
            (
                "capture_h2_hpack_state_unknown_total",
                "HTTP/2 exchanges whose header fields could not all be decoded (connection older than the capture, or bytes lost).",
                &self.h2_hpack_state_unknown,
            ),
            (
                "capture_memory_sheds_total",
                "Times the connection holding most dropped the bodies it held (cut and flagged truncated) and the bytes waiting behind its holes, because all connections together held more than --max-buffered-bytes.",
                &self.memory_sheds,
            ),
            (
                "capture_memory_shed_bytes_total",
                "Bytes freed by capture_memory_sheds_total.",
                &self.memory_shed_bytes,
            ),
            (
                "capture_h2_undecided_bytes_dropped_total",
                "Bytes of HTTP/2 connections joined mid-way, with the role unknown, dropped before their frames said which end is the client (--max-conn-buffer-bytes, or the connection ended).",
                &self.h2_undecided_bytes_dropped,
            ),
        ] {
            out.counter(name, help, g(value));
        }
        out.gauge(
            "capture_connections_tracked",
            "Connections tracked now.",
            g(&self.connections_tracked),
        );
        out.gauge(
            "capture_buffered_bytes",
            "Bytes all connections held (bodies, heads, bytes waiting behind holes) when last counted, after every --max-buffered-bytes / 8 bytes captured.",
            g(&self.buffered_bytes),
        );
        out.labelled(
            "capture_exchanges_total",
            "Exchanges written to the sinks.",
            MetricType::COUNTER,
            &["protocol"],
            [
                (&["h1"][..], g(&self.exchanges_h1)),
                (&["h2"][..], g(&self.exchanges_h2)),
                (&["grpc"][..], g(&self.exchanges_grpc)),
            ],
        );
        out.labelled(
            "capture_connections_evicted_total",
            "Connections forgotten before their close.",
            MetricType::COUNTER,
            &["reason"],
            [
                (&["idle"][..], g(&self.evicted_idle)),
                (&["process_gone"][..], g(&self.evicted_process_gone)),
                (&["memory"][..], g(&self.evicted_memory)),
            ],
        );
        let h1: Vec<[&str; 2]> = ParseErrorReason::ALL
            .iter()
            .take(32)
            .map(|r| ["h1", r.as_str()])
            .collect();
        let h2: Vec<[&str; 2]> = H2ErrorReason::ALL
            .iter()
            .take(16)
            .map(|r| ["h2", r.as_str()])
            .collect();
        out.labelled(
            "capture_parse_errors_total",
            "Protocol parse errors by reason.",
            MetricType::COUNTER,
            &["protocol", "reason"],
            h1.iter()
                .zip(&self.parse_errors)
                .chain(h2.iter().zip(&self.h2_parse_errors))
                .map(|(labels, c)| (&labels[..], g(c))),
        );
        let limits: Vec<[&str; 1]> = H2Limit::ALL.iter().take(8).map(|l| [l.as_str()]).collect();
        out.labelled(
            "capture_h2_limit_hits_total",
            "HTTP/2 limits hit (--max-h2-header-list-bytes, --max-h2-streams, --max-hpack-table-bytes, --max-h2-conn-body-bytes).",
            MetricType::COUNTER,
            &["limit"],
            limits.iter().zip(&self.h2_limits).map(|(labels, c)| (&labels[..], g(c))),
        );
        out.labelled(
            "capture_h2_connections_total",
            "HTTP/2 connections recognised, by how.",
            MetricType::COUNTER,
            &["detected"],
            [
                (&["preface"][..], g(&self.h2_connections_preface)),
                (&["upgrade"][..], g(&self.h2_connections_upgrade)),
                (&["mid_stream"][..], g(&self.h2_connections_mid_stream)),
            ],
        );
    }
}
