//! `cargo xtask demo diff`: record → replay → diff, for real.
//!
//! Version 1 of a small JSON service (tests/fixtures/json_service.py) runs in a fresh cgroup;
//! the daemon captures curl's traffic to it. `capture replay` sends the captured requests twice
//! to version 1 (the A/A runs that teach the noise) and once to version 2, which has a
//! deliberate change (prices 10 % higher, a new `currency` field). `capture diff` shows it: the
//! price change red, the new field yellow, the timestamps, UUIDs and shuffled arrays of both
//! versions green. The files stay in `target/demo-diff/` to look at.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use capture_e2e::{
    Daemon, JsonService, TestCgroup, cli_binary, curl, daemon_binary, missing_capabilities,
    run as run_cmd, run_unchecked,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);
const ITEMS: u32 = 12;

pub fn run(root: &Path) -> Result<()> {
    if let Some(reason) = missing_capabilities() {
        bail!(
            "the demo loads eBPF programs and creates a cgroup: {reason} (try `sudo -E cargo xtask demo diff`)"
        );
    }
    let daemon_bin = daemon_binary(root)?;
    let cli = cli_binary(root)?;
    let dir = root.join("target/demo-diff");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    // 1. Record: version 1 in a cgroup, the real daemon capturing it.
    let cgroup = TestCgroup::new()?;
    let recorded = JsonService::start(Some(&cgroup), 1)?;
    let daemon = Daemon::builder()
        .binary(&daemon_bin)
        .target_cgroup(&cgroup)
        .start()?;
    println!(
        "record   json_service.py v1 (pid {}) in cgroup {}, captured by {}",
        recorded.pid(),
        cgroup.path().display(),
        daemon_bin.display()
    );
    let base = recorded.base_url();
    let mut client = curl(None);
    for n in 1..=ITEMS {
        client.args(["-o", "/dev/null", &format!("{base}/items/{n}")]);
    }
    client.args(["-o", "/dev/null", &format!("{base}/health")]);
    // `--next`: curl's -X and --data would otherwise apply to every URL above.
    client.args([
        "--next",
        "-sS",
        "-o",
        "/dev/null",
        "-X",
        "POST",
        "--data",
        "{\"name\":\"x\"}",
        &format!("{base}/items"),
    ]);
    run_cmd(&mut client, TIMEOUT)?;
    let total = usize::try_from(ITEMS)? + 2;
    let waited = daemon.wait_for_exchanges(total, Duration::from_secs(10));
    let done = daemon.finish()?;
    waited.with_context(|| format!("daemon log:\n{}", done.stderr))?;
    let captured = dir.join("captured.jsonl");
    fs::write(&captured, &done.output)?;
    println!(
        "         {} exchanges → {}\n",
        done.exchanges.len(),
        captured.display()
    );

    // 2. Replay: twice against v1, once against v2.
    let v1 = JsonService::start(None, 1)?;
    let v2 = JsonService::start(None, 2)?;
    let mut outputs = Vec::new();
    for (name, service, version) in [("v1-a", &v1, 1), ("v1-b", &v1, 1), ("v2", &v2, 2)] {
        let output = dir.join(format!("replay-{name}.jsonl"));
        let mut cmd = Command::new(&cli);
        cmd.arg("replay")
            .arg("--input")
            .arg(&captured)
            .args(["--target", &service.base_url()])
            .arg("--output")
            .arg(&output);
        println!("replay   {} (v{version})", shell(&cmd));
        let out = run_unchecked(&mut cmd, TIMEOUT)?;
        print!("         {}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("capture replay failed: {}", out.status);
        }
        outputs.push(output);
    }

    // 3. Diff: baseline v1, candidate v2, noise from the second v1 run.
    let report_path = dir.join("report.json");
    let mut cmd = Command::new(&cli);
    cmd.arg("diff")
        .arg("--baseline")
        .arg(&outputs[0])
        .arg("--candidate")
        .arg(&outputs[2])
        .arg("--noise")
        .arg(&outputs[1])
        .arg("--json")
        .arg(&report_path)
        .args(["--color", "always"]);
    println!("\ndiff     {}\n", shell(&cmd));
    let out = run_unchecked(&mut cmd, TIMEOUT)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    println!();

    let report: Value = serde_json::from_str(&fs::read_to_string(&report_path)?)?;
    let verdict_of = |path: &str| -> String {
        report["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["fields"].as_array().into_iter().flatten())
            .find(|f| f["path"] == path)
            .and_then(|f| f["verdict"].as_str())
            .unwrap_or("absent")
            .to_owned()
    };
    let checks = [
        (
            out.status.code() == Some(1),
            format!(
                "capture diff exit code {:?} (want 1: something is red)",
                out.status.code()
            ),
        ),
        (
            verdict_of("body.price") == "red",
            format!(
                "the deliberate change body.price is {}",
                verdict_of("body.price")
            ),
        ),
        (
            verdict_of("body.currency") == "yellow",
            format!(
                "the new field body.currency is {}",
                verdict_of("body.currency")
            ),
        ),
        (
            verdict_of("body.served_at") == "green",
            format!(
                "the timestamp body.served_at is {}",
                verdict_of("body.served_at")
            ),
        ),
        (
            verdict_of("body.request_id") == "green",
            format!(
                "the UUID body.request_id is {}",
                verdict_of("body.request_id")
            ),
        ),
        (
            verdict_of("body.tags") == "green",
            format!(
                "the shuffled array body.tags is {}",
                verdict_of("body.tags")
            ),
        ),
        (
            verdict_of("body.uptime_ms") == "green",
            format!(
                "/health's body.uptime_ms is {}",
                verdict_of("body.uptime_ms")
            ),
        ),
    ];
    let mut failed = 0;
    for (ok, what) in &checks {
        println!("{} {what}", if *ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        bail!(
            "demo diff: {failed} check(s) failed; files in {}",
            dir.display()
        );
    }
    println!(
        "\ndemo diff passed: the change is red, the noise green; files in {}",
        dir.display()
    );
    Ok(())
}

/// A command as a person would type it.
fn shell(cmd: &Command) -> String {
    let program = PathBuf::from(cmd.get_program());
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    std::iter::once(name)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
