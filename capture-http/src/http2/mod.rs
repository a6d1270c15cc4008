//! Passive HTTP/2 decoder for one TCP connection (RFC 9113, HPACK RFC 7541), gRPC included.
//!
//! [`Http2Conn`] is fed the bytes captured on each side of a connection, in order, with gaps
//! where bytes were lost, and returns [`Http2Output`]s: one [`Exchange`] per stream, parse
//! errors and limit hits (a metric label each). It is pure like the HTTP/1 decoder: no I/O,
//! no clocks, no globals; tested at every split point of its input and fuzzed.
//!
//! How it works:
//! - Each side (client-sent, server-sent) has a frame reader ([`frame`]): the client preface
//!   when the connection start was seen, then 9-byte frame headers and payloads. DATA payloads
//!   go straight into the stream's body buffer (one copy); other frames are taken from the
//!   input slice when whole, or collected when split across calls.
//! - Header blocks (HEADERS or PUSH_PROMISE, then CONTINUATION) are decoded with that side's
//!   HPACK decoder ([`hpack`]) once whole. Every block is decoded, even for streams that are
//!   not kept, so the dynamic table stays right.
//! - Streams become exchanges: the client's first header block is the request (pseudo-headers
//!   give method and target), the server's first final (non-1xx) block the response, later
//!   blocks are trailers. A stream is emitted when both sides sent END_STREAM, when it is reset
//!   (RST_STREAM, or refused by GOAWAY: `Incomplete::Reset`), and at close or flush.
//!   PUSH_PROMISE opens the promised stream with the promised request.
//! - Never-indexed fields (RFC 7541 §6.2.3) are dropped at decoding unless their name is on
//!   the small list of `never_indexed::keeps_never_indexed`, and listed as redacted.
//! - Gaps: a gap inside a DATA payload only costs body bytes (the stream is marked
//!   `Incomplete::Gap`). Any other gap loses frame sync: the side resynchronises at the next
//!   plausible frame header, its HPACK table becomes unknown, and its open streams are marked.
//! - A connection joined mid-way ([`Http2Conn::mid_stream`]) starts with unknown HPACK tables:
//!   fields that refer to unknown entries are left out and the exchange is marked
//!   `Incomplete::HpackStateUnknown`; streams that began before the capture are emitted with
//!   what was seen of them, marked the same way.
//! - A connection joined mid-way whose role is not known (the socket was gone from `/proc`
//!   before it could be named) does not say which direction carries the requests.
//!   [`Undecided`] holds its bytes (bounded) while a probe reads the frames for the answer, then
//!   decodes them; see [`undecided`].
//! - Every buffer is bounded by [`Http2Limits`].
//!
//! Error values name what went wrong, never header values or body bytes.

pub mod frame;
pub mod grpc;
pub mod hpack;
mod never_indexed;
mod stream;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod undecided;

#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::http1::Side;
use capture_model::exchange::{Exchange, Headers, HttpVersion, Incomplete, Request};
use never_indexed::keeps_never_indexed;

use frame::{FrameHeader, HEADER_LEN, PREFACE};
use stream::{Message, Stream};
pub use undecided::{Sender, Undecided};

/// Bounds on what one connection's decoder keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http2Limits {
    /// Body bytes captured per message (`--max-body-bytes`).
    pub max_body_bytes: usize,
    /// Largest header list kept per block, counted as RFC 9113 §6.5.2 does (name and value
    /// octets plus 32 per field); also the largest header block collected.
    pub max_header_list_bytes: usize,
    /// Streams tracked at once per connection; more are counted and ignored.
    pub max_streams: usize,
    /// Largest HPACK dynamic table kept per direction, whatever size a peer announces.
    pub max_hpack_table_bytes: usize,
    /// Body bytes held for all open streams of the connection together.
    pub max_conn_body_bytes: usize,
}

impl Default for Http2Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_header_list_bytes: 64 * 1024,
            max_streams: 1000,
            max_hpack_table_bytes: 64 * 1024,
            max_conn_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What the decoder produces.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "outputs go into a vector the caller reuses and are moved out at once; a box would \
              be one more allocation per exchange"
)]
pub enum Http2Output {
    Exchange(Exchange),
    /// Something could not be decoded; the decoder recovered (count it by label).
    Error(H2ErrorReason),
    /// A limit was hit (count it by label).
    Limit(H2Limit),
}

/// Why decoding failed, as a metric label (`as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum H2ErrorReason {
    /// The client's first bytes were not the connection preface (RFC 9113 §3.4).
    #[error("invalid connection preface")]
    InvalidPreface,
    /// A frame header against RFC 9113 §6 (stream id, length); the side resynchronises.
    #[error("invalid frame")]
    InvalidFrame,
    /// A frame longer than the receiver's SETTINGS_MAX_FRAME_SIZE (RFC 9113 §4.2).
    #[error("frame too large")]
    FrameTooLarge,
    /// Padding longer than the frame (RFC 9113 §6.1).
    #[error("invalid padding")]
    InvalidPadding,
    /// A header block interrupted by another frame, or CONTINUATION without a block
    /// (RFC 9113 §6.10).
    #[error("unexpected frame in header block")]
    InvalidHeaderBlock,
    /// A header block HPACK could not decode; the side's table is unknown after it.
    #[error("HPACK decoding error")]
    Hpack,
    /// A request without `:method`, or a response without a valid `:status`.
    #[error("missing pseudo-header")]
    MissingPseudoHeader,
    /// A gRPC body that is not a sequence of length-prefixed messages.
    #[error("invalid gRPC message framing")]
    InvalidGrpcFraming,
}

impl H2ErrorReason {
    pub const ALL: &[H2ErrorReason] = &[
        Self::InvalidPreface,
        Self::InvalidFrame,
        Self::FrameTooLarge,
        Self::InvalidPadding,
        Self::InvalidHeaderBlock,
        Self::Hpack,
        Self::MissingPseudoHeader,
        Self::InvalidGrpcFraming,
    ];

    /// snake_case metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPreface => "invalid_preface",
            Self::InvalidFrame => "invalid_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidPadding => "invalid_padding",
            Self::InvalidHeaderBlock => "invalid_header_block",
            Self::Hpack => "hpack",
            Self::MissingPseudoHeader => "missing_pseudo_header",
            Self::InvalidGrpcFraming => "invalid_grpc_framing",
        }
    }
}

