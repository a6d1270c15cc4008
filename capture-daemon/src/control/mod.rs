//! What changes while the daemon runs, and how it reaches the kernel: the target set with the
//! workload of each cgroup (static targets, plus the Kubernetes reconciler's), and whether
//! capture is paused (the configuration file, re-read live by `reload`).
//!
//! Producers publish on `tokio::sync::watch` channels; the pipeline owns the [`Control`] end
//! and applies changes from its own loop, because it owns the loaded programs. Each exchange's
//! workload is looked up in the snapshot the pipeline holds: no lock on the per-exchange path.

pub mod kubernetes;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use tokio::sync::watch;
use tracing::error;

use crate::{
    kernel::programs::Capture,
    telemetry::{
        audit,
        metrics::{Families, Health, Source},
    },
};
use capture_model::exchange::{Exchange, Workload};

/// The target set as published: cgroup ids for the kernel, and the workload of each (also of
/// cgroups removed a short while ago, whose exchanges may still be in flight).
#[derive(Clone, Debug, Default)]
pub struct TargetSnapshot {
    pub ids: BTreeSet<u64>,
    pub workloads: HashMap<u64, Arc<Workload>>,
    /// The set reflects a complete view: static targets only, or a finished pod list.
    pub synced: bool,
}

/// Counters and gauges of this side of the daemon, rendered into `/metrics`.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    pub paused: AtomicU64,
    pub target_cgroups: AtomicU64,
    pub target_cgroups_refused: AtomicU64,
    pub target_update_errors: AtomicU64,
    pub pods_opted_in: AtomicU64,
    pub opt_in_changes: AtomicU64,
    pub kubernetes_watch_errors: AtomicU64,
    pub kubernetes_relists: AtomicU64,
    pub cgroup_resolution_retries: AtomicU64,
    pub cgroup_resolution_failures: AtomicU64,
    pub config_reloads: AtomicU64,
    pub config_reload_errors: AtomicU64,
}

impl Source for ControlMetrics {
    fn collect(&self, out: &mut Families) {
        out.gauge(
            "capture_paused",
            "1 while capture is paused (programs detached) by the configuration's `paused`.",
            self.paused.load(Relaxed),
        );
        out.gauge(
            "capture_target_cgroups",
            "Cgroups in the kernel's target set.",
            self.target_cgroups.load(Relaxed),
        );
        out.counter(
            "capture_target_cgroups_refused_total",
            "Cgroups not captured because --max-target-cgroups was reached.",
            self.target_cgroups_refused.load(Relaxed),
        );
        out.counter(
            "capture_target_update_errors_total",
            "Failed updates of the kernel's target set.",
            self.target_update_errors.load(Relaxed),
        );
        out.gauge(
            "capture_pods_opted_in",
            "Pods of this node that are opted in (annotation and namespace).",
            self.pods_opted_in.load(Relaxed),
        );
        out.counter(
            "capture_opt_in_changes_total",
            "Pods opted in or out (annotation, namespace filter, deletion).",
            self.opt_in_changes.load(Relaxed),
        );
        out.counter(
            "capture_kubernetes_watch_errors_total",
            "Errors listing or watching pods (each followed by a backoff).",
            self.kubernetes_watch_errors.load(Relaxed),
        );
        out.counter(
            "capture_kubernetes_relists_total",
            "Full lists of the node's pods (start-up, and after the watch fell too far behind).",
            self.kubernetes_relists.load(Relaxed),
        );
        out.counter(
            "capture_cgroup_resolution_retries_total",
            "Retries to find a running container's cgroup.",
            self.cgroup_resolution_retries.load(Relaxed),
        );
        out.counter(
            "capture_cgroup_resolution_failures_total",
            "Running containers whose cgroup was not found (or was refused); not captured.",
            self.cgroup_resolution_failures.load(Relaxed),
        );
        out.counter(
            "capture_config_reloads_total",
            "Changes of the configuration file read and applied.",
            self.config_reloads.load(Relaxed),
        );
        out.counter(
            "capture_config_reload_errors_total",
            "Changes of the configuration file rejected as invalid (settings kept).",
            self.config_reload_errors.load(Relaxed),
        );
    }
}

/// The pipeline's end: the latest snapshot and pause state, applied to the programs.
pub struct Control {
    metrics: Arc<ControlMetrics>,
    health: Arc<Health>,
    targets: watch::Receiver<Arc<TargetSnapshot>>,
    paused: watch::Receiver<bool>,
    targets_open: bool,
    paused_open: bool,
    current: Arc<TargetSnapshot>,
    applied: Option<Arc<TargetSnapshot>>,
    is_paused: bool,
}

/// What [`Control::apply`] did to the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Nothing,
    /// Detached: in-flight exchanges should be flushed.
    Paused,
    Resumed,
}

