//! The pod watcher and reconciler against a fake Kubernetes API server that serves real Pod
//! JSON over HTTP (`capture_test_support::kube_api`), with the container cgroups laid out as fixture
//! directory trees: the published target set must be exactly right through add, annotate,
//! un-annotate, container restart, outages (500s, dropped connections), 410 Gone relists,
//! a daemon restart and delete.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use capture_daemon::control::{
    ControlMetrics, TargetSnapshot,
    kubernetes::{
        self,
        cgroups::CgroupResolver,
        pod::NamespaceFilter,
        reconcile::{Reconciler, Settings},
        watch::{reconcile, watch_pods},
    },
};
use capture_test_support::kube_api::{FakeKubeApi, Outage, TestPod};
use tokio::{sync::watch, task::JoinHandle};

const NODE: &str = "node-1";
const WAIT: Duration = Duration::from_secs(30);

const UID_A: &str = "0a0a0a0a-1111-2222-3333-444444444444";
const UID_B: &str = "0b0b0b0b-1111-2222-3333-444444444444";
const UID_C: &str = "0c0c0c0c-1111-2222-3333-444444444444";
const UID_D: &str = "0d0d0d0d-1111-2222-3333-444444444444";
const A1: &str = "a1a1a1a1a1a1a1a1";
const B1: &str = "b1b1b1b1b1b1b1b1";
const B2: &str = "b2b2b2b2b2b2b2b2";
const C1: &str = "c1c1c1c1c1c1c1c1";
const D1: &str = "d1d1d1d1d1d1d1d1";

/// A container directory in the fixture tree; returns its cgroup id (inode).
fn container(root: &Path, pod_rel: &str, dir: &str) -> std::io::Result<u64> {
    let d = root.join(pod_rel).join(dir);
    std::fs::create_dir_all(&d)?;
    Ok(std::fs::metadata(&d)?.ino())
}

fn systemd_burstable(uid: &str) -> String {
    let u = uid.replace('-', "_");
    format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice")
}

fn pod_a(annotation: Option<&str>) -> TestPod {
    TestPod::new("shop", "web-7d9f8b6c5d-x2x4q", UID_A, NODE)
        .annotated(annotation)
        .deployment("web", "7d9f8b6c5d")
        .container("app", &format!("containerd://{A1}"))
}

fn pod_b(annotation: Option<&str>, id: &str) -> TestPod {
    TestPod::new("shop", "worker-0", UID_B, NODE)
        .annotated(annotation)
        .qos("BestEffort")
        .container("worker", &format!("cri-o://{id}"))
}

/// A running watcher + reconciler, like the daemon's.
struct Watcher {
    tasks: Vec<JoinHandle<()>>,
    rx: watch::Receiver<Arc<TargetSnapshot>>,
    metrics: Arc<ControlMetrics>,
    _namespaces: watch::Sender<NamespaceFilter>,
}

impl Watcher {
    async fn start(kubeconfig: &Path, root: &Path) -> Result<Self, kubernetes::ClientError> {
        let client = kubernetes::client(Some(kubeconfig)).await?;
        let metrics = Arc::new(ControlMetrics::default());
        let (tx, rx) = watch::channel(Arc::new(TargetSnapshot::default()));
        let filter = NamespaceFilter {
            include: vec![],
            exclude: vec!["kube-system".into()],
        };
        let (ns_tx, ns_rx) = watch::channel(filter.clone());
        let rec = Reconciler::new(
            Settings {
                node: NODE.into(),
                namespaces: filter,
                max_targets: 64,
                retain_removed: Duration::from_secs(60),
            },
            CgroupResolver::new(root.to_path_buf()),
            &BTreeSet::new(),
            tx,
            Arc::clone(&metrics),
        );
        let (events_tx, events_rx) = tokio::sync::mpsc::channel(64);
        let tasks = vec![
            tokio::spawn(watch_pods(
                client,
                NODE.into(),
                events_tx,
                Arc::clone(&metrics),
            )),
            tokio::spawn(reconcile(rec, events_rx, ns_rx)),
        ];
        Ok(Self {
            tasks,
            rx,
            metrics,
            _namespaces: ns_tx,
        })
    }

    fn ids(&self) -> BTreeSet<u64> {
        self.rx.borrow().ids.clone()
    }

