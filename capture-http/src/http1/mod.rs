//! Incremental HTTP/1.x decoder for one TCP connection (RFC 9112).
//!
//! [`Http1Conn`] is fed the bytes captured on each side of a connection, in order, with gaps
//! where bytes were lost, and returns [`Http1Output`]s: request/response [`Exchange`]s, parse
//! errors (a metric label each) and protocol switches. It is pure: no I/O, no clocks (the
//! caller passes kernel timestamps), no globals; so it is tested at every split point of its
//! input and fuzzed (`capture-http/fuzz`).
//!
//! How it works:
//! - Each side has a phase: collecting a head ([`head::HeadBuf`], parsed with `httparse`),
//!   reading a body (Content-Length, chunked ([`chunked`]) or until close), or
//!   resynchronising after a gap or an error ([`sniff::Resync`]: skip to a line that is a
//!   plausible start line).
//! - Requests enter a FIFO queue as soon as their head is parsed; each final response is
//!   paired with the oldest request that has none (RFC 9112 §9.3.2: responses come in
//!   request order), and knows its method (HEAD, CONNECT decide its framing). An exchange is
//!   emitted when both its request and response are whole, in queue order.
//! - A gap inside a body of known length (or inside a chunk, or a body that runs until close)
//!   only costs body bytes: the decoder stays in step and flags the exchange
//!   `Incomplete::Gap`. Any other gap drops the side's partial message and resynchronises.
//! - 1xx responses are skipped (100-continue included); 101, and 2xx to CONNECT, end HTTP/1
//!   on the connection: the exchange is emitted, then [`Http1Output::Upgraded`].
//! - Every buffer is bounded by [`Http1Limits`]: heads and trailers by `max_header_bytes`,
//!   each captured body by `max_body_bytes` (bytes past it are counted, not kept), the queue
//!   by `max_pipelined`.
//!
//! Error values name what went wrong, never header values or body bytes.

mod chunked;
mod head;
mod sniff;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub(crate) use crate::body::CappedBody;
use capture_model::exchange::{
    Body, ConnMeta, Exchange, Headers, Incomplete, Protocol, Request, Response, Timing, Workload,
};

use chunked::{ChunkError, ChunkedDecoder};
use head::{Framing, HeadBuf, HeadProgress, MethodKind};
use sniff::Resync;

pub use sniff::{looks_like_request, looks_like_response};

/// Bounds on what one connection's decoder keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http1Limits {
    /// Body bytes captured per message (after transfer decoding); also the cap on the
    /// content-decoded size. Bytes past it are counted in `Body::wire_size`.
    pub max_body_bytes: usize,
    /// Longest head (start line and header section) and trailer section.
    pub max_header_bytes: usize,
    /// Requests waiting for their response; past it the oldest is emitted as
    /// `Incomplete::NoResponse`.
    pub max_pipelined: usize,
    /// Most field lines in one head or trailer section (`--max-header-fields`); a section
    /// with more is refused ([`ParseErrorReason::TooManyHeaderFields`]), since each field
    /// costs far more memory decoded than its few bytes on the wire.
    pub max_header_fields: usize,
}

impl Default for Http1Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_header_bytes: 64 * 1024,
            max_pipelined: 64,
            max_header_fields: head::MAX_HEADERS,
        }
    }
}

/// Which message stream bytes belong to: the side that sends requests (the client) or the
/// one that sends responses. The caller maps capture directions to sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

/// What the decoder produces.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "outputs go into a vector the caller reuses and are moved out at once; a box would \
              be one more allocation per exchange"
)]
pub enum Http1Output {
    /// A request and its response (or the part of them that was seen).
    Exchange(Exchange),
    /// Something could not be decoded; the decoder recovered (count it by label).
    Error(ParseErrorReason),
    /// The connection switched protocols (101, or 2xx to CONNECT) after the exchange just
    /// emitted; the decoder ignores further input.
    Upgraded { status: u16 },
}

/// Why decoding failed, as a metric label (`as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseErrorReason {
    #[error("invalid request head")]
    InvalidRequestHead,
    #[error("invalid response head")]
    InvalidResponseHead,
    /// A head or trailer section longer than `max_header_bytes`.
    #[error("header section too large")]
    HeaderTooLarge,
    /// A head or trailer section with more field lines than `max_header_fields`.
    #[error("too many header fields")]
    TooManyHeaderFields,
    /// Content-Length that is not a number, or several different ones (RFC 9110 §8.6).
    #[error("invalid content-length")]
    InvalidContentLength,
    /// A request whose final transfer coding is not chunked (RFC 9112 §6.3 rule 4).
    #[error("unsupported transfer-encoding")]
    UnsupportedTransferEncoding,
    #[error("invalid chunked encoding")]
    InvalidChunkedEncoding,
    /// A trailer section that does not parse as field lines; the message is kept without it.
    #[error("invalid trailer section")]
    InvalidTrailers,
    /// A response with no request waiting for it (its request was lost or not seen).
    #[error("response without request")]
    ResponseWithoutRequest,
    /// More than `max_pipelined` requests waiting; the oldest was emitted without response.
    #[error("too many pipelined requests")]
    PipelineOverflow,
}

