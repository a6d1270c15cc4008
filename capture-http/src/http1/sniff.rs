//! Recognising message starts without context: protocol sniffing for connections whose
//! first bytes were not seen, and resynchronisation after a gap or a parse error.
//!
//! Both use one byte-at-a-time matcher of the start line (RFC 9112 §3 request-line, §4
//! status-line), stricter than the parser: an upper-case method token, a target without
//! spaces, `HTTP/1.x`, a three-digit status. Here a false match turns body bytes into a bogus
//! message, while a miss only delays resynchronisation.
//!
//! Resynchronisation cannot rely on line starts alone: a body rarely ends with a newline
//! (JSON does not), so the next message usually starts in the middle of a "line". It
//! therefore accepts a start line anywhere, but then also requires the line after it to
//! begin like a field line (`name:`) or be the empty line that ends the head. A request line
//! that does not start a line must use a method registered in RFC 9110 §9 (or PATCH), so body
//! text that happens to end in capitals (`...OKGET / HTTP/1.1`) still resyncs at `GET`.

use super::Side;

/// How far a line matches a start-line pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LineMatch {
    /// Cannot be a start line.
    Invalid,
    /// Matches so far; more bytes are needed.
    Partial,
    /// A whole start line, ending with LF (CR LF or bare LF).
    Complete,
}

/// Longest method token matched (`VERSION-CONTROL` has 15 characters).
const MAX_METHOD: usize = 24;

/// Longest field name accepted in the line after a start line found by resynchronisation.
const MAX_FIELD_NAME: usize = 256;

/// Methods registered in RFC 9110 §9 and RFC 5789.
const KNOWN_METHODS: &[&[u8]] = &[
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

const VERSION: &[u8] = b"HTTP/1.";

fn method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// request-target bytes: visible ASCII or obs-text, no space (RFC 9112 §3.2).
fn target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// tchar (RFC 9110 §5.6.2).
fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Where the matcher is in a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Request: method bytes so far.
    Method(usize),
    /// Request: target bytes so far.
    Target(usize),
    /// Request: bytes of `HTTP/1.` and the digit matched so far.
    Version(usize),
    /// Response: bytes of `HTTP/1.x NNN` matched so far.
    Status(usize),
    /// Response: in the reason phrase.
    Reason,
    /// Request, after the version: CR or LF.
    LineEnd,
    /// Response, after the status code: SP and a reason, CR or LF.
    StatusEnd,
    /// After CR: LF.
    LineEndLf,
    /// The start line is whole; `n` bytes of the next line's field name seen.
    NextLine(usize),
    /// The next line began with CR: LF ends the (empty) header section.
    NextLineLf,
}

/// What one byte did to a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Continue,
    Invalid,
    /// Request only: the method token is not known, but its last `n` bytes are; the
    /// candidate restarts there.
    Shrink(usize),
    StartLineDone,
    Complete,
}

fn initial(side: Side) -> State {
    match side {
        Side::Request => State::Method(0),
        Side::Response => State::Status(0),
    }
}

