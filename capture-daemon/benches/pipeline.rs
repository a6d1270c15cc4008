//! The daemon's user-space cost per exchange, without a kernel, a network or another process on
//! the machine: recorded ring-buffer records replayed through the same code the main loop runs
//! on them ([`Pipeline::process`]: record parsing, the connection table, the HTTP/1 decoder,
//! the memory budget, routing keys, redaction, HAR rendering and the JSONL sink).
//!
//! The traffic is that of `cargo xtask bench`'s HTTP/1 workload as the socket hooks see it on
//! nginx's side: 16 keep-alive connections opened by accept (both ends named by the kernel),
//! each request (`GET /` as wrk sends it) one ingress record, each response (nginx's head and a
//! 1 KiB body, written together) one egress record, the connections taking turns. Records are
//! handed over in batches of 256, as the main loop drains them.
//!
//! `cargo xtask bench` measures the same thing from the daemon's CPU time while nginx runs, so
//! its figure moves with everything else on the machine (±20 % here); this one replays the same
//! records every run, so a change of a few percent in the daemon's own code shows.
//!
//! Prints `pipeline_<sink>_ns_per_exchange <float>` (this thread's CPU time, best of 7 rounds of
//! 20,000 exchanges) for two sinks: `devnull` (`--output /dev/null`: the daemon's own work) and
//! `file` (a file in the temporary directory: plus the kernel's page-cache writes).
//! Run with `cargo bench -p capture-daemon --bench pipeline` (`-- devnull` or `-- file` for one
//! sink only).
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failed unwrap is a failed run"
)]

/// The daemon's allocator, so allocation costs are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::{Arc, atomic::Ordering};

use capture_common::{EventHeader, direction, flags, kind};
use capture_daemon::{
    config::Config, conn::metrics::Metrics, kernel::intake, output::JsonlSink, pipeline::Pipeline,
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

/// The records of one run, in ring order.
fn records() -> Vec<Vec<u8>> {
    let body = "0123456789abcdef".repeat(64);
    let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
    let response = format!(
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 22:10:00 GMT\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
        body.len()
    );
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
    let mut out = Vec::new();
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
    }
    let mut pos = vec![[0u64; 2]; CONNECTIONS as usize];
    for i in 0..EXCHANGES {
        let c = i as u32 % CONNECTIONS;
        for (dir, bytes) in [
            (direction::INGRESS, request.as_bytes()),
            (direction::EGRESS, response.as_bytes()),
        ] {
            let at = &mut pos[c as usize][usize::from(dir)];
            let h = EventHeader {
                pos: *at,
                len: bytes.len() as u32,
                cap_len: bytes.len() as u32,
                ..header(kind::DATA, dir, 10 + c, tick())
            };
            *at += bytes.len() as u64;
            out.push(intake::encode(&h, bytes));
        }
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

/// Best CPU time of the rounds, in ns per exchange, writing to `output`.
fn measure(records: &[Vec<u8>], output: &str) -> f64 {
    let cfg =
        Config::from_args(["capture-daemon", "--target-pid", "4242", "--output", output]).unwrap();
    let mut best = f64::INFINITY;
    for round in 0..=ROUNDS {
        if output != "/dev/null" {
            let _ = std::fs::remove_file(output);
        }
        let metrics = Arc::new(Metrics::default());
        let sink = JsonlSink::open(output).unwrap();
        let mut pipeline = Pipeline::new(&cfg, sink, Arc::clone(&metrics));
        let start = thread_cpu_s();
        for batch in records.chunks(BATCH) {
            pipeline.process(batch.iter().map(Vec::as_slice));
        }
        pipeline.finish();
        let secs = thread_cpu_s() - start;
        let exchanges = metrics.exchanges_h1.load(Ordering::Relaxed);
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
    best * 1e9 / EXCHANGES as f64
}

fn main() {
    let records = records();
    let bytes: usize = records.iter().map(Vec::len).sum();
    println!(
        "# {EXCHANGES} HTTP/1 exchanges on {CONNECTIONS} connections, {} records, {bytes} bytes, \
         best of {ROUNDS} rounds",
        records.len()
    );
    let file = std::env::temp_dir().join(format!(
        "capture-pipeline-bench-{}.jsonl",
        std::process::id()
    ));
    // `-- devnull` or `-- file` runs one sink only (for a profile).
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, output) in [("devnull", "/dev/null"), ("file", file.to_str().unwrap())] {
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        println!(
            "pipeline_{name}_ns_per_exchange {:.0}",
            measure(&records, output)
        );
    }
}
