//! Turning the base tree into the image's root: overlays, Keel's binaries, pruning, /var
//! relocation of the writable homes, and normalised timestamps.

use crate::spec::UserSpec;
use crate::tools::{self, ToolError};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("overlay `{name}` not found at {path}")]
    MissingOverlay { name: String, path: PathBuf },
    #[error("the base tree has {found} kernels in /usr/lib/modules; the image needs exactly one")]
    KernelCount { found: usize },
    #[error("kernel module `{name}` is neither a module nor built into kernel {kernel}")]
    UnknownModule { name: String, kernel: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies an overlay folder over `root`. Git keeps only the executable bit, so files get 0755
/// or 0644 and directories 0755, all owned by root; symlinks are copied as links.
pub fn apply_overlay(src: &Path, root: &Path) -> Result<usize, StageError> {
    let mut count = 0;
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(io_err(src))?
        .collect::<Result<_, _>>()
        .map_err(io_err(src))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = root.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err(&from))?;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from).map_err(io_err(&from))?;
            remove_any(&to)?;
            symlink(&target, &to).map_err(io_err(&to))?;
            count += 1;
        } else if meta.is_dir() {
            if fs::symlink_metadata(&to)
                .map(|m| !m.is_dir())
                .unwrap_or(false)
            {
                remove_any(&to)?;
            }
            fs::create_dir_all(&to).map_err(io_err(&to))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).map_err(io_err(&to))?;
            count += apply_overlay(&from, &to)?;
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            install_file(&from, &to, mode)?;
            count += 1;
        }
    }
    Ok(count)
}

/// Copies one file into the tree with `mode`, owned by root, replacing what was there.
pub fn install_file(from: &Path, to: &Path, mode: u32) -> Result<(), StageError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    remove_any(to)?;
    fs::copy(from, to).map_err(io_err(from))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(io_err(to))?;
    std::os::unix::fs::lchown(to, Some(0), Some(0)).map_err(io_err(to))?;
    Ok(())
}

/// Writes `contents` to a file of the tree with `mode`.
pub fn write_file(to: &Path, contents: &[u8], mode: u32) -> Result<(), StageError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    remove_any(to)?;
    fs::write(to, contents).map_err(io_err(to))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(io_err(to))
}

fn remove_any(path: &Path) -> Result<(), StageError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StageError::Io {
            path: path.into(),
            source: e,
        }),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err(path)),
        Ok(_) => fs::remove_file(path).map_err(io_err(path)),
    }
}

/// Installed package versions, read from dpkg's status file before pruning removes it.
pub fn installed_packages(root: &Path) -> Result<BTreeMap<String, String>, StageError> {
    let status_path = root.join("var/lib/dpkg/status");
    let text = fs::read_to_string(&status_path).map_err(io_err(&status_path))?;
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(pkg), Some(ver), Some(status)) =
            (field("Package:"), field("Version:"), field("Status:"))
        {
            if status.ends_with(" installed") {
                out.insert(pkg, ver);
            }
        }
    }
    Ok(out)
}

