//! `cargo xtask bench [--quick]`: the cost of capture on a real workload, measured against a
//! baseline in the same run, plus the HTTP/1 decoder's own throughput.
//!
//! Workload: nginx (`return 200` with a 1 KiB body, keep-alive, `sendfile off`) in a fresh
//! cgroup, driven by `wrk -t1 -c16 --latency` from outside the cgroup. Each round runs
//! A (no daemon), B (daemon targeting nginx's cgroup, JSONL output to a file on disk) and
//! C (daemon running, targeting an empty cgroup: what workloads that are *not* captured pay for
//! the attached programs) and E (B plus export to a collector, see `bench_export`); two rounds,
//! one with `--quick`, so a slow drift of the machine hits every side alike.
//!
//! CPUs: on two or more cores nginx is pinned to CPU 0 and wrk to CPU 1; the daemon is not
//! pinned. The eBPF programs run in nginx's syscalls (on CPU 0), and the daemon's user space
//! has to find time on one of the two busy cores: that is the node-is-saturated worst case,
//! and it is what the throughput ratio measures.
//!
//! HTTP/2 (`h2load`): the same measurement with h2load against nginx speaking h2c, see `h2load`.

mod h2load;
mod kernel;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use capture_e2e::{Daemon, Nginx, TestCgroup, daemon_binary, missing_capabilities, run as run_cmd};

