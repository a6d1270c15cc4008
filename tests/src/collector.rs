//! The real `capture-collector` for the delivery tests: certificates made for the test
//! ([`TestPki`]), the server started on a data directory that outlives it ([`Collector`]: kill
//! it with SIGKILL and start it again on the same port and data), tokens, and the HAR export
//! read back entry by entry.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::env::workspace_root;
use capture_test_support::{ChildProcess, TestPki, run};
use tempfile::TempDir;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The collector to test: `$CAPTURE_COLLECTOR_BIN`, else the newest of
/// `<target>/{release,debug}/capture-collector`.
pub fn collector_binary(root: &Path) -> Result<PathBuf> {
    crate::env::built_binary(
        root,
        "capture-collector",
        "capture-collector",
        "CAPTURE_COLLECTOR_BIN",
    )
}

/// A `capture-collector serve` process over TLS on 127.0.0.1. Its data directory lives as long
/// as this value, across [`Collector::kill`] and [`Collector::restart`].
#[derive(Debug)]
pub struct Collector {
    binary: PathBuf,
    dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    addr: Option<SocketAddr>,
    process: Option<ChildProcess>,
    runs: u32,
}

impl Collector {
    /// Starts a collector with a fresh data directory, on a port of its choosing.
    pub fn start(pki: &TestPki) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-collector-")
            .tempdir()?;
        let mut collector = Self {
            binary: collector_binary(&workspace_root())?,
            dir,
            cert: pki.server_cert(),
            key: pki.server_key(),
            addr: None,
            process: None,
            runs: 0,
        };
        collector.spawn("127.0.0.1:0")?;
        Ok(collector)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let port = self.addr.map_or(0, |a| a.port());
        format!("https://127.0.0.1:{port}")
    }

    fn spawn(&mut self, listen: &str) -> Result<()> {
        self.runs += 1;
        let stdout_path = self.dir.path().join(format!("stdout.{}", self.runs));
        let stderr_path = self.dir.path().join(format!("stderr.{}", self.runs));
        let mut cmd = Command::new(&self.binary);
        cmd.args(["serve", "--listen", listen, "--data"])
            .arg(self.data_dir())
            .arg("--tls-cert")
            .arg(&self.cert)
            .arg("--tls-key")
            .arg(&self.key)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?);
        let mut process = ChildProcess::spawn(&mut cmd, "capture-collector serve")?;
        let deadline = Instant::now() + capture_test_support::patient(START_TIMEOUT);
        let addr = loop {
            let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
            if let Some(addr) = stdout.lines().find_map(|l| l.strip_prefix("listening on ")) {
                break addr.trim().parse::<SocketAddr>()?;
            }
            if let Some(status) = process.try_wait()? {
                bail!(
                    "capture-collector exited with {status} at start; stderr:\n{}",
                    fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
            if Instant::now() >= deadline {
                bail!("capture-collector did not listen within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.addr = Some(addr);
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILL: no goodbye, pushes in flight are cut.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts again on the same port and data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let addr = self.addr.context("never started")?;
        // The port was the collector's a moment ago; another process may not take it in
        // between, but retry the bind a few times in case the kernel is slow to release it.
        let deadline = Instant::now() + capture_test_support::patient(START_TIMEOUT);
        loop {
            match self.spawn(&addr.to_string()) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("collector restart: {e:#}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Everything the collector logged in all its runs.
    pub fn stderr_text(&self) -> String {
        (1..=self.runs)
            .map(|run| {
                fs::read_to_string(self.dir.path().join(format!("stderr.{run}")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn admin(&self, args: &[&str]) -> Result<String> {
        let out = run(
            Command::new(&self.binary)
                .args(args)
                .arg("--data")
                .arg(self.data_dir()),
            RUN_TIMEOUT,
        )?;
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `capture-collector token create --scope ingest`: a new token of `org`, as a node's
    /// daemon holds it.
    pub fn create_token(&self, org: &str) -> Result<String> {
        let out = self.admin(&["token", "create", "--org", org, "--scope", "ingest"])?;
        let token = out.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            bail!("token create printed {out:?}");
        }
        Ok(token.to_owned())
    }

    /// `capture-collector token revoke` of a whole token.
    pub fn revoke_token(&self, org: &str, token: &str) -> Result<()> {
        self.admin(&["token", "revoke", "--org", org, token])
            .map(drop)
    }

    /// `capture-collector export --har`: the HAR file's text.
    pub fn export_har(&self, org: &str) -> Result<String> {
        let path = self.dir.path().join("export.har");
        self.admin(&[
            "export",
            "--org",
            org,
            "--har",
            path.to_str().context("path")?,
        ])?;
        Ok(fs::read_to_string(&path)?)
    }

    /// The exported entries as the exact JSON text of each, in the file's order.
    pub fn exported_entries(&self, org: &str) -> Result<Vec<String>> {
        har_entry_texts(&self.export_har(org)?)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The text of each entry of a HAR file written by `capture-collector export`, which puts one
/// entry per line between the `log` header and footer (the `,` separators at line ends are not
/// part of an entry). Checks that the whole file is JSON and that the entries parsed from it
/// are the texts returned.
pub fn har_entry_texts(har: &str) -> Result<Vec<String>> {
    let parsed: serde_json::Value = serde_json::from_str(har).context("export is not JSON")?;
    let entries = parsed
        .pointer("/log/entries")
        .and_then(serde_json::Value::as_array)
        .context("export has no log.entries")?;
    let mut lines: Vec<String> = BufReader::new(har.as_bytes())
        .lines()
        .collect::<std::io::Result<_>>()?;
    if lines.len() < 2 {
        bail!("export has {} lines", lines.len());
    }
    lines.remove(0);
    lines.pop();
    let texts: Vec<String> = lines
        .into_iter()
        .map(|l| l.strip_suffix(',').map_or(l.clone(), str::to_owned))
        .collect();
    if texts.len() != entries.len() {
        bail!(
            "{} entry lines but {} entries in the parsed export",
            texts.len(),
            entries.len()
        );
    }
    for (text, entry) in texts.iter().zip(entries) {
        let from_text: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("entry line is not JSON: {text:.200}"))?;
        if &from_text != entry {
            bail!("entry line and parsed entry differ: {text:.200}");
        }
    }
    Ok(texts)
}
