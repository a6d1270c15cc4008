//! The kernel side's own cost, in the same run as the workload figures:
//!
//! - **Untargeted syscalls.** A `getppid` loop in this process (never a target) timed with no
//!   daemon, with the daemon on the socket tracepoints, and with the daemon forced onto the
//!   syscall fallback; rounds alternate the three and the medians are reported. The difference
//!   is what every process on the node that nobody opted in pays per syscall.
//! - **Run time per event and per request** (`kernel.bpf_stats_enabled`, switched on for this
//!   phase only, since the accounting itself costs two clock reads per run): the capture
//!   programs on each hook against the floor, an empty program and a copy-only program on the
//!   same socket tracepoints, under the same wrk load against the captured nginx.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use capture_e2e::{Daemon, TestCgroup};

use super::{Load, Wrk, median};

/// Calls per getppid sample; about a quarter of a second bare.
const GETPPID_CALLS: u32 = 1_000_000;
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// What the daemon runs in one configuration: none, or its flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Setup {
    NoDaemon,
    /// The capture programs on the socket tracepoints (the default on this kernel).
    Socket,
    /// The capture programs on the syscall fallback.
    Syscall,
    /// The floor: an empty program on the socket tracepoints.
    FloorEmpty,
    /// The floor: a copy-only program on the socket tracepoints.
    FloorCopy,
}

impl Setup {
    fn args(self) -> &'static [&'static str] {
        match self {
            Self::NoDaemon => &[],
            Self::Socket => &["--kernel-hook", "socket"],
            Self::Syscall => &["--kernel-hook", "syscall"],
            Self::FloorEmpty => &["--kernel-floor", "empty"],
            Self::FloorCopy => &["--kernel-floor", "copy"],
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NoDaemon => "no daemon",
            Self::Socket => "capture, socket tracepoints",
            Self::Syscall => "capture, syscall tracepoint (fallback)",
            Self::FloorEmpty => "floor: empty program, socket tracepoints",
            Self::FloorCopy => "floor: copy-only program, socket tracepoints",
        }
    }

    fn start(self, binary: &Path, cgroup: &TestCgroup, run_dir: &Path) -> Result<Option<Daemon>> {
        if self == Self::NoDaemon {
            return Ok(None);
        }
        let _ = fs::remove_dir_all(run_dir);
        fs::create_dir_all(run_dir)?;
        Daemon::builder()
            .binary(binary)
            .target_cgroup(cgroup)
            .output_dir(run_dir)
            .args(self.args().iter().copied())
            .start()
            .map(Some)
    }
}

/// The figures of this phase.
#[derive(Debug, Default)]
pub(crate) struct KernelResults {
    /// (setup, median ns per getppid call, samples).
    pub(crate) getppid: Vec<(Setup, f64, Vec<f64>)>,
    /// One row per setup under load.
    pub(crate) runs: Vec<ProgramRun>,
    /// Why the run-time accounting could not be switched on, if it could not.
    pub(crate) stats_unavailable: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ProgramRun {
    pub(crate) setup: Setup,
    pub(crate) wrk: Wrk,
    pub(crate) run_ns: f64,
    pub(crate) runs: f64,
    pub(crate) events_lost: f64,
}

impl ProgramRun {
    pub(crate) fn ns_per_run(&self) -> f64 {
        if self.runs == 0.0 {
            0.0
        } else {
            self.run_ns / self.runs
        }
    }

