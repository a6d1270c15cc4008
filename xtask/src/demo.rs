//! `cargo xtask demo`: capture a bundled server in a fresh cgroup, show what was captured and
//! check the three promises a newcomer cares about: the exchanges are there, the secrets are
//! not, and a process outside the cgroup was left alone.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use capture_e2e::{
    ChildProcess, Daemon, PythonServer, TestCgroup, curl, daemon_binary, har, missing_capabilities,
    run as run_cmd,
};
use serde_json::Value;

const TOKEN: &str = "demo-secret-token";
const SESSION: &str = "demo-session-secret";
const TIMEOUT: Duration = Duration::from_secs(30);
/// Bodies longer than this are shortened when printed.
const SHOW_BODY_CHARS: usize = 240;

pub fn run(root: &Path) -> Result<()> {
    if let Some(reason) = missing_capabilities() {
        bail!(
            "the demo loads eBPF programs and creates a cgroup: {reason} (try `sudo -E cargo xtask demo`)"
        );
    }
    let binary = daemon_binary(root)?;

    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    // A second server outside the cgroup, for the process that must not be captured.
    let bystander_server = PythonServer::start(None)?;
    println!("cgroup   {} (id {})", cgroup.path().display(), cgroup.id()?);
    println!(
        "server   tests/fixtures/http_server.py, pid {} in the cgroup, {}",
        server.pid(),
        server.base_url()
    );

    let daemon = Daemon::builder()
        .binary(&binary)
        .target_cgroup(&cgroup)
        .start()?;
    println!(
        "daemon   {} --target-cgroup {} (pid {}, metrics http://{}/metrics)",
        binary.display(),
        cgroup.path().display(),
        daemon.pid(),
        daemon.metrics_addr()
    );

    // The bystander runs at the same time as the captured client.
    let marker = capture_e2e::unique_marker("demo-outside-marker");
    let mut bystander = curl(None);
    bystander
        .arg(format!("{}/{marker}", bystander_server.base_url()))
        .stdout(Stdio::null());
    let mut bystander = ChildProcess::spawn(&mut bystander, "curl outside the cgroup")?;

    let base = server.base_url();
    let secrets = [
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        "-H",
        &format!("Cookie: session={SESSION}"),
    ]
    .map(String::from);
    let mut client = curl(None);
    client
        .args(&secrets)
        .arg(format!("{base}/json?demo=1"))
        .args(["--next", "-sS"])
        .args(&secrets)
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"order":42,"items":["tea","scones"]}"#,
        ])
        .arg(format!("{base}/echo"))
        .args(["--next", "-sS", "--compressed"])
        .args(&secrets)
        .arg(format!("{base}/gzip"))
        .stdout(Stdio::null());
    println!(
        "client   curl: GET /json, POST /echo (JSON), GET /gzip, with Authorization and Cookie headers"
    );
    println!(
        "outside  curl (not in the cgroup): GET {}/{marker}\n",
        bystander_server.base_url()
    );
    run_cmd(&mut client, TIMEOUT)?;
    let bystander_status = bystander
        .wait_timeout(TIMEOUT)?
        .context("the outside curl did not finish")?;
    if !bystander_status.success() {
        bail!("the outside curl failed: {bystander_status}");
    }

    let waited = daemon.wait_for_exchanges(3, Duration::from_secs(10));
    let done = daemon.finish()?;
    if let Err(err) = waited {
        eprintln!("{err:#}");
    }

    for (i, entry) in done.exchanges.iter().enumerate() {
        println!(
            "--- exchange {}: {} {} -> {} (redacted: {}) ---",
            i + 1,
            har::str_at(entry, "/request/method").unwrap_or("?"),
            har::path(entry).unwrap_or("?"),
            har::i64_at(entry, "/response/status").unwrap_or_default(),
            har::redacted(entry).join(", ")
        );
        println!("{}", pretty_in_har_order(&shorten_bodies(entry), 0));
    }
    println!();

    let lost = done.metrics.sum("capture_kernel_events_lost_total")
        + done.metrics.sum("capture_gap_bytes_total");
    let checks = [
        (
            done.exchanges.len() == 3,
            format!("{} exchanges captured (want 3)", done.exchanges.len()),
        ),
        (
            !done.output.contains(TOKEN),
            format!(
                "{TOKEN} {} in output",
                if done.output.contains(TOKEN) {
                    "FOUND"
                } else {
                    "not found"
                }
            ),
        ),
        (
            !done.output.contains(SESSION),
            format!(
                "{SESSION} {} in output",
                if done.output.contains(SESSION) {
                    "FOUND"
                } else {
                    "not found"
                }
            ),
        ),
        (
            !done.output.contains(&marker),
            format!(
                "outside process's marker {marker} {} in output",
                if done.output.contains(&marker) {
                    "FOUND"
                } else {
                    "not found"
                }
            ),
        ),
        (
            lost == 0.0,
            format!("kernel events lost + gap bytes: {lost} (want 0)"),
        ),
        (
            done.status.success(),
            format!("daemon exit on SIGTERM: {}", done.status),
        ),
    ];
    let mut failed = 0;
    for (ok, what) in &checks {
        println!("{} {what}", if *ok { "ok  " } else { "FAIL" });
        failed += usize::from(!ok);
    }
    if failed > 0 {
        bail!(
            "demo: {failed} check(s) failed; daemon log:\n{}",
            done.stderr
        );
    }
    println!(
        "\ndemo passed: {} exchanges captured, secrets redacted, outside process not captured",
        done.exchanges.len()
    );
    Ok(())
}

