//! `cargo xtask kind up|demo|down`: the chart on a local kind cluster, end to end.
//!
//! - `up` checks docker (and its daemon), kind and kubectl, installs the Helm SDK, creates the
//!   cluster from `charts/kind/kind-config.yaml`, builds the image and loads it onto the node,
//!   starts the reference collector (`charts/kind/collector.yaml`) with a throw-away CA,
//!   creates a collector token, and installs the chart with `charts/kind/values.yaml`.
//! - `demo` deploys an annotated demo API (`charts/kind/demo.yaml`), runs a client Job
//!   against it (`charts/kind/demo-client.yaml`) and prints the exchanges the collector
//!   receives, through `kubectl port-forward` and `capture-collector watch`.
//! - `down` deletes the cluster and the local state (`target/kind`).
//!
//! Every kubectl command names the cluster's context, so no other cluster is ever touched.
//! `--dry-run` prints the commands instead of running them, and checks and writes nothing.

use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use capture_e2e::helm::{HelmSdk, driver_script, sdk_venv};
use serde_json::{Value, json};

use crate::image;

pub const CLUSTER: &str = "capture";
pub const CONTEXT: &str = "kind-capture";
pub const IMAGE: &str = "capture-daemon:dev";
pub const NAMESPACE: &str = "capture-system";
pub const DEMO_NAMESPACE: &str = "capture-demo";
pub const RELEASE: &str = "capture-daemon";
/// The collector organisation the demo's token belongs to.
pub const ORG: &str = "demo";
/// Name of the collector's Deployment and Service (charts/kind/collector.yaml).
pub const COLLECTOR: &str = "capture-collector";
pub const COLLECTOR_PORT: u16 = 4317;
/// Where the collector keeps its store inside its pod.
pub const COLLECTOR_DATA: &str = "/var/lib/capture-collector";
pub const TLS_SECRET: &str = "capture-collector-tls";
pub const CA_CONFIG_MAP: &str = "capture-collector-ca";
pub const TOKEN_SECRET: &str = "capture-daemon-token";
/// `kubectl port-forward` listens here for `capture-collector watch`.
pub const LOCAL_PORT: u16 = 14317;
/// Exchanges the demo client causes on the (annotated) server.
const DEMO_EXCHANGES: usize = 3;
const KIND_VERSION: &str = "v0.29.0";

const KIND_CONFIG: &str = "charts/kind/kind-config.yaml";
const COLLECTOR_MANIFEST: &str = "charts/kind/collector.yaml";
const DEMO_MANIFEST: &str = "charts/kind/demo.yaml";
const DEMO_CLIENT_MANIFEST: &str = "charts/kind/demo-client.yaml";
const DIFF_MANIFEST: &str = "charts/kind/demo-diff.yaml";
const DIFF_CLIENT_MANIFEST: &str = "charts/kind/demo-diff-client.yaml";
const JSON_SERVICE: &str = "tests/fixtures/json_service.py";
/// Local ports of the port-forwards to json-service v1 and v2.
const V1_PORT: u16 = 18081;
const V2_PORT: u16 = 18082;
const VALUES: &str = "charts/kind/values.yaml";
const CHART: &str = "charts/capture-daemon";

#[derive(clap::Subcommand, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the cluster, build and load the image, start a collector, install the chart.
    Up,
    /// Deploy an annotated demo app, send it traffic and show the captured exchanges.
    Demo,
    /// Delete the cluster and the local state.
    Down,
}

pub fn run(root: &Path, action: Action, dry_run: bool) -> anyhow::Result<()> {
    let runner = Runner {
        root: root.to_path_buf(),
        dry_run,
        log: std::cell::RefCell::new(Vec::new()),
    };
    match action {
        Action::Up => up(&runner),
        Action::Demo => demo(&runner),
        Action::Down => down(&runner),
    }
}

/// A program `kind` needs on PATH, why, and how to install it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    pub program: &'static str,
    pub why: &'static str,
    pub install: &'static str,
}

pub const DOCKER: Tool = Tool {
    program: "docker",
    why: "kind runs the Kubernetes node as a Docker container, and the image is built with it",
    install: "see https://docs.docker.com/engine/install/ (Debian: apt-get install docker.io)",
};
pub const KIND: Tool = Tool {
    program: "kind",
    why: "it creates and deletes the local cluster",
    install: "go install sigs.k8s.io/kind@v0.29.0, or: curl -Lo /usr/local/bin/kind \
              https://kind.sigs.k8s.io/dl/v0.29.0/kind-linux-amd64 && chmod +x /usr/local/bin/kind",
};
pub const KUBECTL: Tool = Tool {
    program: "kubectl",
    why: "it applies the manifests and follows the rollouts",
    install: "see https://kubernetes.io/docs/tasks/tools/#kubectl (Debian: apt-get install kubectl \
              from the pkgs.k8s.io repository)",
};

/// Fails with one message naming every missing tool and how to install it; then, when docker
/// is needed, checks that its daemon answers.
pub fn check_prerequisites(command: &str, tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<&Tool> = tools
        .iter()
        .filter(|t| find_in_path(t.program).is_none())
        .collect();
    if !missing.is_empty() {
        let lines: Vec<String> = missing
            .iter()
            .map(|t| format!("  - {}: {}; install: {}", t.program, t.why, t.install))
            .collect();
        bail!(
            "`cargo xtask kind {command}` needs programs that are not on PATH:\n{}",
            lines.join("\n")
        );
    }
    if tools.iter().any(|t| t.program == DOCKER.program) {
        let out = capture_e2e::run_unchecked(
            Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
            Duration::from_secs(30),
        )?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("no output");
            bail!(
                "the Docker daemon is not reachable (`docker info`: {reason}); start it \
                 (systemctl start docker) or point DOCKER_HOST at it, and make sure this user \
                 may use its socket"
            );
        }
    }
    Ok(())
}

