//! The Helm chart, rendered and linted by Helm's own engine (helm-python-sdk, no helm binary)
//! for the default values and for `ci/full-values.yaml`; every rendered object typed strictly
//! with k8s-openapi; and the properties a security reviewer relies on asserted one by one:
//! not privileged, the exact capabilities, read-only host mounts, RBAC limited to reading pods,
//! NODE_NAME from the pod's node, probes on the metrics port, live settings only in the
//! ConfigMap, and a values schema that rejects bad values.
//!
//! Needs the SDK that `cargo xtask test` installs under `target/helm-sdk` (skips loudly
//! without it, fails under `CI=true`); the flag test also runs the daemon binary's `--help`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use capture_e2e::chart::{NAMESPACE, RenderedChart, chart_dir, flag_values};
use capture_e2e::helm::{HelmSdk, helm_sdk_ready, yaml_documents};
use capture_e2e::{daemon_binary, run, workspace_root};
use k8s_openapi::api::core::v1::{Volume, VolumeMount};
use serde_json::{Value, json};

/// The capabilities the daemon holds, in the chart's order. `tests/e2e/capabilities.rs` proves
/// on this machine that these suffice and that each one is needed.
const CAPABILITIES: [&str; 4] = ["BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH"];
/// Settings the daemon re-reads while it runs: only these live in the ConfigMap.
const LIVE_KEYS: [&str; 3] = ["paused", "namespace-include", "namespace-exclude"];

/// Returns early (after a loud notice) when the Helm SDK is missing and CI is not set.
macro_rules! require_helm_sdk {
    () => {
        match helm_sdk_ready(&workspace_root())? {
            Some(sdk) => sdk,
            None => return Ok(()),
        }
    };
}

fn full_values() -> PathBuf {
    chart_dir(&workspace_root()).join("ci/full-values.yaml")
}

fn render(sdk: &HelmSdk, values: Option<&Path>) -> Result<RenderedChart> {
    RenderedChart::render(sdk, &chart_dir(&workspace_root()), values)
}

/// Renders the defaults and the full values: (label, rendering).
fn both(sdk: &HelmSdk) -> Result<Vec<(&'static str, RenderedChart)>> {
    Ok(vec![
        ("default values", render(sdk, None)?),
        ("ci/full-values.yaml", render(sdk, Some(&full_values()))?),
    ])
}

/// A values file with `yaml` in a temporary directory.
fn values_file(yaml: &str) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, yaml)?;
    Ok((dir, path))
}

#[test]
fn lint_is_clean_for_default_and_full_values() -> Result<()> {
    let sdk = require_helm_sdk!();
    let chart = chart_dir(&workspace_root());
    for values in [None, Some(full_values())] {
        let report = sdk.lint(&chart, values.as_deref(), NAMESPACE)?;
        assert_eq!(report.total_charts_linted, 1);
        assert!(
            report.problems().is_empty() && report.errors.is_empty(),
            "helm lint --strict with {values:?}: {:#?}",
            report
        );
    }
    Ok(())
}

#[test]
fn every_object_types_strictly_and_nothing_else_is_rendered() -> Result<()> {
    let sdk = require_helm_sdk!();
    // RenderedChart::render fails on any object that does not type strictly.
    let default = render(&sdk, None)?;
    assert_eq!(
        default.kinds(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "ServiceAccount"
        ],
        "default values"
    );
    let full = render(&sdk, Some(&full_values()))?;
    assert_eq!(
        full.kinds(),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ],
        "full values"
    );
    for (label, chart) in [("default", &default), ("full", &full)] {
        for (template, doc, _) in &chart.objects {
            let cluster_scoped = matches!(
                doc.get("kind").and_then(Value::as_str),
                Some("ClusterRole" | "ClusterRoleBinding")
            );
            let namespace = doc.pointer("/metadata/namespace").and_then(Value::as_str);
            if cluster_scoped {
                assert_eq!(namespace, None, "{label}: {template}");
            } else {
                assert_eq!(namespace, Some(NAMESPACE), "{label}: {template}");
            }
        }
        let notes = chart
            .rendered
            .manifests
            .get("capture-daemon/templates/NOTES.txt")
            .context("NOTES.txt not rendered")?;
        assert!(notes.contains("paused"), "{notes}");
    }
    Ok(())
}