const WRK_THREADS: u32 = 1;
const WRK_CONNECTIONS: u32 = 16;
/// How long the daemon may take to catch up with its backlog once wrk has stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `kernel_only` runs the HTTP/1 rounds without export and the kernel phase, and skips the
/// HTTP/2, decoder and exporter benches: the figures the kernel side moves, in a few minutes.
pub fn run(root: &Path, quick: bool, kernel_only: bool) -> Result<()> {
    if let Some(reason) = missing_capabilities() {
        bail!(
            "the bench loads eBPF programs and creates a cgroup: {reason} (try `sudo -E cargo xtask bench`)"
        );
    }
    for tool in ["wrk", "nginx", "taskset", "h2load"] {
        if !on_path(tool) {
            bail!(
                "{tool} is not installed (apt-get install wrk nginx-light util-linux nghttp2-client)"
            );
        }
    }
    let binary = daemon_binary(root)?;
    let seconds = if quick { 3 } else { 10 };
    let rounds = if quick { 1 } else { 2 };
    let out_dir = root.join("bench-out");
    fs::create_dir_all(&out_dir)?;
    let machine = Machine::describe()?;
    let pinned = machine.cpus >= 2;

    let cgroup = TestCgroup::new()?;
    let nginx = Nginx::start_with(Some(&cgroup), if pinned { &[0] } else { &[] })?;
    let load = Load {
        url: format!("{}/", nginx.base_url()),
        server_pid: nginx.pid(),
        pinned,
    };
    println!(
        "bench: nginx pid {} in {}, wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{seconds}s, {rounds} x (A: no capture, B: capture)",
        nginx.pid(),
        cgroup.path().display()
    );
    println!("warm-up");
    load.wrk(1)?;

    let mut baseline = Vec::new();
    let mut captured = Vec::new();
    let mut untargeted = Vec::new();
    let mut exported = Vec::new();
    let delivery = crate::bench_export::Phase::start()?;
    let empty_cgroup = TestCgroup::new()?;
    for round in 1..=rounds {
        println!("round {round}/{rounds} A: no capture");
        let a = load.wrk(seconds)?;
        println!(
            "  {:.0} req/s, p50 {:.0} us, p99 {:.0} us",
            a.requests_per_s, a.p50_us, a.p99_us
        );
        baseline.push(a);

        println!("round {round}/{rounds} B: capture");
        let b = captured_run(
            &binary,
            &cgroup,
            &load,
            seconds,
            &out_dir.join(format!("capture-run-{round}")),
        )?;
        println!(
            "  {:.0} req/s, p50 {:.0} us, p99 {:.0} us; {} exchanges for {} requests, daemon {:.2} CPU s, VmHWM {:.1} MiB, lost events {}, gap bytes {}",
            b.wrk.requests_per_s,
            b.wrk.p50_us,
            b.wrk.p99_us,
            b.exchanges,
            b.wrk.requests,
            b.cpu_seconds,
            b.hwm_mib,
            b.events_lost,
            b.gap_bytes
        );
        captured.push(b);

        println!("round {round}/{rounds} C: daemon running, nginx not targeted");
        let c = captured_run(
            &binary,
            &empty_cgroup,
            &load,
            seconds,
            &out_dir.join(format!("idle-run-{round}")),
        )?;
        println!(
            "  {:.0} req/s, p50 {:.0} us, p99 {:.0} us; daemon {:.2} CPU s",
            c.wrk.requests_per_s, c.wrk.p50_us, c.wrk.p99_us, c.cpu_seconds
        );
        untargeted.push(c);

        if kernel_only {
            continue;
        }
        println!("round {round}/{rounds} E: capture and export to a collector");
        let e = delivery.run(&binary, &cgroup, &load, seconds)?;
        exported.push(e);
    }
    drop(delivery);
    drop(empty_cgroup);
    println!("kernel side: untargeted getppid, program run time against the floor");
    let kernel = kernel::run(&binary, &cgroup, &load, seconds, rounds, &out_dir)?;
    drop(nginx);
    drop(cgroup);

    let (h2, decoder, pipeline, exporter) = if kernel_only {
        let skipped = || Err("skipped (--kernel-only)".to_owned());
        (None, skipped(), skipped(), skipped())
    } else {
        let h2 = h2load::run(&binary, seconds, rounds, pinned, &out_dir)?;
        println!("decoder: cargo bench -p capture-http --bench decoder");
        let decoder = cargo_bench(root, "capture-http", "decoder", "_per_s");
        println!("pipeline: cargo bench -p capture-daemon --bench pipeline");
        let pipeline = cargo_bench(root, "capture-daemon", "pipeline", "pipeline_");
        println!("exporter: cargo bench -p capture-daemon --bench export");
        let exporter = crate::bench_export::exporter_bench(root, quick);
        (Some(h2), decoder, pipeline, exporter)
    };

    let command = if quick {
        "cargo xtask bench --quick"
    } else {
        "cargo xtask bench"
    };
    let mut report = report(&Report {
        command,
        machine: &machine,
        seconds,
        pinned,
        baseline: &baseline,
        captured: &captured,
        untargeted: &untargeted,
        h2: h2.as_ref(),
        decoder: &decoder,
        pipeline: &pipeline,
    });
    report.push_str(&kernel::section(&kernel));
    if !kernel_only {
        report.push_str(&crate::bench_export::report(
            &captured, &exported, &exporter,
        ));
    }
    let latest = out_dir.join("latest.md");
    fs::write(&latest, &report).with_context(|| format!("writing {}", latest.display()))?;
    println!("\n{report}");
    println!("written to {}", latest.display());
    Ok(())
}

/// One wrk run's figures.
#[derive(Debug, Clone)]
pub(crate) struct Wrk {
    requests: u64,
    pub(crate) requests_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    errors: String,
    /// CPU time nginx used during the run (user + system). The capture programs run inside its
    /// syscalls, so their cost shows up here as system time.
    server_cpu_seconds: f64,
    /// Share of the machine's CPU time left idle during the run (0..1), from `/proc/stat`.
    idle_share: f64,
}

impl Wrk {
    /// nginx CPU time per request served, in microseconds.
    fn server_cpu_us_per_request(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.server_cpu_seconds * 1e6 / self.requests as f64
        }
    }
}

