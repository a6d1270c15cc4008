//! A throw-away cgroup v2 directory that tests put their workloads in.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::env::cgroup2_root;

const PREFIX: &str = "capture-test-";

/// `<cgroup2 root>/capture-test-<pid>-<n>`: created by [`TestCgroup::new`], emptied (every
/// process in it killed) and removed on drop.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let root = cgroup2_root()?;
        remove_stale(&root);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{PREFIX}{}-{n}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cgroup nested under this one at `relative` (intermediate directories are created
    /// too), e.g. a kubepods-like tree. It is removed when dropped; whatever is left under this
    /// cgroup is removed with it.
    pub fn child(&self, relative: impl AsRef<Path>) -> Result<Self> {
        let path = self.path.join(relative);
        fs::create_dir_all(&path).with_context(|| format!("creating cgroup {}", path.display()))?;
        Ok(Self { path })
    }

    /// The cgroup id as `bpf_get_current_cgroup_id()` reports it: the directory's inode.
    pub fn id(&self) -> Result<u64> {
        Ok(fs::metadata(&self.path)
            .with_context(|| format!("stat {}", self.path.display()))?
            .ino())
    }

    /// A command that runs `program` inside this cgroup once spawned: a shell moves itself
    /// into the cgroup and then execs `program` (same pid), so not one instruction of
    /// `program` runs outside it. Add arguments, environment and stdio as usual.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.path.join("cgroup.procs"))
            .arg(program);
        cmd
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Result<Vec<u32>> {
        read_pids(&self.path)
    }

    /// Kills every process in the cgroup and waits (up to 5 s) until it is empty.
    pub fn kill_all(&self) {
        kill_all(&self.path);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(err) = remove(&self.path) {
            eprintln!(
                "warning: could not remove test cgroup {}: {err:#}",
                self.path.display()
            );
        }
    }
}

fn read_pids(dir: &Path) -> Result<Vec<u32>> {
    let procs = dir.join("cgroup.procs");
    let text =
        fs::read_to_string(&procs).with_context(|| format!("reading {}", procs.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect())
}

fn kill_all(dir: &Path) {
    // cgroup.kill (Linux 5.14+) kills the whole subtree atomically; fall back to
    // signalling each pid on older kernels.
    if fs::write(dir.join("cgroup.kill"), "1").is_err() {
        for pid in read_pids(dir).unwrap_or_default() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while read_pids(dir).is_ok_and(|pids| !pids.is_empty()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

fn remove(dir: &Path) -> Result<()> {
    kill_all(dir);
    // Nested cgroups first: a cgroup with children cannot be removed.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove(&entry.path())?;
            }
        }
    }
    // rmdir fails with EBUSY until the last task has fully left (exiting tasks can linger
    // briefly), so retry for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("rmdir {}", dir.display()));
            }
            Err(_) => {
                kill_all(dir);
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Removes test cgroups left behind by test processes that no longer exist (e.g. killed by
/// a signal before their guards ran).
fn remove_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{owner}")).exists() {
            let _ = remove(&entry.path());
        }
    }
}
