//! Child processes that die with their guard, and with the test process, and commands run to
//! completion under a deadline.

use std::io::{self, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A spawned process that is killed and reaped when dropped, so a failing test leaves nothing running.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    name: String,
    exited: Option<ExitStatus>,
}

impl ChildProcess {
    /// Spawns `cmd`; `name` is used in error messages. The child is killed when the test
    /// process dies, however it dies (see [`spawn_tied`]).
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<Self> {
        let child = spawn_tied(cmd).with_context(|| format!("spawning {name} ({cmd:?})"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying child, e.g. to take its stdin or stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// `Some(status)` once the process has exited (and been reaped).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .with_context(|| format!("waiting for {}", self.name))?;
        }
        Ok(self.exited)
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.exited.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).context("pid out of range")?;
        kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {}", self.name))
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + crate::patient(timeout);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills (SIGKILL) and reaps the process; a no-op once it has exited.
    pub fn kill(&mut self) {
        if matches!(self.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.exited = Some(status);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command to spawn, and where the spawned child (and the command, given back) go.
type SpawnJob = (
    Box<Command>,
    mpsc::Sender<(Box<Command>, io::Result<Child>)>,
);

/// Spawns `cmd` so that it gets SIGKILL when this process dies: a test binary killed mid-run
/// (a CI timeout, ^C, SIGKILL) used to leave its daemons running, their eBPF programs still
/// attached. Guards only kill children on unwinding.
///
/// The kernel sends `PR_SET_PDEATHSIG`'s signal when the *thread* that forked the child
/// exits, not the process. Tests run on threads that end with them, and a daemon one test
/// starts may be shared with later tests, so every child is forked by one thread that lives as
/// long as the process.
fn spawn_tied(cmd: &mut Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<Option<mpsc::Sender<SpawnJob>>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let started = thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let child = spawn_with_deathsig(&mut cmd);
                    let _ = reply.send((cmd, child));
                }
            });
        Mutex::new(started.ok().map(|_| tx))
    });
    let (reply, replied) = mpsc::channel();
    // The command travels by value and comes back, so the caller's `&mut Command` is left as
    // it was (its settings, and the pipes it holds until the spawn).
    let owned = Box::new(std::mem::replace(cmd, Command::new("")));
    let stopped = || io::Error::other("the child-spawner thread could not start or has stopped");
    {
        let spawner = spawner
            .lock()
            .map_err(|_| io::Error::other("the child-spawner lock is poisoned"))?;
        let Some(tx) = spawner.as_ref() else {
            *cmd = *owned;
            return Err(stopped());
        };
        if let Err(mpsc::SendError((owned, _))) = tx.send((owned, reply)) {
            *cmd = *owned;
            return Err(stopped());
        }
    }
    let (owned, child) = replied.recv().map_err(|_| stopped())?;
    *cmd = *owned;
    child
}

/// Spawns `cmd` with `PR_SET_PDEATHSIG` = SIGKILL, on the calling thread.
fn spawn_with_deathsig(cmd: &mut Command) -> io::Result<Child> {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes two system calls (prctl, getppid),
    // allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died before the prctl took effect: then nobody would
            // kill this child.
            if nix::unistd::getppid() != parent {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs `cmd` to completion, collecting stdout and stderr; kills it after `timeout`.
/// Fails when it times out or exits unsuccessfully, with its stderr in the error.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let output = run_unchecked(cmd, timeout)?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Like [`run`] but returns the output whatever the exit status.
pub fn run_unchecked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildProcess::spawn(cmd, &format!("{:?}", cmd.get_program()))?;
    let stdout = child.child_mut().stdout.take().map(drain);
    let stderr = child.child_mut().stderr.take().map(drain);
    let Some(status) = child.wait_timeout(timeout)? else {
        child.kill();
        bail!("{cmd:?} did not finish within {timeout:?}");
    };
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Like [`run`], and also the pid the command ran as (a test compares it with the pid a
/// capture reports, rather than trusting the capture's own).
pub fn run_with_pid(cmd: &mut Command, timeout: Duration) -> Result<(u32, Output)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildProcess::spawn(cmd, &format!("{:?}", cmd.get_program()))?;
    let pid = child.pid();
    let stdout = child.child_mut().stdout.take().map(drain);
    let stderr = child.child_mut().stderr.take().map(drain);
    let Some(status) = child.wait_timeout(timeout)? else {
        child.kill();
        bail!("{cmd:?} did not finish within {timeout:?}");
    };
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default()
    };
    let output = Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    if !output.status.success() {
        bail!(
            "{cmd:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok((pid, output))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};

    use super::*;

    /// Set in the copy of this test binary that [`children_die_with_the_test_process`] runs.
    const MIDDLE_ENV: &str = "CAPTURE_TEST_SUPPORT_MIDDLE";

    fn state(pid: i32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[test]
    fn children_die_with_the_test_process() -> Result<()> {
        if std::env::var_os(MIDDLE_ENV).is_some() {
            // The middle process: spawn from a thread that then ends, as a test that starts a
            // shared daemon does, say which pid it got, and wait to be killed.
            let child = thread::spawn(|| {
                let mut sleep = Command::new("sleep");
                // Its own stdio: a grandchild that outlives the test must not hold the pipes
                // of whoever runs the tests.
                sleep.arg("60").stdout(Stdio::null()).stderr(Stdio::null());
                ChildProcess::spawn(&mut sleep, "sleep")
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the spawning thread panicked"))??;
            println!("grandchild {}", child.pid());
            // Held by no guard, so only the death signal can end it.
            std::mem::forget(child);
            thread::sleep(Duration::from_secs(600));
            return Ok(());
        }
        let mut middle = ChildProcess::spawn(
            Command::new(std::env::current_exe()?)
                .args([
                    "--exact",
                    "process::tests::children_die_with_the_test_process",
                ])
                .args(["--nocapture", "--test-threads", "1"])
                .env(MIDDLE_ENV, "1")
                .stdout(Stdio::piped()),
            "the middle test process",
        )?;
        let stdout = middle.child_mut().stdout.take().context("no stdout")?;
        let line = BufReader::new(stdout)
            .lines()
            .find_map(|line| Some(line.ok()?.split_once("grandchild ")?.1.trim().to_owned()))
            .context("the middle process did not say its grandchild's pid")?;
        // libtest writes `test <name> ... ` before the test's own output, on the same line.
        let grandchild: i32 = line.parse()?;
        let alive = || matches!(state(grandchild), Some(c) if c != 'Z');
        thread::sleep(Duration::from_millis(200));
        assert!(
            alive(),
            "the grandchild died with the thread that spawned it"
        );
        middle.signal(Signal::SIGKILL)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if alive() {
            let _ = kill(Pid::from_raw(grandchild), Signal::SIGKILL);
            bail!("the grandchild {grandchild} outlived the killed test process");
        }
        Ok(())
    }
}
