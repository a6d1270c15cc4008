//! `cargo xtask vm-test`: the kernel side on Debian's own kernels, each booted under qemu.
//!
//! For each kernel (a Debian release's `linux-image-cloud-amd64`, fetched with `apt-get
//! download` through a private apt configuration under `target/vm-test/apt`, so the host's
//! sources stay as they are) the host builds everything first; the guest only runs binaries.
//! The guest boots from a small initramfs (static busybox and the virtio/virtiofs modules of
//! that kernel), mounts the host's root filesystem through virtiofs (qemu's `virtiofsd`)
//! read-only, with only the run's output directory writable, and runs in it:
//! - the daemon started with each `--kernel-hook` the kernel should support, to record what it
//!   chose (`capture_kernel_hook_info`, `capture_kernel_copy_loop_info` from `/metrics`);
//! - the daemon's kernel tests (`kernel::programs`, real load, attach and capture);
//! - two end-to-end captures checked exactly against the daemon's JSONL: HTTP/1 GET and POST
//!   (curl against a Python server) and an `Upgrade: h2c` exchange with a second stream.
//!
//! qemu runs with TCG (software emulation): `/dev/kvm` may exist under nested virtualisation
//! and still hang the guest, so KVM is used only when `CAPTURE_VM_ACCEL=kvm` asks for it.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Kernels `vm-test` knows: the version asked for, and the Debian release whose cloud kernel
/// it is.
const KERNELS: &[(&str, &str)] = &[
    ("6.1", "bookworm"),
    ("5.10", "bullseye"),
    ("6.12", "trixie"),
];
/// What `vm-test` runs without `--kernel`.
pub const DEFAULT_KERNELS: &[&str] = &["6.1", "5.10"];
/// The modules the initramfs loads to reach the host's filesystem (absent ones are skipped:
/// older kernels have fewer, and some have them built in).
const MODULES: &[&str] = &[
    "virtio",
    "virtio_ring",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "fuse",
    "virtiofs",
];
/// The virtiofs daemon of Debian's qemu 7.2 (`qemu-system-common`).
const VIRTIOFSD: &str = "/usr/lib/qemu/virtiofsd";
const GUEST_MEMORY: &str = "2G";
/// One guest's time, boot to power-off; TCG runs the tests a few times slower than the host.
const GUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// How much longer the tests in the guest wait for anything (`CAPTURE_TEST_PATIENCE`).
const PATIENCE: u32 = 5;
/// The end-to-end tests every guest runs: (test binary, test name).
const E2E_TESTS: &[(&str, &str)] = &[
    ("http1", "get_and_post_client_in_cgroup"),
    ("http2", "upgrade_to_h2c_then_a_second_stream_on_both_sides"),
    // Pause unlinks every program and resume links it again: fexit programs attach only once
    // before 5.13 and are loaded again to resume.
    (
        "lifecycle",
        "pause_flushes_in_flight_unlinks_the_program_and_resume_picks_up_open_connections",
    ),
];

/// The binaries the guest runs, built on the host.
struct Binaries {
    daemon: PathBuf,
    unit: PathBuf,
    e2e: Vec<(String, PathBuf)>,
}

/// One kernel ready to boot.
struct Kernel {
    version: String,
    package: String,
    vmlinuz: PathBuf,
    /// The extracted package (boot/, lib/modules/).
    tree: PathBuf,
}

/// Which part of the suite to run: all of it by default; `--only` narrows it to some
/// end-to-end runs (no hook probe, no kernel tests), `--repeat` runs each of them that many
/// times, to chase a failure seen once.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Runs whose test name contains this.
    pub only: Option<String>,
    /// Runs on this `--kernel-hook` only.
    pub hook: Option<String>,
    pub repeat: u32,
}

impl Default for Selection {
    fn default() -> Self {
        Self {
            only: None,
            hook: None,
            repeat: 1,
        }
    }
}

impl Selection {
    fn is_full(&self) -> bool {
        self.only.is_none() && self.hook.is_none()
    }
}

