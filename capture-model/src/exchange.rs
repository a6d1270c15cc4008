//! The decoded request/response exchange: what the protocol decoders produce, redaction
//! rewrites, and the sinks serialise (as a HAR entry, see `har`).

use std::{net::SocketAddr, sync::Arc};

/// HTTP version as it appeared on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
}

impl HttpVersion {
    /// The HAR `httpVersion` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        }
    }
}

/// Application protocol of the connection, `_capture.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    H1,
    H2,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::Grpc => "grpc",
        }
    }
}

pub use crate::headers::{Header, HeaderRef, Headers};

/// Connection-specific fields (RFC 9110 §7.6.1; RFC 9113 §8.2.2 forbids them in HTTP/2), in
/// lowercase. `Proxy-Connection` is not standard but is sent by old clients with the same
/// meaning. Redaction removes them, replay never forwards them, the diff ignores them.
pub const HOP_BY_HOP_FIELDS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether the lowercase field name `name` is one of [`HOP_BY_HOP_FIELDS`].
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP_FIELDS.contains(&name)
}

/// Finds the first header named `name` (ASCII case-insensitive).
pub fn header_value<'h>(headers: &'h Headers, name: &str) -> Option<&'h str> {
    headers.value(name)
}

/// A message body as captured.
///
/// `data` holds the content with transfer coding (chunked) removed and content coding (gzip,
/// deflate, br, zstd) decoded, cut at the configured body limit. `Debug` shows sizes, never
/// content.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Body {
    pub data: Vec<u8>,
    /// Bytes of the body on the wire after transfer decoding and before content decoding,
    /// counted even past the capture limit (HAR `bodySize`, `_capture.original_size`).
    pub wire_size: u64,
    /// Set when `data` is not the whole decoded body: the limit was hit, bytes were lost in a
    /// gap, or the content coding could not be decoded (then `data` is the raw prefix).
    pub truncated: bool,
    /// The content coding that was decoded (`gzip`, `br`, ...), if any.
    pub decoded_from: Option<String>,
    /// Content coding present but not decodable (unknown coding, corrupt stream); `data` then
    /// holds the encoded bytes as captured.
    pub decode_error: Option<String>,
    /// The size of the decoded content before redaction replaced credential values in `data`
    /// (HAR `content.size`), set only when that changed the length; `None` means
    /// `data.len()`.
    pub decoded_size: Option<u64>,
}

impl Body {
    /// Bytes of decoded content captured, as they were before redaction (HAR `content.size`).
    pub fn decoded_size(&self) -> u64 {
        self.decoded_size.unwrap_or(self.data.len() as u64)
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("captured", &self.data.len())
            .field("wire_size", &self.wire_size)
            .field("truncated", &self.truncated)
            .field("decoded_from", &self.decoded_from)
            .field("decode_error", &self.decode_error)
            .field("decoded_size", &self.decoded_size)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request-target as sent (origin-form `/p?q`, absolute-form, authority-form or `*`).
    pub target: String,
    pub version: HttpVersion,
    pub headers: Headers,
    /// Bytes of the request line and header block, CRLFs included (HAR `headersSize`).
    pub headers_size: u64,
    pub body: Body,
    pub trailers: Headers,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub version: HttpVersion,
    pub headers: Headers,
    pub headers_size: u64,
    pub body: Body,
    /// Trailer fields (chunked HTTP/1, HTTP/2), `_trailers` in the output.
    pub trailers: Headers,
}

/// Kernel timestamps (CLOCK_MONOTONIC ns) of the exchange's edges; `None` when not seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub request_start_ns: u64,
    pub request_end_ns: u64,
    pub response_start_ns: Option<u64>,
    pub response_end_ns: Option<u64>,
}

/// Why an exchange is emitted without being whole (`_capture.incomplete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incomplete {
    /// The connection closed before the response (or its body) was complete.
    ConnectionClosed,
    /// Bytes were lost in a gap inside this exchange.
    Gap,
    /// The exchange was flushed at shutdown or by idle eviction.
    Flushed,
    /// No response arrived: the connection went idle or the pipeline limit evicted it.
    NoResponse,
    /// The response could not be parsed.
    ParseError,
    /// HTTP/2 only: the HPACK dynamic table was unknown (connection predates capture).
    HpackStateUnknown,
    /// HTTP/2 only: the stream was reset (RST_STREAM).
    Reset,
}

