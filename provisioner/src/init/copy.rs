//! A recursive copy that keeps everything an `/var` needs: file types, modes (including
//! setuid/sticky bits), owners, symlinks, hard links, device nodes and nanosecond times.

use super::sys;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("copying {path}: {source}")]
pub struct CopyError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// What a copy did, for the progress line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopySummary {
    pub entries: u64,
    pub bytes: u64,
}

/// Copies the contents of directory `source` into the existing directory `target`, and gives
/// `target` the mode, owner and times of `source`. Existing entries of `target` with the same
/// names are replaced; the target must be on one filesystem so hard links can be kept.
pub fn copy_tree(source: &Path, target: &Path) -> Result<CopySummary, CopyError> {
    let mut copier = TreeCopier::default();
    copier.copy_dir_contents(source, target)?;
    let meta = fs::symlink_metadata(source).map_err(|e| err(source, e))?;
    copier.apply_metadata(target, &meta)?;
    Ok(copier.summary)
}

fn err(path: &Path, source: io::Error) -> CopyError {
    CopyError {
        path: path.to_owned(),
        source,
    }
}

#[derive(Default)]
struct TreeCopier {
    summary: CopySummary,
    /// Files with several links, by (device, inode), to the first copy made of them.
    linked: HashMap<(u64, u64), PathBuf>,
}