/// The single kernel release in the tree (the name of its /usr/lib/modules folder).
pub fn kernel_release(root: &Path) -> Result<String, StageError> {
    let dir = root.join("usr/lib/modules");
    let mut found: Vec<String> = fs::read_dir(&dir)
        .map_err(io_err(&dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if found.len() != 1 {
        return Err(StageError::KernelCount { found: found.len() });
    }
    Ok(found.remove(0))
}

/// The kernel's module dependency graph, from modules.dep and modules.builtin.
pub struct ModuleIndex {
    pub release: String,
    /// Module name (with '-' as '_') → path relative to the release folder.
    paths: BTreeMap<String, String>,
    /// Relative path → its direct dependencies (relative paths).
    deps: BTreeMap<String, Vec<String>>,
    builtin: Vec<String>,
}

fn module_name(rel_path: &str) -> String {
    let file = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModuleIndex {
    pub fn parse(release: &str, modules_dep: &str, modules_builtin: &str) -> ModuleIndex {
        let mut paths = BTreeMap::new();
        let mut deps = BTreeMap::new();
        for line in modules_dep.lines() {
            let Some((module, rest)) = line.split_once(':') else {
                continue;
            };
            paths.insert(module_name(module), module.to_string());
            deps.insert(
                module.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            );
        }
        let builtin = modules_builtin.lines().map(module_name).collect();
        ModuleIndex {
            release: release.to_string(),
            paths,
            deps,
            builtin,
        }
    }

    pub fn load(root: &Path, release: &str) -> Result<ModuleIndex, StageError> {
        let dir = root.join("usr/lib/modules").join(release);
        let dep = dir.join("modules.dep");
        let builtin = dir.join("modules.builtin");
        Ok(ModuleIndex::parse(
            release,
            &fs::read_to_string(&dep).map_err(io_err(&dep))?,
            &fs::read_to_string(&builtin).unwrap_or_default(),
        ))
    }

    /// The modules to load for `names`, dependencies before the modules that need them,
    /// as paths relative to the release folder. Built-in names need nothing.
    pub fn resolve(&self, names: &[String]) -> Result<Vec<String>, StageError> {
        let mut order = Vec::new();
        for name in names {
            let key = name.replace('-', "_");
            match self.paths.get(&key) {
                Some(path) => self.visit(path, &mut order),
                None if self.builtin.contains(&key) => {}
                None => {
                    return Err(StageError::UnknownModule {
                        name: name.clone(),
                        kernel: self.release.clone(),
                    })
                }
            }
        }
        Ok(order)
    }

    fn visit(&self, path: &str, order: &mut Vec<String>) {
        if order.iter().any(|p| p == path) {
            return;
        }
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, order);
        }
        order.push(path.to_string());
    }
}

/// Removes every module file not in `keep` and regenerates the module indexes with the image's
/// own depmod, so modprobe in the image sees exactly what is there.
pub fn prune_modules(root: &Path, release: &str, keep: &[String]) -> Result<usize, StageError> {
    let dir = root.join("usr/lib/modules").join(release);
    let mut removed = 0;
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err(&d))? {
            let entry = entry.map_err(io_err(&d))?;
            let path = entry.path();
            if entry.file_type().map_err(io_err(&path))?.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(&dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                if rel.contains(".ko") && !keep.contains(&rel) {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    removed += 1;
                }
            }
        }
    }
    remove_empty_dirs(&dir.join("kernel"))?;
    tools::run(&mut tools::command(
        "chroot",
        [
            root.as_os_str(),
            "depmod".as_ref(),
            "-a".as_ref(),
            release.as_ref(),
        ],
    ))?;
    Ok(removed)
}

fn remove_empty_dirs(dir: &Path) -> Result<bool, StageError> {
    let mut empty = true;
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        if entry.file_type().map_err(io_err(&path))?.is_dir() && remove_empty_dirs(&path)? {
            fs::remove_dir(&path).map_err(io_err(&path))?;
        } else {
            empty = false;
        }
    }
    Ok(empty)
}

/// What an immutable image does not carry: documentation, man pages, locales, the package
/// manager's state and caches, logs of the bootstrap, per-machine identity and the host's
/// resolver settings. Globs are not needed: each entry is a path, its contents go.
const PRUNED: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/linda",
    "usr/share/bug",
    "usr/share/common-licenses",
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/log",
    "var/lib/dbus/machine-id",
    "etc/ssh/ssh_host_ecdsa_key",
    "etc/ssh/ssh_host_ecdsa_key.pub",
    "etc/ssh/ssh_host_ed25519_key",
    "etc/ssh/ssh_host_ed25519_key.pub",
    "etc/ssh/ssh_host_rsa_key",
    "etc/ssh/ssh_host_rsa_key.pub",
    "etc/systemd/system/timers.target.wants/apt-daily.timer",
    "etc/systemd/system/timers.target.wants/apt-daily-upgrade.timer",
    "initrd.img",
    "initrd.img.old",
    "vmlinuz",
    "vmlinuz.old",
];

