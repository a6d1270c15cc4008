//! What the daemon takes from a Pod object: whether it opts in, which workload it belongs to,
//! and which containers run in it. Pure functions of the object, so they are tested without an
//! API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// The opt-in annotation (DESIGN.md §4).
pub const ANNOTATION: &str = "traffic-capture/enabled";
/// The label the Deployment controller puts on a ReplicaSet's pods; the ReplicaSet is named
/// `<deployment>-<hash>`.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// A pod as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// The value of [`ANNOTATION`], if present.
    pub annotation: Option<String>,
    pub qos: QosClass,
    /// The controller that owns the pod, as `(kind, name)`; a ReplicaSet of a Deployment is
    /// reported as the Deployment.
    pub owner: Option<(String, String)>,
    /// Containers that have been started at least once (they have a container id): regular,
    /// init (including native sidecars) and ephemeral ones.
    pub containers: Vec<ContainerView>,
}

/// Kubernetes QoS class (`status.qosClass`): it decides where the kubelet puts the pod's
/// cgroup. Guaranteed pods sit directly under `kubepods`, the others under a class slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
    /// Not reported yet: every class is tried.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    pub name: String,
    /// The runtime's id, without the `containerd://` / `cri-o://` / `docker://` scheme.
    pub id: String,
    /// Running now: only a running container has a cgroup to capture.
    pub running: bool,
}

/// Whether the annotation opts the pod in: exactly the string `true`. Annotation keys are
/// case-sensitive in Kubernetes, and so is the value here: `True` or `yes` do not opt in (the
/// daemon logs a warning for such values, see [`annotation_is_unclear`]).
pub fn opted_in(annotation: Option<&str>) -> bool {
    annotation == Some("true")
}

/// A value that was probably meant to opt in or out but is neither `true` nor `false`.
pub fn annotation_is_unclear(annotation: Option<&str>) -> bool {
    annotation.is_some_and(|v| v != "true" && v != "false")
}

/// Which namespaces may be captured: `include` empty means all; `exclude` always wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamespaceFilter {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

impl NamespaceFilter {
    pub fn allows(&self, namespace: &str) -> bool {
        !self.exclude.iter().any(|n| n == namespace)
            && (self.include.is_empty() || self.include.iter().any(|n| n == namespace))
    }
}

impl PodView {
    /// `None` for an object without a uid, namespace or name (never sent by a real API server).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let namespace = meta.namespace.clone()?;
        let name = meta.name.clone()?;
        let annotation = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION))
            .cloned();
        let status = pod.status.as_ref();
        let qos = match status.and_then(|s| s.qos_class.as_deref()) {
            Some("Guaranteed") => QosClass::Guaranteed,
            Some("Burstable") => QosClass::Burstable,
            Some("BestEffort") => QosClass::BestEffort,
            _ => QosClass::Unknown,
        };
        let empty = BTreeMap::new();
        let owner = owner(
            meta.owner_references.as_deref().unwrap_or_default(),
            meta.labels.as_ref().unwrap_or(&empty),
        );
        let mut containers = Vec::new();
        if let Some(s) = status {
            for list in [
                &s.init_container_statuses,
                &s.container_statuses,
                &s.ephemeral_container_statuses,
            ] {
                containers.extend(list.iter().flatten().filter_map(container));
            }
        }
        Some(Self {
            uid,
            namespace,
            name,
            annotation,
            qos,
            owner,
            containers,
        })
    }
}

fn container(status: &ContainerStatus) -> Option<ContainerView> {
    let id = container_id(status.container_id.as_deref()?)?;
    let running = status
        .state
        .as_ref()
        .is_some_and(|state| state.running.is_some());
    Some(ContainerView {
        name: status.name.clone(),
        id: id.to_string(),
        running,
    })
}

/// `containerd://<id>`, `cri-o://<id>`, `docker://<id>` -> `<id>`. Ids are hex; anything else
/// (an empty id, a path) is refused, since the id becomes part of a file name.
pub fn container_id(uri: &str) -> Option<&str> {
    let id = uri.split_once("://").map_or(uri, |(_, id)| id);
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then_some(id)
}