/// One B run: wrk plus what the daemon cost and captured.
#[derive(Debug)]
pub(crate) struct Captured {
    pub(crate) wrk: Wrk,
    pub(crate) exchanges: u64,
    pub(crate) cpu_seconds: f64,
    /// The part of `cpu_seconds` spent in the kernel (system time).
    system_seconds: f64,
    pub(crate) hwm_mib: f64,
    events_lost: f64,
    kernel_bytes_lost: f64,
    gap_bytes: f64,
    parse_errors: f64,
    output_bytes: u64,
    drain: Duration,
}

/// A B run: the daemon writes into `run_dir`, which is removed afterwards.
fn captured_run(
    binary: &Path,
    cgroup: &TestCgroup,
    load: &Load,
    seconds: u32,
    run_dir: &Path,
) -> Result<Captured> {
    let (wrk, cost) = with_daemon(
        binary,
        cgroup,
        run_dir,
        || load.wrk(seconds),
        |wrk| wrk.requests,
    )?;
    Ok(Captured {
        wrk,
        exchanges: cost.exchanges,
        cpu_seconds: cost.cpu_seconds,
        system_seconds: cost.system_seconds,
        hwm_mib: cost.hwm_mib,
        events_lost: cost.events_lost,
        kernel_bytes_lost: cost.kernel_bytes_lost,
        gap_bytes: cost.gap_bytes,
        parse_errors: cost.parse_errors,
        output_bytes: cost.output_bytes,
        drain: cost.drain,
    })
}

/// What the daemon cost and captured during one load run.
#[derive(Debug)]
struct DaemonCost {
    exchanges: u64,
    cpu_seconds: f64,
    /// The part of `cpu_seconds` spent in the kernel: writing the JSONL file, waiting on
    /// epoll and timers.
    system_seconds: f64,
    hwm_mib: f64,
    events_lost: f64,
    kernel_bytes_lost: f64,
    gap_bytes: f64,
    parse_errors: f64,
    output_bytes: u64,
    drain: Duration,
}