/// Prunes the tree; returns how many top-level entries were removed. Folders that the system
/// expects to exist (/var/log, /usr/share/locale) are recreated empty.
pub fn prune(root: &Path, extra: &[String]) -> Result<usize, StageError> {
    let mut removed = 0;
    for rel in PRUNED
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
    {
        let rel = rel.trim_start_matches('/');
        let p = root.join(rel);
        if fs::symlink_metadata(&p).is_ok() {
            remove_any(&p)?;
            removed += 1;
        }
    }
    for dir in ["var/log", "usr/share/locale", "tmp", "var/tmp"] {
        let p = root.join(dir);
        remove_any(&p)?;
        fs::create_dir_all(&p).map_err(io_err(&p))?;
    }
    for dir in ["tmp", "var/tmp"] {
        let p = root.join(dir);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o1777)).map_err(io_err(&p))?;
    }
    // systemd treats an empty machine-id as "first boot" and writes a new one to the (writable,
    // overlaid) /etc; an image must never carry the builder's.
    write_file(&root.join("etc/machine-id"), b"", 0o444)?;
    Ok(removed)
}

/// Moves the kernel out of /boot (it is booted from the ESP) and returns where it went.
pub fn take_kernel(root: &Path, release: &str, dest_dir: &Path) -> Result<PathBuf, StageError> {
    let src = root.join("boot").join(format!("vmlinuz-{release}"));
    let dest = dest_dir.join("vmlinuz");
    fs::copy(&src, &dest).map_err(io_err(&src))?;
    let boot = root.join("boot");
    remove_any(&boot)?;
    fs::create_dir(&boot).map_err(io_err(&boot))?;
    Ok(dest)
}

/// Writable homes live on STATE: /root, /home, /srv and /opt become links into /var, and what
/// the image had there moves along, so the first boot copies it onto STATE.
pub const RELOCATED: &[(&str, &str)] = &[
    ("root", "var/roothome"),
    ("home", "var/home"),
    ("srv", "var/srv"),
    ("opt", "var/opt"),
];

pub fn relocate_into_var(root: &Path) -> Result<(), StageError> {
    for (from, to) in RELOCATED {
        let src = root.join(from);
        let dest = root.join(to);
        let meta = fs::symlink_metadata(&src).ok();
        if meta.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        if meta.is_some() {
            fs::rename(&src, &dest).map_err(io_err(&src))?;
        } else {
            fs::create_dir_all(&dest).map_err(io_err(&dest))?;
        }
        symlink(*to, &src).map_err(io_err(&src))?;
    }
    // root's home keeps root-only permissions wherever it lives.
    let roothome = root.join("var/roothome");
    fs::set_permissions(&roothome, fs::Permissions::from_mode(0o700)).map_err(io_err(&roothome))
}

/// Adds SSH public keys for root (the build-time key the VM tests log in with).
pub fn add_root_authorized_keys(root: &Path, keys: &[PathBuf]) -> Result<(), StageError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for k in keys {
        let key = fs::read_to_string(k).map_err(io_err(k))?;
        text.push_str(key.trim());
        text.push('\n');
    }
    let ssh = root.join("var/roothome/.ssh");
    fs::create_dir_all(&ssh).map_err(io_err(&ssh))?;
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).map_err(io_err(&ssh))?;
    write_file(&ssh.join("authorized_keys"), text.as_bytes(), 0o600)
}

/// Enables units by their [Install] sections with the image's own systemctl.
pub fn enable_units(root: &Path, units: &[String]) -> Result<(), StageError> {
    if units.is_empty() {
        return Ok(());
    }
    let mut cmd = tools::command(
        "chroot",
        [root.as_os_str(), "systemctl".as_ref(), "enable".as_ref()],
    );
    cmd.args(units);
    tools::run(&mut cmd)?;
    Ok(())
}

/// Disables units (removes their [Install] symlinks) with the image's own systemctl, then
/// links their `Alias=` names again: a disabled unit is not started at boot, but stays
/// reachable under its other names (Debian's etcd.service is also etcd2.service, the name
/// CoreOS cloud-configs start and configure).
pub fn disable_units(root: &Path, units: &[String]) -> Result<(), StageError> {
    if units.is_empty() {
        return Ok(());
    }
    let mut cmd = tools::command(
        "chroot",
        [root.as_os_str(), "systemctl".as_ref(), "disable".as_ref()],
    );
    cmd.args(units);
    tools::run(&mut cmd)?;
    for unit in units {
        link_unit_aliases(root, unit)?;
    }
    Ok(())
}

