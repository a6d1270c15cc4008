//! `/metrics` as Prometheus reads it: the real daemon, capturing and exporting to the real
//! collector (so every subsystem's series are there: capture path, kernel counters, control,
//! exporter), scraped and checked by `promtool check metrics` (Debian's `prometheus` package,
//! installed by `cargo xtask test`). Also checks the series names, types and labels that
//! dashboards and the docs rely on.
//!
//! Needs root and cgroup v2, a built daemon and collector, and promtool (all fail under `CI=true`
//! when missing, skip loudly otherwise).

use std::fs;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use capture_e2e::{
    Collector, Daemon, PythonServer, TestCgroup, TestPki, capture_environment_ready, curl,
    running_in_ci,
};

#[test]
fn metrics_pass_promtool_and_keep_their_names_types_and_labels() -> Result<()> {
    if !capture_environment_ready()? {
        return Ok(());
    }
    if Command::new("promtool").arg("--version").output().is_err() {
        if running_in_ci() {
            bail!("promtool is missing (Debian package prometheus; cargo xtask test installs it)");
        }
        eprintln!("SKIPPED: promtool is missing (apt-get install prometheus)");
        return Ok(());
    }
    let pki = TestPki::new()?;
    let collector = Collector::start(&pki)?;
    let token = collector.create_token("acme")?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{token}\n"))?;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args([
            "--collector".to_owned(),
            collector.url(),
            "--collector-ca".to_owned(),
            pki.ca().display().to_string(),
            "--token-file".to_owned(),
            token_file.display().to_string(),
            "--export-batch-max-delay".to_owned(),
            "100ms".to_owned(),
        ])
        .start()?;
    let status = curl(Some(&cgroup))
        .arg(format!("{}/json", server.base_url()))
        .stdout(Stdio::null())
        .status()?;
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon
        .metrics()?
        .get("capture_export_exchanges_acked_total")
        .unwrap_or_default()
        < 1.0
    {
        if Instant::now() > deadline {
            bail!("the exchange was not acknowledged within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let response = daemon.get("/metrics")?;
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).context("/metrics is not UTF-8")?;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    promtool
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = promtool.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- /metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // One series of each subsystem, with its type and labels as documented.
    for (family, kind) in [
        ("capture_events_total", "counter"),
        ("capture_exchanges_total", "counter"),
        ("capture_connections_tracked", "gauge"),
        ("capture_parse_errors_total", "counter"),
        ("capture_kernel_events_lost_total", "counter"),
        ("capture_target_cgroups", "gauge"),
        ("capture_paused", "gauge"),
        ("capture_export_exchanges_acked_total", "counter"),
        ("capture_export_dropped_total", "counter"),
        ("capture_export_last_success_timestamp_seconds", "gauge"),
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {family} {kind}\n")),
            "{family} is not a {kind}:\n{text}"
        );
    }
    for series in [
        "capture_exchanges_total{protocol=\"h1\"} 1\n",
        "capture_connections_evicted_total{reason=\"idle\"} ",
        "capture_parse_errors_total{protocol=\"h2\",reason=\"",
        "capture_h2_limit_hits_total{limit=\"",
        "capture_h2_connections_total{detected=\"preface\"} 0\n",
        "capture_export_dropped_total{reason=\"queue_full\"} 0\n",
        "capture_target_cgroups 1\n",
    ] {
        assert!(text.contains(series), "{series:?} missing:\n{text}");
    }
    let finished = daemon.finish()?;
    finished.assert_clean()?;
    assert_eq!(finished.exchanges.len(), 1);
    Ok(())
}
