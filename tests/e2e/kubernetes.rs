//! Kubernetes mode end to end: the real daemon with `--kubernetes` against the fake API server
//! (`capture_e2e::kube_api`), with the pods' container cgroups real cgroup v2 directories laid
//! out like a node's kubepods tree under a test cgroup (`--cgroup-root`), and real processes in
//! them: a Python server in a Deployment's pod (systemd driver, crun's `container` child
//! directory) and curl in a bare pod (cgroupfs driver).
//!
//! Checked: annotated pods are captured with `_capture.workload` and the routing key filled;
//! an un-annotated pod stops being captured; pausing through the configuration file detaches
//! the programs (not one kernel event) and resuming captures again; a container restart moves
//! capture to the new cgroup; deleting the pods empties the target set; the audit lines are in
//! stderr. Plus the start-up errors: no node name (exit 2), a cgroup v1 root (exit 1), an
//! unusable kubeconfig (exit 2).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::maps::{Map, MapData};
use capture_e2e::har::{brief, path, str_at};
use capture_e2e::kube_api::{FakeKubeApi, TestPod};
use capture_e2e::{
    Daemon, PythonServer, TestCgroup, capture_environment_ready, cgroup2_root, curl, daemon_binary,
    run, run_unchecked, workspace_root,
};
use serde_json::Value;

const NODE: &str = "node-e2e";
const TIMEOUT: Duration = Duration::from_secs(20);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

const SERVER_UID: &str = "5e5e5e5e-0000-4000-8000-000000000001";
const CLIENT_UID: &str = "c1c1c1c1-0000-4000-8000-000000000002";
const SERVER_ID: &str = "51e7e4a0d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a49382";
const CLIENT_ID: &str = "c11e470000000000000000000000000000000000000000000000000000000001";
const CLIENT_ID2: &str = "c11e470000000000000000000000000000000000000000000000000000000002";
const SERVER_POD: &str = "web-5d8f7c9b4f-q7x2m";

macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

fn server_pod(annotation: Option<&str>) -> TestPod {
    TestPod::new("shop", SERVER_POD, SERVER_UID, NODE)
        .annotated(annotation)
        .deployment("web", "5d8f7c9b4f")
        .container("app", &format!("containerd://{SERVER_ID}"))
}

fn client_pod(container_id: &str) -> TestPod {
    TestPod::new("shop", "curl-client", CLIENT_UID, NODE)
        .annotated(Some("true"))
        .qos("BestEffort")
        .container("curl", &format!("containerd://{container_id}"))
}

/// Waits until `f` is true, or fails with `what`.
fn wait(what: &str, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if f()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(daemon: &Daemon, name: &str) -> Result<f64> {
    daemon
        .metrics()?
        .get(name)
        .with_context(|| format!("{name} missing from /metrics"))
}

fn wait_metric(daemon: &Daemon, name: &str, want: f64) -> Result<()> {
    wait(&format!("{name} == {want}"), || {
        Ok(metric(daemon, name)? == want)
    })
    .with_context(|| {
        format!(
            "{name} = {:?}; daemon stderr:\n{}",
            metric(daemon, name).ok(),
            daemon.stderr_text()
        )
    })
}

/// `curl` in `cgroup` GETs `url` with a routing key in `baggage`.
fn get_from(cgroup: &TestCgroup, url: &str) -> Result<()> {
    run(
        curl(Some(cgroup))
            .args(["-o", "/dev/null", "-H"])
            .arg("baggage: userId=alice,sd-routing-key=sandbox-42")
            .arg(url),
        RUN_TIMEOUT,
    )?;
    Ok(())
}

/// Exchanges whose request path is `p`.
fn with_path(daemon: &Daemon, p: &str) -> Result<Vec<Value>> {
    Ok(daemon
        .exchanges()?
        .into_iter()
        .filter(|e| path(e).is_ok_and(|x| x == p))
        .collect())
}

fn role(entry: &Value) -> &str {
    str_at(entry, "/_capture/conn/role").unwrap_or("")
}

fn workload<'a>(entry: &'a Value, field: &str) -> Option<&'a str> {
    entry
        .pointer(&format!("/_capture/workload/{field}"))
        .and_then(Value::as_str)
}

