//! Limits and loss end to end, with the real daemon and real eBPF: what cannot be captured is
//! counted, and the counts add up with what crossed the sockets.
//!
//! - A ring buffer filled on purpose (`--ring-buffer-bytes 65536`, megabyte responses): every
//!   byte the server moved was either read by the daemon or counted lost by the kernel, and the
//!   gaps the daemon reports are within what was lost.
//! - `--max-iovecs`: the iovecs past the limit are one counted truncation and a gap of exactly
//!   their length; sendfile(2), whose bytes never pass through user memory, is a gap of exactly
//!   the file's length. The exchange stays whole around the gap.
//! - SIGTERM: an exchange in flight is written out as `incomplete: "flushed"`, and the daemon
//!   exits within `--shutdown-deadline` even with a collector that never answers, dropping
//!   (and logging) what it could not deliver.
//!
//! The tests of this binary run one at a time: the burst of the first must not cost the
//! others (which demand zero loss) their events. Needs root and cgroup v2 (skips loudly
//! otherwise, fails under `CI=true`) and a built daemon.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use capture_e2e::har::{brief, path, request_body, response_body, str_at};
use capture_e2e::{
    Daemon, HttpConnection, JSON_BODY, PythonServer, TestCgroup, big_body,
    capture_environment_ready, curl, run,
};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// Exchanges are written within ~100 ms of completing; this leaves room for a busy machine.
const WRITE_TIMEOUT: Duration = Duration::from_secs(15);

/// Returns early from a test (after a loud notice) when root/cgroup v2 are missing and CI is not set.
macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

/// One test of this binary at a time (see the module comment).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn metric(daemon: &Daemon, series: &str) -> Result<f64> {
    daemon
        .metrics()?
        .get(series)
        .with_context(|| format!("{series} missing from /metrics"))
}

/// Polls `cond` every 25 ms until it holds; fails naming `what` after `timeout`.
fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `python3 -c SCRIPT ARGS...` inside `cgroup`, run to completion; its stdout.
fn python_in(cgroup: &TestCgroup, script: &str, args: &[String]) -> Result<String> {
    let out = run(
        cgroup.command("python3").arg("-c").arg(script).args(args),
        RUN_TIMEOUT,
    )?;
    Ok(String::from_utf8(out.stdout)?)
}

