//! Test support shared by the daemon's, the collector's and the end-to-end tests: a fake
//! Kubernetes API server ([`kube_api`]), a throw-away PKI ([`TestPki`]), child processes that
//! are killed and reaped when their guard drops ([`ChildProcess`]), and the one definition of
//! "running under CI" ([`running_in_ci`]) that xtask and every test gate agree on.

pub mod kube_api;
mod pki;
mod process;

pub use pki::TestPki;
pub use process::{ChildProcess, run, run_unchecked, run_with_pid};

/// `d` stretched by `CAPTURE_TEST_PATIENCE` (a whole factor, default 1): how much longer than
/// usual tests wait for a process, a server or a capture. `cargo xtask vm-test` sets it, since
/// a guest under software emulation runs everything several times slower; a wrong value is
/// ignored rather than making every wait zero.
pub fn patient(d: std::time::Duration) -> std::time::Duration {
    static FACTOR: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let factor = *FACTOR.get_or_init(|| {
        std::env::var("CAPTURE_TEST_PATIENCE")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|f| (1..=100).contains(f))
            .unwrap_or(1)
    });
    d * factor
}

/// True when CI is running us (`CI` set to anything but empty, `0` or `false`): a test that
/// cannot run here must fail then, never skip.
pub fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}
