//! Path resolution confined to a root tree, and writes that only touch the disk when something
//! differs. Every path the provisioner writes is an in-root path such as "/etc/hostname"; it is
//! resolved here one component at a time so that a symlink (Keel's `home -> var/home`, or a
//! hostile one planted in the tree) is followed only while it stays inside the root.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Linux's own limit on symlinks followed in one lookup (MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: has a '..' component; paths that could climb out of the root are refused")]
    DotDot { path: String },
    #[error("{path}: not a file path")]
    NotAFilePath { path: String },
    #[error("{path}: symlink {link} -> {target} leads outside the root; refusing to follow it")]
    Escape {
        path: String,
        link: String,
        target: String,
    },
    #[error("{path}: more than {MAX_SYMLINKS} symlinks to follow")]
    SymlinkLoop { path: String },
    #[error("{path}: {component} exists and is not a directory")]
    NotADirectory { path: String, component: String },
    #[error("{path}: is a directory")]
    IsADirectory { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &str) -> impl FnOnce(io::Error) -> FsError + '_ {
    move |source| FsError::Io {
        path: path.to_string(),
        source,
    }
}

/// Ownership and permission bits wanted for a file, directory or symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Attrs {
    pub fn root(mode: u32) -> Attrs {
        Attrs {
            mode,
            uid: 0,
            gid: 0,
        }
    }
}

/// The root tree being provisioned.
#[derive(Debug, Clone)]
pub struct RootFs {
    /// Canonical host path of the root, so absolute symlink targets can be compared with it.
    root: PathBuf,
}

/// The in-root components of `path` (leading '/' optional: coreos-cloudinit joins every path
/// onto the root). '..' is refused outright rather than resolved, as the brief requires.
fn split_in_root(path: &str) -> Result<Vec<OsString>, FsError> {
    let mut parts = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(FsError::DotDot {
                    path: path.to_string(),
                })
            }
            Component::Normal(name) => parts.push(name.to_os_string()),
            Component::Prefix(_) => unreachable!("no path prefixes on Unix"),
        }
    }
    Ok(parts)
}