#[test]
fn a_full_ring_buffer_is_counted_and_adds_up_with_the_bytes_moved() -> Result<()> {
    require_capture_environment!();
    let _serial = serial();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    // The smallest ring the daemon accepts: four 16 KiB chunk events fill it, and one write of
    // a megabyte response produces sixty-four of them within one system call.
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--ring-buffer-bytes", "65536"])
        .start()?;

    // Keep-alive: a response's lost tail shows as a gap when the next response on the same
    // connection starts at a later byte; only the tail right before each close cannot be seen.
    const CONNECTIONS: usize = 2;
    const REQUESTS: usize = 4;
    let request = b"GET /big HTTP/1.1\r\nHost: capture\r\n\r\n";
    let mut moved = 0u64;
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(server.addr())?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        for _ in 0..REQUESTS {
            stream.write_all(request)?;
            let response = read_response(&mut stream)?;
            ensure!(
                response.ends_with(&big_body()),
                "short response ({} bytes)",
                response.len()
            );
            moved += (request.len() + response.len()) as u64;
        }
    }

    // The kernel's counters are final (every system call has returned); the daemon's catch up
    // as it drains. Each byte is either read by the daemon or counted lost by the kernel.
    let mut last = String::new();
    wait_for(WRITE_TIMEOUT, "read + lost == moved", || {
        let m = daemon.metrics()?;
        let read = m.get("capture_event_bytes_total").unwrap_or(-1.0);
        let lost = m.get("capture_kernel_bytes_lost_total").unwrap_or(-1.0);
        last = format!(
            "read {read} + lost {lost} vs moved {moved}; {}",
            m.summary()
        );
        Ok(read + lost == moved as f64)
    })
    .with_context(|| last.clone())?;

    // The counter and the output agree before the shutdown flush adds the exchanges whose
    // close was lost with the rest.
    wait_for(
        WRITE_TIMEOUT,
        "capture_exchanges_total == lines written",
        || {
            let counted = daemon.metrics()?.sum("capture_exchanges_total");
            Ok(counted == daemon.exchanges()?.len() as f64
                && counted == daemon.metrics()?.sum("capture_exchanges_total"))
        },
    )?;
    let done = daemon.finish()?;
    let m = &done.metrics;
    let get = |name: &str| {
        m.get(name)
            .with_context(|| format!("{name} missing from /metrics"))
    };
    let lost_events = get("capture_kernel_events_lost_total")?;
    let lost_bytes = get("capture_kernel_bytes_lost_total")?;
    let gap_bytes = get("capture_gap_bytes_total")?;
    let read = get("capture_event_bytes_total")?;
    let loss_gaps = get("capture_loss_gaps_total")?;
    let reorder_gaps = get("capture_reorder_gaps_total")?;
    eprintln!(
        "moved {moved}, read {read}, lost {lost_bytes} bytes in {lost_events} events, gaps {gap_bytes} \
         ({loss_gaps} taken at once after a loss, {reorder_gaps} after waiting)"
    );
    // The daemon saw the kernel's lost-events counter move, so the holes behind the loss were
    // not waited for (200 ms each, buffering what followed).
    ensure!(loss_gaps > 0.0, "no hole taken as a loss: {}", m.summary());
    ensure!(
        lost_events > 0.0 && lost_bytes > 0.0,
        "the ring never filled: {}",
        m.summary()
    );
    assert_eq!(read + lost_bytes, moved as f64, "{}", m.summary());
    // A hole is seen when a later byte of the same stream arrives at a connection the daemon
    // still follows; what was lost right before a close, or on a connection the decoder gave
    // up on, is never seen as one. So the gaps are some of what was lost, never more.
    ensure!(
        gap_bytes > 0.0 && gap_bytes <= lost_bytes,
        "gaps {gap_bytes} vs lost {lost_bytes}: {}",
        m.summary()
    );
    assert!(done.status.success(), "{}", done.status);
    // What was written is right as far as it goes: a response that lost bytes says so.
    for entry in &done.exchanges {
        let b = brief(entry);
        assert_eq!(path(entry)?, "/big", "{b}");
        let body = response_body(entry)?;
        let truncated = entry.pointer("/_capture/truncated/response") == Some(&Value::Bool(true));
        let incomplete = entry
            .pointer("/_capture/incomplete")
            .is_some_and(|v| !v.is_null());
        ensure!(
            body == big_body() || truncated || incomplete,
            "a response that lost bytes is not flagged: {b}"
        );
    }
    Ok(())
}

