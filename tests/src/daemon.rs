//! The daemon under test: started against test cgroups with a temporary output file and a free
//! metrics port, observed through its output file and `/metrics`, stopped with SIGTERM.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;
use serde_json::Value;
use tempfile::TempDir;

use crate::cgroup::TestCgroup;
use crate::env::{daemon_binary, workspace_root};
use crate::net::{free_port, http_get};
use capture_test_support::ChildProcess;

/// How long `/readyz` may take: a debug build loads and verifies the programs slowly, and
/// the machine may be busy compiling.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// What to start the daemon with.
#[derive(Debug, Default)]
pub struct DaemonBuilder {
    binary: Option<PathBuf>,
    cgroups: Vec<PathBuf>,
    pids: Vec<u32>,
    args: Vec<OsString>,
    output_dir: Option<PathBuf>,
}

impl DaemonBuilder {
    /// Use this binary instead of [`daemon_binary`]'s choice.
    #[must_use]
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    #[must_use]
    pub fn target_cgroup(mut self, cgroup: &TestCgroup) -> Self {
        self.cgroups.push(cgroup.path().to_path_buf());
        self
    }

    #[must_use]
    pub fn target_pid(mut self, pid: u32) -> Self {
        self.pids.push(pid);
        self
    }

    /// Extra command-line arguments, e.g. `["--redact-header", "X-Api-Key"]`.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Put the output file in `dir` (default: a temporary directory removed with the guard).
    #[must_use]
    pub fn output_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.output_dir = Some(dir.into());
        self
    }

    /// Starts the daemon and waits until `/readyz` answers 200.
    pub fn start(self) -> Result<Daemon> {
        let binary = match self.binary {
            Some(binary) => binary,
            None => daemon_binary(&workspace_root())?,
        };
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-daemon-")
            .tempdir()?;
        let output = self
            .output_dir
            .as_deref()
            .unwrap_or(dir.path())
            .join("exchanges.jsonl");
        let stderr_path = dir.path().join("daemon.stderr");
        let metrics_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));

        let mut cmd = Command::new(&binary);
        for cgroup in &self.cgroups {
            cmd.arg("--target-cgroup").arg(cgroup);
        }
        for pid in &self.pids {
            cmd.arg("--target-pid").arg(pid.to_string());
        }
        cmd.arg("--output")
            .arg(&output)
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--log-format")
            .arg("text")
            .args(kernel_hook_args())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("daemon.stdout"))?)
            .stderr(File::create(&stderr_path)?);
        let child = ChildProcess::spawn(&mut cmd, "capture-daemon")?;
        let mut daemon = Daemon {
            child,
            _dir: dir,
            output,
            stderr_path,
            metrics_addr,
            binary,
        };
        daemon.wait_ready()?;
        daemon.check_kernel_hook()?;
        Ok(daemon)
    }
}

/// `CAPTURE_E2E_KERNEL_HOOK` (`auto`, `socket`, `fentry`, `kprobe` or `syscall`) selects the kernel hook of every
/// daemon the tests start, as `--kernel-hook`; `cargo xtask test` makes a second pass over the
/// HTTP suites with `syscall`, the fallback this kernel would otherwise never use.
pub const KERNEL_HOOK_ENV: &str = "CAPTURE_E2E_KERNEL_HOOK";

fn kernel_hook_args() -> Vec<OsString> {
    match std::env::var_os(KERNEL_HOOK_ENV) {
        Some(hook) if !hook.is_empty() => vec!["--kernel-hook".into(), hook],
        _ => Vec::new(),
    }
}

/// A running daemon; killed on drop if [`Daemon::stop`] was not called.
#[derive(Debug)]
pub struct Daemon {
    child: ChildProcess,
    _dir: TempDir,
    output: PathBuf,
    stderr_path: PathBuf,
    metrics_addr: SocketAddr,
    binary: PathBuf,
}

