//! Child processes that die with their guard, and commands run to completion under a deadline.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
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
    /// Spawns `cmd`; `name` is used in error messages.
    pub fn spawn(cmd: &mut Command, name: &str) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {name} ({cmd:?})"))?;
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
