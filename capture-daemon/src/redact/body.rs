//! Field-level body redaction (DESIGN.md §6): the values of credential fields are replaced by
//! [`MARKER`] in JSON bodies (at any depth), `application/x-www-form-urlencoded` bodies, the
//! form fields of `multipart/form-data` bodies, and the JSON messages of gRPC / gRPC-Web
//! `+json` bodies. Everything else stays byte for byte, so a diff of two redacted bodies still
//! lines up.
//!
//! The body is the decoded content (capture-http undid gzip, br, zstd, deflate), maybe cut by
//! the capture limit. So the scanners are tolerant of a body that ends anywhere: a value cut
//! by the limit is replaced up to the end (`{"password":"ab` becomes
//! `{"password":"[REDACTED]"`). A body that does not have the shape of its content type (a
//! byte JSON cannot have where it is, a multipart body without its boundary) is left as it is.
//!
//! Cost: bodies of other content types are not looked at. A JSON body is only scanned when one
//! of its keys (a string before a colon, found from the colons with a SIMD search, so string
//! values cost next to nothing) decodes to a configured name; a form or multipart body when a
//! case-insensitive multi-pattern search (aho-corasick) finds a piece of a configured name in
//! it, or an escape that could spell one (`%`, `\`). Nothing allocates until a value is
//! replaced.
//!
//! Names are compared after decoding (JSON string escapes, form `+`/`%xx`, multipart quoted
//! strings and RFC 8187 `name*=`), ASCII case-insensitively, with `-` and `_` alike.
//! Nothing here logs or formats a body byte.

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use capture_model::exchange::{Body, Headers, header_value};
use memchr::{memchr, memchr_iter, memchr2, memmem};

use super::Removed;

/// What a credential value is replaced with (in form bodies percent-encoded, in JSON as a
/// string), so a reader sees the field was there and was removed.
pub const MARKER: &str = "[REDACTED]";
const JSON_MARKER: &[u8] = b"\"[REDACTED]\"";
const FORM_MARKER: &[u8] = b"%5BREDACTED%5D";

/// Body field names redacted unless `--no-default-body-redaction`.
pub const DEFAULT_BODY_FIELDS: [&str; 11] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "access_token",
    "refresh_token",
    "id_token",
    "private_key",
];

/// Longest configurable body field name, in bytes (`--redact-body-field`): names are decoded
/// into a stack buffer of this size, so comparing never allocates.
pub const MAX_BODY_FIELD_LEN: usize = 128;

/// The body field names to redact, with the pre-check that skips bodies naming none of them.
#[derive(Clone)]
pub struct BodyFields {
    /// Normalised names (ASCII lowercase, `-` as `_`), sorted, deduplicated.
    names: Vec<String>,
    /// Longest name in `names`.
    max_len: usize,
    /// Finds the longest `-`/`_`-free piece of each name, ASCII case-insensitively (the
    /// pre-check of form and multipart bodies); `None` when there are no names or the
    /// automaton could not be built (then every such body is scanned).
    finder: Option<AhoCorasick>,
    /// `lengths[n]`: some name is `n` bytes long; `firsts[b]`: some name starts with `b`. They
    /// turn away most JSON keys without an escape before decoding them.
    lengths: [bool; MAX_BODY_FIELD_LEN + 1],
    firsts: [bool; 256],
}

impl std::fmt::Debug for BodyFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The names say it all; the tables are derived from them.
        f.debug_struct("BodyFields")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BodyFields {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names
    }
}

impl Eq for BodyFields {}

impl Default for BodyFields {
    fn default() -> Self {
        Self::new(&[], true)
    }
}

