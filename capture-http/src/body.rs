//! Content-coding decoding of captured message bodies (RFC 9110 §8.4), shared by the HTTP/1
//! and HTTP/2 decoders.
//!
//! Input is the body as captured with any transfer coding (chunked) already removed; output is
//! the decoded content, cut at a caller-given size. Every decoder here writes into an output
//! buffer that never grows past that size, so a decompression bomb costs at most `max` bytes
//! of memory and the CPU needed to produce them. Supported codings: `gzip`/`x-gzip`
//! (RFC 1952, several members allowed), `deflate` (RFC 9110 §8.4.1.2: zlib, RFC 1950; raw
//! deflate, RFC 1951, accepted too because some servers send it), `br` (RFC 7932), `zstd`
//! (RFC 8878, with the 8 MiB window limit of RFC 9659 §3) and `identity`.
//!
//! Error strings name the coding and what went wrong, never bytes of the body or the header.

use brotli_decompressor::{BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc};
use flate2::{Crc, Decompress, FlushDecompress, Status};
use std::io::Read as _;

use capture_model::exchange::Body;

/// The result of [`decode_content`]. Its `Debug` shows the size of `data`, not the bytes.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DecodedBody {
    /// Decoded content; the encoded bytes as captured when `decode_error` is set. Never longer
    /// than the `max` given to [`decode_content`].
    pub data: Vec<u8>,
    /// `data` is not all of the content: the input was incomplete (`wire_complete == false`)
    /// or the output reached `max`.
    pub truncated: bool,
    /// The codings that were decoded, lower-case, in header order (`"gzip"`, `"gzip, br"`);
    /// `None` when nothing was decoded (no coding, only `identity`, or an error).
    pub decoded_from: Option<String>,
    /// Why the content could not be decoded (unknown coding, corrupt stream). Short and fixed:
    /// never contains body bytes or header values.
    pub decode_error: Option<String>,
}

impl std::fmt::Debug for DecodedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedBody")
            .field("captured", &self.data.len())
            .field("truncated", &self.truncated)
            .field("decoded_from", &self.decoded_from)
            .field("decode_error", &self.decode_error)
            .finish()
    }
}

/// A body as captured, before content decoding: transfer-decoded bytes (HTTP/1 chunks, HTTP/2
/// DATA payloads) up to a limit, the full count, and whether bytes are missing.
#[derive(Debug, Default)]
pub(crate) struct CappedBody {
    pub(crate) data: Vec<u8>,
    pub(crate) wire_size: u64,
    /// Bytes past a limit were not kept.
    pub(crate) cap_hit: bool,
    /// Bytes were lost (gap, or the message was cut short); nothing after that is kept, so
    /// `data` stays a contiguous prefix a content decoder can use.
    lost: bool,
}