/// The first executable `program` in `$PATH`.
fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `<target>/kind`: the CA, the collector certificate and the token of the current cluster.
pub fn state_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("kind")
}

/// Runs (or, in a dry run, prints) the steps; every command is echoed as `+ command`.
struct Runner {
    root: PathBuf,
    dry_run: bool,
    /// Every command shown, for the tests.
    log: std::cell::RefCell<Vec<String>>,
}

impl Runner {
    fn say(&self, text: &str) {
        println!("==> {text}");
    }

    fn show(&self, line: String) {
        println!("+ {line}");
        self.log.borrow_mut().push(line);
    }

    fn command(&self, argv: &[String]) -> Command {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(&self.root);
        cmd
    }

    fn run(&self, argv: Vec<String>) -> anyhow::Result<()> {
        self.show(shell_line(&argv));
        if self.dry_run {
            return Ok(());
        }
        crate::run(&mut self.command(&argv))
    }

    /// Runs and returns stdout; `placeholder` stands for it in a dry run. Stdout is never
    /// echoed (it may be a token).
    fn output(&self, argv: Vec<String>, placeholder: &str) -> anyhow::Result<String> {
        self.show(shell_line(&argv));
        if self.dry_run {
            return Ok(placeholder.to_owned());
        }
        let out = self
            .command(&argv)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output()
            .with_context(|| format!("starting {}", argv[0]))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                shell_line(&argv),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs with the terminal and returns the exit code; `dry_code` in a dry run.
    fn status(&self, argv: Vec<String>, dry_code: i32) -> anyhow::Result<i32> {
        self.show(shell_line(&argv));
        if self.dry_run {
            return Ok(dry_code);
        }
        let status = self
            .command(&argv)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("starting {}", argv[0]))?;
        status
            .code()
            .with_context(|| format!("{} was killed: {status}", argv[0]))
    }