/// Starts the daemon on `cgroup` (output into `run_dir`, removed afterwards), runs `drive`, lets
/// the daemon catch up with its backlog (until `requests(&load)` exchanges or 2 s without a new
/// one), stops it and returns the load's result with the daemon's cost.
fn with_daemon<L>(
    binary: &Path,
    cgroup: &TestCgroup,
    run_dir: &Path,
    drive: impl FnOnce() -> Result<L>,
    requests: impl Fn(&L) -> u64,
) -> Result<(L, DaemonCost)> {
    let _ = fs::remove_dir_all(run_dir);
    fs::create_dir_all(run_dir)?;
    let mut daemon = Daemon::builder()
        .binary(binary)
        .target_cgroup(cgroup)
        .output_dir(run_dir)
        .start()?;
    let cpu_before = cpu_seconds(daemon.pid())?;
    let system_before = system_seconds(daemon.pid())?;
    let load = drive()?;

    // Let the daemon work through what is still queued; what it spends doing so counts.
    let drain_start = Instant::now();
    let mut last = -1.0;
    let mut stable_since = Instant::now();
    let metrics = loop {
        let metrics = daemon.metrics()?;
        let exchanges = metrics.sum("capture_exchanges_total");
        if exchanges != last {
            last = exchanges;
            stable_since = Instant::now();
        }
        let all_in = exchanges >= requests(&load) as f64;
        if (all_in && stable_since.elapsed() >= Duration::from_millis(300))
            || stable_since.elapsed() >= Duration::from_secs(2)
            || drain_start.elapsed() >= DRAIN_TIMEOUT
        {
            break metrics;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let drain = drain_start.elapsed().saturating_sub(stable_since.elapsed());
    let cpu_seconds = cpu_seconds(daemon.pid())? - cpu_before;
    let system_seconds = system_seconds(daemon.pid())? - system_before;
    let hwm_mib = vm_hwm_kib(daemon.pid())? / 1024.0;
    let status = daemon.stop()?;
    if !status.success() {
        bail!(
            "capture-daemon exited with {status} after SIGTERM; log:\n{}",
            daemon.stderr_text()
        );
    }
    let output_bytes = fs::metadata(daemon.output_path())
        .map(|m| m.len())
        .unwrap_or(0);
    drop(daemon);
    fs::remove_dir_all(run_dir)?;
    let exchanges = metrics.sum("capture_exchanges_total") as u64;
    Ok((
        load,
        DaemonCost {
            exchanges,
            cpu_seconds,
            system_seconds,
            hwm_mib,
            events_lost: metrics.sum("capture_kernel_events_lost_total"),
            kernel_bytes_lost: metrics.sum("capture_kernel_bytes_lost_total"),
            gap_bytes: metrics.sum("capture_gap_bytes_total"),
            parse_errors: metrics.sum("capture_parse_errors_total"),
            output_bytes,
            drain,
        },
    ))
}

/// The load generator and what it drives.
pub(crate) struct Load {
    url: String,
    server_pid: u32,
    /// wrk on CPU 1 (nginx is on CPU 0).
    pinned: bool,
}

impl Load {
    pub(crate) fn wrk(&self, seconds: u32) -> Result<Wrk> {
        wrk(&self.url, seconds, self.pinned, self.server_pid)
    }
}

fn wrk(url: &str, seconds: u32, pinned: bool, server_pid: u32) -> Result<Wrk> {
    let mut cmd = if pinned {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1", "wrk"]);
        cmd
    } else {
        Command::new("wrk")
    };
    cmd.arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(url);
    let server_cpu_before = cpu_seconds(server_pid)?;
    let machine_before = machine_ticks()?;
    let out = run_cmd(&mut cmd, Duration::from_secs(u64::from(seconds) + 30))?;
    let machine_after = machine_ticks()?;
    let mut wrk = parse_wrk(&String::from_utf8_lossy(&out.stdout))?;
    wrk.server_cpu_seconds = cpu_seconds(server_pid)? - server_cpu_before;
    wrk.idle_share = idle_share(machine_before, machine_after);
    Ok(wrk)
}

/// The machine's (busy, idle) CPU time so far, in clock ticks, from the `cpu` line of
/// `/proc/stat` (proc(5)): idle is idle + iowait, busy the other fields but guest time (already
/// counted in user).
fn machine_ticks() -> Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|line| line.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    let idle = field(3) + field(4);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Ok((busy, idle))
}

/// The share of CPU time left idle between two [`machine_ticks`] readings.
fn idle_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let idle = after.1.saturating_sub(before.1) as f64;
    if busy + idle > 0.0 {
        idle / (busy + idle)
    } else {
        0.0
    }
}

/// Reads wrk 4's text report (`--latency`).
fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut requests = None;
    let mut requests_per_s = None;
    let mut p50_us = None;
    let mut p99_us = None;
    let mut errors = Vec::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => requests_per_s = v.parse().ok(),
            ["50%", v] => p50_us = parse_duration_us(v),
            ["99%", v] => p99_us = parse_duration_us(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            _ if line.starts_with("Socket errors") || line.starts_with("Non-2xx") => {
                errors.push(line.to_owned())
            }
            _ => {}
        }
    }
    let missing = || format!("unexpected wrk output:\n{text}");
    Ok(Wrk {
        requests: requests.with_context(missing)?,
        requests_per_s: requests_per_s.with_context(missing)?,
        p50_us: p50_us.with_context(missing)?,
        p99_us: p99_us.with_context(missing)?,
        errors: errors.join("; "),
        server_cpu_seconds: 0.0,
        idle_share: 0.0,
    })
}

/// `129.00us`, `1.23ms`, `2.00s`, `1.5m` -> microseconds.
fn parse_duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        _ => return None,
    };
    Some(number * scale)
}

/// utime + stime of `pid`, in seconds (proc(5) `/proc/<pid>/stat` fields 14 and 15).
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let (user, system) = stat_times(pid)?;
    Ok((user + system) as f64 / clock_ticks_per_second())
}

