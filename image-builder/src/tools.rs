//! Host tools the build runs, the Debian package each comes from, and one place that runs them
//! so that every failure reports the command and what it printed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("`{tool}` is not installed: apt-get install {package}")]
    Missing { tool: String, package: &'static str },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// Every host program or file the build needs, with its Debian package.
pub const BUILD_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("dumpe2fs", "e2fsprogs"),
    ("e2fsck", "e2fsprogs"),
    ("mtype", "mtools"),
    ("mkfs.vfat", "dosfstools"),
    ("mcopy", "mtools"),
    ("mmd", "mtools"),
    ("xorriso", "xorriso"),
    ("qemu-img", "qemu-utils"),
    ("tar", "tar"),
    ("chroot", "coreutils"),
];

/// Host programs that `keel vm`, `keel cluster` and the tests run besides the build's, with
/// their Debian packages, so a missing one is named with its package too.
pub const RUN_TOOLS: &[(&str, &str)] = &[
    ("mlabel", "mtools"),
    ("sfdisk", "fdisk"),
    ("veritysetup", "cryptsetup-bin"),
    ("cpio", "cpio"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("docker-registry", "docker-registry"),
];

/// The Debian package that provides `tool`, when Keel knows it.
pub fn package_of(tool: &str) -> Option<&'static str> {
    BUILD_TOOLS
        .iter()
        .chain(RUN_TOOLS)
        .find(|(t, _)| *t == tool)
        .map(|(_, p)| *p)
}

/// Finds `tool` on PATH (or, for an absolute path, checks it exists).
pub fn find(tool: &str) -> Option<PathBuf> {
    let p = Path::new(tool);
    if p.is_absolute() {
        return p.exists().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|c| c.is_file())
}

/// Finds `tool`, or says which Debian package to install for it.
pub fn require(tool: &str) -> Result<PathBuf, ToolError> {
    find(tool).ok_or_else(|| ToolError::Missing {
        tool: tool.to_string(),
        package: package_of(tool).unwrap_or("(unknown: see README)"),
    })
}

/// Checks every build tool up front, so a missing one fails the build before any work.
pub fn check_all() -> Result<(), ToolError> {
    for (tool, package) in BUILD_TOOLS {
        if find(tool).is_none() {
            return Err(ToolError::Missing {
                tool: tool.to_string(),
                package,
            });
        }
    }
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; a non-zero exit becomes an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<String, ToolError> {
    let command = describe(cmd);
    tracing::debug!("running {command}");
    let out = cmd.output().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            let tool = cmd.get_program().to_string_lossy().into_owned();
            if let Some(package) = package_of(&tool) {
                return ToolError::Missing { tool, package };
            }
        }
        ToolError::Spawn {
            command: command.clone(),
            source,
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(ToolError::Failed {
            command,
            status: out.status.to_string(),
            stderr: tail.join("\n"),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `path` through `fill` into `.<name>.tmp` beside it, then renames it into place:
/// readers never see half a file, and a failed write leaves nothing behind.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = std::fs::File::create(&tmp).and_then(|mut file| {
        fill(&mut file)?;
        file.sync_all()
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}

/// The sha256 of a file, in hex (as SHA256SUMS lists it).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// `Command::new(program)` with `args`, for the common case.
pub fn command<I, S>(program: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_names_its_package() {
        let err = run(&mut Command::new("mkfs.vfat-not-here")).unwrap_err();
        assert!(matches!(err, ToolError::Spawn { .. }));
        let err = ToolError::Missing {
            tool: "mcopy".into(),
            package: package_of("mcopy").unwrap(),
        };
        assert_eq!(
            err.to_string(),
            "`mcopy` is not installed: apt-get install mtools"
        );
    }

    /// `make deps` (scripts/host-deps.sh) must install every package Keel names for a tool,
    /// or a new machine finds the gap only when the tool is first run. `tar` and `coreutils`
    /// are essential: every Debian system has them.
    #[test]
    fn host_deps_installs_every_tools_package() {
        let script = include_str!("../../scripts/host-deps.sh");
        let listed: Vec<&str> = script
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect();
        for (tool, package) in BUILD_TOOLS.iter().chain(RUN_TOOLS) {
            if matches!(*package, "tar" | "coreutils") {
                continue;
            }
            assert!(
                listed.contains(package),
                "scripts/host-deps.sh does not install {package} (for {tool})"
            );
        }
    }

    #[test]
    fn failures_carry_stderr() {
        let err = run(&mut command("sh", ["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("boom") && text.contains("exit status: 3"),
            "{text}"
        );
    }
}
