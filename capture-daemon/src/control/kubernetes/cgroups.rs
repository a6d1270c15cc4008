//! Finding a pod container's cgroup v2 directories under the node's cgroup root.
//!
//! The kubelet names a pod's cgroup after the pod uid and QoS class, in one of two styles:
//! - systemd driver: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice`
//!   (Guaranteed pods: `kubepods.slice/kubepods-pod<uid>.slice`, no class slice);
//! - cgroupfs driver: `kubepods/burstable/pod<uid>` (Guaranteed: `kubepods/pod<uid>`).
//!
//! `kubepods` itself is not always at the top: a kubelet `--cgroup-root` (kind uses `/kubelet`,
//! giving `kubelet.slice/kubelet-kubepods.slice`) or a nested node moves it. So the resolver first
//! finds the kubepods directories by walking the top of the tree (a few levels, bounded), then
//! looks the pod up by name under each. Inside the pod directory, a container's directory is the
//! one named after its id, whatever the runtime's decoration: `cri-containerd-<id>.scope`,
//! `crio-<id>.scope`, `docker-<id>.scope` (systemd), `<id>` or `crio-<id>` (cgroupfs).
//!
//! The kernel filter compares the exact cgroup of the running task, not its ancestors, and
//! some runtimes put the container's processes one level down (crun with a delegated systemd
//! scope creates `<scope>/container`). So a container is captured through every directory of
//! its subtree, and the subtree is rescanned as long as the container runs.
//!
//! A cgroup's id, what `bpf_get_current_cgroup_id()` returns, is its directory's inode number.

use std::{
    collections::VecDeque,
    io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::pod::QosClass;

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
/// How deep under the root kubepods directories are looked for.
const DISCOVERY_DEPTH: usize = 5;
/// Directories visited at most by one discovery walk.
const DISCOVERY_MAX_DIRS: usize = 20_000;
/// A failed lookup walks the tree again at most this often.
const REDISCOVER_EVERY: Duration = Duration::from_secs(2);
/// Levels below a container's directory that are captured too, and directories at most.
const SUBTREE_DEPTH: usize = 4;
pub const SUBTREE_MAX_DIRS: usize = 64;

/// Why the cgroup root cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("--cgroup-root {0}: no such directory")]
    Missing(PathBuf),
    #[error(
        "--cgroup-root {root}: this is a cgroup v1 hierarchy, and capture needs cgroup v2 (the \
         unified hierarchy, the default of current distributions and of Kubernetes since 1.25). \
         This node uses cgroup v1 only: boot it with systemd.unified_cgroup_hierarchy=1"
    )]
    Version1 { root: PathBuf },
    #[error(
        "--cgroup-root {root}: this is a cgroup v1 hierarchy; the node is hybrid and has cgroup \
         v2 at {unified}: pass --cgroup-root {unified} (pods are found there with the systemd \
         cgroup driver only) or boot the node with systemd.unified_cgroup_hierarchy=1"
    )]
    Hybrid { root: PathBuf, unified: PathBuf },
    #[error("--cgroup-root {0}: {1}")]
    Io(PathBuf, io::Error),
}

impl RootError {
    /// Exit code: a missing directory is a configuration error (2), a node on cgroup v1 a
    /// runtime failure (1).
    /// A `--cgroup-root` the operator must fix (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Missing(_))
    }
}

/// Checks that `root` is the root (or a directory) of a cgroup v2 hierarchy.
pub fn check_root(root: &Path) -> Result<(), RootError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(RootError::Missing(root.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(RootError::Missing(root.to_path_buf()));
        }
        Err(e) => return Err(RootError::Io(root.to_path_buf(), e)),
    }
    if is_cgroup2(root) {
        return Ok(());
    }
    let unified = root.join("unified");
    if is_cgroup2(&unified) {
        return Err(RootError::Hybrid {
            root: root.to_path_buf(),
            unified,
        });
    }
    Err(RootError::Version1 {
        root: root.to_path_buf(),
    })
}

