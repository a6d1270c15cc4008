//! Helm's own engine without a helm binary: `fixtures/helm_chart.py` driven through the
//! helm-python-sdk (Helm's Go SDK behind a C library) in a virtual environment that
//! `cargo xtask test` creates under `target/`. Renders, lints and installs charts,
//! and splits rendered templates into YAML documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;

use capture_test_support::run_unchecked;
use capture_test_support::running_in_ci;

/// The PyPI package and its pinned version (`import helm_python`).
pub const HELM_SDK_PACKAGE: &str = "helm-python-sdk";
pub const HELM_SDK_VERSION: &str = "0.2.2";

const RENDER_TIMEOUT: Duration = Duration::from_secs(120);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The virtual environment holding the SDK: `<target>/helm-sdk`, where `<target>` is
/// `$CARGO_TARGET_DIR` or `<root>/target`.
pub fn sdk_venv(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("helm-sdk")
}

/// The driver script, in the repository.
pub fn driver_script(root: &Path) -> PathBuf {
    root.join("tests/fixtures/helm_chart.py")
}

/// Handle on the SDK: the venv's Python and the driver script.
#[derive(Debug, Clone)]
pub struct HelmSdk {
    python: PathBuf,
    script: PathBuf,
}

/// `helm lint` findings; severity 1 info, 2 warning, 3 error.
#[derive(Debug, Deserialize)]
pub struct LintReport {
    pub total_charts_linted: u32,
    pub messages: Vec<LintMessage>,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct LintMessage {
    pub severity: u8,
    pub path: String,
    pub error: String,
}

impl LintReport {
    /// Warnings and errors (info such as "icon is recommended" left out).
    pub fn problems(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.severity >= 2)
            .map(|m| format!("{}: {}", m.path, m.error.trim()))
            .collect()
    }
}

/// Rendered templates: template path (`chart/templates/x.yaml`) to text.
#[derive(Debug, Deserialize)]
pub struct Rendered {
    pub manifests: BTreeMap<String, String>,
}

impl Rendered {
    /// Every Kubernetes object rendered, with the template it came from, in template order.
    /// NOTES.txt and templates that rendered to nothing are left out.
    pub fn objects(&self) -> Result<Vec<(String, Value)>> {
        let mut out = Vec::new();
        for (template, text) in &self.manifests {
            if !template.ends_with(".yaml") && !template.ends_with(".yml") {
                continue;
            }
            for doc in yaml_documents(text).with_context(|| format!("parsing {template}"))? {
                out.push((template.clone(), doc));
            }
        }
        Ok(out)
    }
}

/// The non-empty documents of a YAML stream, as JSON values.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

impl HelmSdk {
    /// The SDK in `sdk_venv(root)`, checked to import at the pinned version.
    pub fn find(root: &Path) -> Result<Self> {
        let python = sdk_venv(root).join("bin/python");
        let script = driver_script(root);
        if !python.is_file() {
            bail!(
                "the Helm SDK is not installed ({} is missing); `cargo xtask test` installs \
                 {HELM_SDK_PACKAGE}=={HELM_SDK_VERSION} there",
                python.display()
            );
        }
        let sdk = Self { python, script };
        let version = sdk.json(&["version"], RENDER_TIMEOUT)?;
        let package = version.get("package").and_then(Value::as_str);
        if package != Some(HELM_SDK_VERSION) {
            bail!(
                "{HELM_SDK_PACKAGE} in {} is {package:?}, want {HELM_SDK_VERSION}; run `cargo xtask test` to reinstall it",
                sdk.python.display()
            );
        }
        Ok(sdk)
    }

    /// Renders `chart` as release `name` in `namespace` with `values` (a YAML file) on top of
    /// the chart's defaults; schema violations and `fail` calls are errors.
    pub fn render(
        &self,
        chart: &Path,
        values: Option<&Path>,
        name: &str,
        namespace: &str,
    ) -> Result<Rendered> {
        let mut args = vec!["render".to_owned(), path_arg(chart)?];
        push_values(&mut args, values)?;
        args.extend([
            "--name".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
        ]);
        let value = self.json(&args, RENDER_TIMEOUT)?;
        serde_json::from_value(value).context("render output")
    }

    /// `helm lint --strict` of `chart` with `values`.
    pub fn lint(&self, chart: &Path, values: Option<&Path>, namespace: &str) -> Result<LintReport> {
        let mut args = vec!["lint".to_owned(), path_arg(chart)?];
        push_values(&mut args, values)?;
        args.extend(["--namespace".into(), namespace.into()]);
        let value = self.json(&args, RENDER_TIMEOUT)?;
        serde_json::from_value(value).context("lint output")
    }

    /// `helm upgrade --install --wait` against the cluster of `kube_context`.
    pub fn install(
        &self,
        chart: &Path,
        values: Option<&Path>,
        name: &str,
        namespace: &str,
        kube_context: &str,
    ) -> Result<Value> {
        let mut args = vec!["install".to_owned(), path_arg(chart)?];
        push_values(&mut args, values)?;
        args.extend(self::release_args(name, namespace, kube_context));
        self.json(&args, INSTALL_TIMEOUT)
    }

    /// `helm install --dry-run=client`: everything an install checks, without a cluster.
    pub fn install_dry_run(
        &self,
        chart: &Path,
        values: Option<&Path>,
        name: &str,
        namespace: &str,
    ) -> Result<Value> {
        let mut args = vec!["install".to_owned(), path_arg(chart)?];
        push_values(&mut args, values)?;
        args.extend([
            "--name".into(),
            name.into(),
            "--namespace".into(),
            namespace.into(),
            "--dry-run".into(),
        ]);
        self.json(&args, RENDER_TIMEOUT)
    }

    fn run(&self, args: &[String], timeout: Duration) -> Result<Output> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script).args(args);
        run_unchecked(&mut cmd, timeout)
    }

    fn json<S: AsRef<str>>(&self, args: &[S], timeout: Duration) -> Result<Value> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let output = self.run(&args, timeout)?;
        if !output.status.success() {
            bail!(
                "{}",
                String::from_utf8_lossy(&output.stderr).trim().to_owned()
            );
        }
        serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "helm_chart.py {} printed no JSON: {}",
                args.first().map_or("", String::as_str),
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }
}

fn release_args(name: &str, namespace: &str, kube_context: &str) -> Vec<String> {
    vec![
        "--name".into(),
        name.into(),
        "--namespace".into(),
        namespace.into(),
        "--kube-context".into(),
        kube_context.into(),
    ]
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

fn push_values(args: &mut Vec<String>, values: Option<&Path>) -> Result<()> {
    if let Some(values) = values {
        args.push("--values".into());
        args.push(path_arg(values)?);
    }
    Ok(())
}

/// Gate for tests that need the Helm SDK: `Ok(Some)` to go ahead, `Ok(None)` after a loud
/// notice when it is missing outside CI, `Err` when it is missing under `CI=true`.
pub fn helm_sdk_ready(root: &Path) -> Result<Option<HelmSdk>> {
    match HelmSdk::find(root) {
        Ok(sdk) => Ok(Some(sdk)),
        Err(err) if running_in_ci() => Err(err.context("chart tests must run under CI")),
        Err(err) => {
            eprintln!("\n*** SKIPPED chart test: {err:#}.\n*** Under CI=true this is a failure.\n");
            Ok(None)
        }
    }
}
