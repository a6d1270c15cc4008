//! The daemon's user-space cost per exchange, without a kernel, a network or another process on
//! the machine: recorded ring-buffer records replayed through the same code the main loop runs
//! on them ([`Pipeline::process`]: record parsing, the connection table, the HTTP/1 decoder,
//! the memory budget, routing keys, redaction, HAR rendering and the JSONL sink).
//!
//! The traffic is that of `cargo xtask bench`'s workloads as the socket hooks see them on
//! nginx's side: 16 keep-alive connections opened by accept (both ends named by the kernel),
//! the connections taking turns, records handed over in batches of 256 as the main loop drains
//! them.
//! - `http1`: each request (`GET /` as wrk sends it) one ingress record, each response
//!   (nginx's head and a 1 KiB body, written together) one egress record.
//! - `http2`: h2c with prior knowledge, as h2load sends it: the preface and SETTINGS, then
//!   each request one HEADERS frame (HPACK with incremental indexing) in one ingress record,
//!   each response a HEADERS and a 1 KiB DATA frame in one egress record.
//!
//! `cargo xtask bench` measures the same thing from the daemon's CPU time while nginx runs, so
//! its figure moves with everything else on the machine (±20 % here); this one replays the same
//! records every run, so a change of a few percent in the daemon's own code shows.
//!
//! Prints `pipeline_<protocol>_<sink>_ns_per_exchange <float>` (this thread's CPU time, best of
//! 7 rounds of 20,000 exchanges) and `..._allocations_per_exchange` (counted in a warm-up round)
//! for two sinks: `devnull` (`--output /dev/null`: the daemon's
//! own work) and `file` (a file in the temporary directory: plus the kernel's page-cache
//! writes). Run with `cargo bench -p capture-daemon --bench pipeline`; arguments (`http2`,
//! `devnull`, ...) keep only the runs whose protocol or sink they name, for a profile.
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failed unwrap is a failed run"
)]

use std::{
    alloc::{GlobalAlloc, Layout},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// The daemon's allocator, so allocation costs are the daemon's, counting allocations while
/// [`COUNTING`] is set (the warm-up round): in the daemon each one is likely a cache miss, as
/// its memory goes cold between drains, so their number matters more than the replay's time
/// shows.
#[global_allocator]
static ALLOCATOR: Counting = Counting(mimalloc::MiMalloc);

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting(mimalloc::MiMalloc);

impl Counting {
    fn count() {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call is forwarded to mimalloc unchanged; counting touches no memory it hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        // SAFETY: as above.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

use capture_common::{EventHeader, direction, flags, kind};
use capture_daemon::{
    config::Config, conn::metrics::Metrics, kernel::intake, output::JsonlSink, pipeline::Pipeline,
};
use capture_http::http2::{
    frame::{DATA, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, PREFACE, SETTINGS, write_frame},
    hpack::{Encoder, Indexing},
};

const CONNECTIONS: u32 = 16;
const EXCHANGES: usize = 20_000;
const BATCH: usize = 256;
const ROUNDS: usize = 7;
const TGID: u32 = 4242;
const CGROUP: u64 = 7777;

/// `capture_common::SockAddr` for an IPv4 address: family, port (network order), listen fd,
/// address.
fn sockaddr(ip: [u8; 4], port: u16, listen_fd: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(24);
    b.extend_from_slice(&2u16.to_ne_bytes());
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&listen_fd.to_ne_bytes());
    b.extend_from_slice(&ip);
    b.extend_from_slice(&[0; 12]);
    b
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::Http2 => "http2",
        }
    }
}

/// One connection's two directions as the workload writes them.
trait Peer {
    /// Bytes the client sends first (HTTP/2's preface and SETTINGS).
    fn client_start(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn server_start(&mut self) -> Vec<u8> {
        Vec::new()
    }
    fn request(&mut self, stream: u32) -> Vec<u8>;
    fn response(&mut self, stream: u32) -> Vec<u8>;
}

fn body() -> String {
    "0123456789abcdef".repeat(64)
}

const DATE: &str = "Mon, 07 Dec 2026 22:10:00 GMT";

struct Http1;

impl Peer for Http1 {
    fn request(&mut self, _: u32) -> Vec<u8> {
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n".to_vec()
    }