#[test]
fn the_daemon_is_not_privileged_and_holds_exactly_its_capabilities() -> Result<()> {
    let sdk = require_helm_sdk!();
    for (label, chart) in both(&sdk)? {
        let pod = chart.pod_spec()?;
        assert_eq!(pod.host_pid, Some(true), "{label}: hostPID");
        assert_ne!(pod.host_network, Some(true), "{label}: hostNetwork");
        assert_ne!(pod.host_ipc, Some(true), "{label}: hostIPC");
        assert_ne!(
            pod.host_users,
            Some(false),
            "{label}: CAP_BPF only works in the host user namespace"
        );
        assert!(pod.init_containers.is_none(), "{label}: init containers");
        assert!(pod.ephemeral_containers.is_none(), "{label}");
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.seccomp_profile.as_ref())
                .map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{label}: pod seccomp profile"
        );

        let sc = chart
            .container()?
            .security_context
            .as_ref()
            .context("the container has no securityContext")?;
        assert_eq!(sc.privileged, Some(false), "{label}: privileged");
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{label}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{label}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{label}: container seccomp profile"
        );
        assert!(
            sc.proc_mount.is_none() && sc.se_linux_options.is_none(),
            "{label}"
        );
        // uid 0 is what makes added capabilities effective (no ambient capabilities in
        // Kubernetes); everything else root usually has is dropped.
        assert_eq!(sc.run_as_user, Some(0), "{label}: runAsUser");
        let caps = sc.capabilities.as_ref().context("no capabilities")?;
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{label}: drop"
        );
        let mut want: Vec<&str> = CAPABILITIES.to_vec();
        if label == "ci/full-values.yaml" {
            // legacyMemlock: true
            want.push("SYS_RESOURCE");
        }
        assert_eq!(chart.capabilities_added()?, want, "{label}: add");
    }
    Ok(())
}

fn volume<'a>(volumes: &'a [Volume], name: &str) -> Result<&'a Volume> {
    volumes
        .iter()
        .find(|v| v.name == name)
        .with_context(|| format!("no volume {name}"))
}

fn mount<'a>(mounts: &'a [VolumeMount], name: &str) -> Result<&'a VolumeMount> {
    mounts
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no mount of volume {name}"))
}

#[test]
fn host_mounts_are_read_only_and_nothing_is_left_on_the_node() -> Result<()> {
    let sdk = require_helm_sdk!();
    for (label, chart) in both(&sdk)? {
        let volumes = chart.pod_spec()?.volumes.clone().unwrap_or_default();
        let mounts = chart.container()?.volume_mounts.clone().unwrap_or_default();
        let mut writable = BTreeSet::new();
        for m in &mounts {
            assert!(
                m.sub_path.is_none() && m.sub_path_expr.is_none(),
                "{label}: {m:?}"
            );
            assert!(m.mount_propagation.is_none(), "{label}: {m:?}");
            if m.read_only != Some(true) {
                writable.insert(m.name.clone());
            }
        }
        let host_paths: BTreeMap<String, (String, Option<String>)> = volumes
            .iter()
            .filter_map(|v| {
                v.host_path
                    .as_ref()
                    .map(|h| (v.name.clone(), (h.path.clone(), h.type_.clone())))
            })
            .collect();
        let cgroup_root = if label == "default values" {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/unified"
        };
        // The only host path is the cgroup v2 hierarchy, read-only, and it must exist already.
        assert_eq!(
            host_paths,
            BTreeMap::from([(
                "host-cgroup".to_owned(),
                (cgroup_root.to_owned(), Some("Directory".to_owned()))
            )]),
            "{label}"
        );
        let cgroup = mount(&mounts, "host-cgroup")?;
        assert_eq!(cgroup.mount_path, "/host/sys/fs/cgroup", "{label}");
        assert_eq!(cgroup.read_only, Some(true), "{label}");
        assert_eq!(
            flag_values(&chart.args()?, "--cgroup-root"),
            ["/host/sys/fs/cgroup"],
            "{label}"
        );
        // The only writable mount is the spool, an emptyDir (gone with the pod).
        if label == "default values" {
            assert!(writable.is_empty(), "{label}: {writable:?}");
        } else {
            assert_eq!(writable, BTreeSet::from(["spool".to_owned()]), "{label}");
            let spool = volume(&volumes, "spool")?;
            let empty_dir = spool
                .empty_dir
                .as_ref()
                .context("spool is not an emptyDir")?;
            // 64 MiB spool limit plus a quarter.
            assert_eq!(
                empty_dir.size_limit.as_ref().map(|q| q.0.as_str()),
                Some("83886080")
            );
            let path = mount(&mounts, "spool")?.mount_path.clone();
            assert_eq!(flag_values(&chart.args()?, "--spool-dir"), [path.as_str()]);
            assert_eq!(
                flag_values(&chart.args()?, "--spool-max-bytes"),
                ["67108864"]
            );
        }
    }

    // A host directory for the spool is the one thing that outlives the release, and the
    // chart says so.
    let (_dir, values) = values_file(
        "collector:\n  endpoint: https://c.example:443\n  tokenSecret: {name: t, key: token}\n  \
         spool: {maxBytes: 1048576, hostPath: /var/lib/capture-daemon/spool}\n",
    )?;
    let chart = render(&sdk, Some(&values))?;
    let spool = volume(
        chart.pod_spec()?.volumes.as_deref().unwrap_or_default(),
        "spool",
    )?;
    let host = spool
        .host_path
        .as_ref()
        .context("spool is not a hostPath")?;
    assert_eq!(host.path, "/var/lib/capture-daemon/spool");
    assert_eq!(host.type_.as_deref(), Some("DirectoryOrCreate"));
    let notes = &chart.rendered.manifests["capture-daemon/templates/NOTES.txt"];
    assert!(
        notes.contains("but the spool in /var/lib/capture-daemon/spool"),
        "{notes}"
    );
    Ok(())
}

