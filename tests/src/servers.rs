//! Real HTTP servers to capture: the Python fixture (`fixtures/http_server.py`) and nginx with a
//! generated configuration (`fixtures/nginx.conf.template`). Each runs inside a test cgroup or
//! outside any, and is killed when its guard drops.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::cgroup::TestCgroup;
use crate::net::{free_port, wait_for_port};
use capture_test_support::ChildProcess;

const PYTHON_SERVER: &str = include_str!("../fixtures/http_server.py");
const H2C_UPGRADE_SERVER: &str = include_str!("../fixtures/h2c_upgrade_server.py");
const NGINX_TEMPLATE: &str = include_str!("../fixtures/nginx.conf.template");
const NGINX_H2C_TEMPLATE: &str = include_str!("../fixtures/nginx-h2c.conf.template");
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// `GET /json` body of the Python server.
pub const JSON_BODY: &str = r#"{"message":"hello","items":[1,2,3]}"#;
/// Length of `GET /big`.
pub const BIG_LEN: usize = 1024 * 1024;
/// `GET /cookie` body (sent chunked).
pub const COOKIE_BODY: &str = "cookie set\n";
/// `GET /json` body of nginx.
pub const NGINX_JSON_BODY: &str = r#"{"server":"nginx"}"#;

/// `GET /big` body: byte i is i % 251.
pub fn big_body() -> Vec<u8> {
    (0..BIG_LEN)
        .map(|i| u8::try_from(i % 251).unwrap_or_default())
        .collect()
}

/// `GET /gzip` body once decompressed.
pub fn gzip_plain() -> String {
    (0..200)
        .map(|i| format!("line {i:04}: the quick brown fox jumps over the lazy dog\n"))
        .collect()
}

/// The 1 KiB body nginx returns for every path but `/json`.
pub fn nginx_body() -> String {
    "0123456789abcdef".repeat(64)
}

