//! Message heads (start line + header section, RFC 9112 §2.1): collecting their bytes until
//! the empty line, parsing them with `httparse`, and deciding how the body is framed
//! (RFC 9112 §6.3).

use capture_model::exchange::{Headers, HttpVersion};
use capture_model::headers::FieldSpan;
use std::mem::MaybeUninit;
use std::sync::LazyLock;

use memchr::memmem;

use super::{ParseErrorReason, Side};

/// Collects one head across calls. The start line is checked as soon as it is complete (or
/// long enough to tell) so that bytes which are not HTTP fail fast instead of filling the
/// buffer up to the limit.
#[derive(Debug, Default)]
pub(super) struct HeadBuf {
    pub(super) buf: Vec<u8>,
    /// Timestamp of the first byte of the head.
    pub(super) start_ns: u64,
    first_line_done: bool,
    prefix_checked: bool,
}

/// What feeding bytes to a [`HeadBuf`] gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HeadProgress {
    NeedMore,
    /// `buf` holds a whole head, empty line included.
    Complete,
    /// The head is longer than the limit; `at_line_start` tells whether the next byte starts
    /// a line.
    TooLarge {
        at_line_start: bool,
    },
    /// The start line cannot begin a message of this side.
    BadStart {
        at_line_start: bool,
    },
}

/// Index just past the first empty line in `data` (a line that is empty or only CR), given
/// the up to two bytes before `data` in `prev`.
pub(super) fn find_blank_line(prev: &[u8], data: &[u8]) -> Option<usize> {
    static CRLF_END: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\n\r\n"));
    static LF_END: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\n\n"));
    // An empty line that starts in `prev`: its LF is one of the first two bytes of `data`.
    let at = |i: usize, back: usize| -> Option<u8> {
        if back <= i {
            Some(data[i - back])
        } else {
            prev.len().checked_sub(back - i).map(|j| prev[j])
        }
    };
    let straddling = (0..data.len().min(2)).find(|&i| {
        data[i] == b'\n'
            && match at(i, 1) {
                Some(b'\n') => true,
                Some(b'\r') => at(i, 2) == Some(b'\n'),
                _ => false,
            }
    });
    if let Some(i) = straddling {
        return Some(i + 1);
    }
    // Otherwise it lies in `data`. One SIMD search for the usual CRLF ending, then, in front of
    // it only, one for a bare-LF ending (which a head mixing line ends may have first).
    // Searching line by line cost a call per line of every head.
    match CRLF_END.find(data) {
        Some(crlf) => {
            let before = &data[..crlf + 2];
            Some(LF_END.find(before).map_or(crlf + 3, |lf| lf + 2))
        }
        None => LF_END.find(data).map(|lf| lf + 2),
    }
}

/// The last up to two bytes of `buf`.
pub(super) fn tail2(buf: &[u8]) -> &[u8] {
    &buf[buf.len().saturating_sub(2)..]
}