    fn response(&mut self, _: u32) -> Vec<u8> {
        let body = body();
        format!(
            "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: {DATE}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

#[derive(Default)]
struct Http2 {
    client: Encoder,
    server: Encoder,
}

impl Http2 {
    fn headers(
        enc: &mut Encoder,
        stream: u32,
        fields: &[(&str, &str)],
        end: bool,
        out: &mut Vec<u8>,
    ) {
        let mut block = Vec::new();
        for (name, value) in fields {
            enc.field(
                name.as_bytes(),
                value.as_bytes(),
                Indexing::Incremental,
                &mut block,
            );
        }
        let flags = FLAG_END_HEADERS | if end { FLAG_END_STREAM } else { 0 };
        write_frame(out, HEADERS, flags, stream, &block);
    }
}

impl Peer for Http2 {
    fn client_start(&mut self) -> Vec<u8> {
        self.client.huffman = true;
        let mut out = PREFACE.to_vec();
        write_frame(&mut out, SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
        out
    }

    fn server_start(&mut self) -> Vec<u8> {
        self.server.huffman = true;
        let mut out = Vec::new();
        write_frame(&mut out, SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 128]);
        out
    }

    fn request(&mut self, stream: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let fields = [
            (":method", "GET"),
            (":path", "/"),
            (":scheme", "http"),
            (":authority", "127.0.0.1:18081"),
            ("user-agent", "h2load nghttp2/1.52.0"),
        ];
        Self::headers(&mut self.client, stream, &fields, true, &mut out);
        out
    }

    fn response(&mut self, stream: u32) -> Vec<u8> {
        let body = body();
        let length = body.len().to_string();
        let fields = [
            (":status", "200"),
            ("server", "nginx/1.22.1"),
            ("date", DATE),
            ("content-type", "text/plain"),
            ("content-length", length.as_str()),
        ];
        let mut out = Vec::new();
        Self::headers(&mut self.server, stream, &fields, false, &mut out);
        write_frame(&mut out, DATA, FLAG_END_STREAM, stream, body.as_bytes());
        out
    }
}

/// The records of one run, in ring order.
fn records(protocol: Protocol) -> Vec<Vec<u8>> {
    let mut ts = 1_000_000_000u64;
    let mut tick = || {
        ts += 1_000;
        ts
    };
    let header = |kind, dir, fd, ts_ns| EventHeader {
        kind,
        direction: dir,
        fd,
        tgid: TGID,
        tid: TGID,
        generation: 1,
        ts_ns,
        cgroup_id: CGROUP,
        ..EventHeader::default()
    };
    let mut peers: Vec<Box<dyn Peer>> = (0..CONNECTIONS)
        .map(|_| -> Box<dyn Peer> {
            match protocol {
                Protocol::Http1 => Box::new(Http1),
                Protocol::Http2 => Box::new(Http2::default()),
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut pos = vec![[0u64; 2]; CONNECTIONS as usize];
    let mut data = |out: &mut Vec<Vec<u8>>, c: u32, dir: u8, bytes: &[u8], ts_ns: u64| {
        if bytes.is_empty() {
            return;
        }
        let at = &mut pos[c as usize][usize::from(dir)];
        let h = EventHeader {
            pos: *at,
            len: bytes.len() as u32,
            cap_len: bytes.len() as u32,
            ..header(kind::DATA, dir, 10 + c, ts_ns)
        };
        *at += bytes.len() as u64;
        out.push(intake::encode(&h, bytes));
    };
    for c in 0..CONNECTIONS {
        let fd = 10 + c;
        let mut payload = sockaddr([127, 0, 0, 1], 40_000 + c as u16, 6);
        payload.extend(sockaddr([127, 0, 0, 1], 18080, 6));
        let h = EventHeader {
            flags: flags::ROLE_SERVER | flags::ENDPOINTS,
            len: payload.len() as u32,
            cap_len: payload.len() as u32,
            ..header(kind::OPEN, direction::INGRESS, fd, tick())
        };
        out.push(intake::encode(&h, &payload));
        let peer = &mut peers[c as usize];
        let (client, server) = (peer.client_start(), peer.server_start());
        data(&mut out, c, direction::INGRESS, &client, tick());
        data(&mut out, c, direction::EGRESS, &server, tick());
    }
    for i in 0..EXCHANGES {
        let c = i as u32 % CONNECTIONS;
        let stream = 1 + 2 * (i as u32 / CONNECTIONS);
        let peer = &mut peers[c as usize];
        let (request, response) = (peer.request(stream), peer.response(stream));
        data(&mut out, c, direction::INGRESS, &request, tick());
        data(&mut out, c, direction::EGRESS, &response, tick());
    }
    for c in 0..CONNECTIONS {
        out.push(intake::encode(
            &header(kind::CLOSE, direction::INGRESS, 10 + c, tick()),
            &[],
        ));
    }
    out
}

/// CPU seconds this thread has run (user and system).
fn thread_cpu_s() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(f64::NAN, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}

/// Best CPU time of the rounds in ns per exchange, and allocations (and reallocations) per
/// exchange in the warm-up round, writing to `output`.
fn measure(protocol: Protocol, records: &[Vec<u8>], output: &str) -> (f64, f64) {
    let cfg =
        Config::from_args(["capture-daemon", "--target-pid", "4242", "--output", output]).unwrap();
    let mut best = f64::INFINITY;
    let mut allocations = 0;
    for round in 0..=ROUNDS {
        if output != "/dev/null" {
            let _ = std::fs::remove_file(output);
        }
        let metrics = Arc::new(Metrics::default());
        let sink = JsonlSink::open(output).unwrap();
        let mut pipeline = Pipeline::new(&cfg, sink, Arc::clone(&metrics));
        COUNTING.store(round == 0, Ordering::Relaxed);
        let (start, counted) = (thread_cpu_s(), ALLOCATIONS.load(Ordering::Relaxed));
        for batch in records.chunks(BATCH) {
            pipeline.process(batch.iter().map(Vec::as_slice));
        }
        pipeline.finish();
        let secs = thread_cpu_s() - start;
        if round == 0 {
            COUNTING.store(false, Ordering::Relaxed);
            allocations = ALLOCATIONS.load(Ordering::Relaxed) - counted;
        }
        let exchanges = match protocol {
            Protocol::Http1 => &metrics.exchanges_h1,
            Protocol::Http2 => &metrics.exchanges_h2,
        }
        .load(Ordering::Relaxed);
        let written = metrics.output_errors.load(Ordering::Relaxed);
        assert_eq!(exchanges, EXCHANGES as u64, "exchanges decoded");
        assert_eq!(written, 0, "output errors");
        if round > 0 {
            best = best.min(secs);
        }
    }
    if output != "/dev/null" {
        let lines = std::fs::read_to_string(output).unwrap().lines().count();
        assert_eq!(lines, EXCHANGES, "lines written");
        std::fs::remove_file(output).unwrap();
    }
    (
        best * 1e9 / EXCHANGES as f64,
        allocations as f64 / EXCHANGES as f64,
    )
}

fn main() {
    // Arguments keep only the runs they name: `http2`, `devnull`, `http1 file`, ...
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let named = |choices: &[&str], this: &str| {
        let given: Vec<&String> = args
            .iter()
            .filter(|a| choices.contains(&a.as_str()))
            .collect();
        given.is_empty() || given.iter().any(|a| *a == this)
    };
    let file = std::env::temp_dir().join(format!(
        "capture-pipeline-bench-{}.jsonl",
        std::process::id()
    ));
    let sinks = [("devnull", "/dev/null"), ("file", file.to_str().unwrap())];
    for protocol in [Protocol::Http1, Protocol::Http2] {
        if !named(&["http1", "http2"], protocol.name()) {
            continue;
        }
        let records = records(protocol);
        let bytes: usize = records.iter().map(Vec::len).sum();
        println!(
            "# {}: {EXCHANGES} exchanges on {CONNECTIONS} connections, {} records, {bytes} bytes, \
             best of {ROUNDS} rounds",
            protocol.name(),
            records.len()
        );
        for (sink, output) in sinks {
            if named(&["devnull", "file"], sink) {
                let (ns, allocations) = measure(protocol, &records, output);
                let name = protocol.name();
                println!("pipeline_{name}_{sink}_ns_per_exchange {ns:.0}");
                println!("pipeline_{name}_{sink}_allocations_per_exchange {allocations:.1}");
            }
        }
    }
}