/// The entry with `content.text` / `postData.text` cut to [`SHOW_BODY_CHARS`].
fn shorten_bodies(entry: &Value) -> Value {
    let mut entry = entry.clone();
    for pointer in ["/request/postData/text", "/response/content/text"] {
        if let Some(Value::String(text)) = entry.pointer_mut(pointer)
            && text.chars().count() > SHOW_BODY_CHARS
        {
            let total = text.len();
            let kept: String = text.chars().take(SHOW_BODY_CHARS).collect();
            *text = format!("{kept}... ({total} bytes)");
        }
    }
    entry
}

/// HAR's own field order; `serde_json::Value` sorts keys, which reads badly (`_capture` first).
const HAR_ORDER: &[&str] = &[
    "startedDateTime",
    "time",
    "request",
    "response",
    "method",
    "url",
    "status",
    "statusText",
    "httpVersion",
    "cookies",
    "headers",
    "name",
    "value",
    "queryString",
    "postData",
    "content",
    "size",
    "mimeType",
    "text",
    "encoding",
    "_encoding",
    "redirectURL",
    "headersSize",
    "bodySize",
    "cache",
    "timings",
    "serverIPAddress",
    "connection",
    "_capture",
    "workload",
    "conn",
    "src",
    "dst",
    "role",
    "pid",
    "protocol",
    "redacted",
    "truncated",
    "original_size",
    "incomplete",
    "_trailers",
];

/// Pretty JSON with object keys in [`HAR_ORDER`] (unknown keys after, alphabetically).
fn pretty_in_har_order(value: &Value, indent: usize) -> String {
    let pad = |n: usize| "  ".repeat(n);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    HAR_ORDER.iter().position(|o| o == k).unwrap_or(usize::MAX),
                    k.as_str(),
                )
            });
            // Small flat objects such as `{"name": .., "value": ..}` fit on one line.
            if map.len() <= 3 && map.values().all(|v| !v.is_object() && !v.is_array()) {
                let inline: Vec<String> = keys
                    .iter()
                    .map(|k| format!("{}: {}", Value::String((*k).clone()), map[*k]))
                    .collect();
                let inline = format!("{{ {} }}", inline.join(", "));
                if inline.len() <= 100 {
                    return inline;
                }
            }
            let fields: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}{}: {}",
                        pad(indent + 1),
                        Value::String((*k).clone()),
                        pretty_in_har_order(&map[*k], indent + 1)
                    )
                })
                .collect();
            format!("{{\n{}\n{}}}", fields.join(",\n"), pad(indent))
        }
        Value::Array(items) if !items.is_empty() => {
            let items: Vec<String> = items
                .iter()
                .map(|v| format!("{}{}", pad(indent + 1), pretty_in_har_order(v, indent + 1)))
                .collect();
            format!("[\n{}\n{}]", items.join(",\n"), pad(indent))
        }
        other => other.to_string(),
    }
}
