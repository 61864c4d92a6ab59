//! The API filesystems (/proc, /sys, /dev, /run) and moving them into the new root.

use super::sys;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The API filesystems in mount order: (source, mount point, type, flags, options).
const API_FILESYSTEMS: [(&str, &str, &str, libc::c_ulong, Option<&str>); 4] = [
    (
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    ),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=0755"),
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("{action} {target}: {source}")]
pub struct MountError {
    pub action: &'static str,
    pub target: PathBuf,
    #[source]
    pub source: io::Error,
}

impl MountError {
    pub fn new(action: &'static str, target: impl Into<PathBuf>, source: io::Error) -> Self {
        MountError {
            action,
            target: target.into(),
            source,
        }
    }
}

/// Whether `path` is the root of a mount: its device differs from its parent's. (The same
/// filesystem mounted twice in a row would fool this; the init never does that.)
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    let own = fs::metadata(path)?;
    let parent = fs::metadata(path.join(".."))?;
    Ok(own.dev() != parent.dev() || own.ino() == parent.ino())
}

/// Mounts unless something is already mounted there, creating the mount point (0755).
/// Returns whether it mounted.
pub fn mount_if_unmounted(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    options: Option<&str>,
) -> Result<bool, MountError> {
    let target_path = Path::new(target);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(target_path)
        .map_err(|e| MountError::new("create mount point", target_path, e))?;
    if is_mount_point(target_path).map_err(|e| MountError::new("inspect", target_path, e))? {
        return Ok(false);
    }
    sys::mount(source, target_path, Some(fstype), flags, options)
        .map_err(|e| MountError::new("mount", target_path, e))?;
    Ok(true)
}

/// Mounts /proc, /sys, /dev and /run (those already mounted are left alone).
pub fn mount_api_filesystems() -> Result<(), MountError> {
    for (source, target, fstype, flags, options) in API_FILESYSTEMS {
        mount_if_unmounted(source, target, fstype, flags, options)?;
    }
    Ok(())
}

/// Moves /proc, /sys, /dev and /run under `new_root`, where switch-root needs them and where
/// tools run chrooted into `new_root` expect them. Those already moved are skipped.
pub fn move_api_filesystems(new_root: &Path) -> Result<(), MountError> {
    for (_, target, _, _, _) in API_FILESYSTEMS {
        let from = Path::new(target);
        let to = new_root.join(target.trim_start_matches('/'));
        let still_here = is_mount_point(from).map_err(|e| MountError::new("inspect", from, e))?;
        if !still_here {
            continue;
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&to)
            .map_err(|e| MountError::new("create mount point", &to, e))?;
        sys::mount(target, &to, None, libc::MS_MOVE, None)
            .map_err(|e| MountError::new("move mount to", &to, e))?;
    }
    Ok(())
}
