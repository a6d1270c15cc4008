//! `cargo xtask bench`, delivery: what exporting to a collector costs the daemon, and how fast
//! the exporter and the collector go.
//!
//! - Phase E, in every round after B and C: the same wrk load and capture as B, with the
//!   daemon also exporting everything to the real `capture-collector` over TLS on loopback
//!   (default exporter settings: zstd, 4 pushes in flight). The daemon's CPU time from the start
//!   of wrk until every exchange is acknowledged (or counted as dropped), per 10 000 exchanges,
//!   minus B's: the CPU the exporter adds per 10 000 exchanges exported. The collector is not
//!   pinned (nginx and wrk hold the two CPUs), so E's requests/s are not comparable with A's.
//! - `cargo bench -p capture-daemon --bench export`: exporter and collector throughput, one
//!   core each, with and without compression (see that file).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use capture_e2e::{Collector, Daemon, TestCgroup, TestPki};

use crate::bench::{Captured, Load, Wrk, cpu_seconds, mean, vm_hwm_kib};

/// How long the exporter may take to deliver its backlog once wrk has stopped.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// One E run.
pub(crate) struct Exported {
    wrk: Wrk,
    captured: u64,
    acked: u64,
    dropped: f64,
    cpu_seconds: f64,
    /// Of that, the daemon's `exporter` thread (batching, encoding, compression, TLS).
    exporter_thread_seconds: f64,
    hwm_mib: f64,
    /// From the end of wrk to the last acknowledgement.
    delivery: Duration,
}

/// Phase E's collector, for all rounds.
pub(crate) struct Phase {
    collector: Collector,
    pki: TestPki,
    dir: tempfile::TempDir,
}

impl Phase {
    pub(crate) fn start() -> Result<Self> {
        let pki = TestPki::new()?;
        let collector = Collector::start(&pki)?;
        let token = collector.create_token("bench")?;
        let dir = tempfile::Builder::new()
            .prefix("capture-bench-export-")
            .tempdir()?;
        fs::write(dir.path().join("token"), token)?;
        Ok(Self {
            collector,
            pki,
            dir,
        })
    }

    /// One E run: like B, and the daemon exports to the collector.
    pub(crate) fn run(
        &self,
        binary: &Path,
        cgroup: &TestCgroup,
        load: &Load,
        seconds: u32,
    ) -> Result<Exported> {
        let run_dir = self.dir.path().join("run");
        let _ = fs::remove_dir_all(&run_dir);
        fs::create_dir_all(&run_dir)?;
        let mut daemon = Daemon::builder()
            .binary(binary)
            .target_cgroup(cgroup)
            .output_dir(&run_dir)
            .args([
                "--collector".to_owned(),
                self.collector.url(),
                "--collector-ca".to_owned(),
                self.pki.ca().display().to_string(),
                "--token-file".to_owned(),
                self.dir.path().join("token").display().to_string(),
            ])
            .start()?;
        let cpu_before = cpu_seconds(daemon.pid())?;
        let exporter_before = thread_cpu_seconds(daemon.pid(), "exporter")?;
        let wrk = load.wrk(seconds)?;
        let load_end = Instant::now();
        // Until capture has caught up and every exchange handed over is acknowledged or
        // dropped.
        let mut last = -1.0;
        let mut stable_since = Instant::now();
        let metrics = loop {
            let m = daemon.metrics()?;
            let captured = m.sum("capture_exchanges_total");
            let offered = m.sum("capture_export_exchanges_total");
            let settled = m.sum("capture_export_exchanges_acked_total")
                + m.sum("capture_export_dropped_total");
            if captured != last {
                last = captured;
                stable_since = Instant::now();
            }
            if settled >= offered && stable_since.elapsed() >= Duration::from_millis(300) {
                break m;
            }
            if load_end.elapsed() >= DELIVERY_TIMEOUT {
                bail!(
                    "the exporter did not deliver within {DELIVERY_TIMEOUT:?}: {}",
                    m.summary()
                );
            }
            thread::sleep(Duration::from_millis(100));
        };
        let delivery = load_end.elapsed();
        let cpu_seconds = cpu_seconds(daemon.pid())? - cpu_before;
        let exporter_thread_seconds =
            thread_cpu_seconds(daemon.pid(), "exporter")? - exporter_before;
        let hwm_mib = vm_hwm_kib(daemon.pid())? / 1024.0;
        let status = daemon.stop()?;
        if !status.success() {
            bail!(
                "capture-daemon exited with {status} after SIGTERM; log:\n{}",
                daemon.stderr_text()
            );
        }
        drop(daemon);
        fs::remove_dir_all(&run_dir)?;
        Ok(Exported {
            wrk,
            captured: metrics.sum("capture_exchanges_total") as u64,
            acked: metrics.sum("capture_export_exchanges_acked_total") as u64,
            dropped: metrics.sum("capture_export_dropped_total"),
            cpu_seconds,
            exporter_thread_seconds,
            hwm_mib,
            delivery,
        })
    }
}

/// Runs `cargo bench -p capture-daemon --bench export`; its result lines, or why it failed.
pub(crate) fn exporter_bench(root: &Path, quick: bool) -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "capture-daemon", "--bench", "export"]);
    if quick {
        cmd.args(["--", "--quick"]);
    }
    let out = cmd
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not start cargo bench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        return Err(format!(
            "cargo bench --bench export failed ({}):\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.starts_with("export_"))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(format!("no `export_*` lines in the output:\n{stdout}"));
    }
    Ok(lines)
}

