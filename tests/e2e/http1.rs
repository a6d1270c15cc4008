//! HTTP/1.x end to end: the real daemon with real eBPF captures curl, Python and nginx traffic
//! in a fresh cgroup per test; assertions are on exact captured values and on what must be
//! absent (secrets, hop-by-hop headers, traffic of processes outside the cgroup).
//!
//! Needs root and cgroup v2 (skips loudly otherwise, fails under `CI=true`) and a built daemon
//! (`cargo build -p capture-daemon`, or `CAPTURE_DAEMON_BIN`).

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use capture_e2e::har::{
    brief, header, headers, i64_at, path, redacted, request_body, response_body, str_at,
};
use capture_e2e::{
    BIG_LEN, COOKIE_BODY, ChildProcess, Daemon, HttpConnection, JSON_BODY, Nginx, PythonServer,
    TestCgroup, big_body, capture_environment_ready, curl, daemon_binary, gzip_plain, nginx_body,
    run, run_unchecked, run_with_pid, unique_marker, workspace_root,
};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const RESET_THEN_REUSE: &str = include_str!("../fixtures/reset_then_reuse.py");
/// Exchanges are written within ~100 ms of completing; this leaves room for a busy machine.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Returns early from a test (after a loud notice) when root/cgroup v2 are missing and CI is not set.
macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

/// Where the exchange was seen from and which process made it.
struct Seen<'a> {
    role: &'a str,
    pid: u32,
    server_port: u16,
}

/// Checks `_capture` of one HTTP/1 exchange.
fn assert_capture_meta(entry: &Value, seen: &Seen<'_>) -> Result<()> {
    assert_eq!(
        str_at(entry, "/_capture/protocol")?,
        "h1",
        "protocol in {}",
        brief(entry)
    );
    assert_eq!(
        str_at(entry, "/_capture/conn/role")?,
        seen.role,
        "role in {}",
        brief(entry)
    );
    assert_eq!(
        i64_at(entry, "/_capture/pid")?,
        i64::from(seen.pid),
        "pid in {}",
        brief(entry)
    );
    // src is the client, dst the server, whichever side was captured.
    assert_eq!(
        str_at(entry, "/_capture/conn/dst")?,
        format!("127.0.0.1:{}", seen.server_port),
        "conn.dst in {}",
        brief(entry)
    );
    let src = str_at(entry, "/_capture/conn/src")?;
    assert!(
        src.starts_with("127.0.0.1:"),
        "conn.src {src:?} in {}",
        brief(entry)
    );
    assert_eq!(
        entry.pointer("/_capture/truncated/request"),
        Some(&Value::Bool(false)),
        "{}",
        brief(entry)
    );
    assert_eq!(
        entry.pointer("/_capture/truncated/response"),
        Some(&Value::Bool(false)),
        "{}",
        brief(entry)
    );
    assert!(
        entry
            .pointer("/_capture/incomplete")
            .is_none_or(Value::is_null),
        "incomplete in {}",
        brief(entry)
    );
    Ok(())
}

const POST_JSON: &str = r#"{"name":"capture","n":42}"#;

/// curl: `GET /json?lang=en` then `POST /echo` (JSON) on the same connection; curl's pid and
/// its stdout.
fn get_then_post(cmd: &mut Command, base: &str) -> Result<(u32, String)> {
    cmd.arg(format!("{base}/json?lang=en"))
        .args([
            "--next",
            "-sS",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            POST_JSON,
        ])
        .arg(format!("{base}/echo"));
    let (pid, out) = run_with_pid(cmd, RUN_TIMEOUT)?;
    Ok((pid, String::from_utf8(out.stdout)?))
}