/// Reads one response with a Content-Length body from `stream`, nothing past it; all its bytes.
fn read_response(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut want = None;
    loop {
        if want.is_none()
            && let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .with_context(|| format!("no Content-Length in {head:?}"))?
                .trim()
                .parse()?;
            want = Some(end + 4 + length);
        }
        if want.is_some_and(|w| buf.len() >= w) {
            ensure!(want == Some(buf.len()), "read past the response");
            return Ok(buf);
        }
        let n = stream.read(&mut chunk)?;
        ensure!(n > 0, "connection closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A POST /echo whose head is one iovec and whose 600-byte body is three more (100, 200, 300
/// bytes), sent with one sendmsg(2); prints the response body.
const SENDMSG_CLIENT: &str = r#"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
head = b"POST /echo?iovecs HTTP/1.1\r\nHost: capture\r\nContent-Type: text/plain\r\nContent-Length: 600\r\nConnection: close\r\n\r\n"
parts = [head, b"A" * 100, b"B" * 200, b"C" * 300]
assert s.sendmsg(parts) == sum(map(len, parts))
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.split(b"\r\n\r\n", 1)[1].decode())
"#;

/// A POST /echo whose head is written with send(2) and whose body is a file sent with
/// sendfile(2); prints the response body.
const SENDFILE_CLIENT: &str = r#"
import os, socket, sys, tempfile
body = bytes(b"0123456789abcdef"[i % 16] for i in range(int(sys.argv[2])))
with tempfile.TemporaryFile() as f:
    f.write(body)
    f.flush()
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"POST /echo?sendfile HTTP/1.1\r\nHost: capture\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    sent = 0
    while sent < len(body):
        sent += os.sendfile(s.fileno(), f.fileno(), sent, len(body) - sent)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
sys.stdout.write(data.split(b"\r\n\r\n", 1)[1].decode())
"#;

#[test]
fn iovecs_past_max_iovecs_and_sendfile_are_counted_gaps_of_their_exact_length() -> Result<()> {
    require_capture_environment!();
    let _serial = serial();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(None)?;
    let port = server.port().to_string();
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--max-iovecs", "2"])
        .start()?;

    // 1. sendmsg with four iovecs, two walked: the last two (500 bytes) are a gap.
    let echoed = python_in(&cgroup, SENDMSG_CLIENT, std::slice::from_ref(&port))?;
    let body = format!("{}{}{}", "A".repeat(100), "B".repeat(200), "C".repeat(300));
    assert_eq!(echoed, body);
    daemon.wait_for_exchanges(1, WRITE_TIMEOUT)?;
    assert_eq!(metric(&daemon, "capture_kernel_truncations_total")?, 1.0);
    assert_eq!(metric(&daemon, "capture_gap_bytes_total")?, 500.0);

    // 2. sendfile: the whole file is a gap, and no truncation (no limit was hit).
    const FILE_LEN: usize = 5000;
    let echoed = python_in(&cgroup, SENDFILE_CLIENT, &[port, FILE_LEN.to_string()])?;
    assert_eq!(echoed.len(), FILE_LEN);
    daemon.wait_for_exchanges(2, WRITE_TIMEOUT)?;
    assert_eq!(metric(&daemon, "capture_kernel_truncations_total")?, 1.0);
    assert_eq!(
        metric(&daemon, "capture_gap_bytes_total")?,
        (500 + FILE_LEN) as f64
    );

    let done = daemon.finish()?;
    assert_eq!(done.exchanges.len(), 2, "{}", done.output);
    let m = &done.metrics;
    assert_eq!(m.get("capture_kernel_events_lost_total"), Some(0.0));
    assert_eq!(
        m.get("capture_gap_bytes_total"),
        Some((500 + FILE_LEN) as f64)
    );
    // The exchanges around the gaps are whole: the request's head and what was copied of its
    // body, and the response, which came in one piece.
    let iovecs = &done.exchanges[0];
    let b = brief(iovecs);
    assert_eq!(path(iovecs)?, "/echo?iovecs", "{b}");
    assert_eq!(request_body(iovecs)?, "A".repeat(100).as_bytes(), "{b}");
    assert_eq!(
        iovecs.pointer("/_capture/truncated/request"),
        Some(&Value::Bool(true)),
        "{b}"
    );
    assert_eq!(
        iovecs.pointer("/_capture/original_size/request"),
        Some(&Value::from(600)),
        "{b}"
    );
    assert_eq!(response_body(iovecs)?, body.as_bytes(), "{b}");
    let sendfile = &done.exchanges[1];
    let b = brief(sendfile);
    assert_eq!(path(sendfile)?, "/echo?sendfile", "{b}");
    assert_eq!(request_body(sendfile)?, b"", "{b}");
    assert_eq!(
        sendfile.pointer("/_capture/truncated/request"),
        Some(&Value::Bool(true)),
        "{b}"
    );
    assert_eq!(
        sendfile.pointer("/_capture/original_size/request"),
        Some(&Value::from(FILE_LEN)),
        "{b}"
    );
    assert_eq!(response_body(sendfile)?.len(), FILE_LEN, "{b}");
    for entry in &done.exchanges {
        assert_eq!(
            entry.pointer("/response/status"),
            Some(&Value::from(200)),
            "{}",
            brief(entry)
        );
    }
    Ok(())
}

/// A collector that accepts connections and never says a word: every push hangs until the
/// daemon gives up on it.
struct SilentCollector {
    port: u16,
    _thread: std::thread::JoinHandle<()>,
}

impl SilentCollector {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        Ok(Self {
            port,
            _thread: thread,
        })
    }
}

