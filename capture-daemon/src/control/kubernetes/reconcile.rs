//! From pod events to the target set: which pods are opted in, which cgroups their running
//! containers have, and the set of cgroup ids (with their workloads) the pipeline gives the
//! kernel.
//!
//! The reconciler owns no I/O but the cgroup directories it reads: pod events come in from
//! the watcher, snapshots go out on a `watch` channel, and [`Reconciler::tick`] retries what
//! could not be resolved yet. It only ever changes the set because of something it saw (an
//! event, a relist, a directory that appeared or vanished): an unreachable API server leaves
//! the set as it is.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::{
    cgroups::{CgroupResolver, ContainerCgroups, ResolveError},
    pod::{self, NamespaceFilter, PodView},
};
use crate::{
    control::{ControlMetrics, TargetSnapshot},
    kernel::targets::TargetCgroup,
    telemetry::audit,
};
use capture_model::exchange::Workload;

/// Attempts to find a running container's cgroup before giving up (one per [`Reconciler::tick`],
/// so 20 tries over 10 s); a later pod update starts over.
pub const MAX_RESOLVE_ATTEMPTS: u32 = 20;
/// Resolved containers' subtrees are rescanned every this many ticks (crun's child directory,
/// a container whose cgroup is gone).
const RESCAN_EVERY_TICKS: u32 = 4;

/// What the watcher reports (see `kube::runtime::watcher::Event`).
#[derive(Clone, Debug)]
pub enum PodEvent {
    /// A (re)list starts: the `InitApply` pods that follow, up to `InitDone`, are the whole set.
    Init,
    InitApply(PodView),
    InitDone,
    Apply(PodView),
    Delete(PodView),
}

/// Reconciler settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node: String,
    pub namespaces: NamespaceFilter,
    /// Most cgroup ids in the target set (the kernel map's size).
    pub max_targets: u32,
    /// How long a removed cgroup's workload stays known, so exchanges still in flight when a
    /// pod opts out are written with their workload.
    pub retain_removed: Duration,
}

#[derive(Debug)]
enum ContainerState {
    Resolved(ContainerCgroups),
    /// Not found yet; `attempts` so far.
    Pending {
        attempts: u32,
    },
    /// Given up until the next pod update.
    Failed,
    /// Its cgroup vanished (the container stopped before the API said so).
    Gone,
}

#[derive(Debug)]
struct TrackedContainer {
    name: String,
    state: ContainerState,
}

#[derive(Debug)]
struct TrackedPod {
    view: PodView,
    opted: bool,
    /// Running containers by container id.
    containers: BTreeMap<String, TrackedContainer>,
}

/// One cgroup of the published set.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    workload: Workload,
    dir: PathBuf,
}

fn key(view: &PodView) -> (String, String) {
    (view.namespace.clone(), view.name.clone())
}

pub struct Reconciler {
    settings: Settings,
    resolver: CgroupResolver,
    pods: HashMap<String, TrackedPod>,
    /// Pods of a relist in progress, applied at once when it completes.
    relist: Option<Vec<PodView>>,
    static_targets: BTreeMap<u64, Target>,
    current: BTreeMap<u64, Target>,
    refused: BTreeSet<u64>,
    retired: HashMap<u64, (Workload, Instant)>,
    /// Why the cgroups of a pod (namespace, name) are about to leave the set, for the audit.
    removal_reason: HashMap<(String, String), &'static str>,
    synced: bool,
    ticks: u32,
    tx: watch::Sender<Arc<TargetSnapshot>>,
    metrics: Arc<ControlMetrics>,
}

impl Reconciler {
    pub fn new(
        settings: Settings,
        resolver: CgroupResolver,
        static_targets: &BTreeSet<TargetCgroup>,
        tx: watch::Sender<Arc<TargetSnapshot>>,
        metrics: Arc<ControlMetrics>,
    ) -> Self {
        let node = Some(settings.node.clone());
        let static_targets: BTreeMap<u64, Target> = static_targets
            .iter()
            .map(|t| {
                let target = Target {
                    workload: Workload {
                        node: node.clone(),
                        ..Workload::default()
                    },
                    dir: t.dir.clone(),
                };
                (t.id, target)
            })
            .collect();
        Self {
            current: static_targets.clone(),
            static_targets,
            settings,
            resolver,
            pods: HashMap::new(),
            relist: None,
            refused: BTreeSet::new(),
            retired: HashMap::new(),
            removal_reason: HashMap::new(),
            synced: false,
            ticks: 0,
            tx,
            metrics,
        }
    }

