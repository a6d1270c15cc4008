//! Body redaction end to end: the real daemon (real eBPF) captures curl logins (JSON, form,
//! multipart) to a Python echo server in a fresh cgroup, so every credential travels in the
//! request body and back in the response body. The JSONL output and what the real collector
//! stored hold the marker, never the secret, and `_capture.redacted` names each field.
//!
//! Needs root and cgroup v2 (skips loudly otherwise, fails under `CI=true`), a built daemon
//! and a built collector (`cargo build -p capture-daemon -p capture-collector`, or
//! `CAPTURE_DAEMON_BIN` / `CAPTURE_COLLECTOR_BIN`).

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use capture_e2e::har::{i64_at, redacted, request_body, response_body, str_at};
use capture_e2e::{
    Collector, Daemon, PythonServer, TestCgroup, TestPki, capture_environment_ready, curl, run,
    unique_marker,
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

/// The entry whose request target is `path`.
fn entry_for<'e>(entries: &'e [Value], path: &str) -> Result<&'e Value> {
    entries
        .iter()
        .find(|e| {
            e.pointer("/request/url")
                .and_then(Value::as_str)
                .is_some_and(|u| u.ends_with(path))
        })
        .with_context(|| format!("no exchange for {path}"))
}

/// The `body:` entries of `_capture.redacted`, sorted.
fn body_fields(entry: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = redacted(entry)
        .into_iter()
        .filter(|n| n.starts_with("body:"))
        .collect();
    names.sort_unstable();
    names
}

