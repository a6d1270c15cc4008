//! The audit trail: one JSON line on stderr for every change of what is captured (a cgroup added
//! to or removed from the kernel's target set, a pod opted in or out), every pause and resume,
//! every configuration change and every collector connection.
//!
//! Audit lines are `tracing` events with the target `audit`. [`init_logging`] routes them to a
//! JSON layer of their own, whatever `--log-format` and `RUST_LOG` say, so they are never
//! filtered out and always parse; every other event goes to the usual text or JSON log.
//! Each line has `"target":"audit"` and an `"event"` field naming the kind of change. Lines
//! carry names (namespace, pod, container, configuration keys, endpoints), never captured data
//! or configuration values.

use std::path::Path;

use tracing::info;
use tracing_subscriber::{
    Layer as _, filter::filter_fn, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use capture_model::exchange::Workload;

/// The `tracing` target of audit events.
pub const TARGET: &str = "audit";

/// `--log-format`: audit lines are JSON whatever the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber: the log in `format` (filtered by `RUST_LOG`, default
/// `info`), and the audit lines as JSON, unfiltered.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let not_audit = filter_fn(|meta| meta.target() != TARGET);
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let log = match format {
        LogFormat::Json => log
            .json()
            .flatten_event(true)
            .with_filter(not_audit)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => log.with_filter(not_audit).with_filter(filter).boxed(),
    };
    let audit = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .json()
        .flatten_event(true)
        .with_filter(filter_fn(|meta| meta.target() == TARGET));
    // try_init also bridges the `log` records (aya-log's kernel-side logs). A second
    // initialisation (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(audit)
        .try_init();
}

fn field(v: Option<&String>) -> &str {
    v.map_or("", String::as_str)
}

/// A cgroup was added to the kernel's target set: its processes are captured from now on.
pub fn target_added(workload: &Workload, cgroup_id: u64, dir: &Path) {
    info!(
        target: TARGET,
        event = "target_added",
        namespace = field(workload.namespace.as_ref()),
        pod = field(workload.pod.as_ref()),
        container = field(workload.container.as_ref()),
        cgroup_id,
        cgroup = %dir.display(),
        "capture target added"
    );
}

/// A cgroup left the kernel's target set: nothing of it is captured any more.
pub fn target_removed(workload: &Workload, cgroup_id: u64, reason: &str) {
    info!(
        target: TARGET,
        event = "target_removed",
        namespace = field(workload.namespace.as_ref()),
        pod = field(workload.pod.as_ref()),
        container = field(workload.container.as_ref()),
        cgroup_id,
        reason,
        "capture target removed"
    );
}

/// A cgroup that should be captured was not: `--max-target-cgroups` is reached.
pub fn target_refused(workload: &Workload, cgroup_id: u64, limit: u32) {
    info!(
        target: TARGET,
        event = "target_refused",
        namespace = field(workload.namespace.as_ref()),
        pod = field(workload.pod.as_ref()),
        container = field(workload.container.as_ref()),
        cgroup_id,
        limit,
        "capture target refused: --max-target-cgroups reached"
    );
}

/// A pod became opted in (annotated, in an allowed namespace).
pub fn pod_opted_in(namespace: &str, pod: &str) {
    info!(target: TARGET, event = "pod_opted_in", namespace, pod, "pod opted in");
}

/// A pod stopped being opted in; `reason` says why (annotation removed, namespace excluded,
/// pod deleted).
pub fn pod_opted_out(namespace: &str, pod: &str, reason: &str) {
    info!(target: TARGET, event = "pod_opted_out", namespace, pod, reason, "pod opted out");
}

/// Capture was paused: the kernel programs are detached.
pub fn capture_paused(source: &str) {
    info!(target: TARGET, event = "capture_paused", source, "capture paused: programs detached");
}

/// Capture resumed: the kernel programs are attached again.
pub fn capture_resumed(source: &str) {
    info!(target: TARGET, event = "capture_resumed", source, "capture resumed: programs attached");
}

/// The configuration file changed and was read: `applied` keys took effect at once,
/// `restart_required` keys only take effect when the daemon restarts.
pub fn config_changed(path: &Path, applied: &[String], restart_required: &[String]) {
    info!(
        target: TARGET,
        event = "config_changed",
        file = %path.display(),
        applied = applied.join(","),
        restart_required = restart_required.join(","),
        "configuration changed"
    );
}

/// The configuration file changed but is not valid; the daemon keeps its current settings.
pub fn config_rejected(path: &Path, reason: &str) {
    info!(
        target: TARGET,
        event = "config_rejected",
        file = %path.display(),
        reason,
        "configuration change rejected; current settings kept"
    );
}

/// A connection to the collector was established.
pub fn collector_connected(endpoint: &str) {
    let endpoint = without_userinfo(endpoint);
    info!(target: TARGET, event = "collector_connected", endpoint = %endpoint, "collector connected");
}

/// The connection to the collector was lost or closed; `reason` says why.
pub fn collector_disconnected(endpoint: &str, reason: &str) {
    let endpoint = without_userinfo(endpoint);
    info!(
        target: TARGET,
        event = "collector_disconnected",
        endpoint = %endpoint,
        reason,
        "collector disconnected"
    );
}

/// `https://user:pass@host:443/x` -> `https://host:443/x`: an endpoint written with
/// credentials must not carry them into the log.
fn without_userinfo(endpoint: &str) -> String {
    let (scheme, rest) = match endpoint.find("://") {
        Some(i) => endpoint.split_at(i + 3),
        None => ("", endpoint),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => endpoint.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_lose_their_credentials() {
        assert_eq!(
            without_userinfo("https://collector.example:4317"),
            "https://collector.example:4317"
        );
        assert_eq!(
            without_userinfo("https://u:secret@collector.example:4317/x@y"),
            "https://collector.example:4317/x@y"
        );
        assert_eq!(without_userinfo("u:p@host:1"), "host:1");
    }
}