    /// Whether `argv` succeeds (quietly); false in a dry run.
    fn succeeds(&self, argv: Vec<String>) -> bool {
        self.show(format!("{}  # only checks", shell_line(&argv)));
        !self.dry_run
            && self
                .command(&argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// `kubectl apply -f -` of `objects`, given on stdin so secrets never appear in a command
    /// line; the echo names the objects, not their data.
    fn apply(&self, objects: &[Value]) -> anyhow::Result<()> {
        let argv = kubectl(&["apply", "-f", "-"]);
        let names: Vec<String> = objects.iter().map(object_name).collect();
        self.show(format!("{} <<< {}", shell_line(&argv), names.join(", ")));
        if self.dry_run {
            return Ok(());
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        let mut child = self
            .command(&argv)
            .stdin(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl stdin")?
            .write_all(serde_json::to_string(&list)?.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("kubectl apply of {} failed: {status}", names.join(", "));
        }
        Ok(())
    }

    /// Starts a long-running command (killed when the guard drops); None in a dry run.
    fn spawn(
        &self,
        argv: Vec<String>,
        stdout: Stdio,
    ) -> anyhow::Result<Option<capture_e2e::ChildProcess>> {
        self.show(format!("{} &", shell_line(&argv)));
        if self.dry_run {
            return Ok(None);
        }
        let mut cmd = self.command(&argv);
        cmd.stdin(Stdio::null()).stdout(stdout);
        capture_e2e::ChildProcess::spawn(&mut cmd, &argv[0]).map(Some)
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `kubectl --context kind-capture ...`
fn kubectl(words: &[&str]) -> Vec<String> {
    let mut v = argv(&["kubectl", "--context", CONTEXT]);
    v.extend(words.iter().map(|w| (*w).to_owned()));
    v
}

/// A command line a shell would read back the same (single quotes where needed).
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|w| {
            if !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+{}".contains(c))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn object_name(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("?");
    match object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn up(r: &Runner) -> anyhow::Result<()> {
    r.say("prerequisites: docker (and its daemon), kind, kubectl, the Helm SDK");
    if r.dry_run {
        println!("# (dry run: nothing is checked, installed or written)");
    } else {
        check_prerequisites("up", &[DOCKER, KIND, KUBECTL])?;
        crate::setup::helm_sdk(&r.root)?;
    }

    r.say(&format!(
        "cluster {CLUSTER} (kind {KIND_VERSION} config {KIND_CONFIG})"
    ));
    let clusters = r.output(argv(&["kind", "get", "clusters"]), "")?;
    if clusters.lines().any(|l| l.trim() == CLUSTER) {
        println!("cluster {CLUSTER} exists; keeping it");
    } else {
        r.run(argv(&[
            "kind",
            "create",
            "cluster",
            "--name",
            CLUSTER,
            "--config",
            KIND_CONFIG,
            "--wait",
            "180s",
        ]))?;
    }

    r.say(&format!("image {IMAGE}"));
    r.run(image::build_command(IMAGE))?;
    r.run(argv(&[
        "kind",
        "load",
        "docker-image",
        IMAGE,
        "--name",
        CLUSTER,
    ]))?;

    r.say("collector");
    let tls = DevTls::load_or_create(&state_dir(&r.root), r.dry_run)?;
    let collector_existed = r.succeeds(kubectl(&[
        "--namespace",
        NAMESPACE,
        "get",
        "deployment",
        COLLECTOR,
    ]));
    r.apply(&[
        namespace_object(NAMESPACE),
        tls_secret(&tls),
        ca_config_map(&tls),
    ])?;
    r.run(kubectl(&["apply", "--filename", COLLECTOR_MANIFEST]))?;
    if tls.fresh && collector_existed {
        // A running collector reads its certificate at start only.
        r.run(kubectl(&[
            "--namespace",
            NAMESPACE,
            "rollout",
            "restart",
            &format!("deployment/{COLLECTOR}"),
        ]))?;
    }
    r.run(kubectl(&[
        "--namespace",
        NAMESPACE,
        "rollout",
        "status",
        &format!("deployment/{COLLECTOR}"),
        "--timeout",
        "180s",
    ]))?;
    let printed = r.output(
        kubectl(&[
            "--namespace",
            NAMESPACE,
            "exec",
            &format!("deployment/{COLLECTOR}"),
            "--",
            image::COLLECTOR_PATH,
            "token",
            "create",
            "--data",
            COLLECTOR_DATA,
            "--org",
            ORG,
            // The DaemonSet's Secret: push only.
            "--scope",
            "ingest",
        ]),
        "TOKEN",
    )?;
    let token = printed
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .context("`capture-collector token create` printed no token")?
        .to_owned();
    if !r.dry_run {
        write_private(&state_dir(&r.root).join("token"), token.as_bytes())?;
    }
    r.apply(&[token_secret(&token)])?;

    r.say(&format!("chart {CHART} as release {RELEASE}"));
    let sdk_line = helm_install_line(r);
    r.show(shell_line(&sdk_line));
    let upgraded = if r.dry_run {
        false
    } else {
        let release = HelmSdk::find(&r.root)?.install(
            &r.root.join(CHART),
            Some(&r.root.join(VALUES)),
            RELEASE,
            NAMESPACE,
            CONTEXT,
        )?;
        release
            .get("upgraded")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    if upgraded {
        // A new token or CA reaches running daemons at once, not after the kubelet's resync.
        r.run(kubectl(&[
            "--namespace",
            NAMESPACE,
            "rollout",
            "restart",
            &format!("daemonset/{RELEASE}"),
        ]))?;
    }
    r.run(kubectl(&[
        "--namespace",
        NAMESPACE,
        "rollout",
        "status",
        &format!("daemonset/{RELEASE}"),
        "--timeout",
        "180s",
    ]))?;
    println!("kind cluster {CLUSTER} is capturing; next: cargo xtask kind demo");
    Ok(())
}

/// How `up` runs the Helm SDK (shown in the log; run through [`HelmSdk::install`]).
fn helm_install_line(r: &Runner) -> Vec<String> {
    let mut line = vec![
        r.rel(&sdk_venv(&r.root).join("bin/python")),
        r.rel(&driver_script(&r.root)),
    ];
    line.extend(argv(&[
        "install",
        CHART,
        "--values",
        VALUES,
        "--name",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kube-context",
        CONTEXT,
    ]));
    line
}

fn demo(r: &Runner) -> anyhow::Result<()> {
    let state = state_dir(&r.root);
    let token_file = state.join("token");
    let ca_file = state.join("ca.crt");
    if !r.dry_run {
        check_prerequisites("demo", &[KUBECTL])?;
        if !token_file.is_file() || !ca_file.is_file() {
            bail!(
                "no capture cluster from this checkout ({} is missing): run `cargo xtask kind up` first",
                token_file.display()
            );
        }
    }
    if !r.succeeds(kubectl(&[
        "--namespace",
        NAMESPACE,
        "get",
        "daemonset",
        RELEASE,
    ])) && !r.dry_run
    {
        bail!(
            "the {CONTEXT} cluster has no daemonset {NAMESPACE}/{RELEASE}: run `cargo xtask kind up` first"
        );
    }

    r.say("demo app (annotated traffic-capture/enabled: \"true\")");
    r.run(kubectl(&["apply", "--filename", DEMO_MANIFEST]))?;
    r.run(kubectl(&[
        "--namespace",
        DEMO_NAMESPACE,
        "rollout",
        "status",
        "deployment/demo-server",
        "--timeout",
        "180s",
    ]))?;

    r.say("watching the collector");
    r.run(argv(&["cargo", "build", "--package", "capture-collector"]))?;
    let _forward = r.spawn(
        kubectl(&[
            "--namespace",
            NAMESPACE,
            "port-forward",
            &format!("service/{COLLECTOR}"),
            &format!("{LOCAL_PORT}:{COLLECTOR_PORT}"),
        ]),
        Stdio::null(),
    )?;
    if !r.dry_run {
        capture_e2e::wait_for_port(LOCAL_PORT, Duration::from_secs(30))
            .context("kubectl port-forward to the collector did not come up")?;
    }
    let collector_bin = r.rel(&r.root.join("target/debug/capture-collector"));
    let mut watch = r.spawn(
        vec![
            collector_bin,
            "watch".into(),
            "--collector".into(),
            format!("https://localhost:{LOCAL_PORT}"),
            "--token-file".into(),
            r.rel(&token_file),
            "--ca".into(),
            r.rel(&ca_file),
            "--namespace".into(),
            DEMO_NAMESPACE.into(),
        ],
        Stdio::piped(),
    )?;
    let lines = watch.as_mut().map(lines_of).transpose()?;

    r.say("client traffic");
    r.run(kubectl(&[
        "--namespace",
        DEMO_NAMESPACE,
        "delete",
        "job",
        "demo-client",
        "--ignore-not-found",
        "--wait",
    ]))?;
    r.run(kubectl(&["apply", "--filename", DEMO_CLIENT_MANIFEST]))?;
    r.run(kubectl(&[
        "--namespace",
        DEMO_NAMESPACE,
        "wait",
        "--for=condition=complete",
        "job/demo-client",
        "--timeout",
        "180s",
    ]))?;

    r.say("captured exchanges");
    if let Some(lines) = lines {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0;
        while seen < DEMO_EXCHANGES {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.trim().is_empty() => {}
                Ok(line) => {
                    seen += 1;
                    println!("{}", describe_exchange(&line));
                }
                Err(_) => bail!(
                    "{seen} of {DEMO_EXCHANGES} exchanges arrived within 60 s; see \
                     kubectl --context {CONTEXT} --namespace {NAMESPACE} logs daemonset/{RELEASE}"
                ),
            }
        }
        println!(
            "\nAll of them, as a HAR file:\n  kubectl --context {CONTEXT} --namespace {NAMESPACE} exec deployment/{COLLECTOR} -- \
             {} export --data {COLLECTOR_DATA} --org {ORG} --har /dev/stdout",
            image::COLLECTOR_PATH
        );
    }
    smart_diff(r)
}

/// The second act: json-service v1 and v2 as two Deployments, v1's traffic captured and
/// exported from the collector, replayed twice against v1 and once against v2 (each with its
/// routing key in `baggage`, so the daemon attributes the replayed traffic to a sandbox), and
/// diffed: the price change red, the volatile fields green (docs/replay-and-diff.md).
fn smart_diff(r: &Runner) -> anyhow::Result<()> {
    let state = state_dir(&r.root);
    r.say("Smart Diff: json-service v1 and v2");
    let script = if r.dry_run {
        String::new()
    } else {
        fs::read_to_string(r.root.join(JSON_SERVICE))
            .with_context(|| format!("reading {JSON_SERVICE}"))?
    };
    r.apply(&[json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "json-service", "namespace": DEMO_NAMESPACE},
        "data": {"json_service.py": script},
    })])?;
    r.run(kubectl(&["apply", "--filename", DIFF_MANIFEST]))?;
    for version in ["v1", "v2"] {
        r.run(kubectl(&[
            "--namespace",
            DEMO_NAMESPACE,
            "rollout",
            "status",
            &format!("deployment/json-service-{version}"),
            "--timeout",
            "180s",
        ]))?;
    }

    r.say("traffic to v1, captured by the daemon");
    r.run(kubectl(&[
        "--namespace",
        DEMO_NAMESPACE,
        "delete",
        "job",
        "diff-client",
        "--ignore-not-found",
        "--wait",
    ]))?;
    r.run(kubectl(&["apply", "--filename", DIFF_CLIENT_MANIFEST]))?;
    r.run(kubectl(&[
        "--namespace",
        DEMO_NAMESPACE,
        "wait",
        "--for=condition=complete",
        "job/diff-client",
        "--timeout",
        "180s",
    ]))?;

    r.say("v1's captured traffic, exported from the collector");
    let har = r.output(
        kubectl(&[
            "--namespace",
            NAMESPACE,
            "exec",
            &format!("deployment/{COLLECTOR}"),
            "--",
            image::COLLECTOR_PATH,
            "export",
            "--data",
            COLLECTOR_DATA,
            "--org",
            ORG,
            "--har",
            "/dev/stdout",
        ]),
        r#"{"log":{"entries":[]}}"#,
    )?;
    let recorded = state.join("recorded-v1.jsonl");
    if !r.dry_run {
        let lines = v1_entries(&har)?;
        if lines.is_empty() {
            bail!(
                "the collector holds no exchange of json-service-v1 yet; run the demo again in a few seconds"
            );
        }
        fs::write(&recorded, lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", recorded.display()))?;
        println!(
            "{} exchanges of json-service-v1 -> {}",
            lines.len(),
            recorded.display()
        );
    }

    r.say("replay: twice against v1, once against v2, each with its routing key");
    let mut forwards = Vec::new();
    for (version, port) in [("v1", V1_PORT), ("v2", V2_PORT)] {
        forwards.push(r.spawn(
            kubectl(&[
                "--namespace",
                DEMO_NAMESPACE,
                "port-forward",
                &format!("service/json-service-{version}"),
                &format!("{port}:8080"),
            ]),
            Stdio::null(),
        )?);
        if !r.dry_run {
            capture_e2e::wait_for_port(port, Duration::from_secs(30))
                .with_context(|| format!("kubectl port-forward to json-service-{version}"))?;
        }
    }
    r.run(argv(&["cargo", "build", "--package", "capture-cli"]))?;
    let capture = r.rel(&r.root.join("target/debug/capture"));
    let output = |name: &str| r.rel(&state.join(format!("replay-{name}.jsonl")));
    for (name, port, key) in [
        ("v1-a", V1_PORT, "sandbox-v1"),
        ("v1-b", V1_PORT, "sandbox-v1"),
        ("v2", V2_PORT, "sandbox-v2"),
    ] {
        r.run(vec![
            capture.clone(),
            "replay".into(),
            "--input".into(),
            r.rel(&recorded),
            "--target".into(),
            format!("http://127.0.0.1:{port}"),
            "--routing-key".into(),
            key.into(),
            "--output".into(),
            output(name),
        ])?;
    }

    r.say("diff: baseline v1, candidate v2, noise from the second v1 run");
    let code = r.status(
        vec![
            capture,
            "diff".into(),
            "--baseline".into(),
            output("v1-a"),
            "--candidate".into(),
            output("v2"),
            "--noise".into(),
            output("v1-b"),
            "--json".into(),
            r.rel(&state.join("diff-report.json")),
        ],
        1,
    )?;
    drop(forwards);
    if code != 1 {
        bail!("capture diff exited {code}; the price change of v2 should have made it 1 (red)");
    }
    Ok(())
}

/// The entries of a HAR file (`capture-collector export`) captured from json-service-v1, one
/// JSON text each.
fn v1_entries(har: &str) -> anyhow::Result<Vec<String>> {
    let file: Value = serde_json::from_str(har).context("the collector's export is not JSON")?;
    let entries = file
        .pointer("/log/entries")
        .and_then(Value::as_array)
        .context("the collector's export has no log.entries")?;
    Ok(entries
        .iter()
        .filter(|e| {
            e.pointer("/_capture/workload/owner_name")
                .and_then(Value::as_str)
                == Some("json-service-v1")
        })
        .map(Value::to_string)
        .collect())
}

/// A thread forwarding the child's stdout lines.
fn lines_of(child: &mut capture_e2e::ChildProcess) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child
        .child_mut()
        .stdout
        .take()
        .context("watch has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// One line per exchange: method, URL, status, workload and what was redacted; a line that
/// is not a HAR entry is shown as it is (cut at 200 characters).
pub fn describe_exchange(line: &str) -> String {
    let Ok(entry) = serde_json::from_str::<Value>(line) else {
        return line.chars().take(200).collect();
    };
    let text = |pointer: &str| {
        entry
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("?")
    };
    let status = entry
        .pointer("/response/status")
        .and_then(Value::as_i64)
        .map_or_else(|| "?".to_owned(), |s| s.to_string());
    let redacted: Vec<&str> = entry
        .pointer("/_capture/redacted")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{} {} -> {} ({}/{}, redacted: {})",
        text("/request/method"),
        text("/request/url"),
        status,
        text("/_capture/workload/namespace"),
        text("/_capture/workload/pod"),
        if redacted.is_empty() {
            "nothing".to_owned()
        } else {
            redacted.join(", ")
        }
    )
}

fn down(r: &Runner) -> anyhow::Result<()> {
    if !r.dry_run {
        check_prerequisites("down", &[KIND])?;
    }
    r.say(&format!("deleting cluster {CLUSTER}"));
    r.run(argv(&["kind", "delete", "cluster", "--name", CLUSTER]))?;
    let state = state_dir(&r.root);
    r.show(format!("rm -r {}", r.rel(&state)));
    if !r.dry_run && state.exists() {
        fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
    }
    Ok(())
}

fn namespace_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

fn tls_secret(tls: &DevTls) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TLS_SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": tls.cert, "tls.key": tls.key, "ca.crt": tls.ca},
    })
}

fn ca_config_map(tls: &DevTls) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CA_CONFIG_MAP, "namespace": NAMESPACE},
        "data": {"ca.crt": tls.ca},
    })
}