#[test]
fn login_bodies_are_redacted_in_the_output_and_at_the_collector() -> Result<()> {
    require_capture_environment!();
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
            "--collector",
            &collector.url(),
            "--collector-ca",
            &pki.ca().display().to_string(),
            "--token-file",
            &token_file.display().to_string(),
            "--export-batch-max-delay",
            "100ms",
        ])
        .start()?;

    let base = server.base_url();
    let json_pw = unique_marker("jsonpw");
    let json_token = unique_marker("jsontok");
    let form_pw = unique_marker("formpw");
    let form_secret = unique_marker("formsecret");
    let multipart_pw = unique_marker("mppw");
    let header_key = unique_marker("hdrkey");
    let query_sig = unique_marker("qsig");
    let secrets = [
        &json_pw,
        &json_token,
        &form_pw,
        &form_secret,
        &multipart_pw,
        &header_key,
        &query_sig,
    ];

    // JSON: nested, with an escaped key; echoed back by the server (same Content-Type).
    let json_login = format!(
        r#"{{"user":"alice","password":"{json_pw}","device":{{"pass\u0077ord":"{json_pw}","name":"laptop"}},"tokens":[{{"refresh_token":"{json_token}"}}]}}"#
    );
    run(
        curl(Some(&cgroup))
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", &json_login])
            .arg(format!("{base}/echo?kind=json"))
            .args(["-o", "/dev/null"]),
        RUN_TIMEOUT,
    )?;
    // Form, as a browser posts a login form (curl -d sends x-www-form-urlencoded).
    let form_login =
        format!("username=alice&password={form_pw}&Client-Secret={form_secret}&next=%2Fhome");
    run(
        curl(Some(&cgroup))
            .args(["-d", &form_login])
            .arg(format!("{base}/echo?kind=form"))
            .args(["-o", "/dev/null"]),
        RUN_TIMEOUT,
    )?;
    // Multipart: a form field and a file part with another name.
    let upload = dir.path().join("notes.txt");
    fs::write(&upload, "password=this-file-is-kept\n")?;
    run(
        curl(Some(&cgroup))
            .args(["-F", "user=alice"])
            .args(["-F", &format!("password={multipart_pw}")])
            .args(["-F", &format!("notes=@{}", upload.display())])
            .arg(format!("{base}/echo?kind=multipart"))
            .args(["-o", "/dev/null"]),
        RUN_TIMEOUT,
    )?;
    // The default credential header and query parameter.
    run(
        curl(Some(&cgroup))
            .args(["-H", &format!("X-Api-Key: {header_key}")])
            .arg(format!("{base}/json?X-Amz-Signature={query_sig}&page=2"))
            .args(["-o", "/dev/null"]),
        RUN_TIMEOUT,
    )?;

    let n = 4;
    daemon.wait_for_exchanges(n, DELIVERY_TIMEOUT)?;
    wait_for(DELIVERY_TIMEOUT, "every exchange at the collector", || {
        Ok(collector.exported_entries("acme")?.len() >= n)
    })?;
    let done = daemon.finish()?;
    done.assert_clean()?;
    assert_eq!(done.exchanges.len(), n, "{}", done.output);

    for secret in secrets {
        assert!(
            !done.output.contains(secret.as_str()),
            "secret {secret} in the output:\n{}",
            done.output
        );
        assert!(
            !done.stderr.contains(secret.as_str()),
            "secret {secret} in the daemon log"
        );
    }
    let exported = collector.export_har("acme")?;
    for secret in secrets {
        assert!(
            !exported.contains(secret.as_str()),
            "secret {secret} stored by the collector"
        );
    }
    // The collector stored what the JSONL sink wrote.
    let stored = collector.exported_entries("acme")?;
    for line in done.output.lines() {
        assert!(stored.iter().any(|s| s == line), "not stored: {line:.200}");
    }

    let entries = &done.exchanges;
    let json = entry_for(entries, "/echo?kind=json")?;
    let want_json = json_login
        .replace(&json_pw, "\u{0}")
        .replace(&json_token, "\u{0}")
        .replace("\"\u{0}\"", "\"[REDACTED]\"");
    assert_eq!(String::from_utf8(request_body(json)?)?, want_json);
    assert_eq!(String::from_utf8(response_body(json)?)?, want_json);
    assert_eq!(body_fields(json), ["body:password", "body:refresh_token"]);
    // Sizes are the captured ones, before redaction.
    assert_eq!(
        i64_at(json, "/response/content/size")?,
        json_login.len() as i64
    );
    assert_eq!(i64_at(json, "/response/bodySize")?, json_login.len() as i64);
    assert_eq!(
        i64_at(json, "/request/postData/_size")?,
        json_login.len() as i64
    );

    let form = entry_for(entries, "/echo?kind=form")?;
    assert_eq!(
        String::from_utf8(request_body(form)?)?,
        "username=alice&password=%5BREDACTED%5D&Client-Secret=%5BREDACTED%5D&next=%2Fhome"
    );
    assert_eq!(
        str_at(form, "/request/postData/mimeType")?,
        "application/x-www-form-urlencoded"
    );
    assert_eq!(body_fields(form), ["body:client_secret", "body:password"]);

    let multipart = entry_for(entries, "/echo?kind=multipart")?;
    let sent = String::from_utf8(request_body(multipart)?)?;
    assert!(
        sent.contains("name=\"password\"\r\n\r\n[REDACTED]\r\n--"),
        "{sent}"
    );
    assert!(sent.contains("password=this-file-is-kept"), "{sent}");
    assert!(sent.contains("name=\"user\"\r\n\r\nalice\r\n--"), "{sent}");
    assert_eq!(body_fields(multipart), ["body:password"]);

    let plain = entry_for(entries, "/json?page=2")?;
    let listed = redacted(plain);
    for name in ["query:x-amz-signature", "x-api-key"] {
        assert!(listed.contains(&name), "{name} not in {listed:?}");
    }
    assert!(body_fields(plain).is_empty());
    Ok(())
}

/// `--no-default-body-redaction` with one configured field: only that field goes.
#[test]
fn defaults_off_keeps_passwords_and_configured_fields_still_go() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--no-default-body-redaction", "--redact-body-field", "otp"])
        .start()?;
    let password = unique_marker("kept-password");
    let otp = unique_marker("otp");
    let body = format!(r#"{{"password":"{password}","OTP":"{otp}"}}"#);
    run(
        curl(Some(&cgroup))
            .args(["-H", "Content-Type: application/json"])
            .args(["--data-binary", &body])
            .arg(format!("{}/echo", server.base_url()))
            .args(["-o", "/dev/null"]),
        RUN_TIMEOUT,
    )?;
    daemon.wait_for_exchanges(1, DELIVERY_TIMEOUT)?;
    let done = daemon.finish()?;
    done.assert_clean()?;
    assert!(!done.output.contains(&otp), "{}", done.output);
    let entry = &done.exchanges[0];
    let want = format!(r#"{{"password":"{password}","OTP":"[REDACTED]"}}"#);
    assert_eq!(String::from_utf8(request_body(entry)?)?, want);
    assert_eq!(String::from_utf8(response_body(entry)?)?, want);
    assert_eq!(body_fields(entry), ["body:otp"]);
    Ok(())
}
