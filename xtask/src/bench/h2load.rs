//! The HTTP/2 half of `cargo xtask bench`: h2load (nghttp2) against nginx speaking h2c (HTTP/2
//! over cleartext, prior knowledge), with and without capture, measured like the HTTP/1 half.
//!
//! Workload: nginx (`return 200` with a 1 KiB body, `sendfile off`) in a fresh cgroup, driven by
//! `h2load -t1 -c16 -m10` from outside it: 16 connections with up to 10 concurrent streams each.
//! Each round runs A (no daemon) and B (daemon targeting nginx's cgroup, JSONL to a file on
//! disk); CPUs are pinned as for wrk (nginx on CPU 0, h2load on CPU 1, the daemon unpinned).

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result};
use capture_e2e::{Nginx, TestCgroup, run as run_cmd};

use super::{
    CaptureTotals, DaemonCost, cpu_seconds, mean, parse_duration_us, verdict, with_daemon,
};

const H2LOAD_THREADS: u32 = 1;
const H2LOAD_CLIENTS: u32 = 16;
const H2LOAD_STREAMS: u32 = 10;

/// One h2load run's figures.
#[derive(Debug, Clone)]
pub(super) struct H2load {
    /// Requests that got a response (h2load's `succeeded`).
    requests: u64,
    requests_per_s: f64,
    /// Mean and max of h2load's "time for request" (it reports no percentiles).
    mean_us: f64,
    max_us: f64,
    /// Requests that failed, errored or timed out.
    failed: u64,
    /// CPU time nginx used during the run (user + system, includes the capture programs).
    server_cpu_seconds: f64,
}

impl H2load {
    fn server_cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.server_cpu_seconds * 1e6 / self.requests as f64
        }
    }
}

/// Every run of the HTTP/2 half, in order.
pub(super) struct Results {
    seconds: u32,
    pinned: bool,
    baseline: Vec<H2load>,
    captured: Vec<(H2load, DaemonCost)>,
}

pub(super) fn run(
    binary: &Path,
    seconds: u32,
    rounds: u32,
    pinned: bool,
    out_dir: &Path,
) -> Result<Results> {
    let cgroup = TestCgroup::new()?;
    let nginx = Nginx::start_h2c(Some(&cgroup), if pinned { &[0] } else { &[] })?;
    let url = format!("{}/", nginx.base_url());
    let load = |seconds| h2load(&url, seconds, pinned, nginx.pid());
    println!(
        "bench HTTP/2: nginx h2c pid {} in {}, h2load -t{H2LOAD_THREADS} -c{H2LOAD_CLIENTS} -m{H2LOAD_STREAMS} -D{seconds}, {rounds} x (A: no capture, B: capture)",
        nginx.pid(),
        cgroup.path().display()
    );
    println!("warm-up");
    load(1)?;
    let mut results = Results {
        seconds,
        pinned,
        baseline: Vec::new(),
        captured: Vec::new(),
    };
    for round in 1..=rounds {
        println!("round {round}/{rounds} A: no capture");
        let a = load(seconds)?;
        println!(
            "  {:.0} req/s, mean {:.0} us, max {:.0} us",
            a.requests_per_s, a.mean_us, a.max_us
        );
        results.baseline.push(a);

        println!("round {round}/{rounds} B: capture");
        let (b, cost) = with_daemon(
            binary,
            &cgroup,
            &out_dir.join(format!("h2-capture-run-{round}")),
            || load(seconds),
            |b| b.requests,
        )?;
        println!(
            "  {:.0} req/s, mean {:.0} us, max {:.0} us; {} exchanges for {} requests, daemon {:.2} CPU s, VmHWM {:.1} MiB, lost events {}, gap bytes {}",
            b.requests_per_s,
            b.mean_us,
            b.max_us,
            cost.exchanges,
            b.requests,
            cost.cpu_seconds,
            cost.hwm_mib,
            cost.events_lost,
            cost.gap_bytes
        );
        results.captured.push((b, cost));
    }
    Ok(results)
}