/// `-` and `_` alike, ASCII case folded.
fn norm(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

impl BodyFields {
    /// The default names (when `defaults`) plus `extra`. Names are trimmed; empty names and
    /// names longer than [`MAX_BODY_FIELD_LEN`] bytes are ignored (configuration refuses them).
    pub fn new(extra: &[String], defaults: bool) -> Self {
        let defaults = defaults.then_some(DEFAULT_BODY_FIELDS.as_slice());
        let mut names: Vec<String> = defaults
            .into_iter()
            .flatten()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .map(str::trim)
            .filter(|name| !name.is_empty() && name.len() <= MAX_BODY_FIELD_LEN)
            .map(|name| {
                // `norm` maps ASCII to ASCII and leaves other bytes, so this stays UTF-8.
                String::from_utf8_lossy(&name.bytes().map(norm).collect::<Vec<u8>>()).into_owned()
            })
            .collect();
        names.sort();
        names.dedup();
        let max_len = names.iter().map(String::len).max().unwrap_or(0);
        let mut pieces: Vec<&str> = names
            .iter()
            .filter_map(|name| name.split('_').max_by_key(|piece| piece.len()))
            .filter(|piece| !piece.is_empty())
            .collect();
        pieces.sort_unstable();
        pieces.dedup();
        let finder = if names.is_empty() {
            None
        } else {
            // A DFA: one table lookup per byte (the pieces are few and short, so it is small),
            // where the default automaton for case-insensitive patterns steps an NFA.
            AhoCorasick::builder()
                .ascii_case_insensitive(true)
                .kind(Some(AhoCorasickKind::DFA))
                .build(&pieces)
                .ok()
        };
        let mut lengths = [false; MAX_BODY_FIELD_LEN + 1];
        let mut firsts = [false; 256];
        for name in &names {
            lengths[name.len()] = true;
            firsts[usize::from(name.as_bytes()[0])] = true;
        }
        Self {
            names,
            max_len,
            finder,
            lengths,
            firsts,
        }
    }

    /// The normalised names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Replaces the credential values in `body`, whose message has `headers`, and adds
    /// `body:<name>` to `removed` for each name found. A body that is rewritten keeps its
    /// size before redaction in `decoded_size` when the length changed.
    pub fn redact(&self, headers: &Headers, body: &mut Body, removed: &mut Removed) {
        if self.names.is_empty() || body.data.is_empty() || body.decode_error.is_some() {
            return;
        }
        let Some(kind) = header_value(headers, "content-type").and_then(BodyKind::of) else {
            return;
        };
        let data = &body.data;
        if !self.might_match(data, kind) {
            return;
        }
        let mut hits = Vec::new();
        let rewritten = match kind {
            BodyKind::Json => self.redact_json(data, &mut hits),
            BodyKind::GrpcJson => self.redact_grpc_json(data, &mut hits),
            BodyKind::Form => self.redact_form(data, &mut hits),
            BodyKind::Multipart(boundary) => self.redact_multipart(data, boundary, &mut hits),
        };
        let Some(rewritten) = rewritten else {
            return;
        };
        if body.decoded_size.is_none() && rewritten.len() != data.len() {
            body.decoded_size = Some(data.len() as u64);
        }
        body.data = rewritten;
        for index in hits {
            if let Some(name) = self.names.get(index) {
                removed.insert(format!("body:{name}"));
            }
        }
    }

    /// The pre-check: could `data` name a configured field?
    fn might_match(&self, data: &[u8], kind: BodyKind<'_>) -> bool {
        if matches!(kind, BodyKind::Json | BodyKind::GrpcJson) {
            return self.json_might_match(data);
        }
        let Some(finder) = &self.finder else {
            return true;
        };
        if finder.is_match(data) {
            return true;
        }
        // An escape can spell a name without any of its letters appearing as such.
        match kind {
            BodyKind::Form => memchr(b'%', data).is_some(),
            _ => memchr2(b'%', b'\\', data).is_some(),
        }
    }

    /// The JSON pre-check: does a string followed by a colon (what a key is) spell a
    /// configured name? Only the keys are decoded, found from the colons (a SIMD search), so
    /// string values cost nothing but that search, however long they are. A colon inside a
    /// string value may be taken for one that ends a key: that can only say yes too often,
    /// and the scanner decides. It never says no for a key the scanner would redact: such a
    /// key is a complete string, then JSON whitespace, then a colon, and before its opening
    /// quote comes `{`, `,` or whitespace, so the first quote found walking back that is not
    /// escaped (an even run of backslashes before it) is that opening quote.
    fn json_might_match(&self, data: &[u8]) -> bool {
        // A decoded byte takes at most 6 raw bytes (`\u0070`): a longer raw key decodes to
        // more than `max_len` bytes and names nothing.
        let window = self.max_len.saturating_mul(6);
        for colon in memchr_iter(b':', data) {
            // Back over JSON whitespace to the quote that would close a key.
            let mut close = colon;
            let close = loop {
                let Some(at) = close.checked_sub(1) else {
                    break None;
                };
                close = at;
                match data[at] {
                    b' ' | b'\t' | b'\n' | b'\r' => {}
                    b'"' => break Some(at),
                    _ => break None,
                }
            };
            let Some(close) = close.filter(|&c| !escaped(data, c)) else {
                continue;
            };
            // Back to the quote that opens it (keys are short: a plain loop beats a search).
            let from = close.saturating_sub(window + 1);
            let mut at = close;
            let mut plain = true;
            let open = loop {
                if at == from {
                    break None;
                }
                at -= 1;
                match data[at] {
                    b'"' if !escaped(data, at) => break Some(at),
                    b'\\' => plain = false,
                    _ => {}
                }
            };
            let Some(open) = open else {
                continue;
            };
            let key = &data[open + 1..close];
            // Without an escape a key decodes to itself byte for byte (folded by `norm`): most
            // are turned away by their length or first byte before decoding.
            if plain
                && key.first().is_none_or(|&b| {
                    !self.firsts[usize::from(norm(b))]
                        || !self.lengths.get(key.len()).copied().unwrap_or(false)
                })
            {
                continue;
            }
            if self.json_key(key).is_some() {
                return true;
            }
        }
        false
    }

    /// Index of the name `decoded` spells once normalised, if configured. `write` decodes the
    /// raw name into the buffer it is given and returns the length, or `None` when the name
    /// is longer than the buffer (so longer than any configured name).
    fn lookup(&self, write: impl FnOnce(&mut Sink<'_>) -> Option<()>) -> Option<usize> {
        let mut buf = [0u8; MAX_BODY_FIELD_LEN];
        let limit = self.max_len;
        let mut sink = Sink {
            buf: &mut buf[..limit],
            len: 0,
        };
        write(&mut sink)?;
        let len = sink.len;
        let decoded = &buf[..len];
        self.names
            .binary_search_by(|name| name.as_bytes().cmp(decoded))
            .ok()
    }

    fn json_key(&self, raw: &[u8]) -> Option<usize> {
        self.lookup(|sink| decode_json_string(raw, sink))
    }

    /// `{"password": "x"}` -> `{"password": "[REDACTED]"}`; `None` when nothing matched or
    /// `data` is not (a prefix of) JSON.
    fn redact_json(&self, data: &[u8], hits: &mut Vec<usize>) -> Option<Vec<u8>> {
        let mut ranges = Vec::new();
        if !scan_json(data, |raw| self.json_key(raw), &mut ranges) || ranges.is_empty() {
            return None;
        }
        hits.extend(ranges.iter().map(|r| r.2));
        Some(splice(data, &ranges, JSON_MARKER))
    }

    /// gRPC length-prefixed messages (a flag byte, a big-endian u32 length, the payload):
    /// each uncompressed message is redacted as JSON and its length rewritten.
    fn redact_grpc_json(&self, data: &[u8], hits: &mut Vec<usize>) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0usize;
        while at < data.len() {
            let Some(prefix) = data.get(at..at + 5) else {
                break;
            };
            let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
            let end = (at + 5).saturating_add(declared as usize).min(data.len());
            let payload = &data[at + 5..end];
            let redacted = if prefix[0] == 0 {
                self.redact_json(payload, hits)
            } else {
                None
            };
            if let Some(new) = redacted {
                let out = out.get_or_insert_with(|| {
                    let mut out = Vec::with_capacity(data.len() + 64);
                    out.extend_from_slice(&data[..at]);
                    out
                });
                // A message cut by the capture limit keeps the length it declared, adjusted
                // by what redaction changed.
                let length = (u64::from(declared) + new.len() as u64)
                    .saturating_sub(payload.len() as u64)
                    .min(u64::from(u32::MAX));
                out.push(prefix[0]);
                out.extend_from_slice(&u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(&new);
            } else if let Some(out) = &mut out {
                out.extend_from_slice(&data[at..end]);
            }
            at = end;
        }
        if let Some(out) = &mut out {
            out.extend_from_slice(&data[at.min(data.len())..]);
        }
        out
    }

    /// `a=1&password=x` -> `a=1&password=%5BREDACTED%5D`.
    fn redact_form(&self, data: &[u8], hits: &mut Vec<usize>) -> Option<Vec<u8>> {
        let mut ranges = Vec::new();
        let mut start = 0;
        let ends = memchr_iter(b'&', data).chain(std::iter::once(data.len()));
        for end in ends {
            let pair = &data[start..end];
            if let Some(eq) = memchr(b'=', pair)
                && let Some(index) = self.lookup(|sink| decode_form_name(&pair[..eq], sink))
            {
                ranges.push((start + eq + 1, end, index));
            }
            start = end + 1;
        }
        if ranges.is_empty() {
            return None;
        }
        hits.extend(ranges.iter().map(|r| r.2));
        Some(splice(data, &ranges, FORM_MARKER))
    }

    /// The content of each part whose `Content-Disposition` `name` is configured is replaced
    /// (RFC 7578); part headers, file parts with other names and the delimiters stay.
    fn redact_multipart(
        &self,
        data: &[u8],
        boundary: &[u8],
        hits: &mut Vec<usize>,
    ) -> Option<Vec<u8>> {
        let finder = memmem::Finder::new(boundary);
        // RFC 2046 §5.1.1: a delimiter is `--boundary` at the start of the body or of a line.
        let delimiter_at = |from: usize| -> Option<usize> {
            let mut search = from;
            loop {
                let found = search + finder.find(data.get(search..)?)?;
                let dashes = found.checked_sub(2);
                if let Some(d) = dashes
                    && &data[d..found] == b"--"
                    && (d == 0 || data[d - 1] == b'\n')
                {
                    return Some(d);
                }
                search = found + 1;
            }
        };
        let mut ranges = Vec::new();
        let mut delimiter = delimiter_at(0)?;
        loop {
            let after = delimiter + 2 + boundary.len();
            if data.get(after..after + 2) == Some(&b"--"[..]) {
                break;
            }
            // Transport padding, then the line ends; the part's header lines follow.
            let Some(nl) = memchr(b'\n', &data[after.min(data.len())..]) else {
                break;
            };
            let mut line_start = after + nl + 1;
            let mut name = None;
            let content_start = loop {
                let Some(nl) = memchr(b'\n', &data[line_start..]) else {
                    break None;
                };
                let line = &data[line_start..line_start + nl];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                line_start += nl + 1;
                if line.is_empty() {
                    break Some(line_start);
                }
                if let Some(value) = strip_prefix_ignore_case(line, b"content-disposition:") {
                    name = self.disposition_name(value);
                }
            };
            let Some(content_start) = content_start else {
                break;
            };
            let next = delimiter_at(content_start);
            if let Some(index) = name {
                // The CRLF before the next delimiter belongs to the delimiter (RFC 2046).
                let content_end = match next {
                    Some(d) => {
                        let end = d.saturating_sub(1).max(content_start);
                        if end > content_start && data[end - 1] == b'\r' {
                            end - 1
                        } else {
                            end
                        }
                    }
                    None => data.len(),
                };
                ranges.push((content_start, content_end, index));
            }
            match next {
                Some(d) => delimiter = d,
                None => break,
            }
        }
        if ranges.is_empty() {
            return None;
        }
        hits.extend(ranges.iter().map(|r| r.2));
        Some(splice(data, &ranges, MARKER.as_bytes()))
    }

    /// The configured name a `Content-Disposition` value's `name` (or `name*`) parameter
    /// spells.
    fn disposition_name(&self, value: &[u8]) -> Option<usize> {
        let mut rest = value;
        // The disposition type (`form-data`), then `; param=value` pairs.
        rest = &rest[memchr(b';', rest)?..];
        while let Some(stripped) = rest.strip_prefix(b";") {
            let stripped = trim_start(stripped);
            let segment_end = memchr(b';', stripped).unwrap_or(stripped.len());
            let Some(eq) = memchr(b'=', &stripped[..segment_end]) else {
                // A parameter without a value: skip it.
                rest = &stripped[segment_end..];
                continue;
            };
            let param = trim_end(&stripped[..eq]);
            let after = trim_start(&stripped[eq + 1..]);
            let (raw, quoted, consumed) = if let Some(quoted) = after.strip_prefix(b"\"") {
                let end = quoted_end(quoted);
                (&quoted[..end], true, 1 + (end + 1).min(quoted.len()))
            } else {
                let end = memchr(b';', after).unwrap_or(after.len());
                (trim_end(&after[..end]), false, end)
            };
            if param.eq_ignore_ascii_case(b"name") {
                return self.lookup(|sink| {
                    if quoted {
                        decode_quoted(raw, sink)
                    } else {
                        sink.extend(raw)
                    }
                });
            }
            if param.eq_ignore_ascii_case(b"name*") {
                // RFC 8187: charset'language'percent-encoded.
                let mut parts = raw.splitn(3, |&b| b == b'\'');
                let encoded = parts.nth(2)?;
                return self.lookup(|sink| decode_percent(encoded, false, sink));
            }
            let after_value = &after[consumed.min(after.len())..];
            rest = &after_value[memchr(b';', after_value)?..];
        }
        None
    }
}

/// The content types whose bodies are redacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind<'a> {
    /// `application/json`, `*/*+json`, `application/x-ndjson`, ...
    Json,
    /// `application/grpc+json`, `application/grpc-web+json`: length-prefixed JSON messages.
    GrpcJson,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data` with its boundary.
    Multipart(&'a [u8]),
}

impl<'a> BodyKind<'a> {
    fn of(content_type: &'a str) -> Option<Self> {
        let ct = content_type.as_bytes();
        let essence_end = memchr(b';', ct).unwrap_or(ct.len());
        let essence = trim_end(trim_start(&ct[..essence_end]));
        let (kind, subtype) = essence.split_at(memchr(b'/', essence)?);
        let subtype = &subtype[1..];
        let ends_json =
            subtype.len() >= 4 && subtype[subtype.len() - 4..].eq_ignore_ascii_case(b"json");
        if kind.eq_ignore_ascii_case(b"application") {
            if subtype.eq_ignore_ascii_case(b"x-www-form-urlencoded") {
                return Some(Self::Form);
            }
            let grpc = strip_prefix_ignore_case(subtype, b"grpc").is_some();
            let text = strip_prefix_ignore_case(subtype, b"grpc-web-text").is_some();
            if grpc && !text && ends_json {
                return Some(Self::GrpcJson);
            }
            if grpc {
                return None;
            }
        }
        if kind.eq_ignore_ascii_case(b"multipart") && subtype.eq_ignore_ascii_case(b"form-data") {
            return boundary(&ct[essence_end..]).map(Self::Multipart);
        }
        ends_json.then_some(Self::Json)
    }
}

/// The `boundary` parameter of a content type's parameters (`; boundary=xyz` or quoted).
fn boundary(params: &[u8]) -> Option<&[u8]> {
    let mut rest = params;
    while let Some(semi) = memchr(b';', rest) {
        let param = trim_start(&rest[semi + 1..]);
        if let Some(value) = strip_prefix_ignore_case(param, b"boundary=") {
            let value = match value.strip_prefix(b"\"") {
                Some(quoted) => &quoted[..memchr(b'"', quoted)?],
                None => trim_end(&value[..memchr(b';', value).unwrap_or(value.len())]),
            };
            // RFC 2046 §5.1.1: 1 to 70 characters.
            return (!value.is_empty() && value.len() <= 70).then_some(value);
        }
        rest = param;
    }
    None
}

/// A fixed buffer names are decoded into, normalised.
struct Sink<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Sink<'_> {
    /// Appends one byte; `None` when the buffer is full.
    fn push(&mut self, b: u8) -> Option<()> {
        *self.buf.get_mut(self.len)? = norm(b);
        self.len += 1;
        Some(())
    }

    fn extend(&mut self, bytes: &[u8]) -> Option<()> {
        bytes.iter().try_for_each(|&b| self.push(b))
    }

    fn push_char(&mut self, c: char) -> Option<()> {
        let mut utf8 = [0u8; 4];
        self.extend(c.encode_utf8(&mut utf8).as_bytes())
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    b.get(..4)?
        .iter()
        .try_fold(0u32, |acc, &d| Some((acc << 4) | u32::from(hex(d)?)))
}

/// The raw content of a JSON string (between the quotes) decoded into `sink` (RFC 8259 §7).
fn decode_json_string(raw: &[u8], sink: &mut Sink<'_>) -> Option<()> {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            sink.push(raw[i])?;
            i += 1;
            continue;
        }
        let escaped = *raw.get(i + 1)?;
        i += 2;
        let b = match escaped {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let unit = hex4(&raw[i..])?;
                i += 4;
                let c = if (0xd800..0xdc00).contains(&unit) {
                    // A surrogate pair: the low half must follow as `\uXXXX`.
                    let low = raw
                        .get(i..i + 2)
                        .filter(|p| *p == b"\\u")
                        .and_then(|_| hex4(&raw[i + 2..]))?;
                    i += 6;
                    char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low.checked_sub(0xdc00)?))?
                } else {
                    char::from_u32(unit)?
                };
                sink.push_char(c)?;
                continue;
            }
            other => other,
        };
        sink.push(b)?;
    }
    Some(())
}

/// A form name as a server decodes it (WHATWG URL, application/x-www-form-urlencoded: `+` is a
/// space, then percent-decoding; a bad escape stays as it is).
fn decode_form_name(raw: &[u8], sink: &mut Sink<'_>) -> Option<()> {
    decode_percent(raw, true, sink)
}

fn decode_percent(raw: &[u8], plus_is_space: bool, sink: &mut Sink<'_>) -> Option<()> {
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            )
        {
            sink.push((h << 4) | l)?;
            i += 3;
            continue;
        }
        sink.push(if plus_is_space && b == b'+' { b' ' } else { b })?;
        i += 1;
    }
    Some(())
}

/// The content of a quoted-string (RFC 9110 §5.6.4) without its quoted-pairs' backslashes.
fn decode_quoted(raw: &[u8], sink: &mut Sink<'_>) -> Option<()> {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && i + 1 < raw.len() {
            i += 1;
        }
        sink.push(raw[i])?;
        i += 1;
    }
    Some(())
}

/// Where the quoted-string starting after its opening quote ends (its closing quote's index,
/// or the length when it is not closed).
fn quoted_end(quoted: &[u8]) -> usize {
    let mut i = 0;
    while i < quoted.len() {
        match quoted[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    quoted.len()
}

fn trim_start(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(b.len());
    &b[start..]
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t'))
        .map_or(0, |p| p + 1);
    &b[..end]
}

fn strip_prefix_ignore_case<'b>(b: &'b [u8], prefix: &[u8]) -> Option<&'b [u8]> {
    (b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &b[prefix.len()..])
}

/// `data` with each `(start, end, _)` range (sorted, disjoint) replaced by `marker`.
fn splice(data: &[u8], ranges: &[(usize, usize, usize)], marker: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + ranges.len() * marker.len());
    let mut at = 0;
    for &(start, end, _) in ranges {
        out.extend_from_slice(&data[at..start]);
        out.extend_from_slice(marker);
        at = end;
    }
    out.extend_from_slice(&data[at..]);
    out
}

/// The JSON grammar position (RFC 8259 §2).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A value: at the top, after `:`, after `,` in an array.
    Value,
    /// A value or `]`: just after `[`.
    ValueOrClose,
    /// A key or `}`: just after `{`.
    KeyOrClose,
    /// A key: after `,` in an object.
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the container's close after a value.
    CommaOrClose,
}

/// A stack of "is an object" bits that allocates only past 256 levels.
struct Containers {
    inline: [u64; 4],
    spill: Vec<u64>,
    depth: usize,
}

impl Containers {
    fn new() -> Self {
        Self {
            inline: [0; 4],
            spill: Vec::new(),
            depth: 0,
        }
    }

    fn word(&mut self, index: usize) -> &mut u64 {
        if index < self.inline.len() {
            &mut self.inline[index]
        } else {
            let spill = index - self.inline.len();
            if self.spill.len() <= spill {
                self.spill.resize(spill + 1, 0);
            }
            &mut self.spill[spill]
        }
    }

    fn push(&mut self, object: bool) {
        let (index, bit) = (self.depth / 64, self.depth % 64);
        let word = self.word(index);
        *word = (*word & !(1 << bit)) | (u64::from(object) << bit);
        self.depth += 1;
    }

    /// Whether the innermost container is an object; `None` at the top.
    fn top(&mut self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        Some(*self.word(top / 64) >> (top % 64) & 1 == 1)
    }

    fn pop(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

/// Walks `data` as JSON (or a prefix of it: the capture limit may cut it anywhere; several
/// top-level values one after another are accepted, as in NDJSON) and pushes
/// `(value start, value end, name index)` for every value whose key `key_index` recognises.
/// A value cut by the end of `data` ends at the end. Returns false when a byte breaks the
/// grammar: then `data` is not JSON and is left alone.
fn scan_json(
    data: &[u8],
    key_index: impl Fn(&[u8]) -> Option<usize>,
    ranges: &mut Vec<(usize, usize, usize)>,
) -> bool {
    let n = data.len();
    let mut stack = Containers::new();
    let mut expect = Expect::Value;
    // The name index of the key whose value comes next.
    let mut pending: Option<usize> = None;
    // A container value being replaced whole: its start, the depth outside it, the name.
    let mut redacting: Option<(usize, usize, usize)> = None;
    let mut i = 0;
    while i < n {
        let b = data[i];
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
            continue;
        }
        match expect {
            Expect::Value | Expect::ValueOrClose => {
                if b == b']' && expect == Expect::ValueOrClose {
                    stack.pop();
                    i += 1;
                    expect = close(&mut stack, &mut redacting, i, ranges);
                    continue;
                }
                let start = i;
                let name = pending.take().filter(|_| redacting.is_none());
                match b {
                    b'{' | b'[' => {
                        if let Some(name) = name {
                            redacting = Some((start, stack.depth, name));
                        }
                        stack.push(b == b'{');
                        expect = if b == b'{' {
                            Expect::KeyOrClose
                        } else {
                            Expect::ValueOrClose
                        };
                        i += 1;
                        continue;
                    }
                    b'"' => match string_end(data, i) {
                        Some((end, _)) => i = end,
                        None => return false,
                    },
                    b'-' | b'0'..=b'9' => {
                        i += 1;
                        while i < n
                            && matches!(data[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                        {
                            i += 1;
                        }
                    }
                    b't' | b'f' | b'n' => {
                        let literal: &[u8] = match b {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        let have = &data[i..(i + literal.len()).min(n)];
                        if have != &literal[..have.len()] {
                            return false;
                        }
                        i += have.len();
                    }
                    _ => return false,
                }
                if let Some(name) = name {
                    ranges.push((start, i, name));
                }
                expect = if stack.depth == 0 {
                    Expect::Value
                } else {
                    Expect::CommaOrClose
                };
            }
            Expect::KeyOrClose | Expect::Key => {
                if b == b'}' && expect == Expect::KeyOrClose {
                    stack.pop();
                    i += 1;
                    expect = close(&mut stack, &mut redacting, i, ranges);
                    continue;
                }
                if b != b'"' {
                    return false;
                }
                let Some((end, complete)) = string_end(data, i) else {
                    return false;
                };
                if complete && redacting.is_none() {
                    pending = key_index(&data[i + 1..end - 1]);
                }
                i = end;
                expect = Expect::Colon;
            }
            Expect::Colon => {
                if b != b':' {
                    return false;
                }
                i += 1;
                expect = Expect::Value;
            }
            Expect::CommaOrClose => {
                match (b, stack.top()) {
                    (b',', Some(true)) => expect = Expect::Key,
                    (b',', Some(false)) => expect = Expect::Value,
                    (b'}', Some(true)) | (b']', Some(false)) => {
                        stack.pop();
                        expect = close(&mut stack, &mut redacting, i + 1, ranges);
                    }
                    _ => return false,
                }
                i += 1;
            }
        }
    }
    // Cut inside a container that is being replaced: replace to the end.
    if let Some((start, _, name)) = redacting {
        ranges.push((start, n, name));
    }
    true
}

/// After a container closed at `end`: finishes a container value being replaced when this
/// was it, and says what comes next.
fn close(
    stack: &mut Containers,
    redacting: &mut Option<(usize, usize, usize)>,
    end: usize,
    ranges: &mut Vec<(usize, usize, usize)>,
) -> Expect {
    if let Some((start, depth, name)) = *redacting
        && depth == stack.depth
    {
        ranges.push((start, end, name));
        *redacting = None;
    }
    if stack.depth == 0 {
        Expect::Value
    } else {
        Expect::CommaOrClose
    }
}

/// The end (one past the closing quote) of the JSON string whose opening quote is at
/// `data[start]`, and whether it was closed; `(data.len(), false)` when `data` ends inside it.
/// `None` for an invalid escape.
/// Whether the byte at `at` is escaped: an odd run of backslashes comes before it.
fn escaped(data: &[u8], at: usize) -> bool {
    data[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

fn string_end(data: &[u8], start: usize) -> Option<(usize, bool)> {
    let mut i = start + 1;
    loop {
        let Some(at) = memchr2(b'"', b'\\', &data[i.min(data.len())..]) else {
            return Some((data.len(), false));
        };
        i += at;
        if data[i] == b'"' {
            return Some((i + 1, true));
        }
        match data.get(i + 1) {
            None => return Some((data.len(), false)),
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
            Some(b'u') => {
                let digits = &data[i + 2..(i + 6).min(data.len())];
                if !digits.iter().all(|&d| hex(d).is_some()) {
                    return None;
                }
                if digits.len() < 4 {
                    return Some((data.len(), false));
                }
                i += 6;
            }
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests;