fn is_cgroup2(dir: &Path) -> bool {
    match nix::sys::statfs::statfs(dir) {
        #[expect(
            clippy::useless_conversion,
            reason = "the field type differs between libcs"
        )]
        Ok(fs) => i64::from(fs.filesystem_type().0) == CGROUP2_SUPER_MAGIC,
        // Only cgroup v2 directories have cgroup.controllers.
        Err(_) => dir.join("cgroup.controllers").exists(),
    }
}

/// A container's cgroup: its directory and the ids of every directory of its subtree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroups {
    pub dir: PathBuf,
    /// `(cgroup id, directory)`, the container's directory first.
    pub cgroups: Vec<(u64, PathBuf)>,
}

/// Why a container's cgroup was not found (yet).
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no cgroup directory for pod {uid} under {root}")]
    PodNotFound { uid: String, root: PathBuf },
    #[error("no cgroup directory for container {id} in {pod_dir}")]
    ContainerNotFound { id: String, pod_dir: PathBuf },
    #[error("{0} holds the daemon itself; capturing it would capture the daemon's own output")]
    OwnCgroup(PathBuf),
    #[error("reading {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// Finds container cgroups under one cgroup root; remembers where the kubepods directories are.
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    kubepods: Vec<PathBuf>,
    discovered_at: Option<Instant>,
    own_pid: u32,
}

impl CgroupResolver {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            kubepods: Vec::new(),
            discovered_at: None,
            own_pid: std::process::id(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cgroup directories of container `id` of pod `uid`.
    pub fn resolve(
        &mut self,
        uid: &str,
        qos: QosClass,
        id: &str,
    ) -> Result<ContainerCgroups, ResolveError> {
        let pod_dir = self.pod_dir(uid, qos)?;
        let dir = container_dir(&pod_dir, id)?.ok_or_else(|| ResolveError::ContainerNotFound {
            id: id.to_string(),
            pod_dir: pod_dir.clone(),
        })?;
        self.subtree(&dir)
    }

    /// `dir` and every directory under it (bounded), with their ids; refuses a subtree that
    /// holds the daemon.
    pub fn subtree(&self, dir: &Path) -> Result<ContainerCgroups, ResolveError> {
        let found = walk(dir)?;
        self.refuse_own(&found)?;
        Ok(found)
    }

    /// Walks a resolved container's subtree again: `Some` with the new content when
    /// directories appeared or went, `None` when nothing changed, an error when the container's
    /// directory is gone. Cheap when nothing changed (no `cgroup.procs` read).
    pub fn rescan(
        &self,
        found: &ContainerCgroups,
    ) -> Result<Option<ContainerCgroups>, ResolveError> {
        let now = walk(&found.dir)?;
        if now == *found {
            return Ok(None);
        }
        self.refuse_own(&now)?;
        Ok(Some(now))
    }

    fn refuse_own(&self, found: &ContainerCgroups) -> Result<(), ResolveError> {
        match found
            .cgroups
            .iter()
            .find(|(_, d)| holds_pid(d, self.own_pid))
        {
            Some((_, d)) => Err(ResolveError::OwnCgroup(d.clone())),
            None => Ok(()),
        }
    }

    /// The pod's directory, from the kubepods directories found so far; walks the tree again
    /// (rate-limited) when it is not under any of them.
    pub fn pod_dir(&mut self, uid: &str, qos: QosClass) -> Result<PathBuf, ResolveError> {
        let not_found = || ResolveError::PodNotFound {
            uid: uid.to_string(),
            root: self.root.clone(),
        };
        if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(not_found());
        }
        if let Some(d) = find_pod_dir(&self.kubepods, uid, qos) {
            return Ok(d);
        }
        if self
            .discovered_at
            .is_none_or(|t| t.elapsed() >= REDISCOVER_EVERY)
        {
            self.kubepods = discover_kubepods(&self.root);
            self.discovered_at = Some(Instant::now());
            if let Some(d) = find_pod_dir(&self.kubepods, uid, qos) {
                return Ok(d);
            }
        }
        Err(not_found())
    }

    /// The kubepods directories found by the last walk.
    pub fn kubepods_dirs(&self) -> &[PathBuf] {
        &self.kubepods
    }
}