impl RootFs {
    pub fn new(root: &Path) -> io::Result<RootFs> {
        let root = fs::canonicalize(root)?;
        if !fs::metadata(&root)?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                "the root is not a directory",
            ));
        }
        Ok(RootFs { root })
    }

    #[cfg(test)]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks `components` from the root. Every component but the last must end up a directory
    /// (created 0755 root:root when missing and `create_dirs` is set). The last is followed
    /// when it is a symlink and `follow_last` is set. Returns the host path of the last
    /// component, or None when an intermediate directory is missing and may not be created.
    ///
    /// An absolute symlink target is followed when it names a place inside the root as the
    /// host sees it (always so when the root is "/"). Other absolute targets are refused for
    /// writes; for reads, `reroot_absolute` reads them inside the root as a chroot would, which
    /// is what the machine itself will see (systemd's `/etc/systemd/system/x.service ->
    /// /lib/systemd/system/y.service` links) and can never reach outside the root.
    fn walk(
        &self,
        display: &str,
        components: Vec<OsString>,
        create_dirs: bool,
        follow_last: bool,
        reroot_absolute: bool,
    ) -> Result<Option<PathBuf>, FsError> {
        // Resolved components (no symlinks among them), and what is left to resolve, reversed
        // so the next component is at the end.
        let mut resolved: Vec<OsString> = Vec::new();
        let mut pending: Vec<OsString> = components.into_iter().rev().collect();
        let mut symlinks_followed = 0;
        // The last link followed, to name it when its target climbs above the root.
        let mut last_link: Option<(String, String)> = None;
        while let Some(name) = pending.pop() {
            if name == "." || name.is_empty() {
                continue;
            }
            if name == ".." {
                // Only symlink targets can bring '..' here (config paths refuse it upfront).
                if resolved.pop().is_none() {
                    let (link, target) = last_link.unwrap_or_default();
                    return Err(FsError::Escape {
                        path: display.to_string(),
                        link,
                        target,
                    });
                }
                continue;
            }
            let is_last = pending.is_empty();
            let mut host = self.root.clone();
            host.extend(&resolved);
            host.push(&name);
            let meta = match fs::symlink_metadata(&host) {
                Ok(meta) => Some(meta),
                Err(err) if err.kind() == io::ErrorKind::NotFound => None,
                Err(err) => return Err(io_error(display)(err)),
            };
            match meta {
                None if is_last => return Ok(Some(host)),
                None if create_dirs => {
                    make_dir(&host, 0o755, display)?;
                    resolved.push(name);
                }
                None => return Ok(None),
                Some(meta) if meta.file_type().is_symlink() && (!is_last || follow_last) => {
                    symlinks_followed += 1;
                    if symlinks_followed > MAX_SYMLINKS {
                        return Err(FsError::SymlinkLoop {
                            path: display.to_string(),
                        });
                    }
                    let target = fs::read_link(&host).map_err(io_error(display))?;
                    last_link = Some((self.in_root_display(&host), target.display().to_string()));
                    let escape = || FsError::Escape {
                        path: display.to_string(),
                        link: self.in_root_display(&host),
                        target: target.display().to_string(),
                    };
                    if target.is_absolute() {
                        let inside = match target.strip_prefix(&self.root) {
                            Ok(inside) => inside,
                            Err(_) if reroot_absolute => {
                                target.strip_prefix("/").unwrap_or(&target)
                            }
                            Err(_) => return Err(escape()),
                        };
                        resolved.clear();
                        pending.extend(
                            inside
                                .components()
                                .rev()
                                .map(|c| c.as_os_str().to_os_string()),
                        );
                    } else {
                        pending.extend(
                            target
                                .components()
                                .rev()
                                .map(|c| c.as_os_str().to_os_string()),
                        );
                    }
                }
                Some(_) if is_last => return Ok(Some(host)),
                Some(meta) if meta.is_dir() => resolved.push(name),
                Some(_) => {
                    return Err(FsError::NotADirectory {
                        path: display.to_string(),
                        component: self.in_root_display(&host),
                    })
                }
            }
        }
        // Reached when the last step was a "." or a link to a directory already resolved.
        let mut host = self.root.clone();
        host.extend(&resolved);
        Ok(Some(host))
    }

    fn in_root_display(&self, host: &Path) -> String {
        match host.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => host.display().to_string(),
        }
    }

    /// Host path for the in-root `path`, creating missing parent directories; the last
    /// component is not followed if it is a symlink (a rename replaces the link itself).
    pub fn prepare(&self, path: &str) -> Result<PathBuf, FsError> {
        let components = split_in_root(path)?;
        if components.is_empty() {
            return Err(FsError::NotAFilePath {
                path: path.to_string(),
            });
        }
        self.walk(path, components, true, false, false)
            .map(|host| host.expect("parents are created"))
    }

    /// Host path of what `path` names once every symlink (the last included) is followed
    /// inside the root; None when a parent directory is missing.
    pub fn resolve(&self, path: &str) -> Result<Option<PathBuf>, FsError> {
        self.walk(path, split_in_root(path)?, false, true, false)
    }

    /// Like [`RootFs::resolve`], for reading only: absolute links are read inside the root.
    pub fn resolve_for_reading(&self, path: &str) -> Result<Option<PathBuf>, FsError> {
        self.walk(path, split_in_root(path)?, false, true, true)
    }

    /// Like [`RootFs::resolve`] but creates missing parents; for appending through a link.
    pub fn resolve_creating(&self, path: &str) -> Result<PathBuf, FsError> {
        self.walk(path, split_in_root(path)?, true, true, false)
            .map(|host| host.expect("parents are created"))
    }

    /// Host path of `path` without following the last component; None when a parent is
    /// missing.
    pub fn locate(&self, path: &str) -> Result<Option<PathBuf>, FsError> {
        self.walk(path, split_in_root(path)?, false, false, false)
    }

    /// Contents of the in-root file `path` (symlinks followed inside the root), or None.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, FsError> {
        let Some(host) = self.resolve_for_reading(path)? else {
            return Ok(None);
        };
        match fs::read(&host) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error(path)(err)),
        }
    }

    pub fn read_string(&self, path: &str) -> Result<Option<String>, FsError> {
        Ok(self
            .read(path)?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Whether `path` exists inside the root, symlinks followed.
    pub fn exists(&self, path: &str) -> bool {
        matches!(self.resolve_for_reading(path), Ok(Some(host)) if host.exists())
    }

    /// Writes `content` to `path` with `attrs`, atomically. Returns false, touching nothing,
    /// when the file already has that content, mode and owner.
    pub fn write(&self, path: &str, content: &[u8], attrs: Attrs) -> Result<bool, FsError> {
        let host = self.prepare(path)?;
        write_host(&host, path, content, attrs)
    }

    /// Makes sure `path` is a directory with `attrs` (parents created 0755 root:root).
    pub fn ensure_dir(&self, path: &str, attrs: Attrs) -> Result<bool, FsError> {
        let host = self.prepare(path)?;
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.is_dir() => fix_attrs(&host, path, &meta, attrs),
            Ok(meta) if meta.file_type().is_symlink() => {
                // A link to a directory inside the root is fine (that is how /home works on
                // Keel); its attributes are the target's business.
                match self.resolve(path)? {
                    Some(target) if target.is_dir() => Ok(false),
                    _ => Err(FsError::NotADirectory {
                        path: path.to_string(),
                        component: path.to_string(),
                    }),
                }
            }
            Ok(_) => Err(FsError::NotADirectory {
                path: path.to_string(),
                component: path.to_string(),
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                make_dir(&host, attrs.mode, path)?;
                chown(&host, path, attrs.uid, attrs.gid)?;
                Ok(true)
            }
            Err(err) => Err(io_error(path)(err)),
        }
    }

    /// Makes `path` a symlink to `target`, replacing a file or another link atomically.
    pub fn ensure_symlink(&self, path: &str, target: &str) -> Result<bool, FsError> {
        let host = self.prepare(path)?;
        match fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if fs::read_link(&host).map_err(io_error(path))? == Path::new(target) {
                    return Ok(false);
                }
            }
            Ok(meta) if meta.is_dir() => {
                return Err(FsError::IsADirectory {
                    path: path.to_string(),
                })
            }
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(path)(err)),
        }
        let temp = temp_path(&host);
        symlink(target, &temp).map_err(io_error(path))?;
        if let Err(err) = fs::rename(&temp, &host) {
            let _ = fs::remove_file(&temp);
            return Err(io_error(path)(err));
        }
        Ok(true)
    }

    /// Removes `path` if it is a symlink to `target`.
    pub fn remove_symlink_to(&self, path: &str, target: &str) -> Result<bool, FsError> {
        let Some(host) = self.locate(path)? else {
            return Ok(false);
        };
        match fs::read_link(&host) {
            Ok(current) if current == Path::new(target) => {
                fs::remove_file(&host).map_err(io_error(path))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Names of the entries of the in-root directory `path`, sorted; empty when missing.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, FsError> {
        let Some(host) = self.resolve_for_reading(path)? else {
            return Ok(Vec::new());
        };
        let entries = match fs::read_dir(&host) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(path)(err)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(path))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// Writes `content` to the host path `host` (whose parent exists) atomically: a temporary
/// file in the same directory, given its mode and owner before any data, synced, then renamed
/// over the target so readers see the old or the new file and never a partial one.
pub fn write_host(
    host: &Path,
    display: &str,
    content: &[u8],
    attrs: Attrs,
) -> Result<bool, FsError> {
    match fs::symlink_metadata(host) {
        Ok(meta) if meta.is_file() => {
            let current = fs::read(host).map_err(io_error(display))?;
            if current == content {
                return fix_attrs(host, display, &meta, attrs);
            }
        }
        Ok(meta) if meta.is_dir() => {
            return Err(FsError::IsADirectory {
                path: display.to_string(),
            })
        }
        _ => {}
    }
    let temp = temp_path(host);
    let result = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        std::os::unix::fs::fchown(&file, Some(attrs.uid), Some(attrs.gid))?;
        // Explicitly, because the umask narrowed the mode given at creation.
        file.set_permissions(fs::Permissions::from_mode(attrs.mode))?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temp, host)?;
        sync_parent(host);
        Ok(())
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&temp);
        return Err(io_error(display)(err));
    }
    Ok(true)
}

