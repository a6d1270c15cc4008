//! HAR 1.2 `entry` objects: the output schema of DESIGN.md §5 (user docs:
//! docs/output-schema.md).
//!
//! [`write_entry`] appends one (already redacted) [`Exchange`] as one line of JSON to a byte
//! buffer, with the fields in HAR order; [`entry_json_line`] returns that line as a `String`
//! and [`entry`] gives the same object as a [`serde_json::Value`]. The entry is written by
//! hand, field by field, straight from the borrowed exchange into the buffer (`crate::json`:
//! bulk-copy escaping, SIMD base64 that is never escaped again, shortest floats): the only
//! text built on the way is the URL and the query parameters that need percent-decoding. The
//! bytes are exactly those `serde_json` wrote for the same entry when it was a tree of
//! `Serialize` structs; the tests keep that tree (`serde_reference`) as the oracle.
//! Choices the HAR spec leaves open, and kept the same everywhere:
//! - optional HAR fields (`postData`, `serverIPAddress`, `connection`, `content.encoding`) are
//!   absent when they do not apply; HAR fields that must be present but are unknown take the
//!   HAR convention (`-1` for sizes and timings, `""` for strings, `0` for a missing status);
//! - `_capture` fields marked optional in the schema (`routing_key`, `incomplete`,
//!   `content_decoding`) and `_trailers` are absent when they do not apply; the other
//!   `_capture` fields are always present, with `null` for a value that is not known.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::{
    clock::WallClock,
    exchange::{Body, ConnMeta, Exchange, Headers, HttpVersion, Request, Response, header_value},
    json,
    uri::{is_scheme, scheme_end},
};

#[cfg(test)]
mod serde_reference;

/// The HAR entry of `ex` as a JSON value.
#[expect(
    clippy::expect_used,
    reason = "write_entry writes one JSON object; the tests parse every variant of it"
)]
pub fn entry(ex: &Exchange, clock: &WallClock) -> serde_json::Value {
    let mut line = Vec::new();
    write_entry(ex, clock, &mut line);
    serde_json::from_slice(&line).expect("a HAR line is JSON")
}

/// The HAR entry of `ex` as one line of JSON, without a trailing newline (see
/// [`write_entry`], which writes it into a reused buffer instead).
pub fn entry_json_line(ex: &Exchange, clock: &WallClock) -> String {
    let mut out = Vec::new();
    write_entry(ex, clock, &mut out);
    // Only UTF-8 is written (escapes are ASCII, text is `str`); the lossy branch is never
    // taken.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `_replay`: what the `capture replay` tool did with one recorded request. Written beside the
/// entry of the exchange it sent (or skipped) by [`write_entry_with_replay`], read back by
/// [`crate::har_read`]; the diff engine pairs replayed entries by `pair_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// Identifies the recorded entry this one replays: the same in every replay of the same
    /// recording, whatever the target.
    pub pair_id: String,
    /// Where the recorded entry came from (`FILE:line`).
    pub source: String,
    /// The `--target` URL the request was sent to.
    pub target: String,
    pub verdict: ReplayVerdict,
    /// Why the request was skipped or failed (a fixed word, never a value from the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Names of the credentials re-injected into the request (never their values).
    #[serde(default)]
    pub injected: Vec<String>,
}

/// The outcome of replaying one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayVerdict {
    /// Sent, and a whole response came back.
    Sent,
    /// Not sent: unsafe method, missing credential, incomplete recording, streaming gRPC.
    Skipped,
    /// Sent, but no whole response came back (connection refused, reset, timeout).
    Error,
}

/// [`write_entry`] with a `_replay` object after the other fields: the line `capture replay`
/// writes for each request.
#[expect(
    clippy::expect_used,
    reason = "Replay is plain strings, an enum and a list, written to a Vec: serde_json cannot \
              fail on it"
)]
pub fn write_entry_with_replay(
    ex: &Exchange,
    clock: &WallClock,
    replay: &Replay,
    out: &mut Vec<u8>,
) {
    write_entry(ex, clock, out);
    // The entry ends with its closing brace; `_replay` goes in as its last field.
    out.pop();
    out.extend_from_slice(b",\"_replay\":");
    serde_json::to_writer(&mut *out, replay).expect("a Replay serialises");
    out.push(b'}');
}

/// The absolute URL of a request, as HAR `request.url` wants it (RFC 9112 §3.3 reconstructs
/// the target URI the same way).
///
/// An absolute-form target is the URL. Otherwise the scheme is HTTP/2 `:scheme` or `http`, and
/// the authority is `:authority` (HTTP/2), `Host`, the server address of the connection, or
/// `unknown`, in that order.
pub fn request_url(request: &Request, conn: &ConnMeta) -> String {
    let mut url = String::new();
    push_request_url(request, conn, &mut url);
    url
}

/// [`request_url`] appended to `url`, so that a writer can reuse one buffer.
pub fn push_request_url(request: &Request, conn: &ConnMeta, url: &mut String) {
    let target = request.target.as_str();
    if is_absolute_form(target) {
        url.push_str(target);
        return;
    }
    let http2 = request.version == HttpVersion::Http2;
    let scheme = http2
        .then(|| header_value(&request.headers, ":scheme"))
        .flatten()
        .filter(|scheme| is_scheme(scheme))
        .unwrap_or("http");
    url.reserve(scheme.len() + 3 + 64 + target.len());
    url.push_str(scheme);
    url.push_str("://");
    // RFC 9112 §3.3: in authority-form (CONNECT) the target is the authority, and the path is
    // empty; asterisk-form also has an empty path.
    if request.method.eq_ignore_ascii_case("CONNECT") && !target.starts_with('/') {
        url.push_str(target);
        return;
    }
    // Pushed, not formatted: this runs for every exchange written.
    match request_authority(request, conn) {
        Authority::Header(authority) => url.push_str(authority),
        Authority::Addr(addr) => {
            use fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(url, "{addr}");
        }
        Authority::Unknown => url.push_str("unknown"),
    }
    if target != "*" {
        if !target.starts_with('/') {
            url.push('/');
        }
        url.push_str(target);
    }
}

fn is_absolute_form(target: &str) -> bool {
    scheme_end(target).is_some_and(|colon| target[colon..].starts_with("://"))
}

/// The authority of a request that is not in absolute form: a header's value, or the server
/// address of the connection.
enum Authority<'a> {
    Header(&'a str),
    Addr(SocketAddr),
    Unknown,
}

fn request_authority<'a>(request: &'a Request, conn: &ConnMeta) -> Authority<'a> {
    // RFC 9113 §8.3.1: HTTP/2 carries the authority in `:authority`, or in Host.
    let from_header = (request.version == HttpVersion::Http2)
        .then(|| header_value(&request.headers, ":authority"))
        .flatten()
        .filter(|authority| !authority.is_empty())
        .or_else(|| header_value(&request.headers, "host").filter(|host| !host.is_empty()));
    match (from_header, conn.dst) {
        (Some(authority), _) => Authority::Header(authority),
        (None, Some(dst)) => Authority::Addr(dst),
        (None, None) => Authority::Unknown,
    }
}