fn token_secret(token: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": TOKEN_SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"token": token},
    })
}

/// The names the collector's certificate is valid for: its Service, and localhost for
/// `kubectl port-forward`.
pub fn collector_names() -> Vec<String> {
    vec![
        COLLECTOR.to_owned(),
        format!("{COLLECTOR}.{NAMESPACE}"),
        format!("{COLLECTOR}.{NAMESPACE}.svc"),
        format!("{COLLECTOR}.{NAMESPACE}.svc.cluster.local"),
        "localhost".to_owned(),
    ]
}

/// A throw-away CA and a collector certificate signed by it (PEM), kept in the state
/// directory so a second `up` reuses them.
pub struct DevTls {
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// Created by this call (not read back).
    pub fresh: bool,
}

impl DevTls {
    pub fn load_or_create(dir: &Path, dry_run: bool) -> anyhow::Result<Self> {
        let files = [dir.join("ca.crt"), dir.join("tls.crt"), dir.join("tls.key")];
        if files.iter().all(|f| f.is_file()) {
            let [ca, cert, key] = files.map(fs::read_to_string);
            return Ok(Self {
                ca: ca?,
                cert: cert?,
                key: key?,
                fresh: false,
            });
        }
        let tls = Self::generate()?;
        if !dry_run {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            fs::write(&files[0], &tls.ca)?;
            fs::write(&files[1], &tls.cert)?;
            write_private(&files[2], tls.key.as_bytes())?;
        }
        Ok(tls)
    }