#[test]
fn rbac_allows_reading_pods_and_nothing_more() -> Result<()> {
    let sdk = require_helm_sdk!();
    for (label, chart) in both(&sdk)? {
        let role = chart.cluster_role()?;
        let rules = serde_json::to_value(role.rules.as_ref().context("no rules")?)?;
        assert_eq!(
            rules,
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]),
            "{label}"
        );
        assert!(role.aggregation_rule.is_none(), "{label}");
        let account = chart.service_account()?;
        let account_name = account
            .metadata
            .name
            .as_deref()
            .context("unnamed account")?;
        let binding = chart.cluster_role_binding()?;
        assert_eq!(binding.role_ref.kind, "ClusterRole", "{label}");
        assert_eq!(
            Some(binding.role_ref.name.as_str()),
            role.metadata.name.as_deref()
        );
        let subjects = serde_json::to_value(binding.subjects.as_ref().context("no subjects")?)?;
        assert_eq!(
            subjects,
            json!([{"kind": "ServiceAccount", "name": account_name, "namespace": NAMESPACE}]),
            "{label}"
        );
        let pod = chart.pod_spec()?;
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(account_name),
            "{label}"
        );
        // The token is how the daemon reads pods; no other kind of object grants anything.
        assert_eq!(pod.automount_service_account_token, Some(true), "{label}");
        assert!(
            !chart
                .kinds()
                .iter()
                .any(|k| k == "Role" || k == "RoleBinding"),
            "{label}"
        );
    }
    Ok(())
}

#[test]
fn node_name_comes_from_the_pod_and_probes_use_the_metrics_port() -> Result<()> {
    let sdk = require_helm_sdk!();
    for (label, chart) in both(&sdk)? {
        let container = chart.container()?;
        let env = container.env.as_deref().unwrap_or_default();
        let node_name: Vec<_> = env.iter().filter(|e| e.name == "NODE_NAME").collect();
        assert_eq!(node_name.len(), 1, "{label}: {env:?}");
        let field = node_name[0]
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .context("NODE_NAME is not from a fieldRef")?;
        assert_eq!(field.field_path, "spec.nodeName", "{label}");
        assert!(node_name[0].value.is_none(), "{label}");

        let port = if label == "default values" {
            9464
        } else {
            9500
        };
        let ports = container.ports.as_deref().unwrap_or_default();
        assert_eq!(ports.len(), 1, "{label}: {ports:?}");
        assert_eq!(ports[0].name.as_deref(), Some("metrics"), "{label}");
        assert_eq!(ports[0].container_port, port, "{label}");
        assert!(ports[0].host_port.is_none(), "{label}");
        assert_eq!(
            flag_values(&chart.args()?, "--metrics-addr"),
            [format!("0.0.0.0:{port}")],
            "{label}"
        );
        for (probe, path) in [
            (container.liveness_probe.as_ref(), "/healthz"),
            (container.readiness_probe.as_ref(), "/readyz"),
        ] {
            let get = probe
                .and_then(|p| p.http_get.as_ref())
                .with_context(|| format!("{label}: no httpGet probe on {path}"))?;
            assert_eq!(get.path.as_deref(), Some(path), "{label}");
            assert_eq!(
                serde_json::to_value(&get.port)?,
                json!("metrics"),
                "{label}: {path}"
            );
        }
    }
    Ok(())
}