/// ANSI colour codes out of a text log.
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

#[test]
fn sigterm_flushes_in_flight_exchanges_within_the_shutdown_deadline() -> Result<()> {
    require_capture_environment!();
    let _serial = serial();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let collector = SilentCollector::start()?;
    const DEADLINE: Duration = Duration::from_secs(3);
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args([
            "--collector",
            &format!("http://127.0.0.1:{}", collector.port),
            "--collector-insecure",
            "--export-timeout",
            "60s",
            "--export-batch-max-delay",
            "100ms",
            "--shutdown-deadline",
            "3s",
        ])
        .start()?;

    for i in 0..3 {
        run(
            curl(None).arg(format!("{}/json?whole={i}", server.base_url())),
            RUN_TIMEOUT,
        )?;
    }
    daemon.wait_for_exchanges(3, WRITE_TIMEOUT)?;
    // The exporter has tried: its push hangs on the silent collector.
    wait_for(WRITE_TIMEOUT, "the exporter handed 3 exchanges", || {
        Ok(metric(&daemon, "capture_export_exchanges_total")? == 3.0)
    })?;
    let mut conn = HttpConnection::connect(server.addr(), IO_TIMEOUT)?;
    let bytes_before = metric(&daemon, "capture_event_bytes_total")?;
    let partial =
        b"POST /echo?in-flight HTTP/1.1\r\nHost: capture\r\nContent-Length: 10\r\n\r\nhello";
    conn.send(partial)?;
    wait_for(
        WRITE_TIMEOUT,
        "the partial request read by the daemon",
        || Ok(metric(&daemon, "capture_event_bytes_total")? >= bytes_before + partial.len() as f64),
    )?;

    let asked = Instant::now();
    let done = daemon.finish()?;
    let took = asked.elapsed();
    eprintln!("exited {took:?} after SIGTERM");
    assert!(done.status.success(), "{}", done.status);
    assert_eq!(done.status.signal(), None);
    // The deadline, plus a second for a debug build on a busy machine to get to it and exit.
    ensure!(
        took < DEADLINE + Duration::from_secs(2),
        "took {took:?} with a deadline of {DEADLINE:?}"
    );
    let paths: Vec<&str> = done.exchanges.iter().map(path).collect::<Result<_>>()?;
    assert_eq!(
        paths,
        [
            "/json?whole=0",
            "/json?whole=1",
            "/json?whole=2",
            "/echo?in-flight"
        ]
    );
    for entry in &done.exchanges[..3] {
        assert_eq!(
            response_body(entry)?,
            JSON_BODY.as_bytes(),
            "{}",
            brief(entry)
        );
    }
    let flushed = &done.exchanges[3];
    assert_eq!(
        str_at(flushed, "/_capture/incomplete")?,
        "flushed",
        "{}",
        brief(flushed)
    );
    assert_eq!(request_body(flushed)?, b"hello", "{}", brief(flushed));
    // Nothing was delivered: the four are dropped at the deadline, and the line says how many.
    let stderr = strip_ansi(&done.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("exporter stopped"))
        .with_context(|| format!("no 'exporter stopped' line in:\n{stderr}"))?;
    ensure!(
        line.contains("dropped=4") && line.contains("spooled=0"),
        "{line}"
    );
    drop(conn);
    Ok(())
}

