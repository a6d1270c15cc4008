//! What the replay and diff tests and `cargo xtask demo diff` need: the `capture` binary and
//! the two-version JSON service (`fixtures/json_service.py`).

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::cgroup::TestCgroup;

use capture_test_support::ChildProcess;

const JSON_SERVICE: &str = include_str!("../fixtures/json_service.py");
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `capture` CLI to test: `$CAPTURE_CLI_BIN`, else the newest of
/// `<target>/{release,debug}/capture`.
pub fn cli_binary(root: &Path) -> Result<PathBuf> {
    crate::env::built_binary(root, "capture", "capture-cli", "CAPTURE_CLI_BIN")
}

/// One request as the JSON service received it (its `--log`).
#[derive(Clone, Debug)]
pub struct Received {
    /// Unix seconds.
    pub t: f64,
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Lowercase name → value.
    pub headers: serde_json::Map<String, Value>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(Value::as_str)
    }
}

/// `fixtures/json_service.py` in version 1 or 2 on 127.0.0.1, logging what it receives.
#[derive(Debug)]
pub struct JsonService {
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl JsonService {
    /// Starts version `version` inside `cgroup`, or outside any test cgroup when `None`.
    pub fn start(cgroup: Option<&TestCgroup>, version: u8) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-json-service-")
            .tempdir()?;
        let script = dir.path().join("json_service.py");
        fs::write(&script, JSON_SERVICE)?;
        let python = std::env::var("CAPTURE_E2E_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let mut cmd = match cgroup {
            Some(cgroup) => cgroup.command(&python),
            None => Command::new(&python),
        };
        // Port 0: the service binds a port of the kernel's choosing and prints it, so no other
        // process can hold the port the test then talks to.
        cmd.arg(&script)
            .args(["--port", "0", "--version", &version.to_string()])
            .arg("--log")
            .arg(dir.path().join("received.jsonl"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(dir.path().join("stderr"))?);
        let mut process = ChildProcess::spawn(&mut cmd, "python json_service.py")?;
        let stdout = process
            .child_mut()
            .stdout
            .take()
            .context("json service stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let port = rx
            .recv_timeout(capture_test_support::patient(START_TIMEOUT))
            .ok()
            .and_then(|line| {
                line.trim()
                    .strip_prefix("listening on ")?
                    .parse::<u16>()
                    .ok()
            });
        let Some(port) = port else {
            process.kill();
            let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
            bail!("json service did not start within {START_TIMEOUT:?}; stderr:\n{stderr}");
        };
        Ok(Self { process, port, dir })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Result<Vec<Received>> {
        let path = self.dir.path().join("received.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("reading the json service's log"),
        };
        text.lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).context("json service log line")?;
                Ok(Received {
                    t: v["t"].as_f64().context("t")?,
                    method: v["method"].as_str().context("method")?.to_owned(),
                    path: v["path"].as_str().context("path")?.to_owned(),
                    headers: v["headers"].as_object().cloned().unwrap_or_default(),
                })
            })
            .collect()
    }
}
