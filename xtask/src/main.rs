//! `cargo xtask`: the project's one entry point for set-up, building, the demo, the test suite
//! and the benchmarks. Every command first makes sure its prerequisites are installed (one
//! line per thing installed), or stops with the exact command to run when it cannot.

mod bench;
mod bench_export;
mod cross;
mod debian;
mod demo;
mod demo_diff;
mod image;
mod kind;
mod modcycles;
mod setup;
mod vmtest;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, demo, test and benchmark capture-daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum DemoAct {
    /// Record a JSON service, replay it against two versions and diff: the change is red,
    /// the noise green.
    Diff,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the prerequisites and build the eBPF programs and the daemon.
    BuildEbpf,
    /// Capture a bundled server and client in a fresh cgroup and show the exchanges;
    /// `demo diff`: record, replay against two versions and diff.
    Demo {
        #[command(subcommand)]
        act: Option<DemoAct>,
    },
    /// The whole suite: lints, unit and property tests, end-to-end tests with real eBPF, the
    /// aarch64 cross build, fuzzing.
    Test {
        /// Seconds each fuzz target runs after its committed seed corpus (0: the seeds only,
        /// refused under CI, where fuzzing is part of the suite).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u32,
        /// Skip the VM tests (Debian's 6.1 and 5.10 under qemu, several minutes); refused
        /// under CI, where they are part of the suite.
        #[arg(long)]
        no_vm: bool,
    },
    /// Workload throughput and latency with and without capture, decoder throughput.
    Bench {
        /// A shorter run, for a quick look.
        #[arg(long)]
        quick: bool,
        /// Only what the kernel side moves: the HTTP/1 rounds A, B, C and the kernel phase
        /// (untargeted getppid, program run time against the floor).
        #[arg(long)]
        kernel_only: bool,
    },
    /// The kernel side on Debian's own kernels (default 6.1 and 5.10), each booted under qemu
    /// with the host's filesystem shared: which hook each kernel gets, the kernel tests, and
    /// an HTTP/1 and an h2c capture checked exactly.
    VmTest {
        /// A kernel version to boot (6.1, 5.10 or 6.12); repeatable.
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<String>,
        /// Only the end-to-end runs whose test name contains this (no hook probe, no kernel
        /// tests).
        #[arg(long, value_name = "TEST")]
        only: Option<String>,
        /// Only the end-to-end runs on this hook (auto, fentry or kprobe).
        #[arg(long, value_name = "HOOK")]
        hook: Option<String>,
        /// Each end-to-end run this many times in the same guest.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
    },
    /// The daemon and its eBPF object cross-built for aarch64 (Debian's cross toolchain) and
    /// checked, and Debian's arm64 kernels fetched for the aarch64 table check (a step of
    /// `test`).
    Cross,
    /// The chart on a local kind cluster: `up` (cluster, image, collector, chart), `demo`
    /// (annotated app, traffic, captured exchanges), `down`.
    Kind {
        #[command(subcommand)]
        action: kind::Action,
        /// Print the commands instead of running them (nothing is checked or written).
        #[arg(long, global = true)]
        dry_run: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let root = workspace_root()?;
    match cli.command {
        Cmd::BuildEbpf => {
            setup::toolchain()?;
            cargo(&root, &["build", "-p", "capture-daemon"])?;
            println!(
                "built {}",
                root.join("target/debug/capture-daemon").display()
            );
        }
        Cmd::Demo { act } => {
            setup::toolchain()?;
            setup::test_tools()?;
            cargo(&root, &["build", "-p", "capture-daemon"])?;
            set_daemon_bin(&root, "debug");
            match act {
                None => demo::run(&root)?,
                Some(DemoAct::Diff) => {
                    cargo(&root, &["build", "-p", "capture-cli"])?;
                    set_env("CAPTURE_CLI_BIN", &root.join("target/debug/capture"));
                    demo_diff::run(&root)?;
                }
            }
        }
        Cmd::Test {
            fuzz_seconds,
            no_vm,
        } => {
            // Refused before any step runs, so a CI log never ends in "all steps passed"
            // without the fuzzing and the other kernels it promises.
            if fuzz_seconds == 0 && capture_e2e::running_in_ci() {
                bail!(
                    "--fuzz-seconds 0 under CI: the suite includes fuzzing; give it at least 1 s per target"
                );
            }
            if no_vm && capture_e2e::running_in_ci() {
                bail!("--no-vm under CI: the suite includes the VM tests of other kernels");
            }
            if capture_e2e::running_in_ci() {
                // A clean clone builds everything once: incremental caches would only take
                // disk (gigabytes of it) for rebuilds that never come.
                set_env("CARGO_INCREMENTAL", Path::new("0"));
            }
            report_disk(&root, "at the start");
            setup::toolchain()?;
            setup::test_tools()?;
            setup::chart_test_tools(&root)?;
            check_root_for_ci()?;
            cargo(&root, &["fmt", "--all", "--", "--check"])?;
            modcycles::check(&root.join("capture-daemon/src"))?;
            modcycles::check_layering(&root, "capture-collector")?;
            cargo(&root, &["clippy", "--all-targets", "--", "-D", "warnings"])?;
            // Neither is in the default members: the kernel crate builds only for the BPF
            // target, the fuzz crate is its own nightly workspace.
            clippy_kernel(&root)?;
            setup::cargo_fuzz()?;
            clippy_fuzz(&root, "capture-http/fuzz")?;
            clippy_fuzz(&root, "capture-collector/fuzz")?;
            cargo(&root, &["build", "-p", "capture-daemon"])?;
            set_daemon_bin(&root, "debug");
            // The aarch64 build, and the arm64 kernels the aarch64 table test
            // (capture-daemon's kernel::arch_check) reads.
            setup::cross_tools()?;
            cross::run(&root)?;
            // The delivery tests (tests/e2e/export.rs) run the real collector.
            cargo(&root, &["build", "-p", "capture-collector"])?;
            set_env(
                "CAPTURE_COLLECTOR_BIN",
                &root.join("target/debug/capture-collector"),
            );
            // The replay tests (tests/e2e/replay.rs) run the capture CLI.
            cargo(&root, &["build", "-p", "capture-cli"])?;
            set_env("CAPTURE_CLI_BIN", &root.join("target/debug/capture"));
            report_disk(&root, "before the tests");
            cargo(&root, &["test", "--no-fail-fast"])?;
            // The same HTTP suites on the syscall fallback, the hook kernels without the
            // socket tracepoints get (the first pass used the best this kernel has).
            let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(Command::new(cargo_bin)
                .args([
                    "test",
                    "--no-fail-fast",
                    "-p",
                    "capture-e2e",
                    "--test",
                    "http1",
                    "--test",
                    "http2",
                ])
                .env("CAPTURE_E2E_KERNEL_HOOK", "syscall")
                .current_dir(&root))?;
            // The kernel side on the kernels this host is not: Debian's 6.1 (fentry and
            // kprobes, which this host lacks) and 5.10 (the oldest supported, no bpf_loop).
            if !no_vm {
                report_disk(&root, "before the VM tests");
                setup::vm_tools()?;
                vmtest::run(&root, &[], &vmtest::Selection::default())?;
            }
            report_disk(&root, "before the fuzz targets");
            for target in FUZZ_TARGETS {
                fuzz(&root, "capture-http/fuzz", target, fuzz_seconds)?;
            }
            for target in COLLECTOR_FUZZ_TARGETS {
                fuzz(&root, "capture-collector/fuzz", target, fuzz_seconds)?;
            }
            report_disk(&root, "at the end");
            if fuzz_seconds == 0 || no_vm {
                println!(
                    "xtask test: all steps passed, but {}",
                    match (fuzz_seconds == 0, no_vm) {
                        (true, true) =>
                            "without the VM tests, and fuzzing ran the seed corpora only",
                        (true, false) => "fuzzing ran the seed corpora only (--fuzz-seconds 0)",
                        _ => "without the VM tests (--no-vm)",
                    }
                );
            } else {
                println!("xtask test: all steps passed");
            }
        }
        Cmd::Bench { quick, kernel_only } => {
            setup::toolchain()?;
            setup::test_tools()?;
            cargo(&root, &["build", "-p", "capture-daemon", "--release"])?;
            set_daemon_bin(&root, "release");
            // Phase E and the exporter bench run the real collector.
            cargo(&root, &["build", "-p", "capture-collector", "--release"])?;
            set_env(
                "CAPTURE_COLLECTOR_BIN",
                &root.join("target/release/capture-collector"),
            );
            bench::run(&root, quick, kernel_only)?;
        }
        Cmd::VmTest {
            kernels,
            only,
            hook,
            repeat,
        } => {
            setup::toolchain()?;
            setup::test_tools()?;
            setup::vm_tools()?;
            vmtest::run(&root, &kernels, &vmtest::Selection { only, hook, repeat })?;
        }
        Cmd::Cross => {
            setup::toolchain()?;
            setup::cross_tools()?;
            cargo(&root, &["build", "-p", "capture-daemon"])?;
            cross::run(&root)?;
        }
        Cmd::Kind { action, dry_run } => kind::run(&root, action, dry_run)?,
    }
    Ok(())
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

/// The e2e tests, demo and bench find the daemon through this variable.
fn set_daemon_bin(root: &Path, profile: &str) {
    let bin = root.join("target").join(profile).join("capture-daemon");
    set_env("CAPTURE_DAEMON_BIN", &bin);
}

#[expect(
    unsafe_code,
    reason = "set_var is unsafe in edition 2024; no other thread exists yet"
)]
fn set_env(key: &str, value: &Path) {
    // SAFETY: called from main before xtask starts any thread, so no one reads the environment
    // concurrently.
    unsafe { std::env::set_var(key, value) };
}

