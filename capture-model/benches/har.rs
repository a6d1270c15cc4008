//! Cost of turning one exchange into its HAR line: a GET with 8 request headers answered by a
//! 1 KiB JSON body and 5 response headers, serialised `N` times into one reused buffer.
//!
//! Prints machine-readable lines: `har_entries_per_s <float>` and `har_ns_per_entry <float>`
//! from wall-clock time, and `har_cpu_entries_per_s`, `har_cpu_ns_per_entry` from this
//! thread's CPU time (which other processes on a busy machine disturb far less).
//!
//! Run with `cargo bench -p capture-model --bench har`.

/// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Instant;

use capture_model::{
    clock::WallClock,
    exchange::{
        Body, ConnMeta, Exchange, Header, Headers, HttpVersion, Protocol, Request, Response, Role,
        Timing, Workload,
    },
    har,
};

const N: usize = 200_000;
const ROUNDS: usize = 5;

/// A 1 KiB JSON document.
fn json_body(len: usize) -> Vec<u8> {
    let mut b = b"{\"id\":42,\"items\":[".to_vec();
    let mut k = 0;
    while b.len() + 40 < len {
        b.extend_from_slice(format!("{{\"n\":{k},\"name\":\"item-{k:05}\"}},").as_bytes());
        k += 1;
    }
    b.resize(len - 2, b' ');
    b.extend_from_slice(b"]}");
    b
}

fn exchange() -> Exchange {
    let h = Header::new;
    let data = json_body(1024);
    Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: "GET".into(),
            target: "/v1/orders/42?expand=items&page=2".into(),
            version: HttpVersion::Http11,
            headers: vec![
                h("Host", "api.example.test"),
                h("User-Agent", "bench/1.0"),
                h("Accept", "application/json"),
                h("Accept-Encoding", "gzip, br"),
                h("Accept-Language", "en-GB,en;q=0.9"),
                h("X-Request-Id", "6f1c0d2e-8b1f-4a47-9c2d-5e3b7f9a0c11"),
                h(
                    "Traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                h("Cache-Control", "no-cache"),
            ]
            .into(),
            headers_size: 360,
            body: Body::default(),
            trailers: Headers::new(),
        },
        response: Some(Response {
            status: 200,
            reason: "OK".into(),
            version: HttpVersion::Http11,
            headers: vec![
                h("Date", "Mon, 23 Nov 2026 19:28:21 GMT"),
                h("Server", "bench"),
                h("Content-Type", "application/json"),
                h("Cache-Control", "no-store"),
                h("Content-Length", "1024"),
            ]
            .into(),
            headers_size: 150,
            body: Body {
                wire_size: data.len() as u64,
                data,
                ..Body::default()
            },
            trailers: Headers::new(),
        }),
        timing: Timing {
            request_start_ns: 5_000_000_000,
            request_end_ns: 5_000_250_000,
            response_start_ns: Some(5_012_750_000),
            response_end_ns: Some(5_013_000_000),
        },
        incomplete: None,
        conn: ConnMeta {
            src: "10.244.1.17:48122".parse().ok(),
            dst: "10.96.12.5:8080".parse().ok(),
            role: Some(Role::Client),
            id: "4242:7:1".into(),
        },
        pid: 4242,
        workload: Workload {
            namespace: Some("shop".into()),
            pod: Some("checkout-7d9f8b6c5d-x2x4q".into()),
            container: Some("app".into()),
            owner_kind: Some("Deployment".into()),
            owner_name: Some("checkout".into()),
            node: Some("node-a".into()),
        }
        .into(),
        redacted: vec!["authorization".into(), "cookie".into()],
        routing_key: None,
        grpc: None,
        cgroup_id: 0,
    }
}

fn main() {
    let ex = exchange();
    let clock = WallClock::with_offset_ns(1_714_564_800_123_000_000 - 5_000_000_000);
    let mut buffer: Vec<u8> = Vec::with_capacity(4096);
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    // One warm-up round, then the best of ROUNDS (least disturbed by the machine).
    for round in 0..=ROUNDS {
        let start = Instant::now();
        let cpu_start = thread_cpu_s();
        for _ in 0..N {
            buffer.clear();
            har::write_entry(black_box(&ex), &clock, &mut buffer);
            black_box(&buffer);
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu_secs = thread_cpu_s() - cpu_start;
        if round > 0 {
            best = best.min(secs);
            best_cpu = best_cpu.min(cpu_secs);
        }
    }
    println!(
        "# {N} entries of {} bytes, best of {ROUNDS} rounds",
        buffer.len()
    );
    println!("har_entries_per_s {:.0}", N as f64 / best);
    println!("har_ns_per_entry {:.1}", best * 1e9 / N as f64);
    println!("har_cpu_entries_per_s {:.0}", N as f64 / best_cpu);
    println!("har_cpu_ns_per_entry {:.1}", best_cpu * 1e9 / N as f64);
}

/// CPU seconds this thread has run.
fn thread_cpu_s() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(f64::NAN, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}