/// The pod's controller as `(kind, name)`. A ReplicaSet named `<deployment>-<hash>` whose pods
/// carry `pod-template-hash: <hash>` was made by the Deployment `<deployment>`: that is the
/// workload people know, and deriving it from the names needs no read access to ReplicaSets.
pub fn owner(
    refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    labels: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let r = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())?;
    if r.kind == "ReplicaSet"
        && let Some(hash) = labels.get(POD_TEMPLATE_HASH).filter(|h| !h.is_empty())
        && let Some(deployment) = r
            .name
            .strip_suffix(hash.as_str())
            .and_then(|n| n.strip_suffix('-'))
            .filter(|n| !n.is_empty())
    {
        return Some(("Deployment".into(), deployment.into()));
    }
    Some((r.kind.clone(), r.name.clone()))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn owner_ref(kind: &str, name: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller,
            block_owner_deletion: None,
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn annotation_must_be_exactly_true() {
        assert!(opted_in(Some("true")));
        for v in [
            None,
            Some("True"),
            Some("TRUE"),
            Some("yes"),
            Some(" true"),
            Some("false"),
        ] {
            assert!(!opted_in(v), "{v:?}");
        }
        assert!(annotation_is_unclear(Some("True")));
        assert!(!annotation_is_unclear(Some("false")));
        assert!(!annotation_is_unclear(None));
    }

    #[test]
    fn namespace_filter() {
        let all = NamespaceFilter::default();
        assert!(all.allows("default"));
        let f = NamespaceFilter {
            include: vec!["shop".into(), "kube-system".into()],
            exclude: vec!["kube-system".into()],
        };
        assert!(f.allows("shop"));
        assert!(!f.allows("kube-system"), "exclude wins over include");
        assert!(!f.allows("default"), "not in a non-empty include list");
        let f = NamespaceFilter {
            include: vec![],
            exclude: vec!["kube-system".into()],
        };
        assert!(f.allows("default"));
        assert!(!f.allows("kube-system"));
    }

    #[test]
    fn deployment_is_derived_from_its_replicaset() {
        let refs = [owner_ref("ReplicaSet", "web-7d9f8b6c5d", Some(true))];
        assert_eq!(
            owner(&refs, &labels(&[("pod-template-hash", "7d9f8b6c5d")])),
            Some(("Deployment".into(), "web".into()))
        );
        // A deployment name with dashes of its own.
        let refs = [owner_ref("ReplicaSet", "my-web-app-5f4b", Some(true))];
        assert_eq!(
            owner(&refs, &labels(&[("pod-template-hash", "5f4b")])),
            Some(("Deployment".into(), "my-web-app".into()))
        );
        // A bare ReplicaSet (no hash label, or a name that does not end in it) stays one.
        let refs = [owner_ref("ReplicaSet", "standalone", Some(true))];
        assert_eq!(
            owner(&refs, &labels(&[])),
            Some(("ReplicaSet".into(), "standalone".into()))
        );
        assert_eq!(
            owner(&refs, &labels(&[("pod-template-hash", "abc")])),
            Some(("ReplicaSet".into(), "standalone".into()))
        );
    }

    #[test]
    fn other_owners_and_none() {
        let refs = [
            owner_ref("ConfigMap", "not-controller", None),
            owner_ref("StatefulSet", "db", Some(true)),
        ];
        assert_eq!(
            owner(&refs, &labels(&[])),
            Some(("StatefulSet".into(), "db".into())),
            "the controller reference wins"
        );
        let refs = [owner_ref("DaemonSet", "agent", Some(false))];
        assert_eq!(
            owner(&refs, &labels(&[])),
            Some(("DaemonSet".into(), "agent".into()))
        );
        assert_eq!(owner(&[], &labels(&[])), None);
    }

    #[test]
    fn container_ids() {
        assert_eq!(container_id("containerd://abc123"), Some("abc123"));
        assert_eq!(container_id("cri-o://def456"), Some("def456"));
        assert_eq!(container_id("docker://0f0f"), Some("0f0f"));
        assert_eq!(container_id("containerd://"), None);
        assert_eq!(container_id("containerd://../../etc"), None);
    }

    #[test]
    fn pod_view_from_real_pod_json() {
        let pod: Pod = serde_json::from_str(
            r#"{
              "apiVersion": "v1", "kind": "Pod",
              "metadata": {
                "name": "web-7d9f8b6c5d-x2x4q", "namespace": "shop",
                "uid": "0b4a9c3e-1f2d-4e5f-8a7b-6c5d4e3f2a1b",
                "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5d"},
                "annotations": {"traffic-capture/enabled": "true"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                  "name": "web-7d9f8b6c5d", "uid": "r", "controller": true}]
              },
              "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "proxy"}],
                       "initContainers": [{"name": "init"}]},
              "status": {
                "phase": "Running", "qosClass": "Burstable",
                "initContainerStatuses": [{"name": "init", "containerID": "containerd://11",
                  "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                  "state": {"terminated": {"exitCode": 0}}}],
                "containerStatuses": [
                  {"name": "app", "containerID": "containerd://aa", "image": "i", "imageID": "",
                   "ready": true, "restartCount": 1, "state": {"running": {}}},
                  {"name": "proxy", "image": "i", "imageID": "", "ready": false,
                   "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
                ]
              }
            }"#,
        )
        .unwrap();
        let v = PodView::from_pod(&pod).unwrap();
        assert_eq!(v.namespace, "shop");
        assert_eq!(v.annotation.as_deref(), Some("true"));
        assert_eq!(v.qos, QosClass::Burstable);
        assert_eq!(v.owner, Some(("Deployment".into(), "web".into())));
        assert_eq!(
            v.containers,
            vec![
                ContainerView {
                    name: "init".into(),
                    id: "11".into(),
                    running: false
                },
                ContainerView {
                    name: "app".into(),
                    id: "aa".into(),
                    running: true
                },
            ]
        );
    }
}