/// CPU time of process `pid` in the kernel (system time), in seconds.
fn system_seconds(pid: u32) -> Result<f64> {
    Ok(stat_times(pid)?.1 as f64 / clock_ticks_per_second())
}

/// User and system time of process `pid`, in clock ticks.
fn stat_times(pid: u32) -> Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it start past the last ')'.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // after_comm starts at field 3 (state), so field n is fields[n - 3].
    Ok((
        fields.get(11).context("no utime")?.parse()?,
        fields.get(12).context("no stime")?.parse()?,
    ))
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
pub(crate) fn vm_hwm_kib(pid: u32) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/<pid>/status")?;
    line.split_whitespace()
        .nth(1)
        .context("malformed VmHWM")?
        .parse()
        .context("malformed VmHWM")
}

/// Runs the `bench` benchmark of `package`; its result lines (those containing `marker`), or
/// why it could not run.
fn cargo_bench(
    root: &Path,
    package: &str,
    bench: &str,
    marker: &str,
) -> Result<Vec<String>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["bench", "-p", package, "--bench", bench])
        .current_dir(root)
        .output()
        .map_err(|e| format!("could not start cargo bench: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "cargo bench failed ({}):\n{}",
            out.status,
            tail.join("\n")
        ));
    }
    let lines: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains(marker))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        Err(format!(
            "no `{marker}` lines in the {bench} bench output:\n{stdout}"
        ))
    } else {
        Ok(lines)
    }
}

/// What the machine is; benchmark figures mean nothing without it.
struct Machine {
    cpus: usize,
    kernel: String,
    cpu_model: String,
    load_before: String,
    daemon: PathBuf,
}

impl Machine {
    fn describe() -> Result<Self> {
        let kernel = Command::new("uname").arg("-r").output()?;
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Ok(Self {
            cpus: thread::available_parallelism().map_or(1, std::num::NonZero::get),
            kernel: String::from_utf8_lossy(&kernel.stdout).trim().to_owned(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| {
                    l.strip_prefix("model name")
                        .and_then(|r| r.split_once(':'))
                        .map(|(_, m)| m.trim().to_owned())
                })
                .unwrap_or_else(|| "unknown".into()),
            load_before: fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            daemon: daemon_binary(&capture_e2e::workspace_root()).unwrap_or_default(),
        })
    }
}

struct Report<'a> {
    command: &'a str,
    machine: &'a Machine,
    seconds: u32,
    pinned: bool,
    baseline: &'a [Wrk],
    captured: &'a [Captured],
    untargeted: &'a [Captured],
    h2: Option<&'a h2load::Results>,
    decoder: &'a Result<Vec<String>, String>,
    pipeline: &'a Result<Vec<String>, String>,
}

/// The median (the mean of the middle two for an even count); 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0.0), |(s, n), v| (s + v, n + 1.0));
    if n == 0.0 { 0.0 } else { sum / n }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// What the daemon captured and lost over the B runs of one workload: the rows every report's
/// table ends with.
pub(crate) struct CaptureTotals {
    pub(crate) exchanges: u64,
    /// Requests the load generator completed.
    pub(crate) requests: u64,
    pub(crate) hwm_mib: f64,
    pub(crate) events_lost: f64,
    pub(crate) kernel_bytes_lost: f64,
    pub(crate) gap_bytes: f64,
    pub(crate) parse_errors: f64,
    pub(crate) output_bytes: u64,
}