fn temp_path(host: &Path) -> PathBuf {
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    host.with_file_name(format!(".{name}.keel-provision-{}", std::process::id()))
}

fn sync_parent(host: &Path) {
    // Best effort: the rename is durable once the directory is; a failure here is not worth
    // failing a write that already happened.
    if let Some(parent) = host.parent() {
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
}

fn make_dir(host: &Path, mode: u32, display: &str) -> Result<(), FsError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(host)
        .map_err(io_error(display))?;
    // The umask may have narrowed the mode given to mkdir.
    fs::set_permissions(host, fs::Permissions::from_mode(mode)).map_err(io_error(display))
}

fn chown(host: &Path, display: &str, uid: u32, gid: u32) -> Result<(), FsError> {
    std::os::unix::fs::lchown(host, Some(uid), Some(gid)).map_err(io_error(display))
}

/// Brings an existing file or directory to `attrs`; returns whether anything changed.
pub fn fix_attrs(
    host: &Path,
    display: &str,
    meta: &fs::Metadata,
    attrs: Attrs,
) -> Result<bool, FsError> {
    let mut changed = false;
    if meta.uid() != attrs.uid || meta.gid() != attrs.gid {
        chown(host, display, attrs.uid, attrs.gid)?;
        changed = true;
    }
    // After chown, which clears set-id bits.
    if meta.mode() & 0o7777 != attrs.mode || changed {
        let current = fs::symlink_metadata(host)
            .map_err(io_error(display))?
            .mode()
            & 0o7777;
        if current != attrs.mode {
            fs::set_permissions(host, fs::Permissions::from_mode(attrs.mode))
                .map_err(io_error(display))?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Copies the host directory tree `from` into `to` (which exists), giving every copy `uid`
/// and `gid`; what already exists in `to` is left alone, as useradd does with /etc/skel.
pub fn copy_tree(from: &Path, to: &Path, display: &str, uid: u32, gid: u32) -> Result<(), FsError> {
    let entries = fs::read_dir(from).map_err(io_error(display))?;
    for entry in entries {
        let entry = entry.map_err(io_error(display))?;
        let source = entry.path();
        let dest = to.join(entry.file_name());
        if fs::symlink_metadata(&dest).is_ok() {
            continue;
        }
        let meta = fs::symlink_metadata(&source).map_err(io_error(display))?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(&source).map_err(io_error(display))?;
            symlink(&target, &dest).map_err(io_error(display))?;
        } else if kind.is_dir() {
            make_dir(&dest, meta.mode() & 0o7777, display)?;
            copy_tree(&source, &dest, display, uid, gid)?;
        } else if kind.is_file() {
            fs::copy(&source, &dest).map_err(io_error(display))?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_error(display))?;
        } else {
            continue;
        }
        chown(&dest, display, uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("var/home")).unwrap();
        symlink("var/home", dir.path().join("home")).unwrap();
        let rootfs = RootFs::new(dir.path()).unwrap();
        (dir, rootfs)
    }

    #[test]
    fn relative_links_inside_the_root_are_followed() {
        let (dir, rootfs) = tree();
        let host = rootfs.prepare("/home/core/.ssh/x").unwrap();
        assert_eq!(host, rootfs.root().join("var/home/core/.ssh/x"));
        assert!(dir.path().join("var/home/core/.ssh").is_dir());
    }

    #[test]
    fn dot_dot_and_escaping_links_are_refused() {
        let (dir, rootfs) = tree();
        assert!(matches!(
            rootfs.prepare("/etc/../../x"),
            Err(FsError::DotDot { .. })
        ));
        symlink("../..", dir.path().join("up")).unwrap();
        assert!(matches!(
            rootfs.prepare("/up/x"),
            Err(FsError::Escape { .. })
        ));
        symlink("/tmp", dir.path().join("tmp")).unwrap();
        assert!(matches!(
            rootfs.prepare("/tmp/x"),
            Err(FsError::Escape { .. })
        ));
    }

    #[test]
    fn absolute_links_into_the_root_itself_are_followed() {
        let (dir, rootfs) = tree();
        symlink(rootfs.root().join("var"), dir.path().join("v")).unwrap();
        assert_eq!(rootfs.prepare("/v/y").unwrap(), rootfs.root().join("var/y"));
    }

    #[test]
    fn reads_take_absolute_links_inside_the_root() {
        let (dir, rootfs) = tree();
        fs::create_dir_all(dir.path().join("usr/lib")).unwrap();
        fs::write(dir.path().join("usr/lib/f"), "inside").unwrap();
        symlink("/usr/lib/f", dir.path().join("abs")).unwrap();
        assert_eq!(rootfs.read("/abs").unwrap().unwrap(), b"inside");
        assert!(matches!(
            rootfs.resolve_creating("/abs"),
            Err(FsError::Escape { .. })
        ));
    }

    #[test]
    fn loops_stop() {
        let (dir, rootfs) = tree();
        symlink("b", dir.path().join("a")).unwrap();
        symlink("a", dir.path().join("b")).unwrap();
        assert!(matches!(
            rootfs.prepare("/a/x"),
            Err(FsError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn unchanged_content_is_not_rewritten() {
        let (_dir, rootfs) = tree();
        let attrs = Attrs::root(0o640);
        assert!(rootfs.write("/etc/a", b"x\n", attrs).unwrap());
        let host = rootfs.root().join("etc/a");
        let inode = fs::metadata(&host).unwrap().ino();
        assert!(!rootfs.write("/etc/a", b"x\n", attrs).unwrap());
        assert_eq!(fs::metadata(&host).unwrap().ino(), inode);
        assert!(rootfs.write("/etc/a", b"x\n", Attrs::root(0o600)).unwrap());
        assert_eq!(fs::metadata(&host).unwrap().mode() & 0o7777, 0o600);
    }
}