fn assert_get_then_post(exchanges: &[Value], port: u16, seen: &Seen<'_>) -> Result<()> {
    assert_eq!(
        exchanges.len(),
        2,
        "want GET + POST, got {:#?}",
        exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    let base = format!("http://127.0.0.1:{port}");

    let get = &exchanges[0];
    assert_eq!(str_at(get, "/request/method")?, "GET");
    assert_eq!(str_at(get, "/request/url")?, format!("{base}/json?lang=en"));
    assert_eq!(str_at(get, "/request/httpVersion")?, "HTTP/1.1");
    assert_eq!(
        get.pointer("/request/queryString"),
        Some(&serde_json::json!([{"name": "lang", "value": "en"}])),
        "{}",
        brief(get)
    );
    assert_eq!(
        header(get, "request", "Host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert!(
        header(get, "request", "User-Agent").is_some_and(|ua| ua.starts_with("curl/")),
        "{}",
        brief(get)
    );
    assert_eq!(i64_at(get, "/response/status")?, 200);
    assert_eq!(str_at(get, "/response/statusText")?, "OK");
    assert_eq!(str_at(get, "/response/httpVersion")?, "HTTP/1.1");
    assert_eq!(
        header(get, "response", "Content-Type"),
        Some("application/json")
    );
    assert_eq!(header(get, "response", "Content-Length"), Some("35"));
    assert_eq!(header(get, "response", "Server"), Some("capture-e2e/1"));
    assert_eq!(
        str_at(get, "/response/content/mimeType")?,
        "application/json"
    );
    assert_eq!(response_body(get)?, JSON_BODY.as_bytes());
    assert_eq!(i64_at(get, "/response/content/size")?, 35);
    assert_eq!(i64_at(get, "/response/bodySize")?, 35);
    assert_capture_meta(get, seen)?;

    let post = &exchanges[1];
    assert_eq!(str_at(post, "/request/method")?, "POST");
    assert_eq!(str_at(post, "/request/url")?, format!("{base}/echo"));
    assert_eq!(
        header(post, "request", "Content-Type"),
        Some("application/json")
    );
    assert_eq!(header(post, "request", "Content-Length"), Some("25"));
    assert_eq!(
        str_at(post, "/request/postData/mimeType")?,
        "application/json"
    );
    assert_eq!(str_at(post, "/request/postData/text")?, POST_JSON);
    assert_eq!(i64_at(post, "/request/bodySize")?, 25);
    assert_eq!(i64_at(post, "/response/status")?, 200);
    assert_eq!(response_body(post)?, POST_JSON.as_bytes());
    assert_eq!(i64_at(post, "/_capture/original_size/request")?, 25);
    assert_eq!(i64_at(post, "/_capture/original_size/response")?, 25);
    assert_capture_meta(post, seen)?;
    // Same keep-alive connection (curl --next reuses it).
    assert_eq!(
        get.pointer("/_capture/conn"),
        post.pointer("/_capture/conn")
    );
    Ok(())
}

/// The metric families DESIGN.md and the CLI contract promise, present even when zero.
const CONTRACT_METRICS: &[&str] = &[
    "capture_kernel_events_total",
    "capture_kernel_events_lost_total",
    "capture_kernel_bytes_lost_total",
    "capture_kernel_truncations_total",
    "capture_events_total",
    "capture_event_bytes_total",
    "capture_gap_bytes_total",
    "capture_body_truncations_total",
    "capture_exchanges_total",
    "capture_connections_tracked",
];

#[test]
fn get_and_post_client_in_cgroup() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::start(&cgroup)?;
    assert_eq!(daemon.get("/healthz")?.status, 200);

    let mut cmd = curl(Some(&cgroup));
    let (curl_pid, stdout) = get_then_post(&mut cmd, &server.base_url())?;
    assert_eq!(stdout, format!("{JSON_BODY}{POST_JSON}"));
    daemon.wait_for_exchanges(2, WRITE_TIMEOUT)?;

    let metrics = daemon.metrics()?;
    let missing: Vec<_> = CONTRACT_METRICS
        .iter()
        .filter(|m| !metrics.has(m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from /metrics: {missing:?}"
    );
    assert_eq!(
        metrics.get(r#"capture_exchanges_total{protocol="h1"}"#),
        Some(2.0),
        "{}",
        metrics.summary()
    );
    assert!(
        metrics.sum("capture_kernel_events_total") > 0.0,
        "{}",
        metrics.summary()
    );
    assert!(
        metrics.sum("capture_event_bytes_total") > 0.0,
        "{}",
        metrics.summary()
    );

    // The pid of the curl this test spawned (the cgroup's shell execs it, same pid).
    let done = daemon.finish()?;
    let seen = Seen {
        role: "client",
        pid: curl_pid,
        server_port: server.port(),
    };
    assert_get_then_post(&done.exchanges, server.port(), &seen)?;
    done.assert_clean()
}

#[test]
fn get_and_post_server_in_cgroup() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::start(&cgroup)?;

    let (_, stdout) = get_then_post(&mut curl(None), &server.base_url())?;
    assert_eq!(stdout, format!("{JSON_BODY}{POST_JSON}"));
    daemon.wait_for_exchanges(2, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    let seen = Seen {
        role: "server",
        pid: server.pid(),
        server_port: server.port(),
    };
    assert_get_then_post(&done.exchanges, server.port(), &seen)?;
    done.assert_clean()
}

#[test]
fn target_pid_captures_that_process() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::builder().target_pid(server.pid()).start()?;

    run(
        curl(None).arg(format!("{}/by-pid", server.base_url())),
        RUN_TIMEOUT,
    )?;
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), 1);
    let entry = &done.exchanges[0];
    assert_eq!(path(entry)?, "/by-pid");
    assert_eq!(response_body(entry)?, b"path=/by-pid\n");
    assert_capture_meta(
        entry,
        &Seen {
            role: "server",
            pid: server.pid(),
            server_port: server.port(),
        },
    )?;
    done.assert_clean()
}