/// The exchange's edges made monotonic, so the HAR timings are never negative and add up to
/// `time`. A response that starts before the request ends (an early 4xx, HTTP/2 streaming) has
/// `wait` 0; a missing response has `wait` and `receive` 0.
struct Edges {
    request_start: u64,
    request_end: u64,
    response_start: u64,
    response_end: u64,
}

impl Edges {
    fn new(ex: &Exchange) -> Self {
        let t = &ex.timing;
        let request_start = t.request_start_ns;
        let request_end = t.request_end_ns.max(request_start);
        let response_start = t.response_start_ns.unwrap_or(request_end).max(request_end);
        let response_end = t
            .response_end_ns
            .unwrap_or(response_start)
            .max(response_start);
        Self {
            request_start,
            request_end,
            response_start,
            response_end,
        }
    }

    fn send_ns(&self) -> u64 {
        self.request_end - self.request_start
    }

    fn wait_ns(&self) -> u64 {
        self.response_start - self.request_end
    }

    fn receive_ns(&self) -> u64 {
        self.response_end - self.response_start
    }

    fn total_ns(&self) -> u64 {
        self.response_end - self.request_start
    }
}

/// A byte count as a JSON number (HAR sizes are signed: -1 means unknown).
fn size(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

fn content_type(headers: &Headers) -> &str {
    header_value(headers, "content-type").unwrap_or("")
}

/// A body as HAR text: the text itself, or the bytes in base64 (encoded as they are written).
enum BodyText<'a> {
    Text(&'a str),
    Base64(&'a [u8]),
}

impl BodyText<'_> {
    /// The HAR `encoding` of the text.
    fn encoding(&self) -> Option<&'static str> {
        match self {
            Self::Text(_) => None,
            Self::Base64(_) => Some("base64"),
        }
    }
}

/// The body as HAR text: the text itself when it is UTF-8 and looks like text, else base64.
fn body_text(body: &Body) -> BodyText<'_> {
    let data = body.data.as_slice();
    let text = match std::str::from_utf8(data) {
        Ok(text) => Some(text),
        // A body cut at the capture limit can end inside a character: the text before it is
        // still text. `error_len() == None` means the input ended mid-character.
        Err(e) if body.truncated && e.error_len().is_none() => data
            .get(..e.valid_up_to())
            .and_then(|prefix| std::str::from_utf8(prefix).ok()),
        Err(_) => None,
    };
    match text {
        Some(text) if looks_textual(text) => BodyText::Text(text),
        _ => BodyText::Base64(data),
    }
}

/// Text has no NUL and at most one control character (Unicode `Cc`: U+0000..=U+001F and
/// U+007F..=U+009F) in 32 characters; tab, newlines, form feed and the escape of terminal
/// colours are not counted.
///
/// Counted on the UTF-8 bytes, without decoding characters, eight bytes at a time where all
/// eight are printable ASCII: a character starts at every byte that is not a continuation byte
/// (`0b10xx_xxxx`), and the C1 controls U+0080..=U+009F are the two bytes `C2 80..=9F`.
fn looks_textual(text: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let bytes = text.as_bytes();
    let mut nul = false;
    let mut chars = 0_usize;
    let mut controls = 0_usize;
    // Whether a byte outside ASCII was seen (then C1 controls are counted too).
    let mut wide = false;
    let count = |bytes: &[u8], nul: &mut bool, chars: &mut usize, controls: &mut usize| {
        for &b in bytes {
            *nul |= b == 0;
            *chars += usize::from(b & 0xc0 != 0x80);
            let c0 = b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | 0x1b);
            *controls += usize::from(c0 | (b == 0x7f));
        }
    };
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0_u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        // Eight printable ASCII characters (0x20..=0x7e): no high bit, and with none set, adding
        // 0x60 to a byte sets bit 7 exactly when it is 0x20 or more, adding 1 exactly when it is
        // 0x7f; no carry crosses a byte.
        let printable = word & HIGHS == 0
            && word.wrapping_add(ONES * 0x60) & HIGHS == HIGHS
            && word.wrapping_add(ONES) & HIGHS == 0;
        if printable {
            chars += 8;
        } else {
            wide |= word & HIGHS != 0;
            count(chunk, &mut nul, &mut chars, &mut controls);
        }
    }
    wide |= !words.remainder().is_ascii();
    count(words.remainder(), &mut nul, &mut chars, &mut controls);
    if wide {
        controls += bytes
            .windows(2)
            .filter(|pair| pair[0] == 0xc2 && pair[1] & 0xe0 == 0x80)
            .count();
    }
    !nul && controls * 32 <= chars
}
/// Appends the HAR entry of `ex` to `out` as one line of JSON, without a trailing newline.
/// JSON strings escape control characters, so the line never contains a line break.
///
/// Nothing is allocated on the way but percent-decoded query parameters (and `out` growing):
/// reuse `out` across entries. The URL is built in a buffer this thread keeps.
pub fn write_entry(ex: &Exchange, clock: &WallClock, out: &mut Vec<u8>) {
    thread_local! {
        static URL: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
    }
    // Taken, not borrowed, so that nothing here can find it borrowed.
    let mut url = URL.take();
    url.clear();
    push_request_url(&ex.request, &ex.conn, &mut url);
    let edges = Edges::new(ex);
    let started = clock.to_system_time(ex.timing.request_start_ns);
    // Room for the fixed text and the bodies; strings that need escaping grow it further.
    out.reserve(
        1024 + ex.request.body.data.len() * 4 / 3
            + ex.response
                .as_ref()
                .map_or(0, |r| r.body.data.len() * 4 / 3),
    );

    out.extend_from_slice(b"{\"startedDateTime\":");
    // UTC with a `Z`, whatever the local time zone (WallClock clamps to years 1970..=9999).
    json::rfc3339_millis(out, started);
    out.extend_from_slice(b",\"time\":");
    json::millis(out, edges.total_ns());
    out.extend_from_slice(b",\"request\":");
    write_request(out, &ex.request, &url);
    URL.set(url);
    out.extend_from_slice(b",\"response\":");
    match &ex.response {
        Some(response) => write_response(out, response),
        // HAR convention for a request that got no response (as browsers write it).
        None => out.extend_from_slice(
            b"{\"status\":0,\"statusText\":\"\",\"httpVersion\":\"\",\"cookies\":[],\
              \"headers\":[],\"content\":{\"size\":0,\"mimeType\":\"\",\"text\":\"\"},\
              \"redirectURL\":\"\",\"headersSize\":-1,\"bodySize\":-1}",
        ),
    }
    out.extend_from_slice(
        b",\"cache\":{},\"timings\":{\"blocked\":-1,\"dns\":-1,\"connect\":-1,\"send\":",
    );
    json::millis(out, edges.send_ns());
    out.extend_from_slice(b",\"wait\":");
    json::millis(out, edges.wait_ns());
    out.extend_from_slice(b",\"receive\":");
    json::millis(out, edges.receive_ns());
    out.extend_from_slice(b",\"ssl\":-1}");
    match ex.conn.dst.map(|dst| dst.ip()) {
        Some(IpAddr::V4(ip)) => {
            out.extend_from_slice(b",\"serverIPAddress\":\"");
            write_ipv4(out, ip);
            out.push(b'"');
        }
        Some(ip) => {
            out.extend_from_slice(b",\"serverIPAddress\":");
            json::display_plain(out, &ip);
        }
        None => {}
    }
    if !ex.conn.id.is_empty() {
        out.extend_from_slice(b",\"connection\":");
        json::string(out, &ex.conn.id);
    }
    out.extend_from_slice(b",\"_capture\":");
    write_capture(out, ex);
    if let Some(trailers) = ex.response.as_ref().map(|r| &r.trailers)
        && !trailers.is_empty()
    {
        out.extend_from_slice(b",\"_trailers\":");
        write_name_values(out, trailers);
    }
    if let Some(grpc) = &ex.grpc {
        // `_grpc`: every field present, `null` when not known (no trailers seen, no message).
        out.extend_from_slice(b",\"_grpc\":{\"service\":");
        json::string(out, &grpc.service);
        out.extend_from_slice(b",\"method\":");
        json::string(out, &grpc.method);
        out.extend_from_slice(b",\"status\":");
        json::opt_int(out, grpc.status);
        out.extend_from_slice(b",\"message\":");
        json::opt_string(out, grpc.message.as_deref());
        out.push(b'}');
    }
    out.push(b'}');
}

