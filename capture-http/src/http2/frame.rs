//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte frame header, what each frame type allows,
//! SETTINGS entries, and the plausibility checks used to find frames in a byte stream whose
//! start was not seen (mid-stream detection and resynchronisation after a gap).

/// RFC 9113 §3.4: the client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;
/// RFC 9113 §6.5.2: SETTINGS_MAX_FRAME_SIZE starts at 2^14 and may be raised to 2^24 - 1.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 1 << 14;
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// RFC 9113 §6.5.2 setting identifiers this decoder uses.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// A frame header (RFC 9113 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream identifier, the reserved bit cleared.
    pub stream: u32,
    /// The reserved bit was set (receivers ignore it; finding it lowers plausibility).
    pub reserved: bool,
}

/// Why a frame header is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Stream id or length not allowed for the frame type (RFC 9113 §6).
    Invalid,
    /// Longer than the receiver's SETTINGS_MAX_FRAME_SIZE (RFC 9113 §4.2).
    TooLarge,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5] & 0x7f, b[6], b[7], b[8]]),
            reserved: b[5] & 0x80 != 0,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// RFC 9113 §6: stream-id and length rules of the known frame types (unknown types are
    /// allowed and ignored, §5.5), and the receiver's maximum frame size when known.
    pub fn check(&self, max_frame_size: Option<u32>) -> Result<(), FrameError> {
        if max_frame_size.is_some_and(|max| self.len > max) {
            return Err(FrameError::TooLarge);
        }
        let on_stream = self.stream != 0;
        let ok = match self.kind {
            DATA | HEADERS | CONTINUATION => on_stream,
            PRIORITY => on_stream && self.len == 5,
            RST_STREAM => on_stream && self.len == 4,
            SETTINGS => {
                !on_stream && self.len.is_multiple_of(6) && (!self.has(FLAG_ACK) || self.len == 0)
            }
            PUSH_PROMISE => on_stream && self.len >= 4,
            PING => !on_stream && self.len == 8,
            GOAWAY => !on_stream && self.len >= 8,
            WINDOW_UPDATE => self.len == 4,
            _ => true,
        };
        if ok { Ok(()) } else { Err(FrameError::Invalid) }
    }

    /// Stricter than [`check`](Self::check), for bytes not known to be frames: a known type,
    /// only flags the type defines, the reserved bit clear, at most `max_len` long (the
    /// receiver's maximum, or the default when unknown).
    pub fn plausible(&self, max_len: u32) -> bool {
        let flags_ok = match self.kind {
            DATA => self.flags & !(FLAG_END_STREAM | FLAG_PADDED) == 0,
            HEADERS => {
                self.flags & !(FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED | FLAG_PRIORITY)
                    == 0
            }
            PUSH_PROMISE => self.flags & !(FLAG_END_HEADERS | FLAG_PADDED) == 0,
            CONTINUATION => self.flags & !FLAG_END_HEADERS == 0,
            SETTINGS | PING => self.flags & !FLAG_ACK == 0,
            PRIORITY | RST_STREAM | GOAWAY | WINDOW_UPDATE => self.flags == 0,
            _ => false,
        };
        flags_ok && !self.reserved && self.len <= max_len && self.check(None).is_ok()
    }
}

/// Reads the frame header at the start of `b`, if there are 9 bytes.
pub fn header_at(b: &[u8]) -> Option<FrameHeader> {
    b.first_chunk::<HEADER_LEN>().map(FrameHeader::parse)
}

/// Whether `payload`, the first bytes of a connection's traffic in one direction, reads as
/// HTTP/2 frames: every frame header in it is plausible, and there are two whole frames, or
/// one that ends exactly where the payload does. Random binary traffic passes with a
/// probability far below 2^-40 (a known type, its flags, and a 24-bit length that lands
/// exactly on the next header or the end).
pub fn looks_like_frames(payload: &[u8]) -> bool {
    let mut at = 0usize;
    let mut whole = 0;
    while let Some(h) = header_at(&payload[at..]) {
        if !h.plausible(DEFAULT_MAX_FRAME_SIZE) {
            return false;
        }
        let end = at + HEADER_LEN + h.len as usize;
        if end > payload.len() {
            // A frame that continues in the next transfer: the frames before it decide.
            return whole >= 2;
        }
        whole += 1;
        at = end;
        if at == payload.len() {
            return true;
        }
    }
    // Fewer than 9 bytes after the last whole frame.
    whole >= 2
}

/// RFC 9113 §6.5.1: the (identifier, value) pairs of a SETTINGS payload.
pub fn settings(payload: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    payload.chunks_exact(6).map(|e| {
        (
            u16::from_be_bytes([e[0], e[1]]),
            u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
        )
    })
}

/// Appends a frame (header and payload) to `out`; for tests, benchmarks and fuzz seeds.
pub fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    out.extend_from_slice(&len[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checks() {
        let mut b = Vec::new();
        write_frame(
            &mut b,
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
            b"abc",
        );
        let h = header_at(&b).unwrap();
        assert_eq!(
            h,
            FrameHeader {
                len: 3,
                kind: HEADERS,
                flags: 5,
                stream: 3,
                reserved: false
            }
        );
        assert_eq!(h.check(Some(16384)), Ok(()));
        assert_eq!(h.check(Some(2)), Err(FrameError::TooLarge));
        assert!(h.plausible(16384));
        let bad = [
            (SETTINGS, 0, 1, 6),
            (SETTINGS, FLAG_ACK, 0, 6),
            (SETTINGS, 0, 0, 5),
            (PING, 0, 0, 7),
            (DATA, 0, 0, 1),
            (RST_STREAM, 0, 1, 5),
            (PRIORITY, 0, 1, 4),
            (GOAWAY, 0, 0, 7),
            (WINDOW_UPDATE, 0, 0, 3),
            (PUSH_PROMISE, 0, 2, 3),
        ];
        for (kind, flags, stream, len) in bad {
            let h = FrameHeader {
                len,
                kind,
                flags,
                stream,
                reserved: false,
            };
            assert_eq!(h.check(None), Err(FrameError::Invalid), "{h:?}");
            assert!(!h.plausible(16384));
        }
    }

    #[test]
    fn detection_needs_whole_frames() {
        let mut b = Vec::new();
        write_frame(&mut b, SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]);
        assert!(
            looks_like_frames(&b),
            "one whole frame filling the transfer"
        );
        write_frame(&mut b, WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
        write_frame(&mut b, DATA, 0, 1, &[0; 100]);
        assert!(looks_like_frames(&b[..b.len() - 50]), "two whole, one cut");
        let mut one_cut = Vec::new();
        write_frame(&mut one_cut, DATA, 0, 1, &[0; 100]);
        assert!(!looks_like_frames(&one_cut[..60]));
        assert!(!looks_like_frames(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!looks_like_frames(b"\x00\x00\x00"));
        assert!(!looks_like_frames(&[0u8; 64]), "zeros: DATA on stream 0");
        assert!(!looks_like_frames(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
        ));
    }

    #[test]
    fn settings_entries() {
        let p = [0, 1, 0, 0, 0x10, 0, 0, 5, 0, 0, 0x40, 0];
        let got: Vec<_> = settings(&p).collect();
        assert_eq!(got, vec![(1, 4096), (5, 16384)]);
    }
}