#[test]
fn chunked_upload() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("upload.txt");
    let content: String = (0..5000).map(|i| format!("upload line {i:05}\n")).collect();
    fs::write(&file, &content)?;
    let daemon = Daemon::start(&cgroup)?;

    let out = run(
        curl(Some(&cgroup))
            .args([
                "-H",
                "Transfer-Encoding: chunked",
                "-H",
                "Content-Type: text/plain",
                "--data-binary",
            ])
            .arg(format!("@{}", file.display()))
            .arg(format!("{}/upload", server.base_url())),
        RUN_TIMEOUT,
    )?;
    let received = format!(r#"{{"received":{}}}"#, content.len());
    assert_eq!(String::from_utf8(out.stdout)?, received);
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    // curl sends `Expect: 100-continue` for chunked uploads; the interim 100 response is not
    // an exchange of its own.
    assert_eq!(
        done.exchanges.len(),
        1,
        "{:#?}",
        done.exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    let entry = &done.exchanges[0];
    assert_eq!(str_at(entry, "/request/method")?, "POST");
    assert_eq!(path(entry)?, "/upload");
    assert_eq!(str_at(entry, "/request/postData/mimeType")?, "text/plain");
    let body = request_body(entry)?;
    assert!(
        body == content.as_bytes(),
        "request body: {} bytes captured, want {} (the file, de-chunked)",
        body.len(),
        content.len()
    );
    assert_eq!(
        header(entry, "request", "Transfer-Encoding"),
        None,
        "hop-by-hop header kept: {}",
        brief(entry)
    );
    assert!(
        redacted(entry).contains(&"transfer-encoding"),
        "redacted: {:?}",
        redacted(entry)
    );
    assert_eq!(
        i64_at(entry, "/_capture/original_size/request")?,
        i64::try_from(content.len())?
    );
    assert_eq!(i64_at(entry, "/response/status")?, 201);
    assert_eq!(response_body(entry)?, received.as_bytes());
    assert_eq!(str_at(entry, "/_capture/conn/role")?, "client");
    done.assert_clean()
}

#[test]
fn one_mebibyte_response_captured_exactly() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::start(&cgroup)?;

    let out = run(
        curl(None).arg(format!("{}/big", server.base_url())),
        RUN_TIMEOUT,
    )?;
    let want = big_body();
    assert!(
        out.stdout == want,
        "the server itself sent {} bytes",
        out.stdout.len()
    );
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), 1);
    let entry = &done.exchanges[0];
    assert_eq!(path(entry)?, "/big");
    assert_eq!(i64_at(entry, "/response/status")?, 200);
    assert_eq!(header(entry, "response", "Content-Length"), Some("1048576"));
    assert_eq!(
        str_at(entry, "/response/content/encoding")?,
        "base64",
        "binary body must be base64"
    );
    let body = response_body(entry)?;
    let first_difference = body.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        body.len() == BIG_LEN && first_difference.is_none(),
        "captured {} bytes (want {BIG_LEN}), first difference at {first_difference:?}",
        body.len()
    );
    assert_eq!(
        i64_at(entry, "/response/content/size")?,
        i64::try_from(BIG_LEN)?
    );
    assert_eq!(
        i64_at(entry, "/_capture/original_size/response")?,
        i64::try_from(BIG_LEN)?
    );
    assert_eq!(
        entry.pointer("/_capture/truncated/response"),
        Some(&Value::Bool(false))
    );
    assert_capture_meta(
        entry,
        &Seen {
            role: "server",
            pid: server.pid(),
            server_port: server.port(),
        },
    )?;
    done.assert_clean()
}

#[test]
fn pipelined_requests_in_one_write() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::start(&cgroup)?;

    let host = server.addr();
    let requests = format!(
        "GET /pipe/1 HTTP/1.1\r\nHost: {host}\r\n\r\n\
         POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\npipelined body\
         GET /pipe/3?x=y HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    let mut conn = HttpConnection::connect(server.addr(), RUN_TIMEOUT)?;
    conn.send(requests.as_bytes())?;
    let bodies: Vec<Vec<u8>> = (0..3)
        .map(|_| conn.read_response(false).map(|r| r.body))
        .collect::<Result<_>>()?;
    assert_eq!(
        bodies,
        [
            b"path=/pipe/1\n".to_vec(),
            b"pipelined body".to_vec(),
            b"path=/pipe/3?x=y\n".to_vec()
        ]
    );
    daemon.wait_for_exchanges(3, WRITE_TIMEOUT)?;
    drop(conn);

    let done = daemon.finish()?;
    let got: Vec<(&str, &str, Vec<u8>, Vec<u8>)> = done
        .exchanges
        .iter()
        .map(|e| {
            Ok((
                str_at(e, "/request/method")?,
                path(e)?,
                request_body(e)?,
                response_body(e)?,
            ))
        })
        .collect::<Result<_>>()?;
    assert_eq!(
        got,
        [
            ("GET", "/pipe/1", Vec::new(), b"path=/pipe/1\n".to_vec()),
            (
                "POST",
                "/echo",
                b"pipelined body".to_vec(),
                b"pipelined body".to_vec()
            ),
            (
                "GET",
                "/pipe/3?x=y",
                Vec::new(),
                b"path=/pipe/3?x=y\n".to_vec()
            ),
        ]
    );
    for entry in &done.exchanges {
        assert_capture_meta(
            entry,
            &Seen {
                role: "server",
                pid: server.pid(),
                server_port: server.port(),
            },
        )?;
    }
    done.assert_clean()
}