/// Creates the spec's users with the image's own groupadd and useradd: a group of the same name
/// and id, the supplementary groups, a home from /etc/skel, no password (SSH keys only). The
/// shadow entries' date comes from `epoch` (SOURCE_DATE_EPOCH), so the image stays reproducible.
pub fn add_users(root: &Path, users: &[UserSpec], epoch: u64) -> Result<(), StageError> {
    for user in users {
        let uid = user.uid.to_string();
        let home = user
            .home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", user.name));
        let mut group = tools::command("chroot", [root.as_os_str(), "groupadd".as_ref()]);
        group.args(["--gid", &uid, &user.name]);
        group.env("SOURCE_DATE_EPOCH", epoch.to_string());
        tools::run(&mut group)?;
        let mut add = tools::command("chroot", [root.as_os_str(), "useradd".as_ref()]);
        add.args([
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--create-home",
            "--home-dir",
            &home,
        ]);
        add.args(["--shell", &user.shell, "--password", "*"]);
        if !user.gecos.is_empty() {
            add.args(["--comment", &user.gecos]);
        }
        if !user.groups.is_empty() {
            add.args(["--groups", &user.groups.join(",")]);
        }
        add.arg(&user.name);
        add.env("SOURCE_DATE_EPOCH", epoch.to_string());
        tools::run(&mut add)?;
    }
    Ok(())
}

/// Where systemd looks for unit files an image ships, most specific first.
const UNIT_DIRS: [&str; 3] = [
    "etc/systemd/system",
    "usr/lib/systemd/system",
    "lib/systemd/system",
];

/// Links each `Alias=` of `unit`'s [Install] section in /etc/systemd/system to the unit file;
/// returns the aliases linked. A unit with no file in the root has none.
pub fn link_unit_aliases(root: &Path, unit: &str) -> Result<Vec<String>, StageError> {
    let Some(dir) = UNIT_DIRS
        .iter()
        .find(|dir| root.join(dir).join(unit).is_file())
    else {
        return Ok(Vec::new());
    };
    let file = root.join(dir).join(unit);
    let text = fs::read_to_string(&file).map_err(io_err(&file))?;
    let aliases = install_aliases(&text);
    let links = root.join("etc/systemd/system");
    fs::create_dir_all(&links).map_err(io_err(&links))?;
    for alias in &aliases {
        let link = links.join(alias);
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).map_err(io_err(&link))?;
        }
        symlink(Path::new("/").join(dir).join(unit), &link).map_err(io_err(&link))?;
    }
    Ok(aliases)
}

/// The names in the `Alias=` lines of a unit file's [Install] section.
fn install_aliases(unit_text: &str) -> Vec<String> {
    let mut section = "";
    let mut aliases = Vec::new();
    for line in unit_text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Install]" {
            if let Some(value) = line.strip_prefix("Alias=") {
                aliases.extend(value.split_whitespace().map(str::to_string));
            }
        }
    }
    aliases
}

/// Calls `visit` for every entry under `root` (itself included), links not followed.
fn walk(
    root: &Path,
    mut visit: impl FnMut(&Path, &fs::Metadata) -> Result<(), StageError>,
) -> Result<(), StageError> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = fs::symlink_metadata(&p).map_err(io_err(&p))?;
        if meta.is_dir() {
            for e in fs::read_dir(&p).map_err(io_err(&p))? {
                stack.push(e.map_err(io_err(&p))?.path());
            }
        }
        visit(&p, &meta)?;
    }
    Ok(())
}

/// Sets atime and mtime of every entry to `epoch`, links included, so the filesystem made from
/// the tree does not depend on when the build ran.
pub fn normalise_times(root: &Path, epoch: u64) -> Result<usize, StageError> {
    let ts = libc::timespec {
        tv_sec: epoch as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    let mut count = 0;
    walk(root, |p, _| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("no NUL in paths");
        // SAFETY: c is a valid NUL-terminated path and times points at two timespecs.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(StageError::Io {
                path: p.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
        count += 1;
        Ok(())
    })?;
    Ok(count)
}

