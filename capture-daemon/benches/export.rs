//! Throughput of the gRPC exporter against the real collector over TLS on loopback, one core
//! each: this process (the exporter's thread, and the thread standing in for the pipeline) is
//! pinned to CPU 0, `capture-collector serve` to CPU 1 (when there are two CPUs).
//!
//! The exchanges are realistic API calls (GETs and 1 KiB JSON POSTs with 1 KiB JSON responses,
//! ~1.9 KB each in the wire form). They are handed to the exporter as fast as its queue takes
//! them (never dropping: the producer waits while the queue is over half full), and the clock
//! runs from the first hand-over to the collector's last acknowledgement. Each batch is
//! fsynced by the collector before its acknowledgement, so this is end-to-end durable
//! throughput.
//!
//! Each figure is the median of three runs. Prints machine-readable lines (parsed by
//! `cargo xtask bench`), for `zstd`, `gzip` and `none`:
//! `export_<c>_exchanges_per_s`, `export_<c>_mb_per_s` (10^6 bytes of protobuf before
//! compression per second), `export_<c>_exporter_cpu_s_per_10k` (CPU seconds of this process
//! per 10 000 exchanges: the exporter's thread and the handing over),
//! `export_<c>_exporter_thread_cpu_s_per_10k` (the exporter's thread alone) and
//! `export_<c>_collector_cpu_s_per_10k`.
//!
//! Needs a built collector (`$CAPTURE_COLLECTOR_BIN`, else target/{release,debug}). Run with
//! `cargo bench -p capture-daemon --bench export` (`-- --quick` for a short run,
//! `-- --compression zstd` for one compression only).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    unsafe_code,
    reason = "a benchmark: a failed unwrap is a failed run; sched_setaffinity needs libc"
)]

/// The daemon's allocator, so the exporter's CPU is the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use capture_daemon::{
    config::Config, output::export::Exporter, output::export::metrics::ExportMetrics,
};
use capture_model::{
    clock::WallClock,
    exchange::{
        Body, ConnMeta, Exchange, Header, Headers, HttpVersion, Protocol, Request, Response, Role,
        Timing, Workload,
    },
    wire,
};
use prost::Message as _;

const ROUNDS: usize = 3;
const CLOCK: WallClock = WallClock::with_offset_ns(1_714_521_600_000_000_000);

fn json_body(i: usize, len: usize) -> Vec<u8> {
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

fn exchange(i: usize) -> Exchange {
    let post = i.is_multiple_of(3);
    let request_body = if post { json_body(i, 1024) } else { Vec::new() };
    let start = 5_000_000_000 + i as u64 * 100_000;
    let h = Header::new;
    Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: if post { "POST" } else { "GET" }.into(),
            target: if post {
                format!("/v1/orders/{i}")
            } else {
                format!("/v1/orders/{i}?expand=items&page=2")
            },
            version: HttpVersion::Http11,
            headers: vec![
                h("Host", "api.example.test"),
                h("User-Agent", "bench/1.0"),
                h("Accept", "application/json"),
                h("Accept-Encoding", "gzip, br"),
                h("X-Request-Id", "6f1c0d2e-8b1f-4a47-9c2d-5e3b7f9a0c11"),
            ]
            .into(),
            headers_size: 180,
            body: Body {
                wire_size: request_body.len() as u64,
                data: request_body,
                ..Body::default()
            },
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
                data: json_body(i + 7, 1024),
                wire_size: 1024,
                ..Body::default()
            },
            trailers: Headers::new(),
        }),
        timing: Timing {
            request_start_ns: start,
            request_end_ns: start + 20_000,
            response_start_ns: Some(start + 300_000),
            response_end_ns: Some(start + 320_000),
        },
        incomplete: None,
        conn: ConnMeta {
            src: Some("10.1.2.3:51234".parse().unwrap()),
            dst: Some("10.1.9.9:8080".parse().unwrap()),
            role: Some(Role::Server),
            id: format!("4242:{}:1", 10 + i % 16).into(),
        },
        pid: 4242,
        workload: Workload {
            node: Some("bench-node".into()),
            ..Workload::default()
        }
        .into(),
        redacted: Vec::new(),
        routing_key: None,
        grpc: None,
        cgroup_id: 1,
    }
}

fn collector_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("CAPTURE_COLLECTOR_BIN") {
        return PathBuf::from(bin);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    ["release", "debug"]
        .iter()
        .map(|p| target.join(p).join("capture-collector"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .expect("no capture-collector binary: cargo build --release -p capture-collector")
}

/// Pins this process (all its threads, present and future) to `cpu`.
fn pin_self(cpu: usize) {
    // SAFETY: cpu_set_t is plain data, zeroed is its empty set; CPU_SET writes within it;
    // sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf only reads a constant.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct CollectorProcess {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
    ca: PathBuf,
    token_file: PathBuf,
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_collector(pinned: bool) -> CollectorProcess {
    let bin = collector_binary();
    let dir = tempfile::tempdir().unwrap();
    let ca =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ca.cert.pem()).unwrap();
    std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let token = Command::new(&bin)
        .args(["token", "create", "--org", "bench", "--data"])
        .arg(&data)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(token.status.success());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token.stdout).unwrap();
    let stdout = dir.path().join("stdout");
    let mut cmd = if pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    let child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let text = std::fs::read_to_string(&stdout).unwrap_or_default();
        if let Some(a) = text.lines().find_map(|l| l.strip_prefix("listening on ")) {
            break a.trim().to_owned();
        }
        assert!(Instant::now() < deadline, "collector did not start");
        std::thread::sleep(Duration::from_millis(20));
    };
    let port = addr.rsplit_once(':').unwrap().1;
    CollectorProcess {
        child,
        url: format!("https://localhost:{port}"),
        ca: cert,
        token_file,
        _dir: dir,
    }
}