/// A client that peeks before it reads (curl peeks one byte to check that a kept-alive
/// connection is still open) must have each byte captured once: a peek leaves the bytes in the
/// socket. Both kernel hooks run this (the syscall pass of `cargo xtask test` too); counting the
/// peek put its bytes into the stream twice on the syscall hook and broke the framing.
#[test]
fn peeked_bytes_are_captured_once() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::start(&cgroup)?;

    // recv(MSG_PEEK) and recvmsg(MSG_PEEK) of part of each response, then the real reads.
    let script = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection((host, port))
out = []
for i, path in enumerate(["/peek/1", "/peek/2", "/peek/3"]):
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    want = len(f"path={path}\n")
    s.settimeout(10)
    buf = b""
    while b"\r\n\r\n" not in buf or len(buf.split(b"\r\n\r\n", 1)[1]) < want:
        if i == 1:
            s.recvmsg(7, 0, socket.MSG_PEEK)
        else:
            s.recv(5, socket.MSG_PEEK)
        buf += s.recv(3)
    out.append(buf.split(b"\r\n\r\n", 1)[1].decode())
s.close()
sys.stdout.write("".join(out))
"#;
    let addr = server.addr();
    let out = run(
        cgroup.command("python3").args([
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ]),
        RUN_TIMEOUT,
    )?;
    assert_eq!(
        String::from_utf8(out.stdout)?,
        "path=/peek/1\npath=/peek/2\npath=/peek/3\n"
    );
    daemon.wait_for_exchanges(3, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    let got: Vec<(&str, i64, Vec<u8>)> = done
        .exchanges
        .iter()
        .map(|e| Ok((path(e)?, i64_at(e, "/response/status")?, response_body(e)?)))
        .collect::<Result<_>>()?;
    assert_eq!(
        got,
        [
            ("/peek/1", 200, b"path=/peek/1\n".to_vec()),
            ("/peek/2", 200, b"path=/peek/2\n".to_vec()),
            ("/peek/3", 200, b"path=/peek/3\n".to_vec()),
        ]
    );
    for entry in &done.exchanges {
        assert_eq!(
            str_at(entry, "/_capture/conn/role")?,
            "client",
            "{}",
            brief(entry)
        );
        assert!(
            entry
                .pointer("/_capture/incomplete")
                .is_none_or(Value::is_null),
            "{}",
            brief(entry)
        );
    }
    done.assert_clean()
}

#[test]
fn keep_alive_200_requests_on_one_connection() -> Result<()> {
    require_capture_environment!();
    const N: usize = 200;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::start(&cgroup)?;

    let paths: Vec<String> = (0..N).map(|i| format!("/ka/{i:03}")).collect();
    let mut cmd = curl(Some(&cgroup));
    // One curl, many URLs: curl keeps the connection open; num_connects counts new connections.
    cmd.args(["-w", r"\n%{num_connects}\n"]);
    cmd.args(paths.iter().map(|p| format!("{}{p}", server.base_url())));
    let out = run(&mut cmd, RUN_TIMEOUT)?;
    let stdout = String::from_utf8(out.stdout)?;
    let connects: u32 = stdout.lines().filter_map(|l| l.parse::<u32>().ok()).sum();
    assert_eq!(
        connects, 1,
        "curl opened {connects} connections, the test needs one"
    );
    daemon.wait_for_exchanges(N, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), N, "exactly one exchange per request");
    let got: Vec<&str> = done.exchanges.iter().map(path).collect::<Result<_>>()?;
    assert_eq!(got, paths, "paths in request order");
    assert_eq!(
        got.iter().collect::<BTreeSet<_>>().len(),
        N,
        "distinct paths"
    );
    for (entry, p) in done.exchanges.iter().zip(&paths) {
        assert_eq!(i64_at(entry, "/response/status")?, 200);
        assert_eq!(response_body(entry)?, format!("path={p}\n").as_bytes());
        assert_eq!(str_at(entry, "/_capture/conn/role")?, "client");
        assert_eq!(
            entry.pointer("/_capture/conn"),
            done.exchanges[0].pointer("/_capture/conn")
        );
    }
    done.assert_clean()
}