impl ParseErrorReason {
    pub const ALL: &[ParseErrorReason] = &[
        Self::InvalidRequestHead,
        Self::InvalidResponseHead,
        Self::HeaderTooLarge,
        Self::InvalidContentLength,
        Self::UnsupportedTransferEncoding,
        Self::InvalidChunkedEncoding,
        Self::InvalidTrailers,
        Self::ResponseWithoutRequest,
        Self::PipelineOverflow,
        Self::TooManyHeaderFields,
    ];

    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequestHead => "invalid_request_head",
            Self::InvalidResponseHead => "invalid_response_head",
            Self::HeaderTooLarge => "header_too_large",
            Self::InvalidContentLength => "invalid_content_length",
            Self::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Self::InvalidChunkedEncoding => "invalid_chunked_encoding",
            Self::InvalidTrailers => "invalid_trailers",
            Self::ResponseWithoutRequest => "response_without_request",
            Self::PipelineOverflow => "pipeline_overflow",
            Self::TooManyHeaderFields => "too_many_header_fields",
        }
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// How the body being read is delimited, with what remains of it.
#[derive(Debug)]
enum BodyReader {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

impl BodyReader {
    fn new(framing: Framing) -> Option<Self> {
        match framing {
            Framing::None => None,
            Framing::Length(n) => Some(Self::Length(n)),
            Framing::Chunked => Some(Self::Chunked(ChunkedDecoder::default())),
            Framing::UntilClose => Some(Self::UntilClose),
        }
    }

    /// Feeds body bytes; returns the bytes consumed and whether the body ended.
    fn feed(
        &mut self,
        data: &[u8],
        body: &mut CappedBody,
        limits: &Http1Limits,
    ) -> (usize, Result<bool, ChunkError>) {
        match self {
            Self::Length(remaining) => {
                let take = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                body.push(&data[..take], limits.max_body_bytes);
                *remaining -= len_u64(take);
                (take, Ok(*remaining == 0))
            }
            Self::Chunked(dec) => {
                dec.feed(data, body, limits.max_body_bytes, limits.max_header_bytes)
            }
            Self::UntilClose => {
                body.push(data, limits.max_body_bytes);
                (data.len(), Ok(false))
            }
        }
    }

    /// Accounts a gap of `len` bytes if they can only be body bytes. Returns `Some(done)` if
    /// so (`done`: the body ended exactly with the gap), `None` if the gap leaves the body.
    fn absorb_gap(&mut self, len: u64, body: &mut CappedBody) -> Option<bool> {
        match self {
            Self::Length(remaining) if len <= *remaining => {
                *remaining -= len;
                body.lose(len);
                Some(*remaining == 0)
            }
            Self::Chunked(dec) => {
                let remaining = dec.data_remaining()?;
                if len > *remaining {
                    return None;
                }
                // The chunk's CRLF is still to come (an emptied chunk moves on to it with the
                // next byte), so the body goes on.
                *remaining -= len;
                body.lose(len);
                Some(false)
            }
            Self::UntilClose => {
                body.lose(len);
                Some(false)
            }
            Self::Length(_) => None,
        }
    }

    fn buffered(&self) -> usize {
        match self {
            Self::Chunked(dec) => dec.buffered(),
            _ => 0,
        }
    }

    fn into_trailers(self) -> Option<Vec<u8>> {
        match self {
            Self::Chunked(dec) => Some(dec.trailer),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Between messages, or collecting a head.
    Head,
    Body(BodyReader),
    Resync(Resync),
    /// Upgraded or closed: input is ignored.
    Stopped,
}

/// The response state of a queued request.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a slot lives in its request's queue entry, which holds the request as large; a box \
              would be one more allocation per exchange"
)]
enum Slot {
    /// No response seen yet.
    Waiting,
    /// Its response is being read.
    Reading,
    Done(Response),
    /// There will be no response to pair (lost, unparseable, connection closed, flushed).
    Lost,
}

/// A request whose head was parsed, waiting to be emitted with its response.
#[derive(Debug)]
struct Pending {
    id: u64,
    request: Request,
    method: MethodKind,
    body: CappedBody,
    done: bool,
    start_ns: u64,
    end_ns: u64,
    response: Slot,
    response_start_ns: Option<u64>,
    response_end_ns: Option<u64>,
    incomplete: Option<Incomplete>,
}

impl Pending {
    fn ready(&self) -> bool {
        self.done && matches!(self.response, Slot::Done(_) | Slot::Lost)
    }

    /// Records why the exchange is incomplete; the first reason wins.
    fn mark(&mut self, why: Incomplete) {
        self.incomplete.get_or_insert(why);
    }

