//! HTTP/2 and gRPC end to end: the real daemon with real eBPF captures a tonic gRPC client and
//! server, a hyper h2c client and server running 128 concurrent megabyte streams, curl against
//! nginx (h2c with prior knowledge), curl upgrading to h2c (`Upgrade: h2c`) against a Python
//! `h2` server, and a connection that was opened before the daemon started. Peers run in a fresh
//! cgroup per test, both ends inside it where the test says "both sides", so every exchange is
//! captured once as the client and once as the server, and both copies are checked.
//!
//! Assertions are on exact values (method, URL, status, bodies, `_grpc`, `_trailers`) and on
//! absences (credentials and their values, hop-by-hop fields, traffic from before the daemon).
//! Needs root, cgroup v2, a built daemon, nginx, curl and python3-h2 (`cargo xtask` installs
//! them); skips loudly otherwise and fails under `CI=true`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{PoisonError, RwLock, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use capture_e2e::fixtures::echo::{EchoReply, EchoRequest};
use capture_e2e::fixtures::{
    BodyDirection, ECHO_SERVICE, collect_reply, count_replies, echo_path_body, fail_message,
    grpc_script, gzip_text, h2_body, h2_path, h2_uploads, late_path, say_reply,
};
use capture_e2e::har::{
    brief, header, headers, i64_at, path, redacted, request_body, response_body, str_at,
};
use capture_e2e::{
    ChildProcess, Daemon, Finished, H2cUpgradeServer, Nginx, TestCgroup, capture_environment_ready,
    curl, free_port, nginx_body, run, run_with_pid, unique_marker, wait_for_port,
};
use prost::Message as _;
use serde_json::{Value, json};

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Exchanges are written within ~100 ms of completing; this leaves room for a busy machine.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
const START_TIMEOUT: Duration = Duration::from_secs(20);

const GRPC_ECHO: &str = env!("CARGO_BIN_EXE_grpc-echo");
const H2_PEER: &str = env!("CARGO_BIN_EXE_h2-peer");

/// Streams of the h2 load test: more than 100, all open at once on one connection.
const H2_STREAMS: u32 = 128;
/// Requests made on the connection that predates the daemon, after the daemon started.
const LATE_REQUESTS: u32 = 5;

/// The 128 × 1 MiB burst runs alone: the other tests of this binary demand zero loss, and the
/// burst's load (two daemons' worth of megabyte streams) could cost their daemons events. It
/// holds this lock for writing, every other test for reading.
static BURST: RwLock<()> = RwLock::new(());

/// Returns early from a test (after a loud notice) when root/cgroup v2 are missing and CI is not set.
macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

