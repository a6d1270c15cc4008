//! Kubernetes opt-in (`--kubernetes`): watch the pods of this node, capture the containers of
//! those annotated `traffic-capture/enabled: "true"` in allowed namespaces.
//!
//! `watch` lists and watches the node's pods (field selector `spec.nodeName`) with
//! `kube::runtime::watcher`, backing off with jitter on errors and relisting after `410 Gone`;
//! `pod` reads what matters out of each Pod; `reconcile` turns pod events into the target set,
//! resolving each running container to its cgroups with `cgroups`. The set reaches the kernel
//! through the pipeline (see `control`). Only pods are read (get, list, watch): owners are
//! derived from names and labels, never fetched.

pub mod cgroups;
pub mod pod;
pub mod reconcile;
pub mod watch;

use std::path::Path;

/// Why the API client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--kubeconfig` names a file that cannot be used: a configuration error.
    #[error("--kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error(
        "--kubernetes: no Kubernetes API configuration found (not running in a pod, and no \
         kubeconfig in $KUBECONFIG or ~/.kube/config): {0}"
    )]
    NoConfig(String),
    #[error("--kubernetes: creating the API client: {0}")]
    Client(String),
}

impl ClientError {
    /// A kubeconfig the operator must fix (exit code 2), not a failure to reach the API.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Kubeconfig { .. })
    }
}

/// The API client: from `kubeconfig` when given, else the in-cluster service account, else
/// whatever `kube::Config::infer` finds (`$KUBECONFIG`, `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let bad = |reason: String| ClientError::Kubeconfig {
                path: path.display().to_string(),
                reason,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(in_cluster) => kube::Config::infer().await.map_err(|e| {
                ClientError::NoConfig(format!("in cluster: {in_cluster}; inferred: {e}"))
            })?,
        },
    };
    kube::Client::try_from(config).map_err(|e| ClientError::Client(e.to_string()))
}