/// One line with the space left where the builds go, so that a suite that runs out of disk
/// says how much it had at each step (a build that fails with ENOSPC says only that).
fn report_disk(root: &Path, when: &str) {
    let out = Command::new("df")
        .args(["-P", "-k"])
        .arg(root)
        .output()
        .ok()
        .filter(|o| o.status.success());
    // `df -P`: a header, then "filesystem blocks used available capacity mount".
    let free_kib = out.as_ref().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout);
        text.lines()
            .nth(1)?
            .split_whitespace()
            .nth(3)?
            .parse::<u64>()
            .ok()
    });
    match free_kib {
        Some(kib) => println!(
            "xtask test: disk {when}: {:.1} GiB free on {}",
            kib as f64 / (1024.0 * 1024.0),
            root.display()
        ),
        None => println!("xtask test: disk {when}: unknown (df failed)"),
    }
}

/// Under CI the BPF tests must run for real: refuse to go on when they cannot.
fn check_root_for_ci() -> anyhow::Result<()> {
    if capture_e2e::running_in_ci() && !nix_is_root() {
        bail!("CI=true but not running as root: the eBPF end-to-end tests cannot run; run as root");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

pub(crate) fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(root))
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The fuzz targets of `capture-http/fuzz`; each has a committed seed corpus in
/// `capture-http/fuzz/seeds/<target>` (runs and findings: docs/fuzzing.md).
const FUZZ_TARGETS: [&str; 6] = ["http1", "http2", "h2_frames", "hpack", "body", "har_read"];

/// The fuzz targets of `capture-collector/fuzz` (the ingest path from arbitrary protobuf
/// bytes); seeds in `capture-collector/fuzz/seeds/<target>`, written by
/// `cargo run -p capture-collector --example fuzz_seeds`.
const COLLECTOR_FUZZ_TARGETS: [&str; 1] = ["ingest"];

/// Clippy on the kernel programs, built for the BPF target exactly as `aya-build` builds them
/// (nightly, `build-std=core`, the `bpf_target_arch` cfg), once per architecture the programs
/// have tables for (x86_64, aarch64), each in a target directory of its own.
fn clippy_kernel(root: &Path) -> anyhow::Result<()> {
    for arch in ["x86_64", "aarch64"] {
        // The host's arch keeps the directory it always had (a warm cache in CI).
        let dir = if arch == std::env::consts::ARCH {
            root.join("target/ebpf-clippy")
        } else {
            root.join(format!("target/ebpf-clippy-{arch}"))
        };
        let mut cmd = nightly_cargo();
        cmd.args([
            "clippy",
            "-p",
            "capture-ebpf",
            "--bins",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(dir)
        .args(["--", "-D", "warnings"])
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        .current_dir(root);
        run(&mut cmd)?;
    }
    Ok(())
}

/// Clippy on the fuzz targets of `crate_dir` (their own workspace, nightly for
/// libfuzzer-sys).
fn clippy_fuzz(root: &Path, crate_dir: &str) -> anyhow::Result<()> {
    let mut cmd = nightly_cargo();
    cmd.args(["clippy", "--all-targets", "--", "-D", "warnings"])
        .current_dir(root.join(crate_dir));
    run(&mut cmd)
}

/// `cargo +nightly`, without the stable toolchain that `cargo xtask` put in the environment.
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTFLAGS");
    cmd
}

/// Runs `target` over its committed seeds (each must pass), then fuzzes it for `seconds`.
/// The seeds are copied into a temporary corpus so that what libFuzzer adds never touches the
/// checkout.
fn fuzz(root: &Path, crate_dir: &str, target: &str, seconds: u32) -> anyhow::Result<()> {
    let fuzz_dir = root.join(crate_dir);
    let seeds = fuzz_dir.join("seeds").join(target);
    let count = std::fs::read_dir(&seeds)
        .with_context(|| format!("reading the seed corpus {}", seeds.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .count();
    if count == 0 {
        bail!("the seed corpus {} is empty", seeds.display());
    }
    let corpus = tempfile::Builder::new()
        .prefix(&format!("fuzz-{target}-"))
        .tempdir()?;
    // `-runs=0` executes every input of the corpora once and stops: a seed that crashes fails.
    let limit = if seconds == 0 {
        println!("fuzzing {target}: its {count} seeds only");
        "-runs=0".to_owned()
    } else {
        println!("fuzzing {target}: its {count} seeds, then for {seconds}s");
        format!("-max_total_time={seconds}")
    };
    let mut cmd = nightly_cargo();
    cmd.args(["fuzz", "run", target])
        .arg(corpus.path())
        .arg(&seeds)
        .args(["--", &limit])
        .current_dir(&fuzz_dir);
    run(&mut cmd)
}