    pub fn generate() -> anyhow::Result<Self> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "capture-daemon kind CA (throw-away)");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(collector_names())?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{COLLECTOR}.{NAMESPACE}.svc"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            ca: ca_cert.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            fresh: true,
        })
    }
}

/// Writes `bytes` to a file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode: set it.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::image::dockerfile::Dockerfile;
    use capture_e2e::chart::{RenderedChart, chart_dir, flag_values};
    use capture_e2e::helm::{helm_sdk_ready, yaml_documents};
    use capture_e2e::k8s::Object;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;

    fn root() -> PathBuf {
        capture_e2e::workspace_root()
    }

    /// The commands a dry run of `action` shows.
    fn plan(action: Action) -> Vec<String> {
        let runner = Runner {
            root: root(),
            dry_run: true,
            log: std::cell::RefCell::new(Vec::new()),
        };
        match action {
            Action::Up => up(&runner),
            Action::Demo => demo(&runner),
            Action::Down => down(&runner),
        }
        .expect("a dry run succeeds");
        runner.log.into_inner()
    }

    fn rel(path: &Path) -> String {
        path.strip_prefix(root())
            .unwrap_or(path)
            .display()
            .to_string()
    }

    #[test]
    fn up_creates_builds_loads_and_installs() {
        let k = "kubectl --context kind-capture";
        let python = rel(&sdk_venv(&root()).join("bin/python"));
        assert_eq!(
            plan(Action::Up),
            [
                "kind get clusters".to_owned(),
                "kind create cluster --name capture --config charts/kind/kind-config.yaml --wait 180s".to_owned(),
                "docker build --tag capture-daemon:dev --file Dockerfile .".to_owned(),
                "kind load docker-image capture-daemon:dev --name capture".to_owned(),
                format!("{k} --namespace capture-system get deployment capture-collector  # only checks"),
                format!("{k} apply -f - <<< Namespace capture-system, Secret capture-system/capture-collector-tls, ConfigMap capture-system/capture-collector-ca"),
                format!("{k} apply --filename charts/kind/collector.yaml"),
                format!("{k} --namespace capture-system rollout status deployment/capture-collector --timeout 180s"),
                format!("{k} --namespace capture-system exec deployment/capture-collector -- /usr/local/bin/capture-collector token create --data /var/lib/capture-collector --org demo --scope ingest"),
                format!("{k} apply -f - <<< Secret capture-system/capture-daemon-token"),
                format!("{python} tests/fixtures/helm_chart.py install charts/capture-daemon --values charts/kind/values.yaml --name capture-daemon --namespace capture-system --kube-context kind-capture"),
                format!("{k} --namespace capture-system rollout status daemonset/capture-daemon --timeout 180s"),
            ]
        );
    }

    #[test]
    fn demo_deploys_the_app_watches_and_sends_traffic() {
        let k = "kubectl --context kind-capture";
        let state = rel(&state_dir(&root()));
        assert_eq!(
            plan(Action::Demo),
            [
                format!(
                    "{k} --namespace capture-system get daemonset capture-daemon  # only checks"
                ),
                format!("{k} apply --filename charts/kind/demo.yaml"),
                format!(
                    "{k} --namespace capture-demo rollout status deployment/demo-server --timeout 180s"
                ),
                "cargo build --package capture-collector".to_owned(),
                format!(
                    "{k} --namespace capture-system port-forward service/capture-collector 14317:4317 &"
                ),
                format!(
                    "target/debug/capture-collector watch --collector https://localhost:14317 --token-file {state}/token --ca {state}/ca.crt --namespace capture-demo &"
                ),
                format!(
                    "{k} --namespace capture-demo delete job demo-client --ignore-not-found --wait"
                ),
                format!("{k} apply --filename charts/kind/demo-client.yaml"),
                format!(
                    "{k} --namespace capture-demo wait --for=condition=complete job/demo-client --timeout 180s"
                ),
                format!("{k} apply -f - <<< ConfigMap capture-demo/json-service"),
                format!("{k} apply --filename charts/kind/demo-diff.yaml"),
                format!(
                    "{k} --namespace capture-demo rollout status deployment/json-service-v1 --timeout 180s"
                ),
                format!(
                    "{k} --namespace capture-demo rollout status deployment/json-service-v2 --timeout 180s"
                ),
                format!(
                    "{k} --namespace capture-demo delete job diff-client --ignore-not-found --wait"
                ),
                format!("{k} apply --filename charts/kind/demo-diff-client.yaml"),
                format!(
                    "{k} --namespace capture-demo wait --for=condition=complete job/diff-client --timeout 180s"
                ),
                format!(
                    "{k} --namespace capture-system exec deployment/capture-collector -- /usr/local/bin/capture-collector export --data /var/lib/capture-collector --org demo --har /dev/stdout"
                ),
                format!(
                    "{k} --namespace capture-demo port-forward service/json-service-v1 18081:8080 &"
                ),
                format!(
                    "{k} --namespace capture-demo port-forward service/json-service-v2 18082:8080 &"
                ),
                "cargo build --package capture-cli".to_owned(),
                format!(
                    "target/debug/capture replay --input {state}/recorded-v1.jsonl --target http://127.0.0.1:18081 --routing-key sandbox-v1 --output {state}/replay-v1-a.jsonl"
                ),
                format!(
                    "target/debug/capture replay --input {state}/recorded-v1.jsonl --target http://127.0.0.1:18081 --routing-key sandbox-v1 --output {state}/replay-v1-b.jsonl"
                ),
                format!(
                    "target/debug/capture replay --input {state}/recorded-v1.jsonl --target http://127.0.0.1:18082 --routing-key sandbox-v2 --output {state}/replay-v2.jsonl"
                ),
                format!(
                    "target/debug/capture diff --baseline {state}/replay-v1-a.jsonl --candidate {state}/replay-v2.jsonl --noise {state}/replay-v1-b.jsonl --json {state}/diff-report.json"
                ),
            ]
        );
    }

    #[test]
    fn diff_demo_keeps_only_json_service_v1_entries() {
        let har = r#"{"log":{"entries":[
            {"_capture":{"workload":{"owner_name":"json-service-v1"}},"n":1},
            {"_capture":{"workload":{"owner_name":"demo-server"}},"n":2},
            {"_capture":{"workload":{"owner_name":"json-service-v2"}},"n":3}]}}"#;
        let lines = v1_entries(har).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("\"n\":1"), "{lines:?}");
        assert!(v1_entries("{}").is_err());
    }

    #[test]
    fn down_deletes_the_cluster_and_the_state() {
        assert_eq!(
            plan(Action::Down),
            [
                "kind delete cluster --name capture".to_owned(),
                format!("rm -r {}", rel(&state_dir(&root()))),
            ]
        );
    }

    #[test]
    fn shell_lines_quote_what_a_shell_would_split() {
        assert_eq!(
            shell_line(&argv(&["a", "b c", "it's", "--x=y", ""])),
            r"a 'b c' 'it'\''s' --x=y ''"
        );
    }

    /// Every object of a manifest under charts/kind, typed strictly.
    fn manifest(name: &str) -> Vec<(Value, Object)> {
        let path = root().join("charts/kind").join(name);
        let text = fs::read_to_string(&path).unwrap();
        yaml_documents(&text)
            .unwrap()
            .into_iter()
            .map(|doc| {
                let typed =
                    Object::parse(&doc).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                (doc, typed)
            })
            .collect()
    }

    fn deployment(objects: &[(Value, Object)], name: &str) -> Deployment {
        objects
            .iter()
            .find_map(|(_, o)| match o {
                Object::Deployment(d) if d.metadata.name.as_deref() == Some(name) => {
                    Some((**d).clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no deployment {name}"))
    }

    fn service(objects: &[(Value, Object)], name: &str) -> Service {
        objects
            .iter()
            .find_map(|(_, o)| match o {
                Object::Service(s) if s.metadata.name.as_deref() == Some(name) => {
                    Some((**s).clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    #[test]
    fn the_generated_objects_type_strictly() {
        let tls = DevTls::generate().unwrap();
        for object in [
            namespace_object(NAMESPACE),
            tls_secret(&tls),
            ca_config_map(&tls),
            token_secret("t0ken"),
        ] {
            Object::parse(&object).unwrap();
        }
    }

    #[test]
    fn the_collector_runs_the_contract_command_unprivileged_behind_its_service() {
        let objects = manifest("collector.yaml");
        let kinds: Vec<&str> = objects
            .iter()
            .filter_map(|(d, _)| d.get("kind").and_then(Value::as_str))
            .collect();
        assert_eq!(kinds, ["Namespace", "Deployment", "Service"]);
        let collector = deployment(&objects, COLLECTOR);
        assert_eq!(collector.metadata.namespace.as_deref(), Some(NAMESPACE));
        let pod = collector.spec.template.spec.unwrap();
        let [container] = pod.containers.as_slice() else {
            panic!("one container");
        };
        assert_eq!(container.image.as_deref(), Some(IMAGE));
        assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            container.command.as_deref(),
            Some(&[image::COLLECTOR_PATH.to_owned()][..])
        );
        let args = container.args.clone().unwrap();
        let mounts = container.volume_mounts.clone().unwrap();
        let mount_of = |volume: &str| {
            mounts
                .iter()
                .find(|m| m.name == volume)
                .map(|m| m.mount_path.clone())
                .unwrap()
        };
        let tls_dir = mount_of("tls");
        assert_eq!(
            args,
            [
                "serve".to_owned(),
                "--listen".to_owned(),
                format!("0.0.0.0:{COLLECTOR_PORT}"),
                "--data".to_owned(),
                COLLECTOR_DATA.to_owned(),
                "--tls-cert".to_owned(),
                format!("{tls_dir}/tls.crt"),
                "--tls-key".to_owned(),
                format!("{tls_dir}/tls.key"),
            ]
        );
        // `token create` in `up` names the same store.
        assert_eq!(mount_of("data"), COLLECTOR_DATA);
        let volumes = pod.volumes.unwrap();
        let tls = volumes.iter().find(|v| v.name == "tls").unwrap();
        assert_eq!(
            tls.secret.as_ref().and_then(|s| s.secret_name.as_deref()),
            Some(TLS_SECRET)
        );
        let data = volumes.iter().find(|v| v.name == "data").unwrap();
        assert!(data.empty_dir.is_some());
        // Not root, nothing to escalate to.
        let pod_sc = pod.security_context.unwrap();
        assert_eq!(pod_sc.run_as_non_root, Some(true));
        assert_eq!(pod_sc.run_as_user, Some(65532));
        let sc = container.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(pod.automount_service_account_token, Some(false));

        // The Service selects the collector's pods on the port the daemon is pointed at.
        let svc = service(&objects, COLLECTOR).spec.unwrap();
        let labels = collector_labels(&collector_manifest_deployment());
        for (k, v) in svc.selector.unwrap() {
            assert_eq!(labels.get(&k), Some(&v));
        }
        let ports = svc.ports.unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, i32::from(COLLECTOR_PORT));
        let container_port = container.ports.clone().unwrap()[0].clone();
        assert_eq!(container_port.container_port, i32::from(COLLECTOR_PORT));
    }

    fn collector_manifest_deployment() -> Deployment {
        deployment(&manifest("collector.yaml"), COLLECTOR)
    }

    fn collector_labels(d: &Deployment) -> std::collections::BTreeMap<String, String> {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    #[test]
    fn the_kind_values_point_the_daemon_at_that_collector() -> anyhow::Result<()> {
        let Some(sdk) = helm_sdk_ready(&root())? else {
            return Ok(());
        };
        let values = root().join(VALUES);
        let report = sdk.lint(&chart_dir(&root()), Some(&values), NAMESPACE)?;
        assert!(report.problems().is_empty(), "{report:#?}");
        let chart = RenderedChart::render(&sdk, &chart_dir(&root()), Some(&values))?;
        let args = chart.args()?;
        assert_eq!(
            flag_values(&args, "--collector"),
            [format!(
                "https://{COLLECTOR}.{NAMESPACE}.svc:{COLLECTOR_PORT}"
            )]
        );
        // The certificate `up` makes is valid for that name.
        assert!(collector_names().contains(&format!("{COLLECTOR}.{NAMESPACE}.svc")));
        let container = chart.container()?;
        assert_eq!(container.image.as_deref(), Some(IMAGE));
        assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
        // The token Secret and the CA ConfigMap are the ones `up` creates.
        let volumes = chart.pod_spec()?.volumes.clone().unwrap_or_default();
        let token = volumes
            .iter()
            .find(|v| v.name == "collector-token")
            .unwrap();
        let token = token.secret.as_ref().unwrap();
        assert_eq!(token.secret_name.as_deref(), Some(TOKEN_SECRET));
        let keys: Vec<&str> = token
            .items
            .iter()
            .flatten()
            .map(|i| i.key.as_str())
            .collect();
        let generated = token_secret("t");
        assert_eq!(
            keys,
            generated["stringData"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        let ca = volumes.iter().find(|v| v.name == "collector-ca").unwrap();
        let ca = ca.config_map.as_ref().unwrap();
        assert_eq!(ca.name, CA_CONFIG_MAP);
        let keys: Vec<&str> = ca.items.iter().flatten().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["ca.crt"]);
        assert!(
            ca_config_map(&DevTls::generate()?)["data"]
                .get("ca.crt")
                .is_some()
        );
        // The daemon and the collector share a namespace.
        assert_eq!(
            chart.daemon_set()?.metadata.namespace.as_deref(),
            Some(NAMESPACE)
        );
        // What `up` runs through the SDK, as a client-side dry run (no cluster needed).
        let release =
            sdk.install_dry_run(&chart_dir(&root()), Some(&values), RELEASE, NAMESPACE)?;
        assert_eq!(release["name"], RELEASE);
        assert_eq!(release["namespace"], NAMESPACE);
        assert_eq!(release["status"], "pending-install");
        assert_eq!(release["upgraded"], false);
        // The demo's query secret is one the daemon removes.
        assert_eq!(flag_values(&args, "--redact-query"), ["token"]);
        Ok(())
    }

    #[test]
    fn the_image_holds_what_the_manifests_run() {
        let file = Dockerfile::read(&root()).unwrap();
        let copy = file.stage("runtime").unwrap().all("COPY").join(" ");
        let target = copy.split_whitespace().last().unwrap();
        assert_eq!(format!("{target}capture-collector"), image::COLLECTOR_PATH);
        assert!(copy.contains("/out/capture-collector"));
    }

    #[test]
    fn the_demo_server_is_opted_in_and_the_client_is_not() {
        let objects = manifest("demo.yaml");
        let server = deployment(&objects, "demo-server");
        assert_eq!(server.metadata.namespace.as_deref(), Some(DEMO_NAMESPACE));
        let template = server.spec.template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert_eq!(
            annotations
                .get("traffic-capture/enabled")
                .map(String::as_str),
            Some("true")
        );
        let svc = service(&objects, "demo-server");
        assert_eq!(svc.metadata.namespace.as_deref(), Some(DEMO_NAMESPACE));

        let client = manifest("demo-client.yaml");
        let [(_, Object::Job(job))] = client.as_slice() else {
            panic!("demo-client.yaml holds one Job");
        };
        assert_eq!(job.metadata.name.as_deref(), Some("demo-client"));
        assert_eq!(job.metadata.namespace.as_deref(), Some(DEMO_NAMESPACE));
        let pod = &job.spec.as_ref().unwrap().template;
        assert!(
            pod.metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .is_none_or(|a| !a.contains_key("traffic-capture/enabled"))
        );
        // The client calls the server's Service and sends the secrets the daemon must remove.
        let scripts = objects
            .iter()
            .find_map(|(_, o)| match o {
                Object::ConfigMap(c) => c.data.clone(),
                _ => None,
            })
            .unwrap();
        let client_py = &scripts["client.py"];
        assert!(client_py.contains(&format!("http://demo-server.{DEMO_NAMESPACE}.svc")));
        assert!(client_py.contains("?token="));
        assert!(client_py.contains("Authorization"));
        assert_eq!(client_py.matches("\ncall(").count(), DEMO_EXCHANGES);
        assert!(scripts["server.py"].contains("8080"));
    }

    #[test]
    fn the_kind_config_pins_one_node_image_by_digest() {
        let text = fs::read_to_string(root().join(KIND_CONFIG)).unwrap();
        let docs = yaml_documents(&text).unwrap();
        let [config] = docs.as_slice() else {
            panic!("one document");
        };
        assert_eq!(config["kind"], "Cluster");
        assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
        let nodes = config["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0]["role"], "control-plane");
        let image = nodes[0]["image"].as_str().unwrap();
        let (name, digest) = image.split_once("@sha256:").unwrap();
        assert!(name.starts_with("kindest/node:v1."), "{image}");
        assert!(digest.len() == 64 && digest.chars().all(|c| c.is_ascii_hexdigit()));
        let keys: BTreeSet<&str> = config
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, BTreeSet::from(["apiVersion", "kind", "nodes"]));
    }

    fn openssl_verify(dir: &Path, check: &[&str]) -> bool {
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.join("ca.crt"))
            .args(check)
            .arg(dir.join("tls.crt"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs (apt-get install openssl)")
            .success()
    }

    #[test]
    fn the_dev_certificate_verifies_for_the_service_and_localhost_only() {
        let dir = tempfile::tempdir().unwrap();
        let tls = DevTls::load_or_create(dir.path(), false).unwrap();
        assert!(tls.fresh);
        let mode = fs::metadata(dir.path().join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        for name in collector_names() {
            assert!(
                openssl_verify(dir.path(), &["-verify_hostname", &name]),
                "{name}"
            );
        }
        assert!(openssl_verify(dir.path(), &["-verify_ip", "127.0.0.1"]));
        assert!(!openssl_verify(
            dir.path(),
            &["-verify_hostname", "collector.example.com"]
        ));
        // A second `up` reuses the material.
        let again = DevTls::load_or_create(dir.path(), false).unwrap();
        assert!(!again.fresh);
        assert_eq!(again.cert, tls.cert);
        // A dry run writes nothing.
        let empty = tempfile::tempdir().unwrap();
        let _ = DevTls::load_or_create(&empty.path().join("kind"), true).unwrap();
        assert!(!empty.path().join("kind").exists());
    }

    #[test]
    fn exchanges_are_described_on_one_line() {
        let entry = json!({
            "request": {"method": "GET", "url": "http://demo-server.capture-demo.svc/api/orders"},
            "response": {"status": 200},
            "_capture": {
                "workload": {"namespace": "capture-demo", "pod": "demo-server-1"},
                "redacted": ["authorization", "query:token"]
            }
        });
        assert_eq!(
            describe_exchange(&entry.to_string()),
            "GET http://demo-server.capture-demo.svc/api/orders -> 200 (capture-demo/demo-server-1, redacted: authorization, query:token)"
        );
        assert_eq!(describe_exchange("not json"), "not json");
    }
}