    /// Waits until the published set is `want` (and synced).
    async fn expect(&self, want: &[u64], what: &str) {
        let want: BTreeSet<u64> = want.iter().copied().collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            {
                let snap = self.rx.borrow();
                if snap.synced && snap.ids == want {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: target set {:?}, want {want:?} (synced: {}, watch errors {}, relists {})",
                self.ids(),
                self.rx.borrow().synced,
                self.metrics.kubernetes_watch_errors.load(Relaxed),
                self.metrics.kubernetes_relists.load(Relaxed),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts the set stays `want` for `time`.
    async fn holds(&self, want: &[u64], time: Duration, what: &str) {
        let want: BTreeSet<u64> = want.iter().copied().collect();
        let end = tokio::time::Instant::now() + time;
        while tokio::time::Instant::now() < end {
            assert_eq!(self.ids(), want, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn target_set_follows_the_pods_through_changes_outages_and_relists() {
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().join("cgroup");
    let a1 = container(
        &root,
        &systemd_burstable(UID_A),
        &format!("cri-containerd-{A1}.scope"),
    )
    .unwrap();
    let b1 = container(
        &root,
        &format!("kubepods/besteffort/pod{UID_B}"),
        &format!("crio-{B1}"),
    )
    .unwrap();
    let c1 = container(
        &root,
        &systemd_burstable(UID_C),
        &format!("cri-containerd-{C1}.scope"),
    )
    .unwrap();
    let d1 = container(
        &root,
        &systemd_burstable(UID_D),
        &format!("cri-containerd-{D1}.scope"),
    )
    .unwrap();
    let api = FakeKubeApi::start().unwrap();
    let kubeconfig = api.write_kubeconfig(tmp.path()).unwrap();

    api.apply(&pod_a(Some("true")).to_pod()).unwrap();
    api.apply(&pod_b(None, B1).to_pod()).unwrap();
    // Annotated, but on another node: the field selector keeps it out.
    let other_node = TestPod::new("shop", "elsewhere", UID_C, "node-2")
        .annotated(Some("true"))
        .container("app", &format!("containerd://{C1}"));
    api.apply(&other_node.to_pod()).unwrap();
    // Annotated, but in an excluded namespace.
    let excluded = TestPod::new("kube-system", "dns", UID_D, NODE)
        .annotated(Some("true"))
        .container("dns", &format!("containerd://{D1}"));
    api.apply(&excluded.to_pod()).unwrap();

    let w = Watcher::start(&kubeconfig, &root).await.unwrap();
    w.expect(&[a1], "initial list").await;
    {
        let snap = w.rx.borrow();
        let wl = &snap.workloads[&a1];
        assert_eq!(wl.namespace.as_deref(), Some("shop"));
        assert_eq!(wl.pod.as_deref(), Some("web-7d9f8b6c5d-x2x4q"));
        assert_eq!(wl.container.as_deref(), Some("app"));
        assert_eq!(wl.owner_kind.as_deref(), Some("Deployment"));
        assert_eq!(wl.owner_name.as_deref(), Some("web"));
        assert_eq!(wl.node.as_deref(), Some(NODE));
    }

    // Annotate B, un-annotate A.
    api.apply(&pod_b(Some("true"), B1).to_pod()).unwrap();
    w.expect(&[a1, b1], "B annotated").await;
    api.apply(&pod_a(Some("false")).to_pod()).unwrap();
    w.expect(&[b1], "A un-annotated").await;
    // "True" is not "true".
    api.apply(&pod_a(Some("True")).to_pod()).unwrap();
    w.holds(&[b1], Duration::from_millis(500), "A annotated True")
        .await;

    // B's container restarts: new id, new cgroup; the old one leaves.
    let b2 = container(
        &root,
        &format!("kubepods/besteffort/pod{UID_B}"),
        &format!("crio-{B2}"),
    )
    .unwrap();
    api.apply(&pod_b(Some("true"), B2).to_pod()).unwrap();
    w.expect(&[b2], "B restarted").await;

    // Outage (500 on every request, watches cut): the set stays.
    let errors = w.metrics.kubernetes_watch_errors.load(Relaxed);
    api.set_outage(Some(Outage::Status(500)));
    wait_until("watch errors during the 500 outage", || {
        w.metrics.kubernetes_watch_errors.load(Relaxed) >= errors + 2
    })
    .await;
    w.holds(&[b2], Duration::from_secs(1), "during 500 outage")
        .await;
    api.set_outage(None);
    api.apply(&pod_a(Some("true")).to_pod()).unwrap();
    w.expect(&[a1, b2], "A annotated after the outage").await;

    // Connections dropped without an answer; meanwhile A is deleted and the history the
    // watcher would resume from is compacted: it must relist (410) and drop A.
    let errors = w.metrics.kubernetes_watch_errors.load(Relaxed);
    let relists = w.metrics.kubernetes_relists.load(Relaxed);
    api.set_outage(Some(Outage::DropConnections));
    wait_until("watch errors with connections dropped", || {
        w.metrics.kubernetes_watch_errors.load(Relaxed) >= errors + 2
    })
    .await;
    api.delete("shop", "web-7d9f8b6c5d-x2x4q");
    api.expire_history();
    w.holds(&[a1, b2], Duration::from_secs(1), "API unreachable")
        .await;
    api.set_outage(None);
    w.expect(&[b2], "A deleted while unreachable, seen by the relist")
        .await;
    assert!(w.metrics.kubernetes_relists.load(Relaxed) > relists);

    // An open watch told 410 Gone (ERROR event): relist, same set, changes flow again.
    wait_until("a watch open", || api.open_watches() > 0).await;
    let lists = api.list_count();
    api.expire_history();
    wait_until("a relist after ERROR 410", || api.list_count() > lists).await;
    api.apply(&pod_a(Some("true")).to_pod()).unwrap();
    w.expect(&[a1, b2], "A back after the 410 event").await;

    // The watch request itself answered with HTTP 410: a fresh watcher lists again.
    wait_until("a watch open", || api.open_watches() > 0).await;
    let lists = api.list_count();
    api.reject_next_watch_with_410();
    api.drop_watches();
    wait_until("a relist after HTTP 410", || api.list_count() > lists).await;
    w.holds(&[a1, b2], Duration::from_millis(500), "after HTTP 410")
        .await;

    // Daemon restart: a fresh watcher and reconciler find the same set.
    w.stop();
    let w = Watcher::start(&kubeconfig, &root).await.unwrap();
    w.expect(&[a1, b2], "after restart").await;

    // Delete everything.
    api.delete("shop", "web-7d9f8b6c5d-x2x4q");
    api.delete("shop", "worker-0");
    w.expect(&[], "all deleted").await;
    assert!(!w.ids().contains(&c1) && !w.ids().contains(&d1));

    // Every request asked for this node's pods only.
    for r in api.requests() {
        assert!(
            r.contains("fieldSelector=spec.nodeName%3Dnode-1"),
            "request without the node's field selector: {r}"
        );
    }
    w.stop();
}
