//! `cargo xtask cross` (also a step of `cargo xtask test`): the daemon and its eBPF object
//! built for aarch64 with Debian's cross toolchain, and Debian's arm64 kernels fetched for the
//! table check.
//!
//! - The daemon is built with `--target aarch64-unknown-linux-gnu` (linker, `CC` and `AR` of
//!   `gcc-aarch64-linux-gnu` set here, not in a `.cargo/config` that would reach host builds).
//!   Its build script builds the eBPF object with `bpf_target_arch="aarch64"` (aya-build
//!   follows `CARGO_CFG_TARGET_ARCH`). Checked: the binary is an aarch64 ELF, the object it
//!   embeds is a BPF ELF that differs from the host's and reads the syscall number at
//!   `pt_regs` + 280 (`syscallno`), never at + 120 (x86_64's `orig_ax`).
//! - Debian's arm64 cloud kernels (bookworm's 6.1 and bullseye's 5.10) are fetched with
//!   `apt-get download` through a private apt configuration under `target/arm64/apt` (the
//!   host's sources and architectures stay as they are) and their `boot/vmlinuz-*` unpacked to
//!   `target/arm64/kernels/<package>/`, where `capture-daemon`'s test
//!   `kernel::arch_check::aarch64_table_matches_debian_arm64` reads their BTF.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Debian releases whose arm64 cloud kernel the table check reads: 6.1 and the oldest
/// supported, 5.10.
pub const SUITES: &[&str] = &["bookworm", "bullseye"];
/// `e_machine` of an aarch64 ELF.
const EM_AARCH64: u16 = 183;
/// `e_machine` of an eBPF ELF.
const EM_BPF: u16 = 247;

/// The whole step: kernels for the table check, then the cross build and its checks.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    fetch_kernels(root)?;
    build(root)?;
    println!(
        "cross: aarch64 build checked in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the daemon for aarch64 and checks the binary and the eBPF object it embeds.
pub fn build(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let env_target = TARGET.replace('-', "_");
    let envs = [
        (
            format!("CARGO_TARGET_{}_LINKER", env_target.to_uppercase()),
            "aarch64-linux-gnu-gcc",
        ),
        (format!("CC_{env_target}"), "aarch64-linux-gnu-gcc"),
        (format!("AR_{env_target}"), "aarch64-linux-gnu-ar"),
    ];
    let arm = build_object(root, &["--target", TARGET], &envs)
        .context("cross-building capture-daemon for aarch64")?;
    println!(
        "cross: cargo build -p capture-daemon --target {TARGET} took {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The host's build, already done by the test command (a no-op here), for comparison.
    let host = build_object(root, &[], &[])?;

    let binary = root
        .join("target")
        .join(TARGET)
        .join("debug/capture-daemon");
    let bytes = fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let machine = elf_machine(&bytes).with_context(|| format!("{}", binary.display()))?;
    ensure!(
        machine == EM_AARCH64,
        "{} is an ELF for machine {machine}, not aarch64 ({EM_AARCH64})",
        binary.display()
    );
    let arm_bytes = fs::read(&arm).with_context(|| format!("reading {}", arm.display()))?;
    let host_bytes = fs::read(&host).with_context(|| format!("reading {}", host.display()))?;
    for (path, data) in [(&arm, &arm_bytes), (&host, &host_bytes)] {
        let machine = elf_machine(data).with_context(|| format!("{}", path.display()))?;
        ensure!(
            machine == EM_BPF,
            "{} is an ELF for machine {machine}, not BPF ({EM_BPF})",
            path.display()
        );
    }
    ensure!(
        arm_bytes != host_bytes,
        "the aarch64 eBPF object {} is the host's {}: bpf_target_arch did not follow the target",
        arm.display(),
        host.display()
    );
    ensure!(
        bytes
            .windows(arm_bytes.len())
            .any(|w| w == arm_bytes.as_slice()),
        "{} does not embed the aarch64 eBPF object {}",
        binary.display(),
        arm.display()
    );
    // The programs read the syscall number at pt_regs + NR: `rX += 280` in the aarch64 object
    // (syscallno), `rX += 120` in the x86_64 one (orig_ax).
    let (arm_nr, x86_nr) = (
        capture_common::arch::aarch64::NR as i64,
        capture_common::arch::x86_64::NR as i64,
    );
    let arm_adds = register_adds(&arm)?;
    ensure!(
        arm_adds.contains(&arm_nr) && !arm_adds.contains(&x86_nr),
        "the aarch64 eBPF object adds {arm_adds:?} to registers: expected {arm_nr} (syscallno) \
         and no {x86_nr} (x86_64's orig_ax)"
    );
    // The same check tells the host's object apart the other way.
    if cfg!(target_arch = "x86_64") {
        let host_adds = register_adds(&host)?;
        ensure!(
            host_adds.contains(&x86_nr) && !host_adds.contains(&arm_nr),
            "the host's eBPF object adds {host_adds:?} to registers: expected {x86_nr} and no \
             {arm_nr}"
        );
    }
    println!(
        "cross: {} is aarch64 and embeds its eBPF object {} (BPF, reads pt_regs+{arm_nr})",
        binary.display(),
        arm.display()
    );
    Ok(())
}

/// `cargo build -p capture-daemon` with `args`, returning the eBPF object its build script
/// wrote (`OUT_DIR/capture`, from cargo's `build-script-executed` message).
fn build_object(root: &Path, args: &[&str], envs: &[(String, &str)]) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "-p",
        "capture-daemon",
        "--message-format=json-render-diagnostics",
    ])
    .args(args)
    .envs(envs.iter().map(|(k, v)| (k.as_str(), *v)))
    .stdout(Stdio::piped())
    .current_dir(root);
    let out = cmd
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?
        .wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    let mut object = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "build-script-executed"
            && msg["package_id"]
                .as_str()
                .is_some_and(|id| id.contains("capture-daemon"))
            && let Some(dir) = msg["out_dir"].as_str()
        {
            object = Some(PathBuf::from(dir).join("capture"));
        }
    }
    object.with_context(|| format!("{cmd:?} reported no build script run for capture-daemon"))
}