fn python() -> String {
    std::env::var("CAPTURE_E2E_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// The Python HTTP/1.1 fixture server on 127.0.0.1 (see `fixtures/http_server.py` for routes).
#[derive(Debug)]
pub struct PythonServer {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl PythonServer {
    /// Starts the server inside `cgroup`, or outside any test cgroup when `None`.
    pub fn start(cgroup: Option<&TestCgroup>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-python-")
            .tempdir()?;
        let script = dir.path().join("http_server.py");
        fs::write(&script, PYTHON_SERVER)?;
        let port = free_port()?;
        let mut cmd = match cgroup {
            Some(cgroup) => cgroup.command(python()),
            None => Command::new(python()),
        };
        cmd.arg(&script)
            .arg("--port")
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr"))?);
        let mut process = ChildProcess::spawn(&mut cmd, "python http_server.py")?;
        if let Err(err) = wait_for_port(port, START_TIMEOUT) {
            process.kill();
            let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
            return Err(err.context(format!("python server did not start; stderr:\n{stderr}")));
        }
        Ok(Self {
            process,
            port,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// Writes `text` to `name` in a temporary directory and runs it with `python` on a free port
/// (`--port`), inside `cgroup` when given; returns once the port accepts connections.
fn start_script(
    cgroup: Option<&TestCgroup>,
    python: &str,
    name: &str,
    text: &str,
) -> Result<(ChildProcess, u16, TempDir)> {
    let dir = tempfile::Builder::new()
        .prefix("capture-e2e-python-")
        .tempdir()?;
    let script = dir.path().join(name);
    fs::write(&script, text)?;
    let port = free_port()?;
    let mut cmd = match cgroup {
        Some(cgroup) => cgroup.command(python),
        None => Command::new(python),
    };
    cmd.arg(&script)
        .arg("--port")
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("stderr"))?);
    let mut process = ChildProcess::spawn(&mut cmd, &format!("{python} {name}"))?;
    if let Err(err) = wait_for_port(port, START_TIMEOUT) {
        process.kill();
        let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        return Err(err.context(format!("{name} did not start; stderr:\n{stderr}")));
    }
    Ok((process, port, dir))
}

/// The interpreter that has Debian's `python3-h2`: `$CAPTURE_E2E_H2_PYTHON`, else
/// `/usr/bin/python3` (a `python3` earlier on `PATH`, e.g. pyenv's, does not see Debian's
/// packages).
fn h2_python() -> String {
    std::env::var("CAPTURE_E2E_H2_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned())
}

/// An HTTP/2 server entered through `Upgrade: h2c` (`fixtures/h2c_upgrade_server.py`, on the
/// `h2` library): every response is 200 `text/plain` `path=<path-and-query>\n`.
#[derive(Debug)]
pub struct H2cUpgradeServer {
    process: ChildProcess,
    port: u16,
    _dir: TempDir,
}

impl H2cUpgradeServer {
    /// Starts the server inside `cgroup`, or outside any test cgroup when `None`.
    pub fn start(cgroup: Option<&TestCgroup>) -> Result<Self> {
        let (process, port, dir) = start_script(
            cgroup,
            &h2_python(),
            "h2c_upgrade_server.py",
            H2C_UPGRADE_SERVER,
        )
        .context("the h2c upgrade server needs python3-h2 (apt-get install python3-h2)")?;
        Ok(Self {
            process,
            port,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }
}

/// nginx (one process: `master_process off`) serving `return 200` responses on 127.0.0.1.
/// All its files (configuration, pid, error log, temp directories) live in a temporary directory.
#[derive(Debug)]
pub struct Nginx {
    process: ChildProcess,
    port: u16,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx inside `cgroup`, or outside any test cgroup when `None`.
    pub fn start(cgroup: Option<&TestCgroup>) -> Result<Self> {
        Self::start_with(cgroup, &[])
    }

    /// Like [`Nginx::start`], with CPUs to pin it to (`taskset -c`), e.g. `&[0]`.
    pub fn start_with(cgroup: Option<&TestCgroup>, cpus: &[usize]) -> Result<Self> {
        Self::launch(cgroup, cpus, NGINX_TEMPLATE)
    }

    /// nginx speaking HTTP/2 in cleartext with prior knowledge (h2c) instead of HTTP/1.x, same
    /// routes plus `/cookie?v=S` (`Set-Cookie: session=S`) and `/echo` (answers with the request
    /// body, read in full first); pinned to `cpus` when not empty.
    pub fn start_h2c(cgroup: Option<&TestCgroup>, cpus: &[usize]) -> Result<Self> {
        Self::launch(cgroup, cpus, NGINX_H2C_TEMPLATE)
    }

    fn launch(cgroup: Option<&TestCgroup>, cpus: &[usize], template: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-nginx-")
            .tempdir()?;
        let port = free_port()?;
        let conf = dir.path().join("nginx.conf");
        fs::write(&conf, nginx_config(template, dir.path(), port)?)?;
        let program = if cpus.is_empty() { "nginx" } else { "taskset" };
        let mut cmd = match cgroup {
            Some(cgroup) => cgroup.command(program),
            None => Command::new(program),
        };
        if !cpus.is_empty() {
            let list: Vec<String> = cpus.iter().map(ToString::to_string).collect();
            cmd.arg("-c").arg(list.join(",")).arg("nginx");
        }
        // -e: the error log before the configuration is read, so nothing goes to /var/log/nginx.
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr"))?);
        let mut process = ChildProcess::spawn(&mut cmd, "nginx")?;
        if let Err(err) = wait_for_port(port, START_TIMEOUT) {
            process.kill();
            let log = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap_or_default();
            return Err(err.context(format!(
                "nginx did not start; stderr:\n{}\nerror.log:\n{}",
                log("stderr"),
                log("error.log")
            )));
        }
        Ok(Self { process, port, dir })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

fn nginx_config(template: &str, dir: &Path, port: u16) -> Result<String> {
    let dir = dir
        .to_str()
        .context("temporary directory path is not UTF-8")?;
    if dir.contains(char::is_whitespace) || dir.contains(['"', '\'', ';']) {
        bail!("temporary directory {dir:?} cannot be written into an nginx configuration");
    }
    Ok(template
        .replace("@DIR@", dir)
        .replace("@PORT@", &port.to_string())
        .replace("@BODY@", &nginx_body()))
}
