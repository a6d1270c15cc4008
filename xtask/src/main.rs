//! `cargo xtask`: the project's one entry point for set-up, building, the demo, the test suite
//! and the benchmarks. Every command first makes sure its prerequisites are installed (one
//! line per thing installed), or stops with the exact command to run when it cannot.

mod bench;
mod bench_export;
mod demo;
mod demo_diff;
mod image;
mod kind;
mod modcycles;
mod setup;

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
    /// The whole suite: lints, unit and property tests, end-to-end tests with real eBPF, fuzzing.
    Test {
        /// Seconds each fuzz target runs (0 skips fuzzing).
        #[arg(long, default_value_t = 30)]
        fuzz_seconds: u32,
    },
    /// Workload throughput and latency with and without capture, decoder throughput.
    Bench {
        /// A shorter run, for a quick look.
        #[arg(long)]
        quick: bool,
    },
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
        Cmd::Test { fuzz_seconds } => {
            setup::toolchain()?;
            setup::test_tools()?;
            setup::chart_test_tools(&root)?;
            check_root_for_ci()?;
            cargo(&root, &["fmt", "--all", "--", "--check"])?;
            modcycles::check(&root.join("capture-daemon/src"))?;
            modcycles::check_layering(&root, "capture-collector")?;
            cargo(&root, &["clippy", "--all-targets", "--", "-D", "warnings"])?;
            cargo(&root, &["build", "-p", "capture-daemon"])?;
            set_daemon_bin(&root, "debug");
            // The delivery tests (tests/e2e/export.rs) run the real collector.
            cargo(&root, &["build", "-p", "capture-collector"])?;
            set_env(
                "CAPTURE_COLLECTOR_BIN",
                &root.join("target/debug/capture-collector"),
            );
            // The replay tests (tests/e2e/replay.rs) run the capture CLI.
            cargo(&root, &["build", "-p", "capture-cli"])?;
            set_env("CAPTURE_CLI_BIN", &root.join("target/debug/capture"));
            cargo(&root, &["test", "--no-fail-fast"])?;
            if fuzz_seconds > 0 {
                setup::cargo_fuzz()?;
                fuzz(&root, "http1", fuzz_seconds)?;
                fuzz(&root, "http2", fuzz_seconds)?;
            }
            println!("xtask test: all steps passed");
        }
        Cmd::Bench { quick } => {
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
            bench::run(&root, quick)?;
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

fn fuzz(root: &Path, target: &str, seconds: u32) -> anyhow::Result<()> {
    println!("fuzzing {target} for {seconds}s");
    run(Command::new("cargo")
        .args([
            "+nightly",
            "fuzz",
            "run",
            target,
            "--",
            &format!("-max_total_time={seconds}"),
        ])
        .current_dir(root.join("capture-http/fuzz"))
        // Under `cargo xtask` these point at the stable toolchain; cargo-fuzz needs nightly.
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO"))
}