impl Control {
    pub fn new(
        targets: watch::Receiver<Arc<TargetSnapshot>>,
        paused: watch::Receiver<bool>,
        metrics: Arc<ControlMetrics>,
        health: Arc<Health>,
    ) -> Self {
        let current = Arc::clone(&targets.borrow());
        Self {
            metrics,
            health,
            targets,
            paused,
            targets_open: true,
            paused_open: true,
            current,
            applied: None,
            is_paused: false,
        }
    }

    /// Resolves when a producer published something new (cancel-safe).
    pub async fn changed(&mut self) {
        loop {
            tokio::select! {
                r = self.targets.changed(), if self.targets_open => match r {
                    Ok(()) => return,
                    Err(_) => self.targets_open = false,
                },
                r = self.paused.changed(), if self.paused_open => match r {
                    Ok(()) => return,
                    Err(_) => self.paused_open = false,
                },
                else => std::future::pending::<()>().await,
            }
        }
    }

    /// Brings the kernel in line with the latest snapshot and pause state.
    pub fn apply(&mut self, capture: &mut Capture) -> Applied {
        let metrics = &*self.metrics;
        let snapshot = Arc::clone(&self.targets.borrow_and_update());
        if self
            .applied
            .as_ref()
            .is_none_or(|a| !Arc::ptr_eq(a, &snapshot))
        {
            match capture.set_targets(&snapshot.ids) {
                Ok(()) => self.applied = Some(Arc::clone(&snapshot)),
                Err(e) => {
                    // Retried with the next change; the set in the kernel is what succeeded.
                    metrics.target_update_errors.fetch_add(1, Relaxed);
                    error!(error = %e, "updating the kernel's target set failed");
                }
            }
            metrics
                .target_cgroups
                .store(capture.target_count() as u64, Relaxed);
            if snapshot.synced {
                self.health.set_ready(true);
            }
            self.current = snapshot;
        }
        let paused = *self.paused.borrow_and_update();
        if paused == self.is_paused {
            return Applied::Nothing;
        }
        let result = if paused {
            capture.detach().map(|()| Applied::Paused)
        } else {
            capture.attach().map(|()| Applied::Resumed)
        };
        match result {
            Ok(applied) => {
                self.is_paused = paused;
                metrics.paused.store(u64::from(paused), Relaxed);
                if paused {
                    audit::capture_paused("config");
                } else {
                    audit::capture_resumed("config");
                }
                applied
            }
            Err(e) => {
                error!(error = %e, paused, "changing the pause state failed");
                Applied::Nothing
            }
        }
    }

    /// Fills the exchange's workload from the cgroup it was captured in.
    pub fn fill(&self, ex: &mut Exchange) {
        if ex.cgroup_id == 0 {
            return;
        }
        if let Some(w) = self.current.workloads.get(&ex.cgroup_id) {
            // The Kubernetes layer names the node in every workload: shared as it is.
            ex.workload = if w.node.is_none() && ex.workload.node.is_some() {
                Arc::new(Workload {
                    node: ex.workload.node.clone(),
                    ..Workload::clone(w)
                })
            } else {
                Arc::clone(w)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capture_model::exchange::{HttpVersion, Protocol, Request};

    #[test]
    fn fill_takes_the_workload_of_the_cgroup_and_keeps_the_node() {
        let mut snap = TargetSnapshot::default();
        snap.workloads.insert(
            7,
            Arc::new(Workload {
                namespace: Some("shop".into()),
                pod: Some("web-1".into()),
                container: Some("app".into()),
                owner_kind: Some("Deployment".into()),
                owner_name: Some("web".into()),
                node: None,
            }),
        );
        let (_t, trx) = watch::channel(Arc::new(snap));
        let (_p, prx) = watch::channel(false);
        let control = Control::new(trx, prx, Arc::default(), Arc::default());
        let mut ex = Exchange {
            protocol: Protocol::H1,
            request: Request {
                method: "GET".into(),
                target: "/".into(),
                version: HttpVersion::Http11,
                headers: vec![].into(),
                headers_size: 0,
                body: Default::default(),
                trailers: vec![].into(),
            },
            response: None,
            timing: Default::default(),
            incomplete: None,
            conn: Default::default(),
            pid: 1,
            workload: Arc::new(Workload {
                node: Some("node-1".into()),
                ..Workload::default()
            }),
            redacted: vec![],
            routing_key: None,
            grpc: None,
            cgroup_id: 7,
        };
        control.fill(&mut ex);
        assert_eq!(ex.workload.pod.as_deref(), Some("web-1"));
        assert_eq!(ex.workload.node.as_deref(), Some("node-1"));
        ex.cgroup_id = 8;
        ex.workload = Arc::default();
        control.fill(&mut ex);
        assert_eq!(*ex.workload, Workload::default());
    }
}
