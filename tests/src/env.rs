//! What the end-to-end tests need from the machine (root, cgroup v2, the daemon binary) and
//! what to do when it is missing: fail under CI, skip loudly elsewhere.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use capture_test_support::running_in_ci;

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// Where the cgroup v2 hierarchy is mounted: `$CAPTURE_E2E_CGROUP_ROOT`, else the first
/// `cgroup2` mount in /proc/self/mountinfo (`/sys/fs/cgroup` on unified hosts,
/// `/sys/fs/cgroup/unified` on hybrid ones).
pub fn cgroup2_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CAPTURE_E2E_CGROUP_ROOT") {
        return Ok(PathBuf::from(dir));
    }
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    for line in mountinfo.lines() {
        // `... mount-point options - fstype source super-options` (proc(5)).
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2")
            && let Some(mount_point) = left.split_whitespace().nth(4)
        {
            return Ok(PathBuf::from(mount_point));
        }
    }
    bail!("no cgroup2 file system is mounted (see /proc/self/mountinfo)")
}

/// Why the real-eBPF tests cannot run here, or `None` when they can.
pub fn missing_capabilities() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "not running as root (loading eBPF programs and creating cgroups needs it)".into(),
        );
    }
    match cgroup2_root() {
        Ok(root) if root.join("cgroup.procs").exists() => None,
        Ok(root) => Some(format!("{} is not a cgroup v2 hierarchy", root.display())),
        Err(err) => Some(format!("{err:#}")),
    }
}

/// Gate for every test that needs root, BPF and cgroup v2.
///
/// `Ok(true)`: go ahead. `Ok(false)`: not possible here and not under CI; a loud notice was
/// printed and the caller returns early. `Err`: not possible here and `CI` is set (or
/// `CAPTURE_E2E_REQUIRE=1`), so the test fails instead of passing vacuously.
pub fn capture_environment_ready() -> Result<bool> {
    let Some(reason) = missing_capabilities() else {
        return Ok(true);
    };
    if running_in_ci() || std::env::var_os("CAPTURE_E2E_REQUIRE").is_some_and(|v| v == "1") {
        bail!(
            "end-to-end capture tests cannot run: {reason}; CI must run them as root on a host with cgroup v2 and BPF"
        );
    }
    eprintln!(
        "\n*** SKIPPED end-to-end capture test: {reason}.\n*** Run as root with cgroup v2 (e.g. `sudo -E cargo xtask test`); under CI=true this is a failure.\n"
    );
    Ok(false)
}

/// The daemon to test: `$CAPTURE_DAEMON_BIN`, else the newest of
/// `<target>/{release,debug}/capture-daemon` (`<target>` = `$CARGO_TARGET_DIR` or `<root>/target`).
pub fn daemon_binary(root: &Path) -> Result<PathBuf> {
    built_binary(
        root,
        "capture-daemon",
        "capture-daemon",
        "CAPTURE_DAEMON_BIN",
    )
}

/// A binary of this workspace to test: `$env_var` when set (it must exist), else the newest of
/// `<target>/{release,debug}/<name>` (`<target>` = `$CARGO_TARGET_DIR` or `<root>/target`).
/// The error says to build `package` or set `env_var`.
pub fn built_binary(root: &Path, name: &str, package: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(env_var) {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("{env_var}={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let newest = ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join(name))
        .filter_map(|path| {
            let modified = fs::metadata(&path).and_then(|m| m.modified()).ok()?;
            Some((modified, path))
        })
        .max_by_key(|(modified, _): &(SystemTime, PathBuf)| *modified);
    match newest {
        Some((_, path)) => Ok(path),
        None => bail!(
            "no {name} binary under {}/{{release,debug}}: run `cargo build -p {package}` first or set {env_var}",
            target.display()
        ),
    }
}