/// One end-to-end test run in a guest.
struct E2eRun {
    binary: &'static str,
    test: &'static str,
    hook: &'static str,
    /// 1-based; only named when the run repeats.
    round: Option<u32>,
}

impl E2eRun {
    /// The stem of its `.log` and `.rc` files.
    fn stem(&self) -> String {
        match self.round {
            Some(r) => format!("e2e-{}-{}-{r}", self.test, self.hook),
            None => format!("e2e-{}-{}", self.test, self.hook),
        }
    }

    fn label(&self) -> String {
        match self.round {
            Some(r) => format!("{}, hook {}, round {r}", self.test, self.hook),
            None => format!("{}, hook {}", self.test, self.hook),
        }
    }
}

/// The end-to-end runs of one kernel.
fn e2e_runs(kernel: &Kernel, selection: &Selection) -> Vec<E2eRun> {
    let mut runs = Vec::new();
    for hook in e2e_hooks(kernel) {
        if selection.hook.as_deref().is_some_and(|h| h != *hook) {
            continue;
        }
        for (binary, test) in E2E_TESTS {
            if selection.only.as_deref().is_some_and(|o| !test.contains(o)) {
                continue;
            }
            for round in 1..=selection.repeat.max(1) {
                runs.push(E2eRun {
                    binary,
                    test,
                    hook,
                    round: (selection.repeat > 1).then_some(round),
                });
            }
        }
    }
    runs
}

/// What one guest reported.
#[derive(Default)]
struct Outcome {
    release: String,
    hooks: Vec<(String, String)>,
    unit: String,
    e2e: Vec<(String, String)>,
    failed: Vec<String>,
    /// (what, the end of its output) for each failed step.
    logs: Vec<(String, String)>,
}

pub fn run(root: &Path, kernels: &[String], selection: &Selection) -> anyhow::Result<()> {
    let kernels: Vec<String> = if kernels.is_empty() {
        DEFAULT_KERNELS.iter().map(|k| (*k).to_owned()).collect()
    } else {
        kernels.to_vec()
    };
    for k in &kernels {
        suite_of(k)?;
    }
    if !Path::new(VIRTIOFSD).exists() {
        bail!("{VIRTIOFSD} is missing (Debian's qemu-system-common ships it)");
    }
    let work = root.join("target/vm-test");
    fs::create_dir_all(&work)?;
    let bins = build(root)?;
    let mut report = String::new();
    let mut failures = Vec::new();
    let mut failure_logs = Vec::new();
    for version in &kernels {
        let kernel = fetch_kernel(&work, version)?;
        println!("vm-test: booting {} under qemu", kernel.package);
        let started = Instant::now();
        if e2e_runs(&kernel, selection).is_empty() && !selection.is_full() {
            bail!("--only/--hook select no end-to-end run on {version}");
        }
        let outcome = boot(root, &work, &kernel, &bins, selection)
            .with_context(|| format!("the {} guest", kernel.package))?;
        let took = started.elapsed().as_secs();
        let _ = writeln!(
            report,
            "kernel {version} ({}), {took} s:",
            if outcome.release.is_empty() {
                "no release reported"
            } else {
                &outcome.release
            }
        );
        for (asked, chosen) in &outcome.hooks {
            let _ = writeln!(report, "  --kernel-hook {asked}: {chosen}");
        }
        if selection.is_full() {
            let _ = writeln!(report, "  kernel tests: {}", outcome.unit);
        }
        for (test, result) in &outcome.e2e {
            let _ = writeln!(report, "  e2e {test}: {result}");
        }
        for f in &outcome.failed {
            failures.push(format!("{version}: {f}"));
        }
        for (name, text) in outcome.logs {
            failure_logs.push((format!("{version}: {name}"), text));
        }
    }
    println!("vm-test report\n{report}");
    if !failures.is_empty() {
        // What the failing tests printed, so that a CI log says why without the guest's files.
        for (name, text) in &failure_logs {
            println!("---- {name} ----\n{text}");
        }
        bail!(
            "vm-test failed:\n  {}\n(guest logs under {})",
            failures.join("\n  "),
            work.join("out").display()
        );
    }
    Ok(())
}