/// `dir` and every directory under it (at most [`SUBTREE_DEPTH`] levels and
/// [`SUBTREE_MAX_DIRS`] directories), with their ids.
fn walk(dir: &Path) -> Result<ContainerCgroups, ResolveError> {
    let mut cgroups = Vec::new();
    let mut queue = VecDeque::from([(dir.to_path_buf(), 0usize)]);
    while let Some((d, depth)) = queue.pop_front() {
        if cgroups.len() >= SUBTREE_MAX_DIRS {
            break;
        }
        let meta = match std::fs::metadata(&d) {
            Ok(m) => m,
            // A child removed while walking is simply not there any more.
            Err(e) if e.kind() == io::ErrorKind::NotFound && depth > 0 => continue,
            Err(e) => return Err(ResolveError::Io(d, e)),
        };
        if depth < SUBTREE_DEPTH {
            for child in child_dirs(&d) {
                queue.push_back((child, depth + 1));
            }
        }
        cgroups.push((meta.ino(), d));
    }
    Ok(ContainerCgroups {
        dir: dir.to_path_buf(),
        cgroups,
    })
}

fn find_pod_dir(kubepods: &[PathBuf], uid: &str, qos: QosClass) -> Option<PathBuf> {
    kubepods
        .iter()
        .flat_map(|k| pod_dir_candidates(k, uid, qos))
        .find(|d| d.is_dir())
}

/// Where the kubelet puts the pod `uid` of class `qos` under the kubepods directory `kubepods`,
/// most likely first.
pub fn pod_dir_candidates(kubepods: &Path, uid: &str, qos: QosClass) -> Vec<PathBuf> {
    let name = kubepods
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let [guaranteed, burstable, besteffort] = match name.strip_suffix(".slice") {
        // systemd: unit names cannot hold '-' inside a component, so the uid's dashes become '_'.
        Some(prefix) => {
            let u = uid.replace('-', "_");
            [
                kubepods.join(format!("{prefix}-pod{u}.slice")),
                kubepods
                    .join(format!("{prefix}-burstable.slice"))
                    .join(format!("{prefix}-burstable-pod{u}.slice")),
                kubepods
                    .join(format!("{prefix}-besteffort.slice"))
                    .join(format!("{prefix}-besteffort-pod{u}.slice")),
            ]
        }
        None => [
            kubepods.join(format!("pod{uid}")),
            kubepods.join("burstable").join(format!("pod{uid}")),
            kubepods.join("besteffort").join(format!("pod{uid}")),
        ],
    };
    match qos {
        QosClass::Guaranteed | QosClass::Unknown => vec![guaranteed, burstable, besteffort],
        QosClass::Burstable => vec![burstable, guaranteed, besteffort],
        QosClass::BestEffort => vec![besteffort, burstable, guaranteed],
    }
}

/// Whether a directory name is a kubepods directory: `kubepods` (cgroupfs), `kubepods.slice`
/// or `<cgroup-root>-kubepods.slice` (systemd).
fn is_kubepods(name: &str) -> bool {
    name == "kubepods" || name == "kubepods.slice" || name.ends_with("-kubepods.slice")
}

/// Breadth-first walk of the top of the tree for kubepods directories.
pub fn discover_kubepods(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if root
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_kubepods)
    {
        found.push(root.to_path_buf());
        return found;
    }
    let mut queue = VecDeque::from([(root.to_path_buf(), 0usize)]);
    let mut visited = 0usize;
    while let Some((dir, depth)) = queue.pop_front() {
        visited += 1;
        if visited > DISCOVERY_MAX_DIRS {
            break;
        }
        for child in child_dirs(&dir) {
            let name = child.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if is_kubepods(name) {
                found.push(child);
            } else if depth + 1 < DISCOVERY_DEPTH {
                queue.push_back((child, depth + 1));
            }
        }
    }
    found.sort();
    found
}

