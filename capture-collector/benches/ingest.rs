//! Collector ingest throughput over TLS on loopback: the release `capture-collector serve`
//! pinned to CPU 0, this client pinned to CPU 1 (re-run under `taskset`), batches of 256
//! realistic exchanges (about 1.2 KiB each once encoded), every batch fsynced before its ack.
//!
//! ```sh
//! cargo bench -p capture-collector --bench ingest            # 5 s per configuration
//! CAPTURE_BENCH_SECS=2 cargo bench -p capture-collector --bench ingest
//! ```
//!
//! Reports exchanges/s and MB/s of encoded batches acknowledged, and the collector's CPU
//! (utime + stime from /proc) per 10,000 exchanges, which holds on a busy machine where
//! wall-clock rates do not. Each configuration runs on the embedded file store; the last one
//! also on PostgreSQL (a cluster this bench starts with Debian's binaries, fsync on, not
//! pinned), where the database server's own CPU per 10,000 exchanges is reported beside the
//! collector's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    os::unix::fs::PermissionsExt as _,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use prost::Message as _;

const BATCH: u32 = 256;
const PIN_ENV: &str = "CAPTURE_BENCH_PINNED";

fn main() {
    // `cargo bench` passes `--bench`; a filter or `--list` from the harness is not ours.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let taskset = Command::new("taskset").arg("-V").output().is_ok();
    if cores >= 2 && taskset && std::env::var_os(PIN_ENV).is_none() {
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env(PIN_ENV, "1")
            .status()
            .unwrap();
        std::process::exit(status.code().unwrap_or(1));
    }
    let pinned = std::env::var_os(PIN_ENV).is_some();
    let secs: u64 = std::env::var("CAPTURE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "collector ingest over TLS on loopback, batches of {BATCH}, {secs} s per run, {}",
        if pinned {
            "collector on CPU 0, client on CPU 1"
        } else {
            "not pinned (needs 2 cores and taskset)"
        }
    );
    for (in_flight, encrypted) in [(1, false), (8, false), (32, false), (32, true)] {
        runtime.block_on(run(
            in_flight,
            encrypted,
            None,
            Duration::from_secs(secs),
            pinned,
        ));
    }
    // PostgreSQL needs a key (payloads are sealed before they reach it).
    if let Some(pg) = common::pg::Postgres::start(true) {
        for in_flight in [8, 32] {
            runtime.block_on(run(
                in_flight,
                true,
                Some(&pg),
                Duration::from_secs(secs),
                pinned,
            ));
        }
    }
}

/// utime + stime of the PostgreSQL server and all its backends, in clock ticks.
fn postgres_ticks(pg: &common::pg::Postgres) -> u64 {
    let pid_file = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    let main: u32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
    let mut total = cpu_ticks(main);
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after_name.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == main {
            total += cpu_ticks(pid);
        }
    }
    total
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3) here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

async fn run(
    in_flight: usize,
    encrypted: bool,
    pg: Option<&common::pg::Postgres>,
    duration: Duration,
    pinned: bool,
) {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let tmp =
        tempfile::tempdir_in(std::env::var("CAPTURE_BENCH_DIR").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
    let data = tmp.path().join("data");
    let tls = tmp.path().join("tls");
    let mut store: Vec<String> = match pg {
        None => vec!["--data".into(), path(&data).into()],
        Some(pg) => {
            let db = format!("bench{}", RUN.fetch_add(1, Ordering::Relaxed));
            vec![
                "--store".into(),
                pg.database(&db),
                "--db-password-file".into(),
                path(&pg.password_file()).into(),
            ]
        }
    };
    let key = tmp.path().join("key");
    if encrypted {
        std::fs::write(&key, [7_u8; 32]).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        store.extend(["--encryption-key".into(), path(&key).into()]);
    }
    let store: Vec<&str> = store.iter().map(String::as_str).collect();
    let token = token_in(&store, "bench");
    let collector = if pinned {
        start_pinned(&store, &tls)
    } else {
        Collector::start_in(&store, &tls, &[])
    };
    let channel = collector.channel().await;
    // Batches are made once; each push gets its own sequence.
    let template = batch("bench-node", "run-1", 1, 0..BATCH);
    let batch_bytes = template.encoded_len() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let next_seq = Arc::new(AtomicU64::new(1));
    let warmup = Duration::from_millis(500);
    let mut tasks = Vec::new();
    for _ in 0..in_flight {
        let mut client = ingest(&channel, &token)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (stop, acked, next_seq) =
            (Arc::clone(&stop), Arc::clone(&acked), Arc::clone(&next_seq));
        let mut batch = template.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                batch.sequence = next_seq.fetch_add(1, Ordering::Relaxed);
                let ack = client.push(batch.clone()).await.unwrap().into_inner();
                assert!(!ack.duplicate);
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(warmup).await;
    let pid = collector.child.pid();
    let db_ticks = || pg.map_or(0, postgres_ticks);
    let (start_acked, start_ticks, start_db, start) = (
        acked.load(Ordering::Relaxed),
        cpu_ticks(pid),
        db_ticks(),
        Instant::now(),
    );
    tokio::time::sleep(duration).await;
    let (end_acked, end_ticks, end_db, elapsed) = (
        acked.load(Ordering::Relaxed),
        cpu_ticks(pid),
        db_ticks(),
        start.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let batches = end_acked - start_acked;
    let exchanges = batches * u64::from(BATCH);
    let secs = elapsed.as_secs_f64();
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_secs = (end_ticks - start_ticks) as f64 / ticks_per_sec;
    let db_secs = (end_db - start_db) as f64 / ticks_per_sec;
    let per_10k = |cpu: f64| cpu / (exchanges.max(1) as f64) * 10_000.0;
    let store_name = if pg.is_some() { "postgres" } else { "file" };
    println!(
        "collector_ingest store={store_name} in_flight={in_flight} encrypted={encrypted}: {:.0} exchanges/s, \
         {:.1} pushes/s, {:.1} MB/s, collector CPU {:.0}% of a core, {:.3} CPU s per 10k exchanges{} \
         ({} bytes per exchange encoded)",
        exchanges as f64 / secs,
        batches as f64 / secs,
        (batches * batch_bytes) as f64 / secs / 1e6,
        cpu_secs / secs * 100.0,
        per_10k(cpu_secs),
        if pg.is_some() {
            format!(", database CPU {:.3} s per 10k exchanges", per_10k(db_secs))
        } else {
            String::new()
        },
        batch_bytes / u64::from(BATCH),
    );
}

/// `Collector::start_in` with the server under `taskset -c 0`.
fn start_pinned(store: &[&str], tls: &std::path::Path) -> Collector {
    // The collector binary is started by `Collector::start_in`; pin it after the fact
    // (taskset -p applies to every thread with -a).
    let collector = Collector::start_in(store, tls, &[]);
    let pid = collector.child.pid().to_string();
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "taskset -p failed");
    collector
}
