//! One HTTP/2 stream as it is assembled into an [`Exchange`]: the request (client-sent header
//! blocks and DATA) and the response (server-sent), each with headers, body and trailers.

use crate::body::CappedBody;
use capture_model::exchange::{
    Body, ConnMeta, Exchange, Headers, HttpVersion, Incomplete, Protocol, Request, Response,
    Timing, Workload, header_value,
};

use super::grpc;

/// One direction of a stream.
#[derive(Debug, Default)]
pub(super) struct Message {
    /// A header block was seen (for a response: a final, non-1xx one).
    pub started: bool,
    /// END_STREAM was seen.
    pub ended: bool,
    pub headers: Headers,
    /// Header block bytes (HEADERS and CONTINUATION fragments, without padding).
    pub headers_size: u64,
    /// DATA payloads (padding removed).
    pub body: CappedBody,
    pub trailers: Headers,
    /// A trailer block was seen.
    pub has_trailers: bool,
    pub start_ns: Option<u64>,
    pub end_ns: u64,
}

impl Message {
    /// RFC 9113 §8.1: one trailer section at most, which ends the message. A further block
    /// is dropped (false), so a peer cannot make a stream hold ever more fields.
    pub fn add_trailers(&mut self, fields: &mut Headers) -> bool {
        if self.has_trailers {
            return false;
        }
        self.has_trailers = true;
        self.trailers.append(fields);
        true
    }

    /// Bytes of the header and trailer fields held.
    pub fn header_bytes(&self) -> usize {
        self.headers.text_len() + self.trailers.text_len()
    }

    pub fn touch(&mut self, ts: u64) {
        self.start_ns.get_or_insert(ts);
        self.end_ns = self.end_ns.max(ts);
    }
}

/// A stream being assembled.
#[derive(Debug, Default)]
pub(super) struct Stream {
    pub request: Message,
    pub response: Message,
    /// The request was sent in HTTP/1.1 with `Upgrade: h2c` (stream 1 of an upgrade).
    pub request_version: Option<HttpVersion>,
    /// Request line of an upgraded request (method, target), which has no pseudo-headers.
    pub upgraded_target: Option<(String, String)>,
    /// The body of an upgraded request, decoded by the HTTP/1 decoder.
    pub request_body: Option<Body>,
    pub incomplete: Option<Incomplete>,
    /// Names of never-indexed fields dropped at decoding (see `redact::keeps_never_indexed`).
    pub redacted: Vec<String>,
    /// The stream was first seen mid-way (its opening HEADERS were not captured).
    pub headless: bool,
    /// Body bytes this stream holds against the connection's budget.
    pub held: usize,
}

impl Stream {
    /// Records why the exchange is incomplete; the first reason wins.
    pub fn mark(&mut self, why: Incomplete) {
        self.incomplete.get_or_insert(why);
    }

    pub fn is_done(&self) -> bool {
        self.request.ended && self.response.ended
    }

    /// The exchange; `max_body` bounds decoded bodies. Also says whether a gRPC body did not
    /// follow the message framing (a parse error to count).
    pub fn into_exchange(self, max_body: usize) -> (Exchange, bool) {
        let Stream {
            request,
            response,
            request_version,
            upgraded_target,
            request_body,
            incomplete,
            redacted,
            headless: _,
            held: _,
        } = self;
        let req_ct = header_value(&request.headers, "content-type");
        let resp_ct = header_value(&response.headers, "content-type");
        let is_grpc = grpc::is_grpc(req_ct) || grpc::is_grpc(resp_ct);
        let web = grpc::is_grpc_web(req_ct) || grpc::is_grpc_web(resp_ct);
        let (method, target) = match upgraded_target {
            Some(t) => t,
            None => {
                let method = header_value(&request.headers, ":method").unwrap_or("");
                // RFC 9113 §8.5: CONNECT carries only `:authority`, which is its target.
                let target = if method.eq_ignore_ascii_case("CONNECT") {
                    header_value(&request.headers, ":authority")
                } else {
                    header_value(&request.headers, ":path")
                };
                (method.to_owned(), target.unwrap_or("").to_owned())
            }
        };
        let mut framing_error = false;
        let mut body_of = |m: &mut Message| -> (Body, Headers) {
            let raw = std::mem::take(&mut m.body);
            if is_grpc {
                let enc = header_value(&m.headers, "grpc-encoding");
                let complete = raw.complete();
                let msgs = grpc::messages(raw.data, raw.wire_size, complete, enc, web, max_body);
                framing_error |= msgs.framing_error;
                (msgs.body, msgs.web_trailers)
            } else {
                let ce = header_value(&m.headers, "content-encoding");
                (raw.finish(ce, max_body), Headers::new())
            }
        };
        let mut request = request;
        let mut response = response;
        let req_body = match request_body {
            Some(body) => body,
            None => body_of(&mut request).0,
        };
        // A stream joined mid-way may have a response whose headers were not seen.
        let response_seen = response.started
            || response.ended
            || response.body.wire_size > 0
            || !response.trailers.is_empty();
        let response_out = if response_seen {
            let (body, mut web_trailers) = body_of(&mut response);
            let status = header_value(&response.headers, ":status")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let mut trailers = std::mem::take(&mut response.trailers);
            trailers.append(&mut web_trailers);
            Some(Response {
                status,
                reason: String::new(),
                version: HttpVersion::Http2,
                headers: std::mem::take(&mut response.headers),
                headers_size: response.headers_size,
                body,
                trailers,
            })
        } else {
            None
        };
        let grpc_detail = is_grpc.then(|| {
            let path = if method.is_empty() {
                String::new()
            } else {
                target.clone()
            };
            grpc::detail(
                &path,
                response_out.as_ref().map(|r| (&r.headers, &r.trailers)),
            )
        });
        let request_start = request.start_ns.or(response.start_ns).unwrap_or(0);
        let exchange = Exchange {
            protocol: if is_grpc {
                Protocol::Grpc
            } else {
                Protocol::H2
            },
            request: Request {
                method,
                target,
                version: request_version.unwrap_or(HttpVersion::Http2),
                headers: request.headers,
                headers_size: request.headers_size,
                body: req_body,
                trailers: request.trailers,
            },
            timing: Timing {
                request_start_ns: request_start,
                request_end_ns: request.end_ns.max(request_start),
                response_start_ns: response_out.as_ref().and(response.start_ns),
                response_end_ns: response_out.as_ref().map(|_| response.end_ns),
            },
            response: response_out,
            incomplete,
            conn: ConnMeta::default(),
            pid: 0,
            workload: Workload::unknown(),
            redacted,
            routing_key: None,
            grpc: grpc_detail,
            cgroup_id: 0,
        };
        (exchange, framing_error)
    }
}
