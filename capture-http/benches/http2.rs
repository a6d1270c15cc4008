//! Throughput of the HTTP/2 decoder (frames, HPACK, streams, gRPC) on two realistic
//! connections, fed in pieces of at most 16 KiB the way the connection layer hands over
//! captured reads:
//! - `http2`: 10 000 GET/POST exchanges, 12 streams in flight at a time, browser-like
//!   headers (HPACK with incremental indexing and Huffman coding, as clients send them),
//!   1 KiB JSON responses in two DATA frames each;
//! - `grpc`: 10 000 unary gRPC calls, 12 in flight, 512-byte request and 1 KiB response
//!   messages, `grpc-status` trailers.
//!
//! Prints machine-readable lines: `<name>_decoder_mb_per_s <float>` (wire bytes of both
//! directions, 10^6 bytes per second) and `<name>_decoder_exchanges_per_s <float>` from
//! wall-clock time, and `<name>_decoder_cpu_exchanges_per_s <float>` from this thread's CPU
//! time.
//!
//! Run with `cargo bench -p capture-http --bench http2`.

/// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::hint::black_box;
use std::time::Instant;

use capture_http::http1::Side;
use capture_http::http2::frame::{
    DATA, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, PREFACE, SETTINGS, write_frame,
};
use capture_http::http2::hpack::{Encoder, Indexing};
use capture_http::http2::{Http2Conn, Http2Limits, Http2Output};

const EXCHANGES: usize = 10_000;
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

fn headers(enc: &mut Encoder, fields: &[(&str, &str)], out: &mut Vec<u8>) {
    for (n, v) in fields {
        enc.field(n.as_bytes(), v.as_bytes(), Indexing::Incremental, out);
    }
}

struct Conn {
    client: Vec<u8>,
    server: Vec<u8>,
    client_enc: Encoder,
    server_enc: Encoder,
    pieces: Vec<(Side, Vec<u8>)>,
}