fn suite_of(version: &str) -> anyhow::Result<&'static str> {
    KERNELS
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, s)| *s)
        .with_context(|| {
            format!(
                "no Debian kernel known for {version:?}; known: {}",
                KERNELS
                    .iter()
                    .map(|(v, s)| format!("{v} ({s})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Builds the daemon and the test binaries the guest runs.
fn build(root: &Path) -> anyhow::Result<Binaries> {
    crate::cargo(root, &["build", "-p", "capture-daemon"])?;
    let unit = test_executables(root, &["-p", "capture-daemon", "--lib"])?
        .into_iter()
        .next()
        .map(|(_, p)| p)
        .context("cargo gave no unit-test executable for capture-daemon")?;
    let mut args = vec!["-p", "capture-e2e"];
    for (binary, _) in E2E_TESTS {
        args.extend(["--test", binary]);
    }
    let e2e = test_executables(root, &args)?;
    Ok(Binaries {
        daemon: root.join("target/debug/capture-daemon"),
        unit,
        e2e,
    })
}

/// (target name, executable) of the test binaries `cargo test --no-run` builds.
fn test_executables(root: &Path, args: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["test", "--no-run", "--message-format=json"])
        .args(args)
        .current_dir(root)
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("cargo test --no-run {args:?} failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(exe), Some(name)) =
            (msg["executable"].as_str(), msg["target"]["name"].as_str())
        {
            found.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// Downloads and unpacks the release's cloud kernel (once; later runs reuse it).
fn fetch_kernel(work: &Path, version: &str) -> anyhow::Result<Kernel> {
    let suite = suite_of(version)?;
    let crate::debian::CloudKernel {
        package,
        tree,
        vmlinuz,
    } = crate::debian::cloud_kernel(work, suite, "amd64", "vm-test", |deb, into| {
        crate::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))
    })?;
    Ok(Kernel {
        version: version.to_owned(),
        package,
        vmlinuz,
        tree,
    })
}

/// The initramfs: static busybox, the modules that reach virtiofs, and `/init`.
fn initramfs(kernel: &Kernel, root: &Path, dir: &Path, out_dir: &Path) -> anyhow::Result<PathBuf> {
    let staging = dir.join("initramfs");
    let _ = fs::remove_dir_all(&staging);
    for sub in ["bin", "modules", "dev", "proc", "sys", "host", "newroot"] {
        fs::create_dir_all(staging.join(sub))?;
    }
    let busybox = Path::new("/bin/busybox");
    if !is_static(busybox) {
        bail!("/bin/busybox is not static (Debian's busybox-static provides a static one)");
    }
    fs::copy(busybox, staging.join("bin/busybox"))?;
    let mut found = Vec::new();
    let modules = kernel.tree.join("lib/modules");
    walk(&modules, &mut |path| {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else { return Ok(()) };
        let (stem, xz) = match name.strip_suffix(".ko.xz") {
            Some(stem) => (stem.to_owned(), true),
            None => match name.strip_suffix(".ko") {
                Some(stem) => (stem.to_owned(), false),
                None => return Ok(()),
            },
        };
        if !MODULES.contains(&stem.as_str()) {
            return Ok(());
        }
        let dest = staging.join("modules").join(format!("{stem}.ko"));
        if xz {
            let out = Command::new("xz").arg("-dc").arg(path).output()?;
            if !out.status.success() {
                bail!("xz -dc {} failed", path.display());
            }
            fs::write(&dest, out.stdout)?;
        } else {
            fs::copy(path, &dest)?;
        }
        found.push(stem);
        Ok(())
    })?;
    if !found.iter().any(|m| m == "virtiofs") && !builtin(kernel, "CONFIG_VIRTIO_FS")? {
        bail!("{} has no virtiofs module", kernel.package);
    }
    let out = out_dir.display();
    // The guest's /tmp is a fresh tmpfs, which would hide a workspace cloned under the host's
    // /tmp (binaries, fixtures, this script): such a workspace is bound over it, read-only.
    let root = root.canonicalize()?;
    let workspace_in_tmp = if root.starts_with("/tmp") {
        let root = root.display();
        format!(
            r#"$B mkdir -p "/newroot{root}"
$B mount --bind "/host{root}" "/newroot{root}" || fail "binding the workspace under /tmp"
$B mount -o remount,bind,ro "/newroot{root}" || fail "remounting the workspace read-only"
"#
        )
    } else {
        String::new()
    };
    let init = format!(
        r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
# Modules in any order: a pass loads those whose dependencies are already in.
for pass in 1 2 3 4 5; do
  for m in /modules/*.ko; do [ -f "$m" ] && $B insmod "$m" 2>/dev/null && $B rm "$m"; done
done
fail() {{ echo "VMTEST-FAIL $*"; $B poweroff -f; }}
$B mount -t virtiofs host /host || fail "mounting the host's filesystem (virtiofs)"
$B mount --bind /host /newroot
$B mount -o remount,bind,ro /newroot || fail "remounting the host's filesystem read-only"
$B mount -t proc proc /newroot/proc
$B mount -t sysfs sys /newroot/sys
$B mount -t devtmpfs dev /newroot/dev
$B mount -t tmpfs tmp /newroot/tmp
{workspace_in_tmp}$B mount --bind "/host{out}" "/newroot{out}" || fail "binding the output directory"
$B mount -t tmpfs run /newroot/run
$B mount -t tmpfs shm /newroot/dev/shm 2>/dev/null
$B mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || fail "mounting cgroup2"
$B mount -t bpf bpf /newroot/sys/fs/bpf
$B mount -t debugfs debugfs /newroot/sys/kernel/debug
$B mount -t tracefs tracefs /newroot/sys/kernel/tracing 2>/dev/null
$B ip link set lo up
$B chroot /newroot /bin/sh "{out}/guest.sh" > "/host{out}/guest.log" 2>&1
echo "VMTEST-EXIT $?"
$B sync
$B poweroff -f
"#
    );
    let init_path = staging.join("init");
    fs::write(&init_path, init)?;
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;
    let image = dir.join("initramfs.cpio.gz");
    crate::run(
        Command::new("sh")
            .arg("-c")
            .arg("find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 > \"$0\"")
            .arg(&image)
            .current_dir(&staging),
    )?;
    Ok(image)
}

fn builtin(kernel: &Kernel, option: &str) -> anyhow::Result<bool> {
    let mut yes = false;
    walk(&kernel.tree.join("boot"), &mut |p| {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("config-"))
        {
            let text = fs::read_to_string(p)?;
            yes |= text.lines().any(|l| l == format!("{option}=y"));
        }
        Ok(())
    })?;
    Ok(yes)
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path) -> anyhow::Result<()>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&path, f)?;
        } else {
            f(&path)?;
        }
    }
    Ok(())
}

fn is_static(binary: &Path) -> bool {
    // A static ELF has no PT_INTERP; `ldd` says so on Debian.
    Command::new("ldd").arg(binary).output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).contains("not a dynamic executable")
            || String::from_utf8_lossy(&o.stderr).contains("not a dynamic executable")
    })
}

/// Hooks to force in the guest, besides `auto`.
fn forced_hooks() -> &'static [&'static str] {
    &["fentry", "kprobe", "syscall"]
}

/// The script the guest runs (with the host's root as its root, read-only).
fn guest_script(kernel: &Kernel, bins: &Binaries, out: &Path, selection: &Selection) -> String {
    let out = out.display();
    let daemon = bins.daemon.display();
    let unit = bins.unit.display();
    let mut s = format!(
        r#"set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TMPDIR=/tmp
export RUST_BACKTRACE=1 CAPTURE_DAEMON_BIN={daemon}
cd /tmp
uname -r > {out}/release
"#
    );
    if selection.is_full() {
        let _ = write!(
            s,
            r#"mkdir -p /sys/fs/cgroup/vmtest
# Which hook the daemon chooses, asked for each way.
for hook in auto {forced}; do
  {daemon} --target-cgroup /sys/fs/cgroup/vmtest --output /tmp/probe-$hook.jsonl \
    --metrics-addr 127.0.0.1:19464 --log-format text --kernel-hook $hook \
    > {out}/daemon-$hook.log 2>&1 &
  pid=$!
  ok=0
  for i in $(seq 1 120); do
    if curl -sf http://127.0.0.1:19464/readyz > /dev/null 2>&1; then ok=1; break; fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.5
  done
  if [ $ok = 1 ]; then
    curl -s http://127.0.0.1:19464/metrics | grep -E '^capture_kernel_(hook|copy_loop)_info' > {out}/metrics-$hook.txt
  else
    echo "not ready" > {out}/metrics-$hook.txt
  fi
  kill -INT $pid 2>/dev/null; wait $pid
done
"#,
            forced = forced_hooks().join(" "),
        );
        // The socket tracepoints (and the floor programs on them) came in 6.3.
        let release_has_socket_tps = kernel_at_least(&kernel.version, (6, 3));
        let skips = if release_has_socket_tps {
            String::new()
        } else {
            " --skip socket_hook --skip floor_programs_load".to_owned()
        };
        let _ = writeln!(
            s,
            "{unit} --test-threads=1 kernel::programs{skips} > {out}/unit.log 2>&1; echo $? > {out}/unit.rc"
        );
    }
    for run in e2e_runs(kernel, selection) {
        if let Some((_, exe)) = bins.e2e.iter().find(|(n, _)| n == run.binary) {
            let exe = exe.display();
            let (hook, test, stem) = (run.hook, run.test, run.stem());
            let _ = writeln!(
                s,
                "CI=true CAPTURE_TEST_PATIENCE={PATIENCE} CAPTURE_E2E_KERNEL_HOOK={hook} {exe} --exact {test} --test-threads=1 --nocapture > {out}/{stem}.log 2>&1; echo $? > {out}/{stem}.rc"
            );
        }
    }
    s
}

/// The hooks the end-to-end captures run with: the one `auto` picks, and on kernels without
/// the socket tracepoints (before 6.3) the fentry and kprobe hooks forced, the paths the host
/// (with neither) never runs.
fn e2e_hooks(kernel: &Kernel) -> &'static [&'static str] {
    if kernel_at_least(&kernel.version, (6, 3)) {
        &["auto"]
    } else {
        &["auto", "fentry", "kprobe"]
    }
}

fn kernel_at_least(version: &str, want: (u32, u32)) -> bool {
    let mut parts = version.split('.');
    let major = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    let minor = parts
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(0);
    (major, minor) >= want
}

/// Boots one kernel and collects what its guest reported.
fn boot(
    root: &Path,
    work: &Path,
    kernel: &Kernel,
    bins: &Binaries,
    selection: &Selection,
) -> anyhow::Result<Outcome> {
    let out = work.join("out").join(&kernel.version);
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let dir = work.join("run").join(&kernel.version);
    fs::create_dir_all(&dir)?;
    let image = initramfs(kernel, root, &dir, &out)?;
    fs::write(
        out.join("guest.sh"),
        guest_script(kernel, bins, &out, selection),
    )?;
    let socket = dir.join("virtiofsd.sock");
    let _ = fs::remove_file(&socket);
    let mut virtiofsd = Command::new(VIRTIOFSD)
        .arg(format!("--socket-path={}", socket.display()))
        .args(["-o", "source=/", "-o", "cache=auto", "-o", "sandbox=chroot"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("virtiofsd.log"))?)
        .spawn()
        .context("starting virtiofsd")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            let _ = virtiofsd.kill();
            bail!("virtiofsd made no socket within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let accel = match std::env::var("CAPTURE_VM_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg",
    };
    let console = out.join("console.log");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        accel,
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        GUEST_MEMORY,
    ])
    .args(["-nographic", "-no-reboot", "-kernel"])
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(&image)
    .args(["-append", "console=ttyS0 panic=-1 quiet"])
    .arg("-chardev")
    .arg(format!("socket,id=fs0,path={}", socket.display()))
    .args(["-device", "vhost-user-fs-pci,chardev=fs0,tag=host"])
    .args([
        "-object",
        &format!("memory-backend-memfd,id=mem,size={GUEST_MEMORY},share=on"),
        "-numa",
        "node,memdev=mem",
    ])
    .stdin(Stdio::null())
    .stdout(fs::File::create(&console)?)
    .stderr(Stdio::inherit())
    .current_dir(root);
    let mut child = qemu.spawn().context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = virtiofsd.kill();
    let _ = virtiofsd.wait();
    let console_text = fs::read_to_string(&console).unwrap_or_default();
    let mut outcome = collect(kernel, &out, selection);
    match status {
        None => outcome.failed.push(format!(
            "the guest did not finish within {} s (console: {})",
            GUEST_TIMEOUT.as_secs(),
            console.display()
        )),
        Some(s) if !s.success() => outcome.failed.push(format!(
            "qemu exited with {s} (console: {})",
            console.display()
        )),
        Some(_) => {}
    }
    if let Some(line) = console_text.lines().find(|l| l.contains("VMTEST-FAIL")) {
        outcome.failed.push(format!("guest init: {line}"));
    }
    if !console_text.contains("VMTEST-EXIT") && outcome.failed.is_empty() {
        outcome.failed.push(format!(
            "the guest script never ran (console: {})",
            console.display()
        ));
    }
    Ok(outcome)
}

/// Reads the guest's output directory.
fn collect(kernel: &Kernel, out: &Path, selection: &Selection) -> Outcome {
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut o = Outcome {
        release: read("release").trim().to_owned(),
        ..Outcome::default()
    };
    let summary = |log: &str| {
        log.lines()
            .find(|l| l.starts_with("test result:"))
            .map_or_else(
                || "no test result".to_owned(),
                |l| l.trim_start_matches("test result: ").to_owned(),
            )
    };
    if selection.is_full() {
        for hook in std::iter::once("auto").chain(forced_hooks().iter().copied()) {
            let metrics = read(&format!("metrics-{hook}.txt"));
            let label = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.split('"').nth(1))
                    .map(str::to_owned)
            };
            match (
                label("capture_kernel_hook_info"),
                label("capture_kernel_copy_loop_info"),
            ) {
                (Some(h), Some(l)) => o
                    .hooks
                    .push((hook.to_owned(), format!("load OK, hook {h}, copy loop {l}"))),
                _ => {
                    let log = read(&format!("daemon-{hook}.log"));
                    let last = log
                        .lines()
                        .find(|l| l.starts_with("capture-daemon:"))
                        .or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()))
                        .unwrap_or("")
                        .chars()
                        .take(400)
                        .collect::<String>();
                    o.hooks
                        .push((hook.to_owned(), format!("did not load: {last}")));
                    o.failed.push(format!(
                        "the daemon with --kernel-hook {hook} did not load: {last}"
                    ));
                    o.logs
                        .push((format!("daemon --kernel-hook {hook}"), tail(&log)));
                }
            }
        }
        let unit_rc = read("unit.rc").trim().to_owned();
        let unit_log = read("unit.log");
        o.unit = summary(&unit_log);
        if unit_rc != "0" {
            o.failed
                .push(format!("kernel tests (exit {unit_rc:?}): {}", o.unit));
            o.logs.push(("kernel tests".to_owned(), tail(&unit_log)));
        }
    }
    for run in e2e_runs(kernel, selection) {
        let stem = run.stem();
        let rc = read(&format!("{stem}.rc")).trim().to_owned();
        let log = read(&format!("{stem}.log"));
        let result = summary(&log);
        if rc != "0" {
            o.failed
                .push(format!("e2e {} (exit {rc:?}): {result}", run.label()));
            o.logs.push((format!("e2e {}", run.label()), tail(&log)));
        }
        o.e2e.push((run.label(), result));
    }
    o
}

/// The end of a test's output: its failure message and backtrace come last.
fn tail(log: &str) -> String {
    const LINES: usize = 80;
    let lines: Vec<&str> = log.lines().collect();
    let from = lines.len().saturating_sub(LINES);
    let mut text = String::new();
    if from > 0 {
        let _ = writeln!(text, "[{from} lines before]");
    }
    text.push_str(&lines[from..].join("\n"));
    text
}