/// The audit lines of the daemon's stderr, each parsed as JSON (a line that says it is one and
/// does not parse fails the test).
fn audit_events(stderr: &str) -> Result<Vec<Value>> {
    stderr
        .lines()
        .filter(|l| l.contains(r#""target":"audit""#))
        .map(|l| serde_json::from_str(l).with_context(|| format!("audit line is not JSON: {l}")))
        .collect()
}

/// The audit lines of one event.
fn audit_of<'a>(audit: &'a [Value], event: &str) -> Vec<&'a Value> {
    audit
        .iter()
        .filter(|a| a.get("event").and_then(Value::as_str) == Some(event))
        .collect()
}

/// The cgroup ids in the kernel's `TARGET_CGROUPS` map of `daemon`, read from the kernel (the
/// map the daemon holds an fd of, by id), not from anything the daemon reports.
fn kernel_targets(daemon: &Daemon) -> Result<BTreeSet<u64>> {
    let dir = format!("/proc/{}/fdinfo", daemon.pid());
    let mut found = None;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let map = MapData::from_id(id).with_context(|| format!("opening map {id}"))?;
        if map.info()?.name_as_str() == Some("TARGET_CGROUPS") {
            found = Some(map);
            break;
        }
    }
    let map = found.context("the daemon holds no TARGET_CGROUPS map")?;
    let targets: aya::maps::HashMap<MapData, u64, u8> =
        aya::maps::HashMap::try_from(Map::HashMap(map))?;
    Ok(targets.keys().collect::<Result<_, _>>()?)
}

/// Waits until the kernel's target set of `daemon` is exactly `want`.
fn wait_kernel_targets(daemon: &Daemon, want: &[u64]) -> Result<()> {
    let want: BTreeSet<u64> = want.iter().copied().collect();
    let mut last = BTreeSet::new();
    wait(&format!("the kernel's target set == {want:?}"), || {
        last = kernel_targets(daemon)?;
        Ok(last == want)
    })
    .with_context(|| format!("last seen {last:?}"))
}