/// A limit of [`Http2Limits`] that was hit, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum H2Limit {
    /// A header list over `max_header_list_bytes`: fields past it were dropped (the exchange is
    /// marked `parse_error`), or the whole block when it was larger than that on the wire.
    HeaderList,
    /// A stream over `max_streams`: ignored.
    Streams,
    /// A table size update over `max_hpack_table_bytes`: entries past it are unknown.
    HpackTable,
    /// Body bytes over `max_conn_body_bytes`: the body is cut.
    ConnBodyBytes,
}

impl H2Limit {
    pub const ALL: &[H2Limit] = &[
        Self::HeaderList,
        Self::Streams,
        Self::HpackTable,
        Self::ConnBodyBytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeaderList => "header_list",
            Self::Streams => "streams",
            Self::HpackTable => "hpack_table",
            Self::ConnBodyBytes => "conn_body_bytes",
        }
    }
}

/// Hashes stream ids (small sequential integers a peer chooses) with one multiplication:
/// SipHash's resistance to chosen keys buys nothing here, where the number of streams is
/// bounded by `max_streams`.
#[derive(Default)]
struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type StreamMap<V> = HashMap<u32, V, BuildHasherDefault<StreamIdHasher>>;
type StreamSet = HashSet<u32, BuildHasherDefault<StreamIdHasher>>;

/// Non-DATA frames longer than this are skipped rather than collected (no frame this decoder
/// reads needs more: SETTINGS lists a handful of entries, GOAWAY's debug data is not read).
const MAX_CONTROL_FRAME: u32 = 64 * 1024;

/// How a frame payload being read is handled.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// DATA: the pad length byte (if PADDED and not read yet), then `data_left` data bytes,
    /// then padding.
    Data { pad_pending: bool, data_left: u32 },
    /// Collected whole, then handled.
    Collect,
    /// Read past (unknown type, too large, or its content was lost).
    Skip,
}

#[derive(Clone, Copy, Debug)]
enum ReadState {
    /// Bytes of the client preface matched so far.
    Preface(usize),
    Header,
    Payload {
        hdr: FrameHeader,
        left: u32,
        mode: Mode,
    },
    /// Looking for a frame header after lost bytes.
    Resync,
}

/// A header block being collected (HEADERS or PUSH_PROMISE, then CONTINUATION).
#[derive(Clone, Copy, Debug)]
struct Block {
    stream: u32,
    /// PUSH_PROMISE: the promised stream.
    promised: Option<u32>,
    end_stream: bool,
    start_ns: u64,
    /// Fragment bytes so far (`headersSize`).
    wire: u64,
    /// Bytes of the block were lost or over the limit: it is read past, not decoded.
    lost: bool,
}

/// One side of the connection: the frames one endpoint sends.
struct Half {
    side: Side,
    state: ReadState,
    hdr: [u8; HEADER_LEN],
    hdr_have: usize,
    frame_buf: Vec<u8>,
    /// Timestamp of the event that completed the current frame's header.
    frame_ts: u64,
    hpack: hpack::Decoder,
    /// SETTINGS_MAX_FRAME_SIZE of the receiver of these frames; `None` when not known.
    max_frame: Option<u32>,
    block: Option<Block>,
    block_buf: Vec<u8>,
}

impl Half {
    fn new(side: Side, state: ReadState, hpack: hpack::Decoder, max_frame: Option<u32>) -> Self {
        Self {
            side,
            state,
            hdr: [0; HEADER_LEN],
            hdr_have: 0,
            frame_buf: Vec::new(),
            frame_ts: 0,
            hpack,
            max_frame,
            block: None,
            block_buf: Vec::new(),
        }
    }
}

/// The HTTP/2 decoder of one connection. See the module docs.
///
/// Its `Debug` shows state and sizes only: the buffers hold captured headers and bodies.
pub struct Http2Conn {
    limits: Http2Limits,
    /// Index 0: client-sent frames (`Side::Request`); 1: server-sent.
    halves: [Half; 2],
    streams: StreamMap<Stream>,
    /// Body bytes held by open streams.
    held: usize,
    /// Highest stream id opened (by a request block or PUSH_PROMISE) per initiator: index 0
    /// client (odd ids), 1 server (even ids).
    highest_opened: [u32; 2],
    /// Streams below this id (per initiator) may have begun before the capture.
    pre_capture_below: [u32; 2],
    /// Bytes were lost on the side that opens these streams: an unknown stream above
    /// `highest_opened` may have been opened in the gap.
    gap_opened: [bool; 2],
    /// Streams that began before the capture and were already emitted (late frames must not
    /// bring them back); bounded by `max_streams`.
    finished_early: StreamSet,
    /// Streams ignored for the stream limit; bounded by `max_streams`.
    refused: StreamSet,
    closed: bool,
    /// A probe ([`undecided`]): frames are read and header blocks decoded only to learn which
    /// end sent each half; no stream is tracked, nothing is emitted. Half 0 is the direction
    /// that was seen first, whichever end sent it.
    probing: bool,
    /// What the probe learned: a half, and the end that sent its frames.
    sender: Option<(usize, Sender)>,
}

impl std::fmt::Debug for Http2Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http2Conn")
            .field("limits", &self.limits)
            .field("streams", &self.streams.len())
            .field("buffered_bytes", &self.buffered_bytes())
            .field("closed", &self.closed)
            .finish()
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::Request => 0,
        Side::Response => 1,
    }
}

/// Which endpoint opens a stream id: odd ids the client (0), even ids the server (1).
fn initiator(stream: u32) -> usize {
    usize::from(stream.is_multiple_of(2))
}

impl Http2Conn {
    /// A connection seen from its start (prior knowledge): the client side begins with the
    /// preface.
    pub fn new(limits: Http2Limits) -> Self {
        let cap = limits.max_hpack_table_bytes;
        let max = Some(frame::DEFAULT_MAX_FRAME_SIZE);
        Self::with_halves(
            limits,
            [
                Half::new(
                    Side::Request,
                    ReadState::Preface(0),
                    hpack::Decoder::new(cap),
                    max,
                ),
                Half::new(
                    Side::Response,
                    ReadState::Header,
                    hpack::Decoder::new(cap),
                    max,
                ),
            ],
            [0, 0],
        )
    }