    /// Whether a complete pod list has been applied since start.
    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn handle(&mut self, event: PodEvent) {
        match event {
            PodEvent::Init => {
                self.metrics.kubernetes_relists.fetch_add(1, Relaxed);
                self.relist = Some(Vec::new());
            }
            PodEvent::InitApply(view) => match &mut self.relist {
                Some(list) => list.push(view),
                None => {
                    self.apply(view);
                    self.publish();
                }
            },
            PodEvent::InitDone => {
                let list = self.relist.take().unwrap_or_default();
                let listed: HashSet<String> = list.iter().map(|v| v.uid.clone()).collect();
                let gone: Vec<String> = self
                    .pods
                    .keys()
                    .filter(|uid| !listed.contains(*uid))
                    .cloned()
                    .collect();
                for uid in gone {
                    self.delete(&uid);
                }
                for view in list {
                    self.apply(view);
                }
                self.synced = true;
                self.publish();
            }
            PodEvent::Apply(view) => {
                self.apply(view);
                self.publish();
            }
            PodEvent::Delete(view) => {
                self.delete(&view.uid);
                self.publish();
            }
        }
    }

    /// New namespace filter (configuration reloaded): every pod is judged again.
    pub fn set_namespaces(&mut self, namespaces: NamespaceFilter) {
        if namespaces == self.settings.namespaces {
            return;
        }
        self.settings.namespaces = namespaces;
        let views: Vec<PodView> = self.pods.values().map(|p| p.view.clone()).collect();
        for view in views {
            self.apply(view);
        }
        self.publish();
    }

