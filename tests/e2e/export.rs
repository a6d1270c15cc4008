//! Delivery end to end: the real daemon (real eBPF) exports what it captures to the real
//! `capture-collector` over TLS (certificates made by the test), with a token made by
//! `capture-collector token create`, while its JSONL sink keeps writing.
//!
//! "Byte-identical" here means: the JSON text of every entry in `capture-collector export --har`
//! (one entry per line in that file) equals, byte for byte, a line the daemon's `--output`
//! wrote, and the two hold the same entries the same number of times; with
//! `--export-max-in-flight 1` also in the same order.
//!
//! Needs root and cgroup v2 (skips loudly otherwise, fails under `CI=true`), a built daemon
//! and a built collector (`cargo build -p capture-daemon -p capture-collector`, or
//! `CAPTURE_DAEMON_BIN` / `CAPTURE_COLLECTOR_BIN`).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use capture_e2e::{
    ChildProcess, Collector, Daemon, PythonServer, TestCgroup, TestPki, capture_environment_ready,
    curl, daemon_binary, free_port, run, run_unchecked, unique_marker, workspace_root,
};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

/// A Python client making `n` keep-alive `POST /echo?seq=i` requests of `size` bytes each,
/// sleeping `pause` seconds between them.
const CLIENT: &str = r#"
import http.client, sys, time
port, n, pause, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
for i in range(n):
    body = (("%06d," % i) * (size // 7 + 1))[:size].encode()
    conn.request("POST", "/echo?seq=%d" % i, body=body, headers={"Content-Type": "text/plain"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit("status %d" % response.status)
    if pause:
        time.sleep(pause)
"#;

fn python() -> String {
    std::env::var("CAPTURE_E2E_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn client(cgroup: &TestCgroup, port: u16, n: usize, pause: f64, size: usize) -> Command {
    let mut cmd = cgroup.command(python());
    cmd.arg("-c")
        .arg(CLIENT)
        .arg(port.to_string())
        .arg(n.to_string())
        .arg(pause.to_string())
        .arg(size.to_string());
    cmd
}

/// The exporter flags pointing at `collector` with the token in `token_file`.
fn export_args(collector: &Collector, pki: &TestPki, token_file: &Path) -> Vec<String> {
    vec![
        "--collector".into(),
        collector.url(),
        "--collector-ca".into(),
        pki.ca().display().to_string(),
        "--token-file".into(),
        token_file.display().to_string(),
        "--daemon-id".into(),
        "e2e-node".into(),
        "--export-batch-max-delay".into(),
        "100ms".into(),
    ]
}

fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(daemon: &Daemon, series: &str) -> Result<f64> {
    daemon
        .metrics()?
        .get(series)
        .with_context(|| format!("{series} missing from /metrics"))
}

fn dropped(daemon: &Daemon, reason: &str) -> Result<f64> {
    metric(
        daemon,
        &format!("capture_export_dropped_total{{reason=\"{reason}\"}}"),
    )
}

/// The text of a log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Batches left in a spool directory.
fn spool_files(dir: &Path) -> Result<usize> {
    Ok(fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "batch"))
        .count())
}

#[test]
fn exported_exchanges_are_byte_identical_to_the_jsonl_sink() -> Result<()> {
    require_capture_environment!();
    let pki = TestPki::new()?;
    let collector = Collector::start(&pki)?;
    let token = collector.create_token("acme")?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{token}\n"))?;

    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    // One push at a time: the collector stores batches in capture order, so the export is
    // the JSONL file entry for entry.
    let mut args = export_args(&collector, &pki, &token_file);
    args.extend(["--export-max-in-flight".to_owned(), "1".to_owned()]);
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(args)
        .start()?;

    let base = server.base_url();
    let secret = unique_marker("cookie");
    // Plain, JSON, a decoded gzip body, a 1 MiB binary body (base64 in the entry), a redacted
    // cookie and credentials, HEAD, 204: the entries differ in every part of the schema.
    let requests: Vec<Vec<String>> = vec![
        vec![format!("{base}/json?lang=en")],
        vec![
            "-X".into(),
            "POST".into(),
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data-binary".into(),
            r#"{"order":42}"#.into(),
            format!("{base}/echo"),
        ],
        vec![format!("{base}/gzip")],
        vec![format!("{base}/big")],
        vec![
            "-H".into(),
            format!("Authorization: Bearer {secret}"),
            "-H".into(),
            format!("Cookie: session={secret}"),
            format!("{base}/cookie?v=visible"),
        ],
        vec!["-I".into(), format!("{base}/json")],
        vec![format!("{base}/empty")],
    ];
    for args in &requests {
        run(
            curl(Some(&cgroup)).args(args).arg("-o").arg("/dev/null"),
            RUN_TIMEOUT,
        )?;
    }
    let n = requests.len();
    daemon.wait_for_exchanges(n, DELIVERY_TIMEOUT)?;
    wait_for(DELIVERY_TIMEOUT, "every exchange at the collector", || {
        Ok(collector.exported_entries("acme")?.len() >= n)
    })?;
    // Stored at the collector comes before the daemon has counted the acknowledgement.
    wait_for(DELIVERY_TIMEOUT, "every acknowledgement counted", || {
        Ok(metric(&daemon, "capture_export_exchanges_acked_total")? >= n as f64)
    })?;
    let acked = metric(&daemon, "capture_export_exchanges_acked_total")?;
    let connected = metric(&daemon, "capture_export_connected")?;
    let done = daemon.finish()?;
    done.assert_clean()?;

    let jsonl: Vec<&str> = done.output.lines().collect();
    let exported = collector.exported_entries("acme")?;
    assert_eq!(jsonl.len(), n);
    assert_eq!(exported.len(), n, "stored exactly once each");
    for (i, (line, entry)) in jsonl.iter().zip(&exported).enumerate() {
        assert!(
            line == entry,
            "entry {i} differs:\njsonl:     {line:.300}\ncollector: {entry:.300}"
        );
    }
    assert!(!collector.export_har("acme")?.contains(&secret));
    assert_eq!(acked, n as f64);
    assert_eq!(connected, 1.0);
    for reason in ["queue_full", "spool_full", "rejected", "shutdown"] {
        assert_eq!(
            done.metrics.get(&format!(
                "capture_export_dropped_total{{reason=\"{reason}\"}}"
            )),
            Some(0.0),
            "{reason}"
        );
    }
    let audit = audit_lines(&done.stderr)?;
    let connected: Vec<&Value> = audit
        .iter()
        .filter(|a| a.get("event").and_then(Value::as_str) == Some("collector_connected"))
        .collect();
    let url = collector.url();
    assert_eq!(connected.len(), 1, "{audit:?}");
    assert!(
        connected[0]
            .get("endpoint")
            .and_then(Value::as_str)
            .is_some_and(|e| e.contains(url.trim_start_matches("https://"))),
        "{}",
        connected[0]
    );
    assert!(!done.stderr.contains(&token), "the token reached the log");
    Ok(())
}

#[test]
fn a_wrong_or_revoked_token_stores_nothing_and_is_counted_and_logged() -> Result<()> {
    require_capture_environment!();
    let pki = TestPki::new()?;
    let collector = Collector::start(&pki)?;
    let good = collector.create_token("acme")?;
    let revoked = collector.create_token("acme")?;
    collector.revoke_token("acme", &revoked)?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    let wrong = format!("cap_{}", unique_marker("wrong"));
    fs::write(&token_file, &wrong)?;

    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let mut args = export_args(&collector, &pki, &token_file);
    args.extend(["--export-max-in-flight".to_owned(), "1".to_owned()]);
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(args)
        .start()?;
    for i in 0..3 {
        run(
            curl(Some(&cgroup)).arg(format!("{}/auth/{i}", server.base_url())),
            RUN_TIMEOUT,
        )?;
    }
    daemon.wait_for_exchanges(3, DELIVERY_TIMEOUT)?;

    // A wrong token: refused once, not retried, nothing stored.
    wait_for(DELIVERY_TIMEOUT, "the refusal of the wrong token", || {
        Ok(metric(&daemon, "capture_export_auth_failures_total")? >= 1.0)
    })?;
    // Not retried: an absence, so a window (several backoff periods), not a readiness wait.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(metric(&daemon, "capture_export_auth_failures_total")?, 1.0);
    assert_eq!(metric(&daemon, "capture_export_auth_blocked")?, 1.0);
    assert!(collector.exported_entries("acme")?.is_empty());

    // A revoked token: read from the changed file, tried once, refused, nothing stored.
    fs::write(&token_file, &revoked)?;
    wait_for(DELIVERY_TIMEOUT, "the refusal of the revoked token", || {
        Ok(metric(&daemon, "capture_export_auth_failures_total")? >= 2.0)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&daemon, "capture_export_auth_failures_total")?, 2.0);
    assert!(collector.exported_entries("acme")?.is_empty());
    assert_eq!(
        metric(&daemon, "capture_export_exchanges_acked_total")?,
        0.0
    );
    let stderr = daemon.stderr_text();
    assert_eq!(
        stderr.matches("the collector refused the token").count(),
        2,
        "one loud error per refusal:\n{stderr}"
    );
    for secret in [&wrong, &revoked, &good] {
        assert!(!stderr.contains(secret.as_str()), "a token reached the log");
    }

    // A good token: the held exchanges go through, none lost.
    fs::write(&token_file, format!("{good}\n"))?;
    wait_for(DELIVERY_TIMEOUT, "delivery with the good token", || {
        Ok(collector.exported_entries("acme")?.len() >= 3)
    })?;
    let done = daemon.finish()?;
    done.assert_clean()?;
    let jsonl: Vec<&str> = done.output.lines().collect();
    assert_eq!(collector.exported_entries("acme")?, jsonl);
    assert_eq!(done.metrics.get("capture_export_auth_blocked"), Some(0.0));
    Ok(())
}

#[test]
fn a_collector_killed_mid_stream_loses_and_duplicates_nothing() -> Result<()> {
    require_capture_environment!();
    const N: usize = 1200;
    const QUEUE_MAX: f64 = 256.0 * 1024.0;
    let pki = TestPki::new()?;
    let mut collector = Collector::start(&pki)?;
    let token = collector.create_token("acme")?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    fs::write(&token_file, &token)?;
    let spool = dir.path().join("spool");

    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let mut args = export_args(&collector, &pki, &token_file);
    args.extend(
        [
            "--spool-dir",
            spool.to_str().context("spool path")?,
            "--spool-max-bytes",
            "16777216",
            "--export-queue-max-bytes",
            "262144",
            "--export-batch-max-bytes",
            "65536",
            "--export-batch-max-exchanges",
            "32",
            "--export-backoff-max",
            "500ms",
        ]
        .map(String::from),
    );
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(args)
        .start()?;

    let mut traffic = ChildProcess::spawn(
        &mut client(&cgroup, server.port(), N, 0.004, 1000),
        "python client",
    )?;
    wait_for(DELIVERY_TIMEOUT, "the first deliveries", || {
        Ok(metric(&daemon, "capture_export_exchanges_acked_total")? >= 150.0)
    })?;
    collector.kill();
    // Traffic goes on during the outage: batches pile up in memory, then in the spool.
    let outage = Instant::now();
    let (mut max_spool, mut max_queue) = (0.0_f64, 0.0_f64);
    while outage.elapsed() < Duration::from_secs(3) {
        max_spool = max_spool.max(metric(&daemon, "capture_export_spool_bytes")?);
        max_queue = max_queue.max(metric(&daemon, "capture_export_queue_bytes")?);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(&daemon, "capture_export_connected")?, 0.0);
    collector.restart()?;

    let status = traffic
        .wait_timeout(Duration::from_secs(180))?
        .context("the client did not finish")?;
    assert!(status.success(), "client: {status}");
    daemon.wait_for_exchanges(N, DELIVERY_TIMEOUT)?;
    wait_for(DELIVERY_TIMEOUT, "every exchange at the collector", || {
        Ok(
            metric(&daemon, "capture_export_exchanges_acked_total")? >= N as f64
                && metric(&daemon, "capture_export_spool_batches")? == 0.0,
        )
    })?;
    let done = daemon.finish()?;
    done.assert_clean()?;

    let mut jsonl: Vec<&str> = done.output.lines().collect();
    let mut exported = collector.exported_entries("acme")?;
    assert_eq!(jsonl.len(), N);
    let unique: BTreeSet<&String> = exported.iter().collect();
    assert_eq!(unique.len(), exported.len(), "an exchange was stored twice");
    assert_eq!(exported.len(), N, "stored {} of {N}", exported.len());
    jsonl.sort_unstable();
    exported.sort_unstable();
    assert!(
        jsonl.iter().zip(&exported).all(|(a, b)| a == b),
        "the collector's entries are not the JSONL lines"
    );
    // The spool's cap is not reached here (nothing may be dropped); a full spool is
    // `a_full_spool_drops_what_does_not_fit_and_never_passes_its_cap`.
    assert!(max_spool > 0.0, "the outage never reached the spool");
    assert!(max_queue > 0.0, "the outage never filled the queue");
    assert!(max_queue <= QUEUE_MAX, "queue {max_queue} > {QUEUE_MAX}");
    let m = &done.metrics;
    let get = |name: &str| {
        m.get(name)
            .with_context(|| format!("{name} missing from /metrics"))
    };
    assert!(get("capture_export_retries_total")? > 0.0);
    assert!(get("capture_export_batches_spooled_total")? > 0.0);
    // Every reason is exposed (a missing series would sum to 0 too), and none counted a drop.
    for reason in [
        "queue_full",
        "spool_full",
        "rejected",
        "shutdown",
        "spool_corrupt",
    ] {
        get(&format!(
            "capture_export_dropped_total{{reason=\"{reason}\"}}"
        ))?;
    }
    assert_eq!(
        m.sum("capture_export_dropped_total"),
        0.0,
        "{}",
        m.summary()
    );
    assert_eq!(spool_files(&spool)?, 0, "spool not drained");
    let audit = audit_lines(&done.stderr)?;
    let url = collector.url();
    let endpoint = url.trim_start_matches("https://");
    for event in ["collector_connected", "collector_disconnected"] {
        let lines: Vec<&Value> = audit
            .iter()
            .filter(|a| a.get("event").and_then(Value::as_str) == Some(event))
            .collect();
        assert!(!lines.is_empty(), "no {event} audit line: {audit:?}");
        for line in lines {
            assert!(
                line.get("endpoint")
                    .and_then(Value::as_str)
                    .is_some_and(|e| e.contains(endpoint)),
                "{line}"
            );
            // A disconnection says why; a connection has nothing to explain.
            if event == "collector_disconnected" {
                assert!(
                    line.get("reason")
                        .and_then(Value::as_str)
                        .is_some_and(|r| !r.is_empty()),
                    "{line}"
                );
            }
        }
    }
    Ok(())
}

/// The audit lines (`"target":"audit"`) of the daemon's stderr, each parsed as JSON.
fn audit_lines(stderr: &str) -> Result<Vec<Value>> {
    stderr
        .lines()
        .filter(|l| l.contains(r#""target":"audit""#))
        .map(|l| serde_json::from_str(l).with_context(|| format!("audit line is not JSON: {l}")))
        .collect()
}

#[test]
fn a_full_spool_drops_what_does_not_fit_and_never_passes_its_cap() -> Result<()> {
    require_capture_environment!();
    const N: usize = 400;
    const SPOOL_MAX: u64 = 64 * 1024;
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    fs::write(&token_file, "unused")?;
    let spool = dir.path().join("spool");
    // Nothing listens there: the collector is down for the whole test.
    let port = free_port()?;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args([
            "--collector".to_owned(),
            format!("https://127.0.0.1:{port}"),
            "--collector-ca".to_owned(),
            pki.ca().display().to_string(),
            "--token-file".to_owned(),
            token_file.display().to_string(),
            "--spool-dir".to_owned(),
            spool.display().to_string(),
            "--spool-max-bytes".to_owned(),
            SPOOL_MAX.to_string(),
            "--export-queue-max-bytes".to_owned(),
            "65536".to_owned(),
            "--export-batch-max-bytes".to_owned(),
            "16384".to_owned(),
        ])
        .start()?;
    assert_eq!(
        metric(&daemon, "capture_export_spool_max_bytes")?,
        SPOOL_MAX as f64
    );
    // About 600 KB of exchanges: many times what the queue and the spool hold together.
    let mut traffic = ChildProcess::spawn(
        &mut client(&cgroup, server.port(), N, 0.0, 1000),
        "python client",
    )?;
    let spool_on_disk = || -> Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(&spool)? {
            total += entry?.metadata()?.len();
        }
        Ok(total)
    };
    let mut max_disk = 0;
    let mut max_metric = 0.0_f64;
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        max_disk = max_disk.max(spool_on_disk()?);
        max_metric = max_metric.max(metric(&daemon, "capture_export_spool_bytes")?);
        if traffic.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the client did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = traffic
        .wait_timeout(RUN_TIMEOUT)?
        .context("the client did not finish")?;
    assert!(status.success(), "client: {status}");
    daemon.wait_for_exchanges(N, DELIVERY_TIMEOUT)?;
    wait_for(DELIVERY_TIMEOUT, "every exchange handed over", || {
        Ok(metric(&daemon, "capture_export_exchanges_total")? >= N as f64)
    })?;
    let spool_full = dropped(&daemon, "spool_full")?;
    max_disk = max_disk.max(spool_on_disk()?);
    max_metric = max_metric.max(metric(&daemon, "capture_export_spool_bytes")?);
    assert!(spool_full > 0.0, "the spool never filled");
    assert!(max_metric > 0.0, "nothing was spooled");
    assert!(
        max_metric <= SPOOL_MAX as f64,
        "spool gauge {max_metric} > {SPOOL_MAX}"
    );
    assert!(
        max_disk <= SPOOL_MAX,
        "spool directory {max_disk} bytes > {SPOOL_MAX}"
    );
    assert_eq!(
        metric(&daemon, "capture_export_exchanges_acked_total")?,
        0.0
    );

    let done = daemon.finish()?;
    done.assert_clean()?;
    assert_eq!(done.exchanges.len(), N, "the JSONL sink is not affected");
    let after = spool_on_disk()?;
    assert!(
        after <= SPOOL_MAX,
        "spool directory {after} > {SPOOL_MAX} after exit"
    );
    assert!(spool_files(&spool)? > 0, "the spool kept nothing");
    assert!(
        strip_ansi(&done.stderr).contains("spool_full"),
        "the drops were not logged:\n{}",
        done.stderr
    );
    Ok(())
}

#[test]
fn with_no_spool_a_full_queue_drops_are_counted_not_hidden() -> Result<()> {
    require_capture_environment!();
    const N: usize = 300;
    let pki = TestPki::new()?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    fs::write(&token_file, "unused")?;
    // Nothing listens there: the collector is down for the whole test.
    let port = free_port()?;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args([
            "--collector".to_owned(),
            format!("https://127.0.0.1:{port}"),
            "--collector-ca".to_owned(),
            pki.ca().display().to_string(),
            "--token-file".to_owned(),
            token_file.display().to_string(),
            "--export-queue-max-bytes".to_owned(),
            "65536".to_owned(),
            "--export-batch-max-bytes".to_owned(),
            "32768".to_owned(),
        ])
        .start()?;
    run(
        &mut client(&cgroup, server.port(), N, 0.0, 1000),
        RUN_TIMEOUT,
    )?;
    daemon.wait_for_exchanges(N, DELIVERY_TIMEOUT)?;
    wait_for(DELIVERY_TIMEOUT, "every exchange handed over", || {
        Ok(metric(&daemon, "capture_export_exchanges_total")? >= N as f64)
    })?;
    let queue_full = dropped(&daemon, "queue_full")?;
    assert!(queue_full > 0.0, "no queue_full drops");
    assert!(metric(&daemon, "capture_export_queue_bytes")? <= 65536.0);
    assert_eq!(
        metric(&daemon, "capture_export_exchanges_acked_total")?,
        0.0
    );

    let done = daemon.finish()?;
    done.assert_clean()?;
    // The JSONL sink is not affected by the exporter's trouble.
    assert_eq!(done.exchanges.len(), N);
    assert!(
        done.stderr.contains("exchanges dropped") && done.stderr.contains("queue_full"),
        "the drops were not logged:\n{}",
        done.stderr
    );
    // What was still queued at SIGTERM is dropped too (no spool), and said so.
    let stderr = strip_ansi(&done.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("exporter stopped"))
        .context("no exporter stop line")?;
    let at_shutdown: f64 = line
        .split("dropped=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(
        queue_full + at_shutdown,
        N as f64,
        "every exchange is accounted for: {line}"
    );
    Ok(())
}

// Configuration errors need neither root nor BPF: they stop the daemon before it attaches.

fn usage_error(args: &[&str]) -> Result<String> {
    let bin = daemon_binary(&workspace_root())?;
    let out = run_unchecked(Command::new(bin).args(args), RUN_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    Ok(stderr)
}

#[test]
fn exporter_configuration_errors_exit_2_naming_the_flag() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = TestPki::new()?;
    let ca = pki.ca().display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let target = ["--target-pid", "1"];
    for (args, flag) in [
        (
            &["--collector", "http://127.0.0.1:4317"][..],
            "--collector-insecure",
        ),
        (
            &[
                "--collector",
                "https://127.0.0.1:4317",
                "--collector-cert",
                &ca,
            ],
            "--collector-key",
        ),
        (
            &[
                "--collector",
                "https://127.0.0.1:4317",
                "--collector-ca",
                &missing,
            ],
            "--collector-ca",
        ),
        (
            &[
                "--collector",
                "https://127.0.0.1:4317",
                "--token-file",
                &missing,
            ],
            "--token-file",
        ),
    ] {
        let e = usage_error(&[&target[..], args].concat())?;
        assert!(e.contains(flag), "{args:?}: {e}");
    }
    Ok(())
}

#[test]
fn a_spool_directory_in_use_is_refused_at_start_up() -> Result<()> {
    // The spool is opened after the targets are resolved: this one needs a real cgroup.
    require_capture_environment!();
    let dir = tempfile::tempdir()?;
    let pki = TestPki::new()?;
    let cgroup = TestCgroup::new()?;
    let spool = dir.path().join("spool");
    fs::create_dir(&spool)?;
    let lock = fs::File::create(spool.join("lock"))?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)?;
    let e = usage_error(&[
        "--target-cgroup",
        cgroup.path().to_str().context("path")?,
        "--collector",
        "https://127.0.0.1:4317",
        "--collector-ca",
        &pki.ca().display().to_string(),
        "--spool-dir",
        spool.to_str().context("path")?,
    ])?;
    assert!(e.contains("--spool-dir") && e.contains("in use"), "{e}");
    Ok(())
}