    /// A connection joined mid-way: `side`'s next byte starts a frame (it was detected by
    /// [`frame::looks_like_frames`]); the other side looks for its first frame header.
    pub fn mid_stream(limits: Http2Limits, side: Side) -> Self {
        let cap = limits.max_hpack_table_bytes;
        let state = |s: Side| {
            if s == side {
                ReadState::Header
            } else {
                ReadState::Resync
            }
        };
        Self::with_halves(
            limits,
            [
                Half::new(
                    Side::Request,
                    state(Side::Request),
                    hpack::Decoder::unknown(cap),
                    None,
                ),
                Half::new(
                    Side::Response,
                    state(Side::Response),
                    hpack::Decoder::unknown(cap),
                    None,
                ),
            ],
            [u32::MAX, u32::MAX],
        )
    }

    /// After an HTTP/1.1 `Upgrade: h2c` request answered by 101 (RFC 7540 §3.2): the request
    /// is stream 1, half-closed from the client; the client then sends the preface. `settings`
    /// is the decoded `HTTP2-Settings` header (the client's SETTINGS payload), if any.
    pub fn upgraded(
        limits: Http2Limits,
        request: Request,
        start_ns: u64,
        end_ns: u64,
        settings: Option<&[u8]>,
    ) -> Self {
        let mut conn = Self::new(limits);
        if let Some(payload) = settings {
            // The client's settings bound what the server sends.
            conn.apply_settings(0, payload);
        }
        let body_len = request.body.data.len();
        let mut s = Stream {
            request_version: Some(request.version),
            upgraded_target: Some((request.method, request.target)),
            ..Stream::default()
        };
        // Decoded by the HTTP/1 decoder already.
        s.request_body = Some(request.body);
        s.request.started = true;
        s.request.ended = true;
        s.request.headers = request.headers;
        s.request.headers_size = request.headers_size;
        s.request.trailers = request.trailers;
        s.request.start_ns = Some(start_ns);
        s.request.end_ns = end_ns;
        s.held = body_len;
        conn.held = body_len;
        conn.streams.insert(1, s);
        conn.highest_opened[0] = 1;
        conn
    }

    fn with_halves(limits: Http2Limits, halves: [Half; 2], pre_capture_below: [u32; 2]) -> Self {
        Self {
            limits,
            halves,
            streams: StreamMap::default(),
            held: 0,
            highest_opened: [0, 0],
            pre_capture_below,
            gap_opened: [false, false],
            finished_early: StreamSet::default(),
            refused: StreamSet::default(),
            closed: false,
            probing: false,
            sender: None,
        }
    }

    /// A connection joined mid-way where neither side's next byte is known to start a frame
    /// (bytes before were dropped): both sides look for a frame header.
    pub fn mid_stream_resync(limits: Http2Limits) -> Self {
        let mut conn = Self::mid_stream(limits, Side::Request);
        conn.halves[0].state = ReadState::Resync;
        conn
    }

    /// A probe for [`Undecided`]: half 0 (labelled `Side::Request`) is the direction whose next
    /// byte starts a frame, half 1 the other; which end sent them is what it finds out.
    fn probe(limits: Http2Limits) -> Self {
        let mut conn = Self::mid_stream(limits, Side::Request);
        conn.probing = true;
        conn
    }

    /// The probe's answer: the half whose sender is known, and that sender.
    fn sender(&self) -> Option<(usize, Sender)> {
        self.sender
    }

    /// Bytes that crossed the socket on `side`, contiguous with the previous call on that
    /// side.
    pub fn on_data(&mut self, side: Side, data: &[u8], ts_ns: u64, out: &mut Vec<Http2Output>) {
        if self.closed {
            return;
        }
        let h = idx(side);
        let mut data = data;
        while !data.is_empty() {
            let used = match self.halves[h].state {
                ReadState::Preface(matched) => self.preface(h, matched, data, out),
                ReadState::Header => self.header(h, data, ts_ns, out),
                ReadState::Payload { hdr, left, mode } => {
                    self.payload(h, hdr, left, mode, data, ts_ns, out)
                }
                ReadState::Resync => self.resync(h, data),
            };
            data = &data[used..];
        }
    }

    /// `len` bytes on `side` were lost (not captured).
    pub fn on_gap(&mut self, side: Side, len: u64, ts_ns: u64, out: &mut Vec<Http2Output>) {
        if self.closed || len == 0 {
            return;
        }
        let h = idx(side);
        match self.halves[h].state {
            ReadState::Payload { hdr, left, mode } if len <= u64::from(left) => {
                // The frame's end is known: the reader stays in step.
                let lost = u32::try_from(len).unwrap_or(left);
                let left = left - lost;
                let mode = match mode {
                    Mode::Data {
                        pad_pending,
                        data_left,
                    } => {
                        let from_data = if pad_pending {
                            // The pad length is lost: count everything as data.
                            lost.min(left + lost)
                        } else {
                            lost.min(data_left)
                        };
                        self.lose_data(h, hdr.stream, u64::from(from_data));
                        Mode::Data {
                            pad_pending: false,
                            data_left: if pad_pending {
                                left
                            } else {
                                data_left - from_data
                            },
                        }
                    }
                    Mode::Collect | Mode::Skip => {
                        if matches!(
                            hdr.kind,
                            frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION
                        ) {
                            self.lose_block(h, hdr.stream);
                        }
                        self.halves[h].frame_buf.clear();
                        Mode::Skip
                    }
                };
                self.halves[h].state = ReadState::Payload { hdr, left, mode };
                if left == 0 {
                    self.end_payload(h, hdr, mode, &[], ts_ns, out);
                }
            }
            ReadState::Resync => {}
            _ => self.lose_sync(h),
        }
    }