impl CappedBody {
    /// Appends what fits under `max` bytes kept in all; returns the bytes kept.
    pub(crate) fn push(&mut self, bytes: &[u8], max: usize) -> usize {
        self.wire_size = self
            .wire_size
            .saturating_add(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        if self.lost {
            return 0;
        }
        let room = max.saturating_sub(self.data.len());
        let take = bytes.len().min(room);
        if take < bytes.len() {
            self.cap_hit = true;
        }
        let need = self.data.len() + take;
        if need > self.data.capacity() {
            // Grow geometrically, but never past the limit.
            let target = need.max(self.data.capacity() * 2).min(max);
            self.data.reserve_exact(target - self.data.len());
        }
        self.data.extend_from_slice(&bytes[..take]);
        take
    }

    /// `n` body bytes were lost in a gap.
    pub(crate) fn lose(&mut self, n: u64) {
        self.wire_size = self.wire_size.saturating_add(n);
        self.lost = true;
    }

    /// The message ended before its body did.
    pub(crate) fn cut(&mut self) {
        self.lost = true;
    }

    /// Drops what is kept and keeps nothing more (the daemon is over its memory budget); the
    /// body reads as cut by a limit. A body with nothing kept is left as it is. Returns the
    /// bytes freed.
    pub(crate) fn shed(&mut self) -> usize {
        let freed = self.data.len();
        if freed == 0 {
            return 0;
        }
        self.data = Vec::new();
        self.cap_hit = true;
        self.lost = true;
        freed
    }

    /// Nothing is missing: no limit cut it, no byte was lost.
    pub(crate) fn complete(&self) -> bool {
        !self.cap_hit && !self.lost
    }

    /// The body as written: content-decoded per `content_encoding` (at most `max` bytes).
    pub(crate) fn finish(self, content_encoding: Option<&str>, max: usize) -> Body {
        let complete = self.complete();
        if content_encoding.is_none() {
            return Body {
                data: self.data,
                wire_size: self.wire_size,
                truncated: !complete,
                decoded_from: None,
                decode_error: None,
                decoded_size: None,
            };
        }
        let decoded = decode_content(content_encoding, &self.data, complete, max);
        Body {
            truncated: !complete || decoded.truncated || decoded.decode_error.is_some(),
            data: decoded.data,
            wire_size: self.wire_size,
            decoded_from: decoded.decoded_from,
            decode_error: decoded.decode_error,
            decoded_size: None,
        }
    }
}

/// Drops the content of a finished body not yet written (the daemon is over its memory
/// budget): it reads as cut by a limit. Returns the bytes freed.
pub fn shed(body: &mut Body) -> usize {
    let freed = body.data.len();
    if freed > 0 {
        body.data = Vec::new();
        body.truncated = true;
        body.decoded_size = None;
    }
    freed
}

/// Content codings stacked deeper than this are refused: each layer may cost up to `max`
/// bytes of output, so the bound keeps the work per body linear in `max`.
const MAX_CODINGS: usize = 4;

/// RFC 9659 §3: a `zstd` content coding uses a window of at most 8 MiB; larger claims would
/// make the decoder allocate that much up front.
const ZSTD_MAX_WINDOW: u64 = 8 * 1024 * 1024;

/// Output is produced in steps of this size so buffers grow with the content, not with `max`.
const STEP: usize = 64 * 1024;

/// Decodes `wire` according to `content_encoding` (the Content-Encoding field value; several
/// codings are listed in the order they were applied, so they are undone last to first,
/// RFC 9110 §8.4).
///
/// `wire_complete` is false when bytes of the body are missing (capture limit, gap): then a
/// stream that ends early is decoded as far as it goes and marked truncated instead of failing.
/// At most `max` bytes of output are produced (and allocated).
pub fn decode_content(
    content_encoding: Option<&str>,
    wire: &[u8],
    wire_complete: bool,
    max: usize,
) -> DecodedBody {
    let codings: Vec<String> = content_encoding
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() || wire.is_empty() {
        // Nothing to undo (an empty body stays empty whatever the coding says: HEAD, 304).
        return raw(wire, wire_complete, max, None);
    }
    if codings.len() > MAX_CODINGS {
        return raw(wire, wire_complete, max, Some("too many content codings"));
    }
    let mut current: Vec<u8> = Vec::new();
    let mut input_complete = wire_complete;
    let mut truncated = false;
    for (layer, coding) in codings.iter().rev().enumerate() {
        let input: &[u8] = if layer == 0 { wire } else { &current };
        let decoded = match coding.as_str() {
            "gzip" | "x-gzip" => gunzip(input, max),
            "deflate" => inflate_deflate(input, max),
            "br" => unbrotli(input, max),
            "zstd" => unzstd(input, max),
            _ => Err("unsupported content coding"),
        };
        let decoded = match decoded {
            Ok(d) => d,
            Err(reason) => return raw(wire, wire_complete, max, Some(reason)),
        };
        match decoded.end {
            End::Complete => {}
            End::OutputFull => {
                truncated = true;
                input_complete = false;
            }
            End::NeedInput if !input_complete => truncated = true,
            End::NeedInput => {
                return raw(wire, wire_complete, max, Some(truncated_reason(coding)));
            }
        }
        current = decoded.data;
    }
    DecodedBody {
        data: current,
        // Bytes of the wire are missing, so content is too, even when what arrived ends where
        // a stream or a gzip member may end (found by the `body` fuzz target).
        truncated: truncated || !wire_complete,
        decoded_from: Some(codings.join(", ")),
        decode_error: None,
    }
}

fn truncated_reason(coding: &str) -> &'static str {
    match coding {
        "gzip" | "x-gzip" => "gzip: stream ends early",
        "deflate" => "deflate: stream ends early",
        "br" => "br: stream ends early",
        _ => "zstd: stream ends early",
    }
}

/// The body as captured, cut at `max`, with an optional decode error.
fn raw(wire: &[u8], wire_complete: bool, max: usize, error: Option<&str>) -> DecodedBody {
    let keep = wire.len().min(max);
    DecodedBody {
        data: wire[..keep].to_vec(),
        truncated: !wire_complete || wire.len() > max,
        decoded_from: None,
        decode_error: error.map(str::to_owned),
    }
}

/// How a decoder stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The stream ended properly (trailing bytes after it are ignored, as browsers do).
    Complete,
    /// The input ran out before the stream ended.
    NeedInput,
    /// `max` bytes were produced and the stream has more.
    OutputFull,
}

