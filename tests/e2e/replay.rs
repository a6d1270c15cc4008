//! Replay and diff end to end: the real daemon captures traffic to the JSON service in a
//! cgroup; `capture replay` sends it to a fresh server, which logs what it received; `capture
//! diff` compares replays against version 1 and version 2.
//!
//! Needs root and cgroup v2 (skips loudly otherwise, fails under `CI=true`), a built daemon and
//! a built `capture` (`cargo build -p capture-daemon -p capture-cli`, or `CAPTURE_DAEMON_BIN` /
//! `CAPTURE_CLI_BIN`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use capture_e2e::har::{path, redacted};
use capture_e2e::{
    Daemon, JsonService, TestCgroup, capture_environment_ready, cli_binary, curl, run,
    run_unchecked, workspace_root,
};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests of the rate check, on top of the five special ones.
const PLAIN_GETS: u16 = 20;
const RATE: f64 = 10.0;

macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

/// Captures, with the real daemon, the JSON service (version 1, in a cgroup) answering: a GET
/// with `Authorization` and a `token` query parameter, a GET with `X-Api-Key`, a POST, a
/// DELETE, a GET with a `Cookie`, and `PLAIN_GETS` plain GETs. Returns the daemon's JSONL.
fn capture_traffic(secrets: &Secrets) -> Result<String> {
    let cgroup = TestCgroup::new()?;
    let service = JsonService::start(Some(&cgroup), 1)?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--redact-header", "x-api-key", "--redact-query", "token"])
        .start()?;
    let base = service.base_url();
    let get = |args: &[&str]| -> Result<()> {
        run(curl(None).args(args), RUN_TIMEOUT)?;
        Ok(())
    };
    get(&[
        "-H",
        &format!("Authorization: Bearer {}", secrets.recorded),
        &format!("{base}/items/1?token={}&page=2", secrets.recorded),
    ])?;
    get(&[
        "-H",
        &format!("X-Api-Key: {}", secrets.recorded),
        &format!("{base}/items/2"),
    ])?;
    get(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        "{\"name\":\"n\"}",
        &format!("{base}/items"),
    ])?;
    get(&["-X", "DELETE", &format!("{base}/items/3")])?;
    get(&[
        "-H",
        &format!("Cookie: s={}", secrets.recorded),
        &format!("{base}/items/4"),
    ])?;
    let urls: Vec<String> = (0..PLAIN_GETS)
        .map(|i| format!("{base}/items/{}", 100 + i))
        .collect();
    let mut many = curl(None);
    for url in &urls {
        many.args(["-o", "/dev/null", url]);
    }
    run(&mut many, RUN_TIMEOUT)?;
    let total = 5 + usize::from(PLAIN_GETS);
    daemon.wait_for_exchanges(total, WRITE_TIMEOUT)?;
    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), total, "{}", done.stderr);
    // The capture redacted what the replay must put back.
    let first = &done.exchanges[0];
    assert_eq!(path(first)?, "/items/1?page=2");
    assert_eq!(redacted(first), ["authorization", "query:token"]);
    assert!(
        !done.output.contains(&secrets.recorded),
        "a secret was captured"
    );
    done.assert_clean()?;
    Ok(done.output)
}

struct Secrets {
    /// What the recorded client sent (redacted by the capture).
    recorded: String,
    /// What the replay injects: from the environment (header and query) and a file.
    env_header: String,
    env_query: String,
    file_key: String,
}

fn replay(
    cli: &Path,
    input: &Path,
    target: &str,
    output: &Path,
    extra: &[&str],
    s: &Secrets,
    key_file: &Path,
) -> Result<std::process::Output> {
    let mut cmd = Command::new(cli);
    cmd.arg("replay")
        .arg("--input")
        .arg(input)
        .args(["--target", target])
        .arg("--output")
        .arg(output)
        .args(["--credential", "authorization=env:E2E_REPLAY_AUTH"])
        .args(["--credential", "query:token=env:E2E_REPLAY_QUERY"])
        .arg("--credential")
        .arg(format!("x-api-key=file:{}", key_file.display()))
        .args(extra)
        .env("E2E_REPLAY_AUTH", &s.env_header)
        .env("E2E_REPLAY_QUERY", &s.env_query);
    run_unchecked(&mut cmd, RUN_TIMEOUT)
}