    pub(crate) fn ns_per_request(&self) -> f64 {
        if self.wrk.requests == 0 {
            0.0
        } else {
            self.run_ns / self.wrk.requests as f64
        }
    }
}

/// ns per `getppid` over `GETPPID_CALLS` calls.
fn getppid_ns() -> f64 {
    let start = Instant::now();
    let mut sum = 0u64;
    for _ in 0..GETPPID_CALLS {
        sum = sum.wrapping_add(u64::from(std::os::unix::process::parent_id()));
    }
    let elapsed = start.elapsed();
    std::hint::black_box(sum);
    elapsed.as_nanos() as f64 / f64::from(GETPPID_CALLS)
}

/// Switches `kernel.bpf_stats_enabled` on for its lifetime and restores the old value.
struct StatsOn(String);

impl StatsOn {
    fn new() -> Result<Self> {
        let old = fs::read_to_string(BPF_STATS).with_context(|| format!("reading {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("writing {BPF_STATS}"))?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, &self.0);
    }
}

pub(crate) fn run(
    binary: &Path,
    cgroup: &TestCgroup,
    load: &Load,
    seconds: u32,
    rounds: u32,
    out_dir: &Path,
) -> Result<KernelResults> {
    let mut results = KernelResults::default();
    let run_dir = out_dir.join("kernel-run");

    // Untargeted syscalls: alternate the setups, several samples each per round.
    let setups = [Setup::NoDaemon, Setup::Socket, Setup::Syscall];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for round in 1..=rounds.max(3) {
        for (i, setup) in setups.iter().enumerate() {
            let daemon = setup.start(binary, cgroup, &run_dir)?;
            for _ in 0..3 {
                samples[i].push(getppid_ns());
            }
            if let Some(mut daemon) = daemon {
                daemon.stop()?;
            }
            println!(
                "kernel round {round}: getppid {}: {:.1} ns",
                setup.name(),
                samples[i].last().copied().unwrap_or_default()
            );
        }
    }
    for (setup, s) in setups.into_iter().zip(samples) {
        results.getppid.push((setup, median(&s), s));
    }

    // Program run time under load, against the floor.
    let stats = match StatsOn::new() {
        Ok(s) => Some(s),
        Err(e) => {
            results.stats_unavailable = Some(format!("{e:#}"));
            None
        }
    };
    if stats.is_some() {
        for setup in [
            Setup::FloorEmpty,
            Setup::FloorCopy,
            Setup::Socket,
            Setup::Syscall,
        ] {
            let mut daemon = setup
                .start(binary, cgroup, &run_dir)?
                .context("a daemon for the run-time figures")?;
            let wrk = load.wrk(seconds)?;
            let metrics = daemon.metrics()?;
            daemon.stop()?;
            let run = ProgramRun {
                setup,
                wrk,
                run_ns: metrics.sum("capture_kernel_program_run_seconds_total") * 1e9,
                runs: metrics.sum("capture_kernel_program_runs_total"),
                events_lost: metrics.sum("capture_kernel_events_lost_total"),
            };
            println!(
                "kernel: {}: {:.0} req/s, {:.0} ns per program run, {:.0} ns per request, nginx {:.2} us CPU per request",
                setup.name(),
                run.wrk.requests_per_s,
                run.ns_per_run(),
                run.ns_per_request(),
                run.wrk.server_cpu_us_per_request()
            );
            results.runs.push(run);
        }
    }
    drop(stats);
    let _ = fs::remove_dir_all(&run_dir);
    Ok(results)
}

/// The report's section for this phase.
pub(crate) fn section(r: &KernelResults) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "\n## Kernel side\n");
    let _ = writeln!(
        s,
        "Untargeted syscalls: a `getppid` loop ({GETPPID_CALLS} calls per sample) in a process nobody opted in, medians of alternated samples.\n"
    );
    let _ = writeln!(s, "| setup | ns per getppid | added | samples |");
    let _ = writeln!(s, "|---|---|---|---|");
    let bare = r
        .getppid
        .iter()
        .find(|(setup, ..)| *setup == Setup::NoDaemon)
        .map_or(0.0, |(_, m, _)| *m);
    for (setup, m, samples) in &r.getppid {
        let list: Vec<String> = samples.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            s,
            "| {} | {m:.1} | {:+.1} | {} |",
            setup.name(),
            m - bare,
            list.join(", ")
        );
    }
    if let Some(why) = &r.stats_unavailable {
        let _ = writeln!(s, "\nProgram run time not measured: {why}");
        return s;
    }
    let _ = writeln!(
        s,
        "\nProgram run time (`kernel.bpf_stats_enabled`) under the wrk load against the captured nginx; one run each. \"per run\" divides by every invocation (on the socket tracepoints: every socket send or receive on the node, wrk's included; on `sys_exit`: every syscall on the node); \"per request\" by nginx's requests.\n"
    );
    let _ = writeln!(
        s,
        "| programs | req/s | ns per run | ns per request | x floor (copy) | nginx CPU us/request | events lost |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    let floor = r
        .runs
        .iter()
        .find(|run| run.setup == Setup::FloorCopy)
        .map_or(0.0, ProgramRun::ns_per_request);
    for run in &r.runs {
        let versus = if floor > 0.0 {
            format!("{:.2}", run.ns_per_request() / floor)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.0} | {versus} | {:.2} | {:.0} |",
            run.setup.name(),
            run.wrk.requests_per_s,
            run.ns_per_run(),
            run.ns_per_request(),
            run.wrk.server_cpu_us_per_request(),
            run.events_lost
        );
    }
    s
}