/// The ConfigMap's config file, parsed.
fn config_file(chart: &RenderedChart) -> Result<serde_json::Map<String, Value>> {
    let data = chart.config_map()?.data.clone().unwrap_or_default();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["config.yaml"],
        "ConfigMap keys"
    );
    let docs = yaml_documents(&data["config.yaml"])?;
    match docs.as_slice() {
        [Value::Object(map)] => Ok(map.clone()),
        other => bail!("config.yaml is not one mapping: {other:?}"),
    }
}

#[test]
fn the_config_map_holds_the_live_settings_mounted_as_a_directory() -> Result<()> {
    let sdk = require_helm_sdk!();
    for (label, chart) in both(&sdk)? {
        let config = config_file(&chart)?;
        let keys: BTreeSet<&str> = config.keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(LIVE_KEYS), "{label}");
        let want = if label == "default values" {
            json!({"paused": false, "namespace-include": [], "namespace-exclude": []})
        } else {
            json!({
                "paused": true,
                "namespace-include": ["shop", "payments"],
                "namespace-exclude": ["payments-sandbox"]
            })
        };
        assert_eq!(Value::Object(config), want, "{label}");

        // The daemon reads the file through a directory mount of the ConfigMap (a subPath
        // mount would never see an update).
        let args = chart.args()?;
        let volumes = chart.pod_spec()?.volumes.clone().unwrap_or_default();
        let config_volume = volumes
            .iter()
            .find(|v| {
                v.config_map.as_ref().map(|c| c.name.as_str())
                    == chart
                        .config_map()
                        .ok()
                        .and_then(|c| c.metadata.name.as_deref())
            })
            .context("the ConfigMap is not a volume")?;
        assert!(
            config_volume
                .config_map
                .as_ref()
                .and_then(|c| c.items.as_ref())
                .is_none(),
            "{label}"
        );
        let mounts = chart.container()?.volume_mounts.clone().unwrap_or_default();
        let config_mount = mount(&mounts, &config_volume.name)?;
        assert_eq!(
            flag_values(&args, "--config"),
            [format!("{}/config.yaml", config_mount.mount_path)],
            "{label}"
        );
        // Flags win over the file: a live setting passed as a flag would be frozen.
        for key in LIVE_KEYS {
            assert!(
                !args.iter().any(|a| a == &format!("--{key}")),
                "{label}: --{key} in {args:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn changing_live_settings_does_not_roll_the_pods() -> Result<()> {
    let sdk = require_helm_sdk!();
    let before = render(&sdk, None)?;
    let (_dir, values) =
        values_file("paused: true\nnamespaces:\n  include: [shop]\n  exclude: [kube-system]\n")?;
    let after = render(&sdk, Some(&values))?;
    assert_eq!(
        before.doc("DaemonSet")?,
        after.doc("DaemonSet")?,
        "the pod template changed with a live setting: the DaemonSet would roll its pods"
    );
    assert_ne!(before.doc("ConfigMap")?, after.doc("ConfigMap")?);
    assert_eq!(config_file(&after)?.get("paused"), Some(&Value::Bool(true)));
    Ok(())
}

#[test]
fn collector_values_are_wired_to_flags_and_mounts() -> Result<()> {
    let sdk = require_helm_sdk!();
    let chart = render(&sdk, Some(&full_values()))?;
    let args = chart.args()?;
    let volumes = chart.pod_spec()?.volumes.clone().unwrap_or_default();
    let mounts = chart.container()?.volume_mounts.clone().unwrap_or_default();
    assert_eq!(
        flag_values(&args, "--collector"),
        ["https://collector.capture-system.svc:4317"]
    );
    // Each file flag points at the item of a volume that holds the configured key.
    let file_in = |flag: &str, volume_name: &str, item: &str| -> Result<(String, String)> {
        let m = mount(&mounts, volume_name)?;
        assert_eq!(m.read_only, Some(true), "{volume_name}");
        assert_eq!(
            flag_values(&args, flag),
            [format!("{}/{item}", m.mount_path)],
            "{flag}"
        );
        let v = volume(&volumes, volume_name)?;
        let (name, items) = match (&v.secret, &v.config_map) {
            (Some(s), None) => (s.secret_name.clone().unwrap_or_default(), s.items.clone()),
            (None, Some(c)) => (c.name.clone(), c.items.clone()),
            _ => bail!("{volume_name} is neither a Secret nor a ConfigMap"),
        };
        let key = items
            .unwrap_or_default()
            .into_iter()
            .find(|i| i.path == item)
            .map(|i| i.key)
            .with_context(|| format!("{volume_name} has no item {item}"))?;
        Ok((name, key))
    };
    assert_eq!(
        file_in("--token-file", "collector-token", "token")?,
        (
            "capture-collector-token".to_owned(),
            "daemon-token".to_owned()
        )
    );
    assert_eq!(
        file_in("--collector-ca", "collector-ca", "ca.crt")?,
        ("capture-collector-ca".to_owned(), "ca.pem".to_owned())
    );
    assert_eq!(
        file_in("--collector-cert", "collector-client-tls", "tls.crt")?,
        ("capture-daemon-client-tls".to_owned(), "tls.crt".to_owned())
    );
    assert_eq!(
        file_in("--collector-key", "collector-client-tls", "tls.key")?,
        ("capture-daemon-client-tls".to_owned(), "tls.key".to_owned())
    );
    // Secrets are readable by the daemon's user only.
    for name in ["collector-token", "collector-client-tls"] {
        let mode = volume(&volumes, name)?
            .secret
            .as_ref()
            .and_then(|s| s.default_mode);
        assert_eq!(mode, Some(0o400), "{name}");
    }
    // With a collector, nothing goes to the container log unless asked for.
    assert!(flag_values(&args, "--output").is_empty(), "{args:?}");
    assert!(!args.iter().any(|a| a == "--collector-insecure"));
    // Capture settings become flags.
    assert!(args.iter().any(|a| a == "--headers-only"));
    assert_eq!(
        flag_values(&args, "--redact-header"),
        ["X-Api-Key", "X-Auth-Token"]
    );
    assert_eq!(
        flag_values(&args, "--redact-query"),
        ["access_token", "sig"]
    );
    assert_eq!(
        flag_values(&args, "--redact-body-field"),
        ["ssn", "card_number"]
    );
    assert!(args.iter().any(|a| a == "--no-default-body-redaction"));
    assert_eq!(flag_values(&args, "--max-body-bytes"), ["65536"]);
    assert_eq!(flag_values(&args, "--max-connections"), ["4096"]);
    assert_eq!(flag_values(&args, "--max-target-cgroups"), ["512"]);
    assert_eq!(flag_values(&args, "--ring-buffer-bytes"), ["33554432"]);
    assert_eq!(flag_values(&args, "--idle-timeout"), ["2m"]);
    assert_eq!(flag_values(&args, "--shutdown-deadline"), ["10s"]);
    assert_eq!(flag_values(&args, "--log-format"), ["text"]);
    assert_eq!(flag_values(&args, "--max-header-bytes"), ["32768"]);

    // Scheduling values reach the pod.
    let pod = chart.pod_spec()?;
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    assert_eq!(
        serde_json::to_value(pod.tolerations.as_ref().context("no tolerations")?)?,
        json!([
            {"operator": "Exists", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}
        ])
    );
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("capture"))
            .map(String::as_str),
        Some("enabled")
    );

    // The ServiceMonitor selects the metrics Service, whose port is the container's.
    let service = chart.service()?;
    let spec = service.spec.as_ref().context("Service without spec")?;
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let template_labels = chart
        .daemon_set()?
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    for (k, v) in spec.selector.as_ref().context("Service without selector")? {
        assert_eq!(template_labels.get(k), Some(v), "Service selector {k}");
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("metrics"));
    assert_eq!(ports[0].port, 9500);
    let monitor = chart.service_monitor()?;
    let service_labels = service.metadata.labels.clone().unwrap_or_default();
    let selector = monitor
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .context("ServiceMonitor without matchLabels")?;
    for (k, v) in selector {
        assert_eq!(
            service_labels.get(k).map(String::as_str),
            v.as_str(),
            "ServiceMonitor selector {k}"
        );
    }
    assert_eq!(
        monitor.pointer("/spec/namespaceSelector/matchNames"),
        Some(&json!([NAMESPACE]))
    );
    assert_eq!(
        monitor.pointer("/spec/endpoints"),
        Some(
            &json!([{"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "5s"}])
        )
    );
    assert_eq!(
        monitor.pointer("/metadata/labels/release"),
        Some(&json!("kube-prometheus-stack"))
    );
    Ok(())
}

/// The defaults keep the daemon's body redaction: the chart never turns it off unasked.
#[test]
fn default_values_keep_body_redaction_on() -> Result<()> {
    let sdk = require_helm_sdk!();
    let args = render(&sdk, None)?.args()?;
    assert!(
        !args.iter().any(|a| a == "--no-default-body-redaction"),
        "{args:?}"
    );
    assert!(flag_values(&args, "--redact-body-field").is_empty());
    Ok(())
}

#[test]
fn the_values_schema_and_the_chart_reject_bad_values() -> Result<()> {
    let sdk = require_helm_sdk!();
    // Values the schema rejects: `helm template`, `install` and `lint` all report them.
    let schema_cases = [
        ("capture:\n  maxBodyBytes: lots\n", "/capture/maxBodyBytes"),
        ("bogus: 1\n", "additional properties 'bogus'"),
        ("image:\n  pullPolicy: Sometimes\n", "/image/pullPolicy"),
        (
            "collector:\n  endpoint: http://collector:80\n",
            "/collector/endpoint",
        ),
        (
            "capture:\n  redactHeaders: [\"Bad Header\"]\n",
            "/capture/redactHeaders/0",
        ),
        (
            "namespaces:\n  include: [Not_A_Namespace]\n",
            "/namespaces/include/0",
        ),
        ("logFormat: xml\n", "/logFormat"),
        ("metrics:\n  port: 70000\n", "/metrics/port"),
        ("capture:\n  idleTimeout: soon\n", "/capture/idleTimeout"),
        (
            "capture:\n  redactBodyFields: [\"  \"]\n",
            "/capture/redactBodyFields/0",
        ),
        (
            "capture:\n  defaultBodyRedaction: \"no\"\n",
            "/capture/defaultBodyRedaction",
        ),
        ("paused: \"yes\"\n", "/paused"),
        (
            "collector:\n  spool: {maxBytes: 1048576, hostPath: relative/dir}\n",
            "/collector/spool/hostPath",
        ),
    ];
    // What a schema cannot say, the templates check (`helm template`/`install` fail).
    let template_cases = [
        (
            "collector:\n  endpoint: https://collector:4317\n",
            "collector.endpoint needs collector.tokenSecret.name or collector.clientCertSecret",
        ),
        (
            "collector:\n  endpoint: https://collector:4317\n  tokenSecret: {name: t, key: token}\n  ca: {secretName: a, configMapName: b, key: ca.crt}\n",
            "set secretName or configMapName, not both",
        ),
        (
            "collector:\n  tokenSecret: {name: t, key: token}\n",
            "collector.endpoint is empty but other collector.* values are set",
        ),
    ];
    let chart = chart_dir(&workspace_root());
    let schema_cases = schema_cases.iter().map(|(yaml, want)| (yaml, want, true));
    let template_cases = template_cases
        .iter()
        .map(|(yaml, want)| (yaml, want, false));
    for (yaml, want, linted) in schema_cases.chain(template_cases) {
        let (_dir, values) = values_file(yaml)?;
        match render(&sdk, Some(&values)) {
            Ok(_) => bail!("values {yaml:?} rendered; want an error mentioning {want:?}"),
            Err(err) => {
                let err = format!("{err:#}");
                assert!(err.contains(want), "values {yaml:?}: {err}");
            }
        }
        if !linted {
            continue;
        }
        let report = sdk.lint(&chart, Some(&values), NAMESPACE)?;
        assert!(
            report
                .messages
                .iter()
                .any(|m| m.severity == 3 && m.error.contains(want)),
            "lint of {yaml:?} did not report {want:?}: {report:#?}"
        );
    }
    Ok(())
}

/// Long flags (`--name`) listed in the daemon's `--help`.
fn daemon_flags() -> Result<BTreeSet<String>> {
    let bin = daemon_binary(&workspace_root())?;
    let out = run(Command::new(&bin).arg("--help"), Duration::from_secs(30))?;
    let help = String::from_utf8(out.stdout)?;
    let flags: BTreeSet<String> = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == ']')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect();
    if !flags.contains("--config") {
        bail!("{} --help lists no --config:\n{help}", bin.display());
    }
    Ok(flags)
}

#[test]
fn every_flag_and_config_key_the_chart_uses_is_the_daemons() -> Result<()> {
    let sdk = require_helm_sdk!();
    let known = daemon_flags()?;
    for (label, chart) in both(&sdk)? {
        let keys = config_file(&chart)?
            .keys()
            .map(|k| format!("--{k}"))
            .collect::<Vec<_>>();
        for flag in chart
            .args()?
            .iter()
            .filter(|a| a.starts_with("--"))
            .chain(&keys)
        {
            // `--flag=value` forms name the flag before the `=`.
            let name = flag.split('=').next().unwrap_or(flag);
            assert!(
                known.contains(name),
                "{label} uses {name}, which `capture-daemon --help` does not list"
            );
        }
    }
    Ok(())
}

#[test]
fn the_readme_documents_every_value() -> Result<()> {
    let chart = chart_dir(&workspace_root());
    let values = yaml_documents(&std::fs::read_to_string(chart.join("values.yaml"))?)?;
    let readme = std::fs::read_to_string(chart.join("README.md"))?;
    let table = readme
        .split("## Values")
        .nth(1)
        .context("README.md has no Values section")?;
    let Some(Value::Object(top)) = values.first() else {
        bail!("values.yaml is not a mapping");
    };
    for (key, value) in top {
        let mut names = vec![key.clone()];
        if let Value::Object(inner) = value
            && !inner.is_empty()
            && !matches!(
                key.as_str(),
                "resources" | "updateStrategy" | "nodeSelector"
            )
        {
            names = inner.keys().map(|k| format!("{key}.{k}")).collect();
        }
        for name in names {
            assert!(
                table.contains(&format!("`{name}")),
                "README.md does not document `{name}`"
            );
        }
    }
    Ok(())
}

// ---- charts/capture-collector: replicas of the collector on one PostgreSQL database ----

fn collector_chart() -> PathBuf {
    workspace_root().join("charts/capture-collector")
}

fn collector_full_values() -> PathBuf {
    collector_chart().join("ci/full-values.yaml")
}

fn render_collector(sdk: &HelmSdk, values: Option<&Path>) -> Result<RenderedChart> {
    RenderedChart::render(sdk, &collector_chart(), values)
}

fn typed<'a, T>(
    chart: &'a RenderedChart,
    pick: impl Fn(&'a capture_e2e::k8s::Object) -> Option<&'a T>,
) -> Result<&'a T> {
    let mut found = chart.objects.iter().filter_map(|(_, _, o)| pick(o));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        _ => bail!("not exactly one object of the kind"),
    }
}