/// CPU seconds of this process's threads named `name` (`schedstat`, in nanoseconds).
fn thread_cpu_seconds(name: &str) -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
            ns += stat
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
    }
    ns as f64 / 1e9
}

struct Run {
    exchanges_per_s: f64,
    mb_per_s: f64,
    exporter_cpu_per_10k: f64,
    exporter_thread_cpu_per_10k: f64,
    collector_cpu_per_10k: f64,
}

/// `exchanges` are handed over as the pipeline does (moved, not cloned: a copy made by the
/// bench would count as the exporter's CPU).
fn run(compression: &str, exchanges: Vec<Exchange>, wire_bytes: u64, pinned: bool) -> Run {
    let collector = start_collector(pinned);
    let cfg = Config::from_args([
        "capture-daemon",
        "--target-pid",
        "1",
        "--daemon-id",
        "bench-node",
        "--collector",
        &collector.url,
        "--collector-ca",
        collector.ca.to_str().unwrap(),
        "--token-file",
        collector.token_file.to_str().unwrap(),
        "--export-compression",
        compression,
    ])
    .unwrap();
    let settings = cfg.export.unwrap();
    let half = settings.queue_max_bytes / 2;
    let metrics = Arc::new(ExportMetrics::default());
    let (exporter, mut handle) = Exporter::start(&settings, Arc::clone(&metrics)).unwrap();
    let m = &metrics;
    let me = std::process::id();
    let collector_pid = collector.child.id();
    let n = exchanges.len() as u64;
    let (cpu0, ccpu0) = (cpu_seconds(me), cpu_seconds(collector_pid));
    let thread0 = thread_cpu_seconds("exporter");
    let t0 = Instant::now();
    for ex in exchanges {
        while m.queue_bytes() > half {
            std::thread::sleep(Duration::from_micros(200));
        }
        handle.offer(ex, &CLOCK);
    }
    while m.exchanges_acked.load(Relaxed) < n {
        assert_eq!(
            m.dropped_total(capture_daemon::output::export::metrics::DropReason::QueueFull),
            0
        );
        assert!(t0.elapsed() < Duration::from_secs(600), "export stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu, ccpu) = (cpu_seconds(me) - cpu0, cpu_seconds(collector_pid) - ccpu0);
    let thread = thread_cpu_seconds("exporter") - thread0;
    drop(handle);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(exporter.finish(Duration::from_secs(2), Duration::from_secs(10)));
    let per_10k = |s: f64| s / n as f64 * 10_000.0;
    Run {
        exchanges_per_s: n as f64 / elapsed,
        mb_per_s: wire_bytes as f64 / 1e6 / elapsed,
        exporter_cpu_per_10k: per_10k(cpu),
        exporter_thread_cpu_per_10k: per_10k(thread),
        collector_cpu_per_10k: per_10k(ccpu),
    }
}

fn main() {
    // RUST_LOG=capture_daemon=debug shows every push and acknowledgement.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // Whole batches (512 exchanges, the default): a last partial batch would wait
    // --export-batch-max-delay and measure that instead of the exporter.
    let n = if quick { 50 * 512 } else { 250 * 512 };
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let pinned = cpus >= 2 && Command::new("taskset").arg("-V").output().is_ok();
    if pinned {
        pin_self(0);
    }
    let exchanges: Vec<Exchange> = (0..n).map(exchange).collect();
    let wire_bytes: u64 = exchanges
        .iter()
        .map(|e| {
            let len = wire::to_proto(e, &CLOCK).encoded_len();
            (1 + prost::length_delimiter_len(len) + len) as u64
        })
        .sum();
    eprintln!(
        "export bench: {n} exchanges, {:.0} bytes each on the wire form, {}",
        wire_bytes as f64 / n as f64,
        if pinned {
            "exporter on CPU 0, collector on CPU 1"
        } else {
            "not pinned"
        }
    );
    // `-- --compression zstd` runs one of them (for a profile of it alone).
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--compression")
        .and_then(|i| args.get(i + 1));
    let compressions = ["zstd", "gzip", "none"];
    if let Some(c) = only {
        assert!(
            compressions.contains(&c.as_str()),
            "--compression {c}: expected one of {compressions:?}"
        );
    }
    for compression in compressions {
        if only.is_some_and(|c| c != compression) {
            continue;
        }
        // The median of three runs (each with a fresh collector): the machine may be busy.
        let mut runs: Vec<Run> = (0..ROUNDS)
            .map(|_| run(compression, exchanges.clone(), wire_bytes, pinned))
            .collect();
        runs.sort_by(|a, b| a.exchanges_per_s.total_cmp(&b.exchanges_per_s));
        for r in &runs {
            eprintln!(
                "  {compression}: {:.0} exchanges/s, exporter {:.3} CPU s/10k (its thread {:.3}), \
                 collector {:.3}",
                r.exchanges_per_s,
                r.exporter_cpu_per_10k,
                r.exporter_thread_cpu_per_10k,
                r.collector_cpu_per_10k
            );
        }
        let r = &runs[ROUNDS / 2];
        println!(
            "export_{compression}_exchanges_per_s {:.0}",
            r.exchanges_per_s
        );
        println!("export_{compression}_mb_per_s {:.1}", r.mb_per_s);
        println!(
            "export_{compression}_exporter_cpu_s_per_10k {:.3}",
            r.exporter_cpu_per_10k
        );
        println!(
            "export_{compression}_exporter_thread_cpu_s_per_10k {:.3}",
            r.exporter_thread_cpu_per_10k
        );
        println!(
            "export_{compression}_collector_cpu_s_per_10k {:.3}",
            r.collector_cpu_per_10k
        );
    }
}