/// Advances `state` by `b`. `cand` holds the candidate's bytes before `b`; `line_start`
/// tells whether it began at a line start.
fn advance(state: &mut State, cand: &[u8], line_start: bool, b: u8) -> Step {
    match *state {
        State::Method(n) => {
            if method_byte(b) {
                if n == MAX_METHOD {
                    return Step::Invalid;
                }
                *state = State::Method(n + 1);
                return Step::Continue;
            }
            if b != b' ' || n == 0 {
                return Step::Invalid;
            }
            let method = &cand[..n];
            if line_start || KNOWN_METHODS.contains(&method) {
                *state = State::Target(0);
                return Step::Continue;
            }
            match KNOWN_METHODS.iter().find(|m| method.ends_with(m)) {
                Some(m) => {
                    *state = State::Target(0);
                    Step::Shrink(m.len())
                }
                None => Step::Invalid,
            }
        }
        State::Target(n) => {
            if target_byte(b) {
                *state = State::Target(n + 1);
                Step::Continue
            } else if b == b' ' && n > 0 {
                *state = State::Version(0);
                Step::Continue
            } else {
                Step::Invalid
            }
        }
        State::Version(k) => {
            let ok = if k < VERSION.len() {
                b == VERSION[k]
            } else {
                b.is_ascii_digit()
            };
            if !ok {
                return Step::Invalid;
            }
            *state = if k == VERSION.len() {
                State::LineEnd
            } else {
                State::Version(k + 1)
            };
            Step::Continue
        }
        State::Status(k) => {
            // "HTTP/1." DIGIT SP 3DIGIT
            let ok = match k {
                0..=6 => b == VERSION[k],
                8 => b == b' ',
                _ => b.is_ascii_digit(),
            };
            if !ok {
                return Step::Invalid;
            }
            *state = if k == 11 {
                State::StatusEnd
            } else {
                State::Status(k + 1)
            };
            Step::Continue
        }
        State::LineEnd => match b {
            b'\r' => {
                *state = State::LineEndLf;
                Step::Continue
            }
            b'\n' => {
                *state = State::NextLine(0);
                Step::StartLineDone
            }
            _ => Step::Invalid,
        },
        // RFC 9112 §4: the reason phrase follows the status code after a space.
        State::StatusEnd if b == b' ' => {
            *state = State::Reason;
            Step::Continue
        }
        State::StatusEnd => {
            *state = State::LineEnd;
            advance(state, cand, line_start, b)
        }
        State::Reason => match b {
            b'\r' => {
                *state = State::LineEndLf;
                Step::Continue
            }
            b'\n' => {
                *state = State::NextLine(0);
                Step::StartLineDone
            }
            // reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )
            b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Step::Continue,
            _ => Step::Invalid,
        },
        State::LineEndLf => {
            if b == b'\n' {
                *state = State::NextLine(0);
                Step::StartLineDone
            } else {
                Step::Invalid
            }
        }
        State::NextLine(n) => match b {
            b'\r' if n == 0 => {
                *state = State::NextLineLf;
                Step::Continue
            }
            b'\n' if n == 0 => Step::Complete,
            b':' if n > 0 => Step::Complete,
            _ if tchar(b) && n < MAX_FIELD_NAME => {
                *state = State::NextLine(n + 1);
                Step::Continue
            }
            _ => Step::Invalid,
        },
        State::NextLineLf => {
            if b == b'\n' {
                Step::Complete
            } else {
                Step::Invalid
            }
        }
    }
}

/// Matches the first line of `line` as a start line of `side` (no look at the next line).
pub(super) fn match_start_line(side: Side, line: &[u8]) -> LineMatch {
    let mut state = initial(side);
    for (i, &b) in line.iter().enumerate() {
        match advance(&mut state, &line[..i], true, b) {
            Step::Continue => {}
            Step::StartLineDone | Step::Complete => return LineMatch::Complete,
            Step::Invalid | Step::Shrink(_) => return LineMatch::Invalid,
        }
    }
    LineMatch::Partial
}

/// Whether `prefix` (the first bytes seen on a connection side) starts like an HTTP/1.x
/// request.
///
/// With a whole first line, it must be `METHOD SP target SP HTTP/1.x` with an upper-case
/// method token. A partial first line is accepted when what is there matches and already
/// holds a well-known method followed by a space (`"POST "`, `"GET /ap"`), so a caller may
/// decide on the first captured chunk; anything shorter (`"GE"`) is `false`, and the caller
/// may ask again with more bytes.
pub fn looks_like_request(prefix: &[u8]) -> bool {
    match match_start_line(Side::Request, prefix) {
        LineMatch::Complete => true,
        LineMatch::Invalid => false,
        LineMatch::Partial => KNOWN_METHODS
            .iter()
            .any(|m| prefix.len() > m.len() && prefix.starts_with(m) && prefix[m.len()] == b' '),
    }
}

/// Whether `prefix` starts like an HTTP/1.x response: `HTTP/1.x SP 3DIGIT` followed by a
/// plausible rest of the status line. Needs those first 12 bytes; a shorter prefix is
/// `false`.
pub fn looks_like_response(prefix: &[u8]) -> bool {
    prefix.len() >= 12 && match_start_line(Side::Response, prefix) != LineMatch::Invalid
}

/// Skips bytes until a plausible message start, tracking one candidate at a time.
#[derive(Debug)]
pub(super) struct Resync {
    /// Bytes of the current candidate; empty when there is none.
    cand: Vec<u8>,
    state: State,
    line_start: bool,
    start_ns: u64,
    /// The byte before the next one (LF after a gap: a message may start right there).
    prev: u8,
}