/// `e_machine` of a little-endian 64-bit ELF.
fn elf_machine(data: &[u8]) -> anyhow::Result<u16> {
    ensure!(data.get(..4) == Some(b"\x7fELF"), "not an ELF file");
    ensure!(
        data.get(4) == Some(&2) && data.get(5) == Some(&1),
        "not a 64-bit little-endian ELF"
    );
    let machine = data.get(18..20).context("truncated ELF header")?;
    Ok(u16::from_le_bytes([machine[0], machine[1]]))
}

/// The immediates of `rX += imm` instructions in the object's programs (llvm-objdump prints
/// them in hex).
fn register_adds(object: &Path) -> anyhow::Result<Vec<i64>> {
    let objdump = format!("llvm-objdump-{}", crate::setup::LLVM);
    let out = Command::new(&objdump)
        .args(["-d", "--no-show-raw-insn"])
        .arg(object)
        .output()
        .with_context(|| format!("running {objdump}"))?;
    ensure!(
        out.status.success(),
        "{objdump} -d {} failed: {}",
        object.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut imms: Vec<i64> = text.lines().filter_map(add_immediate).collect();
    imms.sort_unstable();
    imms.dedup();
    Ok(imms)
}

/// The immediate of one disassembled `rN += imm` line (`      11:\tr3 += 0x78`).
fn add_immediate(line: &str) -> Option<i64> {
    let (lhs, rhs) = line.split_once(" += ")?;
    let reg = lhs.rsplit(|c: char| c.is_whitespace()).next()?;
    reg.strip_prefix('r')?.parse::<u8>().ok()?;
    let rhs = rhs.trim();
    let (sign, magnitude) = match rhs.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, rhs),
    };
    let value = match magnitude.strip_prefix("0x") {
        Some(hex) => i64::from_str_radix(hex, 16).ok()?,
        None => magnitude.parse().ok()?,
    };
    Some(sign * value)
}

/// Downloads and unpacks each suite's arm64 cloud kernel image (once; later runs reuse it).
pub fn fetch_kernels(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let work = root.join("target/arm64");
    let mut found = Vec::new();
    for suite in SUITES {
        found.push(fetch_kernel(&work, suite)?);
    }
    Ok(found)
}

fn fetch_kernel(work: &Path, suite: &str) -> anyhow::Result<PathBuf> {
    let kernel = crate::debian::cloud_kernel(work, suite, "arm64", "cross", |deb, into| {
        // Only the image: the modules are most of the package and the check needs none.
        let tar = Command::new("dpkg-deb")
            .arg("--fsys-tarfile")
            .arg(deb)
            .stdout(Stdio::piped())
            .spawn()
            .context("starting dpkg-deb")?;
        let stdout = tar.stdout.context("dpkg-deb stdout")?;
        crate::run(
            Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(into)
                .args(["--wildcards", "./boot/vmlinuz-*"])
                .stdin(stdout),
        )
    })?;
    Ok(kernel.vmlinuz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_add_immediates() {
        assert_eq!(add_immediate("      11:\tr3 += 0x78"), Some(120));
        assert_eq!(add_immediate("      11:\tr3 += 0x118"), Some(280));
        assert_eq!(add_immediate("      12:\tr10 += -0x8"), Some(-8));
        assert_eq!(add_immediate("      12:\tr1 += 16"), Some(16));
        // 32-bit ALU (wN) and other instructions are not register-pointer adds.
        assert_eq!(add_immediate("      13:\tw3 += 0x78"), None);
        assert_eq!(add_immediate("      14:\tr3 = 0x78"), None);
        assert_eq!(add_immediate("      15:\tr3 += r2"), None);
    }

    #[test]
    fn tells_elf_machines_apart() {
        let mut header = b"\x7fELF\x02\x01\x01".to_vec();
        header.resize(64, 0);
        header[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(elf_machine(&header).unwrap(), EM_AARCH64);
        header[18..20].copy_from_slice(&EM_BPF.to_le_bytes());
        assert_eq!(elf_machine(&header).unwrap(), EM_BPF);
        header[4] = 1;
        assert!(elf_machine(&header).is_err(), "32-bit");
        assert!(elf_machine(b"MZ").is_err());
        let own = fs::read("/proc/self/exe").unwrap();
        #[cfg(target_arch = "x86_64")]
        assert_eq!(elf_machine(&own).unwrap(), 62);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(elf_machine(&own).unwrap(), EM_AARCH64);
    }
}