impl Incomplete {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionClosed => "connection_closed",
            Self::Gap => "gap",
            Self::Flushed => "flushed",
            Self::NoResponse => "no_response",
            Self::ParseError => "parse_error",
            Self::HpackStateUnknown => "hpack_state_unknown",
            Self::Reset => "reset",
        }
    }

    /// Every reason, for exhaustive tests and for parsing.
    pub const ALL: [Self; 7] = [
        Self::ConnectionClosed,
        Self::Gap,
        Self::Flushed,
        Self::NoResponse,
        Self::ParseError,
        Self::HpackStateUnknown,
        Self::Reset,
    ];

    /// The reason named by its `_capture.incomplete` string ([`Self::as_str`]).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == text)
    }
}

/// Which side of the connection the captured process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
        }
    }
}

/// Where the exchange was captured. `src` is the client's endpoint and `dst` the server's,
/// whichever of them the captured process is (`role`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnMeta {
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    pub role: Option<Role>,
    /// Stable id of the connection for HAR `connection`: `tgid:fd:generation`.
    pub id: Arc<str>,
}

impl ConnMeta {
    /// `src` is always the client's endpoint, `dst` the server's.
    pub fn set_endpoints(&mut self, role: Role, local: SocketAddr, remote: SocketAddr) {
        self.role = Some(role);
        let (src, dst) = match role {
            Role::Server => (remote, local),
            Role::Client => (local, remote),
        };
        self.src = Some(src);
        self.dst = Some(dst);
    }
}

/// The workload the captured process belongs to. Outside Kubernetes only `node` is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub owner_kind: Option<String>,
    pub owner_name: Option<String>,
    pub node: Option<String>,
}

impl Workload {
    /// The workload nothing is known of, shared: decoders give it to every exchange they
    /// make, and the connection layer replaces it, so it is counted, not allocated, each time.
    pub fn unknown() -> Arc<Self> {
        static UNKNOWN: std::sync::LazyLock<Arc<Workload>> =
            std::sync::LazyLock::new(|| Arc::new(Workload::default()));
        Arc::clone(&UNKNOWN)
    }
}

/// A request and its response (if one was seen), with where and when they were captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub protocol: Protocol,
    pub request: Request,
    pub response: Option<Response>,
    pub timing: Timing,
    pub incomplete: Option<Incomplete>,
    /// Filled by the connection layer after decoding.
    pub conn: ConnMeta,
    pub pid: u32,
    /// Shared: every exchange of a pod (or of this node, outside Kubernetes) carries the same
    /// workload, so it is counted, not copied, per exchange.
    pub workload: Arc<Workload>,
    /// Filled by redaction: names of the headers and query parameters removed.
    pub redacted: Vec<String>,
    /// Routing key from the request, when present (filled by the Kubernetes layer).
    pub routing_key: Option<String>,
    /// gRPC detail (`_grpc`), for `application/grpc*` exchanges.
    pub grpc: Option<Grpc>,
    /// The cgroup v2 id (directory inode) of the captured process, as the kernel saw it; the
    /// key from which the Kubernetes layer fills `workload`. 0 when unknown. Not serialised.
    pub cgroup_id: u64,
}

/// gRPC detail of an exchange (`_grpc`): the method from the `:path`, the outcome from the
/// trailers (or the headers of a trailers-only response).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grpc {
    pub service: String,
    pub method: String,
    /// `grpc-status`; `None` when no status was seen (stream reset, capture cut short).
    pub status: Option<u32>,
    /// `grpc-message`, percent-decoded.
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values_or_bodies() {
        let h = Header::new("Authorization", "Bearer s3cret-token");
        let b = Body {
            data: b"password=hunter2".to_vec(),
            wire_size: 16,
            ..Body::default()
        };
        let text = format!("{h:?} {b:?}");
        assert!(text.contains("Authorization"), "{text}");
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
    }
}