/// A message start found by [`Resync::feed`]: the start line, and the beginning of the next
/// line (a field name and its colon, or the empty line that ends the head).
pub(super) struct Found {
    pub(super) head: Vec<u8>,
    pub(super) start_ns: u64,
}

impl Resync {
    /// `at_line_start`: whether the next byte fed starts a line.
    pub(super) fn new(side: Side, at_line_start: bool) -> Self {
        Self {
            cand: Vec::new(),
            state: initial(side),
            line_start: false,
            start_ns: 0,
            prev: if at_line_start { b'\n' } else { 0 },
        }
    }

    pub(super) fn buffered(&self) -> usize {
        self.cand.len()
    }

    fn can_start(&self, side: Side, b: u8) -> bool {
        match side {
            // A method token starts where a run of method bytes starts.
            Side::Request => b.is_ascii_uppercase() && !method_byte(self.prev),
            Side::Response => b == b'H',
        }
    }

    /// Consumes bytes of `data` until a message start is found. Returns the bytes consumed
    /// and the start, whose bytes are part of the count. Candidates longer than `max_line`
    /// are dropped.
    pub(super) fn feed(
        &mut self,
        side: Side,
        data: &[u8],
        ts_ns: u64,
        max_line: usize,
    ) -> (usize, Option<Found>) {
        let mut i = 0;
        while i < data.len() {
            if self.cand.is_empty() {
                // Skip fast to the next byte that could start a candidate.
                let skip = data[i..].iter().enumerate().position(|(k, &b)| {
                    let prev = if k == 0 { self.prev } else { data[i + k - 1] };
                    match side {
                        Side::Request => b.is_ascii_uppercase() && !method_byte(prev),
                        Side::Response => b == b'H',
                    }
                });
                match skip {
                    None => {
                        self.prev = data[data.len() - 1];
                        return (data.len(), None);
                    }
                    Some(k) => {
                        if k > 0 {
                            self.prev = data[i + k - 1];
                        }
                        i += k;
                    }
                }
            }
            if let Some(found) = self.push(side, data[i], ts_ns, max_line) {
                return (i + 1, Some(found));
            }
            i += 1;
        }
        (i, None)
    }

    /// Feeds one byte.
    fn push(&mut self, side: Side, b: u8, ts_ns: u64, max_line: usize) -> Option<Found> {
        if self.cand.is_empty() {
            if !self.can_start(side, b) {
                self.prev = b;
                return None;
            }
            self.state = initial(side);
            self.line_start = self.prev == b'\n';
            self.start_ns = ts_ns;
        }
        match advance(&mut self.state, &self.cand, self.line_start, b) {
            Step::Continue | Step::StartLineDone => {
                self.cand.push(b);
                self.prev = b;
                if self.cand.len() > max_line {
                    self.cand.clear();
                }
                None
            }
            Step::Complete => {
                self.cand.push(b);
                self.prev = b;
                Some(Found {
                    head: std::mem::take(&mut self.cand),
                    start_ns: self.start_ns,
                })
            }
            Step::Shrink(keep) => {
                let drop = self.cand.len() - keep;
                self.cand.drain(..drop);
                self.line_start = false;
                self.cand.push(b);
                self.prev = b;
                None
            }
            Step::Invalid => {
                let cand = std::mem::take(&mut self.cand);
                // A failure in the line after a start line: that line may itself start a
                // message ("HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\n..."), so its bytes are
                // scanned again. Otherwise scanning goes on at the failing byte.
                let next_line = match self.state {
                    State::NextLine(_) | State::NextLineLf => {
                        cand.iter().position(|&c| c == b'\n').map(|lf| lf + 1)
                    }
                    _ => None,
                };
                self.prev = cand.last().copied().unwrap_or(self.prev);
                if let Some(at) = next_line {
                    self.prev = b'\n';
                    for &r in &cand[at..] {
                        // These bytes hold no LF, so they cannot complete a candidate.
                        if let Some(found) = self.push(side, r, ts_ns, max_line) {
                            return Some(found);
                        }
                    }
                }
                self.push(side, b, ts_ns, max_line)
            }
        }
    }
}