fn h2load(url: &str, seconds: u32, pinned: bool, server_pid: u32) -> Result<H2load> {
    let mut cmd = if pinned {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1", "h2load"]);
        cmd
    } else {
        Command::new("h2load")
    };
    cmd.arg(format!("-t{H2LOAD_THREADS}"))
        .arg(format!("-c{H2LOAD_CLIENTS}"))
        .arg(format!("-m{H2LOAD_STREAMS}"))
        .arg(format!("-D{seconds}"))
        .arg(url);
    let server_cpu_before = cpu_seconds(server_pid)?;
    let out = run_cmd(&mut cmd, Duration::from_secs(u64::from(seconds) + 30))?;
    let mut h2load = parse_h2load(&String::from_utf8_lossy(&out.stdout))?;
    h2load.server_cpu_seconds = cpu_seconds(server_pid)? - server_cpu_before;
    Ok(h2load)
}

/// Reads h2load's (nghttp2 1.52) summary: `finished in ..., N req/s, ...`,
/// `requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout` and the
/// `time for request:  min  max  mean  sd  +/- sd` line.
fn parse_h2load(text: &str) -> Result<H2load> {
    let mut requests_per_s = None;
    let mut succeeded = None;
    let mut failed = 0;
    let mut mean_us = None;
    let mut max_us = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            requests_per_s = rest
                .split(", ")
                .find_map(|part| part.strip_suffix(" req/s"))
                .and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(", ") {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match what {
                    "succeeded" => succeeded = Some(n),
                    "failed" | "errored" | "timeout" => failed += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            let values: Vec<&str> = rest.split_whitespace().collect();
            max_us = values.get(1).and_then(|v| parse_duration_us(v));
            mean_us = values.get(2).and_then(|v| parse_duration_us(v));
        }
    }
    let missing = || format!("unexpected h2load output:\n{text}");
    Ok(H2load {
        requests: succeeded.with_context(missing)?,
        requests_per_s: requests_per_s.with_context(missing)?,
        mean_us: mean_us.with_context(missing)?,
        max_us: max_us.with_context(missing)?,
        failed,
        server_cpu_seconds: 0.0,
    })
}