impl Conn {
    fn new() -> Self {
        let mut c = Self {
            client: PREFACE.to_vec(),
            server: Vec::new(),
            client_enc: Encoder::new(),
            server_enc: Encoder::new(),
            pieces: Vec::new(),
        };
        c.client_enc.huffman = true;
        c.server_enc.huffman = true;
        write_frame(&mut c.client, SETTINGS, 0, 0, &[0, 4, 0, 0x60, 0, 0]);
        write_frame(&mut c.server, SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        c
    }

    fn block(&mut self, side: Side, stream: u32, fields: &[(&str, &str)], end: bool) {
        let (enc, out) = match side {
            Side::Request => (&mut self.client_enc, &mut self.client),
            Side::Response => (&mut self.server_enc, &mut self.server),
        };
        let mut b = Vec::new();
        headers(enc, fields, &mut b);
        let flags = FLAG_END_HEADERS | if end { FLAG_END_STREAM } else { 0 };
        write_frame(out, HEADERS, flags, stream, &b);
    }

    fn data(&mut self, side: Side, stream: u32, data: &[u8], end: bool) {
        let out = match side {
            Side::Request => &mut self.client,
            Side::Response => &mut self.server,
        };
        let flags = if end { FLAG_END_STREAM } else { 0 };
        write_frame(out, DATA, flags, stream, data);
    }

    /// Cuts what was written so far into pieces: the client's first, then the server's.
    fn flush(&mut self) {
        for (side, buf) in [
            (Side::Request, std::mem::take(&mut self.client)),
            (Side::Response, std::mem::take(&mut self.server)),
        ] {
            self.pieces
                .extend(buf.chunks(PIECE).map(|c| (side, c.to_vec())));
        }
    }
}

fn http2_connection() -> Vec<(Side, Vec<u8>)> {
    let mut c = Conn::new();
    for first in (0..EXCHANGES).step_by(GROUP) {
        let ids = first..(first + GROUP).min(EXCHANGES);
        for i in ids.clone() {
            let stream = 1 + 2 * i as u32;
            let path = format!("/v1/orders/{i}?expand=items&page=2");
            let mut fields = vec![
                (":method", if i % 3 == 0 { "POST" } else { "GET" }),
                (":scheme", "https"),
                (":authority", "api.example.test"),
                (":path", path.as_str()),
                ("user-agent", "bench/1.0 (x86_64-unknown-linux-gnu)"),
                ("accept", "application/json"),
                ("accept-encoding", "gzip, br"),
                ("x-request-id", "6f1c0d2e-8b1f-4a47-9c2d-5e3b7f9a0c11"),
            ];
            if i % 3 == 0 {
                fields.push(("content-type", "application/json"));
                c.block(Side::Request, stream, &fields, false);
                c.data(Side::Request, stream, &body(i, 1024), true);
            } else {
                c.block(Side::Request, stream, &fields, true);
            }
        }
        for i in ids {
            let stream = 1 + 2 * i as u32;
            c.block(
                Side::Response,
                stream,
                &[
                    (":status", "200"),
                    ("date", "Mon, 23 Nov 2026 19:28:21 GMT"),
                    ("server", "bench"),
                    ("content-type", "application/json"),
                    ("cache-control", "no-store"),
                ],
                false,
            );
            let b = body(i, 1024);
            c.data(Side::Response, stream, &b[..512], false);
            c.data(Side::Response, stream, &b[512..], true);
        }
        c.flush();
    }
    c.pieces
}

fn grpc_message(i: usize, len: usize) -> Vec<u8> {
    let payload = body(i, len);
    let mut m = vec![0];
    m.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
    m.extend_from_slice(&payload);
    m
}

fn grpc_connection() -> Vec<(Side, Vec<u8>)> {
    let mut c = Conn::new();
    for first in (0..EXCHANGES).step_by(GROUP) {
        let ids = first..(first + GROUP).min(EXCHANGES);
        for i in ids.clone() {
            let stream = 1 + 2 * i as u32;
            c.block(
                Side::Request,
                stream,
                &[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/shop.v1.Orders/GetOrder"),
                    (":authority", "orders.shop.svc:50051"),
                    ("content-type", "application/grpc"),
                    ("user-agent", "grpc-rust/0.12"),
                    ("te", "trailers"),
                    ("grpc-timeout", "5S"),
                ],
                false,
            );
            c.data(Side::Request, stream, &grpc_message(i, 512), true);
        }
        for i in ids {
            let stream = 1 + 2 * i as u32;
            c.block(
                Side::Response,
                stream,
                &[(":status", "200"), ("content-type", "application/grpc")],
                false,
            );
            c.data(Side::Response, stream, &grpc_message(i, 1024), false);
            c.block(
                Side::Response,
                stream,
                &[("grpc-status", "0"), ("grpc-message", "")],
                true,
            );
        }
        c.flush();
    }
    c.pieces
}

fn measure(name: &str, pieces: &[(Side, Vec<u8>)]) {
    let bytes: usize = pieces.iter().map(|(_, p)| p.len()).sum();
    let mut out = Vec::new();
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    // One warm-up round, then the best of ROUNDS (least disturbed by the machine).
    for round in 0..=ROUNDS {
        let start = Instant::now();
        let cpu_start = support::thread_cpu_s();
        let mut conn = Http2Conn::new(Http2Limits::default());
        let mut exchanges = 0usize;
        for (ts, (side, piece)) in pieces.iter().enumerate() {
            conn.on_data(*side, piece, ts as u64, &mut out);
            for o in out.drain(..) {
                match o {
                    Http2Output::Exchange(ex) if ex.incomplete.is_none() => {
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
            eprintln!("{name}: decoded {exchanges} exchanges, expected {EXCHANGES}");
            std::process::exit(1);
        }
        if round > 0 {
            best = best.min(secs);
            best_cpu = best_cpu.min(cpu_secs);
        }
    }
    println!(
        "# {name}: {EXCHANGES} exchanges, {bytes} bytes, {} pieces, best of {ROUNDS} rounds",
        pieces.len()
    );
    println!("{name}_decoder_mb_per_s {:.1}", bytes as f64 / 1e6 / best);
    println!(
        "{name}_decoder_exchanges_per_s {:.0}",
        EXCHANGES as f64 / best
    );
    println!(
        "{name}_decoder_cpu_exchanges_per_s {:.0}",
        EXCHANGES as f64 / best_cpu
    );
}

fn main() {
    measure("http2", &http2_connection());
    measure("grpc", &grpc_connection());
}