    fn into_exchange(self) -> Exchange {
        let response = match self.response {
            Slot::Done(r) => Some(r),
            Slot::Waiting | Slot::Reading | Slot::Lost => None,
        };
        Exchange {
            protocol: Protocol::H1,
            request: self.request,
            timing: Timing {
                request_start_ns: self.start_ns,
                request_end_ns: self.end_ns,
                response_start_ns: response.as_ref().and(self.response_start_ns),
                response_end_ns: response.as_ref().and(self.response_end_ns),
            },
            response,
            incomplete: self.incomplete,
            conn: ConnMeta::default(),
            pid: 0,
            workload: Workload::unknown(),
            redacted: vec![],
            routing_key: None,
            grpc: None,
            cgroup_id: 0,
        }
    }
}

/// The response being read.
#[derive(Debug)]
struct ResponseInProgress {
    /// The queued request it answers; `None` when it answers nothing known (then it is
    /// read only to stay in step, and dropped).
    entry: Option<u64>,
    response: Response,
    body: CappedBody,
    start_ns: u64,
    /// Timestamp of the last byte seen.
    end_ns: u64,
    gap: bool,
}

#[derive(Debug)]
struct RequestSide {
    phase: Phase,
    head: HeadBuf,
    /// Queue id of the request whose body is being read.
    current: Option<u64>,
}

#[derive(Debug)]
struct ResponseSide {
    phase: Phase,
    head: HeadBuf,
    current: Option<ResponseInProgress>,
}

/// The HTTP/1.x decoder of one connection. See the module docs.
///
/// Its `Debug` shows state and sizes only: the buffers hold captured headers and bodies.
pub struct Http1Conn {
    limits: Http1Limits,
    queue: VecDeque<Pending>,
    next_id: u64,
    req: RequestSide,
    resp: ResponseSide,
    upgraded: Option<u16>,
    closed: bool,
    /// Bytes that followed the protocol switch, per side (request, response).
    leftover: [Vec<u8>; 2],
}

impl std::fmt::Debug for Http1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = |p: &Phase| match p {
            Phase::Head => "head",
            Phase::Body(_) => "body",
            Phase::Resync(_) => "resync",
            Phase::Stopped => "stopped",
        };
        f.debug_struct("Http1Conn")
            .field("limits", &self.limits)
            .field("queued", &self.queue.len())
            .field("request_phase", &phase(&self.req.phase))
            .field("response_phase", &phase(&self.resp.phase))
            .field("upgraded", &self.upgraded)
            .field("closed", &self.closed)
            .field("buffered_bytes", &self.buffered_bytes())
            .finish()
    }
}

impl Http1Conn {
    pub fn new(limits: Http1Limits) -> Self {
        Self {
            limits: Http1Limits {
                max_pipelined: limits.max_pipelined.max(1),
                ..limits
            },
            queue: VecDeque::new(),
            next_id: 0,
            req: RequestSide {
                phase: Phase::Head,
                head: HeadBuf::default(),
                current: None,
            },
            resp: ResponseSide {
                phase: Phase::Head,
                head: HeadBuf::default(),
                current: None,
            },
            upgraded: None,
            closed: false,
            leftover: [Vec::new(), Vec::new()],
        }
    }

    /// Bytes that crossed the socket on `side`, contiguous with the previous call on that
    /// side.
    pub fn on_data(&mut self, side: Side, data: &[u8], ts_ns: u64, out: &mut Vec<Http1Output>) {
        if self.closed {
            return;
        }
        if self.upgraded.is_some() {
            self.keep_leftover(side, data);
            return;
        }
        match side {
            Side::Request => self.request_data(data, ts_ns, out),
            Side::Response => self.response_data(data, ts_ns, out),
        }
    }

    /// `len` bytes on `side` were lost (not captured); resynchronise at the next message
    /// boundary.
    ///
    /// `ts_ns` is not needed: timings come from the bytes seen around the gap.
    pub fn on_gap(&mut self, side: Side, len: u64, _ts_ns: u64, out: &mut Vec<Http1Output>) {
        if self.closed || self.upgraded.is_some() || len == 0 {
            return;
        }
        match side {
            Side::Request => self.request_gap(len, out),
            Side::Response => self.response_gap(len, out),
        }
    }