struct Decoded {
    data: Vec<u8>,
    end: End,
}

type DecodeResult = Result<Decoded, &'static str>;

/// Grows `out` by up to one step without passing `max`; returns false when `out` is full.
fn make_room(out: &mut Vec<u8>, max: usize) -> bool {
    let room = max.saturating_sub(out.len()).min(STEP);
    if room == 0 {
        return false;
    }
    if out.capacity() - out.len() < room {
        out.reserve_exact(room);
    }
    true
}

/// Runs a deflate stream (raw or zlib, as configured in `dec`) from `input` into `out`.
/// Returns how it ended and how many input bytes it consumed.
fn run_inflate(
    dec: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(End, usize), ()> {
    let start_in = dec.total_in();
    let consumed =
        |dec: &Decompress| usize::try_from(dec.total_in() - start_in).unwrap_or(usize::MAX);
    loop {
        if !make_room(out, max) {
            // Full: probe one byte further to tell "ended exactly at max" from "has more".
            let mut probe = [0u8; 1];
            loop {
                let (in0, out0) = (dec.total_in(), dec.total_out());
                let offset = consumed(dec).min(input.len());
                let status = dec
                    .decompress(&input[offset..], &mut probe, FlushDecompress::None)
                    .map_err(|_| ())?;
                if status == Status::StreamEnd && dec.total_out() == out0 {
                    return Ok((End::Complete, consumed(dec)));
                }
                if dec.total_out() != out0 {
                    return Ok((End::OutputFull, consumed(dec)));
                }
                if dec.total_in() == in0 {
                    return Ok((End::NeedInput, consumed(dec)));
                }
            }
        }
        let (in0, out0) = (dec.total_in(), dec.total_out());
        let offset = consumed(dec).min(input.len());
        // decompress_vec writes only into spare capacity, which make_room bounded by max.
        let status = dec
            .decompress_vec(&input[offset..], out, FlushDecompress::None)
            .map_err(|_| ())?;
        if status == Status::StreamEnd {
            return Ok((End::Complete, consumed(dec)));
        }
        if dec.total_in() == in0 && dec.total_out() == out0 {
            // No progress with room left: the input is exhausted mid-stream.
            return Ok((End::NeedInput, consumed(dec)));
        }
    }
}

/// RFC 1952 member header; returns its length, `Ok(None)` when `input` ends inside it.
fn gzip_header_len(input: &[u8]) -> Result<Option<usize>, &'static str> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    const RESERVED: u8 = 0xE0;
    if input.len() < 10 {
        // Even a short prefix must look like a gzip header.
        let magic = [0x1f, 0x8b, 0x08];
        let n = input.len().min(3);
        return if input[..n] == magic[..n] {
            Ok(None)
        } else {
            Err("gzip: invalid header")
        };
    }
    if input[..3] != [0x1f, 0x8b, 0x08] || input[3] & RESERVED != 0 {
        return Err("gzip: invalid header");
    }
    let flags = input[3];
    let mut pos = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = input.get(pos..pos + 2) else {
            return Ok(None);
        };
        pos += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(rest) = input.get(pos..) else {
                return Ok(None);
            };
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                return Ok(None);
            };
            pos += nul + 1;
        }
    }
    if flags & FHCRC != 0 {
        pos += 2;
    }
    Ok((pos <= input.len()).then_some(pos))
}

/// gzip, possibly several members one after the other (RFC 1952 §2.2).
fn gunzip(input: &[u8], max: usize) -> DecodeResult {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = gzip_header_len(&input[pos..])? else {
            return Ok(Decoded {
                data: out,
                end: End::NeedInput,
            });
        };
        pos += header;
        let member_start = out.len();
        let mut dec = Decompress::new(false);
        let (end, used) = run_inflate(&mut dec, &input[pos..], &mut out, max)
            .map_err(|()| "gzip: corrupt deflate data")?;
        pos += used;
        if end != End::Complete {
            return Ok(Decoded { data: out, end });
        }
        let Some(trailer) = input.get(pos..pos + 8) else {
            return Ok(Decoded {
                data: out,
                end: End::NeedInput,
            });
        };
        pos += 8;
        let mut crc = Crc::new();
        crc.update(&out[member_start..]);
        let want_crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let want_len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        // ISIZE is the length modulo 2^32 (RFC 1952 §2.3.1).
        #[expect(
            clippy::cast_possible_truncation,
            reason = "ISIZE is defined modulo 2^32"
        )]
        let got_len = (out.len() - member_start) as u32;
        if crc.sum() != want_crc || got_len != want_len {
            return Err("gzip: checksum mismatch");
        }
        // Another member follows only if it starts with the gzip magic; anything else is
        // trailing garbage, ignored as browsers do.
        if !input[pos..].starts_with(&[0x1f, 0x8b]) {
            return Ok(Decoded {
                data: out,
                end: End::Complete,
            });
        }
    }
}

