//! Counters of what the collector stores, refuses and streams, served in the Prometheus text
//! format on `--metrics-addr` (with `/healthz`). No label or value carries an organisation, a
//! token or captured content: the endpoint is usually reachable by more people than the data.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

/// Why a pushed batch was refused (`capture_collector_batches_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Larger than `--max-batch-bytes` (refused by the gRPC decoder, `OUT_OF_RANGE`).
    BatchTooLarge,
    /// More exchanges than `--max-batch-exchanges`.
    TooManyExchanges,
    /// A batch or exchange the wire contract does not allow.
    Malformed,
    /// Not a protobuf `ExchangeBatch` at all (refused by the gRPC decoder).
    Undecodable,
    /// The store could not write it (the client retries).
    Storage,
}

impl Rejection {
    pub const ALL: [Self; 5] = [
        Self::BatchTooLarge,
        Self::TooManyExchanges,
        Self::Malformed,
        Self::Undecodable,
        Self::Storage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BatchTooLarge => "batch_too_large",
            Self::TooManyExchanges => "too_many_exchanges",
            Self::Malformed => "malformed",
            Self::Undecodable => "invalid_protobuf",
            Self::Storage => "storage_error",
        }
    }
}

/// Why a call was refused as unauthenticated (`capture_collector_auth_rejected_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `authorization: Bearer` metadata.
    Missing,
    /// Not a token of ours by its form.
    Malformed,
    /// Well-formed, but not issued here.
    Unknown,
    Revoked,
    /// The token file could not be read; every call is refused until it can.
    StoreUnreadable,
}

impl AuthFailure {
    pub const ALL: [Self; 5] = [
        Self::Missing,
        Self::Malformed,
        Self::Unknown,
        Self::Revoked,
        Self::StoreUnreadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::StoreUnreadable => "token_store_unreadable",
        }
    }
}

/// The RPCs, as the `rpc` label of `capture_collector_scope_denied_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    Push,
    Watch,
    Diff,
}

impl Rpc {
    pub const ALL: [Self; 3] = [Self::Push, Self::Watch, Self::Diff];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Watch => "watch",
            Self::Diff => "diff",
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    pub batches_stored: AtomicU64,
    pub batches_duplicate: AtomicU64,
    pub exchanges_stored: AtomicU64,
    /// Bytes appended to segments (records with their framing, sealed size when encrypted).
    pub bytes_stored: AtomicU64,
    rejected: [AtomicU64; 5],
    auth_rejected: [AtomicU64; 5],
    /// Calls refused for a token without the RPC's scope, by RPC and missing scope.
    scope_denied: [AtomicU64; 9],
    /// Calls refused because their peer failed to authenticate too often (`--auth-failure-*`).
    pub auth_rate_limited: AtomicU64,
    /// Failed authentications of a peer not tracked because the table was full
    /// (`--auth-max-peers`).
    pub auth_peers_untracked: AtomicU64,
    /// Refusal audit lines left out (`--audit-refusals-per-second`).
    pub audit_suppressed: AtomicU64,
    /// Pushes that waited for a slot (`--max-concurrent-pushes`).
    pub pushes_queued: AtomicU64,
    /// TLS handshakes that did not finish within `--tls-handshake-timeout`.
    pub tls_handshake_timeouts: AtomicU64,
    /// TLS handshakes that failed (not TLS, bad version, the client gave up...).
    pub tls_handshake_failures: AtomicU64,
    /// Connections closed unanswered: `--max-pending-handshakes` were under way.
    pub tls_handshakes_refused: AtomicU64,
    /// TLS handshakes under way now.
    pub tls_handshakes_pending: AtomicU64,
    /// Watch streams open now.
    pub watchers: AtomicU64,
    /// Watch streams refused by `--max-watchers`.
    pub watchers_refused: AtomicU64,
    pub watch_sent: AtomicU64,
    /// Exchanges watchers missed because they read too slowly (`--watch-buffer`).
    pub watch_lagged: AtomicU64,
    /// Torn records cut off the end of a segment at start-up.
    pub torn_records: AtomicU64,
    /// Segments the file store removed for retention.
    pub retention_segments_removed: AtomicU64,
    /// Exchanges the PostgreSQL store deleted for retention.
    pub retention_exchanges_removed: AtomicU64,
    /// Retention runs that failed (logged; the next run tries again).
    pub retention_failures: AtomicU64,
    /// Smart Diff requests answered with a report.
    pub diffs_run: AtomicU64,
    /// Smart Diff requests refused: a selection past `--max-diff-exchanges`.
    pub diffs_too_large: AtomicU64,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn rejected(&self, why: Rejection) {
        if let Some(i) = Rejection::ALL.iter().position(|r| *r == why) {
            self.rejected[i].fetch_add(1, Relaxed);
        }
    }

