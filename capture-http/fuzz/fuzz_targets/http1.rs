//! Fuzzes the HTTP/1 decoder with a request stream and a response stream, cut at
//! fuzzer-chosen points, with fuzzer-chosen gaps, flushes and small or default limits. It
//! must never panic, and must hold no more than its limits allow.
//!
//! Input layout: `flags`, `n` (split count), `n` little-endian u16 split points, a u16 length
//! of the request stream, the request stream, then the response stream.
#![no_main]

use capture_http::http1::{Http1Conn, Http1Limits, Side};
use libfuzzer_sys::fuzz_target;

struct Input<'a> {
    flags: u8,
    splits: Vec<u16>,
    request: &'a [u8],
    response: &'a [u8],
}

fn parse(data: &[u8]) -> Option<Input<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (&n, mut rest) = rest.split_first()?;
    let mut splits = Vec::new();
    for _ in 0..(n % 32) {
        let (p, r) = rest.split_first_chunk::<2>()?;
        splits.push(u16::from_le_bytes(*p));
        rest = r;
    }
    let (len, rest) = rest.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (request, response) = rest.split_at(len);
    Some(Input {
        flags,
        splits,
        request,
        response,
    })
}

/// Cuts `stream` into pieces at `splits` (taken modulo its length).
fn pieces<'a>(stream: &'a [u8], splits: &[u16]) -> Vec<&'a [u8]> {
    if stream.is_empty() {
        return Vec::new();
    }
    let mut cuts: Vec<usize> = splits
        .iter()
        .map(|&s| usize::from(s) % stream.len())
        .filter(|&c| c > 0)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for to in cuts.into_iter().chain([stream.len()]) {
        out.push(&stream[from..to]);
        from = to;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = parse(data) else { return };
    let small = input.flags & 1 != 0;
    let limits = if small {
        Http1Limits {
            max_body_bytes: 512,
            max_header_bytes: 256,
            max_pipelined: 4,
            max_header_fields: 8,
        }
    } else {
        Http1Limits::default()
    };
    // Everything the decoder may hold at once: queued requests (head, captured body, and a
    // finished response each), the response being read, the side buffers and an upgrade's
    // leftover bytes.
    let bound = limits.max_pipelined * 2 * (limits.max_header_bytes + limits.max_body_bytes)
        + 2 * limits.max_body_bytes
        + 8 * limits.max_header_bytes
        + 4096;
    let mut conn = Http1Conn::new(limits);
    let mut out = Vec::new();
    let requests = pieces(input.request, &input.splits);
    let responses = pieces(input.response, &input.splits);
    let gaps = input.flags & 2 != 0;
    let flushes = input.flags & 4 != 0;
    let responses_first = input.flags & 8 != 0;
    for i in 0..requests.len().max(responses.len()) {
        let ts = i as u64;
        let mut order = [
            (Side::Request, requests.get(i)),
            (Side::Response, responses.get(i)),
        ];
        if responses_first {
            order.swap(0, 1);
        }
        for (side, piece) in order {
            let Some(piece) = piece else { continue };
            // With gaps on, a piece whose first byte is odd is "lost" in part: its first
            // half is delivered, the rest reported as a gap.
            if gaps && piece.first().is_some_and(|b| b % 2 == 1) {
                let keep = piece.len() / 2;
                conn.on_data(side, &piece[..keep], ts, &mut out);
                conn.on_gap(side, (piece.len() - keep) as u64, ts, &mut out);
            } else {
                conn.on_data(side, piece, ts, &mut out);
            }
            assert!(
                conn.buffered_bytes() <= bound,
                "{} > {bound}",
                conn.buffered_bytes()
            );
        }
        if flushes && i % 3 == 2 {
            conn.flush(&mut out);
        }
        out.clear();
    }
    let upgraded = conn.is_upgraded();
    conn.on_close(u64::MAX, &mut out);
    if !upgraded {
        assert_eq!(conn.buffered_bytes(), 0);
    }
});