impl CaptureTotals {
    /// Peak memory, loss, parse errors, and exchanges against the requests `tool` completed.
    pub(crate) fn write_rows(&self, s: &mut String, tool: &str) {
        let ratio = |n: f64, d: u64| if d > 0 { n / d as f64 } else { 0.0 };
        let _ = writeln!(
            s,
            "| daemon peak RSS, VmHWM (MiB) | | {:.1} | | ≤ 64: {} |",
            self.hwm_mib,
            verdict(self.hwm_mib <= 64.0)
        );
        let _ = writeln!(
            s,
            "| kernel events lost | | {} | | 0: {} |",
            self.events_lost,
            verdict(self.events_lost == 0.0)
        );
        let _ = writeln!(
            s,
            "| kernel bytes lost | | {} | | |",
            self.kernel_bytes_lost
        );
        let _ = writeln!(
            s,
            "| gap bytes | | {} | | 0: {} |",
            self.gap_bytes,
            verdict(self.gap_bytes == 0.0)
        );
        let _ = writeln!(s, "| parse errors | | {} | | |", self.parse_errors);
        let _ = writeln!(
            s,
            "| exchanges captured / {tool} requests | | {} / {} ({:.2}%) | | |",
            self.exchanges,
            self.requests,
            ratio(self.exchanges as f64, self.requests) * 100.0
        );
        let _ = writeln!(
            s,
            "| JSONL written (bytes per exchange) | | {:.0} | | |",
            ratio(self.output_bytes as f64, self.exchanges)
        );
    }
}