#[test]
fn connection_opened_before_daemon_started() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    // nginx waits in epoll_wait and reads only once data is there; the read that carries the
    // second request therefore starts after the programs are attached. (A thread blocked in
    // read(2) since before the daemon started is invisible to syscall tracepoints: its entry
    // was never seen.)
    let nginx = Nginx::start(Some(&cgroup))?;
    let host = nginx.addr();
    let mut conn = HttpConnection::connect(nginx.addr(), RUN_TIMEOUT)?;
    conn.send(format!("GET /before-daemon HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    assert_eq!(conn.read_response(false)?.status, 200);

    let daemon = Daemon::start(&cgroup)?;
    conn.send(
        format!(
            "GET /after-daemon?n=2 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: old-connection\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let response = conn.read_response(false)?;
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, nginx_body().as_bytes())
    );
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;
    drop(conn);

    let done = daemon.finish()?;
    assert_eq!(
        done.exchanges.len(),
        1,
        "{:#?}",
        done.exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    let entry = &done.exchanges[0];
    assert_eq!(str_at(entry, "/request/method")?, "GET");
    assert_eq!(
        str_at(entry, "/request/url")?,
        format!("http://{host}/after-daemon?n=2")
    );
    assert_eq!(
        header(entry, "request", "User-Agent"),
        Some("old-connection")
    );
    assert_eq!(i64_at(entry, "/response/status")?, 200);
    assert_eq!(
        header(entry, "response", "Server").map(|s| s.starts_with("nginx")),
        Some(true)
    );
    assert_eq!(header(entry, "response", "Content-Length"), Some("1024"));
    assert_eq!(response_body(entry)?, nginx_body().as_bytes());
    assert_capture_meta(
        entry,
        &Seen {
            role: "server",
            pid: nginx.pid(),
            server_port: nginx.port(),
        },
    )?;
    assert!(!done.output.contains("before-daemon"));
    done.assert_clean()
}

#[test]
fn gzip_response_is_decoded() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::start(&cgroup)?;

    let out = run(
        curl(Some(&cgroup))
            .arg("--compressed")
            .arg(format!("{}/gzip", server.base_url())),
        RUN_TIMEOUT,
    )?;
    let plain = gzip_plain();
    assert_eq!(String::from_utf8(out.stdout)?, plain);
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), 1);
    let entry = &done.exchanges[0];
    assert_eq!(path(entry)?, "/gzip");
    assert!(
        header(entry, "request", "Accept-Encoding").is_some_and(|v| v.contains("gzip")),
        "{}",
        brief(entry)
    );
    assert_eq!(
        header(entry, "response", "Content-Encoding"),
        Some("gzip"),
        "original Content-Encoding is kept"
    );
    assert_eq!(
        str_at(entry, "/response/content/mimeType")?,
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        entry.pointer("/response/content/encoding"),
        None,
        "decoded text is not base64: {}",
        brief(entry)
    );
    assert_eq!(
        str_at(entry, "/response/content/text")?,
        plain,
        "body stored decoded"
    );
    assert_eq!(
        i64_at(entry, "/response/content/size")?,
        i64::try_from(plain.len())?
    );
    let wire_len: i64 = header(entry, "response", "Content-Length")
        .context("Content-Length")?
        .parse()?;
    assert!(
        wire_len < i64::try_from(plain.len())?,
        "Content-Length is the compressed size"
    );
    done.assert_clean()
}

#[test]
fn head_and_no_content_keep_the_connection_in_sync() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::start(&cgroup)?;

    // HEAD (Content-Length but no body), then 204, then a normal GET on the same connection: a
    // decoder that expects a HEAD body or a 204 body swallows the next response.
    let base = server.base_url();
    let out = run(
        curl(None)
            .args([
                "-I",
                &format!("{base}/json"),
                "--next",
                "-sS",
                &format!("{base}/empty"),
            ])
            .args(["--next", "-sS", &format!("{base}/json")]),
        RUN_TIMEOUT,
    )?;
    assert!(String::from_utf8(out.stdout)?.ends_with(JSON_BODY));
    daemon.wait_for_exchanges(3, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    let got: Vec<(&str, &str, i64)> = done
        .exchanges
        .iter()
        .map(|e| {
            Ok((
                str_at(e, "/request/method")?,
                path(e)?,
                i64_at(e, "/response/status")?,
            ))
        })
        .collect::<Result<_>>()?;
    assert_eq!(
        got,
        [
            ("HEAD", "/json", 200),
            ("GET", "/empty", 204),
            ("GET", "/json", 200)
        ]
    );
    let [head, empty, get] = &done.exchanges[..] else {
        bail!("want 3 exchanges")
    };
    assert_eq!(header(head, "response", "Content-Length"), Some("35"));
    assert_eq!(response_body(head)?, b"");
    assert_eq!(i64_at(head, "/response/content/size")?, 0);
    assert_eq!(str_at(empty, "/response/statusText")?, "No Content");
    assert_eq!(response_body(empty)?, b"");
    assert_eq!(i64_at(empty, "/response/content/size")?, 0);
    assert_eq!(response_body(get)?, JSON_BODY.as_bytes());
    for entry in &done.exchanges {
        assert_capture_meta(
            entry,
            &Seen {
                role: "server",
                pid: server.pid(),
                server_port: server.port(),
            },
        )?;
    }
    done.assert_clean()
}