/// RFC 9110 §8.4.1.2: "deflate" is a zlib stream (RFC 1950); raw deflate (RFC 1951) is
/// accepted when the first two bytes are not a zlib header.
fn inflate_deflate(input: &[u8], max: usize) -> DecodeResult {
    let zlib = match input {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && flg & 0x20 == 0
                && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => {
            return Ok(Decoded {
                data: Vec::new(),
                end: End::NeedInput,
            });
        }
    };
    let mut dec = Decompress::new(zlib);
    let mut out = Vec::new();
    let (end, _) =
        run_inflate(&mut dec, input, &mut out, max).map_err(|()| "deflate: corrupt data")?;
    Ok(Decoded { data: out, end })
}

/// Brotli through the streaming API, which (unlike the `Read` adapter) tells an input that
/// ends early from a stream that is complete.
fn unbrotli(input: &[u8], max: usize) -> DecodeResult {
    let mut state = BrotliState::new(
        StandardAlloc::default(),
        StandardAlloc::default(),
        StandardAlloc::default(),
    );
    let mut out = Vec::new();
    let mut chunk = vec![0u8; STEP.min(max.max(1))];
    let (mut avail_in, mut in_off) = (input.len(), 0usize);
    let mut total_out = 0usize;
    loop {
        let room = max - out.len();
        let want = chunk.len().min(room.max(1));
        let (mut avail_out, mut out_off) = (want, 0usize);
        let result = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            input,
            &mut avail_out,
            &mut out_off,
            &mut chunk[..want],
            &mut total_out,
            &mut state,
        );
        if out_off > room {
            // Only the one-byte probe at a full buffer gets here: there is more content.
            return Ok(Decoded {
                data: out,
                end: End::OutputFull,
            });
        }
        out.extend_from_slice(&chunk[..out_off]);
        match result {
            BrotliResult::ResultSuccess => {
                return Ok(Decoded {
                    data: out,
                    end: End::Complete,
                });
            }
            BrotliResult::NeedsMoreInput => {
                return Ok(Decoded {
                    data: out,
                    end: End::NeedInput,
                });
            }
            BrotliResult::NeedsMoreOutput if room == 0 => {
                return Ok(Decoded {
                    data: out,
                    end: End::OutputFull,
                });
            }
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::ResultFailure => return Err("br: corrupt stream"),
        }
    }
}

/// Window size a zstd frame header asks for (RFC 8878 §3.1.1.1); `None` when `input` is too
/// short to tell.
fn zstd_window(input: &[u8]) -> Option<u64> {
    let fhd = *input.get(4)?;
    let single_segment = fhd & 0x20 != 0;
    if !single_segment {
        let wd = *input.get(5)?;
        let log = 10 + u64::from(wd >> 3);
        let base = 1u64 << log;
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    // Single segment: the window is the frame content size.
    let dict_len = [0usize, 1, 2, 4][usize::from(fhd & 3)];
    let fcs_len = [1usize, 2, 4, 8][usize::from(fhd >> 6)];
    let at = 5 + dict_len;
    let field = input.get(at..at + fcs_len)?;
    let mut bytes = [0u8; 8];
    bytes[..fcs_len].copy_from_slice(field);
    let fcs = u64::from_le_bytes(bytes);
    Some(if fcs_len == 2 { fcs + 256 } else { fcs })
}

/// zstd frames one after the other; skippable frames (RFC 8878 §3.1.2) are skipped.
fn unzstd(input: &[u8], max: usize) -> DecodeResult {
    const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
    let mut out = Vec::new();
    let mut rest = input;
    let mut frames = 0usize;
    loop {
        if rest.len() < 4 {
            return match frames {
                0 if MAGIC.starts_with(rest) => Ok(Decoded {
                    data: out,
                    end: End::NeedInput,
                }),
                0 => Err("zstd: invalid frame header"),
                // A few bytes after complete frames: trailing garbage, ignored.
                _ => Ok(Decoded {
                    data: out,
                    end: End::Complete,
                }),
            };
        }
        let magic = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            let Some(len) = rest.get(4..8) else {
                return Ok(Decoded {
                    data: out,
                    end: End::NeedInput,
                });
            };
            let len = usize::try_from(u32::from_le_bytes([len[0], len[1], len[2], len[3]]))
                .unwrap_or(usize::MAX);
            let Some(next) = rest.get(8usize.saturating_add(len)..) else {
                return Ok(Decoded {
                    data: out,
                    end: End::NeedInput,
                });
            };
            rest = next;
            frames += 1;
            continue;
        }
        if magic != 0xFD2F_B528 {
            if frames == 0 {
                return Err("zstd: invalid frame header");
            }
            return Ok(Decoded {
                data: out,
                end: End::Complete,
            });
        }
        match zstd_window(rest) {
            None => {
                return Ok(Decoded {
                    data: out,
                    end: End::NeedInput,
                });
            }
            Some(w) if w > ZSTD_MAX_WINDOW => return Err("zstd: window too large"),
            Some(_) => {}
        }
        let mut source = rest;
        let (end, finished) = zstd_frame(&mut source, &mut out, max)?;
        if let Some(end) = end {
            return Ok(Decoded { data: out, end });
        }
        if !finished {
            return Ok(Decoded {
                data: out,
                end: End::NeedInput,
            });
        }
        frames += 1;
        rest = source;
        if rest.is_empty() {
            return Ok(Decoded {
                data: out,
                end: End::Complete,
            });
        }
    }
}