impl HeadBuf {
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.first_line_done = false;
        self.prefix_checked = false;
    }

    /// Starts a head with the bytes a resynchronisation found (a start line and the start
    /// of the next line). Returns whether they already hold the whole head.
    pub(super) fn seed(&mut self, bytes: &[u8], start_ns: u64) -> bool {
        self.clear();
        self.buf.extend_from_slice(bytes);
        self.start_ns = start_ns;
        self.first_line_done = true;
        self.prefix_checked = true;
        find_blank_line(&[], &self.buf).is_some()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes bytes of `data` into the head. Returns how many bytes were consumed: all of
    /// `data` unless the head completed or failed.
    pub(super) fn feed(
        &mut self,
        side: Side,
        data: &[u8],
        ts_ns: u64,
        limit: usize,
    ) -> (usize, HeadProgress) {
        let mut pos = 0;
        if self.buf.is_empty() {
            // RFC 9112 §2.2: empty lines before a start line are ignored (they follow a body
            // whose sender added a stray CRLF).
            pos = data
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            if pos == data.len() {
                return (pos, HeadProgress::NeedMore);
            }
            self.start_ns = ts_ns;
        }
        // `data[copied..pos]` belongs to the head but is not in `buf` yet: a head that arrives
        // whole is copied once, into a buffer of its size, not line by line.
        let mut copied = pos;
        if !self.first_line_done {
            let rest = &data[pos..];
            let Some(lf) = memchr::memchr(b'\n', rest) else {
                if self.buf.len() + rest.len() > limit {
                    return (
                        data.len(),
                        HeadProgress::TooLarge {
                            at_line_start: false,
                        },
                    );
                }
                self.buf.extend_from_slice(rest);
                if !self.prefix_checked && self.buf.len() >= 16 {
                    self.prefix_checked = true;
                    if !start_line_plausible(side, &self.buf) {
                        return (
                            data.len(),
                            HeadProgress::BadStart {
                                at_line_start: false,
                            },
                        );
                    }
                }
                return (data.len(), HeadProgress::NeedMore);
            };
            let line_end = lf + 1;
            if self.buf.len() + line_end > limit {
                return (
                    pos + line_end,
                    HeadProgress::TooLarge {
                        at_line_start: true,
                    },
                );
            }
            pos += line_end;
            self.first_line_done = true;
            if !self.buf.is_empty() {
                // The line began in an earlier call.
                self.buf.extend_from_slice(&data[copied..pos]);
                copied = pos;
            }
            let line = if copied == pos {
                &self.buf[..]
            } else {
                &data[copied..pos]
            };
            if !start_line_plausible(side, line) {
                return (
                    pos,
                    HeadProgress::BadStart {
                        at_line_start: true,
                    },
                );
            }
        }
        // Pending bytes are none, or a whole start line: at least two bytes (it starts with
        // neither CR nor LF and ends with LF), so they hold the two bytes before `rest`.
        let pending = &data[copied..pos];
        let prev = if pending.is_empty() {
            tail2(&self.buf)
        } else {
            tail2(pending)
        };
        let held = self.buf.len() + pending.len();
        let rest = &data[pos..];
        match find_blank_line(prev, rest) {
            Some(end) => {
                if held + end > limit {
                    return (
                        pos + end,
                        HeadProgress::TooLarge {
                            at_line_start: true,
                        },
                    );
                }
                self.buf.extend_from_slice(&data[copied..pos + end]);
                (pos + end, HeadProgress::Complete)
            }
            None => {
                if held + rest.len() > limit {
                    let at_line_start = rest.last() == Some(&b'\n');
                    return (data.len(), HeadProgress::TooLarge { at_line_start });
                }
                self.buf.extend_from_slice(&data[copied..]);
                (data.len(), HeadProgress::NeedMore)
            }
        }
    }
}

fn request_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    // A passive observer decodes what the real peer accepted; be as lenient as httparse lets.
    c.allow_multiple_spaces_in_request_line_delimiters(true)
        .ignore_invalid_headers_in_requests(true);
    c
}

fn response_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_multiple_spaces_in_response_status_delimiters(true)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

/// Whether a (possibly partial) start line could begin a message of `side`; httparse itself
/// decides, so this is never stricter than the full parse.
fn start_line_plausible(side: Side, buf: &[u8]) -> bool {
    let mut no_headers: [httparse::Header<'_>; 0] = [];
    let result = match side {
        Side::Request => {
            request_config().parse_request(&mut httparse::Request::new(&mut no_headers), buf)
        }
        Side::Response => {
            response_config().parse_response(&mut httparse::Response::new(&mut no_headers), buf)
        }
    };
    matches!(result, Ok(_) | Err(httparse::Error::TooManyHeaders))
}

/// A parsed request head.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) version: HttpVersion,
    pub(super) headers: Headers,
    pub(super) size: u64,
}

/// A parsed response head.
#[derive(Debug)]
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) reason: String,
    pub(super) version: HttpVersion,
    pub(super) headers: Headers,
    pub(super) size: u64,
}

/// Header slots tried first, on the stack.
const INLINE_HEADERS: usize = 64;

/// Default of [`Http1Limits::max_header_fields`](super::Http1Limits::max_header_fields): most
/// field lines kept per head or trailer section. Each costs far more memory as a field of
/// [`Headers`] than its few bytes on the wire, so a head of thousands of tiny lines is refused rather
/// than multiplied.
pub(super) const MAX_HEADERS: usize = 512;

