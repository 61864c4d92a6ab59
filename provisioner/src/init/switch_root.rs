//! Handing over to the real root: free the initramfs, make /sysroot the root, exec init.

use super::sys;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const RAMFS_MAGIC: i64 = 0x858458f6;
const TMPFS_MAGIC: i64 = 0x01021994;

/// Inits to try, in order.
pub const INIT_CANDIDATES: [&str; 2] = ["/sbin/init", "/lib/systemd/systemd"];

#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("/ is not the initramfs (filesystem magic {0:#x}); refusing to empty it")]
    NotInitramfs(i64),
    #[error("exec {}: {}", INIT_CANDIDATES.join(" and "), .0)]
    Exec(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SwitchRootError {
    let path = path.to_owned();
    move |source| SwitchRootError::Io {
        action,
        path,
        source,
    }
}

/// Deletes everything under `dir` that lives on filesystem `device`, without descending into
/// other mounts (the new root, still-mounted API filesystems). Keeps `dir` itself.
/// Returns how many entries went. Errors on single entries are skipped: freeing memory is a
/// courtesy, not worth stopping the boot for.
pub fn remove_tree_on_device(dir: &Path, device: u64) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != device {
            continue;
        }
        if meta.is_dir() {
            removed += remove_tree_on_device(&path, device);
            if fs::remove_dir(&path).is_ok() {
                removed += 1;
            }
        } else if fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Frees the initramfs: removes its files, which otherwise stay in RAM for good. Only when /
/// really is the initramfs (ramfs or tmpfs).
pub fn free_initramfs() -> Result<u64, SwitchRootError> {
    let root = Path::new("/");
    let magic = sys::filesystem_magic(root).map_err(io_err("statfs", root))?;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Err(SwitchRootError::NotInitramfs(magic));
    }
    let device = fs::symlink_metadata(root)
        .map_err(io_err("stat", root))?
        .dev();
    Ok(remove_tree_on_device(root, device))
}

/// Makes `new_root` the root of the mount tree and of this process: chdir, move-mount it
/// over /, chroot, chdir /.
pub fn enter_new_root(new_root: &Path) -> Result<(), SwitchRootError> {
    std::env::set_current_dir(new_root).map_err(io_err("chdir", new_root))?;
    sys::mount(".", Path::new("/"), None, libc::MS_MOVE, None)
        .map_err(io_err("move mount to /", new_root))?;
    sys::chroot(Path::new(".")).map_err(io_err("chroot", new_root))?;
    std::env::set_current_dir("/").map_err(io_err("chdir", Path::new("/")))?;
    Ok(())
}

/// Execs the first init that exists, passing `args` on. Returns only on failure.
pub fn exec_init(args: &[OsString]) -> SwitchRootError {
    let mut failures = Vec::new();
    for init in INIT_CANDIDATES {
        let err = Command::new(init).args(args).exec();
        failures.push(format!("{init}: {err}"));
    }
    SwitchRootError::Exec(failures.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_everything_on_one_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("lib/modules/6.1")).unwrap();
        fs::write(root.join("lib/modules/6.1/x.ko"), b"ko").unwrap();
        fs::write(root.join("init"), b"elf").unwrap();
        std::os::unix::fs::symlink("/init", root.join("linuxrc")).unwrap();
        let device = fs::metadata(root).unwrap().dev();
        assert_eq!(remove_tree_on_device(root, device), 6);
        assert_eq!(fs::read_dir(root).unwrap().count(), 0);
        assert!(root.exists());
    }

    #[test]
    fn leaves_other_filesystems_alone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keep"), b"").unwrap();
        assert_eq!(remove_tree_on_device(dir.path(), u64::MAX), 0);
        assert!(dir.path().join("keep").exists());
    }
}