fn write_request(out: &mut Vec<u8>, request: &Request, url: &str) {
    out.extend_from_slice(b"{\"method\":");
    json::string(out, &request.method);
    out.extend_from_slice(b",\"url\":");
    json::string(out, url);
    out.extend_from_slice(b",\"httpVersion\":\"");
    out.extend_from_slice(request.version.as_str().as_bytes());
    // `cookies` is always empty: `Cookie` is always redacted.
    out.extend_from_slice(b"\",\"cookies\":[],\"headers\":");
    write_name_values(out, &request.headers);
    out.extend_from_slice(b",\"queryString\":");
    write_query_string(out, url);
    let body = &request.body;
    // A request has a body when it sent body bytes (RFC 9112 §6.3); GET/HEAD usually don't.
    if body.wire_size > 0 || !body.data.is_empty() {
        out.extend_from_slice(b",\"postData\":{\"mimeType\":");
        json::string(out, content_type(&request.headers));
        out.extend_from_slice(b",\"text\":");
        let text = body_text(body);
        write_body_text(out, &text);
        if let Some(encoding) = text.encoding() {
            out.extend_from_slice(b",\"_encoding\":");
            json::string(out, encoding);
        }
        // HAR's postData has no size: ours, when redaction changed the text's length.
        if let Some(decoded_size) = body.decoded_size {
            out.extend_from_slice(b",\"_size\":");
            json::int(out, decoded_size);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b",\"headersSize\":");
    json::int(out, size(request.headers_size));
    out.extend_from_slice(b",\"bodySize\":");
    json::int(out, size(body.wire_size));
    if !request.trailers.is_empty() {
        out.extend_from_slice(b",\"_trailers\":");
        write_name_values(out, &request.trailers);
    }
    out.push(b'}');
}

fn write_response(out: &mut Vec<u8>, response: &Response) {
    out.extend_from_slice(b"{\"status\":");
    json::int(out, response.status);
    out.extend_from_slice(b",\"statusText\":");
    json::string(out, &response.reason);
    out.extend_from_slice(b",\"httpVersion\":\"");
    out.extend_from_slice(response.version.as_str().as_bytes());
    // `cookies` is always empty: `Set-Cookie` is always redacted.
    out.extend_from_slice(b"\",\"cookies\":[],\"headers\":");
    write_name_values(out, &response.headers);
    out.extend_from_slice(b",\"content\":{\"size\":");
    json::int(out, size(response.body.decoded_size()));
    out.extend_from_slice(b",\"mimeType\":");
    json::string(out, content_type(&response.headers));
    out.extend_from_slice(b",\"text\":");
    let text = body_text(&response.body);
    write_body_text(out, &text);
    if let Some(encoding) = text.encoding() {
        out.extend_from_slice(b",\"encoding\":");
        json::string(out, encoding);
    }
    out.extend_from_slice(b"},\"redirectURL\":");
    json::string(
        out,
        header_value(&response.headers, "location").unwrap_or(""),
    );
    out.extend_from_slice(b",\"headersSize\":");
    json::int(out, size(response.headers_size));
    out.extend_from_slice(b",\"bodySize\":");
    json::int(out, size(response.body.wire_size));
    out.push(b'}');
}

fn write_body_text(out: &mut Vec<u8>, text: &BodyText<'_>) {
    match text {
        BodyText::Text(text) => json::string(out, text),
        BodyText::Base64(data) => json::base64(out, data),
    }
}

/// Header (or trailer) fields as a HAR list of `{"name", "value"}` objects.
fn write_name_values(out: &mut Vec<u8>, headers: &Headers) {
    out.push(b'[');
    for (i, header) in headers.iter().enumerate() {
        write_name_value(out, i, header.name, header.value);
    }
    out.push(b']');
}

/// The `i`th `{"name", "value"}` object of a list.
#[inline]
fn write_name_value(out: &mut Vec<u8>, i: usize, name: &str, value: &str) {
    if i > 0 {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"name\":");
    json::string(out, name);
    out.extend_from_slice(b",\"value\":");
    json::string(out, value);
    out.push(b'}');
}

/// The decoded `name=value` pairs of a URL's query (application/x-www-form-urlencoded), as a
/// HAR list. Names and values are borrowed from the URL unless they need decoding.
fn write_query_string(out: &mut Vec<u8>, url: &str) {
    let query = url.split_once('?').map_or("", |(_, rest)| {
        rest.split_once('#').map_or(rest, |(query, _)| query)
    });
    out.push(b'[');
    if query.contains(['%', '+']) {
        for (i, (name, value)) in form_urlencoded::parse(query.as_bytes()).enumerate() {
            write_name_value(out, i, &name, &value);
        }
    } else {
        // Nothing to decode: the pairs `form_urlencoded::parse` yields, as slices of the URL.
        for (i, pair) in query.split('&').filter(|pair| !pair.is_empty()).enumerate() {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            write_name_value(out, i, name, value);
        }
    }
    out.push(b']');
}

fn write_capture(out: &mut Vec<u8>, ex: &Exchange) {
    let w = &ex.workload;
    out.extend_from_slice(b"{\"workload\":{\"namespace\":");
    json::opt_string(out, w.namespace.as_deref());
    out.extend_from_slice(b",\"pod\":");
    json::opt_string(out, w.pod.as_deref());
    out.extend_from_slice(b",\"container\":");
    json::opt_string(out, w.container.as_deref());
    out.extend_from_slice(b",\"owner_kind\":");
    json::opt_string(out, w.owner_kind.as_deref());
    out.extend_from_slice(b",\"owner_name\":");
    json::opt_string(out, w.owner_name.as_deref());
    out.extend_from_slice(b",\"node\":");
    json::opt_string(out, w.node.as_deref());
    // Addresses are written as their `Display` text (`10.0.0.1:80`, `[fd00::1]:443`).
    out.extend_from_slice(b"},\"conn\":{\"src\":");
    write_opt_addr(out, ex.conn.src);
    out.extend_from_slice(b",\"dst\":");
    write_opt_addr(out, ex.conn.dst);
    out.extend_from_slice(b",\"role\":");
    json::opt_string(out, ex.conn.role.map(|r| r.as_str()));
    out.extend_from_slice(b"},\"pid\":");
    json::int(out, ex.pid);
    out.extend_from_slice(b",\"protocol\":");
    json::string(out, ex.protocol.as_str());
    if let Some(key) = &ex.routing_key {
        out.extend_from_slice(b",\"routing_key\":");
        json::string(out, key);
    }
    out.extend_from_slice(b",\"redacted\":[");
    for (i, name) in ex.redacted.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::string(out, name);
    }
    let response_body = ex.response.as_ref().map(|r| &r.body);
    out.extend_from_slice(b"],\"truncated\":{\"request\":");
    json::bool(out, ex.request.body.truncated);
    out.extend_from_slice(b",\"response\":");
    json::bool(out, response_body.is_some_and(|b| b.truncated));
    out.extend_from_slice(b"},\"original_size\":{\"request\":");
    json::int(out, ex.request.body.wire_size);
    out.extend_from_slice(b",\"response\":");
    // null when there is no response.
    json::opt_int(out, response_body.map(|b| b.wire_size));
    out.push(b'}');
    if let Some(incomplete) = ex.incomplete {
        out.extend_from_slice(b",\"incomplete\":");
        json::string(out, incomplete.as_str());
    }
    let request_decoding = has_decoding(&ex.request.body);
    let response_decoding = response_body.filter(|b| has_decoding(b));
    if request_decoding || response_decoding.is_some() {
        out.extend_from_slice(b",\"content_decoding\":{");
        if request_decoding {
            out.extend_from_slice(b"\"request\":");
            write_decoding(out, &ex.request.body);
        }
        if let Some(body) = response_decoding {
            if request_decoding {
                out.push(b',');
            }
            out.extend_from_slice(b"\"response\":");
            write_decoding(out, body);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

fn write_opt_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        // `a.b.c.d:port`, as `Display` writes it, without the formatting machinery.
        Some(SocketAddr::V4(v4)) => {
            out.push(b'"');
            write_ipv4(out, *v4.ip());
            out.push(b':');
            json::int(out, v4.port());
            out.push(b'"');
        }
        Some(addr) => json::display_plain(out, &addr),
        None => out.extend_from_slice(b"null"),
    }
}

/// `a.b.c.d`, as `Display` writes an IPv4 address.
fn write_ipv4(out: &mut Vec<u8>, ip: Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        json::int(out, octet);
    }
}