fn per_10k(cpu: f64, exchanges: u64) -> f64 {
    if exchanges == 0 {
        f64::NAN
    } else {
        cpu / exchanges as f64 * 10_000.0
    }
}

/// CPU time of `pid`'s threads named `name`, in seconds (`schedstat`: nanoseconds, where
/// `stat` counts clock ticks). An error when there is no such thread.
fn thread_cpu_seconds(pid: u32, name: &str) -> Result<f64> {
    let mut found = false;
    let mut ns = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        // A thread may end between the listing and the reads.
        let Ok(comm) = fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        let Ok(schedstat) = fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        found = true;
        ns += schedstat
            .split_whitespace()
            .next()
            .context("empty schedstat")?
            .parse::<u64>()?;
    }
    if !found {
        bail!("capture-daemon {pid} has no thread named {name:?}");
    }
    Ok(ns as f64 / 1e9)
}

/// The "Delivery" part of the report.
pub(crate) fn report(
    captured: &[Captured],
    exported: &[Exported],
    exporter: &Result<Vec<String>, String>,
) -> String {
    let b_cpu: f64 = captured.iter().map(|c| c.cpu_seconds).sum();
    let b_ex: u64 = captured.iter().map(|c| c.exchanges).sum();
    let e_cpu: f64 = exported.iter().map(|e| e.cpu_seconds).sum();
    let exporter_cpu: f64 = exported.iter().map(|e| e.exporter_thread_seconds).sum();
    let e_ex: u64 = exported.iter().map(|e| e.captured).sum();
    let acked: u64 = exported.iter().map(|e| e.acked).sum();
    let dropped: f64 = exported.iter().map(|e| e.dropped).sum();
    let (b10k, e10k) = (per_10k(b_cpu, b_ex), per_10k(e_cpu, e_ex));
    let exporter10k = per_10k(exporter_cpu, e_ex);
    let b_rps = mean(captured.iter().map(|c| c.wrk.requests_per_s));
    let e_rps = mean(exported.iter().map(|e| e.wrk.requests_per_s));
    let b_hwm = captured.iter().map(|c| c.hwm_mib).fold(0.0, f64::max);
    let e_hwm = exported.iter().map(|e| e.hwm_mib).fold(0.0, f64::max);

    let mut s = String::new();
    let _ = writeln!(s, "\n### Delivery: the exporter\n");
    let _ = writeln!(
        s,
        "E = B plus `--collector` to the real `capture-collector` over TLS on loopback (default \
         exporter settings: zstd, 512 exchanges or 1 MiB per batch, 4 pushes in flight); the \
         collector is not pinned. Daemon CPU runs from the start of wrk to the last \
         acknowledgement.\n"
    );
    let _ = writeln!(
        s,
        "| metric | B: capture, JSONL | E: capture, JSONL + export | E − B |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| daemon CPU per 10k exchanges (s) | {b10k:.3} | {e10k:.3} | {:+.3} per 10k exported |",
        e10k - b10k
    );
    let _ = writeln!(
        s,
        "| of which the `exporter` thread (batches, protobuf, zstd, TLS) | | {exporter10k:.3} | |"
    );
    let _ = writeln!(
        s,
        "| the rest: the pipeline's threads (capture, JSONL, handing over; at E's lower rate) | {b10k:.3} | {:.3} | {:+.3} |",
        e10k - exporter10k,
        e10k - exporter10k - b10k
    );
    let _ = writeln!(
        s,
        "| exchanges captured / acknowledged / dropped by the exporter | {b_ex} | {e_ex} / {acked} / {dropped} | |"
    );
    let _ = writeln!(
        s,
        "| wrk requests/s (E shares the CPUs with the collector) | {b_rps:.0} | {e_rps:.0} | |"
    );
    let _ = writeln!(
        s,
        "| daemon peak RSS, VmHWM (MiB) | {b_hwm:.1} | {e_hwm:.1} | {:+.1} |",
        e_hwm - b_hwm
    );
    for (i, e) in exported.iter().enumerate() {
        let _ = writeln!(
            s,
            "| E{}: {} exchanges, {:.2} CPU s ({:.2} in the exporter thread), delivered {:.1} s after the load | | | |",
            i + 1,
            e.captured,
            e.cpu_seconds,
            e.exporter_thread_seconds,
            e.delivery.as_secs_f64()
        );
    }
    let _ = writeln!(
        s,
        "\nExporter and collector over TLS on loopback, one core each \
         (`cargo bench -p capture-daemon --bench export`, median of 3):\n"
    );
    match exporter {
        Ok(lines) => {
            let value = |key: &str| {
                lines
                    .iter()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<f64>().ok())
                    .unwrap_or(f64::NAN)
            };
            let _ = writeln!(
                s,
                "| compression | exchanges/s | MB/s (protobuf, before compression) | exporter CPU s per 10k (its thread) | collector CPU s per 10k |"
            );
            let _ = writeln!(s, "|---|---:|---:|---:|---:|");
            for c in ["zstd", "gzip", "none"] {
                let _ = writeln!(
                    s,
                    "| {c} | {:.0} | {:.1} | {:.3} ({:.3}) | {:.3} |",
                    value(&format!("export_{c}_exchanges_per_s ")),
                    value(&format!("export_{c}_mb_per_s ")),
                    value(&format!("export_{c}_exporter_cpu_s_per_10k ")),
                    value(&format!("export_{c}_exporter_thread_cpu_s_per_10k ")),
                    value(&format!("export_{c}_collector_cpu_s_per_10k ")),
                );
            }
        }
        Err(why) => {
            let _ = writeln!(s, "```\n{why}\n```");
        }
    }
    s
}
