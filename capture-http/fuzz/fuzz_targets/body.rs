//! Fuzzes the body decoders: the content codings (gzip, deflate as zlib and raw, br, zstd,
//! stacked codings) of `capture_http::body` and the chunked transfer coding of the HTTP/1
//! decoder. Three properties:
//!
//! 1. Arbitrary bytes under any coding: no panic, and never more output than the cap.
//! 2. Round trip: the payload, compressed by an independent encoder (flate2, brotli, ruzstd),
//!    decodes to exactly the payload cut at the cap, marked truncated iff it was cut; the
//!    compressed bytes cut short (`wire_complete == false`) decode to a prefix of it.
//! 3. The compressed payload sent as a chunked HTTP/1 response (chunk sizes, extensions and
//!    pieces chosen by the fuzzer) is captured exactly as the payload.
//!
//! Input layout: `coding` (which encoder), `flags`, u16 cap, u16 cut point, u16 chunking
//! seed, then the payload.
#![no_main]

use std::io::Write as _;

use capture_http::body::decode_content;
use capture_http::http1::{Http1Conn, Http1Limits, Http1Output, Side};
use flate2::Compression;
use libfuzzer_sys::fuzz_target;

/// The codings the round trip uses, as (Content-Encoding value, encoder).
fn encode(coding: u8, payload: &[u8]) -> (&'static str, Vec<u8>) {
    match coding % 7 {
        0 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
            e.write_all(payload).expect("to a Vec");
            ("gzip", e.finish().expect("to a Vec"))
        }
        1 => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
            e.write_all(payload).expect("to a Vec");
            ("deflate", e.finish().expect("to a Vec"))
        }
        2 => {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::best());
            e.write_all(payload).expect("to a Vec");
            ("deflate", e.finish().expect("to a Vec"))
        }
        3 => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: 5,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &payload[..], &mut out, &params).expect("to a Vec");
            ("br", out)
        }
        4 => (
            "zstd",
            ruzstd::encoding::compress_to_vec(payload, ruzstd::encoding::CompressionLevel::Fastest),
        ),
        5 => {
            // Two members (RFC 1952 §2.2): the payload split in half.
            let (a, b) = payload.split_at(payload.len() / 2);
            let mut out = encode(0, a).1;
            out.extend_from_slice(&encode(0, b).1);
            ("x-gzip", out)
        }
        _ => {
            // Stacked: gzip applied first, then br (undone in reverse).
            let gz = encode(0, payload).1;
            ("gzip, br", encode(3, &gz).1)
        }
    }
}

const CODINGS: [&str; 8] = [
    "gzip",
    "deflate",
    "br",
    "zstd",
    "identity",
    "gzip, deflate",
    "br, zstd, gzip",
    "compress",
];

/// The body as chunked transfer coding: chunk sizes 1..=64 from `seed`, some chunks with an
/// extension, upper- or lower-case hex.
fn chunked(body: &[u8], mut seed: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed % 64 + 1) as usize;
        let n = n.min(rest.len());
        if seed & 0x100 != 0 {
            write!(out, "{n:X};ext=\"v\"\r\n").expect("to a Vec");
        } else {
            write!(out, "{n:x}\r\n").expect("to a Vec");
        }
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fuzz_target!(|data: &[u8]| {
    let [coding, flags, c0, c1, k0, k1, s0, s1, payload @ ..] = data else {
        return;
    };
    let cap = usize::from(u16::from_le_bytes([*c0, *c1]));
    let cut = usize::from(u16::from_le_bytes([*k0, *k1]));
    let seed = u32::from(u16::from_le_bytes([*s0, *s1])) | 1;

    // 1. The payload itself as a body under some coding.
    let as_is = CODINGS[usize::from(*flags) % CODINGS.len()];
    let d = decode_content(Some(as_is), payload, flags & 0x80 == 0, cap);
    assert!(d.data.len() <= cap, "{} > cap {cap}", d.data.len());
    if d.decode_error.is_some() {
        assert_eq!(d.data, payload[..payload.len().min(cap)]);
    }

    // 2. Round trip through an independent encoder.
    let (name, wire) = encode(*coding, payload);
    let d = decode_content(Some(name), &wire, true, cap);
    assert_eq!(d.decode_error, None, "{name}: {d:?}");
    let keep = payload.len().min(cap);
    if name.contains(',') {
        // Stacked codings: every layer is cut at the cap, so the inner (still compressed)
        // layer may be cut too and yield less than the cap (even when the content is within
        // it): then flagged, and a prefix (finding 4).
        assert!(d.truncated || payload.len() <= cap, "{name}: {d:?}");
        assert!(d.truncated || d.data == payload, "{name}: {d:?}");
        assert!(
            d.data.len() <= keep && d.data == payload[..d.data.len()],
            "{name}: {d:?}"
        );
    } else {
        assert_eq!(d.data, payload[..keep], "{name}: {d:?}");
        assert_eq!(d.truncated, payload.len() > cap, "{name}: {d:?}");
    }
    if !payload.is_empty() {
        assert_eq!(d.decoded_from.as_deref(), Some(name));
    }
    let short = &wire[..cut % (wire.len() + 1)];
    let d = decode_content(Some(name), short, false, cap);
    assert!(d.truncated, "{name}: cut short but not marked truncated");
    if d.decode_error.is_none() {
        assert!(
            d.data.len() <= keep && d.data == payload[..d.data.len()],
            "{name}: {d:?}"
        );
    }

    // 3. The same body, chunked, through the HTTP/1 decoder, in pieces.
    let limits = Http1Limits {
        max_body_bytes: cap.max(1),
        ..Http1Limits::default()
    };
    let mut conn = Http1Conn::new(limits);
    let mut out = Vec::new();
    conn.on_data(
        Side::Request,
        b"GET /b HTTP/1.1\r\nHost: f\r\n\r\n",
        1,
        &mut out,
    );
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: {name}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    response.extend_from_slice(&chunked(&wire, seed));
    let step = usize::from(flags & 0x3f) + 1;
    for piece in response.chunks(step) {
        conn.on_data(Side::Response, piece, 2, &mut out);
    }
    let exchanges: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Http1Output::Exchange(ex) => Some(ex),
            _ => None,
        })
        .collect();
    assert_eq!(exchanges.len(), 1, "{out:?}");
    let body = &exchanges[0].response.as_ref().expect("a response").body;
    let keep = payload.len().min(cap.max(1));
    assert_eq!(body.decode_error, None, "{name}: {body:?}");
    assert_eq!(body.wire_size, wire.len() as u64);
    if name.contains(',') {
        // Stacked codings: see finding 4 above.
        assert!(body.truncated || body.data == payload, "{name}: {body:?}");
        assert!(body.data == payload[..body.data.len()], "{name}: {body:?}");
    } else if wire.len() <= cap.max(1) {
        assert_eq!(body.data, payload[..keep], "{name}: {body:?}");
    } else {
        assert!(body.truncated);
        assert!(body.data == payload[..body.data.len()], "{name}: {body:?}");
    }
});
