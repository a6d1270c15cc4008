//! End-to-end harness for `capture-daemon`: it runs the real daemon, with real eBPF, against
//! real servers and clients placed in throw-away cgroups, and reads back what was captured.
//!
//! - [`TestCgroup`] creates a cgroup v2 directory, runs commands inside it and removes it.
//! - [`Daemon`] starts the daemon against such cgroups, scrapes `/metrics`, reads the JSONL
//!   output and stops it with SIGTERM ([`Finished::assert_clean`] holds the end-of-test checks).
//! - [`PythonServer`] and [`Nginx`] are the servers; [`curl`] is the usual client and
//!   [`HttpConnection`] the raw one (pipelining, connections older than the daemon).
//! - [`kube_api`] is a fake Kubernetes API server (pods list and watch) for `--kubernetes`,
//!   and [`TestPki`], [`ChildProcess`] come from the shared `capture-test-support` crate.
//! - [`Collector`] runs the real `capture-collector` over TLS ([`TestPki`] makes its
//!   certificates) for the delivery tests.
//! - [`JsonService`] is the two-version JSON service of the replay/diff tests and demo, and
//!   [`cli_binary`] finds the `capture` CLI.
//! - [`har`] reads the captured HAR entries; [`capture_environment_ready`] decides whether a
//!   test can run here (root, cgroup v2), failing rather than skipping under `CI=true`.
//! - [`helm`] drives Helm's own engine (helm-python-sdk) to render, lint and install charts;
//!   [`k8s`] types rendered objects strictly with k8s-openapi; [`chart`] reads the
//!   capture-daemon chart's DaemonSet, RBAC and ConfigMap.
//!
//! The tests themselves are in `e2e/`; `cargo xtask demo` and `cargo xtask bench` reuse this.

mod cgroup;
pub mod chart;
mod collector;
mod daemon;
mod env;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod har;
pub mod helm;
pub mod k8s;
mod net;
mod replay;
mod servers;

use std::process::Command;

pub use capture_test_support::{
    ChildProcess, TestPki, kube_api, run, run_unchecked, running_in_ci,
};
pub use cgroup::TestCgroup;
pub use collector::{Collector, collector_binary, har_entry_texts};
pub use daemon::{Daemon, DaemonBuilder, Finished, Metrics, parse_exchanges};
pub use env::{
    capture_environment_ready, cgroup2_root, daemon_binary, missing_capabilities, workspace_root,
};
pub use net::{HttpConnection, HttpResponse, free_port, http_get, wait_for_port};
pub use replay::{JsonService, Received, cli_binary};
pub use servers::{
    BIG_LEN, COOKIE_BODY, H2cUpgradeServer, JSON_BODY, NGINX_JSON_BODY, Nginx, PythonServer,
    big_body, gzip_plain, nginx_body,
};

/// `curl -sS` (quiet, errors shown, no retries or proxies), inside `cgroup` when given.
pub fn curl(cgroup: Option<&TestCgroup>) -> Command {
    let mut cmd = match cgroup {
        Some(cgroup) => cgroup.command("curl"),
        None => Command::new("curl"),
    };
    // --noproxy: an http_proxy in the environment must not reroute loopback traffic.
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "30"]);
    cmd
}

/// A value unique to this process and call, for secrets and path markers that must (not) show up.
pub fn unique_marker(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{label}-{}-{}-{nanos:08x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
