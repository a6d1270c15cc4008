//! The `capture.v1.Exchange` bytes of an exchange, written straight from the borrowed model:
//! no `pb::Exchange` in between, so no second copy of every header and body on the way to the
//! collector. The bytes are exactly what `prost` writes for [`super::to_proto`] of the same
//! exchange (fields in tag order, proto3 defaults left out, `optional` fields and messages
//! written when present); the tests hold it to that.

use std::{io::Write as _, net::SocketAddr};

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::{
    clock::WallClock,
    exchange::{Body, Exchange, HeaderRef, Headers, HttpVersion, Request, Response, Role},
};

/// An exchange ready to encode: its Unix timestamps and address texts worked out once, and
/// its encoded length known before anything is written (a length-delimited frame needs it
/// first).
pub struct Encoder<'a> {
    ex: &'a Exchange,
    timing: [Option<u64>; 4],
    src: Option<AddrText>,
    dst: Option<AddrText>,
    len: usize,
}

impl<'a> Encoder<'a> {
    /// `clock` turns the exchange's monotonic timestamps into Unix time, as in
    /// [`super::to_proto`].
    pub fn new(ex: &'a Exchange, clock: &WallClock) -> Self {
        let t = &ex.timing;
        let mut encoder = Self {
            ex,
            timing: [
                Some(clock.to_unix_ns(t.request_start_ns)),
                Some(clock.to_unix_ns(t.request_end_ns)),
                t.response_start_ns.map(|ns| clock.to_unix_ns(ns)),
                t.response_end_ns.map(|ns| clock.to_unix_ns(ns)),
            ],
            src: ex.conn.src.map(AddrText::new),
            dst: ex.conn.dst.map(AddrText::new),
            len: 0,
        };
        encoder.len = encoder.exchange_len();
        encoder
    }

    /// Bytes of the encoded `Exchange` message (without a length delimiter).
    pub fn encoded_len(&self) -> usize {
        self.len
    }

    /// Appends the encoded `Exchange` message (without a length delimiter) to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        buf.reserve(self.len);
        let ex = self.ex;
        varint(buf, 1, super::protocol_to_proto(ex.protocol) as u64);
        message(buf, 2, request_len(&ex.request));
        request(buf, &ex.request);
        if let Some(r) = &ex.response {
            message(buf, 3, response_len(r));
            response(buf, r);
        }
        message(buf, 4, self.timing_len());
        let [start, end, response_start, response_end] = self.timing;
        varint(buf, 1, start.unwrap_or(0));
        varint(buf, 2, end.unwrap_or(0));
        opt_varint(buf, 3, response_start);
        opt_varint(buf, 4, response_end);
        opt_string(buf, 5, ex.incomplete.map(|i| i.as_str()));
        message(buf, 6, self.connection_len());
        string(buf, 1, &ex.conn.id);
        opt_string(buf, 2, self.src.as_ref().map(AddrText::as_str));
        opt_string(buf, 3, self.dst.as_ref().map(AddrText::as_str));
        varint(buf, 4, role(ex.conn.role));
        varint(buf, 7, u64::from(ex.pid));
        let w = &ex.workload;
        let workload = [
            &w.namespace,
            &w.pod,
            &w.container,
            &w.owner_kind,
            &w.owner_name,
            &w.node,
        ];
        message(
            buf,
            8,
            workload
                .iter()
                .zip(1..)
                .map(|(v, tag)| opt_string_len(tag, v.as_deref()))
                .sum(),
        );
        for (value, tag) in workload.iter().zip(1..) {
            opt_string(buf, tag, value.as_deref());
        }
        for name in &ex.redacted {
            opt_string(buf, 9, Some(name));
        }
        opt_string(buf, 10, ex.routing_key.as_deref());
        if let Some(g) = &ex.grpc {
            message(buf, 11, grpc_len(g));
            string(buf, 1, &g.service);
            string(buf, 2, &g.method);
            opt_varint(buf, 3, g.status.map(u64::from));
            opt_string(buf, 4, g.message.as_deref());
        }
        varint(buf, 12, ex.cgroup_id);
    }

    fn timing_len(&self) -> usize {
        let [start, end, response_start, response_end] = self.timing;
        varint_len(1, start.unwrap_or(0))
            + varint_len(2, end.unwrap_or(0))
            + opt_varint_len(3, response_start)
            + opt_varint_len(4, response_end)
    }

    fn connection_len(&self) -> usize {
        let conn = &self.ex.conn;
        string_len(1, &conn.id)
            + opt_string_len(2, self.src.as_ref().map(AddrText::as_str))
            + opt_string_len(3, self.dst.as_ref().map(AddrText::as_str))
            + varint_len(4, role(conn.role))
    }

    fn exchange_len(&self) -> usize {
        let ex = self.ex;
        let w = &ex.workload;
        let workload = [
            &w.namespace,
            &w.pod,
            &w.container,
            &w.owner_kind,
            &w.owner_name,
            &w.node,
        ]
        .iter()
        .zip(1..)
        .map(|(v, tag)| opt_string_len(tag, v.as_deref()))
        .sum();
        varint_len(1, super::protocol_to_proto(ex.protocol) as u64)
            + message_len(2, request_len(&ex.request))
            + ex.response
                .as_ref()
                .map_or(0, |r| message_len(3, response_len(r)))
            + message_len(4, self.timing_len())
            + opt_string_len(5, ex.incomplete.map(|i| i.as_str()))
            + message_len(6, self.connection_len())
            + varint_len(7, u64::from(ex.pid))
            + message_len(8, workload)
            + ex.redacted
                .iter()
                .map(|name| opt_string_len(9, Some(name)))
                .sum::<usize>()
            + opt_string_len(10, ex.routing_key.as_deref())
            + ex.grpc.as_ref().map_or(0, |g| message_len(11, grpc_len(g)))
            + varint_len(12, ex.cgroup_id)
    }
}

