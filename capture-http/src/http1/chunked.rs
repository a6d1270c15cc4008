//! The chunked transfer coding (RFC 9112 §7.1), decoded incrementally: chunk sizes with
//! extensions, chunk data, and the trailer section.

use super::CappedBody;
use super::head::{find_blank_line, tail2};

/// A chunk-size line (size, extensions, CRLF) longer than this is refused: extensions are
/// not captured, so there is no reason to buffer them, and a line that never ends must not
/// keep the decoder waiting forever.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChunkError {
    /// Bad chunk size, extension line or chunk terminator.
    Framing,
    /// The trailer section is longer than the header limit.
    TrailerTooLarge,
}

#[derive(Debug)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: extensions (skipped) up to the end of the line.
    Ext {
        size: u64,
    },
    /// Chunk data still to come.
    Data(u64),
    /// After chunk data: CRLF (a bare LF is accepted).
    DataEnd {
        seen_cr: bool,
    },
    /// After the last chunk: trailer field lines up to the empty line.
    Trailer,
    Done,
}

#[derive(Debug)]
pub(super) struct ChunkedDecoder {
    state: State,
    line_len: usize,
    /// Bytes of the trailer section, the final empty line included.
    pub(super) trailer: Vec<u8>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            line_len: 0,
            trailer: Vec::new(),
        }
    }
}

impl ChunkedDecoder {
    /// Bytes of chunk data still expected in the current chunk, if inside one; a gap no
    /// longer than this loses only body bytes.
    pub(super) fn data_remaining(&mut self) -> Option<&mut u64> {
        match &mut self.state {
            State::Data(n) => Some(n),
            _ => None,
        }
    }

    pub(super) fn buffered(&self) -> usize {
        self.trailer.len()
    }

    /// Decodes from `data`, appending chunk data to `body`. Returns the bytes consumed and
    /// whether the message ended (the trailer section is in `self.trailer`), or the error
    /// with the bytes consumed up to and including the offending byte.
    pub(super) fn feed(
        &mut self,
        data: &[u8],
        body: &mut CappedBody,
        max_body: usize,
        max_trailer: usize,
    ) -> (usize, Result<bool, ChunkError>) {
        let mut pos = 0;
        while pos < data.len() {
            match &mut self.state {
                State::Size { value, digits } => {
                    let b = data[pos];
                    pos += 1;
                    self.line_len += 1;
                    if let Some(d) = (b as char).to_digit(16) {
                        // 16 hex digits fill a u64; more can only overflow.
                        if *digits == 16 {
                            return (pos, Err(ChunkError::Framing));
                        }
                        *value = *value << 4 | u64::from(d);
                        *digits += 1;
                        continue;
                    }
                    if *digits == 0 {
                        return (pos, Err(ChunkError::Framing));
                    }
                    let size = *value;
                    match b {
                        // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ),
                        // skipped up to the LF (a bare LF is accepted as line end).
                        b';' | b' ' | b'\t' | b'\r' => self.state = State::Ext { size },
                        b'\n' => self.end_size_line(size),
                        _ => return (pos, Err(ChunkError::Framing)),
                    }
                }
                State::Ext { size } => {
                    let size = *size;
                    let rest = &data[pos..];
                    match rest.iter().position(|&b| b == b'\n') {
                        Some(lf) => {
                            self.line_len += lf + 1;
                            pos += lf + 1;
                            if self.line_len > MAX_SIZE_LINE {
                                return (pos, Err(ChunkError::Framing));
                            }
                            self.end_size_line(size);
                        }
                        None => {
                            self.line_len += rest.len();
                            pos = data.len();
                            if self.line_len > MAX_SIZE_LINE {
                                return (pos, Err(ChunkError::Framing));
                            }
                        }
                    }
                }
                State::Data(remaining) => {
                    let avail = u64::try_from(data.len() - pos).unwrap_or(u64::MAX);
                    let take = (*remaining).min(avail);
                    // take <= data.len() - pos, so it fits in usize.
                    let take_usize = usize::try_from(take).unwrap_or(data.len() - pos);
                    body.push(&data[pos..pos + take_usize], max_body);
                    pos += take_usize;
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = State::DataEnd { seen_cr: false };
                    }
                }
                State::DataEnd { seen_cr } => {
                    let b = data[pos];
                    pos += 1;
                    match b {
                        b'\r' if !*seen_cr => *seen_cr = true,
                        b'\n' => {
                            self.state = State::Size {
                                value: 0,
                                digits: 0,
                            };
                            self.line_len = 0;
                        }
                        _ => return (pos, Err(ChunkError::Framing)),
                    }
                }
                State::Trailer => {
                    // The size line's LF comes before the section.
                    let mut before = [b'\n', 0];
                    let prev: &[u8] = match self.trailer.as_slice() {
                        [] => &before[..1],
                        [only] => {
                            before[1] = *only;
                            &before
                        }
                        longer => tail2(longer),
                    };
                    let rest = &data[pos..];
                    let (take, done) = match find_blank_line(prev, rest) {
                        Some(end) => (end, true),
                        None => (rest.len(), false),
                    };
                    if self.trailer.len() + take > max_trailer {
                        return (pos + take, Err(ChunkError::TrailerTooLarge));
                    }
                    self.trailer.extend_from_slice(&rest[..take]);
                    pos += take;
                    if done {
                        self.state = State::Done;
                        return (pos, Ok(true));
                    }
                }
                State::Done => return (pos, Ok(true)),
            }
        }
        (pos, Ok(matches!(self.state, State::Done)))
    }

    fn end_size_line(&mut self, size: u64) {
        self.line_len = 0;
        self.state = if size == 0 {
            State::Trailer
        } else {
            State::Data(size)
        };
    }
}
