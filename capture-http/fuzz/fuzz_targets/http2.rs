//! Fuzzes the HTTP/2 decoder (frames, HPACK, streams, gRPC) with a client stream and a server
//! stream, cut at fuzzer-chosen points, with fuzzer-chosen gaps, flushes, small or default
//! limits, and a start from the preface or mid-way. It must never panic, and must hold no
//! more than its limits allow.
//!
//! Input layout: `flags`, `n` (split count), `n` little-endian u16 split points, a u16 length
//! of the client stream, the client stream, then the server stream. With flag 16 the client
//! stream is prefixed with the connection preface (so the fuzzer need not find it). With flag
//! 64 the connection is joined mid-way with its sides unknown: an `Undecided` holds the bytes
//! (at most 4 KiB) until the frames tell which end is the client, then decodes them.
#![no_main]

use capture_http::http1::Side;
use capture_http::http2::{Http2Conn, Http2Limits, Undecided, frame::PREFACE};
use libfuzzer_sys::fuzz_target;

struct Input<'a> {
    flags: u8,
    splits: Vec<u16>,
    client: &'a [u8],
    server: &'a [u8],
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
    let (client, server) = rest.split_at(len);
    Some(Input {
        flags,
        splits,
        client,
        server,
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
    let limits = if input.flags & 1 != 0 {
        Http2Limits {
            max_body_bytes: 512,
            max_header_list_bytes: 512,
            max_streams: 4,
            max_hpack_table_bytes: 256,
            max_conn_body_bytes: 1024,
        }
    } else {
        Http2Limits::default()
    };
    // Everything the decoder may hold at once: the connection's body budget; per side a
    // control frame being collected (64 KiB), a header block and an HPACK table; per open
    // stream two header and two trailer lists, each cut at the header list limit.
    let bound = limits.max_conn_body_bytes
        + 2 * (64 * 1024 + limits.max_header_list_bytes + limits.max_hpack_table_bytes)
        + limits.max_streams * 4 * limits.max_header_list_bytes;
    let undecided = input.flags & 64 != 0;
    let mut held = undecided.then(|| Undecided::new(limits.clone()));
    let mut conn = if input.flags & 2 != 0 {
        Http2Conn::mid_stream(limits, Side::Request)
    } else {
        Http2Conn::new(limits)
    };
    let mut client = Vec::new();
    if input.flags & 16 != 0 {
        client.extend_from_slice(PREFACE);
    }
    client.extend_from_slice(input.client);
    let mut out = Vec::new();
    let requests = pieces(&client, &input.splits);
    let responses = pieces(input.server, &input.splits);
    let gaps = input.flags & 4 != 0;
    let flushes = input.flags & 8 != 0;
    let server_first = input.flags & 32 != 0;
    for i in 0..requests.len().max(responses.len()) {
        let ts = i as u64;
        let mut order = [
            (Side::Request, requests.get(i)),
            (Side::Response, responses.get(i)),
        ];
        if server_first {
            order.swap(0, 1);
        }
        for (side, piece) in order {
            let Some(piece) = piece else { continue };
            // With gaps on, a piece whose first byte is odd is "lost" in part.
            let keep = if gaps && piece.first().is_some_and(|b| b % 2 == 1) {
                piece.len() / 2
            } else {
                piece.len()
            };
            let lost = (piece.len() - keep) as u64;
            if let Some(u) = &mut held {
                // Which direction `Undecided` takes as in frame sync is the fuzzer's choice.
                let first = (side == Side::Request) != server_first;
                u.on_data(first, &piece[..keep], lost, ts, 4096);
                match u.first_sender() {
                    None => assert!(u.held_bytes() <= 4096, "{} held", u.held_bytes()),
                    Some(sender) => {
                        if let Some(u) = held.take() {
                            conn = u.decode(sender, &mut out);
                        }
                    }
                }
                continue;
            }
            conn.on_data(side, &piece[..keep], ts, &mut out);
            if lost > 0 {
                conn.on_gap(side, lost, ts, &mut out);
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
    conn.on_close(u64::MAX, &mut out);
    assert_eq!(conn.open_streams(), 0);
});
