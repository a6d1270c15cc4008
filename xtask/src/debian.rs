//! Debian's cloud kernel packages, fetched through a private apt configuration: `vm-test`
//! boots the amd64 ones, `cross` reads the BTF of the arm64 ones.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Where each kernel was fetched and unpacked.
pub struct CloudKernel {
    /// `linux-image-<version>-cloud-<arch>`.
    pub package: String,
    /// The unpacked part of the package.
    pub tree: PathBuf,
    pub vmlinuz: PathBuf,
}

/// The image package that `linux-image-cloud-<arch>` of Debian `suite` depends on, fetched
/// into `work` (apt lists refreshed once a day) and unpacked by `unpack(deb, into)` into
/// `work/kernels/<package>` once; later runs reuse it. `who` prefixes the progress lines.
pub fn cloud_kernel(
    work: &Path,
    suite: &str,
    arch: &str,
    who: &str,
    unpack: impl FnOnce(&Path, &Path) -> anyhow::Result<()>,
) -> anyhow::Result<CloudKernel> {
    let lists = work.join("apt").join(suite).join("lists");
    let fresh = fs::read_dir(&lists).ok().is_some_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            e.file_name().to_string_lossy().contains("_Packages")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < Duration::from_secs(24 * 3600))
        })
    });
    if !fresh {
        println!(
            "{who}: apt-get update for {suite} {arch} (private lists under {})",
            work.join("apt").display()
        );
        crate::run(apt(work, suite, arch, "apt-get")?.args(["update", "-qq"]))
            .with_context(|| format!("fetching Debian {suite}'s {arch} package lists"))?;
    }
    let meta = format!("linux-image-cloud-{arch}");
    let depends = apt(work, suite, arch, "apt-cache")?
        .args(["depends", &meta])
        .output()
        .context("apt-cache depends")?;
    let text = String::from_utf8_lossy(&depends.stdout);
    let package = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .with_context(|| format!("{meta} in {suite} depends on no image: {text}"))?
        .to_owned();
    let tree = work.join("kernels").join(&package);
    if !tree.join("boot").is_dir() {
        let debs = work.join("debs");
        fs::create_dir_all(&debs)?;
        println!("{who}: apt-get download {package} ({arch})");
        crate::run(
            apt(work, suite, arch, "apt-get")?
                .args(["download", "-qq", &format!("{package}:{arch}")])
                .current_dir(&debs),
        )?;
        let deb = fs::read_dir(&debs)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        let partial = work.join("kernels").join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial)?;
        unpack(&deb, &partial).with_context(|| format!("unpacking {}", deb.display()))?;
        fs::rename(&partial, &tree)?;
        fs::remove_file(&deb)?;
    }
    let vmlinuz = fs::read_dir(tree.join("boot"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no boot/vmlinuz-*"))?;
    Ok(CloudKernel {
        package,
        tree,
        vmlinuz,
    })
}

/// apt-get or apt-cache for one Debian release's `arch` packages, with a private
/// configuration (sources, lists, cache, empty status, `APT::Architecture`): nothing of the
/// host's apt set-up is read or changed, and the host never gets a foreign architecture.
fn apt(work: &Path, suite: &str, arch: &str, program: &str) -> anyhow::Result<Command> {
    const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
    if !Path::new(KEYRING).exists() {
        bail!("{KEYRING} is missing (debian-archive-keyring)");
    }
    let dir = work.join("apt").join(suite);
    for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let sources = dir.join("sources.list");
    fs::write(
        &sources,
        format!(
            "deb [arch={arch} signed-by={KEYRING}] http://deb.debian.org/debian {suite} main\n"
        ),
    )?;
    let status = dir.join("status");
    if !status.exists() {
        fs::write(&status, "")?;
    }
    let mut cmd = Command::new(program);
    for (key, value) in [
        ("Dir::Etc::SourceList", sources),
        ("Dir::Etc::SourceParts", dir.join("sources.list.d")),
        ("Dir::State::Lists", dir.join("lists")),
        ("Dir::Cache", dir.join("cache")),
        ("Dir::State::Status", status),
    ] {
        cmd.arg("-o").arg(format!("{key}={}", value.display()));
    }
    cmd.arg("-o")
        .arg(format!("APT::Architecture={arch}"))
        .arg("-o")
        .arg(format!("APT::Architectures={arch}"))
        .args(["-o", "APT::Sandbox::User=root", "-o", "Debug::NoLocking=1"]);
    Ok(cmd)
}