impl TreeCopier {
    fn copy_dir_contents(&mut self, source: &Path, target: &Path) -> Result<(), CopyError> {
        let mut entries: Vec<_> = fs::read_dir(source)
            .map_err(|e| err(source, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(source, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let from = entry.path();
            let to = target.join(entry.file_name());
            self.copy_entry(&from, &to)?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, from: &Path, to: &Path) -> Result<(), CopyError> {
        let meta = fs::symlink_metadata(from).map_err(|e| err(from, e))?;
        let kind = meta.file_type();
        self.summary.entries += 1;

        if !kind.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.linked.get(&(meta.dev(), meta.ino())) {
                remove_existing(to)?;
                fs::hard_link(first, to).map_err(|e| err(to, e))?;
                return Ok(());
            }
            self.linked.insert((meta.dev(), meta.ino()), to.to_owned());
        }

        if kind.is_dir() {
            match fs::symlink_metadata(to) {
                Ok(existing) if existing.is_dir() => {}
                Ok(_) => {
                    remove_existing(to)?;
                    fs::create_dir(to).map_err(|e| err(to, e))?;
                }
                Err(_) => fs::create_dir(to).map_err(|e| err(to, e))?,
            }
            self.copy_dir_contents(from, to)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(from).map_err(|e| err(from, e))?;
            remove_existing(to)?;
            std::os::unix::fs::symlink(&link, to).map_err(|e| err(to, e))?;
        } else if kind.is_file() {
            remove_existing(to)?;
            self.summary.bytes += fs::copy(from, to).map_err(|e| err(to, e))?;
        } else if kind.is_block_device()
            || kind.is_char_device()
            || kind.is_fifo()
            || kind.is_socket()
        {
            remove_existing(to)?;
            sys::mknod(to, meta.mode(), meta.rdev()).map_err(|e| err(to, e))?;
        }
        self.apply_metadata(to, &meta)
    }

    /// Owner first, since chown clears setuid/setgid bits; then mode; times last, after
    /// everything inside a directory has been written.
    fn apply_metadata(&self, path: &Path, meta: &fs::Metadata) -> Result<(), CopyError> {
        sys::lchown(path, meta.uid(), meta.gid()).map_err(|e| err(path, e))?;
        if !meta.file_type().is_symlink() {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| err(path, e))?;
        }
        sys::set_times_nofollow(
            path,
            (meta.atime(), meta.atime_nsec()),
            (meta.mtime(), meta.mtime_nsec()),
        )
        .map_err(|e| err(path, e))
    }
}

/// Removes a non-directory (or empty directory) so a new entry can take its name.
fn remove_existing(path: &Path) -> Result<(), CopyError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path).map_err(|e| err(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| err(path, e)),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn set_mtime(path: &Path, secs: i64, nanos: i64) {
        sys::set_times_nofollow(path, (secs, nanos), (secs, nanos)).unwrap();
    }

    #[test]
    fn copies_modes_owners_links_and_times() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("var");
        let dst = dir.path().join("state");
        fs::create_dir_all(src.join("lib/app")).unwrap();
        fs::create_dir(&dst).unwrap();

        fs::write(src.join("lib/app/data"), b"hello").unwrap();
        // chown clears setuid, so the source gets its owner first.
        sys::lchown(&src.join("lib/app/data"), 1234, 5678).unwrap();
        fs::set_permissions(src.join("lib/app/data"), fs::Permissions::from_mode(0o4750)).unwrap();
        fs::hard_link(src.join("lib/app/data"), src.join("lib/app/data-link")).unwrap();
        fs::create_dir(src.join("tmp")).unwrap();
        fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        symlink("../run/lock", src.join("lock")).unwrap();
        sys::lchown(&src.join("lock"), 42, 43).unwrap();
        symlink("/nonexistent/target", src.join("dangling")).unwrap();
        sys::mknod(&src.join("fifo"), libc::S_IFIFO | 0o640, 0).unwrap();
        set_mtime(&src.join("lib/app/data"), 1_000_000_000, 123_456_789);
        set_mtime(&src.join("lock"), 1_100_000_000, 5);
        set_mtime(&src.join("lib/app"), 1_200_000_000, 7);
        set_mtime(&src, 1_300_000_000, 9);

        let summary = copy_tree(&src, &dst).unwrap();
        assert_eq!(
            summary.bytes, 5,
            "the hard link is linked, not copied again"
        );

        let data = fs::symlink_metadata(dst.join("lib/app/data")).unwrap();
        assert_eq!(fs::read(dst.join("lib/app/data")).unwrap(), b"hello");
        assert_eq!(data.mode() & 0o7777, 0o4750, "setuid survives the chown");
        assert_eq!((data.uid(), data.gid()), (1234, 5678));
        assert_eq!(
            (data.mtime(), data.mtime_nsec()),
            (1_000_000_000, 123_456_789)
        );
        let link = fs::symlink_metadata(dst.join("lib/app/data-link")).unwrap();
        assert_eq!(link.ino(), data.ino());

        assert_eq!(
            fs::symlink_metadata(dst.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        let lock = fs::symlink_metadata(dst.join("lock")).unwrap();
        assert!(lock.file_type().is_symlink());
        assert_eq!(
            fs::read_link(dst.join("lock")).unwrap(),
            Path::new("../run/lock")
        );
        assert_eq!((lock.uid(), lock.gid()), (42, 43));
        assert_eq!((lock.mtime(), lock.mtime_nsec()), (1_100_000_000, 5));
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent/target")
        );
        let fifo = fs::symlink_metadata(dst.join("fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);

        let app = fs::symlink_metadata(dst.join("lib/app")).unwrap();
        assert_eq!((app.mtime(), app.mtime_nsec()), (1_200_000_000, 7));
        let top = fs::symlink_metadata(&dst).unwrap();
        assert_eq!((top.mtime(), top.mtime_nsec()), (1_300_000_000, 9));
    }

    #[test]
    fn replaces_what_a_fresh_filesystem_already_has() {
        // mkfs leaves lost+found; a copy must merge into, not fail on, existing entries.
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("var");
        let dst = dir.path().join("state");
        fs::create_dir_all(src.join("cache")).unwrap();
        fs::write(src.join("file"), b"new").unwrap();
        fs::create_dir_all(dst.join("lost+found")).unwrap();
        fs::create_dir_all(dst.join("cache")).unwrap();
        fs::write(dst.join("file"), b"old").unwrap();
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("file")).unwrap(), b"new");
        assert!(dst.join("lost+found").is_dir());
    }
}
