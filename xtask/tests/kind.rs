//! `cargo xtask kind` as a user runs it: the real binary, with a PATH that lacks the tools or
//! holds a docker whose daemon does not answer, must stop with a message naming what is
//! missing and how to install it (exit code 1); and a dry run must print its plan without
//! running or writing anything, even with nothing on PATH.
//!
//! The cluster itself needs Docker, which this machine does not have; the commands the dry runs
//! print are asserted one by one in `xtask/src/kind.rs`.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// Runs `xtask args` with only `path` on PATH and `target` as the target directory.
fn xtask(args: &[&str], path: &Path, target: &Path) -> anyhow::Result<Output> {
    Ok(Command::new(XTASK)
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", target)
        .output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn script(dir: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[test]
fn up_without_the_tools_names_each_one_and_how_to_install_it() -> anyhow::Result<()> {
    let empty = tempfile::tempdir()?;
    let target = tempfile::tempdir()?;
    let out = xtask(&["kind", "up"], empty.path(), target.path())?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("`cargo xtask kind up` needs programs that are not on PATH"),
        "{stderr}"
    );
    for (tool, install) in [
        ("docker", "https://docs.docker.com/engine/install/"),
        ("kind", "go install sigs.k8s.io/kind@v0.29.0"),
        ("kubectl", "https://kubernetes.io/docs/tasks/tools/"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("- {tool}:")))
            .unwrap_or_else(|| panic!("no line for {tool} in {stderr}"));
        assert!(line.contains(install), "{line}");
    }
    // Nothing was created before the check.
    assert!(!target.path().join("kind").exists());
    Ok(())
}

#[test]
fn up_with_an_unreachable_docker_daemon_says_so() -> anyhow::Result<()> {
    let bin = tempfile::tempdir()?;
    let target = tempfile::tempdir()?;
    // A docker client without a daemon fails `docker info` like this.
    script(
        bin.path(),
        "docker",
        "echo 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1",
    )?;
    script(bin.path(), "kind", "exit 0")?;
    script(bin.path(), "kubectl", "exit 0")?;
    let out = xtask(&["kind", "up"], bin.path(), target.path())?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "the Docker daemon is not reachable (`docker info`: Cannot connect to the Docker daemon"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("systemctl start docker"), "{stderr}");
    assert!(!stderr.contains("not on PATH"), "{stderr}");
    Ok(())
}

#[test]
fn down_and_demo_need_only_their_tools() -> anyhow::Result<()> {
    let empty = tempfile::tempdir()?;
    let target = tempfile::tempdir()?;
    let down = xtask(&["kind", "down"], empty.path(), target.path())?;
    assert_eq!(down.status.code(), Some(1));
    let stderr = text(&down.stderr);
    assert!(stderr.contains("- kind:"), "{stderr}");
    assert!(
        !stderr.contains("- docker:") && !stderr.contains("- kubectl:"),
        "{stderr}"
    );

    // demo first needs the state `up` leaves, and says to run `up`.
    let demo = xtask(&["kind", "demo"], empty.path(), target.path())?;
    assert_eq!(demo.status.code(), Some(1));
    let stderr = text(&demo.stderr);
    assert!(stderr.contains("- kubectl:"), "{stderr}");
    Ok(())
}

#[test]
fn dry_runs_print_the_plan_and_run_nothing() -> anyhow::Result<()> {
    // Nothing on PATH: any command actually run would fail.
    let empty = tempfile::tempdir()?;
    let target = tempfile::tempdir()?;
    for (action, first, last) in [
        (
            "up",
            "+ kind get clusters",
            "+ kubectl --context kind-capture --namespace capture-system rollout status daemonset/capture-daemon --timeout 180s",
        ),
        (
            "demo",
            "+ kubectl --context kind-capture --namespace capture-system get daemonset capture-daemon  # only checks",
            // The Smart Diff act ends the demo.
            "+ target/debug/capture diff --baseline ",
        ),
        ("down", "+ kind delete cluster --name capture", "+ rm -r "),
    ] {
        let out = xtask(&["kind", action, "--dry-run"], empty.path(), target.path())?;
        assert!(out.status.success(), "kind {action} --dry-run: {out:?}");
        let stdout = text(&out.stdout);
        let commands: Vec<&str> = stdout.lines().filter(|l| l.starts_with("+ ")).collect();
        assert_eq!(commands.first().copied(), Some(first), "{stdout}");
        assert!(
            commands.last().is_some_and(|l| l.starts_with(last)),
            "{stdout}"
        );
    }
    // No certificate, token or other state was written.
    assert_eq!(fs::read_dir(target.path())?.count(), 0);
    Ok(())
}