#[test]
fn credentials_and_hop_by_hop_headers_are_redacted() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--redact-header", "X-Api-Key", "--redact-query", "v"])
        .start()?;

    let bearer = unique_marker("bearer-secret");
    let cookie = unique_marker("cookie-secret");
    let api_key = unique_marker("apikey-secret");
    let proxy = unique_marker("proxy-secret");
    // The server puts `v` into Set-Cookie (and X-Hop-Secret), so it is both a response secret
    // and a redacted query parameter.
    let set_cookie = unique_marker("setcookie-secret");
    let out = run(
        curl(Some(&cgroup))
            .args(["-H", &format!("Authorization: Bearer {bearer}")])
            .args(["-H", &format!("Cookie: session={cookie}; theme=dark")])
            .args(["-H", &format!("X-Api-Key: {api_key}")])
            .args(["-H", &format!("Proxy-Authorization: Basic {proxy}")])
            .args(["-H", "Connection: keep-alive"])
            .args(["-H", "X-Visible: shown"])
            .arg(format!(
                "{}/cookie?q=visible&v={set_cookie}",
                server.base_url()
            )),
        RUN_TIMEOUT,
    )?;
    assert_eq!(String::from_utf8(out.stdout)?, COOKIE_BODY);
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), 1);
    for secret in [&bearer, &cookie, &api_key, &proxy, &set_cookie] {
        assert!(
            !done.output.contains(secret.as_str()),
            "secret {secret} found in the output:\n{}",
            done.output
        );
        assert!(
            !done.stderr.contains(secret.as_str()),
            "secret {secret} found in the daemon log"
        );
    }
    let entry = &done.exchanges[0];
    let request_names: Vec<String> = headers(entry, "request")
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    for name in [
        "authorization",
        "cookie",
        "x-api-key",
        "proxy-authorization",
        "connection",
    ] {
        assert!(
            !request_names.iter().any(|n| n == name),
            "request header {name} kept: {request_names:?}"
        );
    }
    let response_names: Vec<String> = headers(entry, "response")
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    for name in [
        "set-cookie",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "x-hop-secret",
    ] {
        assert!(
            !response_names.iter().any(|n| n == name),
            "response header {name} kept: {response_names:?}"
        );
    }
    assert_eq!(header(entry, "request", "X-Visible"), Some("shown"));
    assert_eq!(
        header(entry, "response", "Content-Type"),
        Some("text/plain")
    );
    let listed = redacted(entry);
    for name in [
        "authorization",
        "cookie",
        "x-api-key",
        "proxy-authorization",
        "connection",
        "set-cookie",
        "keep-alive",
        "transfer-encoding",
        "x-hop-secret",
    ] {
        assert!(
            listed.contains(&name),
            "_capture.redacted lacks {name}: {listed:?}"
        );
    }
    let query = entry
        .pointer("/request/queryString")
        .context("queryString")?;
    assert_eq!(
        query,
        &serde_json::json!([{"name": "q", "value": "visible"}]),
        "redacted query parameter v"
    );
    assert_eq!(
        response_body(entry)?,
        COOKIE_BODY.as_bytes(),
        "chunked body decoded"
    );
    done.assert_clean()
}

#[test]
fn process_outside_the_cgroup_is_not_captured() -> Result<()> {
    require_capture_environment!();
    const N: usize = 20;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::start(&cgroup)?;

    let marker = unique_marker("outside-marker");
    let base = server.base_url();
    // Both clients talk to the same server at the same time; only one is in the cgroup.
    let mut outside = curl(None);
    outside.args((0..N).map(|i| format!("{base}/{marker}/{i}")));
    outside.stdout(std::process::Stdio::null());
    let mut outside = ChildProcess::spawn(&mut outside, "curl outside the cgroup")?;
    let mut inside = curl(Some(&cgroup));
    inside.args((0..N).map(|i| format!("{base}/inside/{i}")));
    run(&mut inside, RUN_TIMEOUT)?;
    let status = outside
        .wait_timeout(RUN_TIMEOUT)?
        .context("outside curl did not finish")?;
    assert!(status.success());
    // And the test process itself, also outside.
    capture_e2e::http_get(server.addr(), &format!("/{marker}/self"), RUN_TIMEOUT)?;
    daemon.wait_for_exchanges(N, WRITE_TIMEOUT)?;
    // No wait for stragglers: SIGTERM drains whatever the kernel handed over and flushes it, so
    // the output after exit holds everything that was captured.
    let done = daemon.finish()?;
    assert!(
        !done.output.contains(&marker),
        "traffic of a process outside the cgroup was captured"
    );
    let got: Vec<&str> = done.exchanges.iter().map(path).collect::<Result<_>>()?;
    let want: Vec<String> = (0..N).map(|i| format!("/inside/{i}")).collect();
    assert_eq!(got, want);
    done.assert_clean()
}