/// Bytes of file data in the tree (apparent sizes), for the manifest and the root-size check.
pub fn tree_size(root: &Path) -> Result<u64, StageError> {
    let mut total = 0;
    walk(root, |_, meta| {
        if !meta.is_dir() {
            total += meta.len();
        }
        Ok(())
    })?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/lib/reed_solomon/reed_solomon.ko
kernel/drivers/md/dm-bufio.ko:
kernel/lib/reed_solomon/reed_solomon.ko:
kernel/drivers/md/dm-mod.ko:
kernel/fs/overlayfs/overlay.ko:
";

    #[test]
    fn modules_resolve_dependencies_first() {
        let idx = ModuleIndex::parse("6.1", DEP, "kernel/fs/ext4/ext4.ko\n");
        let order = idx
            .resolve(&["dm_verity".into(), "overlay".into(), "ext4".into()])
            .unwrap();
        assert_eq!(
            order,
            vec![
                "kernel/drivers/md/dm-bufio.ko",
                "kernel/lib/reed_solomon/reed_solomon.ko",
                "kernel/drivers/md/dm-verity.ko",
                "kernel/fs/overlayfs/overlay.ko",
            ]
        );
        let err = idx.resolve(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("`nope`") && err.contains("6.1"), "{err}");
    }

    #[test]
    fn package_versions_come_from_dpkg_status() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("var/lib/dpkg/status");
        fs::create_dir_all(status.parent().unwrap()).unwrap();
        fs::write(
            &status,
            "Package: a\nStatus: install ok installed\nVersion: 1.0\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 2\n",
        )
        .unwrap();
        let pkgs = installed_packages(dir.path()).unwrap();
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs["a"], "1.0");
    }

    #[test]
    fn disabled_units_keep_their_aliases() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("usr/lib/systemd/system");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("etcd.service"),
            "[Unit]\nAlias=not-this.service\n[Service]\nExecStart=/usr/bin/etcd\n\n[Install]\nWantedBy=multi-user.target\nAlias=etcd2.service  etcd-member.service\n",
        )
        .unwrap();
        assert_eq!(
            link_unit_aliases(root.path(), "etcd.service").unwrap(),
            vec!["etcd2.service", "etcd-member.service"]
        );
        assert_eq!(
            fs::read_link(root.path().join("etc/systemd/system/etcd2.service")).unwrap(),
            Path::new("/usr/lib/systemd/system/etcd.service")
        );
        // Linking again replaces the links; a unit the root lacks has no aliases.
        link_unit_aliases(root.path(), "etcd.service").unwrap();
        assert!(link_unit_aliases(root.path(), "nope.service")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn overlays_copy_files_links_and_modes() {
        let src = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(src.path().join("etc/x")).unwrap();
        fs::write(src.path().join("etc/x/conf"), "a").unwrap();
        fs::write(src.path().join("etc/x/run.sh"), "#!/bin/sh").unwrap();
        fs::set_permissions(
            src.path().join("etc/x/run.sh"),
            fs::Permissions::from_mode(0o775),
        )
        .unwrap();
        symlink("conf", src.path().join("etc/x/link")).unwrap();
        fs::create_dir_all(root.path().join("etc/x")).unwrap();
        fs::write(root.path().join("etc/x/conf"), "old").unwrap();
        assert_eq!(apply_overlay(src.path(), root.path()).unwrap(), 3);
        assert_eq!(
            fs::read_to_string(root.path().join("etc/x/conf")).unwrap(),
            "a"
        );
        let mode = |p: &str| {
            fs::metadata(root.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("etc/x/conf"), 0o644);
        assert_eq!(mode("etc/x/run.sh"), 0o755);
        assert_eq!(
            fs::read_link(root.path().join("etc/x/link")).unwrap(),
            Path::new("conf")
        );
    }

    #[test]
    fn homes_move_into_var() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("root")).unwrap();
        fs::write(root.path().join("root/.profile"), "p").unwrap();
        fs::create_dir_all(root.path().join("var")).unwrap();
        relocate_into_var(root.path()).unwrap();
        assert_eq!(
            fs::read_link(root.path().join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert_eq!(
            fs::read_to_string(root.path().join("var/roothome/.profile")).unwrap(),
            "p"
        );
        assert!(root.path().join("var/home").is_dir());
        // A second run changes nothing.
        relocate_into_var(root.path()).unwrap();
    }

    #[test]
    fn times_are_normalised() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("f"), "x").unwrap();
        symlink("f", root.path().join("l")).unwrap();
        assert_eq!(normalise_times(root.path(), 1_000_000).unwrap(), 3);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::symlink_metadata(root.path().join("l")).unwrap().mtime(),
            1_000_000
        );
        assert_eq!(
            fs::metadata(root.path().join("f")).unwrap().atime(),
            1_000_000
        );
    }
}
