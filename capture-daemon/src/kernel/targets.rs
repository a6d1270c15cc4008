//! Resolving what to capture into cgroup v2 ids: a cgroup directory's id is its inode number,
//! which is what `bpf_get_current_cgroup_id()` returns in the kernel.

use std::{
    collections::BTreeSet,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// `CGROUP2_SUPER_MAGIC` from linux/magic.h.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--target-cgroup {0}: no such directory")]
    NoSuchCgroup(PathBuf),
    #[error(
        "--target-cgroup {0}: not a cgroup v2 directory (capture needs the unified hierarchy; \
         on a hybrid host it is usually under /sys/fs/cgroup/unified)"
    )]
    NotCgroup2(PathBuf),
    #[error("--target-pid {0}: no such process")]
    NoSuchPid(u32),
    #[error("--target-pid {pid}: its cgroup v2 path could not be read: {reason}")]
    PidCgroup { pid: u32, reason: String },
    #[error("no cgroup v2 (unified) hierarchy is mounted; capture needs cgroup v2")]
    NoCgroup2Mount,
    #[error(
        "{flag} {value}: that cgroup holds the daemon itself, which would capture its own \
         output; run the daemon in another cgroup"
    )]
    OwnCgroup { flag: &'static str, value: String },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// A cgroup the daemon captures: the directory and its id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TargetCgroup {
    pub id: u64,
    pub dir: PathBuf,
}

/// Resolves `--target-cgroup` and `--target-pid` into cgroup ids, refusing the daemon's own.
pub fn resolve(cgroups: &[PathBuf], pids: &[u32]) -> Result<BTreeSet<TargetCgroup>, TargetError> {
    let mount = cgroup2_mount()?;
    let own = pid_cgroup_dir(std::process::id(), &mount)
        .ok()
        .and_then(|d| cgroup_id(&d).ok());
    let mut out = BTreeSet::new();
    for dir in cgroups {
        let id = cgroup_id(dir)?;
        if Some(id) == own {
            return Err(TargetError::OwnCgroup {
                flag: "--target-cgroup",
                value: dir.display().to_string(),
            });
        }
        out.insert(TargetCgroup {
            id,
            dir: dir.clone(),
        });
    }
    for &pid in pids {
        let dir = pid_cgroup_dir(pid, &mount)?;
        let id = cgroup_id(&dir)?;
        if Some(id) == own {
            return Err(TargetError::OwnCgroup {
                flag: "--target-pid",
                value: pid.to_string(),
            });
        }
        out.insert(TargetCgroup { id, dir });
    }
    Ok(out)
}

/// The id of a cgroup v2 directory: its inode number.
pub fn cgroup_id(dir: &Path) -> Result<u64, TargetError> {
    let meta = std::fs::metadata(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TargetError::NoSuchCgroup(dir.to_path_buf()),
        _ => TargetError::Io(dir.to_path_buf(), e),
    })?;
    if !meta.is_dir() {
        return Err(TargetError::NoSuchCgroup(dir.to_path_buf()));
    }
    let fs = nix::sys::statfs::statfs(dir)
        .map_err(|e| TargetError::Io(dir.to_path_buf(), std::io::Error::from(e)))?;
    #[expect(
        clippy::useless_conversion,
        reason = "the field type differs between libcs"
    )]
    let magic = i64::from(fs.filesystem_type().0);
    if magic != CGROUP2_SUPER_MAGIC {
        return Err(TargetError::NotCgroup2(dir.to_path_buf()));
    }
    Ok(meta.ino())
}

/// Where the cgroup v2 hierarchy is mounted (`/sys/fs/cgroup` on a unified host,
/// `/sys/fs/cgroup/unified` on a hybrid one).
pub fn cgroup2_mount() -> Result<PathBuf, TargetError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| TargetError::Io("/proc/self/mountinfo".into(), e))?;
    cgroup2_mount_from(&text).ok_or(TargetError::NoCgroup2Mount)
}

fn cgroup2_mount_from(mountinfo: &str) -> Option<PathBuf> {
    // proc(5): fields ... mount-point(5th) ... " - " fstype source options
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup v2 directory of a process, from the `0::/path` line of `/proc/<pid>/cgroup`.
pub fn pid_cgroup_dir(pid: u32, mount: &Path) -> Result<PathBuf, TargetError> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            TargetError::NoSuchPid(pid)
        } else {
            TargetError::PidCgroup {
                pid,
                reason: e.to_string(),
            }
        }
    })?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| TargetError::PidCgroup {
            pid,
            reason: "no cgroup v2 entry (0::) in /proc/<pid>/cgroup".into(),
        })?;
    Ok(mount.join(rel.trim_start_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unified_mount_on_hybrid_host() {
        let info = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n\
                    26 25 0:23 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    27 25 0:24 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount_from(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount_from("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn missing_and_non_cgroup_dirs_are_refused() {
        let e = cgroup_id(Path::new("/nonexistent/cg")).unwrap_err();
        assert!(matches!(e, TargetError::NoSuchCgroup(_)), "{e}");
        let tmp = tempfile::tempdir().unwrap();
        let e = cgroup_id(tmp.path()).unwrap_err();
        assert!(matches!(e, TargetError::NotCgroup2(_)), "{e}");
    }

    #[test]
    fn own_cgroup_is_refused() {
        // Runs wherever a cgroup v2 hierarchy is mounted (every machine this project targets).
        let mount = cgroup2_mount().unwrap();
        let e = resolve(&[], &[std::process::id()]).unwrap_err();
        assert!(
            matches!(e, TargetError::OwnCgroup { .. }),
            "{e} (mount {})",
            mount.display()
        );
    }
}