impl Daemon {
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// Starts a daemon capturing `cgroup` with default settings.
    pub fn start(cgroup: &TestCgroup) -> Result<Self> {
        Self::builder().target_cgroup(cgroup).start()
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn output_path(&self) -> &Path {
        &self.output
    }

    /// With a forced hook, the daemon must say (in `/metrics`) that it runs on that hook.
    fn check_kernel_hook(&self) -> Result<()> {
        let label = match std::env::var(KERNEL_HOOK_ENV).as_deref() {
            Ok("socket") => "socket_tracepoints",
            Ok("fentry") => "fentry",
            Ok("kprobe") => "kprobes",
            Ok("syscall") => "syscall_tracepoint",
            _ => return Ok(()),
        };
        let body = String::from_utf8_lossy(&self.get("/metrics")?.body).into_owned();
        let line = format!("capture_kernel_hook_info{{hook=\"{label}\"}} 1");
        if !body.lines().any(|l| l == line) {
            bail!("{KERNEL_HOOK_ENV} asks for {label} but /metrics has no `{line}`");
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + capture_test_support::patient(READY_TIMEOUT);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "capture-daemon exited with {status} before it was ready; stderr:\n{}",
                    self.stderr_text()
                );
            }
            if http_get(self.metrics_addr, "/readyz", Duration::from_millis(500))
                .is_ok_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.child.kill();
                bail!(
                    "capture-daemon was not ready (GET http://{}/readyz != 200) within {READY_TIMEOUT:?}; stderr:\n{}",
                    self.metrics_addr,
                    self.stderr_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET `path` on the metrics address.
    pub fn get(&self, path: &str) -> Result<crate::net::HttpResponse> {
        http_get(
            self.metrics_addr,
            path,
            capture_test_support::patient(Duration::from_secs(5)),
        )
    }

    /// Scrapes and parses `/metrics`.
    pub fn metrics(&self) -> Result<Metrics> {
        let response = self.get("/metrics")?;
        if response.status != 200 {
            bail!("GET /metrics returned {}", response.status);
        }
        Metrics::parse(&String::from_utf8_lossy(&response.body))
    }

    /// Everything the daemon has logged so far.
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The raw output file (complete lines only are guaranteed to be whole exchanges).
    pub fn output_text(&self) -> Result<String> {
        match fs::read(&self.output) {
            Ok(bytes) => Ok(String::from_utf8(bytes).context("output is not UTF-8")?),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(err) => Err(err).with_context(|| format!("reading {}", self.output.display())),
        }
    }

    /// The exchanges written so far (complete lines only).
    pub fn exchanges(&self) -> Result<Vec<Value>> {
        parse_exchanges(&self.output_text()?)
    }

    /// Waits until at least `n` exchanges were written; returns them all.
    pub fn wait_for_exchanges(&self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        let deadline = Instant::now() + capture_test_support::patient(timeout);
        loop {
            let exchanges = self.exchanges()?;
            if exchanges.len() >= n {
                return Ok(exchanges);
            }
            if Instant::now() >= deadline {
                let metrics = self
                    .metrics()
                    .map(|m| m.summary())
                    .unwrap_or_else(|e| format!("{e:#}"));
                bail!(
                    "expected at least {n} exchanges within {timeout:?}, got {}: {}\nmetrics: {metrics}\ndaemon stderr (tail):\n{}",
                    exchanges.len(),
                    exchanges
                        .iter()
                        .map(crate::har::brief)
                        .collect::<Vec<_>>()
                        .join("\n"),
                    tail(&self.stderr_text(), 40)
                );
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends SIGTERM and waits for the exit status (SIGKILL after 20 s, which is an error).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.signal(Signal::SIGTERM)?;
        match self.child.wait_timeout(STOP_TIMEOUT)? {
            Some(status) => Ok(status),
            None => {
                self.child.kill();
                bail!(
                    "capture-daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
                    tail(&self.stderr_text(), 40)
                )
            }
        }
    }

    /// Scrapes the metrics once the output agrees with them, stops the daemon with SIGTERM and
    /// collects everything it wrote.
    pub fn finish(mut self) -> Result<Finished> {
        let settled = self.settled_metrics();
        let status = self.stop()?;
        let output = self.output_text()?;
        let (metrics, written_at_scrape) = settled?;
        Ok(Finished {
            exchanges: parse_exchanges(&output)?,
            output,
            metrics,
            written_at_scrape,
            status,
            stderr: self.stderr_text(),
        })
    }

    /// `/metrics` at a moment when `capture_exchanges_total` equals the lines written (the
    /// counter and the file are updated one after the other), and that number of lines. Gives
    /// up after 10 s with the last scrape, which [`Finished::assert_clean`] then reports.
    fn settled_metrics(&self) -> Result<(Metrics, usize)> {
        let deadline = Instant::now() + capture_test_support::patient(Duration::from_secs(10));
        loop {
            let before = self.metrics()?;
            let written = self.exchanges()?.len();
            let after = self.metrics()?;
            let counted = after.sum("capture_exchanges_total");
            let settled =
                before.sum("capture_exchanges_total") == counted && counted == written as f64;
            if settled || Instant::now() >= deadline {
                return Ok((after, written));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

/// What a stopped daemon left behind.
#[derive(Debug)]
pub struct Finished {
    /// Exchanges in output order.
    pub exchanges: Vec<Value>,
    /// The whole output file.
    pub output: String,
    /// `/metrics` scraped just before SIGTERM, once the output had caught up with it.
    pub metrics: Metrics,
    /// Exchanges written when `metrics` was scraped; the SIGTERM flush may add more.
    pub written_at_scrape: usize,
    pub status: ExitStatus,
    pub stderr: String,
}

impl Finished {
    /// The checks every test ends with: exit status 0 after SIGTERM, no kernel events lost,
    /// no gap bytes, and `capture_exchanges_total` equal to what was written when it was
    /// scraped (the exchanges flushed by SIGTERM come after the last scrape).
    pub fn assert_clean(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !self.status.success() {
            problems.push(format!(
                "daemon exited with {} after SIGTERM (want 0)",
                self.status
            ));
        }
        for name in [
            "capture_kernel_events_lost_total",
            "capture_gap_bytes_total",
        ] {
            match self.metrics.get(name) {
                Some(0.0) => {}
                Some(v) => problems.push(format!("{name} = {v} (want 0)")),
                None => problems.push(format!("{name} missing from /metrics")),
            }
        }
        if !self.metrics.has("capture_exchanges_total") {
            problems.push("capture_exchanges_total missing from /metrics".to_owned());
        }
        let emitted = self.metrics.sum("capture_exchanges_total");
        let written = self.written_at_scrape as f64;
        if emitted != written {
            problems.push(format!(
                "capture_exchanges_total = {emitted} but {written} exchanges were written at that scrape"
            ));
        }
        if self.exchanges.len() < self.written_at_scrape {
            problems.push(format!(
                "{} exchanges in the output after exit, {} before",
                self.exchanges.len(),
                self.written_at_scrape
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!(
                "{}\nmetrics: {}\ndaemon stderr (tail):\n{}",
                problems.join("\n"),
                self.metrics.summary(),
                tail(&self.stderr, 40)
            )
        }
    }
}

/// Parses JSON lines; a trailing line without its newline is still being written and is left out.
pub fn parse_exchanges(text: &str) -> Result<Vec<Value>> {
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("output line {} is not JSON: {line:.200}", i + 1))
        })
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A parsed Prometheus text exposition: series (`name{labels}` as written) to value.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    series: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Result<Self> {
        let mut series = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // Label values may contain spaces, so the series name ends at the closing brace.
            let (name, rest) = match line.find('{') {
                Some(_) => {
                    let end = line
                        .rfind('}')
                        .with_context(|| format!("unterminated labels in {line:?}"))?;
                    line.split_at(end + 1)
                }
                None => line
                    .split_once(char::is_whitespace)
                    .with_context(|| format!("no value in {line:?}"))?,
            };
            let value = rest
                .split_whitespace()
                .next()
                .with_context(|| format!("no value in {line:?}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .with_context(|| format!("bad value in {line:?}"))?,
            };
            series.insert(normalize(name), value);
        }
        Ok(Self { series })
    }

    /// The value of one series, written exactly as exposed (e.g. `capture_exchanges_total{protocol="h1"}`);
    /// a bare metric name also matches its only series.
    pub fn get(&self, series: &str) -> Option<f64> {
        if let Some(v) = self.series.get(&normalize(series)) {
            return Some(*v);
        }
        let mut matching = self.series.iter().filter(|(k, _)| base_name(k) == series);
        match (matching.next(), matching.next()) {
            (Some((_, v)), None) => Some(*v),
            _ => None,
        }
    }

    /// Whether any series of this metric is exposed.
    pub fn has(&self, metric: &str) -> bool {
        self.series.keys().any(|k| base_name(k) == metric)
    }

    /// Sum over every series of `metric` (0 when absent).
    pub fn sum(&self, metric: &str) -> f64 {
        self.series
            .iter()
            .filter(|(k, _)| base_name(k) == metric)
            .map(|(_, v)| v)
            .sum()
    }

    pub fn series(&self) -> &BTreeMap<String, f64> {
        &self.series
    }

    /// The `capture_*` series on one line, for error messages.
    pub fn summary(&self) -> String {
        self.series
            .iter()
            .filter(|(k, _)| k.starts_with("capture_"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn base_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

fn normalize(series: &str) -> String {
    series.chars().filter(|c| !c.is_whitespace()).collect()
}
