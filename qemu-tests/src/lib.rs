//! Shared helpers for the QEMU boot tests and benchmarks: where the build's outputs are, what
//! the manifest says, and how to boot an image and wait for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_image::vm::{SerialMatch, Vm, VmConfig, VmError};

pub use keel_image::vm;

pub mod cluster;
pub mod containers;
pub mod guest_figures;
pub mod live;

/// Printed by keel-init as its first line.
pub const INIT_STARTING: &str = "keel-init: starting";
/// Any keel-init line.
pub const INIT_PREFIX: &str = "keel-init: ";
/// keel-init's fatal-error prefix (a refused root, a missing partition, ...).
pub const INIT_FATAL: &str = "keel-init: FATAL";
/// systemd stops printing status lines on the console once the serial getty owns it, which
/// usually happens before multi-user is reached, so the image announces it itself
/// (`keel: reached multi-user.target after N s`, from keel-ready.service).
pub use keel_image::vm::{KEEL_READY, MULTI_USER, MULTI_USER_MARKERS};
pub const KERNEL_PANIC: &str = "Kernel panic";

/// Where `make image` puts the private key whose public half root accepts.
pub const DEFAULT_TEST_KEY: &str = "/var/cache/keel/test-key/id_ed25519";

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what} not found at {path}: run `make image` first")]
    Missing { what: &'static str, path: PathBuf },
    #[error("manifest {path}: {problem}")]
    Manifest { path: PathBuf, problem: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("boot failed: {line}\nlast serial lines:\n{serial_tail}")]
    BootFailed { line: String, serial_tail: String },
    #[error(transparent)]
    Vm(#[from] VmError),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let context = context.into();
    move |source| HarnessError::Io { context, source }
}

/// The Cargo workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests sits inside the workspace")
        .to_path_buf()
}

/// `$KEEL_OUT`, or `out/` in the workspace root.
pub fn out_dir() -> PathBuf {
    std::env::var_os("KEEL_OUT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("out"))
}

/// A file of the build's outputs, which must exist.
pub fn output(name: &str) -> Result<PathBuf, HarnessError> {
    let path = out_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Missing {
            what: "build output",
            path,
        })
    }
}

/// `$KEEL_TEST_KEY`, or the key `make image` generates.
pub fn test_key() -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("KEEL_TEST_KEY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TEST_KEY));
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::Missing {
            what: "SSH test key",
            path,
        })
    }
}

/// How long one boot stage may take. TCG boots take well under a minute on an idle host; the
/// default leaves room for a loaded CI machine. `KEEL_BOOT_TIMEOUT` (seconds) overrides it.
pub fn boot_timeout() -> Duration {
    let secs = std::env::var("KEEL_BOOT_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(300);
    Duration::from_secs(secs)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub label: String,
    pub offset_bytes: u64,
    pub size_bytes: u64,
}

/// The parts of `manifest.json` the boot tests check against.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub root_hash: String,
    pub partitions: Vec<Partition>,
}

impl Manifest {
    pub fn load() -> Result<Self, HarnessError> {
        let path = output("manifest.json")?;
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        Self::parse(&text).map_err(|problem| HarnessError::Manifest { path, problem })
    }

    /// Reads only the fields the tests need, so the builder may add more freely.
    pub fn parse(text: &str) -> Result<Self, String> {
        let json: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let root_hash = json["root_hash"]
            .as_str()
            .ok_or("no string \"root_hash\"")?
            .to_ascii_lowercase();
        if root_hash.len() != 64 || !root_hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("root_hash {root_hash:?} is not 64 hex digits"));
        }
        let partitions = json["partitions"]
            .as_array()
            .ok_or("no \"partitions\" array")?
            .iter()
            .map(|p| {
                let num = |key: &str| {
                    p[key]
                        .as_u64()
                        .ok_or_else(|| format!("partition without numeric {key:?}: {p}"))
                };
                Ok(Partition {
                    number: num("number")? as u32,
                    label: p["label"]
                        .as_str()
                        .ok_or_else(|| format!("partition without \"label\": {p}"))?
                        .to_string(),
                    offset_bytes: num("offset_bytes")?,
                    size_bytes: num("size_bytes")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            root_hash,
            partitions,
        })
    }

    pub fn partition(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }
}

/// Boots `disk` (never modified) with the test key, keeping QEMU's files in `work_dir`.
pub fn start_vm(disk: &Path, work_dir: &Path) -> Result<Vm, HarnessError> {
    start_vm_with(disk, work_dir, |_| {})
}