/// The directory of container `id` inside `pod_dir`, whatever the runtime's naming.
fn container_dir(pod_dir: &Path, id: &str) -> Result<Option<PathBuf>, ResolveError> {
    let entries = match std::fs::read_dir(pod_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ResolveError::Io(pod_dir.to_path_buf(), e)),
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if names_container(name, id) {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope`, `<id>`, `crio-<id>`
/// all name container `<id>`; `crio-conmon-<id>` (CRI-O's monitor process) does not.
fn names_container(name: &str, id: &str) -> bool {
    let name = name.strip_suffix(".scope").unwrap_or(name);
    let name = ["cri-containerd-", "crio-", "docker-", "containerd-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    name == id
}

fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// Whether `pid` is one of the processes of the cgroup `dir` (false outside cgroupfs).
fn holds_pid(dir: &Path, pid: u32) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|text| {
        text.lines()
            .any(|l| l.trim().parse::<u32>().is_ok_and(|p| p == pid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b4a9c3e-1f2d-4e5f-8a7b-6c5d4e3f2a1b";
    const UID_: &str = "0b4a9c3e_1f2d_4e5f_8a7b_6c5d4e3f2a1b";
    const ID: &str = "4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb";

    fn mk(root: &Path, rel: &str) -> PathBuf {
        let d = root.join(rel);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ino(d: &Path) -> u64 {
        std::fs::metadata(d).unwrap().ino()
    }

    /// One fixture per runtime, driver and QoS class: the pod directory's path relative to the
    /// root, and the container directory's name inside it.
    fn layouts() -> Vec<(&'static str, QosClass, String, String)> {
        let sd = |qos: &str| match qos {
            "" => format!("kubepods.slice/kubepods-pod{UID_}.slice"),
            q => format!("kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{UID_}.slice"),
        };
        let fs = |qos: &str| match qos {
            "" => format!("kubepods/pod{UID}"),
            q => format!("kubepods/{q}/pod{UID}"),
        };
        let mut out = Vec::new();
        for (qos, class) in [
            ("", QosClass::Guaranteed),
            ("burstable", QosClass::Burstable),
            ("besteffort", QosClass::BestEffort),
        ] {
            out.push((
                "containerd+systemd",
                class,
                sd(qos),
                format!("cri-containerd-{ID}.scope"),
            ));
            out.push(("containerd+cgroupfs", class, fs(qos), ID.to_string()));
            out.push(("cri-o+systemd", class, sd(qos), format!("crio-{ID}.scope")));
            out.push(("cri-o+cgroupfs", class, fs(qos), format!("crio-{ID}")));
            out.push((
                "docker+systemd",
                class,
                sd(qos),
                format!("docker-{ID}.scope"),
            ));
        }
        out
    }

    #[test]
    fn every_runtime_driver_and_qos_class() {
        for (what, qos, pod_rel, container) in layouts() {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path();
            // Unrelated neighbours the resolver must not pick.
            mk(root, "system.slice/containerd.service");
            let pod = mk(root, &pod_rel);
            mk(&pod, "cri-containerd-0000.scope");
            mk(&pod, &format!("crio-conmon-{ID}.scope"));
            let dir = mk(&pod, &container);
            let mut r = CgroupResolver::new(root.to_path_buf());
            let got = r
                .resolve(UID, qos, ID)
                .unwrap_or_else(|e| panic!("{what} {qos:?}: {e}"));
            assert_eq!(got.dir, dir, "{what} {qos:?}");
            assert_eq!(
                got.cgroups,
                vec![(ino(&dir), dir.clone())],
                "{what} {qos:?}"
            );
            // The class from the API is a preference, not a requirement.
            let got = r.resolve(UID, QosClass::Unknown, ID).unwrap();
            assert_eq!(got.dir, dir, "{what} with the class unknown");
        }
    }

    #[test]
    fn crun_child_directory_is_captured_with_its_scope() {
        let tmp = tempfile::tempdir().unwrap();
        let pod = mk(
            tmp.path(),
            &format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
        );
        let scope = mk(&pod, &format!("cri-containerd-{ID}.scope"));
        let child = mk(&scope, "container");
        let mut r = CgroupResolver::new(tmp.path().to_path_buf());
        let got = r.resolve(UID, QosClass::Burstable, ID).unwrap();
        assert_eq!(
            got.cgroups,
            vec![(ino(&scope), scope.clone()), (ino(&child), child)]
        );
    }

    #[test]
    fn nested_kubelet_cgroup_root_as_in_kind() {
        // kind runs the kubelet with --cgroup-root=/kubelet, and the node is itself a container.
        let tmp = tempfile::tempdir().unwrap();
        let pod = mk(
            tmp.path(),
            &format!(
                "system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice/\
                 kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
            ),
        );
        let dir = mk(&pod, &format!("cri-containerd-{ID}.scope"));
        let mut r = CgroupResolver::new(tmp.path().to_path_buf());
        assert_eq!(r.resolve(UID, QosClass::BestEffort, ID).unwrap().dir, dir);
        // The root may also be the kubepods directory itself.
        let kubepods = tmp
            .path()
            .join("system.slice/docker-abc.scope/kubelet.slice/kubelet-kubepods.slice");
        let mut r = CgroupResolver::new(kubepods);
        assert_eq!(r.resolve(UID, QosClass::BestEffort, ID).unwrap().dir, dir);
    }

    #[test]
    fn a_late_container_is_found_once_its_directory_appears() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = CgroupResolver::new(tmp.path().to_path_buf());
        // Nothing yet: not even kubepods.
        assert!(matches!(
            r.resolve(UID, QosClass::Burstable, ID),
            Err(ResolveError::PodNotFound { .. })
        ));
        let pod = mk(tmp.path(), &format!("kubepods/burstable/pod{UID}"));
        // The walk is rate-limited; the next one finds kubepods.
        r.discovered_at = None;
        assert!(matches!(
            r.resolve(UID, QosClass::Burstable, ID),
            Err(ResolveError::ContainerNotFound { .. })
        ));
        let dir = mk(&pod, ID);
        assert_eq!(r.resolve(UID, QosClass::Burstable, ID).unwrap().dir, dir);
    }

    #[test]
    fn uids_that_are_not_uids_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        mk(tmp.path(), "kubepods/pod..");
        let mut r = CgroupResolver::new(tmp.path().to_path_buf());
        assert!(r.pod_dir("..", QosClass::Guaranteed).is_err());
        assert!(r.pod_dir("", QosClass::Guaranteed).is_err());
    }

    #[test]
    fn the_root_must_be_cgroup_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let e = check_root(&tmp.path().join("missing")).unwrap_err();
        assert!(e.is_usage(), "{e}");
        // A tmpfs/ext4 directory stands for a v1 root: no cgroup2 magic, no cgroup.controllers.
        let e = check_root(tmp.path()).unwrap_err();
        assert!(matches!(e, RootError::Version1 { .. }), "{e}");
        assert!(!e.is_usage());
        assert!(e.to_string().contains("cgroup v1"), "{e}");
        let mount = crate::kernel::targets::cgroup2_mount().unwrap();
        check_root(&mount).unwrap();
    }

    /// A real cgroup v2 directory: its id is the inode, the kernel's `bpf_get_current_cgroup_id()`
    /// value (checked end to end in tests/e2e/kubernetes.rs), and the resolver refuses the
    /// daemon's own cgroup.
    #[test]
    fn real_cgroup_v2_tree() {
        let mount = crate::kernel::targets::cgroup2_mount().unwrap();
        let top = mount.join(format!("capture-unit-k8s-{}", std::process::id()));
        let pod_rel = format!("kubepods/besteffort/pod{UID}");
        let dir = top.join(&pod_rel).join(ID);
        std::fs::create_dir_all(&dir).unwrap();
        let cleanup = || {
            for d in [
                dir.clone(),
                top.join(&pod_rel),
                top.join("kubepods/besteffort"),
                top.join("kubepods"),
                top.clone(),
            ] {
                let _ = std::fs::remove_dir(d);
            }
        };
        let result = std::panic::catch_unwind(|| {
            let mut r = CgroupResolver::new(top.clone());
            let got = r.resolve(UID, QosClass::BestEffort, ID).unwrap();
            assert_eq!(
                got.cgroups[0].0,
                crate::kernel::targets::cgroup_id(&dir).unwrap()
            );
            // Pretend the daemon runs in it: refused.
            r.own_pid = 1;
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
            assert!(procs.is_empty());
            let init_dir = crate::kernel::targets::pid_cgroup_dir(1, &mount).unwrap();
            assert!(matches!(
                r.subtree(&init_dir),
                Err(ResolveError::OwnCgroup(_))
            ));
        });
        cleanup();
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
}
