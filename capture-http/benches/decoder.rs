//! Throughput of the HTTP/1 decoder on a realistic keep-alive connection: 10 000 request /
//! response pairs (GETs and 1 KiB POSTs; 1 KiB responses, every fourth one chunked), fed in
//! pieces of at most 16 KiB the way the connection layer hands over captured reads.
//!
//! Prints machine-readable lines (parsed by `cargo xtask bench`):
//! `http1_decoder_mb_per_s <float>` (wire bytes of both directions, 10^6 bytes per second)
//! and `http1_decoder_exchanges_per_s <float>`, from wall-clock time; and the same from this
//! thread's CPU time (`http1_decoder_cpu_mb_per_s`, `http1_decoder_cpu_exchanges_per_s`),
//! which other processes on a busy machine disturb far less.
//!
//! Run with `cargo bench -p capture-http --bench decoder`.

/// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::hint::black_box;
use std::time::Instant;

use capture_http::http1::{Http1Conn, Http1Limits, Http1Output, Side};

const EXCHANGES: usize = 10_000;
/// Exchanges whose requests are sent before their responses are read: a short pipeline, so
/// pieces can reach 16 KiB without more than a few dozen requests waiting.
const GROUP: usize = 12;
const PIECE: usize = 16 * 1024;
const ROUNDS: usize = 5;

fn body(i: usize, len: usize) -> Vec<u8> {
    let mut b = format!("{{\"id\":{i},\"items\":[").into_bytes();
    let mut k = 0;
    while b.len() + 40 < len {
        b.extend_from_slice(format!("{{\"n\":{k},\"name\":\"item-{k:05}\"}},").as_bytes());
        k += 1;
    }
    b.resize(len - 2, b' ');
    b.extend_from_slice(b"]}");
    b
}

fn request(i: usize) -> Vec<u8> {
    let common = "Host: api.example.test\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\n\
                  Accept-Encoding: gzip, br\r\nX-Request-Id: 6f1c0d2e-8b1f-4a47-9c2d-5e3b7f9a0c11\r\n";
    if i.is_multiple_of(3) {
        let b = body(i, 1024);
        let mut r = format!(
            "POST /v1/orders/{i} HTTP/1.1\r\n{common}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            b.len()
        )
        .into_bytes();
        r.extend_from_slice(&b);
        r
    } else {
        format!("GET /v1/orders/{i}?expand=items&page=2 HTTP/1.1\r\n{common}\r\n").into_bytes()
    }
}

fn response(i: usize) -> Vec<u8> {
    let common = "Date: Mon, 23 Nov 2026 19:28:21 GMT\r\nServer: bench\r\nContent-Type: application/json\r\n\
                  Cache-Control: no-store\r\n";
    let b = body(i, 1024);
    if i.is_multiple_of(4) {
        let mut r =
            format!("HTTP/1.1 200 OK\r\n{common}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
        for c in b.chunks(256) {
            r.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            r.extend_from_slice(c);
            r.extend_from_slice(b"\r\n");
        }
        r.extend_from_slice(b"0\r\n\r\n");
        r
    } else {
        let mut r = format!(
            "HTTP/1.1 200 OK\r\n{common}Content-Length: {}\r\n\r\n",
            b.len()
        )
        .into_bytes();
        r.extend_from_slice(&b);
        r
    }
}

/// The connection as a list of (side, piece) in capture order.
fn connection() -> Vec<(Side, Vec<u8>)> {
    let mut pieces = Vec::new();
    for first in (0..EXCHANGES).step_by(GROUP) {
        let ids = first..(first + GROUP).min(EXCHANGES);
        let requests: Vec<u8> = ids.clone().flat_map(request).collect();
        let responses: Vec<u8> = ids.flat_map(response).collect();
        pieces.extend(requests.chunks(PIECE).map(|c| (Side::Request, c.to_vec())));
        pieces.extend(
            responses
                .chunks(PIECE)
                .map(|c| (Side::Response, c.to_vec())),
        );
    }
    pieces
}

fn main() {
    let pieces = connection();
    let bytes: usize = pieces.iter().map(|(_, p)| p.len()).sum();
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    // One warm-up round, then the best of ROUNDS (least disturbed by the machine).
    for round in 0..=ROUNDS {
        let start = Instant::now();
        let cpu_start = support::thread_cpu_s();
        let mut conn = Http1Conn::new(Http1Limits::default());
        let mut exchanges = 0usize;
        for (ts, (side, piece)) in pieces.iter().enumerate() {
            conn.on_data(*side, piece, ts as u64, &mut out);
            for o in out.drain(..) {
                match o {
                    Http1Output::Exchange(ex) => {
                        exchanges += 1;
                        black_box(ex);
                    }
                    other => {
                        eprintln!("unexpected decoder output: {other:?}");
                        std::process::exit(1);
                    }
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu_secs = support::thread_cpu_s() - cpu_start;
        if exchanges != EXCHANGES {
            eprintln!("decoded {exchanges} exchanges, expected {EXCHANGES}");
            std::process::exit(1);
        }
        if round > 0 {
            best = best.min(secs);
            best_cpu = best_cpu.min(cpu_secs);
        }
    }
    println!(
        "# {EXCHANGES} exchanges, {bytes} bytes, {} pieces, best of {ROUNDS} rounds",
        pieces.len()
    );
    println!("http1_decoder_mb_per_s {:.1}", bytes as f64 / 1e6 / best);
    println!(
        "http1_decoder_exchanges_per_s {:.0}",
        EXCHANGES as f64 / best
    );
    println!(
        "http1_decoder_cpu_mb_per_s {:.1}",
        bytes as f64 / 1e6 / best_cpu
    );
    println!(
        "http1_decoder_cpu_exchanges_per_s {:.0}",
        EXCHANGES as f64 / best_cpu
    );
}