/// Like [`start_vm`], with `adjust` changing the configuration first (extra drives, fw_cfg).
pub fn start_vm_with(
    disk: &Path,
    work_dir: &Path,
    adjust: impl FnOnce(&mut VmConfig),
) -> Result<Vm, HarnessError> {
    let key = test_key()?;
    let mut cfg = VmConfig::new(disk, work_dir);
    cfg.ssh_key = Some(key);
    adjust(&mut cfg);
    let vm = Vm::start(cfg)?;
    eprintln!(
        "booting {} with {} (serial log {})",
        disk.display(),
        vm.accel(),
        vm.serial_log_path().display()
    );
    Ok(vm)
}

/// A temporary directory for one VM's files that is removed when the test passed and kept
/// (with its serial.log and qemu.stderr) when it failed, so the failure can be looked into.
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    passed: bool,
}

impl WorkDir {
    pub fn new(prefix: &str) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .map_err(io("creating a temporary directory"))?;
        Ok(Self {
            dir: Some(dir),
            passed: false,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }

    /// Marks the test as passed: the directory is removed.
    pub fn passed(mut self) {
        self.passed = true;
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            if !self.passed {
                eprintln!(
                    "kept the VM's files for inspection: {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// When the stages of one boot were reached, counted from QEMU's start.
#[derive(Debug, Clone, Copy)]
pub struct BootTimes {
    pub first_init_line: Duration,
    pub multi_user: Duration,
}

/// Waits for the next boot (after the VM's serial cursor) to reach multi-user, failing as soon
/// as keel-init reports a fatal error or the kernel panics.
pub fn wait_for_boot(vm: &Vm, timeout: Duration) -> Result<BootTimes, HarnessError> {
    let init = vm.wait_for_any_line(&[INIT_PREFIX], timeout)?;
    check_not_fatal(vm, &init)?;
    let done =
        vm.wait_for_any_line(&[MULTI_USER, KEEL_READY, INIT_FATAL, KERNEL_PANIC], timeout)?;
    check_not_fatal(vm, &done)?;
    Ok(BootTimes {
        first_init_line: init.at,
        multi_user: done.at,
    })
}

fn check_not_fatal(vm: &Vm, m: &SerialMatch) -> Result<(), HarnessError> {
    if m.text.contains(INIT_FATAL) || m.text.contains(KERNEL_PANIC) {
        return Err(HarnessError::BootFailed {
            line: m.text.clone(),
            serial_tail: vm.serial_tail(),
        });
    }
    Ok(())
}

/// Runs a host tool, turning a failure into an error with its stderr and a missing tool into
/// one naming the Debian package.
fn run_tool(cmd: &mut std::process::Command, package: &str) -> Result<(), HarnessError> {
    let out = cmd
        .output()
        .map_err(io(format!("running {cmd:?} (Debian package {package})")))?;
    if !out.status.success() {
        return Err(HarnessError::Io {
            context: format!("{cmd:?}"),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(())
}

/// Boots `disk` with `user_data` offered through QEMU fw_cfg (`opt/org.keel/user-data`), the
/// quickest datasource to set up; the file is written into `work_dir`.
pub fn start_vm_with_user_data(
    disk: &Path,
    work_dir: &Path,
    user_data: &str,
) -> Result<Vm, HarnessError> {
    std::fs::create_dir_all(work_dir).map_err(io(format!("creating {}", work_dir.display())))?;
    let path = work_dir.join("user-data");
    std::fs::write(&path, user_data).map_err(io(format!("writing {}", path.display())))?;
    start_vm_with(disk, &work_dir.join("vm"), |cfg| {
        cfg.fw_cfg.push(("opt/org.keel/user-data".into(), path))
    })
}

/// The image's own slot-A kernel, initramfs and loader-entry command line, copied out of the
/// ESP of `out/keel.raw` into `dir`, with `extra_args` appended to the command line: the
/// same boot as from the disk, with kernel arguments a test needs (e.g. `keel.metadata_url=`).
pub fn direct_boot_from_esp(
    dir: &Path,
    extra_args: &str,
) -> Result<keel_image::vm::DirectBoot, HarnessError> {
    let raw = output("keel.raw")?;
    let manifest = Manifest::load()?;
    let esp = manifest
        .partition("EFI-SYSTEM")
        .ok_or_else(|| HarnessError::Manifest {
            path: out_dir().join("manifest.json"),
            problem: "no EFI-SYSTEM partition".into(),
        })?;
    // mtools reads a FAT file system at an offset inside an image with `image@@offset`.
    let mut image = raw.into_os_string();
    image.push(format!("@@{}", esp.offset_bytes));
    let copy = |from: &str, to: &Path| {
        run_tool(
            std::process::Command::new("mcopy")
                .arg("-o")
                .arg("-i")
                .arg(&image)
                .arg(from)
                .arg(to)
                .env("MTOOLS_SKIP_CHECK", "1"),
            "mtools",
        )
    };
    let (kernel, initrd, entry) = (
        dir.join("vmlinuz"),
        dir.join("initrd.img"),
        dir.join("keel-a.conf"),
    );
    copy("::/keel/a/vmlinuz", &kernel)?;
    copy("::/keel/a/initrd.img", &initrd)?;
    copy("::/loader/entries/keel-a.conf", &entry)?;
    let text = std::fs::read_to_string(&entry).map_err(io("reading the loader entry"))?;
    let options = text
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .ok_or_else(|| HarnessError::Io {
            context: "the ESP's loader entry".into(),
            source: std::io::Error::other("no `options` line"),
        })?;
    Ok(keel_image::vm::DirectBoot {
        kernel,
        initrd,
        cmdline: format!("{} {extra_args}", options.trim()),
    })
}

/// Writes a NoCloud seed into `dir`: a small FAT image labelled `cidata` holding `user-data`
/// and `meta-data`, which Keel's provisioner and cloud-init both read. Attach it with
/// `VmConfig::extra_drives`. Needs mkfs.vfat (dosfstools) and mcopy (mtools).
pub fn nocloud_seed(dir: &Path, user_data: &str, meta_data: &str) -> Result<PathBuf, HarnessError> {
    let img = dir.join("cidata.img");
    keel_image::vm::vfat_drive(
        &img,
        "cidata",
        &[
            ("user-data", user_data.as_bytes()),
            ("meta-data", meta_data.as_bytes()),
        ],
    )?;
    Ok(img)
}

/// A blank qcow2 disk of `size_gib` GiB: the target of an install, or a disk a live boot
/// ignores.
pub fn blank_disk(path: &Path, size_gib: u32) -> Result<PathBuf, HarnessError> {
    run_tool(
        std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(path)
            .arg(format!("{size_gib}G")),
        "qemu-utils",
    )?;
    Ok(path.to_path_buf())
}

/// Copies an image keeping its holes, so a multi-GiB raw disk costs only its data.
pub fn sparse_copy(from: &Path, to: &Path) -> Result<(), HarnessError> {
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .map_err(io("running cp"))?;
    if !status.success() {
        return Err(HarnessError::Io {
            context: format!("cp {} {}", from.display(), to.display()),
            source: std::io::Error::other(status.to_string()),
        });
    }
    Ok(())
}

/// Inverts the byte at `offset` and returns its old value.
pub fn flip_byte(path: &Path, offset: u64) -> Result<u8, HarnessError> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(format!("opening {}", path.display())))?;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset)
        .map_err(io(format!("reading {} at {offset}", path.display())))?;
    let old = byte[0];
    file.write_all_at(&[!old], offset)
        .map_err(io(format!("writing {} at {offset}", path.display())))?;
    file.sync_all().map_err(io("syncing the tampered image"))?;
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
        "root_hash": "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
        "packages": {"systemd": "252"},
        "partitions": [
            {"number": 1, "label": "EFI-SYSTEM", "type_guid": "x", "uuid": "y",
             "offset_bytes": 1048576, "size_bytes": 134217728},
            {"number": 2, "label": "ROOT-A", "type_guid": "x", "uuid": "y",
             "offset_bytes": 135266304, "size_bytes": 805306368}
        ]
    }"#;

    #[test]
    fn manifest_parses_the_fields_the_tests_use() {
        let m = Manifest::parse(MANIFEST).unwrap();
        assert_eq!(
            m.root_hash,
            "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        );
        let root = m.partition("ROOT-A").unwrap();
        assert_eq!(root.number, 2);
        assert_eq!(root.offset_bytes, 135266304);
        assert!(m.partition("ROOT-B").is_none());
    }

    #[test]
    fn manifest_rejects_a_short_root_hash() {
        let err = Manifest::parse(r#"{"root_hash": "abc", "partitions": []}"#).unwrap_err();
        assert!(err.contains("64 hex"), "{err}");
    }

    #[test]
    fn flip_byte_inverts_exactly_one_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        std::fs::write(&path, [0x11u8; 64]).unwrap();
        assert_eq!(flip_byte(&path, 10).unwrap(), 0x11);
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data[10], 0xee);
        assert_eq!(data.iter().filter(|&&b| b != 0x11).count(), 1);
    }

    #[test]
    fn missing_outputs_point_at_make_image() {
        let err = output("no-such-output.bin").unwrap_err();
        assert!(err.to_string().contains("make image"), "{err}");
    }
}