    pub fn rejections(&self, why: Rejection) -> u64 {
        Rejection::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |i| self.rejected[i].load(Relaxed))
    }

    pub fn auth_rejected(&self, why: AuthFailure) {
        if let Some(i) = AuthFailure::ALL.iter().position(|r| *r == why) {
            self.auth_rejected[i].fetch_add(1, Relaxed);
        }
    }

    pub fn scope_denied(&self, rpc: Rpc, scope: crate::tokens::Scope) {
        if let Some(i) = Self::scope_index(rpc, scope) {
            self.scope_denied[i].fetch_add(1, Relaxed);
        }
    }

    pub fn scope_denials(&self, rpc: Rpc, scope: crate::tokens::Scope) -> u64 {
        Self::scope_index(rpc, scope).map_or(0, |i| self.scope_denied[i].load(Relaxed))
    }

    fn scope_index(rpc: Rpc, scope: crate::tokens::Scope) -> Option<usize> {
        let r = Rpc::ALL.iter().position(|x| *x == rpc)?;
        let s = crate::tokens::Scope::ALL.iter().position(|x| *x == scope)?;
        Some(r * crate::tokens::Scope::ALL.len() + s)
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "capture_collector_batches_stored_total",
            "Batches stored durably and acknowledged.",
            g(&self.batches_stored),
        );
        counter(
            "capture_collector_batches_duplicate_total",
            "Batches acknowledged as already stored; nothing stored again.",
            g(&self.batches_duplicate),
        );
        counter(
            "capture_collector_exchanges_stored_total",
            "Exchanges stored.",
            g(&self.exchanges_stored),
        );
        counter(
            "capture_collector_bytes_stored_total",
            "Bytes appended to storage segments.",
            g(&self.bytes_stored),
        );
        counter(
            "capture_collector_watchers_refused_total",
            "Watch streams refused by --max-watchers.",
            g(&self.watchers_refused),
        );
        counter(
            "capture_collector_watch_sent_total",
            "Exchanges sent to watchers.",
            g(&self.watch_sent),
        );
        counter(
            "capture_collector_watch_lagged_total",
            "Exchanges watchers missed because they read too slowly.",
            g(&self.watch_lagged),
        );
        counter(
            "capture_collector_torn_records_total",
            "Torn records cut off the end of a segment at start-up.",
            g(&self.torn_records),
        );
        counter(
            "capture_collector_retention_segments_removed_total",
            "Storage segments removed for retention (file store).",
            g(&self.retention_segments_removed),
        );
        counter(
            "capture_collector_retention_exchanges_removed_total",
            "Exchanges deleted for retention (PostgreSQL store).",
            g(&self.retention_exchanges_removed),
        );
        counter(
            "capture_collector_diffs_total",
            "Smart Diff requests answered with a report.",
            g(&self.diffs_run),
        );
        counter(
            "capture_collector_diffs_too_large_total",
            "Smart Diff requests refused: a selection past --max-diff-exchanges.",
            g(&self.diffs_too_large),
        );
        counter(
            "capture_collector_retention_failures_total",
            "Retention runs that failed.",
            g(&self.retention_failures),
        );
        counter(
            "capture_collector_auth_rate_limited_total",
            "Calls refused unread: their peer failed to authenticate too often.",
            g(&self.auth_rate_limited),
        );
        counter(
            "capture_collector_auth_peers_untracked_total",
            "Failed authentications of peers not tracked: the table was full (--auth-max-peers).",
            g(&self.auth_peers_untracked),
        );
        counter(
            "capture_collector_audit_suppressed_total",
            "Refusal audit lines left out by --audit-refusals-per-second.",
            g(&self.audit_suppressed),
        );
        counter(
            "capture_collector_pushes_queued_total",
            "Pushes that waited for a slot: --max-concurrent-pushes were being stored.",
            g(&self.pushes_queued),
        );
        counter(
            "capture_collector_tls_handshake_timeouts_total",
            "TLS handshakes that did not finish within --tls-handshake-timeout.",
            g(&self.tls_handshake_timeouts),
        );
        counter(
            "capture_collector_tls_handshake_failures_total",
            "TLS handshakes that failed.",
            g(&self.tls_handshake_failures),
        );
        counter(
            "capture_collector_tls_handshakes_refused_total",
            "Connections closed unanswered: --max-pending-handshakes were under way.",
            g(&self.tls_handshakes_refused),
        );
        let _ = writeln!(
            out,
            "# HELP capture_collector_tls_handshakes_pending TLS handshakes under way.\n\
             # TYPE capture_collector_tls_handshakes_pending gauge\n\
             capture_collector_tls_handshakes_pending {}",
            g(&self.tls_handshakes_pending)
        );
        let _ = writeln!(
            out,
            "# HELP capture_collector_scope_denied_total Calls refused: the token lacks the RPC's scope.\n\
             # TYPE capture_collector_scope_denied_total counter"
        );
        for rpc in Rpc::ALL {
            for scope in crate::tokens::Scope::ALL {
                let _ = writeln!(
                    out,
                    "capture_collector_scope_denied_total{{rpc=\"{}\",scope=\"{}\"}} {}",
                    rpc.as_str(),
                    scope.as_str(),
                    self.scope_denials(rpc, scope)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP capture_collector_watchers Watch streams open.\n\
             # TYPE capture_collector_watchers gauge\n\
             capture_collector_watchers {}",
            g(&self.watchers)
        );
        let _ = writeln!(
            out,
            "# HELP capture_collector_batches_rejected_total Batches refused, by reason.\n\
             # TYPE capture_collector_batches_rejected_total counter"
        );
        for (i, why) in Rejection::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "capture_collector_batches_rejected_total{{reason=\"{}\"}} {}",
                why.as_str(),
                g(&self.rejected[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP capture_collector_auth_rejected_total Calls refused as unauthenticated, by reason.\n\
             # TYPE capture_collector_auth_rejected_total counter"
        );
        for (i, why) in AuthFailure::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "capture_collector_auth_rejected_total{{reason=\"{}\"}} {}",
                why.as_str(),
                g(&self.auth_rejected[i])
            );
        }
        out
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` on a task of its own.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "metrics listening");
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
    Ok(bound)
}

fn route(req: &Request<hyper::body::Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, metrics.render()),
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_reason() {
        let m = Metrics::default();
        m.rejected(Rejection::TooManyExchanges);
        m.auth_rejected(AuthFailure::Revoked);
        let text = m.render();
        assert!(
            text.contains(
                "capture_collector_batches_rejected_total{reason=\"too_many_exchanges\"} 1"
            )
        );
        assert!(text.contains("capture_collector_auth_rejected_total{reason=\"revoked\"} 1"));
        assert!(text.contains("capture_collector_batches_rejected_total{reason=\"malformed\"} 0"));
        assert_eq!(m.rejections(Rejection::TooManyExchanges), 1);
    }
}