fn lines(path: &Path) -> Result<Vec<Value>> {
    fs::read_to_string(path)?
        .lines()
        .map(|l| serde_json::from_str(l).context("output line"))
        .collect()
}

#[test]
fn replay_injects_credentials_refuses_unsafe_methods_and_keeps_the_rate() -> Result<()> {
    require_capture_environment!();
    let cli = cli_binary(&workspace_root())?;
    let secrets = Secrets {
        recorded: "recorded-secret-7f3a".into(),
        env_header: "Bearer from-env-91c2".into(),
        env_query: "query from env&=5d".into(),
        file_key: "file-key-4be8".into(),
    };
    let captured = capture_traffic(&secrets)?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("captured.jsonl");
    fs::write(&input, &captured)?;
    let key_file = dir.path().join("api-key");
    fs::write(&key_file, format!("{}\n", secrets.file_key))?;

    let target = JsonService::start(None, 1)?;
    let output = dir.path().join("replayed.jsonl");
    let out = replay(
        &cli,
        &input,
        &target.base_url(),
        &output,
        &["--rate", "10", "--routing-key", "sandbox-1"],
        &secrets,
        &key_file,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let total = 5 + usize::from(PLAIN_GETS);
    assert_eq!(
        stderr.trim(),
        format!(
            "capture replay: {total} requests: missing_credential 1, sent {}, skipped 3, unsafe_method 2",
            total - 3
        )
    );

    // What the server received: only safe methods, credentials from env and file.
    let received = target.received()?;
    assert_eq!(received.len(), total - 3, "{received:#?}");
    assert!(received.iter().all(|r| r.method == "GET"), "{received:#?}");
    assert!(
        !received.iter().any(|r| r.path == "/items/4"),
        "sent without its cookie"
    );
    let first = received
        .iter()
        .find(|r| r.path.starts_with("/items/1?"))
        .context("/items/1")?;
    assert_eq!(first.path, "/items/1?page=2&token=query+from+env%26%3D5d");
    assert_eq!(
        first.header("authorization"),
        Some(secrets.env_header.as_str())
    );
    assert_eq!(
        first.header("host"),
        Some(target.addr().to_string().as_str())
    );
    assert_eq!(first.header("baggage"), Some("sd-routing-key=sandbox%2D1"));
    let second = received
        .iter()
        .find(|r| r.path == "/items/2")
        .context("/items/2")?;
    assert_eq!(second.header("x-api-key"), Some(secrets.file_key.as_str()));
    assert_eq!(second.header("authorization"), None);

    // The rate: the plain GETs (sent in input order) leave one every 1/RATE s.
    let times: Vec<f64> = received.iter().map(|r| r.t).collect();
    let span = times.last().copied().unwrap_or(0.0) - times.first().copied().unwrap_or(0.0);
    #[expect(clippy::cast_precision_loss, reason = "a few dozen requests")]
    let expected = (received.len() - 1) as f64 / RATE;
    assert!(
        (span - expected).abs() <= 0.1 * expected,
        "{} requests in {span:.3} s, expected {expected:.3} s ± 10 %",
        received.len()
    );

    // The output: one entry per input entry, verdicts and injected names, no secret.
    let text = fs::read_to_string(&output)?;
    for secret in [
        &secrets.env_header,
        &secrets.file_key,
        "from-env",
        "query+from",
    ] {
        assert!(!text.contains(secret), "output holds a credential");
        assert!(!stderr.contains(secret), "stderr holds a credential");
    }
    let entries = lines(&output)?;
    assert_eq!(entries.len(), total);
    let verdicts: Vec<(&str, Option<&str>)> = entries
        .iter()
        .map(|e| {
            (
                e["_replay"]["verdict"].as_str().unwrap_or(""),
                e["_replay"]["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        verdicts[..5],
        [
            ("sent", None),
            ("sent", None),
            ("skipped", Some("unsafe_method")),
            ("skipped", Some("unsafe_method")),
            ("skipped", Some("missing_credential")),
        ]
    );
    assert_eq!(
        entries[0]["_replay"]["injected"],
        serde_json::json!(["authorization", "query:token"])
    );
    assert_eq!(
        entries[1]["_replay"]["injected"],
        serde_json::json!(["x-api-key"])
    );
    assert_eq!(
        entries[0]["request"]["url"],
        format!("{}/items/1?page=2", target.base_url())
    );
    assert_eq!(entries[0]["response"]["status"], 200);
    Ok(())
}

#[test]
fn diff_of_replays_shows_the_change_red_and_the_volatile_fields_green() -> Result<()> {
    require_capture_environment!();
    let cli = cli_binary(&workspace_root())?;
    let secrets = Secrets {
        recorded: "recorded-secret-c0de".into(),
        env_header: "Bearer e".into(),
        env_query: "q".into(),
        file_key: "k".into(),
    };
    let captured = capture_traffic(&secrets)?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("captured.jsonl");
    fs::write(&input, &captured)?;
    let key_file = dir.path().join("api-key");
    fs::write(&key_file, "k\n")?;
    let v1 = JsonService::start(None, 1)?;
    let v2 = JsonService::start(None, 2)?;
    let mut files = Vec::new();
    for (name, service) in [("a1", &v1), ("a2", &v1), ("b", &v2)] {
        let output = dir.path().join(format!("{name}.jsonl"));
        let out = replay(
            &cli,
            &input,
            &service.base_url(),
            &output,
            &["--concurrency", "4"],
            &secrets,
            &key_file,
        )?;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        files.push(output);
    }
    let report_path = dir.path().join("report.json");
    let out = run_unchecked(
        Command::new(&cli)
            .arg("diff")
            .arg("--baseline")
            .arg(&files[0])
            .arg("--candidate")
            .arg(&files[2])
            .arg("--noise")
            .arg(&files[1])
            .arg("--json")
            .arg(&report_path)
            .args(["--color", "never"]),
        RUN_TIMEOUT,
    )?;
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{terminal}");
    let report: Value = serde_json::from_str(&fs::read_to_string(&report_path)?)?;
    let fields: Vec<(&str, &str)> = report["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["endpoint"]["route"] == "/items/{id}")
        .flat_map(|e| e["fields"].as_array().into_iter().flatten())
        .map(|f| {
            (
                f["path"].as_str().unwrap_or(""),
                f["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let sent = 2 + usize::from(PLAIN_GETS);
    assert_eq!(report["summary"]["pairs"]["red"], sent, "{terminal}");
    for expected in [
        ("body.price", "red"),
        ("body.currency", "yellow"),
        ("body.served_at", "green"),
        ("body.request_id", "green"),
        ("body.tags", "green"),
    ] {
        assert!(
            fields.contains(&expected),
            "{expected:?} not in {fields:?}\n{terminal}"
        );
    }
    assert!(terminal.starts_with("RED  "), "{terminal}");
    assert!(terminal.contains("body.price  replace"), "{terminal}");

    // A/A against itself: nothing red or yellow, exit 0 even with --fail-on yellow.
    let out = run_unchecked(
        Command::new(&cli)
            .arg("diff")
            .arg("--baseline")
            .arg(&files[0])
            .arg("--candidate")
            .arg(&files[1])
            .arg("--noise")
            .arg(&files[1])
            .args(["--fail-on", "yellow", "--color", "never"]),
        RUN_TIMEOUT,
    )?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Bad input: exit 2.
    let out = run_unchecked(
        Command::new(&cli)
            .arg("diff")
            .arg("--baseline")
            .arg(&key_file)
            .arg("--candidate")
            .arg(&files[2]),
        RUN_TIMEOUT,
    )?;
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}