/// Eight uploads of 512 KiB stall half-way while the daemon may hold 1 MiB for all connections
/// together: the connections holding most drop their bodies until a quarter of the budget is
/// free; the uploads then end and every exchange is still written, in step, the dropped bodies
/// cut and flagged truncated with their full size.
#[test]
fn stalled_uploads_past_max_buffered_bytes_drop_bodies_and_keep_every_exchange() -> Result<()> {
    require_capture_environment!();
    let _serial = serial();
    const UPLOADS: usize = 8;
    const BODY: usize = 512 * 1024;
    const BUDGET: usize = 1024 * 1024;
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    let daemon = Daemon::builder()
        .target_cgroup(&cgroup)
        .args(["--max-buffered-bytes", &BUDGET.to_string()])
        .start()?;

    let body: Vec<u8> = (0..BODY).map(|i| b'a' + (i % 26) as u8).collect();
    let mut conns = Vec::new();
    let mut first_halves = 0;
    for i in 0..UPLOADS {
        let mut conn = HttpConnection::connect(server.addr(), IO_TIMEOUT)?;
        let head = format!(
            "POST /upload?n={i} HTTP/1.1\r\nHost: capture\r\nContent-Length: {BODY}\r\n\r\n"
        );
        conn.send(head.as_bytes())?;
        conn.send(&body[..BODY / 2])?;
        first_halves += head.len() + BODY / 2;
        conns.push(conn);
    }
    // Half of each body (2 MiB in all) is read by the server and seen by the daemon before
    // any upload goes on: an upload that ended early would free its bytes and spare a cut.
    wait_for(WRITE_TIMEOUT, "the first halves captured", || {
        Ok(metric(&daemon, "capture_event_bytes_total")? >= first_halves as f64)
    })?;
    wait_for(
        WRITE_TIMEOUT,
        "bodies dropped over --max-buffered-bytes",
        || Ok(metric(&daemon, "capture_memory_sheds_total")? > 0.0),
    )?;
    // Each count ends at most at the budget (at three quarters of it when it shed).
    let held = metric(&daemon, "capture_buffered_bytes")?;
    ensure!(
        held <= BUDGET as f64,
        "{held} bytes held at the last count, budget {BUDGET}"
    );
    for conn in &mut conns {
        conn.send(&body[BODY / 2..])?;
    }
    for conn in &mut conns {
        let response = conn.read_response(false)?;
        assert_eq!(response.status, 201);
        assert_eq!(response.body, format!("{{\"received\":{BODY}}}").as_bytes());
    }
    daemon.wait_for_exchanges(UPLOADS, WRITE_TIMEOUT)?;

    let done = daemon.finish()?;
    let paths: BTreeSet<&str> = done.exchanges.iter().map(path).collect::<Result<_>>()?;
    let want: BTreeSet<String> = (0..UPLOADS).map(|i| format!("/upload?n={i}")).collect();
    assert_eq!(
        paths,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    let mut cut = 0;
    for entry in &done.exchanges {
        let b = brief(entry);
        assert_eq!(
            entry.pointer("/_capture/original_size/request"),
            Some(&Value::from(BODY)),
            "{b}"
        );
        assert_eq!(
            response_body(entry)?,
            format!("{{\"received\":{BODY}}}").as_bytes(),
            "{b}"
        );
        assert!(
            entry
                .pointer("/_capture/incomplete")
                .is_none_or(Value::is_null),
            "{b}"
        );
        let sent = request_body(entry)?;
        if entry.pointer("/_capture/truncated/request") == Some(&Value::Bool(true)) {
            cut += 1;
            // What was kept before the drop and nothing after: a prefix, short of the body.
            assert!(sent.len() < BODY / 2 && body.starts_with(&sent), "{b}");
        } else {
            assert_eq!(sent, body, "{b}");
        }
    }
    // The halves alone were 2 MiB against 1 MiB. The count comes after each eighth of the
    // budget captured, so once they were all in, the uploads still whole held at most the
    // budget plus an eighth (1.125 MiB): four halves of 256 KiB, so four cut at least. The
    // second halves may cut more, or not, depending on how the uploads and answers interleave.
    assert!(cut >= UPLOADS / 2, "{cut} bodies cut");
    assert!(done.metrics.sum("capture_memory_shed_bytes_total") > 0.0);
    assert_eq!(
        done.metrics.sum("capture_memory_sheds_total"),
        cut as f64,
        "one shed per body cut"
    );
    done.assert_clean()
}
