//! Prerequisites, installed when missing with one line each, or a stop with the exact command
//! when this machine cannot install them (not root, not Debian).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// LLVM for bpf-linker: its major version must match nightly rustc's LLVM.
pub(crate) const LLVM: &str = "22";
pub(crate) const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Debian packages the build needs (bpf-linker links against LLVM).
pub(crate) const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Debian packages the demo, the e2e tests and the benchmarks run. python3-h2: the HTTP/2
/// server the `Upgrade: h2c` test talks to (nginx and nghttpd only do prior knowledge);
/// nghttp2-client: h2load, the HTTP/2 benchmark's load generator; postgresql: the server
/// binaries the collector's PostgreSQL tests and benchmark start in a temporary directory
/// (`initdb`/`pg_ctl` as the `postgres` user; the package's own cluster is not used).
const TEST_PACKAGES: &[&str] = &[
    "curl",
    "nginx-light",
    "wrk",
    "python3",
    "nghttp2-client",
    "python3-h2",
    "postgresql",
    // promtool, which checks the daemon's /metrics (tests/e2e/metrics.rs).
    "prometheus",
];
/// Debian packages for the chart tests and the kind flow: a Python venv for the Helm SDK,
/// setpriv (util-linux) for the capability test, openssl to verify the kind TLS material.
const CHART_TEST_PACKAGES: &[&str] = &["python3-venv", "util-linux", "openssl"];

/// nightly + rust-src, LLVM, bpf-linker.
pub fn toolchain() -> anyhow::Result<()> {
    if !output_ok("rustup", &["run", "nightly", "rustc", "--version"]) {
        bail!("the nightly toolchain is missing; run: rustup toolchain install nightly");
    }
    let installed = output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("installing rust-src for nightly (the eBPF build compiles core from source)");
        crate::run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    apt_install(BUILD_PACKAGES, "bpf-linker links against LLVM 22")?;
    let linker = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        println!(
            "installing bpf-linker {BPF_LINKER_VERSION} against LLVM {LLVM} (about 2 minutes)"
        );
        let (args, envs) = bpf_linker_install();
        crate::run(Command::new("cargo").args(args).envs(envs)).context("installing bpf-linker")?;
    }
    Ok(())
}

/// `cargo` arguments and environment that install bpf-linker against LLVM (the Dockerfile
/// does the same; xtask/src/image.rs checks it).
pub(crate) fn bpf_linker_install() -> (Vec<String>, Vec<(String, String)>) {
    let prefix = format!("/usr/lib/llvm-{LLVM}");
    let args = [
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        &format!("llvm-{LLVM}"),
    ]
    .map(str::to_owned)
    .to_vec();
    let envs = vec![
        ("LLVM_PREFIX".to_owned(), prefix.clone()),
        (format!("LLVM_SYS_{LLVM}1_PREFIX"), prefix),
    ];
    (args, envs)
}

/// What the demo, tests and benchmarks drive: curl, nginx, wrk, python3, h2load, PostgreSQL.
pub fn test_tools() -> anyhow::Result<()> {
    apt_install(TEST_PACKAGES, "the demo, tests and benchmarks run them")?;
    // nginx-light's package may start a system nginx on port 80; ours run on their own ports.
    Ok(())
}

/// Debian packages `cargo xtask vm-test` runs: qemu (with its virtiofsd, which shares the
/// host's filesystem with the guest), a static busybox for the guest's initramfs, xz for
/// compressed kernel modules.
const VM_TEST_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils"];

/// What `cargo xtask vm-test` boots kernels with.
pub fn vm_tools() -> anyhow::Result<()> {
    apt_install(
        VM_TEST_PACKAGES,
        "vm-test boots Debian's kernels under qemu",
    )
}

/// Debian's cross toolchain for aarch64 (`cargo xtask cross`): gcc and binutils link the
/// daemon, libc6-dev-arm64-cross is the target's C library, linux-libc-dev-arm64-cross the
/// arm64 kernel headers the aarch64 syscall table is checked against (gcc and linux-libc-dev:
/// the host's own, for the x86_64 table).
const CROSS_PACKAGES: &[&str] = &[
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "linux-libc-dev-arm64-cross",
    "gcc",
    "linux-libc-dev",
];

/// What `cargo xtask cross` builds with: the Debian cross toolchain and the standard library
/// of `aarch64-unknown-linux-gnu` for the stable toolchain the workspace builds with.
pub fn cross_tools() -> anyhow::Result<()> {
    apt_install(CROSS_PACKAGES, "the aarch64 cross build and table check")?;
    let target = crate::cross::TARGET;
    let installed = output(
        "rustup",
        &["target", "list", "--installed", "--toolchain", "stable"],
    )
    .unwrap_or_default();
    if !installed.lines().any(|l| l.trim() == target) {
        println!("installing the {target} standard library for stable");
        crate::run(Command::new("rustup").args([
            "target",
            "add",
            target,
            "--toolchain",
            "stable",
        ]))?;
    }
    Ok(())
}

/// What the chart tests need: setpriv, openssl, and the Helm SDK.
pub fn chart_test_tools(root: &Path) -> anyhow::Result<()> {
    apt_install(CHART_TEST_PACKAGES, "the chart tests use them")?;
    helm_sdk(root)
}

/// Helm's engine without a helm binary: helm-python-sdk (pinned) in a venv under `target/`,
/// which the chart tests and `cargo xtask kind` drive. Debian's Python is externally managed,
/// so the SDK never goes into the system site-packages.
pub fn helm_sdk(root: &Path) -> anyhow::Result<()> {
    use capture_e2e::helm::{HELM_SDK_PACKAGE, HELM_SDK_VERSION, HelmSdk, sdk_venv};
    if HelmSdk::find(root).is_ok() {
        return Ok(());
    }
    // Debian splits venv out of python3; elsewhere (`kind up` on a laptop) python3 has it.
    if output_ok("dpkg-query", &["--version"]) {
        apt_install(&["python3-venv"], "the Helm SDK lives in a Python venv")?;
    }
    let venv = sdk_venv(root);
    println!(
        "installing {HELM_SDK_PACKAGE}=={HELM_SDK_VERSION} into {} (Helm's engine for the chart tests)",
        venv.display()
    );
    crate::run(
        Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg("--clear")
            .arg(&venv),
    )
    .context("creating the Helm SDK venv (Debian needs python3-venv)")?;
    crate::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{HELM_SDK_PACKAGE}=={HELM_SDK_VERSION}")),
    )
    .with_context(|| format!("installing {HELM_SDK_PACKAGE}=={HELM_SDK_VERSION}"))?;
    HelmSdk::find(root).map(|_| ())
}

/// cargo-fuzz, for the fuzz step of the test suite.
pub fn cargo_fuzz() -> anyhow::Result<()> {
    if output_ok("cargo", &["fuzz", "--version"]) {
        return Ok(());
    }
    println!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (the test suite fuzzes the decoders)");
    crate::run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn apt_install(packages: &[&str], why: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    if !is_root || !output_ok("apt-get", &["--version"]) {
        bail!("missing packages ({why}); run as root: {command}");
    }
    println!("installing {} ({why})", missing.join(" "));
    crate::run(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .stdout(Stdio::null()),
    )?;
    crate::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null()),
    )
    .with_context(|| format!("installing {}; try: {command}", missing.join(" ")))
}

fn dpkg_installed(package: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|s| s.contains("install ok installed"))
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn output_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