/// A Rust peer (`grpc-echo` / `h2-peer`) serving on a free port, inside `cgroup`.
struct RustServer {
    process: ChildProcess,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RustServer {
    fn start(binary: &str, cgroup: Option<&TestCgroup>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut cmd = match cgroup {
            Some(cgroup) => cgroup.command(binary),
            None => Command::new(binary),
        };
        cmd.args(["server", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr"))?);
        let mut process = ChildProcess::spawn(&mut cmd, binary)?;
        if let Err(err) = wait_for_port(port, START_TIMEOUT) {
            process.kill();
            let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
            return Err(err.context(format!("{binary} server did not start:\n{stderr}")));
        }
        Ok(Self {
            process,
            port,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Runs a client to completion (it checks its own answers and fails otherwise); its pid.
fn run_client(cmd: &mut Command, name: &str) -> Result<u32> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildProcess::spawn(cmd, name)?;
    let pid = child.pid();
    let status = child
        .wait_timeout(RUN_TIMEOUT)?
        .with_context(|| format!("{name} did not finish within {RUN_TIMEOUT:?}"))?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.child_mut().stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    ensure!(status.success(), "{name} failed with {status}:\n{stderr}");
    Ok(pid)
}

/// A client that has done its work (its last line on stdout says so) and keeps its connection
/// open until [`HeldClient::release`]: the daemon meets the connection while /proc still knows
/// both of its ends, so `_capture.conn` can be asserted in full.
struct HeldClient {
    process: ChildProcess,
    stdin: Option<ChildStdin>,
    stderr: tempfile::NamedTempFile,
    name: String,
}

impl HeldClient {
    fn start(cmd: &mut Command, name: &str) -> Result<Self> {
        let stderr = tempfile::NamedTempFile::new()?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.reopen()?);
        let mut process = ChildProcess::spawn(cmd, name)?;
        let lines = StdoutLines::new(&mut process)?;
        let stdin = process.child_mut().stdin.take();
        let mut client = Self {
            process,
            stdin,
            stderr,
            name: name.to_owned(),
        };
        match lines.next() {
            Some(line) if line.ends_with("as expected") => Ok(client),
            other => {
                let status = client.process.wait_timeout(Duration::from_secs(5))?;
                bail!(
                    "{name} did not finish its work ({other:?}, exit {status:?}):\n{}",
                    client.stderr_text()
                )
            }
        }
    }

    fn pid(&self) -> u32 {
        self.process.pid()
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Closes its stdin: the client closes its connection and exits, successfully.
    fn release(mut self) -> Result<()> {
        self.stdin = None;
        let status = self
            .process
            .wait_timeout(RUN_TIMEOUT)?
            .with_context(|| format!("{} did not exit", self.name))?;
        ensure!(
            status.success(),
            "{} failed with {status}:\n{}",
            self.name,
            self.stderr_text()
        );
        Ok(())
    }
}

/// The exchanges captured as `role` ("client" or "server").
fn by_role<'a>(exchanges: &'a [Value], role: &str) -> Vec<&'a Value> {
    exchanges
        .iter()
        .filter(|e| e.pointer("/_capture/conn/role").and_then(Value::as_str) == Some(role))
        .collect()
}

/// Lower-cased header names of `part`.
fn header_names(entry: &Value, part: &str) -> Vec<String> {
    headers(entry, part)
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect()
}

/// `_trailers` as (name, value) pairs.
fn trailers(entry: &Value) -> Vec<(String, String)> {
    entry
        .pointer("/_trailers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|t| {
                    Some((
                        t.get("name")?.as_str()?.to_owned(),
                        t.get("value")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What every captured HTTP/2 exchange of these tests carries: version, protocol, role, pid,
/// endpoints, nothing truncated, nothing incomplete.
fn assert_h2_meta(entry: &Value, protocol: &str, role: &str, pid: u32, port: u16) -> Result<()> {
    assert_h2_meta_with(entry, protocol, role, pid, port, true)
}

/// [`assert_h2_meta`]; `src_known: false` for a client process that may be gone before the
/// daemon looks its socket up (curl, nghttp: one connection, then exit), whose own address
/// (`src`) may then be unknown, as for HTTP/1 (the kernel reports only the peer of connect).
fn assert_h2_meta_with(
    entry: &Value,
    protocol: &str,
    role: &str,
    pid: u32,
    port: u16,
    src_known: bool,
) -> Result<()> {
    let b = brief(entry);
    assert_eq!(str_at(entry, "/request/httpVersion")?, "HTTP/2", "{b}");
    assert_eq!(str_at(entry, "/response/httpVersion")?, "HTTP/2", "{b}");
    assert_eq!(str_at(entry, "/_capture/protocol")?, protocol, "{b}");
    assert_eq!(str_at(entry, "/_capture/conn/role")?, role, "{b}");
    assert_eq!(i64_at(entry, "/_capture/pid")?, i64::from(pid), "{b}");
    assert_eq!(
        str_at(entry, "/_capture/conn/dst")?,
        format!("127.0.0.1:{port}"),
        "{b}"
    );
    match entry.pointer("/_capture/conn/src") {
        Some(Value::Null) | None if !src_known => {}
        src => assert!(
            src.and_then(Value::as_str)
                .is_some_and(|src| src.starts_with("127.0.0.1:")),
            "{b}"
        ),
    }
    assert_eq!(
        entry.pointer("/_capture/truncated"),
        Some(&json!({"request": false, "response": false})),
        "{b}"
    );
    assert!(
        entry
            .pointer("/_capture/incomplete")
            .is_none_or(Value::is_null),
        "incomplete in {b}"
    );
    Ok(())
}

/// `secrets` appear neither in the output nor in the daemon's log.
fn assert_secrets_absent(done: &Finished, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !done.output.contains(secret),
            "secret {secret} found in the output"
        );
        assert!(
            !done.stderr.contains(secret),
            "secret {secret} found in the daemon log"
        );
    }
}

/// Request fields that must be gone (and listed in `_capture.redacted`).
fn assert_redacted(entry: &Value, part: &str, names: &[&str]) {
    let kept = header_names(entry, part);
    let listed = redacted(entry);
    for name in names {
        assert!(
            !kept.iter().any(|k| k == name),
            "{part} header {name} kept: {}",
            brief(entry)
        );
        assert!(
            listed.contains(name),
            "_capture.redacted lacks {name}: {listed:?}"
        );
    }
}

/// One gRPC message as it travels in DATA frames: compressed flag, 4-byte big-endian length,
/// message (gRPC over HTTP/2, "Length-Prefixed-Message").
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut out = vec![0];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn request_frame(text: &str, count: u32) -> Vec<u8> {
    grpc_frame(
        &EchoRequest {
            text: text.into(),
            count,
        }
        .encode_to_vec(),
    )
}

fn reply_frame(text: &str, index: u32) -> Vec<u8> {
    grpc_frame(
        &EchoReply {
            text: text.into(),
            index,
        }
        .encode_to_vec(),
    )
}

/// One expected gRPC call: method, request and response bodies as stored (length-prefixed
/// messages, decompressed), grpc-status and grpc-message.
struct GrpcCall {
    method: &'static str,
    request: Vec<u8>,
    response: Vec<u8>,
    status: i64,
    message: Option<String>,
}

fn grpc_calls() -> Vec<GrpcCall> {
    let collect_texts = grpc_script::collect_texts();
    vec![
        GrpcCall {
            method: "Say",
            request: request_frame(grpc_script::SAY_TEXT, 0),
            response: reply_frame(&say_reply(grpc_script::SAY_TEXT), 0),
            status: 0,
            message: None,
        },
        GrpcCall {
            method: "Count",
            request: request_frame(grpc_script::COUNT_TEXT, grpc_script::COUNT),
            response: count_replies(grpc_script::COUNT_TEXT, grpc_script::COUNT)
                .iter()
                .zip(0..)
                .flat_map(|(text, i)| reply_frame(text, i))
                .collect(),
            status: 0,
            message: None,
        },
        GrpcCall {
            method: "Collect",
            request: collect_texts
                .iter()
                .flat_map(|text| request_frame(text, 0))
                .collect(),
            response: reply_frame(&collect_reply(&collect_texts), 3),
            status: 0,
            message: None,
        },
        GrpcCall {
            method: "Fail",
            request: request_frame(grpc_script::FAIL_TEXT, 0),
            response: Vec::new(),
            status: 5,
            message: Some(fail_message(grpc_script::FAIL_TEXT)),
        },
        // Compressed both ways (grpc-encoding: gzip): the daemon stores each message
        // decompressed, re-framed with flag 0 and its decompressed length.
        GrpcCall {
            method: "Say",
            request: request_frame(&gzip_text(), 0),
            response: reply_frame(&say_reply(&gzip_text()), 0),
            status: 0,
            message: None,
        },
    ]
}

fn assert_grpc_exchange(
    entry: &Value,
    call: &GrpcCall,
    server: &RustServer,
    role: &str,
    pid: u32,
    compressed: bool,
) -> Result<()> {
    let b = brief(entry);
    assert_h2_meta(entry, "grpc", role, pid, server.port)?;
    assert_eq!(str_at(entry, "/request/method")?, "POST", "{b}");
    assert_eq!(
        str_at(entry, "/request/url")?,
        format!(
            "http://{}/{ECHO_SERVICE}/{}",
            server.authority(),
            call.method
        ),
        "{b}"
    );
    assert_eq!(
        header(entry, "request", "content-type"),
        Some("application/grpc"),
        "{b}"
    );
    assert_eq!(i64_at(entry, "/response/status")?, 200, "{b}");
    assert_eq!(
        entry.pointer("/_grpc"),
        Some(&json!({
            "service": ECHO_SERVICE,
            "method": call.method,
            "status": call.status,
            "message": call.message,
        })),
        "{b}"
    );
    // grpc-status travels in the trailers, or in the only HEADERS frame of a trailers-only
    // response (how tonic answers an error before any message).
    let status_text = call.status.to_string();
    let status_in_trailers = trailers(entry)
        .iter()
        .any(|(n, v)| n == "grpc-status" && *v == status_text);
    let status_in_headers = header(entry, "response", "grpc-status") == Some(status_text.as_str());
    assert!(
        status_in_trailers || status_in_headers,
        "grpc-status {status_text} neither in _trailers nor in the response headers: {b}"
    );
    if call.status == 0 {
        assert_eq!(
            trailers(entry),
            [("grpc-status".to_owned(), "0".to_owned())],
            "{b}"
        );
    }
    assert_eq!(request_body(entry)?, call.request, "request body of {b}");
    assert_eq!(response_body(entry)?, call.response, "response body of {b}");
    if compressed {
        assert_eq!(
            header(entry, "request", "grpc-encoding"),
            Some("gzip"),
            "{b}"
        );
        assert_eq!(
            header(entry, "response", "grpc-encoding"),
            Some("gzip"),
            "{b}"
        );
    }
    assert_redacted(entry, "request", &["authorization", "cookie", "te"]);
    Ok(())
}

#[test]
fn grpc_unary_streaming_and_error_calls_on_both_sides() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let cgroup = TestCgroup::new()?;
    let daemon = Daemon::start(&cgroup)?;
    let server = RustServer::start(GRPC_ECHO, Some(&cgroup))?;
    let token = unique_marker("grpc-bearer-secret");
    let cookie = unique_marker("grpc-cookie-secret");
    let client = HeldClient::start(
        cgroup
            .command(GRPC_ECHO)
            .args(["client", &server.port.to_string()])
            .env("GRPC_ECHO_TOKEN", &token)
            .env("GRPC_ECHO_COOKIE", &cookie),
        "grpc-echo client",
    )?;
    let client_pid = client.pid();
    let calls = grpc_calls();
    daemon.wait_for_exchanges(2 * calls.len(), WRITE_TIMEOUT)?;
    client.release()?;

    let done = daemon.finish()?;
    assert_eq!(
        done.exchanges.len(),
        2 * calls.len(),
        "{:#?}",
        done.exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    for (role, pid) in [("client", client_pid), ("server", server.pid())] {
        let seen = by_role(&done.exchanges, role);
        // The client makes one call after the other, so each side writes them in call order.
        let methods: Vec<&str> = seen
            .iter()
            .map(|e| path(e).map(|p| p.rsplit('/').next().unwrap_or_default()))
            .collect::<Result<_>>()?;
        assert_eq!(
            methods,
            ["Say", "Count", "Collect", "Fail", "Say"],
            "{role}; the connections of all: {:?}",
            done.exchanges
                .iter()
                .map(|e| e.pointer("/_capture/conn"))
                .collect::<Vec<_>>()
        );
        for (i, (entry, call)) in seen.iter().zip(&calls).enumerate() {
            assert_grpc_exchange(entry, call, &server, role, pid, i == 4)?;
        }
        // One connection (one tonic channel) for every call.
        assert!(
            seen.iter()
                .all(|e| e.pointer("/_capture/conn") == seen[0].pointer("/_capture/conn")),
            "{role}: calls on more than one connection"
        );
    }
    assert_secrets_absent(&done, &[&token, &cookie]);
    done.assert_clean()
}

#[test]
fn h2_128_concurrent_streams_of_a_mebibyte_on_both_sides() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.write().unwrap_or_else(PoisonError::into_inner);
    let cgroup = TestCgroup::new()?;
    // 128 MiB cross the connection in about a second, captured on both ends: the ring buffer
    // holds all of it, so what is checked is the decoding of interleaved streams, not whether
    // an unoptimised daemon keeps pace (that is `cargo xtask bench`'s question). All 128
    // streams are half-way through their megabyte at once: the per-connection body budget
    // (default 16 MiB, past it bodies are cut and counted) has to hold them all.
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--ring-buffer-bytes", &(512u64 << 20).to_string()])
        .args(["--max-h2-conn-body-bytes", &(160u64 << 20).to_string()])
        .start()?;
    let server = RustServer::start(H2_PEER, Some(&cgroup))?;
    let client = HeldClient::start(
        cgroup
            .command(H2_PEER)
            .args(["load", &server.port.to_string(), &H2_STREAMS.to_string()]),
        "h2-peer load",
    )?;
    let client_pid = client.pid();
    let streams = usize::try_from(H2_STREAMS)?;
    daemon.wait_for_exchanges(2 * streams, Duration::from_secs(120))?;
    client.release()?;

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), 2 * streams);
    for (role, pid) in [("client", client_pid), ("server", server.pid())] {
        let seen = by_role(&done.exchanges, role);
        assert_eq!(seen.len(), streams, "{role}");
        let mut by_path: BTreeMap<&str, &Value> = BTreeMap::new();
        for entry in &seen {
            ensure!(
                by_path.insert(path(entry)?, entry).is_none(),
                "{role}: path captured twice: {}",
                brief(entry)
            );
        }
        for index in 0..H2_STREAMS {
            let want_path = h2_path(index);
            let entry = by_path
                .get(want_path.as_str())
                .with_context(|| format!("{role}: stream {index} ({want_path}) not captured"))?;
            let b = brief(entry);
            assert_h2_meta(entry, "h2", role, pid, server.port)?;
            assert_eq!(
                str_at(entry, "/request/url")?,
                format!("http://{}{want_path}", server.authority())
            );
            assert_eq!(
                str_at(entry, "/request/method")?,
                if h2_uploads(index) { "POST" } else { "GET" }
            );
            assert_eq!(
                header(entry, "request", "x-stream"),
                Some(index.to_string().as_str()),
                "{b}"
            );
            assert_eq!(
                entry.pointer("/request/queryString"),
                Some(&json!([{"name": "size", "value": "1048576"}])),
                "{b}"
            );
            assert_eq!(i64_at(entry, "/response/status")?, 200, "{b}");
            assert_eq!(header(entry, "response", "x-peer"), Some("h2-peer"), "{b}");
            for (direction, got) in [
                (BodyDirection::Request, request_body(entry)?),
                (BodyDirection::Response, response_body(entry)?),
            ] {
                let want = h2_body(index, direction);
                let first_difference = got.iter().zip(&want).position(|(a, b)| a != b);
                assert!(
                    got.len() == want.len() && first_difference.is_none(),
                    "{role} stream {index} {direction:?} body: {} bytes (want {}), first difference at {first_difference:?}",
                    got.len(),
                    want.len()
                );
            }
            let big = if h2_uploads(index) {
                "/_capture/original_size/request"
            } else {
                "/_capture/original_size/response"
            };
            assert_eq!(i64_at(entry, big)?, 1024 * 1024, "{b}");
        }
        assert!(
            seen.iter()
                .all(|e| e.pointer("/_capture/conn") == seen[0].pointer("/_capture/conn")),
            "{role}: streams on more than one connection"
        );
    }
    done.assert_clean()
}

/// `curl --http2-prior-knowledge` makes one request per connection: Debian's curl 7.88 cannot
/// reuse a prior-knowledge connection (curl/curl#10634, fixed in 8.0). `nghttp` adds a
/// connection with several streams, so HPACK's dynamic table is exercised between two
/// non-Rust peers too.
fn prior_knowledge_curl(cgroup: &TestCgroup) -> Command {
    let mut cmd = curl(Some(cgroup));
    cmd.arg("--http2-prior-knowledge");
    cmd
}

#[test]
fn curl_and_nghttp_against_nginx_h2c_on_both_sides() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let cgroup = TestCgroup::new()?;
    let nginx = Nginx::start_h2c(Some(&cgroup), &[])?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--redact-query", "v"])
        .start()?;

    let bearer = unique_marker("h2-bearer-secret");
    let cookie = unique_marker("h2-cookie-secret");
    let set_cookie = unique_marker("h2-setcookie-secret");
    let base = nginx.base_url();
    let post_body = r#"{"name":"capture","n":42}"#;
    // The pid of each client this test spawned, by the path prefix it asked for.
    let mut client_pids: Vec<(&str, u32)> = Vec::new();
    let (pid, out) = run_with_pid(
        prior_knowledge_curl(&cgroup).arg(format!("{base}/json?lang=en")),
        RUN_TIMEOUT,
    )?;
    client_pids.push(("/json", pid));
    assert_eq!(out.stdout, br#"{"server":"nginx"}"#);
    let (pid, out) = run_with_pid(
        prior_knowledge_curl(&cgroup)
            .args(["-X", "POST", "-H", "Content-Type: application/json"])
            .args(["--data-binary", post_body])
            .arg(format!("{base}/echo")),
        RUN_TIMEOUT,
    )?;
    client_pids.push(("/echo", pid));
    assert_eq!(out.stdout, post_body.as_bytes());
    let (pid, out) = run_with_pid(
        prior_knowledge_curl(&cgroup)
            .args(["-H", &format!("Authorization: Bearer {bearer}")])
            .args(["-H", &format!("Cookie: session={cookie}; theme=dark")])
            .args(["-H", "X-Visible: shown"])
            .arg(format!("{base}/cookie?q=visible&v={set_cookie}")),
        RUN_TIMEOUT,
    )?;
    client_pids.push(("/cookie", pid));
    assert_eq!(out.stdout, b"cookie set\n");
    let multi: Vec<String> = (1..=3).map(|i| format!("/multi/{i}?lang=en")).collect();
    let (pid, out) = run_with_pid(
        cgroup
            .command("nghttp")
            .args(["-H", "x-visible: multi"])
            .args(multi.iter().map(|p| format!("{base}{p}"))),
        RUN_TIMEOUT,
    )?;
    client_pids.push(("/multi/", pid));
    assert_eq!(out.stdout, nginx_body().repeat(3).as_bytes());
    daemon.wait_for_exchanges(12, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(
        done.exchanges.len(),
        12,
        "{:#?}",
        done.exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    for role in ["client", "server"] {
        let seen = by_role(&done.exchanges, role);
        let mut by_path: BTreeMap<&str, &Value> = BTreeMap::new();
        for entry in &seen {
            ensure!(
                by_path.insert(path(entry)?, entry).is_none(),
                "{role}: path captured twice: {}",
                brief(entry)
            );
        }
        let get = |p: &str| {
            by_path
                .get(p)
                .copied()
                .with_context(|| format!("{role}: {p} not captured: {:#?}", by_path.keys()))
        };
        for entry in &seen {
            // The client pid is that of the curl/nghttp this test spawned for the path; the
            // server is nginx.
            let pid = if role == "server" {
                nginx.pid()
            } else {
                let p = path(entry)?;
                client_pids
                    .iter()
                    .find(|(prefix, _)| p.starts_with(prefix))
                    .map(|(_, pid)| *pid)
                    .with_context(|| format!("no client spawned for {p}"))?
            };
            assert_h2_meta_with(entry, "h2", role, pid, nginx.port(), role == "server")?;
            assert!(
                header(entry, "response", "server").is_some_and(|s| s.starts_with("nginx")),
                "{}",
                brief(entry)
            );
        }

        let json_get = get("/json?lang=en")?;
        assert_eq!(str_at(json_get, "/request/method")?, "GET");
        assert_eq!(
            str_at(json_get, "/request/url")?,
            format!("{base}/json?lang=en")
        );
        assert_eq!(
            json_get.pointer("/request/queryString"),
            Some(&json!([{"name": "lang", "value": "en"}]))
        );
        assert!(
            header(json_get, "request", "user-agent").is_some_and(|s| s.starts_with("curl/")),
            "{}",
            brief(json_get)
        );
        assert_eq!(i64_at(json_get, "/response/status")?, 200);
        assert_eq!(
            header(json_get, "response", "content-type"),
            Some("application/json")
        );
        assert_eq!(response_body(json_get)?, br#"{"server":"nginx"}"#);

        let post = get("/echo")?;
        assert_eq!(str_at(post, "/request/method")?, "POST");
        assert_eq!(str_at(post, "/request/url")?, format!("{base}/echo"));
        assert_eq!(
            header(post, "request", "content-type"),
            Some("application/json")
        );
        assert_eq!(
            str_at(post, "/request/postData/mimeType")?,
            "application/json"
        );
        assert_eq!(str_at(post, "/request/postData/text")?, post_body);
        assert_eq!(i64_at(post, "/response/status")?, 200);
        assert_eq!(str_at(post, "/response/content/text")?, post_body);

        // The query parameter `v` (the Set-Cookie secret) is redacted from the URL.
        let cookie_get = get("/cookie?q=visible")?;
        assert_eq!(str_at(cookie_get, "/request/method")?, "GET");
        assert_eq!(i64_at(cookie_get, "/response/status")?, 200);
        assert_eq!(response_body(cookie_get)?, b"cookie set\n");
        assert_eq!(header(cookie_get, "request", "x-visible"), Some("shown"));
        assert_redacted(cookie_get, "request", &["authorization", "cookie"]);
        assert_redacted(cookie_get, "response", &["set-cookie"]);

        for p in &multi {
            let entry = get(p)?;
            let b = brief(entry);
            assert_eq!(str_at(entry, "/request/method")?, "GET", "{b}");
            assert_eq!(str_at(entry, "/request/url")?, format!("{base}{p}"), "{b}");
            assert_eq!(header(entry, "request", "x-visible"), Some("multi"), "{b}");
            assert!(
                header(entry, "request", "user-agent").is_some_and(|s| s.starts_with("nghttp2/")),
                "{b}"
            );
            assert_eq!(i64_at(entry, "/response/status")?, 200, "{b}");
            assert_eq!(response_body(entry)?, nginx_body().as_bytes(), "{b}");
            assert_eq!(
                entry.pointer("/_capture/conn"),
                get(&multi[0])?.pointer("/_capture/conn"),
                "{role}: nghttp's streams on one connection"
            );
        }
    }
    assert_secrets_absent(&done, &[&bearer, &cookie, &set_cookie]);
    done.assert_clean()
}

#[test]
fn upgrade_to_h2c_then_a_second_stream_on_both_sides() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let cgroup = TestCgroup::new()?;
    let server = H2cUpgradeServer::start(Some(&cgroup))?;
    let daemon = Daemon::start(&cgroup)?;

    let base = server.base_url();
    // curl asks for the upgrade on the first request (it becomes stream 1) and sends the second
    // as stream 3 on the same, now HTTP/2, connection.
    let first = "/upgrade/first?x=1";
    let second = "/upgrade/second";
    let (curl_pid, out) = run_with_pid(
        curl(Some(&cgroup))
            .arg("--http2")
            .arg(format!("{base}{first}"))
            .arg(format!("{base}{second}")),
        RUN_TIMEOUT,
    )?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        format!("{}{}", echo_path_body(first), echo_path_body(second))
    );
    daemon.wait_for_exchanges(4, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(
        done.exchanges.len(),
        4,
        "the upgrade request and its 101 make one exchange, answered on stream 1: {:#?}",
        done.exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    for (role, pid) in [("client", curl_pid), ("server", server.pid())] {
        let seen = by_role(&done.exchanges, role);
        let [upgraded, next] = seen.as_slice() else {
            bail!("{role}: want 2 exchanges, got {}", seen.len());
        };
        for (entry, want) in [(upgraded, first), (next, second)] {
            let b = brief(entry);
            assert_eq!(str_at(entry, "/request/method")?, "GET", "{b}");
            assert_eq!(
                str_at(entry, "/request/url")?,
                format!("{base}{want}"),
                "{b}"
            );
            assert_eq!(i64_at(entry, "/response/status")?, 200, "{b}");
            assert_eq!(str_at(entry, "/response/httpVersion")?, "HTTP/2", "{b}");
            assert_eq!(str_at(entry, "/_capture/protocol")?, "h2", "{b}");
            assert_eq!(str_at(entry, "/_capture/conn/role")?, role, "{b}");
            assert_eq!(i64_at(entry, "/_capture/pid")?, i64::from(pid), "{b}");
            assert_eq!(
                header(entry, "response", "server"),
                Some("capture-e2e-h2c/1"),
                "{b}"
            );
            assert_eq!(
                response_body(entry)?,
                echo_path_body(want).as_bytes(),
                "{b}"
            );
            assert!(
                entry
                    .pointer("/_capture/incomplete")
                    .is_none_or(Value::is_null),
                "{b}"
            );
        }
        // The upgrade request went out as HTTP/1.1 (its answer came as HTTP/2 on stream 1);
        // what asked for the switch is hop-by-hop.
        assert_eq!(str_at(upgraded, "/request/httpVersion")?, "HTTP/1.1");
        assert_redacted(
            upgraded,
            "request",
            &["connection", "upgrade", "http2-settings"],
        );
        assert_eq!(str_at(next, "/request/httpVersion")?, "HTTP/2");
        assert_eq!(
            upgraded.pointer("/_capture/conn"),
            next.pointer("/_capture/conn"),
            "{role}: one connection"
        );
    }
    done.assert_clean()
}

/// Lines a child prints on stdout, read by a thread so a test can wait for one with a deadline.
struct StdoutLines {
    lines: mpsc::Receiver<String>,
}

impl StdoutLines {
    fn new(child: &mut ChildProcess) -> Result<Self> {
        let stdout = child
            .child_mut()
            .stdout
            .take()
            .context("stdout not piped")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { lines })
    }

    /// The next line, or `None` when stdout closed or nothing came within [`RUN_TIMEOUT`].
    fn next(&self) -> Option<String> {
        self.lines.recv_timeout(RUN_TIMEOUT).ok()
    }

    fn expect(&self, want: &str) -> Result<()> {
        match self.lines.recv_timeout(RUN_TIMEOUT) {
            Ok(line) if line == want => Ok(()),
            Ok(line) => bail!("expected {want:?} from the client, got {line:?}"),
            Err(err) => bail!("no {want:?} from the client: {err}"),
        }
    }
}

fn say(stdin: &mut ChildStdin, line: &str) -> Result<()> {
    writeln!(stdin, "{line}")?;
    stdin.flush()?;
    Ok(())
}

/// What a connection opened before the daemon left in the output.
struct Late {
    done: Finished,
    client_pid: u32,
    server_pid: u32,
    port: u16,
    marker: String,
}

/// An h2-peer client and server in a cgroup open a connection and make one request; then the
/// daemon starts and the client makes [`LATE_REQUESTS`] more on the same connection. With
/// `keep_open` the connection stays open until the exchanges are written (the daemon can look
/// it up in /proc); without, the client closes it and exits at once.
fn late_scenario(keep_open: bool) -> Result<Late> {
    let cgroup = TestCgroup::new()?;
    let server = RustServer::start(H2_PEER, Some(&cgroup))?;
    let marker = unique_marker("late-marker");
    let mut client = ChildProcess::spawn(
        cgroup
            .command(H2_PEER)
            .args(["late", &server.port.to_string(), &LATE_REQUESTS.to_string()])
            .env("H2_PEER_MARKER", &marker)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
        "h2-peer late",
    )?;
    let client_pid = client.pid();
    let lines = StdoutLines::new(&mut client)?;
    let mut stdin = Some(client.child_mut().stdin.take().context("stdin")?);
    // Connection preface, SETTINGS, GET /early: the HPACK tables of both ends now hold fields
    // the daemon never sees (:authority, user-agent, x-session-marker, content-type, ...).
    lines.expect("early done")?;

    let daemon = Daemon::start(&cgroup)?;
    if let Some(stdin) = &mut stdin {
        say(stdin, "go")?;
    }
    if !keep_open {
        // The client exits as soon as its requests are answered.
        stdin = None;
    }
    lines.expect("late done")?;
    let late = usize::try_from(LATE_REQUESTS)?;
    let waited = daemon.wait_for_exchanges(2 * late, WRITE_TIMEOUT);
    let done = daemon.finish()?;
    let all: Vec<String> = done.exchanges.iter().map(brief).collect();
    waited.with_context(|| format!("captured: {all:#?}"))?;
    if let Some(mut stdin) = stdin {
        say(&mut stdin, "bye")?;
    }
    let status = client
        .wait_timeout(RUN_TIMEOUT)?
        .context("h2-peer late did not exit")?;
    assert!(status.success(), "h2-peer late: {status}");
    Ok(Late {
        done,
        client_pid,
        server_pid: server.pid(),
        port: server.port,
        marker,
    })
}

/// HPACK's dynamic table of a connection that predates the daemon is unknown: fields encoded
/// against it cannot be decoded. What the daemon emits for such a connection may be partial
/// (`_capture.incomplete: "hpack_state_unknown"`) but never wrong. `named`: the connection was
/// still open when the daemon met it, so its role and endpoints must be known.
fn assert_late_exchanges(late: &Late, named: bool) -> Result<()> {
    let done = &late.done;
    let all: Vec<String> = done.exchanges.iter().map(brief).collect();
    assert!(
        !done.output.contains("/early"),
        "the exchange from before the daemon cannot have been captured: {all:#?}"
    );
    for (role, pid) in [("client", late.client_pid), ("server", late.server_pid)] {
        // By pid: the role is one of the things checked.
        let seen: Vec<&Value> = done
            .exchanges
            .iter()
            .filter(|e| e.pointer("/_capture/pid").and_then(Value::as_i64) == Some(i64::from(pid)))
            .collect();
        let mut found = Vec::new();
        for entry in &seen {
            let b = brief(entry);
            assert_eq!(str_at(entry, "/_capture/protocol")?, "h2", "{b}");
            // DATA is not HPACK-coded: the body names the request, whatever the headers lost.
            let body = String::from_utf8(response_body(entry)?)?;
            let index = (0..LATE_REQUESTS)
                .find(|&i| body == echo_path_body(&late_path(i)))
                .with_context(|| {
                    format!("{role}: response body {body:?} is no late request's: {b}")
                })?;
            found.push(index);
            let incomplete = entry
                .pointer("/_capture/incomplete")
                .and_then(Value::as_str);
            assert!(
                incomplete.is_none() || incomplete == Some("hpack_state_unknown"),
                "{b}"
            );
            // Never wrong: what is there is right, what is missing is flagged.
            let url = entry
                .pointer("/request/url")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let want_path = late_path(index);
            if url.contains('/') && !url.ends_with("://") {
                assert!(
                    url.ends_with(&want_path) && path(entry)? == want_path,
                    "{role}: url {url:?} for a request to {want_path}: {b}"
                );
            } else {
                assert_eq!(incomplete, Some("hpack_state_unknown"), "{b}");
            }
            match entry.pointer("/request/method").and_then(Value::as_str) {
                Some("GET") => {}
                other => assert_eq!(
                    (other, incomplete),
                    (other, Some("hpack_state_unknown")),
                    "method: {b}"
                ),
            }
            match entry.pointer("/response/status").and_then(Value::as_i64) {
                Some(200) => {}
                other => assert_eq!(
                    (other, incomplete),
                    (other, Some("hpack_state_unknown")),
                    "status: {b}"
                ),
            }
            match header(entry, "request", "x-session-marker") {
                Some(value) => assert_eq!(value, late.marker, "{b}"),
                None => assert_eq!(
                    incomplete,
                    Some("hpack_state_unknown"),
                    "x-session-marker missing but not flagged: {b}"
                ),
            }
            for (part, name, want) in [
                ("request", "user-agent", "h2-peer-late/1"),
                ("response", "x-peer", "h2-peer"),
                ("response", "content-type", "text/plain"),
            ] {
                match header(entry, part, name) {
                    Some(value) => assert_eq!(value, want, "{part} {name}: {b}"),
                    None => assert_eq!(
                        incomplete,
                        Some("hpack_state_unknown"),
                        "{part} {name} missing but not flagged: {b}"
                    ),
                }
            }
            for (part, name) in [("request", ":status"), ("response", ":method")] {
                assert_eq!(header(entry, part, name), None, "{part} has {name}: {b}");
            }
            // Role and endpoints: known when the connection was open, never wrong.
            let endpoint = |key: &str| {
                entry
                    .pointer(&format!("/_capture/conn/{key}"))
                    .and_then(Value::as_str)
            };
            let want_dst = format!("127.0.0.1:{}", late.port);
            if named || endpoint("role").is_some() {
                assert_eq!(endpoint("role"), Some(role), "{b}");
                assert_eq!(endpoint("dst"), Some(want_dst.as_str()), "{b}");
                assert!(
                    endpoint("src").is_some_and(|src| src.starts_with("127.0.0.1:")),
                    "{b}"
                );
            }
        }
        found.sort_unstable();
        assert_eq!(
            found,
            (0..LATE_REQUESTS).collect::<Vec<_>>(),
            "{role}: every late request captured once"
        );
    }
    assert_eq!(
        done.exchanges.len(),
        2 * usize::try_from(LATE_REQUESTS)?,
        "one exchange per late request and side: {all:#?}"
    );
    done.assert_clean()
}

#[test]
fn h2_connection_opened_before_the_daemon_is_marked_not_wrong() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let late = late_scenario(true)?;
    assert_late_exchanges(&late, true)
}

/// The same, but the client closes the connection and exits right after its requests: the
/// daemon may meet the connection when /proc no longer knows it, and must then not guess which
/// end was the client.
#[test]
fn h2_connection_opened_before_the_daemon_and_closed_at_once_is_not_wrong() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let late = late_scenario(false)?;
    assert_late_exchanges(&late, false)
}

/// The peers themselves, without the daemon: they answer what the capture tests expect, so a
/// failure above is the capture's, not a fixture's.
#[test]
fn http2_peers_answer_without_the_daemon() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let cgroup = TestCgroup::new()?;
    let grpc = RustServer::start(GRPC_ECHO, Some(&cgroup))?;
    run_client(
        Command::new(GRPC_ECHO)
            .args(["client", &grpc.port.to_string()])
            .env("GRPC_ECHO_TOKEN", "t")
            .env("GRPC_ECHO_COOKIE", "c"),
        "grpc-echo client",
    )?;
    let h2 = RustServer::start(H2_PEER, Some(&cgroup))?;
    run_client(
        Command::new(H2_PEER).args(["load", &h2.port.to_string(), "8"]),
        "h2-peer load",
    )?;
    let nginx = Nginx::start_h2c(Some(&cgroup), &[])?;
    let out = run(
        curl(None)
            .args(["--http2-prior-knowledge", "-w", "%{http_version}"])
            .arg(format!("{}/cookie?v=x", nginx.base_url())),
        RUN_TIMEOUT,
    )?;
    assert_eq!(String::from_utf8(out.stdout)?, "cookie set\n2");
    let upgrade = H2cUpgradeServer::start(Some(&cgroup))?;
    let out = run(
        curl(None)
            .args(["--http2", "-w", "%{http_version}"])
            .arg(format!("{}/a?b=c", upgrade.base_url())),
        RUN_TIMEOUT,
    )?;
    assert_eq!(String::from_utf8(out.stdout)?, "path=/a?b=c\n2");
    Ok(())
}

#[test]
fn headers_only_lets_no_h2_or_grpc_body_out() -> Result<()> {
    require_capture_environment!();
    let _burst = BURST.read().unwrap_or_else(PoisonError::into_inner);
    let cgroup = TestCgroup::new()?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--headers-only"])
        .start()?;
    let server = RustServer::start(GRPC_ECHO, Some(&cgroup))?;
    let client = HeldClient::start(
        cgroup
            .command(GRPC_ECHO)
            .args(["client", &server.port.to_string()])
            .env("GRPC_ECHO_TOKEN", unique_marker("token"))
            .env("GRPC_ECHO_COOKIE", unique_marker("cookie")),
        "grpc-echo client",
    )?;
    let calls = grpc_calls();
    let nginx = Nginx::start_h2c(Some(&cgroup), &[])?;
    let secret = unique_marker("h2-headers-only-body");
    let out = run(
        prior_knowledge_curl(&cgroup)
            .args(["-X", "POST", "--data-binary", &secret])
            .arg(format!("{}/echo", nginx.base_url())),
        RUN_TIMEOUT,
    )?;
    assert_eq!(out.stdout, secret.as_bytes());
    daemon.wait_for_exchanges(2 * calls.len() + 2, WRITE_TIMEOUT)?;
    client.release()?;

    let done = daemon.finish()?;
    done.assert_clean()?;
    // No message of any call, nor the Fail call's grpc-message (it quotes the request), nor
    // the h2 body, anywhere in the output.
    let mut needles = vec![
        grpc_script::SAY_TEXT.to_owned(),
        grpc_script::COUNT_TEXT.to_owned(),
        grpc_script::FAIL_TEXT.to_owned(),
        gzip_text(),
        secret.clone(),
    ];
    needles.extend(grpc_script::collect_texts());
    for needle in &needles {
        assert!(
            !done.output.contains(needle.as_str()),
            "{needle:?} left with --headers-only"
        );
    }
    for entry in &done.exchanges {
        let b = brief(entry);
        for pointer in ["/request/postData/text", "/response/content/text"] {
            assert!(
                entry
                    .pointer(pointer)
                    .is_none_or(|t| t.as_str() == Some("")),
                "{pointer} holds a body with --headers-only: {b}"
            );
        }
        assert_eq!(
            entry.pointer("/response/content/size"),
            Some(&Value::from(0)),
            "{b}"
        );
    }
    // The sizes stay; the gRPC outcome stays, but not a message that may carry payload.
    for role in ["client", "server"] {
        let seen: Vec<&Value> = by_role(&done.exchanges, role)
            .into_iter()
            .filter(|e| str_at(e, "/_capture/protocol").is_ok_and(|p| p == "grpc"))
            .collect();
        assert_eq!(
            seen.len(),
            calls.len(),
            "{role}; the connections of all: {:?}",
            done.exchanges
                .iter()
                .map(|e| e.pointer("/_capture/conn"))
                .collect::<Vec<_>>()
        );
        // The compressed call (the last) has other sizes on the wire than stored.
        for (entry, call) in seen.iter().zip(&calls).take(4) {
            let b = brief(entry);
            assert_eq!(
                entry.pointer("/_capture/original_size/request"),
                Some(&Value::from(call.request.len())),
                "{b}"
            );
            assert_eq!(
                entry.pointer("/_capture/original_size/response"),
                Some(&Value::from(call.response.len())),
                "{b}"
            );
            assert_eq!(
                entry.pointer("/_grpc"),
                Some(&json!({
                    "service": ECHO_SERVICE,
                    "method": call.method,
                    "status": call.status,
                    "message": null,
                })),
                "{b}"
            );
        }
        let h2: Vec<&Value> = by_role(&done.exchanges, role)
            .into_iter()
            .filter(|e| str_at(e, "/_capture/protocol").is_ok_and(|p| p == "h2"))
            .collect();
        let [echo] = h2.as_slice() else {
            bail!("{role}: want one h2 exchange, got {}", h2.len());
        };
        assert_eq!(
            echo.pointer("/_capture/original_size/request"),
            Some(&Value::from(secret.len())),
            "{}",
            brief(echo)
        );
        assert_eq!(
            echo.pointer("/_capture/original_size/response"),
            Some(&Value::from(secret.len())),
            "{}",
            brief(echo)
        );
    }
    Ok(())
}