#[test]
fn collector_chart_lints_clean_for_default_and_full_values() -> Result<()> {
    let sdk = require_helm_sdk!();
    for values in [None, Some(collector_full_values())] {
        let report = sdk.lint(&collector_chart(), values.as_deref(), NAMESPACE)?;
        assert_eq!(report.total_charts_linted, 1);
        assert!(
            report.problems().is_empty() && report.errors.is_empty(),
            "helm lint --strict with {values:?}: {report:#?}"
        );
    }
    Ok(())
}

/// Two replicas by default, a PodDisruptionBudget that keeps one serving, the database URL in
/// a Secret (never in the pod spec), the key and the password as read-only files, not
/// privileged; every flag the chart passes is one `capture-collector serve` knows.
#[test]
fn collector_chart_runs_replicas_on_a_database_secret() -> Result<()> {
    use capture_e2e::k8s::Object;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let sdk = require_helm_sdk!();
    let help = run(
        Command::new(capture_e2e::collector_binary(&workspace_root())?).args(["serve", "--help"]),
        Duration::from_secs(30),
    )?;
    let help = String::from_utf8(help.stdout)?;
    for (label, values, replicas, min_available) in [
        ("default values", None, 2, 1),
        ("ci/full-values.yaml", Some(collector_full_values()), 3, 2),
    ] {
        let chart = render_collector(&sdk, values.as_deref())?;
        assert_eq!(
            chart.kinds(),
            ["Deployment", "PodDisruptionBudget", "Secret", "Service"],
            "{label}"
        );
        let deployment = typed(&chart, |o| match o {
            Object::Deployment(d) => Some(d.as_ref()),
            _ => None,
        })?;
        let spec = &deployment.spec;
        assert_eq!(spec.replicas, Some(replicas), "{label}");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .context("pod labels")?;
        let pdb = typed(&chart, |o| match o {
            Object::PodDisruptionBudget(p) => Some(p.as_ref()),
            _ => None,
        })?;
        let pdb_spec = pdb.spec.as_ref().context("pdb spec")?;
        assert_eq!(
            pdb_spec.min_available,
            Some(IntOrString::Int(min_available)),
            "{label}"
        );
        let selector = pdb_spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.clone())
            .context("pdb selector")?;
        assert!(!selector.is_empty());
        for (k, v) in &selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{label}: the PDB selects the pods"
            );
        }

        let pod = spec.template.spec.as_ref().context("pod spec")?;
        let [container] = pod.containers.as_slice() else {
            bail!("{label}: one container");
        };
        let args = container.args.clone().unwrap_or_default();
        assert_eq!(args[..3], ["serve", "--listen", "0.0.0.0:4317"], "{label}");
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(flag.as_str()),
                "{label}: serve does not know {flag}"
            );
        }
        assert!(
            !args.iter().any(|a| a.contains("postgres://")),
            "{label}: URL in args"
        );
        let env = container.env.clone().unwrap_or_default();
        let store = env
            .iter()
            .find(|e| e.name == "CAPTURE_COLLECTOR_STORE")
            .context("CAPTURE_COLLECTOR_STORE")?;
        assert!(store.value.is_none(), "{label}: the URL is not inline");
        let secret_ref = store
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .context("secretKeyRef")?;
        assert_eq!(secret_ref.key, "url");
        let secret = typed(&chart, |o| match o {
            Object::Secret(s) => Some(s.as_ref()),
            _ => None,
        })?;
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some(secret_ref.name.as_str()),
            "{label}"
        );
        let url = secret
            .string_data
            .as_ref()
            .and_then(|d| d.get("url"))
            .context("url in the Secret")?;
        assert!(url.starts_with("postgres://"), "{label}: {url}");
        assert!(
            help.contains("CAPTURE_COLLECTOR_STORE"),
            "serve reads --store from the env"
        );

        let security = container
            .security_context
            .as_ref()
            .context("securityContext")?;
        assert_eq!(security.privileged, Some(false));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        let mounts = container.volume_mounts.clone().unwrap_or_default();
        assert!(mounts.iter().all(|m| m.read_only == Some(true)), "{label}");
        let volumes = pod.volumes.clone().unwrap_or_default();
        let key = volumes
            .iter()
            .find(|v| v.name == "key")
            .and_then(|v| v.secret.as_ref())
            .context("key volume")?;
        assert_eq!(
            key.default_mode,
            Some(0o400),
            "the collector refuses a readable key"
        );
        let has_password = env
            .iter()
            .any(|e| e.name == "CAPTURE_COLLECTOR_DB_PASSWORD_FILE");
        assert_eq!(has_password, values.is_some(), "{label}");
        if values.is_some() {
            assert_eq!(flag_values(&args, "--org-retention"), ["acme=7d"]);
            assert_eq!(flag_values(&args, "--retention"), ["30d"]);
        }
    }
    // An existing Secret replaces the rendered one.
    let (_dir, values) = values_file("database:\n  existingSecret: my-db\n")?;
    let chart = render_collector(&sdk, Some(&values))?;
    assert_eq!(
        chart.kinds(),
        ["Deployment", "PodDisruptionBudget", "Service"]
    );
    let (_dir, values) = values_file("replicaCount: 0\n")?;
    assert!(
        render_collector(&sdk, Some(&values)).is_err(),
        "the schema refuses 0 replicas"
    );
    Ok(())
}