fn report(r: &Report<'_>) -> String {
    let a_rps = mean(r.baseline.iter().map(|w| w.requests_per_s));
    let b_rps = mean(r.captured.iter().map(|c| c.wrk.requests_per_s));
    let ratio = if a_rps > 0.0 { b_rps / a_rps } else { 0.0 };
    let a_p50 = mean(r.baseline.iter().map(|w| w.p50_us));
    let b_p50 = mean(r.captured.iter().map(|c| c.wrk.p50_us));
    let a_p99 = mean(r.baseline.iter().map(|w| w.p99_us));
    let b_p99 = mean(r.captured.iter().map(|c| c.wrk.p99_us));
    let exchanges: u64 = r.captured.iter().map(|c| c.exchanges).sum();
    let requests: u64 = r.captured.iter().map(|c| c.wrk.requests).sum();
    let cpu: f64 = r.captured.iter().map(|c| c.cpu_seconds).sum();
    let cpu_per_10k = if exchanges > 0 {
        cpu / exchanges as f64 * 10_000.0
    } else {
        f64::NAN
    };
    let m = r.machine;

    let mut s = String::new();
    let _ = writeln!(s, "## capture-daemon benchmark\n");
    let _ = writeln!(
        s,
        "`{}` on {} CPUs ({}), kernel {}; load average before the run: {}.",
        r.command, m.cpus, m.cpu_model, m.kernel, m.load_before
    );
    let _ = writeln!(
        s,
        "Workload: nginx `return 200` 1 KiB body, keep-alive, in a test cgroup; `wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} -d{}s --latency` from outside it; {}. \
         A = no daemon, B = daemon targeting nginx's cgroup (JSONL to a file on disk), C = daemon targeting an empty cgroup; runs go A B C per round, figures are means over {} rounds. \
         Daemon: `{}`.\n",
        r.seconds,
        if r.pinned {
            "nginx pinned to CPU 0, wrk to CPU 1, daemon unpinned"
        } else {
            "nothing pinned (one CPU)"
        },
        r.captured.len(),
        m.daemon.display()
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
        "| latency p50 (µs) | {a_p50:.0} | {b_p50:.0} | {:+.0} µs | |",
        b_p50 - a_p50
    );
    let _ = writeln!(
        s,
        "| latency p99 (µs) | {a_p99:.0} | {b_p99:.0} | {:+.0} µs | |",
        b_p99 - a_p99
    );
    let _ = writeln!(
        s,
        "| daemon CPU per 10k exchanges (s) | | {cpu_per_10k:.3} | | |"
    );
    let system: f64 = r.captured.iter().map(|c| c.system_seconds).sum();
    let _ = writeln!(
        s,
        "| of which in the kernel (s; mostly write(2) of the JSONL file into the page cache) | | {:.3} | {:.0} % | |",
        if exchanges > 0 {
            system / exchanges as f64 * 10_000.0
        } else {
            f64::NAN
        },
        if cpu > 0.0 { system / cpu * 100.0 } else { 0.0 }
    );
    let a_srv = mean(r.baseline.iter().map(Wrk::server_cpu_us_per_request));
    let b_srv = mean(r.captured.iter().map(|c| c.wrk.server_cpu_us_per_request()));
    let _ = writeln!(
        s,
        "| nginx CPU per request (µs; includes the capture programs) | {a_srv:.1} | {b_srv:.1} | {:+.1} µs | |",
        b_srv - a_srv
    );
    let a_idle = mean(r.baseline.iter().map(|w| w.idle_share));
    let b_idle = mean(r.captured.iter().map(|c| c.wrk.idle_share));
    let _ = writeln!(
        s,
        "| CPU left idle during the run (share of all CPUs) | {:.1} % | {:.1} % | {:+.1} points | |",
        a_idle * 100.0,
        b_idle * 100.0,
        (b_idle - a_idle) * 100.0
    );
    // wrk keeps a fixed number of requests in flight, so nginx and wrk wait for each other:
    // while the daemon runs on either's CPU, the other soon runs out of work. If every daemon
    // CPU-second stalls the pair that way, B/A = 1 / (nginx's CPU per request B/A + A's
    // requests/s x the daemon's CPU per exchange).
    let stall_model = if a_srv > 0.0 && cpu_per_10k.is_finite() {
        1.0 / (b_srv / a_srv + a_rps * cpu_per_10k / 10_000.0)
    } else {
        f64::NAN
    };
    let _ = writeln!(
        s,
        "| throughput ratio if each daemon CPU-second stalls nginx and wrk alike | | | {stall_model:.3} | |"
    );
    let c_rps = mean(r.untargeted.iter().map(|c| c.wrk.requests_per_s));
    let c_srv = mean(
        r.untargeted
            .iter()
            .map(|c| c.wrk.server_cpu_us_per_request()),
    );
    let _ = writeln!(
        s,
        "| C: daemon running, nginx *not* targeted: requests/s | {a_rps:.0} | {c_rps:.0} | ratio {:.3} | |",
        if a_rps > 0.0 { c_rps / a_rps } else { 0.0 }
    );
    let _ = writeln!(
        s,
        "| C: nginx CPU per request (µs) | {a_srv:.1} | {c_srv:.1} | {:+.1} µs | |",
        c_srv - a_srv
    );
    CaptureTotals {
        exchanges,
        requests,
        hwm_mib: r.captured.iter().map(|c| c.hwm_mib).fold(0.0, f64::max),
        events_lost: r.captured.iter().map(|c| c.events_lost).sum(),
        kernel_bytes_lost: r.captured.iter().map(|c| c.kernel_bytes_lost).sum(),
        gap_bytes: r.captured.iter().map(|c| c.gap_bytes).sum(),
        parse_errors: r.captured.iter().map(|c| c.parse_errors).sum(),
        output_bytes: r.captured.iter().map(|c| c.output_bytes).sum(),
    }
    .write_rows(&mut s, "wrk");

    let _ = writeln!(s, "\nRuns, in order:\n");
    let _ = writeln!(
        s,
        "| run | requests | requests/s | p50 (µs) | p99 (µs) | nginx CPU/request (µs) | exchanges | daemon CPU (s) | VmHWM (MiB) | drain after load | wrk errors |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for (i, ((a, b), c)) in r
        .baseline
        .iter()
        .zip(r.captured)
        .zip(r.untargeted)
        .enumerate()
    {
        let n = i + 1;
        let _ = writeln!(
            s,
            "| A{n} | {} | {:.0} | {:.0} | {:.0} | {:.1} | | | | | {} |",
            a.requests,
            a.requests_per_s,
            a.p50_us,
            a.p99_us,
            a.server_cpu_us_per_request(),
            a.errors
        );
        let _ = writeln!(
            s,
            "| B{n} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {:.2} | {:.1} | {:.1} s | {} |",
            b.wrk.requests,
            b.wrk.requests_per_s,
            b.wrk.p50_us,
            b.wrk.p99_us,
            b.wrk.server_cpu_us_per_request(),
            b.exchanges,
            b.cpu_seconds,
            b.hwm_mib,
            b.drain.as_secs_f64(),
            b.wrk.errors
        );
        let _ = writeln!(
            s,
            "| C{n} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} | {:.2} | {:.1} | | {} |",
            c.wrk.requests,
            c.wrk.requests_per_s,
            c.wrk.p50_us,
            c.wrk.p99_us,
            c.wrk.server_cpu_us_per_request(),
            c.exchanges,
            c.cpu_seconds,
            c.hwm_mib,
            c.wrk.errors
        );
    }

    if let Some(h2) = r.h2 {
        s.push_str(&h2load::section(h2));
    }

    let micro = [
        (
            "Decoder (`cargo bench -p capture-http --bench decoder`)",
            r.decoder,
        ),
        (
            "Daemon pipeline on replayed records, ns of CPU and allocations per exchange \
             (`cargo bench -p capture-daemon --bench pipeline`)",
            r.pipeline,
        ),
    ];
    for (title, result) in micro {
        let _ = writeln!(s, "\n{title}:\n\n```");
        match result {
            Ok(lines) => {
                for line in lines {
                    let _ = writeln!(s, "{line}");
                }
            }
            Err(why) => {
                let _ = writeln!(s, "{why}");
            }
        }
        let _ = writeln!(s, "```");
    }
    s
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

#[cfg(test)]
mod tests {
    use super::{CaptureTotals, parse_duration_us, parse_wrk};

    #[test]
    fn capture_rows_judge_loss_and_memory_and_name_the_tool() {
        let mut s = String::new();
        CaptureTotals {
            exchanges: 1000,
            requests: 990,
            hwm_mib: 70.5,
            events_lost: 0.0,
            kernel_bytes_lost: 0.0,
            gap_bytes: 12.0,
            parse_errors: 0.0,
            output_bytes: 2_000_000,
        }
        .write_rows(&mut s, "h2load");
        assert!(
            s.contains("| daemon peak RSS, VmHWM (MiB) | | 70.5 | | ≤ 64: **missed** |"),
            "{s}"
        );
        assert!(s.contains("| kernel events lost | | 0 | | 0: met |"), "{s}");
        assert!(s.contains("| gap bytes | | 12 | | 0: **missed** |"), "{s}");
        assert!(
            s.contains("| exchanges captured / h2load requests | | 1000 / 990 (101.01%) | | |"),
            "{s}"
        );
        assert!(
            s.contains("| JSONL written (bytes per exchange) | | 2000 | | |"),
            "{s}"
        );
    }

    const WRK_OUTPUT: &str = "Running 2s test @ http://127.0.0.1:18766/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   133.48us  176.55us   4.69ms   98.68%
    Req/Sec    99.52k    11.26k  112.14k    71.43%
  Latency Distribution
     50%  129.00us
     75%  149.00us
     90%  181.00us
     99%    1.41ms
  207531 requests in 2.10s, 232.35MB read
Requests/sec:  98798.97
Transfer/sec:    110.62MB
";

    #[test]
    fn parses_wrk_report() {
        let wrk = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(wrk.requests, 207_531);
        assert!((wrk.requests_per_s - 98_798.97).abs() < 1e-6);
        assert!((wrk.p50_us - 129.0).abs() < 1e-9);
        assert!((wrk.p99_us - 1410.0).abs() < 1e-9);
        assert!(wrk.errors.is_empty());
    }

    #[test]
    fn parses_wrk_durations() {
        assert_eq!(parse_duration_us("2.00s"), Some(2_000_000.0));
        assert_eq!(parse_duration_us("1.5m"), Some(90_000_000.0));
        assert_eq!(parse_duration_us("fast"), None);
    }
}
