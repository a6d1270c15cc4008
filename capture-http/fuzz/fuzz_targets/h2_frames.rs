//! Fuzzes the HTTP/2 frame layer on its own: one connection's client frames (after the
//! preface, which the target adds) and server frames, decoded twice — each side whole, and
//! each side in pieces of 1 to 8 bytes. While the frames are in sync, frame reassembly must
//! not depend on where reads end: the outputs (exchanges, limits) must be the same, and so
//! must everything up to the first error. After an error the side resynchronises, and that
//! does use read boundaries on purpose (a write starts with a frame header, so a candidate
//! frame that ends exactly where a read ends is trusted): from there on only "no panic, within
//! bounds" is checked (docs/fuzzing.md, finding 1). Every frame header found by walking the
//! streams must also agree with the header checks (`plausible` implies `check`).
//!
//! Input layout: `flags`, a u16 length of the client frames, the client frames, then the
//! server frames. Flag 1: small limits. Flags 2..: the piece-size seed.
#![no_main]

use capture_http::http1::Side;
use capture_http::http2::frame::{self, HEADER_LEN, PREFACE};
use capture_http::http2::{Http2Conn, Http2Limits, Http2Output};
use libfuzzer_sys::fuzz_target;

fn limits(small: bool) -> Http2Limits {
    if small {
        Http2Limits {
            max_body_bytes: 512,
            max_header_list_bytes: 512,
            max_streams: 4,
            max_hpack_table_bytes: 256,
            max_conn_body_bytes: 1024,
        }
    } else {
        Http2Limits::default()
    }
}

/// Walks the frame headers of `stream` as the decoder would (no gaps).
fn check_headers(stream: &[u8]) {
    let mut at = 0usize;
    while let Some(h) = frame::header_at(&stream[at..]) {
        if h.plausible(frame::MAX_MAX_FRAME_SIZE) {
            assert!(h.check(None).is_ok(), "{h:?} plausible but not valid");
        }
        if h.kind == frame::SETTINGS {
            let end = (at + HEADER_LEN + h.len as usize).min(stream.len());
            let payload = &stream[(at + HEADER_LEN).min(end)..end];
            assert_eq!(frame::settings(payload).count(), payload.len() / 6);
        }
        at = at.saturating_add(HEADER_LEN + h.len as usize);
        if at >= stream.len() {
            break;
        }
    }
    let _ = frame::looks_like_frames(stream);
}

fn decode(
    small: bool,
    client: &[u8],
    server: &[u8],
    mut piece: impl FnMut() -> usize,
) -> (Vec<Http2Output>, usize) {
    let mut conn = Http2Conn::new(limits(small));
    let mut out = Vec::new();
    for (side, stream) in [(Side::Request, client), (Side::Response, server)] {
        let mut rest = stream;
        while !rest.is_empty() {
            let n = piece().min(rest.len());
            conn.on_data(side, &rest[..n], 0, &mut out);
            rest = &rest[n..];
        }
    }
    let held = conn.buffered_bytes();
    conn.on_close(0, &mut out);
    assert_eq!(conn.open_streams(), 0);
    (out, held)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (frames, server) = rest.split_at(len);
    let mut client = PREFACE.to_vec();
    client.extend_from_slice(frames);
    check_headers(frames);
    check_headers(server);
    let small = flags & 1 != 0;
    let whole = decode(small, &client, server, || usize::MAX);
    let mut seed = u32::from(flags >> 1) | 1;
    let pieces = decode(small, &client, server, || {
        // xorshift: piece sizes 1..=8, fixed by the input.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed % 8 + 1) as usize
    });
    let first_error =
        |out: &[Http2Output]| out.iter().position(|o| matches!(o, Http2Output::Error(_)));
    match (first_error(&whole.0), first_error(&pieces.0)) {
        (None, None) => {
            assert_eq!(whole.0, pieces.0, "outputs depend on read boundaries");
            assert_eq!(whole.1, pieces.1, "held bytes depend on read boundaries");
        }
        (Some(a), Some(b)) => {
            assert_eq!(
                whole.0[..=a],
                pieces.0[..=b],
                "outputs up to the first error depend on read boundaries"
            );
        }
        (a, b) => panic!("an error in one decode only: whole {a:?}, pieces {b:?}"),
    }
});