/// Short connections are the common case for CLI clients, health checks and `Connection: close`
/// traffic: each must be captured even when it is over (and its process gone) before the daemon
/// has looked at it.
#[test]
fn short_connections_server_in_cgroup_are_all_captured() -> Result<()> {
    require_capture_environment!();
    const N: usize = 30;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::start(&cgroup)?;

    for i in 0..N {
        run(
            curl(None).arg(format!("{}/short/{i}", server.base_url())),
            RUN_TIMEOUT,
        )?;
    }
    let waited = daemon.wait_for_exchanges(N, WRITE_TIMEOUT);
    let done = daemon.finish()?;
    let got: Vec<&str> = done.exchanges.iter().map(path).collect::<Result<_>>()?;
    let want: Vec<String> = (0..N).map(|i| format!("/short/{i}")).collect();
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(&w.as_str())).collect();
    assert!(
        missing.is_empty() && waited.is_ok(),
        "{} of {N} one-request connections not captured: {missing:?}\nmetrics: {}",
        missing.len(),
        done.metrics.summary()
    );
    assert_eq!(got, want, "order");
    for entry in &done.exchanges {
        assert_capture_meta(
            entry,
            &Seen {
                role: "server",
                pid: server.pid(),
                server_port: server.port(),
            },
        )?;
    }
    done.assert_clean()
}

/// A TCP health check (connect, close) answered by a server that writes first, then a real
/// client on the same fd number and, as the kernel recycles it, the same socket: the write
/// to the gone probe is reset before the hook at its end sees it, so that socket never
/// announces a `TCP_CLOSE` to the programs. Its generation must still end there, or the next
/// connection continues it without a role or addresses (seen as a tonic server's calls
/// captured with `role: null` after the harness's port probe).
#[test]
fn a_socket_reset_before_its_first_transfer_does_not_swallow_the_next_on_its_fd() -> Result<()> {
    require_capture_environment!();
    const ROUNDS: usize = 5;
    let cgroup = TestCgroup::new()?;
    let daemon = Daemon::start(&cgroup)?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("reset_then_reuse.py");
    fs::write(&script, RESET_THEN_REUSE)?;
    let out = run(
        cgroup
            .command("python3")
            .arg(&script)
            .arg(ROUNDS.to_string()),
        RUN_TIMEOUT,
    )?;
    let rounds: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(rounds.len(), ROUNDS);
    // The case that went wrong needs the recycled socket; the fixture pins itself to one CPU,
    // where the kernel hands the last freed socket out first.
    assert!(
        rounds.iter().any(|r| r["reused"] == true),
        "no round got the reset socket back: {rounds:?}"
    );
    daemon.wait_for_exchanges(2 * ROUNDS, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    for (i, round) in rounds.iter().enumerate() {
        let port = round["port"].as_u64().context("port")?;
        let want = format!("/after-reset/{i}");
        let seen: Vec<&Value> = done
            .exchanges
            .iter()
            .filter(|e| path(e).is_ok_and(|p| p == want))
            .collect();
        let conns: BTreeSet<String> = seen
            .iter()
            .map(|e| e.pointer("/_capture/conn").map(Value::to_string))
            .collect::<Option<_>>()
            .context("_capture.conn")?;
        let client = seen
            .iter()
            .find(|e| e.pointer("/_capture/conn/role") == Some(&Value::from("client")))
            .with_context(|| format!("{want}: no client side in {conns:?}"))?;
        let server = seen
            .iter()
            .find(|e| e.pointer("/_capture/conn/role") == Some(&Value::from("server")))
            .with_context(|| {
                format!(
                    "{want} (reused: {}): no server side in {conns:?}",
                    round["reused"]
                )
            })?;
        assert_eq!(seen.len(), 2, "{want}: {conns:?}");
        assert_eq!(
            server.pointer("/_capture/conn/dst"),
            Some(&Value::from(format!("127.0.0.1:{port}"))),
            "{}",
            brief(server)
        );
        assert_eq!(
            server.pointer("/_capture/conn/src"),
            client.pointer("/_capture/conn/src"),
            "{}",
            brief(server)
        );
        assert_eq!(
            i64_at(server, "/response/status")?,
            200,
            "{}",
            brief(server)
        );
        assert_eq!(
            response_body(server)?,
            b"second connection\n",
            "{}",
            brief(server)
        );
    }
    done.assert_clean()
}

#[test]
fn short_lived_client_processes_are_all_captured() -> Result<()> {
    require_capture_environment!();
    const N: usize = 20;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let daemon = Daemon::start(&cgroup)?;

    // One curl process per request: process and connection are gone milliseconds later.
    for i in 0..N {
        run(
            curl(Some(&cgroup)).arg(format!("{}/client/{i}", server.base_url())),
            RUN_TIMEOUT,
        )?;
    }
    let waited = daemon.wait_for_exchanges(N, WRITE_TIMEOUT);
    let done = daemon.finish()?;
    let got: Vec<&str> = done.exchanges.iter().map(path).collect::<Result<_>>()?;
    let want: Vec<String> = (0..N).map(|i| format!("/client/{i}")).collect();
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(&w.as_str())).collect();
    assert!(
        missing.is_empty() && waited.is_ok(),
        "{} of {N} short-lived curl processes not captured: {missing:?}\nmetrics: {}",
        missing.len(),
        done.metrics.summary()
    );
    assert_eq!(got, want, "order");
    for entry in &done.exchanges {
        assert_eq!(
            str_at(entry, "/_capture/conn/role")?,
            "client",
            "{}",
            brief(entry)
        );
        assert_eq!(
            str_at(entry, "/_capture/conn/dst")?,
            server.addr().to_string(),
            "{}",
            brief(entry)
        );
    }
    done.assert_clean()
}

