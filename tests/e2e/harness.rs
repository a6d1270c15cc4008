//! The harness itself, without the daemon: cgroup guard, servers and their fixtures agree with
//! the constants the capture tests assert against. Needs root and cgroup v2 like the e2e tests.

use std::fs;
use std::time::Duration;

use anyhow::Result;
use capture_e2e::{
    COOKIE_BODY, ChildProcess, HttpConnection, JSON_BODY, NGINX_JSON_BODY, Nginx, PythonServer,
    TestCgroup, big_body, capture_environment_ready, curl, gzip_plain, http_get, nginx_body, run,
};

const TIMEOUT: Duration = Duration::from_secs(30);

macro_rules! require_capture_environment {
    () => {
        if !capture_environment_ready()? {
            return Ok(());
        }
    };
}

#[test]
fn cgroup_guard_runs_commands_inside_and_cleans_up() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let dir = cgroup.path().to_path_buf();
    let mut sleeper = ChildProcess::spawn(cgroup.command("sleep").arg("300"), "sleep")?;
    let pid = sleeper.pid();
    // The shell execs sleep, so the pid we hold is the one in the cgroup.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !cgroup.pids()?.contains(&pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never joined {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let own = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    assert!(
        own.lines()
            .any(|l| l.starts_with("0::/") && l.ends_with(name)),
        "{own}"
    );
    assert!(cgroup.id()? > 1);
    assert!(sleeper.try_wait()?.is_none());

    // Drop kills what is inside and removes the directory.
    drop(cgroup);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        sleeper.wait_timeout(TIMEOUT)?.is_some(),
        "process in the cgroup survived the guard"
    );
    Ok(())
}

#[test]
fn python_server_routes_match_the_constants() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let server = PythonServer::start(Some(&cgroup))?;
    assert!(cgroup.pids()?.contains(&server.pid()));
    let base = server.base_url();

    let json = http_get(server.addr(), "/json", TIMEOUT)?;
    assert_eq!(
        (json.status, json.body.as_slice()),
        (200, JSON_BODY.as_bytes())
    );
    assert_eq!(json.header("Server"), Some("capture-e2e/1"));
    let big = http_get(server.addr(), "/big", TIMEOUT)?;
    assert!(big.body == big_body(), "/big differs from big_body()");
    let gz = run(
        curl(None).arg("--compressed").arg(format!("{base}/gzip")),
        TIMEOUT,
    )?;
    assert_eq!(String::from_utf8(gz.stdout)?, gzip_plain());
    let cookie = http_get(server.addr(), "/cookie?v=abc", TIMEOUT)?;
    assert_eq!(cookie.body, COOKIE_BODY.as_bytes());
    assert_eq!(
        cookie.header("Set-Cookie"),
        Some("session=abc; Path=/; HttpOnly")
    );

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("up");
    let content: String = (0..3000).map(|i| format!("{i}\n")).collect();
    fs::write(&file, &content)?;
    let echo = run(
        curl(None)
            .args(["-H", "Transfer-Encoding: chunked", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .arg(format!("{base}/echo")),
        TIMEOUT,
    )?;
    assert_eq!(String::from_utf8(echo.stdout)?, content);

    // Pipelining and HEAD/204 on one connection, as the capture tests use them.
    let mut conn = HttpConnection::connect(server.addr(), TIMEOUT)?;
    let host = server.addr();
    conn.send(
        format!("HEAD /json HTTP/1.1\r\nHost: {host}\r\n\r\nGET /empty HTTP/1.1\r\nHost: {host}\r\n\r\nGET /x HTTP/1.1\r\nHost: {host}\r\n\r\n")
            .as_bytes(),
    )?;
    let head = conn.read_response(true)?;
    assert_eq!(
        (head.status, head.header("Content-Length")),
        (200, Some("35"))
    );
    assert_eq!(conn.read_response(false)?.status, 204);
    assert_eq!(conn.read_response(false)?.body, b"path=/x\n");
    Ok(())
}

#[test]
fn nginx_serves_from_the_cgroup() -> Result<()> {
    require_capture_environment!();
    let cgroup = TestCgroup::new()?;
    let nginx = Nginx::start(Some(&cgroup))?;
    assert!(cgroup.pids()?.contains(&nginx.pid()));
    let root = http_get(nginx.addr(), "/anything", TIMEOUT)?;
    assert_eq!((root.status, root.body.len()), (200, 1024));
    assert_eq!(root.body, nginx_body().as_bytes());
    let json = http_get(nginx.addr(), "/json", TIMEOUT)?;
    assert_eq!(json.body, NGINX_JSON_BODY.as_bytes());
    assert_eq!(
        nginx
            .error_log()
            .lines()
            .filter(|l| l.contains("[emerg]"))
            .count(),
        0
    );
    Ok(())
}