/// Copies the fields httparse found into one [`Headers`]: two allocations for the whole
/// section, sized up front.
fn to_headers(parsed: &[httparse::Header<'_>]) -> Headers {
    let text = parsed.iter().map(|h| h.name.len() + h.value.len()).sum();
    let mut headers = Headers::with_capacity(parsed.len(), text);
    for h in parsed {
        // Values are nearly always UTF-8 (ASCII): the check is one fast pass, and only the
        // rare other value pays for the lossy conversion.
        match std::str::from_utf8(h.value) {
            Ok(value) => headers.push(h.name, value),
            Err(_) => headers.push(h.name, &String::from_utf8_lossy(h.value)),
        }
    }
    headers
}

fn version(v: Option<u8>) -> HttpVersion {
    if v == Some(0) {
        HttpVersion::Http10
    } else {
        HttpVersion::Http11
    }
}

fn len_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Runs `parse` with 64 header slots (at most `max_fields`), then, if that is not enough,
/// with `max_fields`; more fields than that is [`ParseErrorReason::TooManyHeaderFields`].
/// Slots start as `empty()`: heads use uninitialised slots for httparse to fill, because
/// initialising 64 of them cost about as much as parsing a typical head.
fn with_header_slots<S, T>(
    invalid: ParseErrorReason,
    max_fields: usize,
    empty: impl Fn() -> S,
    mut parse: impl FnMut(&mut [S]) -> Result<Option<T>, httparse::Error>,
) -> Result<T, ParseErrorReason> {
    let mut inline: [S; INLINE_HEADERS] = std::array::from_fn(|_| empty());
    let first = INLINE_HEADERS.min(max_fields);
    let result = match parse(&mut inline[..first]) {
        Err(httparse::Error::TooManyHeaders) if max_fields > first => {
            let mut many = Vec::with_capacity(max_fields);
            many.resize_with(max_fields, empty);
            match parse(&mut many) {
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(ParseErrorReason::TooManyHeaderFields);
                }
                other => other,
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ParseErrorReason::TooManyHeaderFields),
        other => other,
    };
    result.ok().flatten().ok_or(invalid)
}

/// The fields httparse found in `text` as spans of it (see [`Headers::from_text`]).
fn spans(text: &[u8], parsed: &[httparse::Header<'_>]) -> Vec<FieldSpan> {
    let base = text.as_ptr() as usize;
    // httparse's names and values are subslices of `text`, so the offsets are in range;
    // `Headers::from_text` checks them anyway.
    let range = |s: &[u8]| {
        let start = (s.as_ptr() as usize).wrapping_sub(base);
        start..start.wrapping_add(s.len())
    };
    parsed
        .iter()
        .map(|h| FieldSpan {
            name: range(h.name.as_bytes()),
            value: range(h.value),
        })
        .collect()
}

/// A head's bytes, checked for UTF-8 once.
enum Head {
    /// Nearly always (ASCII): the text becomes the fields' text.
    Text(String),
    /// Some byte is not UTF-8: the fields are copied, those values lossily.
    Bytes(Vec<u8>),
}

impl Head {
    /// Takes `buf` (left empty).
    fn take(buf: &mut Vec<u8>) -> Self {
        match String::from_utf8(std::mem::take(buf)) {
            Ok(text) => Self::Text(text),
            Err(e) => Self::Bytes(e.into_bytes()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Self::Text(text) => text.as_bytes(),
            Self::Bytes(bytes) => bytes,
        }
    }

    /// What [`Self::into_headers`] needs of one parse of [`Self::bytes`].
    fn fields(&self, parsed: &[httparse::Header<'_>]) -> Fields {
        match self {
            Self::Text(text) => Fields::Spans(spans(text.as_bytes(), parsed)),
            Self::Bytes(_) => Fields::Copied(to_headers(parsed)),
        }
    }

    fn into_headers(
        self,
        fields: Fields,
        invalid: ParseErrorReason,
    ) -> Result<Headers, ParseErrorReason> {
        match (self, fields) {
            (Self::Text(text), Fields::Spans(spans)) => {
                Headers::from_text(text, spans).ok_or(invalid)
            }
            (_, Fields::Copied(headers)) => Ok(headers),
            (Self::Bytes(_), Fields::Spans(_)) => Err(invalid),
        }
    }
}

/// A head's fields, from what one parse of its bytes found.
enum Fields {
    Spans(Vec<FieldSpan>),
    Copied(Headers),
}

/// Parses a complete request head (as collected by [`HeadBuf`]). `buf` is taken (left
/// empty): when it is UTF-8 it becomes the fields' text, else the fields are copied.
pub(super) fn parse_request(
    buf: &mut Vec<u8>,
    max_fields: usize,
) -> Result<RequestHead, ParseErrorReason> {
    let config = request_config();
    let invalid = ParseErrorReason::InvalidRequestHead;
    let head = Head::take(buf);
    let bytes = head.bytes();
    let (method, target, version, fields, size) =
        with_header_slots(invalid, max_fields, MaybeUninit::uninit, |slots| {
            let mut req = httparse::Request::new(&mut []);
            Ok(
                match config.parse_request_with_uninit_headers(&mut req, bytes, slots)? {
                    httparse::Status::Complete(size) => Some((
                        req.method.unwrap_or_default().to_owned(),
                        req.path.unwrap_or_default().to_owned(),
                        version(req.version),
                        head.fields(req.headers),
                        len_u64(size),
                    )),
                    httparse::Status::Partial => None,
                },
            )
        })?;
    Ok(RequestHead {
        method,
        target,
        version,
        headers: head.into_headers(fields, invalid)?,
        size,
    })
}

/// Parses a complete response head; `buf` is taken as in [`parse_request`].
pub(super) fn parse_response(
    buf: &mut Vec<u8>,
    max_fields: usize,
) -> Result<ResponseHead, ParseErrorReason> {
    let config = response_config();
    let invalid = ParseErrorReason::InvalidResponseHead;
    let head = Head::take(buf);
    let bytes = head.bytes();
    let (status, reason, version, fields, size) =
        with_header_slots(invalid, max_fields, MaybeUninit::uninit, |slots| {
            let mut resp = httparse::Response::new(&mut []);
            Ok(
                match config.parse_response_with_uninit_headers(&mut resp, bytes, slots)? {
                    httparse::Status::Complete(size) => resp.code.map(|status| {
                        (
                            status,
                            resp.reason.unwrap_or_default().to_owned(),
                            version(resp.version),
                            head.fields(resp.headers),
                            len_u64(size),
                        )
                    }),
                    httparse::Status::Partial => None,
                },
            )
        })?;
    Ok(ResponseHead {
        status,
        reason,
        version,
        headers: head.into_headers(fields, invalid)?,
        size,
    })
}

/// Parses a trailer section (field lines and the final empty line, RFC 9112 §7.1.2).
pub(super) fn parse_trailers(buf: &[u8], max_fields: usize) -> Result<Headers, ParseErrorReason> {
    with_header_slots(
        ParseErrorReason::InvalidTrailers,
        max_fields,
        || httparse::EMPTY_HEADER,
        |slots| {
            Ok(match httparse::parse_headers(buf, slots)? {
                httparse::Status::Complete((_, h)) => Some(to_headers(h)),
                httparse::Status::Partial => None,
            })
        },
    )
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (or an empty one).
    None,
    Length(u64),
    Chunked,
    /// Response body that runs until the connection closes.
    UntilClose,
}

/// What the request method means for its response's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MethodKind {
    Head,
    Connect,
    Other,
}

impl MethodKind {
    /// Methods are case-sensitive (RFC 9110 §9.1).
    pub(super) fn of(method: &str) -> Self {
        match method {
            "HEAD" => Self::Head,
            "CONNECT" => Self::Connect,
            _ => Self::Other,
        }
    }
}

/// The combined list of a field's values, lower-cased, empty elements dropped
/// (RFC 9110 §5.3: several field lines are one comma-separated list).
fn list_values(headers: &Headers, name: &str) -> Vec<String> {
    headers
        .values(name)
        .flat_map(|value| value.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Content-Length (RFC 9110 §8.6): `None` when absent, an error unless every value is the
/// same decimal number.
fn content_length(headers: &Headers) -> Result<Option<u64>, ParseErrorReason> {
    let mut found = None;
    for value in headers.values("content-length") {
        for v in value.split(',') {
            let v = v.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParseErrorReason::InvalidContentLength);
            }
            let n: u64 = v
                .parse()
                .map_err(|_| ParseErrorReason::InvalidContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(ParseErrorReason::InvalidContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// Transfer codings other than the obsolete `identity` (RFC 9112 §6.1); `Some(true)` when
/// `chunked` is the final one.
fn chunked_last(headers: &Headers) -> Option<bool> {
    let codings = list_values(headers, "transfer-encoding");
    let codings: Vec<&String> = codings.iter().filter(|c| *c != "identity").collect();
    codings.last().map(|c| *c == "chunked")
}

fn length_framing(n: u64) -> Framing {
    if n == 0 {
        Framing::None
    } else {
        Framing::Length(n)
    }
}

/// RFC 9112 §6.3 for requests: Transfer-Encoding wins over Content-Length (rule 3); a
/// request whose final coding is not chunked cannot be delimited (rule 4); no length means
/// no body (rule 7).
pub(super) fn request_framing(headers: &Headers) -> Result<Framing, ParseErrorReason> {
    match chunked_last(headers) {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Err(ParseErrorReason::UnsupportedTransferEncoding),
        None => {}
    }
    Ok(content_length(headers)?.map_or(Framing::None, length_framing))
}

/// RFC 9112 §6.3 for responses: no body after HEAD or with 1xx/204/304 (rule 1);
/// Transfer-Encoding wins, and without chunked last the body runs until close (rule 3);
/// then Content-Length (rules 5, 6); else until close (rule 8). The CONNECT tunnel case
/// (rule 2) is handled by the caller.
pub(super) fn response_framing(
    method: MethodKind,
    status: u16,
    headers: &Headers,
) -> Result<Framing, ParseErrorReason> {
    if method == MethodKind::Head || (100..200).contains(&status) || status == 204 || status == 304
    {
        return Ok(Framing::None);
    }
    match chunked_last(headers) {
        Some(true) => return Ok(Framing::Chunked),
        Some(false) => return Ok(Framing::UntilClose),
        None => {}
    }
    Ok(content_length(headers)?.map_or(Framing::UntilClose, length_framing))
}

/// The Content-Encoding field value, several field lines joined (RFC 9110 §8.4).
pub(super) fn content_encoding(headers: &Headers) -> Option<String> {
    let mut values = headers.values("content-encoding");
    let mut joined = values.next()?.to_owned();
    for value in values {
        joined.push_str(", ");
        joined.push_str(value);
    }
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::{HeadBuf, HeadProgress, find_blank_line};
    use crate::http1::Side;

    /// The definition: the first line end whose line is empty or only CR, one line at a time.
    fn reference(prev: &[u8], data: &[u8]) -> Option<usize> {
        let all = [prev, data].concat();
        (prev.len()..all.len()).find_map(|i| {
            let empty = all[i] == b'\n'
                && match i.checked_sub(1).map(|j| all[j]) {
                    Some(b'\n') => true,
                    Some(b'\r') => i >= 2 && all[i - 2] == b'\n',
                    _ => false,
                };
            empty.then_some(i + 1 - prev.len())
        })
    }

    #[test]
    fn finds_the_first_empty_line() {
        let cases: [(&[u8], &[u8], Option<usize>); 9] = [
            (b"", b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(27)),
            (b"", b"GET / HTTP/1.1\nHost: a\n\nbody", Some(24)),
            (b"", b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"\r\n", b"\r\nrest", Some(2)),
            (b"\n", b"\nrest", Some(1)),
            (b"a\n", b"\r\n", Some(2)),
            (b"\r", b"\n\r\n", Some(3)),
            (b"", b"a\r\n\r\r\n\n", Some(7)),
            (b"", b"a\n\r\nb\n\n", Some(4)),
        ];
        for (prev, data, expected) in cases {
            assert_eq!(find_blank_line(prev, data), expected, "{prev:?} {data:?}");
            assert_eq!(reference(prev, data), expected, "{prev:?} {data:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_the_definition(
            prev in proptest::collection::vec(proptest::sample::select(b"\r\na".to_vec()), 0..=2),
            data in proptest::collection::vec(proptest::sample::select(b"\r\nab:".to_vec()), 0..200),
        ) {
            proptest::prop_assert_eq!(find_blank_line(&prev, &data), reference(&prev, &data));
        }
    }

    #[test]
    fn a_head_that_arrives_whole_is_copied_once_at_its_size() {
        // Fields shorter than the start line: copied line by line, the buffer would have
        // doubled.
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        let data = [b"\r\n".as_slice(), head, b"ok"].concat();
        let mut buf = HeadBuf::default();
        assert_eq!(
            buf.feed(Side::Response, &data, 1, 1024),
            (2 + head.len(), HeadProgress::Complete)
        );
        assert_eq!(buf.buf, head);
        assert_eq!(
            buf.buf.capacity(),
            head.len(),
            "one allocation of the head's size"
        );
    }

    #[test]
    fn limits_count_the_start_line_not_yet_copied() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for limit in [head.len() - 1, head.len()] {
            let mut buf = HeadBuf::default();
            let (used, progress) = buf.feed(Side::Request, head, 1, limit);
            assert_eq!(used, head.len());
            if limit < head.len() {
                assert_eq!(
                    progress,
                    HeadProgress::TooLarge {
                        at_line_start: true
                    }
                );
            } else {
                assert_eq!(progress, HeadProgress::Complete);
            }
            let mut buf = HeadBuf::default();
            let (used, progress) = buf.feed(Side::Request, &head[..20], 1, limit);
            assert_eq!((used, progress), (20, HeadProgress::NeedMore));
            assert_eq!(buf.buf, head[..20]);
            let (used, progress) = buf.feed(Side::Request, &head[20..], 1, limit);
            assert_eq!(used, head.len() - 20);
            assert_eq!(progress == HeadProgress::Complete, limit == head.len());
        }
    }
}