// Usage errors need neither root nor BPF: they must fail before anything is loaded.

fn daemon_usage_error(args: &[&str]) -> Result<String> {
    let bin = daemon_binary(&workspace_root())?;
    let out = run_unchecked(Command::new(bin).args(args), RUN_TIMEOUT)?;
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status for {args:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr)?;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "want a one-line error for {args:?}, got:\n{stderr}"
    );
    Ok(lines[0].to_owned())
}

#[test]
fn unknown_flag_exits_2_naming_it() -> Result<()> {
    let line = daemon_usage_error(&["--output", "-", "--no-such-flag"])?;
    assert!(line.contains("--no-such-flag"), "{line}");
    Ok(())
}

#[test]
fn bad_flag_value_exits_2_naming_flag_and_value() -> Result<()> {
    let line = daemon_usage_error(&["--output", "-", "--max-body-bytes", "lots"])?;
    assert!(
        line.contains("--max-body-bytes") && line.contains("lots"),
        "{line}"
    );
    Ok(())
}

#[test]
fn missing_cgroup_exits_2() -> Result<()> {
    let dir = capture_e2e::cgroup2_root()?.join("capture-test-does-not-exist");
    let dir = dir.to_str().context("cgroup path is not UTF-8")?;
    let line = daemon_usage_error(&["--target-cgroup", dir, "--output", "-"])?;
    assert!(
        line.contains("--target-cgroup") && line.contains(dir),
        "{line}"
    );
    Ok(())
}

/// Every body-bearing field of an entry: none may hold a byte under `--headers-only`.
fn assert_no_body(entry: &Value) {
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

#[test]
fn headers_only_lets_no_body_out_and_keeps_the_sizes() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--headers-only"])
        .start()?;
    let base = server.base_url();
    let secret = unique_marker("headers-only-body");
    let post = format!(r#"{{"note":"{secret}","n":42}}"#);
    let out = run(
        curl(None)
            .args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &post,
            ])
            .arg(format!("{base}/echo")),
        RUN_TIMEOUT,
    )?;
    assert_eq!(out.stdout, post.as_bytes());
    // A chunked request body, and chunked, gzip-encoded and binary responses.
    let out = run(
        curl(None)
            .args(["-H", "Transfer-Encoding: chunked", "--data-binary", &secret])
            .arg(format!("{base}/upload")),
        RUN_TIMEOUT,
    )?;
    let received = format!(r#"{{"received":{}}}"#, secret.len());
    assert_eq!(out.stdout, received.as_bytes());
    for p in ["/json", "/cookie", "/gzip", "/big"] {
        run(
            curl(None)
                .args(["-o", "/dev/null"])
                .arg(format!("{base}{p}")),
            RUN_TIMEOUT,
        )?;
    }
    daemon.wait_for_exchanges(6, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    done.assert_clean()?;
    for needle in [
        secret.as_str(),
        "hello",
        "cookie set",
        "received",
        "quick brown fox",
    ] {
        assert!(
            !done.output.contains(needle),
            "{needle:?} left with --headers-only"
        );
    }
    let by_path = |p: &str| -> Result<&Value> {
        done.exchanges
            .iter()
            .find(|e| path(e).is_ok_and(|x| x == p))
            .with_context(|| format!("{p} not captured"))
    };
    // The sizes on the wire stay: bodySize and _capture.original_size.
    let gzip_len = {
        let out = run(
            curl(None)
                .args(["-H", "Accept-Encoding: gzip", "-o", "-"])
                .arg(format!("{base}/gzip")),
            RUN_TIMEOUT,
        )?;
        out.stdout.len()
    };
    let sizes = [
        ("/echo", post.len(), post.len()),
        ("/upload", secret.len(), received.len()),
        ("/json", 0, JSON_BODY.len()),
        ("/cookie", 0, COOKIE_BODY.len()),
        ("/gzip", 0, gzip_len),
        ("/big", 0, BIG_LEN),
    ];
    for (p, request, response) in sizes {
        let entry = by_path(p)?;
        let b = brief(entry);
        assert_no_body(entry);
        assert_eq!(
            entry.pointer("/_capture/original_size/request"),
            Some(&Value::from(request)),
            "{b}"
        );
        assert_eq!(
            entry.pointer("/_capture/original_size/response"),
            Some(&Value::from(response)),
            "{b}"
        );
        assert_eq!(
            entry.pointer("/response/bodySize"),
            Some(&Value::from(response)),
            "{b}"
        );
        for part in ["request", "response"] {
            assert_eq!(
                entry.pointer(&format!("/_capture/truncated/{part}")),
                Some(&Value::Bool(false)),
                "{b}"
            );
        }
    }
    Ok(())
}