#[test]
fn annotated_pods_are_captured_with_their_workload_and_pause_detaches() -> Result<()> {
    require_capture_environment!();
    let tree = TestCgroup::new()?;
    let u = SERVER_UID.replace('-', "_");
    // systemd driver, Burstable, with crun's `container` child holding the processes.
    let server_cg = tree.child(format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/\
         cri-containerd-{SERVER_ID}.scope/container"
    ))?;
    // cgroupfs driver, BestEffort.
    let client_cg = tree.child(format!("kubepods/besteffort/pod{CLIENT_UID}/{CLIENT_ID}"))?;
    let server = PythonServer::start(Some(&server_cg))?;
    let base = server.base_url();

    let api = FakeKubeApi::start()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = api.write_kubeconfig(dir.path())?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "paused: false\n")?;
    api.apply(&server_pod(Some("true")).to_pod())?;
    api.apply(&client_pod(CLIENT_ID).to_pod())?;

    let daemon = Daemon::builder()
        .args(["--kubernetes", "--node-name", NODE, "--kubeconfig"])
        .args([
            kubeconfig.as_os_str(),
            "--cgroup-root".as_ref(),
            tree.path().as_os_str(),
        ])
        .args(["--config".as_ref(), config.as_os_str()])
        .start()?;
    // Server scope + its `container` child + the client's directory, in the kernel's map.
    let server_scope = server_cg.path().parent().context("server scope")?;
    let server_scope_id = std::fs::metadata(server_scope)?.ino();
    let server_id = server_cg.id()?;
    wait_kernel_targets(&daemon, &[server_scope_id, server_id, client_cg.id()?])?;
    wait_metric(&daemon, "capture_target_cgroups", 3.0)?;
    assert_eq!(metric(&daemon, "capture_pods_opted_in")?, 2.0);

    // 1. Both pods opted in: the exchange is seen from both sides, with workloads.
    get_from(&client_cg, &format!("{base}/json?step=1"))?;
    wait("both sides of step 1", || {
        Ok(with_path(&daemon, "/json?step=1")?.len() == 2)
    })?;
    let seen = with_path(&daemon, "/json?step=1")?;
    let server_side = seen
        .iter()
        .find(|e| role(e) == "server")
        .context("server side of step 1")?;
    let client_side = seen
        .iter()
        .find(|e| role(e) == "client")
        .context("client side of step 1")?;
    assert_eq!(
        workload(server_side, "namespace"),
        Some("shop"),
        "{}",
        brief(server_side)
    );
    assert_eq!(workload(server_side, "pod"), Some(SERVER_POD));
    assert_eq!(workload(server_side, "container"), Some("app"));
    assert_eq!(workload(server_side, "owner_kind"), Some("Deployment"));
    assert_eq!(workload(server_side, "owner_name"), Some("web"));
    assert_eq!(workload(server_side, "node"), Some(NODE));
    assert_eq!(workload(client_side, "pod"), Some("curl-client"));
    assert_eq!(workload(client_side, "container"), Some("curl"));
    assert_eq!(
        workload(client_side, "owner_kind"),
        None,
        "a bare pod has no owner"
    );
    for e in [server_side, client_side] {
        assert_eq!(
            str_at(e, "/_capture/routing_key")?,
            "sandbox-42",
            "{}",
            brief(e)
        );
    }

    // 2. The server pod loses its annotation: only the client side is captured.
    // With the server's cgroups out of the kernel's map before the request, its side cannot be
    // captured: no wait is needed to show it was not.
    api.apply(&server_pod(None).to_pod())?;
    wait_kernel_targets(&daemon, &[client_cg.id()?])?;
    wait_metric(&daemon, "capture_target_cgroups", 1.0)?;
    get_from(&client_cg, &format!("{base}/json?step=2"))?;
    wait("client side of step 2", || {
        Ok(!with_path(&daemon, "/json?step=2")?.is_empty())
    })?;
    let seen = with_path(&daemon, "/json?step=2")?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(role(&seen[0]), "client");

    // 3. Paused by the configuration file: the program is detached, not one event.
    std::fs::write(&config, "paused: true\n")?;
    wait_metric(&daemon, "capture_paused", 1.0)?;
    // The kernel's counter is final once curl has its answer (the programs run inside the
    // system calls), so it is read at once.
    let events = metric(&daemon, "capture_kernel_events_total")?;
    get_from(&client_cg, &format!("{base}/json?step=3"))?;
    assert_eq!(metric(&daemon, "capture_kernel_events_total")?, events);

    // 4. Resumed: captured again.
    std::fs::write(&config, "paused: false\n")?;
    wait_metric(&daemon, "capture_paused", 0.0)?;
    get_from(&client_cg, &format!("{base}/json?step=4"))?;
    wait("client side of step 4", || {
        Ok(!with_path(&daemon, "/json?step=4")?.is_empty())
    })?;

    // 5. The client container restarts into a new cgroup: the kernel's map moves from the old
    //    cgroup to the new one.
    let old_client_id = client_cg.id()?;
    let restarted = tree.child(format!("kubepods/besteffort/pod{CLIENT_UID}/{CLIENT_ID2}"))?;
    let restarted_id = restarted.id()?;
    let restarted_dir = restarted.path().display().to_string();
    assert_eq!(kernel_targets(&daemon)?, BTreeSet::from([old_client_id]));
    api.apply(&client_pod(CLIENT_ID2).to_pod())?;
    wait_kernel_targets(&daemon, &[restarted_id])?;
    wait_metric(&daemon, "capture_target_cgroups", 1.0)?;
    drop(client_cg);
    get_from(&restarted, &format!("{base}/json?step=5"))?;
    wait("client side of step 5", || {
        Ok(!with_path(&daemon, "/json?step=5")?.is_empty())
    })?;

    // 6. Pods deleted: nothing left to capture.
    api.delete("shop", "curl-client");
    api.delete("shop", SERVER_POD);
    wait_kernel_targets(&daemon, &[])?;
    wait_metric(&daemon, "capture_target_cgroups", 0.0)?;
    assert_eq!(metric(&daemon, "capture_pods_opted_in")?, 0.0);

    let finished = daemon.finish()?;
    finished.assert_clean()?;
    let audit = audit_events(&finished.stderr)?;
    let count = |event: &str| {
        audit
            .iter()
            .filter(|a| a.get("event").and_then(Value::as_str) == Some(event))
            .count()
    };
    // Each cgroup added once and removed once, by id: the server's scope and container
    // (annotation removed), the client's first cgroup (restart), its second (pod deleted).
    let ids = |event: &str| -> BTreeSet<u64> {
        audit_of(&audit, event)
            .iter()
            .filter_map(|a| a.get("cgroup_id").and_then(Value::as_u64))
            .collect()
    };
    let all = BTreeSet::from([server_scope_id, server_id, old_client_id, restarted_id]);
    assert_eq!(count("target_added"), 4, "{audit:?}");
    assert_eq!(ids("target_added"), all, "{audit:?}");
    assert_eq!(count("target_removed"), 4, "{audit:?}");
    assert_eq!(ids("target_removed"), all, "{audit:?}");
    let restart_added = audit_of(&audit, "target_added")
        .into_iter()
        .find(|a| a.get("cgroup_id").and_then(Value::as_u64) == Some(restarted_id))
        .context("no target_added for the restarted container")?;
    for (field, want) in [
        ("namespace", "shop"),
        ("pod", "curl-client"),
        ("container", "curl"),
        ("cgroup", restarted_dir.as_str()),
    ] {
        assert_eq!(
            restart_added.get(field).and_then(Value::as_str),
            Some(want),
            "{restart_added}"
        );
    }
    for line in audit_of(&audit, "target_removed") {
        assert!(
            line.get("reason")
                .and_then(Value::as_str)
                .is_some_and(|r| !r.is_empty()),
            "{line}"
        );
    }
    assert_eq!(count("pod_opted_in"), 2, "{audit:?}");
    assert_eq!(count("capture_paused"), 1, "{audit:?}");
    assert_eq!(count("capture_resumed"), 1, "{audit:?}");
    assert_eq!(count("config_changed"), 2, "{audit:?}");
    let opted_out: Vec<&str> = audit
        .iter()
        .filter(|a| a.get("event").and_then(Value::as_str) == Some("pod_opted_out"))
        .filter_map(|a| a.get("reason").and_then(Value::as_str))
        .collect();
    assert!(opted_out.contains(&"annotation removed"), "{opted_out:?}");
    assert!(opted_out.contains(&"pod deleted"), "{opted_out:?}");
    drop(restarted);
    drop(server);
    Ok(())
}