    /// Retries containers not found yet; every few ticks, rescans the resolved ones.
    pub fn tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        let rescan = self.ticks.is_multiple_of(RESCAN_EVERY_TICKS);
        let mut changed = false;
        for pod in self.pods.values_mut() {
            if !pod.opted {
                continue;
            }
            for (id, c) in &mut pod.containers {
                match &mut c.state {
                    ContainerState::Pending { attempts } => {
                        *attempts += 1;
                        self.metrics.cgroup_resolution_retries.fetch_add(1, Relaxed);
                        let attempts = *attempts;
                        match self.resolver.resolve(&pod.view.uid, pod.view.qos, id) {
                            Ok(found) => {
                                c.state = ContainerState::Resolved(found);
                                changed = true;
                            }
                            Err(e) if attempts >= MAX_RESOLVE_ATTEMPTS => {
                                self.metrics
                                    .cgroup_resolution_failures
                                    .fetch_add(1, Relaxed);
                                warn!(
                                    namespace = %pod.view.namespace,
                                    pod = %pod.view.name,
                                    container = %c.name,
                                    attempts,
                                    error = %e,
                                    "container cgroup not found; not captured until the pod changes"
                                );
                                c.state = ContainerState::Failed;
                            }
                            Err(e) => {
                                debug!(container = %c.name, error = %e, "container cgroup not found yet")
                            }
                        }
                    }
                    ContainerState::Resolved(found) if rescan => {
                        match self.resolver.rescan(found) {
                            Ok(None) => {}
                            Ok(Some(now)) => {
                                *found = now;
                                changed = true;
                            }
                            Err(e @ ResolveError::OwnCgroup(_)) => {
                                self.metrics
                                    .cgroup_resolution_failures
                                    .fetch_add(1, Relaxed);
                                warn!(container = %c.name, error = %e, "not captured");
                                c.state = ContainerState::Failed;
                                changed = true;
                            }
                            Err(e) => {
                                debug!(container = %c.name, error = %e, "container cgroup gone");
                                self.removal_reason
                                    .insert(key(&pod.view), "container cgroup removed");
                                c.state = ContainerState::Gone;
                                changed = true;
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if changed {
            self.publish();
        } else if rescan {
            self.prune_retired();
        }
    }

    fn apply(&mut self, view: PodView) {
        let allowed = self.settings.namespaces.allows(&view.namespace);
        let opted = pod::opted_in(view.annotation.as_deref()) && allowed;
        let previous = self.pods.remove(&view.uid);
        let was_opted = previous.as_ref().is_some_and(|p| p.opted);
        let annotation_changed = previous
            .as_ref()
            .is_none_or(|p| p.view.annotation != view.annotation);
        if annotation_changed && pod::annotation_is_unclear(view.annotation.as_deref()) {
            warn!(
                namespace = %view.namespace,
                pod = %view.name,
                value = view.annotation.as_deref().unwrap_or_default(),
                "{} is neither \"true\" nor \"false\"; only \"true\" opts a pod in",
                pod::ANNOTATION
            );
        }
        if opted && !was_opted {
            self.metrics.opt_in_changes.fetch_add(1, Relaxed);
            audit::pod_opted_in(&view.namespace, &view.name);
        } else if was_opted && !opted {
            let reason = if allowed {
                "annotation removed"
            } else {
                "namespace not allowed"
            };
            self.metrics.opt_in_changes.fetch_add(1, Relaxed);
            audit::pod_opted_out(&view.namespace, &view.name, reason);
            self.removal_reason.insert(key(&view), reason);
        }
        let mut old = previous.map(|p| p.containers).unwrap_or_default();
        let mut containers = BTreeMap::new();
        if opted {
            for c in view.containers.iter().filter(|c| c.running) {
                let state = match old.remove(&c.id) {
                    Some(TrackedContainer {
                        state: state @ ContainerState::Resolved(_),
                        ..
                    }) => state,
                    // Not resolved (or gone): this update is a new chance.
                    _ => self.resolve_first(&view, &c.id, &c.name),
                };
                containers.insert(
                    c.id.clone(),
                    TrackedContainer {
                        name: c.name.clone(),
                        state,
                    },
                );
            }
            if !old.is_empty() {
                self.removal_reason
                    .insert(key(&view), "container stopped or restarted");
            }
        }
        self.pods.insert(
            view.uid.clone(),
            TrackedPod {
                view,
                opted,
                containers,
            },
        );
    }

    fn resolve_first(&mut self, view: &PodView, id: &str, name: &str) -> ContainerState {
        match self.resolver.resolve(&view.uid, view.qos, id) {
            Ok(found) => ContainerState::Resolved(found),
            Err(e @ ResolveError::OwnCgroup(_)) => {
                self.metrics
                    .cgroup_resolution_failures
                    .fetch_add(1, Relaxed);
                warn!(namespace = %view.namespace, pod = %view.name, container = name, error = %e, "not captured");
                ContainerState::Failed
            }
            Err(e) => {
                debug!(container = name, error = %e, "container cgroup not found yet; retrying");
                ContainerState::Pending { attempts: 1 }
            }
        }
    }

    fn delete(&mut self, uid: &str) {
        if let Some(p) = self.pods.remove(uid)
            && p.opted
        {
            self.metrics.opt_in_changes.fetch_add(1, Relaxed);
            audit::pod_opted_out(&p.view.namespace, &p.view.name, "pod deleted");
            self.removal_reason.insert(key(&p.view), "pod deleted");
        }
    }

    /// The set as it should be now: static targets, then every resolved cgroup of every
    /// opted-in pod, in a stable order (namespace, pod, container).
    fn desired(&self) -> Vec<(u64, Target, String)> {
        let mut out: Vec<(u64, Target, String)> = self
            .static_targets
            .iter()
            .map(|(id, t)| (*id, t.clone(), String::new()))
            .collect();
        let mut pods: Vec<&TrackedPod> = self.pods.values().filter(|p| p.opted).collect();
        pods.sort_by(|a, b| {
            (&a.view.namespace, &a.view.name).cmp(&(&b.view.namespace, &b.view.name))
        });
        for p in pods {
            let (owner_kind, owner_name) = p.view.owner.clone().unzip();
            for c in p.containers.values() {
                let ContainerState::Resolved(found) = &c.state else {
                    continue;
                };
                let workload = Workload {
                    namespace: Some(p.view.namespace.clone()),
                    pod: Some(p.view.name.clone()),
                    container: Some(c.name.clone()),
                    owner_kind: owner_kind.clone(),
                    owner_name: owner_name.clone(),
                    node: Some(self.settings.node.clone()),
                };
                for (id, dir) in &found.cgroups {
                    let target = Target {
                        workload: workload.clone(),
                        dir: dir.clone(),
                    };
                    out.push((*id, target, p.view.uid.clone()));
                }
            }
        }
        out
    }

    /// Computes the set, enforces `max_targets` (cgroups already captured keep their place),
    /// audits every change and sends the snapshot when anything changed.
    fn publish(&mut self) {
        let desired = self.desired();
        let max = self.settings.max_targets as usize;
        let mut next: BTreeMap<u64, Target> = BTreeMap::new();
        let mut uid_of: HashMap<u64, String> = HashMap::new();
        let mut overflow = Vec::new();
        for (id, target, uid) in desired {
            if next.contains_key(&id) {
                continue;
            }
            if self.current.contains_key(&id) && next.len() < max {
                uid_of.insert(id, uid);
                next.insert(id, target);
            } else {
                overflow.push((id, target, uid));
            }
        }
        let mut refused = BTreeSet::new();
        for (id, target, uid) in overflow {
            if next.contains_key(&id) {
                continue;
            }
            if next.len() < max {
                uid_of.insert(id, uid);
                next.insert(id, target);
            } else {
                if !self.refused.contains(&id) {
                    self.metrics.target_cgroups_refused.fetch_add(1, Relaxed);
                    audit::target_refused(&target.workload, id, self.settings.max_targets);
                    warn!(
                        cgroup_id = id,
                        limit = self.settings.max_targets,
                        "--max-target-cgroups reached; cgroup not captured"
                    );
                }
                refused.insert(id);
            }
        }
        self.refused = refused;
        let now = Instant::now();
        let mut changed = false;
        for (id, old) in &self.current {
            if !next.contains_key(id) {
                let pod = (
                    old.workload.namespace.clone().unwrap_or_default(),
                    old.workload.pod.clone().unwrap_or_default(),
                );
                let reason = self
                    .removal_reason
                    .get(&pod)
                    .copied()
                    .unwrap_or("container stopped or cgroup removed");
                audit::target_removed(&old.workload, *id, reason);
                self.retired.insert(*id, (old.workload.clone(), now));
                changed = true;
            }
        }
        for (id, t) in &next {
            if self.current.get(id) != Some(t) {
                if !self.current.contains_key(id) {
                    audit::target_added(&t.workload, *id, &t.dir);
                }
                self.retired.remove(id);
                changed = true;
            }
        }
        self.removal_reason.clear();
        self.current = next;
        self.prune_retired();
        let opted = self.pods.values().filter(|p| p.opted).count();
        self.metrics.pods_opted_in.store(opted as u64, Relaxed);
        if changed || self.tx.borrow().synced != self.synced {
            self.send();
        }
    }

    fn prune_retired(&mut self) {
        let keep = self.settings.retain_removed;
        self.retired.retain(|_, (_, at)| at.elapsed() < keep);
    }

    fn send(&mut self) {
        let mut workloads: HashMap<u64, Arc<Workload>> = self
            .retired
            .iter()
            .map(|(id, (w, _))| (*id, Arc::new(w.clone())))
            .collect();
        workloads.extend(
            self.current
                .iter()
                .map(|(id, t)| (*id, Arc::new(t.workload.clone()))),
        );
        let snapshot = TargetSnapshot {
            ids: self.current.keys().copied().collect(),
            workloads,
            synced: self.synced,
        };
        self.tx.send_replace(Arc::new(snapshot));
    }

    /// The cgroup ids published now (tests).
    pub fn target_ids(&self) -> BTreeSet<u64> {
        self.current.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{os::unix::fs::MetadataExt as _, path::Path};

    use super::*;
    use crate::control::kubernetes::pod::{ContainerView, QosClass};

    const UID: &str = "11111111-2222-3333-4444-555555555555";
    const UID2: &str = "66666666-7777-8888-9999-000000000000";

    struct Rig {
        tmp: tempfile::TempDir,
        rec: Reconciler,
        rx: watch::Receiver<Arc<TargetSnapshot>>,
        metrics: Arc<ControlMetrics>,
    }

    fn rig(max_targets: u32) -> Rig {
        let tmp = tempfile::tempdir().unwrap();
        let metrics = Arc::new(ControlMetrics::default());
        let (tx, rx) = watch::channel(Arc::new(TargetSnapshot::default()));
        let rec = Reconciler::new(
            Settings {
                node: "node-1".into(),
                namespaces: NamespaceFilter::default(),
                max_targets,
                retain_removed: Duration::from_secs(60),
            },
            CgroupResolver::new(tmp.path().to_path_buf()),
            &BTreeSet::new(),
            tx,
            Arc::clone(&metrics),
        );
        Rig {
            tmp,
            rec,
            rx,
            metrics,
        }
    }

    fn container_dir(root: &Path, uid: &str, id: &str) -> (u64, PathBuf) {
        let d = root
            .join("kubepods/burstable")
            .join(format!("pod{uid}"))
            .join(id);
        std::fs::create_dir_all(&d).unwrap();
        (std::fs::metadata(&d).unwrap().ino(), d)
    }

    fn view(
        uid: &str,
        name: &str,
        annotation: Option<&str>,
        containers: &[(&str, &str)],
    ) -> PodView {
        PodView {
            uid: uid.into(),
            namespace: "shop".into(),
            name: name.into(),
            annotation: annotation.map(Into::into),
            qos: QosClass::Burstable,
            owner: Some(("Deployment".into(), "web".into())),
            containers: containers
                .iter()
                .map(|(n, id)| ContainerView {
                    name: (*n).into(),
                    id: (*id).into(),
                    running: true,
                })
                .collect(),
        }
    }

    fn ids(rx: &watch::Receiver<Arc<TargetSnapshot>>) -> BTreeSet<u64> {
        rx.borrow().ids.clone()
    }

    #[test]
    fn opt_in_out_restart_and_delete() {
        let mut r = rig(16);
        let (a, _) = container_dir(r.tmp.path(), UID, "aa");
        r.rec.handle(PodEvent::Init);
        r.rec.handle(PodEvent::InitApply(view(
            UID,
            "web-1",
            None,
            &[("app", "aa")],
        )));
        r.rec.handle(PodEvent::InitDone);
        assert!(r.rx.borrow().synced);
        assert!(ids(&r.rx).is_empty());

        r.rec.handle(PodEvent::Apply(view(
            UID,
            "web-1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
        let w = r.rx.borrow().workloads[&a].clone();
        assert_eq!(w.pod.as_deref(), Some("web-1"));
        assert_eq!(w.container.as_deref(), Some("app"));
        assert_eq!(w.owner_kind.as_deref(), Some("Deployment"));
        assert_eq!(w.node.as_deref(), Some("node-1"));

        // Restart: a new container id, a new cgroup; the old one leaves.
        let (b, _) = container_dir(r.tmp.path(), UID, "bb");
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "web-1",
            Some("true"),
            &[("app", "bb")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([b]));
        // The old cgroup's workload is still known for exchanges in flight.
        assert!(r.rx.borrow().workloads.contains_key(&a));

        r.rec.handle(PodEvent::Apply(view(
            UID,
            "web-1",
            Some("false"),
            &[("app", "bb")],
        )));
        assert!(ids(&r.rx).is_empty());
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "web-1",
            Some("true"),
            &[("app", "bb")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([b]));
        r.rec
            .handle(PodEvent::Delete(view(UID, "web-1", Some("true"), &[])));
        assert!(ids(&r.rx).is_empty());
        assert_eq!(r.metrics.opt_in_changes.load(Relaxed), 4);
    }

    #[test]
    fn a_relist_replaces_the_set_at_once() {
        let mut r = rig(16);
        let (a, _) = container_dir(r.tmp.path(), UID, "aa");
        let (b, _) = container_dir(r.tmp.path(), UID2, "bb");
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
        let seen = r.rx.borrow().clone();
        // A relist in progress changes nothing until it is complete...
        r.rec.handle(PodEvent::Init);
        r.rec.handle(PodEvent::InitApply(view(
            UID2,
            "p2",
            Some("true"),
            &[("app", "bb")],
        )));
        assert!(Arc::ptr_eq(&seen, &r.rx.borrow()));
        // ...then p1, missing from the list, is gone and p2 is in.
        r.rec.handle(PodEvent::InitDone);
        assert_eq!(ids(&r.rx), BTreeSet::from([b]));
    }

    #[test]
    fn late_containers_are_retried_a_bounded_number_of_times() {
        let mut r = rig(16);
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert!(ids(&r.rx).is_empty());
        for _ in 0..3 {
            r.rec.tick();
        }
        assert_eq!(r.metrics.cgroup_resolution_retries.load(Relaxed), 3);
        // The directory appears after the third retry: the fourth finds it.
        let (a, _) = container_dir(r.tmp.path(), UID, "aa");
        r.rec.resolver = CgroupResolver::new(r.tmp.path().to_path_buf());
        r.rec.tick();
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));

        // A container that never appears is given up after MAX_RESOLVE_ATTEMPTS.
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa"), ("late", "cc")],
        )));
        for _ in 0..MAX_RESOLVE_ATTEMPTS + 5 {
            r.rec.tick();
        }
        assert_eq!(r.metrics.cgroup_resolution_failures.load(Relaxed), 1);
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
    }

    #[test]
    fn crun_child_appearing_later_is_added_by_the_rescan() {
        let mut r = rig(16);
        let (a, dir) = container_dir(r.tmp.path(), UID, "aa");
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
        let child = dir.join("container");
        std::fs::create_dir(&child).unwrap();
        let c = std::fs::metadata(&child).unwrap().ino();
        for _ in 0..RESCAN_EVERY_TICKS {
            r.rec.tick();
        }
        assert_eq!(ids(&r.rx), BTreeSet::from([a, c]));
        // The container's cgroup disappears: both leave.
        std::fs::remove_dir(&child).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        for _ in 0..RESCAN_EVERY_TICKS {
            r.rec.tick();
        }
        assert!(ids(&r.rx).is_empty());
    }

    #[test]
    fn namespace_filter_changes_apply_live() {
        let mut r = rig(16);
        let (a, _) = container_dir(r.tmp.path(), UID, "aa");
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
        r.rec.set_namespaces(NamespaceFilter {
            include: vec![],
            exclude: vec!["shop".into()],
        });
        assert!(ids(&r.rx).is_empty());
        r.rec.set_namespaces(NamespaceFilter {
            include: vec!["shop".into()],
            exclude: vec![],
        });
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
    }

    #[test]
    fn max_targets_is_enforced_and_counted() {
        let mut r = rig(1);
        let (a, _) = container_dir(r.tmp.path(), UID, "aa");
        let (b, _) = container_dir(r.tmp.path(), UID2, "bb");
        r.rec.handle(PodEvent::Apply(view(
            UID2,
            "p2",
            Some("true"),
            &[("app", "bb")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([b]));
        // p1 sorts first but p2 is already captured: it keeps its place.
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert_eq!(ids(&r.rx), BTreeSet::from([b]));
        assert_eq!(r.metrics.target_cgroups_refused.load(Relaxed), 1);
        // Counted once, not on every publish.
        r.rec.handle(PodEvent::Apply(view(
            UID,
            "p1",
            Some("true"),
            &[("app", "aa")],
        )));
        assert_eq!(r.metrics.target_cgroups_refused.load(Relaxed), 1);
        r.rec.handle(PodEvent::Delete(view(UID2, "p2", None, &[])));
        assert_eq!(ids(&r.rx), BTreeSet::from([a]));
    }
}