/// Decodes one zstd frame from `source` into `out`. Returns `Some(end)` when decoding must stop
/// here, else whether the frame was complete.
fn zstd_frame(
    source: &mut &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(Option<End>, bool), &'static str> {
    let Ok(mut decoder) = ruzstd::decoding::StreamingDecoder::new(&mut *source) else {
        // An input that ends inside the frame header is an early end, not corruption.
        if source.is_empty() {
            return Ok((Some(End::NeedInput), false));
        }
        return Err("zstd: invalid frame header");
    };
    loop {
        if !make_room(out, max) {
            let mut probe = [0u8; 1];
            let end = match decoder.read(&mut probe) {
                Ok(0) if decoder.decoder.is_finished() => End::Complete,
                _ => End::OutputFull,
            };
            return Ok((Some(end), true));
        }
        let len = out.len();
        let room = (out.capacity() - len).min(max - len);
        out.resize(len + room, 0);
        match decoder.read(&mut out[len..]) {
            Ok(0) => {
                out.truncate(len);
                return Ok((None, decoder.decoder.is_finished()));
            }
            Ok(n) => out.truncate(len + n),
            Err(_) => {
                out.truncate(len);
                // ruzstd reports running out of input as an error too; with no input left
                // that is an early end, anything else is corruption.
                if decoder.get_ref().is_empty() {
                    return Ok((Some(End::NeedInput), false));
                }
                return Err("zstd: corrupt frame");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use std::io::Write as _;

    const MIB: usize = 1024 * 1024;

    /// The text the brotli and zstd CLI vectors below were made from.
    fn text() -> Vec<u8> {
        (0..200)
            .flat_map(|i| {
                format!("line {i}: the quick brown fox jumps over the lazy dog\n").into_bytes()
            })
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `brotli -c -q 11` of `text()` (brotli 1.0.9).
    fn br_text() -> Vec<u8> {
        hex(concat!(
            "e1084e01e04cb07142bdbbe1a9b229edfa76709aa06890333c3d15f6d6200a7379e9f97601d8e2432881204bf4c6",
            "cfbef3d0df9d243ab26b8bbdd4f376e49e47ef9b3c67dcbebfef6d3a0d4d2d6d1ddd7af4ea9b4719c6014e2e6e1ede",
            "7cf8eacb591c9c5cdc3cbcf9f0d597ab3838b9b87978f3e1ab2f7771707271f3f0e6c3575f9ee2e0e4e2e6e1cd87af",
            "bebc8b83938b9b87371fbefaf2290e4e2e6e1ede7cf8eacbb73838b9b87978f3e1ab2fbfe2e0e4e2e6e1cd87ef0f57",
            "aaf98287a797b78f6f3f7ef9f5280f4f2f6f1fdf7efcf2eb591e9e5ede3ebefdf8e5d7ab3c3cbdbc7d7cfbf1cbaf77",
            "79787a79fbf8f6e3975f9ff2f0f4f2f6f1edc72fbfbecbc3d3cbdbc7b71fbffcfa290f4f2f6f1fdf7efcf2ebb73c3c",
            "bdbc7d7cfbf1cbafbff2f0f4f2f6f1edc72f3c"
        ))
    }

    /// `brotli -c -q 11` of 100 MiB of zeros: a 93-byte decompression bomb.
    fn br_bomb() -> Vec<u8> {
        hex(concat!(
            "cfffff7ff82700e2b14020f7fe9ffffffff04f00c4610180eefd3fffffffe19f0088c32200ddfb7ffeffffc33f01",
            "10870500baf7fffcffff877f02200e0b0074effff9ffff0fff04401c1600e8deffe7ffff0ffe0980382c00d0bdff01"
        ))
    }

    /// `printf 'hello, world\n' | zstd -c -19` (zstd 1.5.4), with a content checksum.
    fn zstd_hello() -> Vec<u8> {
        hex("28b52ffd046869000068656c6c6f2c20776f726c640a4c1ff9f1")
    }

    /// A zstd frame of `blocks` RLE blocks of 128 KiB zeros (RFC 8878 §3.1.1.2): tiny input,
    /// `blocks * 128 KiB` output.
    fn zstd_rle_bomb(blocks: usize) -> Vec<u8> {
        let mut f = 0xFD2F_B528u32.to_le_bytes().to_vec();
        f.push(0x00); // FHD: no content size, no checksum, not single-segment
        f.push(7 << 3); // window descriptor: 2^17 = 128 KiB
        for i in 0..blocks {
            let last = u32::from(i + 1 == blocks);
            let header = last | (1 << 1) | ((128 * 1024) << 3);
            f.extend_from_slice(&header.to_le_bytes()[..3]);
            f.push(0);
        }
        f
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = DeflateEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// Bytes that are not valid text and compress poorly: a simple LCG.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect()
    }

    fn assert_decoded(enc: Option<&str>, wire: &[u8], want: &[u8], from: &str) {
        let d = decode_content(enc, wire, true, MIB);
        assert_eq!(d.decode_error, None);
        assert_eq!(d.data, want);
        assert!(!d.truncated);
        assert_eq!(d.decoded_from.as_deref(), Some(from));
    }

    #[test]
    fn identity_and_no_coding_keep_bytes() {
        for enc in [None, Some("identity"), Some(""), Some(" identity , ")] {
            let d = decode_content(enc, b"plain", true, MIB);
            assert_eq!(
                d,
                DecodedBody {
                    data: b"plain".to_vec(),
                    ..Default::default()
                },
                "{enc:?}"
            );
        }
        let d = decode_content(None, b"plain body", true, 5);
        assert_eq!(d.data, b"plain");
        assert!(d.truncated);
        let d = decode_content(None, b"plain", false, 100);
        assert_eq!(d.data, b"plain");
        assert!(d.truncated);
    }

    #[test]
    fn debug_shows_sizes_not_bytes() {
        let d = decode_content(None, b"secret-token", true, MIB);
        let debug = format!("{d:?}");
        assert!(debug.contains("captured: 12"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn empty_body_with_coding_is_empty() {
        let d = decode_content(Some("gzip"), b"", true, MIB);
        assert_eq!(d, DecodedBody::default());
    }

    #[test]
    fn gzip_round_trip() {
        for data in [text(), noise(200_000), Vec::new()] {
            let wire = gzip(&data);
            assert_decoded(Some("gzip"), &wire, &data, "gzip");
            assert_decoded(Some("x-gzip"), &wire, &data, "x-gzip");
            assert_decoded(Some("GZip"), &wire, &data, "gzip");
        }
    }

    #[test]
    fn gzip_header_fields_and_members() {
        let mut e = flate2::GzBuilder::new()
            .filename("name.txt")
            .comment("a comment")
            .extra(vec![1, 2, 3, 4])
            .write(Vec::new(), Compression::best());
        e.write_all(b"first member, ").unwrap();
        let mut wire = e.finish().unwrap();
        wire.extend(gzip(b"second member"));
        assert_decoded(Some("gzip"), &wire, b"first member, second member", "gzip");
        // Trailing bytes that do not start another member are ignored.
        wire.extend_from_slice(b"\r\n");
        assert_decoded(Some("gzip"), &wire, b"first member, second member", "gzip");
    }

    #[test]
    fn deflate_zlib_and_raw() {
        for data in [text(), noise(70_000)] {
            assert_decoded(Some("deflate"), &zlib(&data), &data, "deflate");
            assert_decoded(Some("deflate"), &raw_deflate(&data), &data, "deflate");
        }
    }

    #[test]
    fn brotli_cli_vectors() {
        assert_decoded(Some("br"), &br_text(), &text(), "br");
        assert_decoded(
            Some("br"),
            &hex("0f068068656c6c6f2c20776f726c640a03"),
            b"hello, world\n",
            "br",
        );
    }

    #[test]
    fn zstd_round_trip_and_cli_vector() {
        for data in [text(), noise(300_000), b"x".to_vec()] {
            assert_decoded(Some("zstd"), &zstd(&data), &data, "zstd");
        }
        assert_decoded(Some("zstd"), &zstd_hello(), b"hello, world\n", "zstd");
        // Two frames with a skippable frame between them.
        let mut wire = zstd(b"one ");
        wire.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
        wire.extend_from_slice(&3u32.to_le_bytes());
        wire.extend_from_slice(b"abc");
        wire.extend(zstd_hello());
        assert_decoded(Some("zstd"), &wire, b"one hello, world\n", "zstd");
    }

    #[test]
    fn stacked_codings_are_undone_in_reverse() {
        let data = text();
        let wire = gzip(&zlib(&data));
        assert_decoded(Some("deflate, gzip"), &wire, &data, "deflate, gzip");
        assert_decoded(
            Some("deflate,identity,  gzip"),
            &wire,
            &data,
            "deflate, gzip",
        );
        let wire = zlib(&zstd(&data));
        assert_decoded(Some("zstd, deflate"), &wire, &data, "zstd, deflate");
        // In the wrong order the inner layer is not gzip.
        let d = decode_content(Some("gzip, deflate"), &gzip(&zlib(&data)), true, MIB);
        assert!(d.decode_error.is_some());
        let d = decode_content(Some("gzip, gzip, gzip, gzip, gzip"), b"abc", true, MIB);
        assert_eq!(d.decode_error.as_deref(), Some("too many content codings"));
        assert_eq!(d.data, b"abc");
    }

    fn assert_bomb_capped(enc: &str, wire: &[u8]) {
        let d = decode_content(Some(enc), wire, true, MIB);
        assert_eq!(d.decode_error, None, "{enc}");
        assert_eq!(d.data.len(), MIB, "{enc}");
        assert!(d.data.iter().all(|&b| b == 0), "{enc}");
        assert!(d.truncated, "{enc}");
        assert!(
            d.data.capacity() <= MIB + STEP,
            "{enc}: capacity {}",
            d.data.capacity()
        );
        assert_eq!(d.decoded_from.as_deref(), Some(enc));
    }

    #[test]
    fn decompression_bombs_stop_at_the_cap() {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        let zeros = vec![0u8; MIB];
        for _ in 0..100 {
            e.write_all(&zeros).unwrap();
        }
        let gz = e.finish().unwrap();
        assert!(
            gz.len() < MIB,
            "a bomb: {} bytes expand to 100 MiB",
            gz.len()
        );
        assert_bomb_capped("gzip", &gz);
        let mut e = ZlibEncoder::new(Vec::new(), Compression::fast());
        for _ in 0..20 {
            e.write_all(&zeros).unwrap();
        }
        assert_bomb_capped("deflate", &e.finish().unwrap());
        assert_bomb_capped("br", &br_bomb());
        assert_bomb_capped("zstd", &zstd_rle_bomb(800));
    }

    #[test]
    fn output_of_exactly_max_is_not_truncated() {
        let data = noise(10_000);
        let wires = [
            ("gzip", gzip(&data)),
            ("deflate", zlib(&data)),
            ("deflate", raw_deflate(&data)),
            ("zstd", zstd(&data)),
        ];
        for (enc, wire) in &wires {
            let d = decode_content(Some(enc), wire, true, data.len());
            assert_eq!(
                (d.data.as_slice(), d.truncated),
                (data.as_slice(), false),
                "{enc}"
            );
            let d = decode_content(Some(enc), wire, true, data.len() - 1);
            assert_eq!(
                (d.data.as_slice(), d.truncated),
                (&data[..data.len() - 1], true),
                "{enc}"
            );
            assert_eq!(d.decode_error, None);
        }
        let t = text();
        let d = decode_content(Some("br"), &br_text(), true, t.len());
        assert_eq!((d.data.as_slice(), d.truncated), (t.as_slice(), false));
        let d = decode_content(Some("br"), &br_text(), true, 100);
        assert_eq!((d.data.as_slice(), d.truncated), (&t[..100], true));
        let d = decode_content(Some("zstd"), &zstd_rle_bomb(2), true, 256 * 1024);
        assert_eq!((d.data.len(), d.truncated), (256 * 1024, false));
    }

    /// Every prefix of every stream: with `wire_complete == false` the output is a prefix of
    /// the content and flagged truncated; with `true` it is an error that keeps the raw bytes.
    #[test]
    fn every_truncation_point() {
        let t = text();
        let cases = [
            ("gzip", gzip(&t)),
            ("deflate", zlib(&t)),
            ("deflate", raw_deflate(&t)),
            ("br", br_text()),
            ("zstd", zstd(&t)),
            ("zstd", zstd_hello()),
        ];
        for (enc, wire) in &cases {
            let full = decode_content(Some(enc), wire, true, MIB);
            assert_eq!(full.decode_error, None);
            for cut in 1..wire.len() {
                let d = decode_content(Some(enc), &wire[..cut], false, MIB);
                assert_eq!(d.decode_error, None, "{enc} cut {cut}");
                assert!(d.truncated, "{enc} cut {cut}");
                assert!(full.data.starts_with(&d.data), "{enc} cut {cut}");
                assert_eq!(d.decoded_from.as_deref(), Some(*enc));
                let d = decode_content(Some(enc), &wire[..cut], true, MIB);
                if d.decode_error.is_some() {
                    assert_eq!(d.data, &wire[..cut], "{enc} cut {cut}");
                    assert_eq!(d.decoded_from, None);
                } else {
                    // Only a raw deflate stream can look complete before its end: its final
                    // block may end before the last byte. Then the content is all there.
                    assert_eq!(d.data, full.data, "{enc} cut {cut}");
                }
            }
        }
        let d = decode_content(Some("gzip"), &gzip(&t)[..40], true, MIB);
        assert_eq!(d.decode_error.as_deref(), Some("gzip: stream ends early"));
    }

    #[test]
    fn corrupt_and_unknown_keep_encoded_bytes_without_leaking() {
        let secret = b"Bearer s3cr3t-token-value".to_vec();
        let mut bad_gzip = gzip(&secret);
        let n = bad_gzip.len();
        bad_gzip[n - 8] ^= 0xff; // CRC
        let mut bad_zlib = zlib(&text());
        bad_zlib[5] ^= 0x55;
        let mut bad_zstd = zstd(&text());
        bad_zstd[8] ^= 0xff;
        let mut bad_br = br_text();
        bad_br[20] ^= 0xff;
        let mut huge_window = zstd(b"x");
        huge_window[4] = 0x00;
        huge_window.insert(5, 20 << 3); // window 2^30
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("gzip", secret.clone(), "gzip: invalid header"),
            ("gzip", bad_gzip, "gzip: checksum mismatch"),
            ("deflate", bad_zlib, "deflate: corrupt data"),
            ("zstd", secret.clone(), "zstd: invalid frame header"),
            ("zstd", huge_window, "zstd: window too large"),
            ("compress", secret.clone(), "unsupported content coding"),
            (
                "s3cr3t-coding",
                secret.clone(),
                "unsupported content coding",
            ),
        ];
        for (enc, wire, reason) in cases {
            let d = decode_content(Some(enc), &wire, true, MIB);
            assert_eq!(d.decode_error.as_deref(), Some(reason), "{enc}");
            assert_eq!(d.data, wire, "{enc}");
            assert_eq!(d.decoded_from, None);
            assert!(!d.truncated);
        }
        for (enc, wire) in [("zstd", bad_zstd), ("br", bad_br)] {
            let d = decode_content(Some(enc), &wire, true, MIB);
            let err = d.decode_error.expect("corrupt stream is an error");
            assert!(err.starts_with(enc), "{err}");
            assert_eq!(d.data, wire);
        }
        // Corrupt input is kept raw but still cut at the cap.
        let d = decode_content(Some("gzip"), &secret, true, 6);
        assert_eq!((d.data.as_slice(), d.truncated), (&secret[..6], true));
    }
    /// An incomplete wire is truncated content even when what arrived ends where a stream
    /// may end: a gzip body cut between two members, a whole br stream whose wire was said
    /// to be incomplete (`body` fuzz target, finding 3 of docs/fuzzing.md).
    #[test]
    fn an_incomplete_wire_is_truncated_even_at_a_stream_boundary() {
        let first = gzip(b"first member");
        let mut both = first.clone();
        both.extend_from_slice(&gzip(b", second member"));
        let d = decode_content(Some("gzip"), &both, true, MIB);
        assert_eq!(
            (d.data.as_slice(), d.truncated),
            (&b"first member, second member"[..], false)
        );
        let d = decode_content(Some("gzip"), &first, false, MIB);
        assert_eq!(
            (d.data.as_slice(), d.truncated),
            (&b"first member"[..], true)
        );
        assert_eq!(d.decode_error, None);
        let d = decode_content(Some("br"), &br_text(), false, MIB);
        assert!(d.truncated && d.decode_error.is_none());
        let d = decode_content(Some("br"), &br_text(), true, MIB);
        assert!(!d.truncated);
    }
}