/// A socket address as `Display` writes it (`10.0.0.1:80`, `[fe80::1%3]:443`), on the stack.
struct AddrText {
    /// The longest is `[` + 45-byte IPv6 text + `%` + 10-digit scope + `]:` + 5-digit port.
    buf: [u8; 72],
    len: usize,
}

impl AddrText {
    fn new(addr: SocketAddr) -> Self {
        let mut buf = [0; 72];
        let mut cursor = &mut buf[..];
        // Fits: see the size of `buf`; a failed write would leave a shorter text, never panic.
        let _ = write!(cursor, "{addr}");
        let len = 72 - cursor.len();
        Self { buf, len }
    }

    fn as_str(&self) -> &str {
        // `Display` writes UTF-8 (ASCII here); the empty fallback is never taken.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

fn role(role: Option<Role>) -> u64 {
    use capture_proto::v1::Role as Pb;
    (match role {
        None => Pb::Unspecified,
        Some(Role::Client) => Pb::Client,
        Some(Role::Server) => Pb::Server,
    }) as u64
}

fn version(version: HttpVersion) -> u64 {
    // Proto enum values are non-negative here: the varint of the i32 is that of the u64.
    u64::try_from(super::version_to_proto(version)).unwrap_or(0)
}

fn header_len(h: HeaderRef<'_>) -> usize {
    string_len(1, h.name) + string_len(2, h.value)
}

fn headers_len(tag: u32, headers: &Headers) -> usize {
    headers
        .iter()
        .map(|h| message_len(tag, header_len(h)))
        .sum()
}

fn headers(buf: &mut Vec<u8>, tag: u32, headers: &Headers) {
    for h in headers {
        message(buf, tag, header_len(h));
        string(buf, 1, h.name);
        string(buf, 2, h.value);
    }
}

fn body_len(b: &Body) -> usize {
    bytes_len(1, &b.data)
        + varint_len(2, b.wire_size)
        + varint_len(3, u64::from(b.truncated))
        + opt_string_len(4, b.decoded_from.as_deref())
        + opt_string_len(5, b.decode_error.as_deref())
        + opt_varint_len(6, b.decoded_size)
}

fn body(buf: &mut Vec<u8>, tag: u32, b: &Body) {
    message(buf, tag, body_len(b));
    bytes(buf, 1, &b.data);
    varint(buf, 2, b.wire_size);
    varint(buf, 3, u64::from(b.truncated));
    opt_string(buf, 4, b.decoded_from.as_deref());
    opt_string(buf, 5, b.decode_error.as_deref());
    opt_varint(buf, 6, b.decoded_size);
}

fn request_len(r: &Request) -> usize {
    string_len(1, &r.method)
        + string_len(2, &r.target)
        + varint_len(3, version(r.version))
        + headers_len(4, &r.headers)
        + varint_len(5, r.headers_size)
        + message_len(6, body_len(&r.body))
        + headers_len(7, &r.trailers)
}

fn request(buf: &mut Vec<u8>, r: &Request) {
    string(buf, 1, &r.method);
    string(buf, 2, &r.target);
    varint(buf, 3, version(r.version));
    headers(buf, 4, &r.headers);
    varint(buf, 5, r.headers_size);
    body(buf, 6, &r.body);
    headers(buf, 7, &r.trailers);
}

fn response_len(r: &Response) -> usize {
    varint_len(1, u64::from(r.status))
        + string_len(2, &r.reason)
        + varint_len(3, version(r.version))
        + headers_len(4, &r.headers)
        + varint_len(5, r.headers_size)
        + message_len(6, body_len(&r.body))
        + headers_len(7, &r.trailers)
}

fn response(buf: &mut Vec<u8>, r: &Response) {
    varint(buf, 1, u64::from(r.status));
    string(buf, 2, &r.reason);
    varint(buf, 3, version(r.version));
    headers(buf, 4, &r.headers);
    varint(buf, 5, r.headers_size);
    body(buf, 6, &r.body);
    headers(buf, 7, &r.trailers);
}

fn grpc_len(g: &crate::exchange::Grpc) -> usize {
    string_len(1, &g.service)
        + string_len(2, &g.method)
        + opt_varint_len(3, g.status.map(u64::from))
        + opt_string_len(4, g.message.as_deref())
}

// proto3 scalars are left out when they hold their default (0, "", false, empty bytes);
// `optional` scalars and message fields are written whenever they are present.

fn varint_len(tag: u32, value: u64) -> usize {
    opt_varint_len(tag, Some(value).filter(|&v| v != 0))
}

fn opt_varint_len(tag: u32, value: Option<u64>) -> usize {
    value.map_or(0, |v| key_len(tag) + encoded_len_varint(v))
}

fn varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    opt_varint(buf, tag, Some(value).filter(|&v| v != 0));
}

fn opt_varint(buf: &mut Vec<u8>, tag: u32, value: Option<u64>) {
    if let Some(value) = value {
        key(buf, tag, WireType::Varint);
        put_varint(buf, value);
    }
}

/// A field key: one byte for the field numbers this message has (below 16), inline. prost's
/// `encode_key`/`encode_varint` are out-of-line loops that were 14 % of the exporter thread's
/// samples, most of them for one-byte keys and lengths.
#[inline]
fn key(buf: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    if tag < 16 {
        buf.push(((tag << 3) | wire_type as u32) as u8);
    } else {
        encode_key(tag, wire_type, buf);
    }
}

/// A varint, with the one-byte case inline.
#[inline]
fn put_varint(buf: &mut Vec<u8>, value: u64) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        encode_varint(value, buf);
    }
}

fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The key and length of a message field; its fields follow.
fn message(buf: &mut Vec<u8>, tag: u32, len: usize) {
    key(buf, tag, WireType::LengthDelimited);
    put_varint(buf, len as u64);
}

fn bytes_len(tag: u32, data: &[u8]) -> usize {
    if data.is_empty() {
        0
    } else {
        message_len(tag, data.len())
    }
}

fn bytes(buf: &mut Vec<u8>, tag: u32, data: &[u8]) {
    if !data.is_empty() {
        message(buf, tag, data.len());
        buf.extend_from_slice(data);
    }
}

fn string_len(tag: u32, text: &str) -> usize {
    bytes_len(tag, text.as_bytes())
}

fn string(buf: &mut Vec<u8>, tag: u32, text: &str) {
    bytes(buf, tag, text.as_bytes());
}

fn opt_string_len(tag: u32, text: Option<&str>) -> usize {
    text.map_or(0, |t| message_len(tag, t.len()))
}

fn opt_string(buf: &mut Vec<u8>, tag: u32, text: Option<&str>) {
    if let Some(text) = text {
        message(buf, tag, text.len());
        buf.extend_from_slice(text.as_bytes());
    }
}