    /// The connection closed: every open stream is emitted, marked
    /// `Incomplete::ConnectionClosed` unless both its sides ended.
    pub fn on_close(&mut self, _ts_ns: u64, out: &mut Vec<Http2Output>) {
        if self.closed {
            return;
        }
        self.closed = true;
        for id in self.stream_ids() {
            if let Some(mut s) = self.take_stream(id) {
                if !s.is_done() {
                    s.mark(Incomplete::ConnectionClosed);
                }
                self.emit(s, out);
            }
        }
        for half in &mut self.halves {
            half.block = None;
            half.block_buf = Vec::new();
            half.frame_buf = Vec::new();
        }
    }

    /// Idle eviction or shutdown: emits every open stream, marked `Incomplete::NoResponse`
    /// when no response had started and `Incomplete::Flushed` otherwise.
    pub fn flush(&mut self, out: &mut Vec<Http2Output>) {
        if self.closed {
            return;
        }
        for id in self.stream_ids() {
            if let Some(mut s) = self.take_stream(id) {
                if !s.response.started {
                    s.mark(Incomplete::NoResponse);
                } else if !s.is_done() {
                    s.mark(Incomplete::Flushed);
                }
                self.emit(s, out);
            }
        }
    }

    /// Bytes this decoder holds (bodies, header blocks, frames being collected), for the
    /// caller's per-connection memory accounting.
    pub fn buffered_bytes(&self) -> usize {
        let halves: usize = self
            .halves
            .iter()
            .map(|h| h.frame_buf.len() + h.block_buf.len() + h.hpack.table().size())
            .sum();
        let headers: usize = self
            .streams
            .values()
            .map(|s| s.request.header_bytes() + s.response.header_bytes())
            .fold(0, usize::saturating_add);
        halves.saturating_add(self.held).saturating_add(headers)
    }