fn daemon_command() -> Result<Command> {
    Ok(Command::new(daemon_binary(&workspace_root())?))
}

#[test]
fn kubernetes_mode_needs_a_node_name() -> Result<()> {
    let mut cmd = daemon_command()?;
    cmd.env_remove("NODE_NAME").arg("--kubernetes");
    let out = run_unchecked(&mut cmd, RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--node-name"), "{stderr}");
    Ok(())
}

#[test]
fn a_cgroup_v1_root_is_refused_at_start() -> Result<()> {
    // A plain directory stands for a cgroup v1 (tmpfs) root: no cgroup2 file system there.
    let dir = tempfile::tempdir()?;
    let mut cmd = daemon_command()?;
    cmd.args(["--kubernetes", "--node-name", NODE, "--cgroup-root"])
        .arg(dir.path());
    let out = run_unchecked(&mut cmd, RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--cgroup-root") && stderr.contains("cgroup v1"),
        "{stderr}"
    );
    let missing = Path::new("/nonexistent/cgroup");
    let mut cmd = daemon_command()?;
    cmd.args(["--kubernetes", "--node-name", NODE, "--cgroup-root"])
        .arg(missing);
    let out = run_unchecked(&mut cmd, RUN_TIMEOUT)?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn an_unusable_kubeconfig_is_a_configuration_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "clusters: [this is not a kubeconfig\n")?;
    let mut cmd = daemon_command()?;
    cmd.args(["--kubernetes", "--node-name", NODE, "--cgroup-root"])
        .arg(cgroup2_root()?)
        .arg("--kubeconfig")
        .arg(&kubeconfig);
    let out = run_unchecked(&mut cmd, RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--kubeconfig"), "{stderr}");
    Ok(())
}

#[test]
fn a_namespace_filter_change_in_the_config_file_reaches_the_kernel_target_set() -> Result<()> {
    require_capture_environment!();
    let tree = TestCgroup::new()?;
    let u = SERVER_UID.replace('-', "_");
    let server_cg = tree.child(format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/\
         cri-containerd-{SERVER_ID}.scope"
    ))?;
    let other_uid = "0e0e0e0e-0000-4000-8000-000000000003";
    let other_id = "0e0e470000000000000000000000000000000000000000000000000000000003";
    let other_cg = tree.child(format!("kubepods/besteffort/pod{other_uid}/{other_id}"))?;
    let server = PythonServer::start(Some(&server_cg))?;
    let api = FakeKubeApi::start()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = api.write_kubeconfig(dir.path())?;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "namespace-exclude: []\n")?;
    api.apply(&server_pod(Some("true")).to_pod())?;
    api.apply(
        &TestPod::new("other", "curl-other", other_uid, NODE)
            .annotated(Some("true"))
            .qos("BestEffort")
            .container("curl", &format!("containerd://{other_id}"))
            .to_pod(),
    )?;
    let daemon = Daemon::builder()
        .args(["--kubernetes", "--node-name", NODE, "--kubeconfig"])
        .args([
            kubeconfig.as_os_str(),
            "--cgroup-root".as_ref(),
            tree.path().as_os_str(),
            "--config".as_ref(),
            config.as_os_str(),
        ])
        .start()?;
    let (server_id, other) = (server_cg.id()?, other_cg.id()?);
    wait_kernel_targets(&daemon, &[server_id, other])?;

    // Excluded live: the other namespace's pod leaves the kernel's map, so its traffic is not
    // looked at; the server's side still is.
    std::fs::write(&config, "namespace-exclude: [other]\n")?;
    wait_kernel_targets(&daemon, &[server_id])?;
    wait_metric(&daemon, "capture_pods_opted_in", 1.0)?;
    get_from(&other_cg, &format!("{}/json?excluded", server.base_url()))?;
    wait("the server side of the excluded pod's request", || {
        Ok(!with_path(&daemon, "/json?excluded")?.is_empty())
    })?;
    let seen = with_path(&daemon, "/json?excluded")?;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(role(&seen[0]), "server");

    // Included alone: only the other namespace.
    std::fs::write(&config, "namespace-include: [other]\n")?;
    wait_kernel_targets(&daemon, &[other])?;
    wait_metric(&daemon, "capture_pods_opted_in", 1.0)?;

    let finished = daemon.finish()?;
    finished.assert_clean()?;
    let audit = audit_events(&finished.stderr)?;
    let changed = audit_of(&audit, "config_changed");
    assert_eq!(changed.len(), 2, "{audit:?}");
    assert_eq!(
        changed[0].get("applied").and_then(Value::as_str),
        Some("namespace-exclude"),
        "{}",
        changed[0]
    );
    assert_eq!(
        changed[1].get("applied").and_then(Value::as_str),
        Some("namespace-exclude,namespace-include"),
        "{}",
        changed[1]
    );
    let out: Vec<(&str, &str)> = audit_of(&audit, "pod_opted_out")
        .iter()
        .filter_map(|a| {
            Some((
                a.get("pod").and_then(Value::as_str)?,
                a.get("reason").and_then(Value::as_str)?,
            ))
        })
        .collect();
    assert_eq!(
        out,
        [
            ("curl-other", "namespace not allowed"),
            (SERVER_POD, "namespace not allowed")
        ],
        "{audit:?}"
    );
    drop(server);
    Ok(())
}