/// The HTTP/2 section of the report.
pub(super) fn section(r: &Results) -> String {
    let a_rps = mean(r.baseline.iter().map(|a| a.requests_per_s));
    let b_rps = mean(r.captured.iter().map(|(b, _)| b.requests_per_s));
    let ratio = if a_rps > 0.0 { b_rps / a_rps } else { 0.0 };
    let a_mean = mean(r.baseline.iter().map(|a| a.mean_us));
    let b_mean = mean(r.captured.iter().map(|(b, _)| b.mean_us));
    let a_srv = mean(r.baseline.iter().map(H2load::server_cpu_us_per_request));
    let b_srv = mean(
        r.captured
            .iter()
            .map(|(b, _)| b.server_cpu_us_per_request()),
    );
    let exchanges: u64 = r.captured.iter().map(|(_, c)| c.exchanges).sum();
    let requests: u64 = r.captured.iter().map(|(b, _)| b.requests).sum();
    let cpu: f64 = r.captured.iter().map(|(_, c)| c.cpu_seconds).sum();
    let per_exchange = |total: f64| {
        if exchanges > 0 {
            total / exchanges as f64
        } else {
            f64::NAN
        }
    };

    let mut s = String::new();
    let _ = writeln!(s, "\n### HTTP/2 (h2c)\n");
    let _ = writeln!(
        s,
        "Workload: nginx `listen ... http2` (h2c, prior knowledge) `return 200` 1 KiB body, in a test cgroup; \
         `h2load -t{H2LOAD_THREADS} -c{H2LOAD_CLIENTS} -m{H2LOAD_STREAMS} -D{}` from outside it ({H2LOAD_CLIENTS} connections, up to {H2LOAD_STREAMS} concurrent streams each); {}. \
         A = no daemon, B = daemon targeting nginx's cgroup; runs go A B per round, figures are means over {} rounds. \
         h2load reports mean and max latency, no percentiles.\n",
        r.seconds,
        if r.pinned {
            "nginx pinned to CPU 0, h2load to CPU 1, daemon unpinned"
        } else {
            "nothing pinned (one CPU)"
        },
        r.captured.len()
    );
    let _ = writeln!(
        s,
        "| metric | A: no capture | B: capture | B vs A | target |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|");
    let _ = writeln!(
        s,
        "| throughput (requests/s) | {a_rps:.0} | {b_rps:.0} | ratio {ratio:.3} | ≥ 0.95: {} |",
        verdict(ratio >= 0.95)
    );
    let _ = writeln!(
        s,
        "| latency mean (µs) | {a_mean:.0} | {b_mean:.0} | {:+.0} µs | |",
        b_mean - a_mean
    );
    let _ = writeln!(
        s,
        "| daemon CPU per exchange (µs) | | {:.1} | | |",
        per_exchange(cpu) * 1e6
    );
    let _ = writeln!(
        s,
        "| daemon CPU per 10k exchanges (s) | | {:.3} | | |",
        per_exchange(cpu) * 10_000.0
    );
    let _ = writeln!(
        s,
        "| nginx CPU per request (µs; includes the capture programs) | {a_srv:.1} | {b_srv:.1} | {:+.1} µs | |",
        b_srv - a_srv
    );
    CaptureTotals {
        exchanges,
        requests,
        hwm_mib: r
            .captured
            .iter()
            .map(|(_, c)| c.hwm_mib)
            .fold(0.0, f64::max),
        events_lost: r.captured.iter().map(|(_, c)| c.events_lost).sum(),
        kernel_bytes_lost: r.captured.iter().map(|(_, c)| c.kernel_bytes_lost).sum(),
        gap_bytes: r.captured.iter().map(|(_, c)| c.gap_bytes).sum(),
        parse_errors: r.captured.iter().map(|(_, c)| c.parse_errors).sum(),
        output_bytes: r.captured.iter().map(|(_, c)| c.output_bytes).sum(),
    }
    .write_rows(&mut s, "h2load");

    let _ = writeln!(s, "\nRuns, in order:\n");
    let _ = writeln!(
        s,
        "| run | requests | requests/s | mean (µs) | max (µs) | nginx CPU/request (µs) | exchanges | daemon CPU (s) | VmHWM (MiB) | drain after load | failed |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (a, (b, c))) in r.baseline.iter().zip(&r.captured).enumerate() {
        let n = i + 1;
        let _ = writeln!(
            s,
            "| A{n} | {} | {:.0} | {:.0} | {:.0} | {:.1} | | | | | {} |",
            a.requests,
            a.requests_per_s,
            a.mean_us,
            a.max_us,
            a.server_cpu_us_per_request(),
            a.failed
        );
        let _ = writeln!(
            s,
            "| B{n} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {:.2} | {:.1} | {:.1} s | {} |",
            b.requests,
            b.requests_per_s,
            b.mean_us,
            b.max_us,
            b.server_cpu_us_per_request(),
            c.exchanges,
            c.cpu_seconds,
            c.hwm_mib,
            c.drain.as_secs_f64(),
            b.failed
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::parse_h2load;

    const H2LOAD_OUTPUT: &str = "starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Application protocol: h2c
Main benchmark duration is over for thread #0. Stopping all clients.

finished in 2.01s, 43104.50 req/s, 44.93MB/s
requests: 86209 total, 86369 started, 86209 done, 86209 succeeded, 0 failed, 2 errored, 1 timeout
status codes: 86210 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 89.86MB (94227281) total, 4.19MB (4396710) headers (space savings 49.50%), 84.19MB (88278016) data
                     min         max         mean         sd        +/- sd
time for request:      162us     16.20ms      3.39ms      1.34ms    79.35%
time for connect:       72us       293us       182us        69us    62.50%
time to 1st byte:     3.17ms      4.29ms      3.43ms       261us    93.75%
req/s           :    2552.51     2868.17     2693.69       99.43    62.50%
";

    #[test]
    fn parses_h2load_summary() {
        let h = parse_h2load(H2LOAD_OUTPUT).unwrap();
        assert_eq!(h.requests, 86_209);
        assert!((h.requests_per_s - 43_104.50).abs() < 1e-6);
        assert!((h.max_us - 16_200.0).abs() < 1e-6);
        assert!((h.mean_us - 3_390.0).abs() < 1e-6);
        assert_eq!(h.failed, 3);
    }

    #[test]
    fn rejects_output_without_a_summary() {
        assert!(parse_h2load("connect: Connection refused\n").is_err());
    }
}