fn has_decoding(body: &Body) -> bool {
    body.decoded_from.is_some() || body.decode_error.is_some()
}

/// `{"decoded_from"?, "decode_error"?}` of a body that has at least one of them.
fn write_decoding(out: &mut Vec<u8>, body: &Body) {
    out.push(b'{');
    if let Some(from) = &body.decoded_from {
        out.extend_from_slice(b"\"decoded_from\":");
        json::string(out, from);
    }
    if let Some(error) = &body.decode_error {
        if body.decoded_from.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"decode_error\":");
        json::string(out, error);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {

    use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        exchange::{Incomplete, Protocol, Role, Timing, Workload},
        fixtures::{addr, body, h, representative, representative_redacted},
    };

    /// 2024-05-01T12:00:00.123Z at monotonic 5 s.
    const CLOCK: WallClock = WallClock::with_offset_ns(1_714_564_800_123_000_000 - 5_000_000_000);

    fn line(ex: &Exchange) -> String {
        entry_json_line(ex, &CLOCK)
    }

    fn value(ex: &Exchange) -> Value {
        entry(ex, &CLOCK)
    }

    /// The entry of `representative()` after default redaction. docs/output-schema.md shows it.
    const GOLDEN: &str = r#"{"startedDateTime":"2024-05-01T12:00:00.123Z","time":13.0,"request":{"method":"POST","url":"http://orders.shop.svc:8080/api/orders?page=2&sort=created%20desc","httpVersion":"HTTP/1.1","cookies":[],"headers":[{"name":"Host","value":"orders.shop.svc:8080"},{"name":"User-Agent","value":"curl/8.5.0"},{"name":"Content-Type","value":"application/json"},{"name":"Content-Length","value":"23"}],"queryString":[{"name":"page","value":"2"},{"name":"sort","value":"created desc"}],"postData":{"mimeType":"application/json","text":"{\"item\":\"book\",\"qty\":1}"},"headersSize":187,"bodySize":23},"response":{"status":201,"statusText":"Created","httpVersion":"HTTP/1.1","cookies":[],"headers":[{"name":"Content-Type","value":"application/json"},{"name":"Content-Encoding","value":"gzip"},{"name":"Content-Length","value":"48"},{"name":"Location","value":"/api/orders/42"}],"content":{"size":28,"mimeType":"application/json","text":"{\"id\":42,\"status\":\"created\"}"},"redirectURL":"/api/orders/42","headersSize":158,"bodySize":48},"cache":{},"timings":{"blocked":-1,"dns":-1,"connect":-1,"send":0.25,"wait":12.5,"receive":0.25,"ssl":-1},"serverIPAddress":"10.96.12.5","connection":"4242:7:1","_capture":{"workload":{"namespace":"shop","pod":"checkout-7d9f8b6c5d-x2x4q","container":"app","owner_kind":"Deployment","owner_name":"checkout","node":"node-a"},"conn":{"src":"10.244.1.17:48122","dst":"10.96.12.5:8080","role":"client"},"pid":4242,"protocol":"h1","redacted":["authorization","connection","set-cookie"],"truncated":{"request":false,"response":false},"original_size":{"request":23,"response":48},"content_decoding":{"response":{"decoded_from":"gzip"}}}}"#;

    #[test]
    fn golden_representative_entry() {
        let ex = representative_redacted();

        assert_eq!(line(&ex), GOLDEN);
        assert_eq!(value(&ex), serde_json::from_str::<Value>(GOLDEN).unwrap());
        assert_har_entry(&value(&ex));
    }

    #[test]
    fn docs_show_the_golden_entry() {
        let docs = include_str!("../../docs/output-schema.md");
        assert!(
            docs.contains(GOLDEN),
            "docs/output-schema.md example is not the golden entry"
        );
    }

    #[test]
    fn head_without_body() {
        let mut ex = representative();
        ex.request.method = "HEAD".into();
        ex.request.headers.retain(|h| h.name == "Host");
        ex.request.body = Body::default();
        if let Some(response) = &mut ex.response {
            response.status = 200;
            response.reason = "OK".into();
            // HEAD: Content-Length describes the GET body, none is sent (RFC 9110 §9.3.2).
            response.headers =
                vec![h("Content-Type", "text/html"), h("Content-Length", "5120")].into();
            response.body = Body::default();
        }
        let v = value(&ex);
        assert_har_entry(&v);
        assert!(v["request"].get("postData").is_none());
        assert_eq!(v["request"]["bodySize"], 0);
        assert_eq!(
            v["response"]["content"],
            json!({"size": 0, "mimeType": "text/html", "text": ""})
        );
        assert_eq!(v["response"]["bodySize"], 0);
        assert!(v["_capture"].get("content_decoding").is_none());
        assert_eq!(
            v["_capture"]["original_size"],
            json!({"request": 0, "response": 0})
        );
    }

    #[test]
    fn binary_bodies_are_base64() {
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
        let mut ex = representative();
        ex.request.body = body(png);
        ex.request.headers = vec![h("Host", "h"), h("Content-Type", "image/png")].into();
        if let Some(response) = &mut ex.response {
            // Valid UTF-8 but mostly control characters.
            response.body = body(b"\x01\x02\x03\x04hello");
            response.body.decoded_from = None;
            response.headers = vec![h("content-type", "application/octet-stream")].into();
        }
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(
            v["request"]["postData"],
            json!({"mimeType": "image/png", "text": BASE64.encode(png), "_encoding": "base64"})
        );
        assert_eq!(
            v["response"]["content"],
            json!({
                "size": 9,
                "mimeType": "application/octet-stream",
                "text": "AQIDBGhlbGxv",
                "encoding": "base64",
            })
        );
    }

    #[test]
    fn text_heuristic() {
        let cases: &[(&[u8], bool)] = &[
            (b"", true),
            (b"plain\ttext\r\nwith\x0cfeeds", true),
            ("unicode \u{e9}\u{4e2d}\u{1f600}".as_bytes(), true),
            (b"\x1b[31mERROR\x1b[0m colours", true),
            (b"nul\0inside", false),
            (b"\xff\xfe not utf-8", false),
            (b"one \x01 control in a long enough line of text", true),
            (b"\x01\x02", false),
        ];
        for (data, textual) in cases {
            let body = body(data);
            let text = body_text(&body);
            assert_eq!(text.encoding().is_none(), *textual, "{data:?}");
            match text {
                BodyText::Text(text) => assert_eq!(text.as_bytes(), *data),
                BodyText::Base64(bytes) => assert_eq!(bytes, *data),
            }
        }
    }

    #[test]
    fn no_response() {
        let mut ex = representative();
        ex.response = None;
        ex.incomplete = Some(Incomplete::NoResponse);
        ex.timing.response_start_ns = None;
        ex.timing.response_end_ns = None;
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(
            v["response"],
            json!({
                "status": 0,
                "statusText": "",
                "httpVersion": "",
                "cookies": [],
                "headers": [],
                "content": {"size": 0, "mimeType": "", "text": ""},
                "redirectURL": "",
                "headersSize": -1,
                "bodySize": -1,
            })
        );
        assert_eq!(v["time"], 0.25);
        assert_eq!(
            v["timings"],
            json!({"blocked": -1, "dns": -1, "connect": -1, "send": 0.25, "wait": 0.0,
                   "receive": 0.0, "ssl": -1})
        );
        assert_eq!(v["_capture"]["incomplete"], "no_response");
        assert_eq!(
            v["_capture"]["truncated"],
            json!({"request": false, "response": false})
        );
        assert_eq!(
            v["_capture"]["original_size"],
            json!({"request": 23, "response": null})
        );
        assert!(v.get("_trailers").is_none());
    }

    #[test]
    fn timings_never_negative_and_add_up() {
        let mut ex = representative();
        // Early response: it starts before the request finished sending.
        ex.timing = Timing {
            request_start_ns: 10_000_000,
            request_end_ns: 30_000_000,
            response_start_ns: Some(20_000_000),
            response_end_ns: Some(25_000_000),
        };
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(v["timings"]["send"], 20.0);
        assert_eq!(v["timings"]["wait"], 0.0);
        assert_eq!(v["timings"]["receive"], 0.0);
        assert_eq!(v["time"], 20.0);

        // Response started but not finished: time runs to the response start.
        ex.timing = Timing {
            request_start_ns: 0,
            request_end_ns: 1_000,
            response_start_ns: Some(3_000),
            response_end_ns: None,
        };
        let v = value(&ex);
        assert_eq!(v["time"], 0.003);
        assert_eq!(v["timings"]["wait"], 0.002);
        assert_eq!(v["timings"]["receive"], 0.0);
    }

    #[test]
    fn trailers() {
        let mut ex = representative();
        ex.protocol = Protocol::Grpc;
        ex.request.trailers = vec![h("x-request-checksum", "abc")].into();
        if let Some(response) = &mut ex.response {
            response.trailers = vec![h("grpc-status", "0"), h("grpc-message", "")].into();
        }
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(
            v["_trailers"],
            json!([{"name": "grpc-status", "value": "0"}, {"name": "grpc-message", "value": ""}])
        );
        assert_eq!(
            v["request"]["_trailers"],
            json!([{"name": "x-request-checksum", "value": "abc"}])
        );
        assert_eq!(v["_capture"]["protocol"], "grpc");
        assert!(v.get("_grpc").is_none());
        ex.grpc = Some(crate::exchange::Grpc {
            service: "shop.v1.Orders".into(),
            method: "Get".into(),
            status: Some(5),
            message: Some("order 7 not found".into()),
        });
        let v = value(&ex);
        assert_eq!(
            v["_grpc"],
            json!({"service": "shop.v1.Orders", "method": "Get", "status": 5, "message": "order 7 not found"})
        );

        // Absent when empty.
        let v = value(&representative());
        assert!(v.get("_trailers").is_none());
        assert!(v["request"].get("_trailers").is_none());
    }

    #[test]
    fn truncated_body() {
        let mut ex = representative();
        if let Some(response) = &mut ex.response {
            // 1 MiB limit hit inside the 3-byte "€": the text keeps what was whole.
            let mut data = "x".repeat(9).into_bytes();
            data.extend_from_slice(&"€".as_bytes()[..2]);
            response.body = Body {
                data,
                wire_size: 5_000_000,
                truncated: true,
                decoded_from: None,
                decode_error: None,
                decoded_size: None,
            };
        }
        ex.request.body.truncated = true;
        ex.request.body.wire_size = 2_000_000;
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(v["response"]["content"]["size"], 11);
        assert_eq!(v["response"]["content"]["text"], "xxxxxxxxx");
        assert!(v["response"]["content"].get("encoding").is_none());
        assert_eq!(v["response"]["bodySize"], 5_000_000);
        assert_eq!(v["request"]["bodySize"], 2_000_000);
        assert_eq!(
            v["_capture"]["truncated"],
            json!({"request": true, "response": true})
        );
        assert_eq!(
            v["_capture"]["original_size"],
            json!({"request": 2_000_000, "response": 5_000_000})
        );

        // Not truncated: the same bytes are not UTF-8, so base64.
        if let Some(response) = &mut ex.response {
            response.body.truncated = false;
        }
        let v = value(&ex);
        assert_eq!(v["response"]["content"]["encoding"], "base64");
    }

    #[test]
    fn content_decoding_failure_is_reported() {
        let mut ex = representative();
        if let Some(response) = &mut ex.response {
            response.body = Body {
                data: b"\x1f\x8b\x08\0garbage".to_vec(),
                wire_size: 11,
                truncated: true,
                decoded_from: None,
                decode_error: Some("corrupt gzip stream".into()),
                decoded_size: None,
            };
        }
        ex.request.body.decoded_from = Some("br".into());
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(
            v["_capture"]["content_decoding"],
            json!({"request": {"decoded_from": "br"},
                   "response": {"decode_error": "corrupt gzip stream"}})
        );
        assert_eq!(v["response"]["content"]["encoding"], "base64");
    }

    #[test]
    fn unknown_metadata_is_null_and_optional_keys_absent() {
        let mut ex = representative();
        ex.conn = ConnMeta::default();
        ex.workload = Workload {
            node: Some("laptop".into()),
            ..Workload::default()
        }
        .into();
        ex.redacted.clear();
        let v = value(&ex);
        assert_har_entry(&v);
        assert!(v.get("serverIPAddress").is_none());
        assert!(v.get("connection").is_none());
        assert_eq!(
            v["_capture"]["workload"],
            json!({"namespace": null, "pod": null, "container": null, "owner_kind": null,
                   "owner_name": null, "node": "laptop"})
        );
        assert_eq!(
            v["_capture"]["conn"],
            json!({"src": null, "dst": null, "role": null})
        );
        assert!(v["_capture"].get("routing_key").is_none());
        assert!(v["_capture"].get("incomplete").is_none());
        assert_eq!(v["_capture"]["redacted"], json!([]));

        ex.routing_key = Some("canary".into());
        ex.conn.dst = Some(addr("[fd00::5]:443"));
        ex.conn.role = Some(Role::Server);
        let v = value(&ex);
        assert_eq!(v["_capture"]["routing_key"], "canary");
        assert_eq!(v["serverIPAddress"], "fd00::5");
        assert_eq!(v["_capture"]["conn"]["dst"], "[fd00::5]:443");
        assert_eq!(v["_capture"]["conn"]["role"], "server");
    }

    fn url_of(
        version: HttpVersion,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        dst: Option<&str>,
    ) -> String {
        let request = Request {
            method: method.into(),
            target: target.into(),
            version,
            headers: headers.iter().map(|(n, v)| h(n, v)).collect(),
            headers_size: 0,
            body: Body::default(),
            trailers: Headers::new(),
        };
        let conn = ConnMeta {
            dst: dst.map(addr),
            ..ConnMeta::default()
        };
        request_url(&request, &conn)
    }

    #[test]
    fn url_building() {
        use HttpVersion::{Http2, Http10, Http11};
        let dst = Some("10.0.0.9:8080");
        // (version, method, target, headers, connection dst, expected url)
        type Case<'a> = (
            HttpVersion,
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            (
                Http11,
                "GET",
                "/p?q=1",
                &[("Host", "example.com")],
                dst,
                "http://example.com/p?q=1",
            ),
            (
                Http11,
                "GET",
                "/p",
                &[("host", "example.com:81")],
                None,
                "http://example.com:81/p",
            ),
            (
                Http11,
                "GET",
                "http://other.example/abs?x",
                &[("Host", "ignored")],
                dst,
                "http://other.example/abs?x",
            ),
            (
                Http11,
                "GET",
                "HTTPS://Up.Example/",
                &[],
                None,
                "HTTPS://Up.Example/",
            ),
            (Http10, "GET", "/old", &[], dst, "http://10.0.0.9:8080/old"),
            (
                Http10,
                "GET",
                "/old",
                &[("Host", "")],
                dst,
                "http://10.0.0.9:8080/old",
            ),
            (
                Http11,
                "GET",
                "/",
                &[],
                Some("[fd00::1]:80"),
                "http://[fd00::1]:80/",
            ),
            (Http11, "GET", "/x", &[], None, "http://unknown/x"),
            (Http11, "OPTIONS", "*", &[("Host", "h")], None, "http://h"),
            (
                Http11,
                "CONNECT",
                "db.example:5432",
                &[("Host", "db.example:5432")],
                dst,
                "http://db.example:5432",
            ),
            (Http11, "GET", "rel", &[("Host", "h")], None, "http://h/rel"),
            (
                Http2,
                "GET",
                "/v1/x",
                &[
                    (":scheme", "https"),
                    (":authority", "api:443"),
                    ("host", "ignored"),
                ],
                dst,
                "https://api:443/v1/x",
            ),
            (
                Http2,
                "GET",
                "/v1/x",
                &[("host", "api")],
                None,
                "http://api/v1/x",
            ),
            (
                Http2,
                "GET",
                "/v1/x",
                &[(":scheme", "bad scheme")],
                dst,
                "http://10.0.0.9:8080/v1/x",
            ),
            (
                Http2,
                "GET",
                "/v1/x",
                &[(":scheme", "h:ttps")],
                dst,
                "http://10.0.0.9:8080/v1/x",
            ),
            (
                Http2,
                "GET",
                "/v1/x",
                &[(":scheme", "")],
                dst,
                "http://10.0.0.9:8080/v1/x",
            ),
            (
                Http2,
                "GET",
                "/v1/x",
                &[(":scheme", "svn+ssh.2-x")],
                dst,
                "svn+ssh.2-x://10.0.0.9:8080/v1/x",
            ),
            // `:authority` and `:scheme` are HTTP/2 only.
            (
                Http11,
                "GET",
                "/",
                &[(":authority", "a"), (":scheme", "https")],
                None,
                "http://unknown/",
            ),
        ];
        for (version, method, target, headers, dst, expected) in cases {
            assert_eq!(
                &url_of(*version, method, target, headers, *dst),
                expected,
                "{target}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn query_string_pairs_are_form_urlencoded_ones(query in "[a-z=&%+0-9A-F#]{0,24}") {
            let url = format!("http://h/p?{query}");
            let mut ours = Vec::new();
            write_query_string(&mut ours, &url);
            let query = query.split_once('#').map_or(query.as_str(), |(query, _)| query);
            let mut theirs = Vec::new();
            theirs.push(b'[');
            for (i, (name, value)) in form_urlencoded::parse(query.as_bytes()).enumerate() {
                write_name_value(&mut theirs, i, &name, &value);
            }
            theirs.push(b']');
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn query_string_is_decoded_from_url() {
        let mut ex = representative();
        ex.request.target = "/s?q=a+b&x=%2F%3D&flag&caf%C3%A9=%E2%82%AC&empty=#frag".into();
        let v = value(&ex);
        assert_eq!(
            v["request"]["queryString"],
            json!([
                {"name": "q", "value": "a b"},
                {"name": "x", "value": "/="},
                {"name": "flag", "value": ""},
                {"name": "café", "value": "€"},
                {"name": "empty", "value": ""},
            ])
        );
        ex.request.target = "/no-query".into();
        assert_eq!(value(&ex)["request"]["queryString"], json!([]));
    }

    #[test]
    fn http2_entry() {
        let mut ex = representative();
        ex.protocol = Protocol::H2;
        ex.request.version = HttpVersion::Http2;
        ex.request.method = "GET".into();
        ex.request.target = "/items".into();
        ex.request.body = Body::default();
        ex.request.headers = vec![
            h(":method", "GET"),
            h(":scheme", "http"),
            h(":authority", "items.svc"),
            h(":path", "/items"),
        ]
        .into();
        if let Some(response) = &mut ex.response {
            response.version = HttpVersion::Http2;
            response.reason = String::new();
            response.headers = vec![h(":status", "200"), h("content-type", "text/plain")].into();
            response.body = body(b"ok");
        }
        let v = value(&ex);
        assert_har_entry(&v);
        assert_eq!(v["request"]["httpVersion"], "HTTP/2");
        assert_eq!(v["request"]["url"], "http://items.svc/items");
        assert_eq!(v["response"]["statusText"], "");
        assert_eq!(v["response"]["content"]["mimeType"], "text/plain");
        assert_eq!(v["response"]["redirectURL"], "");
    }

    /// Exchanges that between them take every branch of the entry.
    fn variants() -> Vec<Exchange> {
        let mut all = vec![representative()];
        all.push(representative_redacted());

        let mut ex = representative();
        ex.request.body = body(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
        if let Some(response) = &mut ex.response {
            response.body = body(b"\x01\x02\x03\x04hello\xc2\x85");
            response.body.decode_error = Some("unknown coding".into());
            response.trailers = vec![h("grpc-status", "0"), h("grpc-message", "caf\u{e9}")].into();
        }
        ex.request.trailers = vec![h("x-sum", "abc")].into();
        ex.protocol = Protocol::Grpc;
        all.push(ex);

        let mut ex = representative();
        ex.response = None;
        ex.incomplete = Some(Incomplete::NoResponse);
        ex.timing.response_start_ns = None;
        ex.timing.response_end_ns = None;
        ex.conn = ConnMeta::default();
        ex.workload = Default::default();
        all.push(ex);

        let mut ex = representative();
        ex.conn.src = Some(addr("[fe80::1%3]:50000"));
        ex.conn.dst = Some(addr("[fd00::5]:443"));
        ex.conn.role = Some(Role::Server);
        ex.routing_key = Some("canary \"blue\"".into());
        ex.request.target = "/s?q=a+b&x=%2F%3D&flag&caf%C3%A9=%E2%82%AC&bad=%ZZ&empty=#frag".into();
        ex.request.headers.retain(|h| h.name != "Host");
        ex.request
            .headers
            .push("X-Odd", "line1\nline2\r\n\u{1}\u{7f}\"\\ \u{2028}");
        ex.redacted = vec!["authorization".into(), "token".into()];
        all.push(ex);

        let mut ex = representative();
        ex.request.method = "CONNECT".into();
        ex.request.target = "db.example:5432".into();
        ex.request.body = Body::default();
        if let Some(response) = &mut ex.response {
            let mut data = "x".repeat(9).into_bytes();
            data.extend_from_slice(&"€".as_bytes()[..2]);
            response.body = Body {
                data,
                wire_size: 5_000_000,
                truncated: true,
                decoded_from: None,
                decode_error: None,
                decoded_size: None,
            };
        }
        all.push(ex);

        let mut ex = representative();
        ex.request.target = "https://other.example/abs?x=1".into();
        ex.request.version = HttpVersion::Http2;
        if let Some(response) = &mut ex.response {
            response.version = HttpVersion::Http2;
            response.body = body("plain text ünïcödé\tand a tab\n".as_bytes());
        }
        ex.conn.id = std::sync::Arc::default();
        all.push(ex);
        all
    }

    #[test]
    fn write_entry_appends_the_line_and_agrees_with_entry() {
        for ex in variants() {
            let mut out = b"earlier line\n".to_vec();
            write_entry(&ex, &CLOCK, &mut out);
            let line = line(&ex);
            assert_eq!(out.strip_prefix(b"earlier line\n"), Some(line.as_bytes()));
            let parsed: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(parsed, value(&ex), "{line}");
            assert_har_entry(&parsed);
        }
    }

    /// The line as `serde_json` wrote it from the `Serialize` tree the writer replaced.
    fn serde_line(ex: &Exchange) -> String {
        let mut out = Vec::new();
        serde_reference::write_entry(ex, &CLOCK, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hand_written_line_is_byte_for_byte_the_serde_line() {
        for ex in variants() {
            assert_eq!(line(&ex), serde_line(&ex));
        }
        let mut ex = representative();
        ex.grpc = Some(crate::exchange::Grpc {
            service: "shop.Orders".into(),
            method: "Get".into(),
            status: Some(5),
            message: Some("not \"found\"".into()),
        });
        ex.request.body.decode_error = Some("bad gzip".into());
        if let Some(response) = &mut ex.response {
            response.body.decode_error = Some("also bad".into());
        }
        assert_eq!(line(&ex), serde_line(&ex));
        ex.grpc = Some(crate::exchange::Grpc::default());
        ex.request.body.decoded_from = Some("br".into());
        ex.response = None;
        assert_eq!(line(&ex), serde_line(&ex));
    }

    #[test]
    fn replay_line_is_byte_for_byte_the_serde_line() {
        let replays = [
            Replay {
                pair_id: "p-1".into(),
                source: "in.jsonl:3".into(),
                target: "http://127.0.0.1:8080".into(),
                verdict: ReplayVerdict::Sent,
                reason: None,
                injected: vec!["authorization".into()],
            },
            Replay {
                pair_id: "p-\"2\"".into(),
                source: String::new(),
                target: "t".into(),
                verdict: ReplayVerdict::Skipped,
                reason: Some("unsafe_method".into()),
                injected: Vec::new(),
            },
        ];
        for ex in variants() {
            for replay in &replays {
                let mut ours = b"earlier\n".to_vec();
                write_entry_with_replay(&ex, &CLOCK, replay, &mut ours);
                let mut theirs = b"earlier\n".to_vec();
                serde_reference::write_entry_with_replay(&ex, &CLOCK, replay, &mut theirs);
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(theirs).unwrap()
                );
            }
        }
    }

    proptest::proptest! {
        /// Arbitrary text in every string of the entry, arbitrary bytes in the bodies and
        /// arbitrary edges: the hand-written line is the serde line.
        #[test]
        fn hand_written_line_matches_serde_for_any_content(
            text in proptest::collection::vec(".{0,24}", 12),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            textual in proptest::bool::ANY,
            edges in proptest::collection::vec(0_u64..1 << 40, 4),
            sizes in proptest::collection::vec(proptest::num::u64::ANY, 3),
            truncated in proptest::bool::ANY,
        ) {
            let mut ex = representative();
            let t = |i: usize| text[i].clone();
            ex.request.method = t(0);
            ex.request.target = format!("/{}?{}", t(1), t(2));
            ex.request.headers.push(&t(3), &t(4));
            ex.request.headers_size = sizes[0];
            ex.request.body = Body {
                data: if textual { t(5).into_bytes() } else { body.clone() },
                wire_size: sizes[1],
                truncated,
                decoded_from: None,
                decode_error: Some(t(6)).filter(|e| !e.is_empty()),
                decoded_size: Some(sizes[2]).filter(|_| truncated),
            };
            std::sync::Arc::make_mut(&mut ex.workload).pod = Some(t(7));
            ex.redacted = vec![t(8), t(9)];
            ex.routing_key = Some(t(10)).filter(|k| k.len() % 2 == 0);
            ex.conn.id = t(11).into();
            ex.timing = Timing {
                request_start_ns: edges[0],
                request_end_ns: edges[1],
                response_start_ns: Some(edges[2]),
                response_end_ns: Some(edges[3]),
            };
            if let Some(response) = &mut ex.response {
                response.reason = t(4);
                response.headers_size = sizes[2];
                response.body = Body {
                    data: body,
                    wire_size: sizes[0],
                    truncated: !truncated,
                    decoded_from: Some(t(3)),
                    decode_error: None,
                    decoded_size: Some(sizes[1]).filter(|_| !truncated),
                };
                response.trailers = vec![h(&t(2), &t(1))].into();
            }
            proptest::prop_assert_eq!(line(&ex), serde_line(&ex));
        }
    }

    /// `looks_textual` as the definition says it, character by character.
    fn looks_textual_by_chars(text: &str) -> bool {
        let mut chars = 0_usize;
        let mut controls = 0_usize;
        for c in text.chars() {
            if c == '\0' {
                return false;
            }
            chars += 1;
            if c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b') {
                controls += 1;
            }
        }
        controls * 32 <= chars
    }

    proptest::proptest! {
        #[test]
        fn looks_textual_counts_characters(
            pieces in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::char::range('\0', '\u{a0}'),
                    proptest::char::any(),
                    proptest::strategy::Just('a'),
                ],
                0..80,
            )
        ) {
            let text: String = pieces.into_iter().collect();
            proptest::prop_assert_eq!(looks_textual(&text), looks_textual_by_chars(&text));
        }
    }

    #[test]
    fn looks_textual_sees_every_character_at_every_offset() {
        // Each character next to the edges of the printable range, at each place of a run
        // long enough for whole words and a tail, among printable text and among controls.
        for c in [
            '\0', '\x01', '\t', '\x1b', '\x1f', ' ', '~', '\x7f', '\u{80}', '\u{9f}', '\u{a0}',
            '\u{e9}',
        ] {
            for at in 0..19 {
                for fill in ["x", "\x01"] {
                    let mut text: Vec<char> = fill.repeat(19).chars().collect();
                    text[at] = c;
                    let text: String = text.into_iter().collect();
                    assert_eq!(
                        looks_textual(&text),
                        looks_textual_by_chars(&text),
                        "{c:?} at {at} among {fill:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn line_has_no_newline_even_with_control_characters() {
        let mut ex = representative();
        ex.request.headers.push("X-Odd", "line1\nline2\r\n");
        let line = line(&ex);
        assert!(!line.contains('\n') && !line.contains('\r'));
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["request"]["headers"][6]["value"], "line1\nline2\r\n");
    }

    /// Asserts the HAR 1.2 required fields of an entry are present with the right JSON types
    /// (http://www.softwareishard.com/blog/har-12-spec/), and our ranges on top.
    fn assert_har_entry(v: &Value) {
        fn string(v: &Value, key: &str) {
            assert!(v[key].is_string(), "{key} is not a string in {v}");
        }
        fn number(v: &Value, key: &str) {
            assert!(v[key].is_number(), "{key} is not a number in {v}");
        }
        fn name_values(v: &Value, key: &str) {
            let items = v[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is not an array"));
            for item in items {
                string(item, "name");
                string(item, "value");
            }
        }
        let started = v["startedDateTime"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(started).is_ok(), "{started}");
        assert!(started.ends_with('Z') && started.len() == 24, "{started}");
        number(v, "time");
        assert!(v["cache"].is_object());
        for key in ["serverIPAddress", "connection"] {
            assert!(v.get(key).is_none_or(Value::is_string), "{key}");
        }

        let request = &v["request"];
        for key in ["method", "url", "httpVersion"] {
            string(request, key);
        }
        for key in ["cookies", "headers", "queryString"] {
            name_values(request, key);
        }
        number(request, "headersSize");
        number(request, "bodySize");
        if let Some(post) = request.get("postData") {
            string(post, "mimeType");
            string(post, "text");
        }

        let response = &v["response"];
        number(response, "status");
        for key in ["statusText", "httpVersion", "redirectURL"] {
            string(response, key);
        }
        for key in ["cookies", "headers"] {
            name_values(response, key);
        }
        number(response, "headersSize");
        number(response, "bodySize");
        let content = &response["content"];
        number(content, "size");
        string(content, "mimeType");
        string(content, "text");
        assert!(content.get("encoding").is_none_or(|e| e == "base64"));

        let timings = &v["timings"];
        let mut sum = 0.0;
        for key in ["send", "wait", "receive"] {
            let t = timings[key].as_f64().unwrap();
            assert!(t >= 0.0, "{key} {t}");
            sum += t;
        }
        for key in ["blocked", "dns", "connect", "ssl"] {
            assert!(timings[key].as_f64().unwrap() >= -1.0);
        }
        assert!(
            (v["time"].as_f64().unwrap() - sum).abs() < 1e-9,
            "time is not the sum"
        );

        let capture = &v["_capture"];
        for key in [
            "namespace",
            "pod",
            "container",
            "owner_kind",
            "owner_name",
            "node",
        ] {
            let field = &capture["workload"][key];
            assert!(field.is_null() || field.is_string(), "workload.{key}");
        }
        for key in ["src", "dst", "role"] {
            let field = &capture["conn"][key];
            assert!(field.is_null() || field.is_string(), "conn.{key}");
        }
        number(capture, "pid");
        assert!(matches!(
            capture["protocol"].as_str(),
            Some("h1" | "h2" | "grpc")
        ));
        assert!(
            capture["redacted"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
        assert!(capture["truncated"]["request"].is_boolean());
        assert!(capture["truncated"]["response"].is_boolean());
        assert!(capture["original_size"]["request"].is_u64());
        let original_response = &capture["original_size"]["response"];
        assert!(original_response.is_u64() || original_response.is_null());
    }
}