    /// The connection closed: a body delimited by the close is complete; everything else
    /// pending is emitted as `Incomplete::ConnectionClosed`.
    ///
    /// Timings stay those of the last bytes seen (`ts_ns` of the close is not used: a body
    /// delimited by the close ends with its last byte).
    pub fn on_close(&mut self, _ts_ns: u64, out: &mut Vec<Http1Output>) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.upgraded.is_some() {
            return;
        }
        if let Phase::Body(_) = self.req.phase {
            self.end_request_early(Incomplete::ConnectionClosed);
        }
        if let Phase::Body(reader) = std::mem::replace(&mut self.resp.phase, Phase::Stopped) {
            // RFC 9112 §6.3 rule 8: a body without length ends with the connection.
            let until_close = matches!(reader, BodyReader::UntilClose);
            if let Some(mut rip) = self.resp.current.take() {
                if !until_close {
                    rip.body.cut();
                }
                self.finish_response(
                    rip,
                    None,
                    (!until_close).then_some(Incomplete::ConnectionClosed),
                    out,
                );
            }
        }
        self.req.phase = Phase::Stopped;
        self.resp.phase = Phase::Stopped;
        // A partial head at close is a message that never came.
        self.req.head.clear();
        self.resp.head.clear();
        self.drain_all(
            Incomplete::ConnectionClosed,
            Incomplete::ConnectionClosed,
            out,
        );
    }

    /// Idle eviction or shutdown: emits every pending exchange, marked `Incomplete::Flushed`
    /// when a message was cut, `Incomplete::NoResponse` when no response had started. A side
    /// that was inside a message resynchronises if more bytes come.
    pub fn flush(&mut self, out: &mut Vec<Http1Output>) {
        if self.closed || self.upgraded.is_some() {
            return;
        }
        match &self.req.phase {
            Phase::Body(_) => {
                self.end_request_early(Incomplete::Flushed);
                self.req.phase = Phase::Resync(Resync::new(Side::Request, false));
            }
            Phase::Head if !self.req.head.is_empty() => {
                self.req.head.clear();
                self.req.phase = Phase::Resync(Resync::new(Side::Request, false));
            }
            _ => {}
        }
        match std::mem::replace(&mut self.resp.phase, Phase::Head) {
            Phase::Body(reader) => {
                if let Some(mut rip) = self.resp.current.take() {
                    if !matches!(reader, BodyReader::UntilClose) {
                        rip.body.cut();
                    }
                    self.finish_response(rip, None, Some(Incomplete::Flushed), out);
                }
                self.resp.phase = Phase::Resync(Resync::new(Side::Response, false));
            }
            Phase::Head if !self.resp.head.is_empty() => {
                self.resp.head.clear();
                self.resp.phase = Phase::Resync(Resync::new(Side::Response, false));
            }
            other => self.resp.phase = other,
        }
        self.drain_all(Incomplete::Flushed, Incomplete::NoResponse, out);
    }

    /// True after a 101 response (or 2xx to CONNECT): the rest of the connection is not
    /// HTTP/1 and the caller should stop feeding it.
    pub fn is_upgraded(&self) -> bool {
        self.upgraded.is_some()
    }

    /// Drops the body bytes of every exchange in flight, which are then cut and flagged
    /// truncated and keep nothing more (the caller is over its memory budget); heads and
    /// framing stay, so decoding goes on in step. Returns the bytes freed.
    pub fn shed_bodies(&mut self) -> usize {
        let mut freed = 0usize;
        for p in &mut self.queue {
            freed = freed
                .saturating_add(p.body.shed())
                .saturating_add(crate::body::shed(&mut p.request.body));
            if let Slot::Done(response) = &mut p.response {
                freed = freed.saturating_add(crate::body::shed(&mut response.body));
            }
        }
        if let Some(current) = &mut self.resp.current {
            freed = freed.saturating_add(current.body.shed());
        }
        freed
    }

    /// Bytes this decoder holds for the connection (heads, bodies, queued exchanges), for the
    /// caller's memory budget.
    pub fn buffered_bytes(&self) -> usize {
        let phase = |p: &Phase| match p {
            Phase::Body(r) => r.buffered(),
            Phase::Resync(r) => r.buffered(),
            Phase::Head | Phase::Stopped => 0,
        };
        let queued: usize = self
            .queue
            .iter()
            .map(|p| {
                let response = match &p.response {
                    Slot::Done(r) => {
                        r.body.data.len() + usize::try_from(r.headers_size).unwrap_or(usize::MAX)
                    }
                    _ => 0,
                };
                p.body.data.len()
                    + p.request.body.data.len()
                    + usize::try_from(p.request.headers_size).unwrap_or(usize::MAX)
                    + response
            })
            .fold(0, usize::saturating_add);
        let current = self.resp.current.as_ref().map_or(0, |r| r.body.data.len());
        let leftover = self.leftover[0].len() + self.leftover[1].len();
        [
            self.req.head.buf.len(),
            self.resp.head.buf.len(),
            phase(&self.req.phase),
            phase(&self.resp.phase),
            queued,
            current,
            leftover,
        ]
        .into_iter()
        .fold(0, usize::saturating_add)
    }

    /// After a switch ([`Http1Output::Upgraded`]): the bytes of the new protocol that were
    /// passed to this decoder on `side` (those after the 101 head in the same `on_data`
    /// call, an unparsed rest on the request side, and anything fed later), up to
    /// `max_header_bytes`. Taking them empties the buffer.
    pub fn take_upgrade_leftover(&mut self, side: Side) -> Vec<u8> {
        std::mem::take(&mut self.leftover[side_index(side)])
    }

    fn keep_leftover(&mut self, side: Side, data: &[u8]) {
        let buf = &mut self.leftover[side_index(side)];
        let room = self.limits.max_header_bytes.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    // ----- request side -----

    fn request_data(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<Http1Output>) {
        while !data.is_empty() {
            if self.upgraded.is_some() {
                self.keep_leftover(Side::Request, data);
                return;
            }
            match &mut self.req.phase {
                Phase::Head => {
                    let (used, progress) =
                        self.req
                            .head
                            .feed(Side::Request, data, ts, self.limits.max_header_bytes);
                    data = &data[used..];
                    match progress {
                        HeadProgress::NeedMore => {}
                        HeadProgress::Complete => self.request_head(ts, out),
                        HeadProgress::TooLarge { at_line_start } => {
                            out.push(Http1Output::Error(ParseErrorReason::HeaderTooLarge));
                            self.req.head.clear();
                            self.req.phase =
                                Phase::Resync(Resync::new(Side::Request, at_line_start));
                        }
                        HeadProgress::BadStart { at_line_start } => {
                            out.push(Http1Output::Error(ParseErrorReason::InvalidRequestHead));
                            self.req.head.clear();
                            self.req.phase =
                                Phase::Resync(Resync::new(Side::Request, at_line_start));
                        }
                    }
                }
                Phase::Body(reader) => {
                    let Some(entry) = self
                        .req
                        .current
                        .and_then(|id| self.queue.iter_mut().rev().find(|p| p.id == id))
                    else {
                        // The request was evicted (flush); skip its body.
                        let mut sink = CappedBody::default();
                        let (used, result) = reader.feed(data, &mut sink, &self.limits);
                        data = &data[used..];
                        if !matches!(result, Ok(false)) {
                            self.req.phase = Phase::Head;
                        }
                        continue;
                    };
                    let (used, result) = reader.feed(data, &mut entry.body, &self.limits);
                    data = &data[used..];
                    entry.end_ns = ts;
                    match result {
                        Ok(false) => {}
                        Ok(true) => self.finish_request(out),
                        Err(e) => {
                            out.push(Http1Output::Error(chunk_error_reason(e)));
                            self.end_request_early(Incomplete::ParseError);
                            self.req.phase = Phase::Resync(Resync::new(Side::Request, false));
                            self.try_emit(out);
                        }
                    }
                }
                Phase::Resync(resync) => {
                    let (used, found) =
                        resync.feed(Side::Request, data, ts, self.limits.max_header_bytes);
                    data = &data[used..];
                    if let Some(found) = found {
                        self.req.phase = Phase::Head;
                        if self.req.head.seed(&found.head, found.start_ns) {
                            self.request_head(ts, out);
                        }
                    }
                }
                Phase::Stopped => return,
            }
        }
    }

    fn current_request(&mut self) -> Option<&mut Pending> {
        let id = self.req.current?;
        self.queue.iter_mut().rev().find(|p| p.id == id)
    }

    /// A whole request head is in `self.req.head`.
    fn request_head(&mut self, ts: u64, out: &mut Vec<Http1Output>) {
        let parsed = head::parse_request(&mut self.req.head.buf, self.limits.max_header_fields);
        let start_ns = self.req.head.start_ns;
        self.req.head.clear();
        let parsed = match parsed {
            Ok(p) => p,
            Err(reason) => {
                out.push(Http1Output::Error(reason));
                self.req.phase = Phase::Resync(Resync::new(Side::Request, true));
                return;
            }
        };
        let framing = match head::request_framing(&parsed.headers) {
            Ok(f) => f,
            Err(reason) => {
                // RFC 9112 §6.3: the body length cannot be determined, so neither can where
                // the next request starts.
                out.push(Http1Output::Error(reason));
                self.req.phase = Phase::Resync(Resync::new(Side::Request, true));
                return;
            }
        };
        if self.queue.len() >= self.limits.max_pipelined
            && let Some(mut oldest) = self.queue.pop_front()
        {
            out.push(Http1Output::Error(ParseErrorReason::PipelineOverflow));
            oldest.mark(Incomplete::NoResponse);
            oldest.response = Slot::Lost;
            out.push(Http1Output::Exchange(oldest.into_exchange()));
        }
        let id = self.next_id;
        self.next_id += 1;
        let method = MethodKind::of(&parsed.method);
        self.queue.push_back(Pending {
            id,
            request: Request {
                method: parsed.method,
                target: parsed.target,
                version: parsed.version,
                headers: parsed.headers,
                headers_size: parsed.size,
                body: Body::default(),
                trailers: Headers::new(),
            },
            method,
            body: CappedBody::default(),
            done: false,
            start_ns,
            end_ns: ts,
            response: Slot::Waiting,
            response_start_ns: None,
            response_end_ns: None,
            incomplete: None,
        });
        self.req.current = Some(id);
        match BodyReader::new(framing) {
            // RFC 9112 §6.3 rule 7: no Content-Length and no chunked means no body.
            None => self.finish_request(out),
            Some(reader) => self.req.phase = Phase::Body(reader),
        }
    }

    /// The current request's body ended normally.
    fn finish_request(&mut self, out: &mut Vec<Http1Output>) {
        let phase = std::mem::replace(&mut self.req.phase, Phase::Head);
        let trailers = match phase {
            Phase::Body(reader) => reader.into_trailers(),
            _ => None,
        };
        self.complete_request(trailers, out);
        self.try_emit(out);
    }

    /// The current request ends before its body did.
    fn end_request_early(&mut self, why: Incomplete) {
        if let Some(entry) = self.current_request() {
            entry.body.cut();
            entry.mark(why);
        }
        let mut ignored = Vec::new();
        self.req.phase = Phase::Head;
        self.complete_request(None, &mut ignored);
    }

    fn complete_request(&mut self, trailers: Option<Vec<u8>>, out: &mut Vec<Http1Output>) {
        let max = self.limits.max_body_bytes;
        let Some(id) = self.req.current.take() else {
            return;
        };
        let Some(entry) = self.queue.iter_mut().rev().find(|p| p.id == id) else {
            return;
        };
        let body = std::mem::take(&mut entry.body);
        let ce = head::content_encoding(&entry.request.headers);
        entry.request.body = body.finish(ce.as_deref(), max);
        entry.request.trailers = trailer_fields(trailers, self.limits.max_header_fields, out);
        entry.done = true;
    }

    fn request_gap(&mut self, len: u64, out: &mut Vec<Http1Output>) {
        match &mut self.req.phase {
            Phase::Body(reader) => {
                let id = self.req.current;
                let entry = id.and_then(|id| self.queue.iter_mut().rev().find(|p| p.id == id));
                let mut sink = CappedBody::default();
                let absorbed = match entry {
                    Some(entry) => {
                        let absorbed = reader.absorb_gap(len, &mut entry.body);
                        entry.mark(Incomplete::Gap);
                        if absorbed.is_none() {
                            // The gap runs past the body: count what is known to be body.
                            if let BodyReader::Length(rest) = reader {
                                entry.body.lose(*rest);
                            }
                        }
                        absorbed
                    }
                    None => reader.absorb_gap(len, &mut sink),
                };
                match absorbed {
                    Some(false) => {}
                    Some(true) => self.finish_request(out),
                    None => {
                        self.end_request_early(Incomplete::Gap);
                        self.req.phase = Phase::Resync(Resync::new(Side::Request, true));
                        self.try_emit(out);
                    }
                }
            }
            Phase::Head | Phase::Resync(_) => {
                // A partial head is useless without its lost bytes.
                self.req.head.clear();
                self.req.phase = Phase::Resync(Resync::new(Side::Request, true));
            }
            Phase::Stopped => {}
        }
    }

    // ----- response side -----

    fn response_data(&mut self, mut data: &[u8], ts: u64, out: &mut Vec<Http1Output>) {
        while !data.is_empty() {
            if self.upgraded.is_some() {
                self.keep_leftover(Side::Response, data);
                return;
            }
            match &mut self.resp.phase {
                Phase::Head => {
                    let (used, progress) =
                        self.resp
                            .head
                            .feed(Side::Response, data, ts, self.limits.max_header_bytes);
                    data = &data[used..];
                    match progress {
                        HeadProgress::NeedMore => {}
                        HeadProgress::Complete => self.response_head(ts, out),
                        HeadProgress::TooLarge { at_line_start } => {
                            out.push(Http1Output::Error(ParseErrorReason::HeaderTooLarge));
                            self.lose_next_response(Incomplete::ParseError, out);
                            self.resp.head.clear();
                            self.resp.phase =
                                Phase::Resync(Resync::new(Side::Response, at_line_start));
                        }
                        HeadProgress::BadStart { at_line_start } => {
                            out.push(Http1Output::Error(ParseErrorReason::InvalidResponseHead));
                            self.lose_next_response(Incomplete::ParseError, out);
                            self.resp.head.clear();
                            self.resp.phase =
                                Phase::Resync(Resync::new(Side::Response, at_line_start));
                        }
                    }
                }
                Phase::Body(reader) => {
                    let Some(rip) = self.resp.current.as_mut() else {
                        self.resp.phase = Phase::Head;
                        continue;
                    };
                    let (used, result) = reader.feed(data, &mut rip.body, &self.limits);
                    data = &data[used..];
                    rip.end_ns = ts;
                    match result {
                        Ok(false) => {}
                        Ok(true) => self.end_response_body(None, out),
                        Err(e) => {
                            out.push(Http1Output::Error(chunk_error_reason(e)));
                            rip.body.cut();
                            self.end_response_body(Some(Incomplete::ParseError), out);
                            self.resp.phase = Phase::Resync(Resync::new(Side::Response, false));
                        }
                    }
                }
                Phase::Resync(resync) => {
                    let (used, found) =
                        resync.feed(Side::Response, data, ts, self.limits.max_header_bytes);
                    data = &data[used..];
                    if let Some(found) = found {
                        self.resp.phase = Phase::Head;
                        if self.resp.head.seed(&found.head, found.start_ns) {
                            self.response_head(ts, out);
                        }
                    }
                }
                Phase::Stopped => return,
            }
        }
    }

    /// The oldest request without a response.
    fn next_waiting(&mut self) -> Option<&mut Pending> {
        self.queue
            .iter_mut()
            .find(|p| matches!(p.response, Slot::Waiting))
    }

    /// The response to the oldest waiting request is lost.
    fn lose_next_response(&mut self, why: Incomplete, out: &mut Vec<Http1Output>) {
        if let Some(entry) = self.next_waiting() {
            entry.response = Slot::Lost;
            entry.mark(why);
        }
        self.try_emit(out);
    }

    /// A whole response head is in `self.resp.head`.
    fn response_head(&mut self, ts: u64, out: &mut Vec<Http1Output>) {
        let parsed = head::parse_response(&mut self.resp.head.buf, self.limits.max_header_fields);
        let start_ns = self.resp.head.start_ns;
        self.resp.head.clear();
        let parsed = match parsed {
            Ok(p) => p,
            Err(reason) => {
                out.push(Http1Output::Error(reason));
                self.lose_next_response(Incomplete::ParseError, out);
                self.resp.phase = Phase::Resync(Resync::new(Side::Response, true));
                return;
            }
        };
        let status = parsed.status;
        let waiting = self.next_waiting().map(|p| (p.id, p.method));
        if (100..200).contains(&status) && status != 101 {
            // RFC 9110 §15.2: interim responses precede the final one; 100 (Continue) may
            // come before the request body is sent.
            if waiting.is_none() {
                out.push(Http1Output::Error(ParseErrorReason::ResponseWithoutRequest));
            }
            return;
        }
        let response = Response {
            status,
            reason: parsed.reason,
            version: parsed.version,
            headers: parsed.headers,
            headers_size: parsed.size,
            body: Body::default(),
            trailers: Headers::new(),
        };
        if waiting.is_none() {
            out.push(Http1Output::Error(ParseErrorReason::ResponseWithoutRequest));
        }
        let method = waiting.map_or(MethodKind::Other, |(_, m)| m);
        let rip = ResponseInProgress {
            entry: waiting.map(|(id, _)| id),
            response,
            body: CappedBody::default(),
            start_ns,
            end_ns: ts,
            gap: false,
        };
        // RFC 9110 §15.2.2 (101) and §9.3.6 (2xx to CONNECT): after this head the
        // connection carries another protocol.
        if status == 101 || (method == MethodKind::Connect && (200..300).contains(&status)) {
            self.finish_response(rip, None, None, out);
            self.upgrade(status, out);
            return;
        }
        let framing = match head::response_framing(method, status, &rip.response.headers) {
            Ok(f) => f,
            Err(reason) => {
                out.push(Http1Output::Error(reason));
                self.finish_response(rip, None, Some(Incomplete::ParseError), out);
                self.resp.phase = Phase::Resync(Resync::new(Side::Response, true));
                return;
            }
        };
        if let Some(entry) = self.next_waiting() {
            entry.response = Slot::Reading;
        }
        match BodyReader::new(framing) {
            None => self.finish_response(rip, None, None, out),
            Some(reader) => {
                self.resp.current = Some(rip);
                self.resp.phase = Phase::Body(reader);
            }
        }
    }

    /// The current response's body ended (normally unless `why`).
    fn end_response_body(&mut self, why: Option<Incomplete>, out: &mut Vec<Http1Output>) {
        let phase = std::mem::replace(&mut self.resp.phase, Phase::Head);
        // A message cut short keeps no (partial) trailer section.
        let trailers = match phase {
            Phase::Body(reader) if why.is_none() => reader.into_trailers(),
            _ => None,
        };
        if let Some(rip) = self.resp.current.take() {
            self.finish_response(rip, trailers, why, out);
        }
    }

    fn finish_response(
        &mut self,
        rip: ResponseInProgress,
        trailers: Option<Vec<u8>>,
        why: Option<Incomplete>,
        out: &mut Vec<Http1Output>,
    ) {
        let ResponseInProgress {
            entry,
            mut response,
            body,
            start_ns,
            end_ns,
            gap,
        } = rip;
        let ce = head::content_encoding(&response.headers);
        response.body = body.finish(ce.as_deref(), self.limits.max_body_bytes);
        response.trailers = trailer_fields(trailers, self.limits.max_header_fields, out);
        let Some(entry) = entry.and_then(|id| self.queue.iter_mut().find(|p| p.id == id)) else {
            // Answers no known request (counted when its head was seen), or its request
            // was evicted.
            return;
        };
        entry.response = Slot::Done(response);
        entry.response_start_ns = Some(start_ns);
        entry.response_end_ns = Some(end_ns);
        if gap {
            entry.mark(Incomplete::Gap);
        }
        if let Some(why) = why {
            entry.mark(why);
        }
        self.try_emit(out);
    }

    fn response_gap(&mut self, len: u64, out: &mut Vec<Http1Output>) {
        match &mut self.resp.phase {
            Phase::Body(reader) => {
                let mut sink = CappedBody::default();
                let rip = self.resp.current.as_mut();
                let absorbed = match rip {
                    Some(rip) => {
                        rip.gap = true;
                        let absorbed = reader.absorb_gap(len, &mut rip.body);
                        if absorbed.is_none() {
                            if let BodyReader::Length(rest) = reader {
                                rip.body.lose(*rest);
                            }
                            rip.body.cut();
                        }
                        absorbed
                    }
                    None => reader.absorb_gap(len, &mut sink),
                };
                match absorbed {
                    Some(false) => {}
                    Some(true) => self.end_response_body(None, out),
                    None => {
                        self.end_response_body(Some(Incomplete::Gap), out);
                        self.resp.phase = Phase::Resync(Resync::new(Side::Response, true));
                    }
                }
            }
            Phase::Head => {
                // The lost bytes began (or continued) a response head: that response, most
                // likely the one to the oldest waiting request, cannot be decoded.
                self.resp.head.clear();
                self.lose_next_response(Incomplete::Gap, out);
                self.resp.phase = Phase::Resync(Resync::new(Side::Response, true));
            }
            Phase::Resync(_) => self.resp.phase = Phase::Resync(Resync::new(Side::Response, true)),
            Phase::Stopped => {}
        }
    }

    // ----- pairing and emission -----

    fn upgrade(&mut self, status: u16, out: &mut Vec<Http1Output>) {
        // The upgrade request is whole even if its body was still being read.
        if matches!(self.req.phase, Phase::Body(_)) {
            self.end_request_early(Incomplete::ConnectionClosed);
        }
        // Bytes after the upgrade request that were taken for the start of another request
        // belong to the new protocol.
        if !self.req.head.is_empty() {
            let head = std::mem::take(&mut self.req.head.buf);
            self.keep_leftover(Side::Request, &head);
        }
        self.upgraded = Some(status);
        self.req.phase = Phase::Stopped;
        self.resp.phase = Phase::Stopped;
        self.try_emit(out);
        out.push(Http1Output::Upgraded { status });
        // Requests sent after the upgrade request will not be answered in HTTP/1.
        self.drain_all(Incomplete::ConnectionClosed, Incomplete::NoResponse, out);
    }

    /// Emits the exchanges at the head of the queue that are whole.
    fn try_emit(&mut self, out: &mut Vec<Http1Output>) {
        while self.queue.front().is_some_and(Pending::ready) {
            if let Some(p) = self.queue.pop_front() {
                out.push(Http1Output::Exchange(p.into_exchange()));
            }
        }
    }

    /// Emits everything queued: unfinished requests are cut (`cut_why`), requests with no
    /// response get `no_response_why`.
    fn drain_all(
        &mut self,
        cut_why: Incomplete,
        no_response_why: Incomplete,
        out: &mut Vec<Http1Output>,
    ) {
        if self.req.current.is_some() {
            self.end_request_early(cut_why);
        }
        self.resp.current = None;
        while let Some(mut p) = self.queue.pop_front() {
            match p.response {
                Slot::Waiting => p.mark(no_response_why),
                Slot::Reading => p.mark(cut_why),
                Slot::Done(_) | Slot::Lost => {}
            }
            if !matches!(p.response, Slot::Done(_)) {
                p.response = Slot::Lost;
            }
            out.push(Http1Output::Exchange(p.into_exchange()));
        }
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Request => 0,
        Side::Response => 1,
    }
}

fn chunk_error_reason(e: ChunkError) -> ParseErrorReason {
    match e {
        ChunkError::Framing => ParseErrorReason::InvalidChunkedEncoding,
        ChunkError::TrailerTooLarge => ParseErrorReason::HeaderTooLarge,
    }
}

/// Parses a chunked message's trailer section (RFC 9112 §7.1.2); one that does not parse is
/// counted and dropped, the message itself is kept.
fn trailer_fields(
    section: Option<Vec<u8>>,
    max_fields: usize,
    out: &mut Vec<Http1Output>,
) -> Headers {
    let Some(section) = section else {
        return Headers::new();
    };
    if section.is_empty() || section == b"\r\n" || section == b"\n" {
        return Headers::new();
    }
    head::parse_trailers(&section, max_fields).unwrap_or_else(|reason| {
        out.push(Http1Output::Error(reason));
        Headers::new()
    })
}
