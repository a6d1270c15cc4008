//! The chart's capability set, proven on this machine with the real daemon and real eBPF.
//!
//! The set is read from the rendered chart (so chart and proof cannot drift). The daemon then
//! runs as the pod would: uid 0, `no_new_privs` (allowPrivilegeEscalation: false), and
//! exactly those capabilities in its bounding, inheritable, ambient, permitted and effective
//! sets. It captures a workload that runs as another user (nobody), including a connection the
//! workload accepted before the daemon started, which the daemon can only name from
//! `/proc/<pid>/fd` and `/proc/<pid>/net/tcp`.
//!
//! Then each capability is taken away in turn, and its absence must show: without BPF or
//! PERFMON the daemon stops at start with a message naming them; without SYS_PTRACE or
//! DAC_READ_SEARCH the older connection's endpoints are unknown. A capability whose absence
//! changes nothing fails the test: the chart would grant more than the daemon needs.
//!
//! Needs root, cgroup v2, BPF, the Helm SDK, setpriv and /usr/bin/python3 (fails under CI
//! without them).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use capture_e2e::chart::{RenderedChart, chart_dir};
use capture_e2e::har::{brief, str_at};
use capture_e2e::helm::helm_sdk_ready;
use capture_e2e::{
    ChildProcess, Daemon, HttpConnection, TestCgroup, capture_environment_ready, daemon_binary,
    free_port, unique_marker, wait_for_port, workspace_root,
};
use serde_json::Value;

/// The workload runs as this user, like most pods (runAsNonRoot).
const WORKLOAD_UID: &str = "65534";
/// Debian's interpreter: readable by the workload user (a pyenv under /root is not).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";
const TIMEOUT: Duration = Duration::from_secs(30);

/// Linux capability numbers (linux/capability.h), by their Kubernetes names.
const CAPABILITY_NUMBERS: [(&str, u32); 41] = [
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

fn capability_mask(caps: &[String]) -> Result<u64> {
    caps.iter().try_fold(0u64, |mask, cap| {
        let (_, n) = CAPABILITY_NUMBERS
            .iter()
            .find(|(name, _)| name == cap)
            .with_context(|| format!("unknown capability {cap}"))?;
        Ok(mask | (1 << n))
    })
}

/// A script that starts the daemon the way the pod does: uid 0, no_new_privs, and `caps` as
/// every capability set, nothing else.
fn daemon_with_capabilities(dir: &Path, caps: &[String]) -> Result<PathBuf> {
    let daemon = daemon_binary(&workspace_root())?;
    let list: String = caps
        .iter()
        .map(|c| format!(",+{}", c.to_ascii_lowercase()))
        .collect();
    let script = dir.join("capture-daemon-with-capabilities");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec setpriv --reuid=0 --regid=0 --clear-groups --no-new-privs \
             --inh-caps=-all{list} --ambient-caps=-all{list} --bounding-set=-all{list} \
             -- '{}' \"$@\"\n",
            daemon.display()
        ),
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// The capability sets of a running process, from /proc/<pid>/status.
fn capability_sets(pid: u32) -> Result<Vec<(String, u64)>> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| {
            let (name, hex) = l.split_once(':').context("bad status line")?;
            Ok((name.to_owned(), u64::from_str_radix(hex.trim(), 16)?))
        })
        .collect()
}

/// `python3 -m http.server` (HTTP/1.1, keep-alive) as the workload user, inside `cgroup`,
/// serving one file.
struct NobodyServer {
    _process: ChildProcess,
    _dir: tempfile::TempDir,
    port: u16,
    body: String,
}

