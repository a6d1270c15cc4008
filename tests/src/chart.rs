//! The Helm chart `charts/capture-daemon`, rendered by Helm's engine and typed strictly:
//! accessors for what the tests (and `cargo xtask`) look at: the DaemonSet's one container,
//! its capabilities and flags, the ConfigMap, the RBAC objects.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::Value;

use crate::helm::{HelmSdk, Rendered};
use crate::k8s::Object;

/// Release name and namespace the tests render with.
pub const RELEASE: &str = "capture-daemon";
pub const NAMESPACE: &str = "capture-system";

/// `<root>/charts/capture-daemon`.
pub fn chart_dir(root: &Path) -> PathBuf {
    root.join("charts/capture-daemon")
}

/// One rendering of the chart: every object, as rendered and typed.
#[derive(Debug)]
pub struct RenderedChart {
    pub rendered: Rendered,
    /// (template, document as rendered, typed object), in template order.
    pub objects: Vec<(String, Value, Object)>,
}

impl RenderedChart {
    /// Renders `chart` with `values` (None: the defaults) and types every object strictly.
    pub fn render(sdk: &HelmSdk, chart: &Path, values: Option<&Path>) -> Result<Self> {
        let rendered = sdk.render(chart, values, RELEASE, NAMESPACE)?;
        let mut objects = Vec::new();
        for (template, doc) in rendered.objects()? {
            let typed = Object::parse(&doc).with_context(|| format!("in {template}"))?;
            objects.push((template, doc, typed));
        }
        Ok(Self { rendered, objects })
    }

    /// `kind` of every object, in order.
    pub fn kinds(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter_map(|(_, doc, _)| doc.get("kind").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    fn only<'a, T>(
        &'a self,
        what: &str,
        pick: impl Fn(&'a Object) -> Option<&'a T>,
    ) -> Result<&'a T> {
        let mut found = self.objects.iter().filter_map(|(_, _, o)| pick(o));
        match (found.next(), found.next()) {
            (Some(one), None) => Ok(one),
            (None, _) => bail!("no {what} rendered"),
            (Some(_), Some(_)) => bail!("more than one {what} rendered"),
        }
    }

    /// The one object of `kind` as rendered (JSON).
    pub fn doc(&self, kind: &str) -> Result<&Value> {
        let mut found = self
            .objects
            .iter()
            .filter(|(_, doc, _)| doc.get("kind").and_then(Value::as_str) == Some(kind));
        match (found.next(), found.next()) {
            (Some((_, doc, _)), None) => Ok(doc),
            (None, _) => bail!("no {kind} rendered"),
            (Some(_), Some(_)) => bail!("more than one {kind} rendered"),
        }
    }

    pub fn daemon_set(&self) -> Result<&DaemonSet> {
        self.only("DaemonSet", |o| match o {
            Object::DaemonSet(d) => Some(d.as_ref()),
            _ => None,
        })
    }

    pub fn config_map(&self) -> Result<&ConfigMap> {
        self.only("ConfigMap", |o| match o {
            Object::ConfigMap(c) => Some(c.as_ref()),
            _ => None,
        })
    }

    pub fn service_account(&self) -> Result<&ServiceAccount> {
        self.only("ServiceAccount", |o| match o {
            Object::ServiceAccount(s) => Some(s.as_ref()),
            _ => None,
        })
    }

    pub fn cluster_role(&self) -> Result<&ClusterRole> {
        self.only("ClusterRole", |o| match o {
            Object::ClusterRole(r) => Some(r.as_ref()),
            _ => None,
        })
    }

    pub fn cluster_role_binding(&self) -> Result<&ClusterRoleBinding> {
        self.only("ClusterRoleBinding", |o| match o {
            Object::ClusterRoleBinding(b) => Some(b.as_ref()),
            _ => None,
        })
    }

    pub fn service(&self) -> Result<&Service> {
        self.only("Service", |o| match o {
            Object::Service(s) => Some(s.as_ref()),
            _ => None,
        })
    }

    pub fn service_monitor(&self) -> Result<&Value> {
        self.only("ServiceMonitor", |o| match o {
            Object::ServiceMonitor(v) => Some(v),
            _ => None,
        })
    }

    /// The DaemonSet's pod spec.
    pub fn pod_spec(&self) -> Result<&PodSpec> {
        self.daemon_set()?
            .spec
            .template
            .spec
            .as_ref()
            .context("DaemonSet without a pod spec")
    }

    /// The daemon container: the pod's only container.
    pub fn container(&self) -> Result<&Container> {
        match self.pod_spec()?.containers.as_slice() {
            [one] => Ok(one),
            other => bail!("want exactly one container, got {}", other.len()),
        }
    }

    /// The container's arguments.
    pub fn args(&self) -> Result<Vec<String>> {
        Ok(self.container()?.args.clone().unwrap_or_default())
    }

    /// The capabilities the container adds, in the chart's order (`BPF`, `PERFMON`, ...).
    pub fn capabilities_added(&self) -> Result<Vec<String>> {
        self.container()?
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone())
            .context("the container adds no capabilities")
    }

    /// The command that starts the daemon in the image.
    pub fn command(&self) -> Result<Vec<String>> {
        self.container()?
            .command
            .clone()
            .context("the container has no command")
    }
}

/// The value after `flag` in `args` (every occurrence).
pub fn flag_values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
    args.windows(2)
        .filter(|w| w[0] == flag)
        .map(|w| w[1].as_str())
        .collect()
}