    /// Drops the body bytes of every open stream, which are then cut and flagged truncated
    /// and keep nothing more (the caller is over its memory budget); headers, HPACK state and
    /// framing stay, so decoding goes on in step. Returns the bytes freed.
    pub fn shed_bodies(&mut self) -> usize {
        let mut freed = 0usize;
        for s in self.streams.values_mut() {
            freed = freed
                .saturating_add(s.request.body.shed())
                .saturating_add(s.response.body.shed());
            if let Some(body) = &mut s.request_body {
                freed = freed.saturating_add(crate::body::shed(body));
            }
            s.held = 0;
        }
        self.held = 0;
        freed
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    fn stream_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn take_stream(&mut self, id: u32) -> Option<Stream> {
        let s = self.streams.remove(&id)?;
        self.held = self.held.saturating_sub(s.held);
        if s.headless && id < self.pre_capture_below[initiator(id)] {
            if self.finished_early.len() >= self.limits.max_streams {
                self.finished_early.clear();
            }
            self.finished_early.insert(id);
        }
        Some(s)
    }

    fn emit(&self, s: Stream, out: &mut Vec<Http2Output>) {
        let (ex, framing_error) = s.into_exchange(self.limits.max_body_bytes);
        if framing_error {
            out.push(Http2Output::Error(H2ErrorReason::InvalidGrpcFraming));
        }
        out.push(Http2Output::Exchange(ex));
    }

    fn finish_if_done(&mut self, id: u32, out: &mut Vec<Http2Output>) {
        if self.streams.get(&id).is_some_and(Stream::is_done)
            && let Some(s) = self.take_stream(id)
        {
            self.emit(s, out);
        }
    }

    // ----- frame reading -----

    fn preface(
        &mut self,
        h: usize,
        matched: usize,
        data: &[u8],
        out: &mut Vec<Http2Output>,
    ) -> usize {
        let want = &PREFACE[matched..];
        let n = want.len().min(data.len());
        if data[..n] != want[..n] {
            out.push(Http2Output::Error(H2ErrorReason::InvalidPreface));
            self.lose_sync(h);
            return 0;
        }
        self.halves[h].state = if matched + n == PREFACE.len() {
            ReadState::Header
        } else {
            ReadState::Preface(matched + n)
        };
        n
    }

    fn header(&mut self, h: usize, data: &[u8], ts: u64, out: &mut Vec<Http2Output>) -> usize {
        let half = &mut self.halves[h];
        let (hdr, used) = if half.hdr_have == 0 && data.len() >= HEADER_LEN {
            match frame::header_at(data) {
                Some(hdr) => (hdr, HEADER_LEN),
                None => return data.len(),
            }
        } else {
            let n = (HEADER_LEN - half.hdr_have).min(data.len());
            half.hdr[half.hdr_have..half.hdr_have + n].copy_from_slice(&data[..n]);
            half.hdr_have += n;
            if half.hdr_have < HEADER_LEN {
                return n;
            }
            half.hdr_have = 0;
            (FrameHeader::parse(&half.hdr), n)
        };
        half.frame_ts = ts;
        self.begin_frame(h, hdr, ts, out);
        used
    }

    /// A frame header was read: check it and decide how its payload is read.
    fn begin_frame(&mut self, h: usize, hdr: FrameHeader, ts: u64, out: &mut Vec<Http2Output>) {
        let half = &self.halves[h];
        if let Err(e) = hdr.check(half.max_frame) {
            out.push(Http2Output::Error(match e {
                frame::FrameError::Invalid => H2ErrorReason::InvalidFrame,
                frame::FrameError::TooLarge => H2ErrorReason::FrameTooLarge,
            }));
            self.lose_sync(h);
            return;
        }
        // RFC 9113 §6.10: a header block is a contiguous run of frames on its stream.
        if let Some(block) = half.block
            && (hdr.kind != frame::CONTINUATION || hdr.stream != block.stream)
        {
            out.push(Http2Output::Error(H2ErrorReason::InvalidHeaderBlock));
            self.lose_block(h, block.stream);
            self.halves[h].block = None;
            self.halves[h].block_buf.clear();
        }
        let half = &self.halves[h];
        let mode = match hdr.kind {
            // A probe learns nothing from bodies.
            frame::DATA if self.probing => Mode::Skip,
            frame::DATA => Mode::Data {
                pad_pending: hdr.has(frame::FLAG_PADDED),
                data_left: if hdr.has(frame::FLAG_PADDED) {
                    0
                } else {
                    hdr.len
                },
            },
            frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION => {
                let collected = half.block.map_or(0, |_| half.block_buf.len());
                if collected.saturating_add(hdr.len as usize) > self.limits.max_header_list_bytes {
                    Mode::Skip
                } else {
                    Mode::Collect
                }
            }
            frame::PRIORITY
            | frame::RST_STREAM
            | frame::SETTINGS
            | frame::PING
            | frame::GOAWAY
            | frame::WINDOW_UPDATE => {
                if hdr.len > MAX_CONTROL_FRAME {
                    Mode::Skip
                } else {
                    Mode::Collect
                }
            }
            _ => Mode::Skip,
        };
        if matches!(mode, Mode::Skip)
            && matches!(
                hdr.kind,
                frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION
            )
        {
            // A block larger than the limit is not collected; what it inserted into the
            // table is lost with it.
            out.push(Http2Output::Limit(H2Limit::HeaderList));
            self.lose_block(h, hdr.stream);
        }
        if let Mode::Data { .. } = mode {
            self.data_begin(h, hdr, ts);
        }
        self.halves[h].state = ReadState::Payload {
            hdr,
            left: hdr.len,
            mode,
        };
        if hdr.len == 0 {
            self.end_payload(h, hdr, mode, &[], ts, out);
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the payload state's fields, passed through"
    )]
    fn payload(
        &mut self,
        h: usize,
        hdr: FrameHeader,
        mut left: u32,
        mut mode: Mode,
        data: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) -> usize {
        let avail = u32::try_from(data.len()).unwrap_or(u32::MAX).min(left);
        let chunk = &data[..avail as usize];
        match &mut mode {
            Mode::Data {
                pad_pending,
                data_left,
            } => {
                let mut rest = chunk;
                if *pad_pending {
                    let pad = u32::from(rest[0]);
                    rest = &rest[1..];
                    *pad_pending = false;
                    let after = left - 1;
                    if pad > after {
                        out.push(Http2Output::Error(H2ErrorReason::InvalidPadding));
                        *data_left = after;
                    } else {
                        *data_left = after - pad;
                    }
                }
                let n = (*data_left as usize).min(rest.len());
                if n > 0 {
                    self.data_chunk(h, hdr.stream, &rest[..n], ts, out);
                    *data_left -= n as u32;
                }
            }
            Mode::Collect => {
                let buf = &mut self.halves[h].frame_buf;
                if buf.is_empty() && avail == left {
                    // The whole payload is in this slice: handle it from there.
                    self.halves[h].state = ReadState::Header;
                    self.frame(h, hdr, chunk, ts, out);
                    return avail as usize;
                }
                buf.extend_from_slice(chunk);
            }
            Mode::Skip => {}
        }
        left -= avail;
        self.halves[h].state = ReadState::Payload { hdr, left, mode };
        if left == 0 {
            let buf = std::mem::take(&mut self.halves[h].frame_buf);
            self.end_payload(h, hdr, mode, &buf, ts, out);
            let mut buf = buf;
            buf.clear();
            if buf.capacity() <= 64 * 1024 {
                self.halves[h].frame_buf = buf;
            }
        }
        avail as usize
    }

    /// The payload of `hdr` was read to its end; `collected` holds it for `Mode::Collect`.
    fn end_payload(
        &mut self,
        h: usize,
        hdr: FrameHeader,
        mode: Mode,
        collected: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        self.halves[h].state = ReadState::Header;
        match mode {
            Mode::Data { .. } => self.data_end(h, hdr, ts, out),
            Mode::Collect => self.frame(h, hdr, collected, ts, out),
            Mode::Skip => {
                // A skipped header frame that ends its block ends the skipping too.
                if matches!(
                    hdr.kind,
                    frame::HEADERS | frame::PUSH_PROMISE | frame::CONTINUATION
                ) && hdr.has(frame::FLAG_END_HEADERS)
                {
                    self.halves[h].block = None;
                    self.halves[h].block_buf.clear();
                } else if matches!(hdr.kind, frame::HEADERS | frame::PUSH_PROMISE) {
                    // Keep reading the CONTINUATIONs of the block past, as lost.
                    self.halves[h].block = Some(Block {
                        stream: hdr.stream,
                        promised: None,
                        end_stream: hdr.has(frame::FLAG_END_STREAM),
                        start_ns: ts,
                        wire: 0,
                        lost: true,
                    });
                }
            }
        }
    }

    /// Looks for a plausible frame header in `data` (bytes after a gap or an error). The bytes
    /// before it are dropped; the result is the offset to resume at (all of `data` if none).
    fn resync(&mut self, h: usize, data: &[u8]) -> usize {
        let max = self.halves[h]
            .max_frame
            .unwrap_or(frame::DEFAULT_MAX_FRAME_SIZE);
        for at in 0..data.len() {
            let Some(hdr) = frame::header_at(&data[at..]) else {
                break;
            };
            if !hdr.plausible(max) {
                continue;
            }
            let end = at + HEADER_LEN + hdr.len as usize;
            let confirmed = if end == data.len() {
                true
            } else if end > data.len() {
                // A frame that goes on in the next transfer: trusted only at the start of
                // this one (writes start with a frame header).
                at == 0
            } else {
                frame::header_at(&data[end..]).is_some_and(|next| next.plausible(max))
            };
            if confirmed {
                self.halves[h].state = ReadState::Header;
                self.halves[h].hdr_have = 0;
                return at;
            }
        }
        data.len()
    }

    /// Frame sync is lost on side `h`: look for the next frame header; what was in flight is
    /// lost.
    fn lose_sync(&mut self, h: usize) {
        let half = &mut self.halves[h];
        half.state = ReadState::Resync;
        half.hdr_have = 0;
        half.frame_buf.clear();
        half.block = None;
        half.block_buf.clear();
        half.hpack.forget();
        let side = half.side;
        // Any open stream may have lost frames of this side.
        for s in self.streams.values_mut() {
            let m = match side {
                Side::Request => &mut s.request,
                Side::Response => &mut s.response,
            };
            if !m.ended {
                m.body.lose(0);
                s.mark(Incomplete::Gap);
            }
        }
        // Streams this side opens may have been opened in the lost bytes.
        let opens = match side {
            Side::Request => 0,
            Side::Response => 1,
        };
        self.gap_opened[opens] = true;
    }

    /// Bytes of a header block on side `h` were lost: the table is unknown from here, and
    /// the block's stream is incomplete.
    fn lose_block(&mut self, h: usize, stream: u32) {
        self.halves[h].hpack.forget();
        if let Some(block) = &mut self.halves[h].block {
            block.lost = true;
        }
        if let Some(s) = self.streams.get_mut(&stream) {
            s.mark(Incomplete::Gap);
        }
        let opens = idx(self.halves[h].side);
        self.gap_opened[opens] = true;
    }

    // ----- frames -----

    /// A whole non-DATA frame.
    fn frame(
        &mut self,
        h: usize,
        hdr: FrameHeader,
        payload: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        if self.probing {
            // RFC 9113 §8.4: only servers push; §5.1.1: clients open odd streams, and the
            // even (pushed) ones are closed for them, so HEADERS there come from the server.
            if hdr.kind == frame::PUSH_PROMISE
                || (hdr.kind == frame::HEADERS && initiator(hdr.stream) == 1)
            {
                self.learn(h, Sender::Server);
            }
        }
        match hdr.kind {
            frame::HEADERS | frame::PUSH_PROMISE => self.block_start(h, hdr, payload, ts, out),
            frame::CONTINUATION => self.block_continue(h, hdr, payload, ts, out),
            frame::RST_STREAM => {
                if let Some(mut s) = self.take_stream(hdr.stream) {
                    s.mark(Incomplete::Reset);
                    self.emit(s, out);
                }
            }
            frame::SETTINGS if !hdr.has(frame::FLAG_ACK) => self.apply_settings(h, payload),
            frame::GOAWAY => {
                let last = payload
                    .first_chunk::<4>()
                    .map_or(u32::MAX, |b| u32::from_be_bytes(*b) & 0x7fff_ffff);
                // RFC 9113 §6.8: streams the receiver opened above `last` were not (and will
                // not be) processed.
                let refused_initiator = 1 - h;
                let ids: Vec<u32> = self
                    .stream_ids()
                    .into_iter()
                    .filter(|&id| initiator(id) == refused_initiator && id > last)
                    .collect();
                for id in ids {
                    if let Some(mut s) = self.take_stream(id) {
                        s.mark(Incomplete::Reset);
                        self.emit(s, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// SETTINGS sent by side `h` bound the frames the other side sends.
    fn apply_settings(&mut self, h: usize, payload: &[u8]) {
        for (id, value) in frame::settings(payload) {
            if id == frame::SETTINGS_MAX_FRAME_SIZE
                && (frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value)
            {
                self.halves[1 - h].max_frame = Some(value);
            }
            // SETTINGS_HEADER_TABLE_SIZE only bounds the other side's encoder, which must
            // announce any change with a size update in a header block (RFC 7541 §4.2):
            // the decoder follows those.
        }
    }

    /// HEADERS or PUSH_PROMISE: strips padding and priority, and starts a block.
    fn block_start(
        &mut self,
        h: usize,
        hdr: FrameHeader,
        payload: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        let mut start = 0usize;
        let mut pad = 0usize;
        if hdr.has(frame::FLAG_PADDED) {
            pad = usize::from(payload.first().copied().unwrap_or(0));
            start = 1;
        }
        let mut promised = None;
        if hdr.kind == frame::HEADERS && hdr.has(frame::FLAG_PRIORITY) {
            start += 5;
        }
        if hdr.kind == frame::PUSH_PROMISE {
            promised = payload
                .get(start..start + 4)
                .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
            start += 4;
        }
        let Some(fragment) = payload
            .len()
            .checked_sub(pad)
            .and_then(|end| payload.get(start..end))
        else {
            out.push(Http2Output::Error(H2ErrorReason::InvalidPadding));
            self.lose_block(h, hdr.stream);
            if !hdr.has(frame::FLAG_END_HEADERS) {
                self.halves[h].block = Some(Block {
                    stream: hdr.stream,
                    promised: None,
                    end_stream: false,
                    start_ns: ts,
                    wire: 0,
                    lost: true,
                });
            }
            return;
        };
        let block = Block {
            stream: hdr.stream,
            promised,
            end_stream: hdr.kind == frame::HEADERS && hdr.has(frame::FLAG_END_STREAM),
            start_ns: self.halves[h].frame_ts.min(ts),
            wire: fragment.len() as u64,
            lost: false,
        };
        if hdr.has(frame::FLAG_END_HEADERS) {
            self.block_done(h, block, fragment, ts, out);
        } else {
            let half = &mut self.halves[h];
            half.block_buf.clear();
            half.block_buf.extend_from_slice(fragment);
            half.block = Some(block);
        }
    }

    fn block_continue(
        &mut self,
        h: usize,
        hdr: FrameHeader,
        payload: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        let half = &mut self.halves[h];
        let Some(mut block) = half.block else {
            // Its HEADERS was lost, or never sent.
            out.push(Http2Output::Error(H2ErrorReason::InvalidHeaderBlock));
            self.lose_block(h, hdr.stream);
            return;
        };
        block.wire += payload.len() as u64;
        if !block.lost {
            half.block_buf.extend_from_slice(payload);
        }
        if !hdr.has(frame::FLAG_END_HEADERS) {
            half.block = Some(block);
            return;
        }
        half.block = None;
        let buf = std::mem::take(&mut half.block_buf);
        if !block.lost {
            self.block_done(h, block, &buf, ts, out);
        }
        let mut buf = buf;
        buf.clear();
        if buf.capacity() <= 64 * 1024 {
            self.halves[h].block_buf = buf;
        }
    }

    /// A whole header block: decode it, then apply it to its stream.
    fn block_done(
        &mut self,
        h: usize,
        block: Block,
        bytes: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        let max_list = self.limits.max_header_list_bytes;
        // Room up front, so the fields' text does not grow by doubling: indexed fields
        // decode to far more text than their one or two bytes, Huffman strings to about 1.6x.
        let mut fields = DecodedBlock {
            headers: Headers::with_capacity(
                16,
                bytes.len().saturating_mul(2).clamp(256, max_list.max(256)),
            ),
            ..DecodedBlock::default()
        };
        let result = self.halves[h].hpack.decode_block(bytes, |d| match d {
            hpack::Decoded::Field(f) => {
                if f.never_indexed && !f.name.starts_with(':') && !keeps_never_indexed(&f.name) {
                    fields.redacted.push(f.name.to_ascii_lowercase());
                    return;
                }
                fields.size = fields.size.saturating_add(f.size);
                if fields.size > max_list {
                    fields.cut = true;
                    return;
                }
                fields.headers.push(&f.name, &f.value);
            }
            hpack::Decoded::Unresolved => fields.unresolved = true,
        });
        match result {
            Ok(info) => {
                if info.over_cap {
                    out.push(Http2Output::Limit(H2Limit::HpackTable));
                }
            }
            Err(_) => {
                out.push(Http2Output::Error(H2ErrorReason::Hpack));
                fields.failed = true;
            }
        }
        if fields.cut {
            out.push(Http2Output::Limit(H2Limit::HeaderList));
        }
        if self.probing {
            if !fields.failed
                && block.promised.is_none()
                && let Some(sender) = sender_of(&fields.headers)
            {
                self.learn(h, sender);
            }
            return;
        }
        let side = self.halves[h].side;
        match (side, block.promised) {
            (Side::Response, Some(promised)) => self.promise(promised, block, fields, out),
            (Side::Request, _) => self.request_block(block, fields, ts, out),
            (Side::Response, None) => self.response_block(block, fields, ts, out),
        }
    }

    /// A probe found who sent half `h`; the first finding stands.
    fn learn(&mut self, h: usize, sender: Sender) {
        if self.sender.is_none() {
            self.sender = Some((h, sender));
        }
    }

    /// Applies the marks a decoded block carries to its stream.
    fn note_block(s: &mut Stream, fields: &mut DecodedBlock) {
        if fields.unresolved {
            s.mark(Incomplete::HpackStateUnknown);
        }
        if fields.failed || fields.cut {
            s.mark(Incomplete::ParseError);
        }
        s.redacted.append(&mut fields.redacted);
    }

    /// Opens a stream for `id` if the limit allows; false (and counted) if not.
    fn open(&mut self, id: u32, out: &mut Vec<Http2Output>) -> bool {
        if self.streams.len() >= self.limits.max_streams {
            out.push(Http2Output::Limit(H2Limit::Streams));
            if self.refused.len() >= self.limits.max_streams {
                self.refused.clear();
            }
            self.refused.insert(id);
            return false;
        }
        let who = initiator(id);
        self.highest_opened[who] = self.highest_opened[who].max(id);
        if self.pre_capture_below[who] == u32::MAX {
            self.pre_capture_below[who] = id;
        }
        self.streams.insert(id, Stream::default());
        true
    }

    /// Why a frame for a stream never seen opening may start an exchange: the stream began
    /// before the capture, or was opened in lost bytes. `None`: the stream is over (late
    /// frames after a reset), was refused, or never existed.
    fn unseen_stream(&self, id: u32) -> Option<Incomplete> {
        let who = initiator(id);
        if self.refused.contains(&id) || self.finished_early.contains(&id) {
            None
        } else if id < self.pre_capture_below[who] {
            Some(Incomplete::HpackStateUnknown)
        } else if self.gap_opened[who] && id > self.highest_opened[who] {
            Some(Incomplete::Gap)
        } else {
            None
        }
    }

    /// Starts an exchange for a stream whose opening was not seen, if it may be one.
    fn open_unseen(&mut self, id: u32, side: Side, out: &mut Vec<Http2Output>) -> bool {
        let Some(why) = self.unseen_stream(id) else {
            return false;
        };
        if self.streams.len() >= self.limits.max_streams {
            out.push(Http2Output::Limit(H2Limit::Streams));
            self.refused.insert(id);
            return false;
        }
        let who = initiator(id);
        if why == Incomplete::Gap {
            self.highest_opened[who] = self.highest_opened[who].max(id);
        }
        let mut s = Stream {
            headless: true,
            ..Stream::default()
        };
        s.mark(why);
        // Seen first from the server: the request may be long over; the server's END_STREAM
        // decides.
        if side == Side::Response {
            s.request.ended = true;
        }
        self.streams.insert(id, s);
        true
    }

    fn request_block(
        &mut self,
        block: Block,
        mut fields: DecodedBlock,
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        let id = block.stream;
        let opening = fields.headers.iter().any(|f| f.name == ":method");
        if !self.streams.contains_key(&id) {
            let who = initiator(id);
            let ok = if opening {
                self.open(id, out)
            } else if self.unseen_stream(id).is_some() {
                // Trailers (or an undecodable opening) of a stream whose start was missed.
                self.open_unseen(id, Side::Request, out)
            } else if id > self.highest_opened[who] {
                // A new stream: its `:method` is unresolved, or missing.
                if !fields.unresolved {
                    out.push(Http2Output::Error(H2ErrorReason::MissingPseudoHeader));
                }
                self.open(id, out)
            } else {
                // Trailers of a stream already emitted (reset) or refused.
                false
            };
            if !ok {
                return;
            }
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        Self::note_block(s, &mut fields);
        let m = &mut s.request;
        if m.started || (s.headless && !opening) {
            if !m.add_trailers(&mut fields.headers) {
                out.push(Http2Output::Error(H2ErrorReason::InvalidHeaderBlock));
            }
        } else {
            m.started = true;
            m.headers = fields.headers;
            m.start_ns = Some(block.start_ns);
        }
        m.headers_size += block.wire;
        m.end_ns = m.end_ns.max(ts);
        if block.end_stream {
            m.ended = true;
            self.finish_if_done(id, out);
        }
    }

    fn response_block(
        &mut self,
        block: Block,
        mut fields: DecodedBlock,
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        let id = block.stream;
        if !self.streams.contains_key(&id) && !self.open_unseen(id, Side::Response, out) {
            return;
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        Self::note_block(s, &mut fields);
        let status = fields
            .headers
            .iter()
            .find(|f| f.name == ":status")
            .map(|f| f.value.parse::<u16>());
        let m = &mut s.response;
        if m.started || (s.headless && status.is_none()) {
            if !m.add_trailers(&mut fields.headers) {
                out.push(Http2Output::Error(H2ErrorReason::InvalidHeaderBlock));
            }
        } else {
            match status {
                // RFC 9113 §8.1: interim responses (1xx) come before the final one; 101 is
                // not allowed in HTTP/2 and is kept like a final response.
                Some(Ok(code)) if (100..200).contains(&code) && code != 101 => {
                    m.headers_size += block.wire;
                    return;
                }
                Some(Ok(_)) => {}
                _ if fields.unresolved => {}
                _ => out.push(Http2Output::Error(H2ErrorReason::MissingPseudoHeader)),
            }
            m.started = true;
            m.headers = fields.headers;
            m.start_ns = Some(block.start_ns);
        }
        m.headers_size += block.wire;
        m.end_ns = m.end_ns.max(ts);
        if block.end_stream {
            m.ended = true;
            self.finish_if_done(id, out);
        }
    }

    /// PUSH_PROMISE: the promised stream's request.
    fn promise(
        &mut self,
        promised: u32,
        block: Block,
        mut fields: DecodedBlock,
        out: &mut Vec<Http2Output>,
    ) {
        if self.streams.contains_key(&promised) || !self.open(promised, out) {
            return;
        }
        let Some(s) = self.streams.get_mut(&promised) else {
            return;
        };
        Self::note_block(s, &mut fields);
        s.request.started = true;
        s.request.ended = true;
        s.request.headers = fields.headers;
        s.request.headers_size = block.wire;
        s.request.start_ns = Some(block.start_ns);
        s.request.end_ns = block.start_ns;
    }

    // ----- DATA -----

    fn data_begin(&mut self, h: usize, hdr: FrameHeader, ts: u64) {
        let side = self.halves[h].side;
        if let Some(s) = self.streams.get_mut(&hdr.stream) {
            message(s, side).touch(ts);
        }
    }

    fn data_chunk(
        &mut self,
        h: usize,
        stream: u32,
        bytes: &[u8],
        ts: u64,
        out: &mut Vec<Http2Output>,
    ) {
        let side = self.halves[h].side;
        if !self.streams.contains_key(&stream) && !self.open_unseen(stream, side, out) {
            return;
        }
        let budget = self.limits.max_conn_body_bytes.saturating_sub(self.held);
        let max_body = self.limits.max_body_bytes;
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let m = message(s, side);
        m.touch(ts);
        let room_body = max_body.saturating_sub(m.body.data.len());
        let room = room_body.min(budget);
        let already_cut = m.body.cap_hit;
        let kept = m.body.push(bytes, m.body.data.len().saturating_add(room));
        if kept < bytes.len() && room < room_body && !already_cut {
            out.push(Http2Output::Limit(H2Limit::ConnBodyBytes));
        }
        s.held += kept;
        self.held += kept;
    }

    fn data_end(&mut self, h: usize, hdr: FrameHeader, ts: u64, out: &mut Vec<Http2Output>) {
        let side = self.halves[h].side;
        if hdr.len == 0
            && !self.streams.contains_key(&hdr.stream)
            && !self.open_unseen(hdr.stream, side, out)
        {
            return;
        }
        let Some(s) = self.streams.get_mut(&hdr.stream) else {
            return;
        };
        let m = message(s, side);
        m.touch(ts);
        if hdr.has(frame::FLAG_END_STREAM) {
            m.ended = true;
            self.finish_if_done(hdr.stream, out);
        }
    }

    /// `n` DATA bytes of `stream` were lost.
    fn lose_data(&mut self, h: usize, stream: u32, n: u64) {
        let side = self.halves[h].side;
        if let Some(s) = self.streams.get_mut(&stream) {
            message(s, side).body.lose(n);
            s.mark(Incomplete::Gap);
        }
    }
}

fn message(s: &mut Stream, side: Side) -> &mut Message {
    match side {
        Side::Request => &mut s.request,
        Side::Response => &mut s.response,
    }
}

/// A decoded header block on its way to a stream.
#[derive(Default)]
struct DecodedBlock {
    headers: Headers,
    /// Sum of the kept fields' sizes.
    size: usize,
    /// Fields past `max_header_list_bytes` were dropped.
    cut: bool,
    /// A field referred to an unknown table entry.
    unresolved: bool,
    /// HPACK failed part-way; fields after the failure are missing.
    failed: bool,
    /// Names of never-indexed fields dropped.
    redacted: Vec<String>,
}

/// Which end sent a header block, from its pseudo-header fields (RFC 9113 §8.3): request ones
/// (`:method`, `:path`, ...) come from the client, `:status` from the server. Their names are
/// in HPACK's static table, so they decode even when the dynamic table is unknown. Pseudo-header
/// fields come first; `None` for a block without them (trailers) or with both kinds.
fn sender_of(headers: &Headers) -> Option<Sender> {
    let mut request = false;
    let mut status = false;
    for f in headers.iter().take_while(|f| f.name.starts_with(':')) {
        match f.name {
            ":status" => status = true,
            ":method" | ":path" | ":scheme" | ":authority" | ":protocol" => request = true,
            _ => {}
        }
    }
    match (request, status) {
        (true, false) => Some(Sender::Client),
        (false, true) => Some(Sender::Server),
        _ => None,
    }
}

/// Whether an HTTP/1.1 exchange is an accepted `Upgrade: h2c` (RFC 7540 §3.2): the request
/// asked for h2c and the response is 101 switching to it.
pub fn is_h2c_upgrade(ex: &Exchange) -> bool {
    let names_h2c = |headers: &Headers| {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
            .flat_map(|h| h.value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("h2c"))
    };
    ex.request.version != HttpVersion::Http2
        && names_h2c(&ex.request.headers)
        && ex
            .response
            .as_ref()
            .is_some_and(|r| r.status == 101 && names_h2c(&r.headers))
}

/// The client's SETTINGS payload from the `HTTP2-Settings` header of an upgrade request
/// (RFC 7540 §3.2.1: base64url without padding).
pub fn upgrade_settings(request: &Request) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = capture_model::exchange::header_value(&request.headers, "http2-settings")?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim().trim_end_matches('='))
        .ok()
        .filter(|p| p.len().is_multiple_of(6))
}