impl NobodyServer {
    fn start(cgroup: &TestCgroup) -> Result<Self> {
        if !Path::new(SYSTEM_PYTHON).is_file() {
            bail!("{SYSTEM_PYTHON} is missing (apt-get install python3)");
        }
        let dir = tempfile::Builder::new()
            .prefix("capture-e2e-nobody-")
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        let body = unique_marker("served-to-nobody");
        fs::write(dir.path().join("hello.txt"), &body)?;
        let port = free_port()?;
        let mut cmd = cgroup.command("setpriv");
        cmd.args([
            &format!("--reuid={WORKLOAD_UID}"),
            &format!("--regid={WORKLOAD_UID}"),
            "--clear-groups",
            SYSTEM_PYTHON,
            "-m",
            "http.server",
            "--protocol",
            "HTTP/1.1",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path())
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let process = ChildProcess::spawn(&mut cmd, "http.server as nobody")?;
        wait_for_port(port, TIMEOUT)?;
        let uid = fs::read_to_string(format!("/proc/{}/status", process.pid()))?
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
        assert_eq!(
            uid.as_deref(),
            Some(WORKLOAD_UID),
            "the workload must not be root"
        );
        Ok(Self {
            _process: process,
            _dir: dir,
            port,
            body,
        })
    }
}

/// What a daemon holding some capabilities did.
enum Outcome {
    /// It did not start; its error.
    Refused(String),
    /// It captured everything; the exchanges whose endpoints it could not name.
    Captured { unnamed: Vec<String> },
}

/// Runs the daemon with exactly `caps` against a nobody workload: one connection opened before
/// the daemon starts, one after.
fn capture_with(caps: &[String]) -> Result<Outcome> {
    let cgroup = TestCgroup::new()?;
    let server = NobodyServer::start(&cgroup)?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let mut old = HttpConnection::connect(addr, TIMEOUT)?;
    let old_local = old.local_addr()?;

    let scripts = tempfile::tempdir()?;
    let daemon = match Daemon::builder()
        .binary(daemon_with_capabilities(scripts.path(), caps)?)
        .target_cgroup(&cgroup)
        .start()
    {
        Ok(daemon) => daemon,
        Err(err) => return Ok(Outcome::Refused(format!("{err:#}"))),
    };

    // The process holds exactly `caps` in every set (CapInh, CapPrm, CapEff, CapBnd, CapAmb).
    let want = capability_mask(caps)?;
    for (set, mask) in capability_sets(daemon.pid())? {
        assert_eq!(
            mask, want,
            "{set} of the daemon is {mask:#x}, want {want:#x}"
        );
    }

    // One request on the connection older than the daemon, one on a connection opened after
    // it started (the kernel reports that accept, /proc names the server's local side).
    // Both clients are this test, outside the cgroup: the server side is what is captured.
    let mut new = HttpConnection::connect(addr, TIMEOUT)?;
    for (conn, label) in [(&mut old, "old"), (&mut new, "new")] {
        conn.send(
            format!(
                "GET /hello.txt?conn={label} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
                server.port
            )
            .as_bytes(),
        )?;
        let response = conn.read_response(false)?;
        assert_eq!(response.status, 200);
        assert_eq!(String::from_utf8_lossy(&response.body), server.body);
    }
    let new_local = new.local_addr()?;
    daemon.wait_for_exchanges(2, TIMEOUT)?;
    let finished = daemon.finish()?;
    finished.assert_clean()?;
    assert_eq!(
        finished.exchanges.len(),
        2,
        "{:#?}",
        finished.exchanges.iter().map(brief).collect::<Vec<_>>()
    );
    // Where each exchange came from, as far as the daemon could tell: the kernel reports the
    // peer of accept/connect, the rest (and anything about the connection older than the
    // daemon) is read from the workload's /proc/<pid>/fd and /proc/<pid>/net/tcp.
    let mut unnamed = Vec::new();
    for entry in &finished.exchanges {
        let url = str_at(entry, "/request/url")?;
        let conn = |field: &str| {
            entry
                .pointer(&format!("/_capture/conn/{field}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let client = if url.ends_with("conn=old") {
            old_local
        } else {
            assert!(url.ends_with("conn=new"), "{url}");
            new_local
        };
        let named = conn("role").as_deref() == Some("server")
            && conn("src") == Some(client.to_string())
            && conn("dst") == Some(addr.to_string());
        if !named {
            unnamed.push(format!(
                "{url}: role {:?}, src {:?}, dst {:?}",
                conn("role"),
                conn("src"),
                conn("dst")
            ));
        }
        assert_eq!(
            entry
                .pointer("/response/content/text")
                .and_then(Value::as_str),
            Some(server.body.as_str()),
            "{}",
            brief(entry)
        );
    }
    let urls: BTreeSet<&str> = finished
        .exchanges
        .iter()
        .filter_map(|e| e.pointer("/request/url").and_then(Value::as_str))
        .map(|u| u.rsplit('=').next().unwrap_or_default())
        .collect();
    assert_eq!(urls, BTreeSet::from(["new", "old"]));
    Ok(Outcome::Captured { unnamed })
}

#[test]
fn the_charts_capabilities_suffice_and_each_is_needed() -> Result<()> {
    if !capture_environment_ready()? {
        return Ok(());
    }
    let root = workspace_root();
    let Some(sdk) = helm_sdk_ready(&root)? else {
        return Ok(());
    };
    let caps = RenderedChart::render(&sdk, &chart_dir(&root), None)?.capabilities_added()?;
    assert!(!caps.is_empty());

    // Exactly the chart's set: everything is captured, the older connection is named too.
    match capture_with(&caps)? {
        Outcome::Captured { unnamed } if unnamed.is_empty() => {}
        Outcome::Captured { unnamed } => {
            bail!(
                "with the chart's capabilities {caps:?} these exchanges were not named: {unnamed:#?}"
            )
        }
        Outcome::Refused(err) => bail!("the daemon did not start with {caps:?}: {err}"),
    }

    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let outcome = capture_with(&fewer)?;
        match &outcome {
            Outcome::Refused(err) => eprintln!(
                "without {missing}: refused: {}",
                err.lines().last().unwrap_or_default()
            ),
            Outcome::Captured { unnamed } => eprintln!("without {missing}: not named: {unnamed:?}"),
        }
        match (missing.as_str(), outcome) {
            ("BPF" | "PERFMON", Outcome::Refused(err)) => {
                assert!(
                    err.contains("exited with exit status: 1")
                        && err.contains("not allowed to load eBPF programs")
                        && err.contains("CAP_BPF and CAP_PERFMON"),
                    "without {missing}: {err}"
                );
            }
            ("SYS_PTRACE" | "DAC_READ_SEARCH", Outcome::Captured { unnamed })
                if !unnamed.is_empty() =>
            {
                // The older connection is among them: only /proc could name it.
                assert!(
                    unnamed.iter().any(|u| u.contains("conn=old")),
                    "without {missing}: {unnamed:#?}"
                );
            }
            (_, Outcome::Captured { unnamed }) if unnamed.is_empty() => bail!(
                "without {missing} the daemon still did everything: the chart grants a capability it does not need"
            ),
            (_, Outcome::Captured { unnamed }) => bail!(
                "without {missing} these exchanges were not named (unexpected for this capability): {unnamed:#?}"
            ),
            (_, Outcome::Refused(err)) => {
                bail!("without {missing} the daemon did not start: {err}")
            }
        }
    }
    Ok(())
}
