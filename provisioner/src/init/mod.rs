//! `keel-init`: the steps from an unpacked initramfs to systemd on the verified root.
//!
//! Each step prints one line (see [`console`]); the first failure prints
//! `keel-init: FATAL: <step>: <detail>` and the init stops there, never falling back to
//! something less verified.

pub mod cmdline;
pub mod console;
pub mod copy;
pub mod disks;
pub mod dm;
pub mod live;
pub mod modules;
pub mod mounts;
pub mod state;
pub mod switch_root;
pub mod sys;

use crate::datasource::file::DEFAULT_USER_DATA_FILE;
use cmdline::{BootArgs, CmdlineError};
use console::say;
use copy::CopyError;
use disks::{DiskError, KeelPartitions};
use dm::{DmError, DmTarget};
use keel_image::layout::{ESP_USER_DATA, PROVISIONER_FILE};
use keel_image::spec::Provisioner;
use keel_image::verity::{Superblock, SUPERBLOCK_SIZE};
use live::{LiveError, LiveSource};
use modules::ModuleError;
use mounts::MountError;
use state::StateError;
use std::convert::Infallible;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use switch_root::SwitchRootError;

/// Where the verified root is mounted before it becomes /.
pub const SYSROOT: &str = "/sysroot";
/// Device-mapper name of the verified root.
pub const DM_ROOT_NAME: &str = "root";
/// How often and how long to look for the disk while drivers probe.
const DISK_POLL_INTERVAL: Duration = Duration::from_millis(100);
const DISK_WAIT: Duration = Duration::from_secs(30);
/// Where STATE is filled on first boot, inside the (moved) /run of the new root.
const STATE_INIT_MOUNT: &str = "run/keel/state-init";
/// The writable layer of /etc, on STATE (paths inside the new root).
const ETC_UPPER: &str = "var/lib/keel/etc/upper";
const ETC_WORK: &str = "var/lib/keel/etc/work";

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("keel-init is not PID 1 (it is {0}); it only runs as an initramfs /init")]
    NotPid1(u32),
    #[error("mount API filesystems: {0}")]
    ApiFilesystems(#[source] MountError),
    #[error("load modules: {0}")]
    Modules(#[from] ModuleError),
    #[error("kernel command line: reading /proc/cmdline: {0}")]
    ReadCmdline(#[source] io::Error),
    #[error("kernel command line: {0}")]
    Cmdline(#[from] CmdlineError),
    #[error("find partitions: {0}")]
    Partitions(#[from] DiskError),
    #[error("dm-verity: reading the verity superblock of {label} {device}: {detail}")]
    VeritySuperblock {
        label: String,
        device: PathBuf,
        detail: String,
    },
    #[error(
        "dm-verity: setting up {what} failed: {source}; the root filesystem does not match \
         roothash={root_hash} or its verity data is damaged; refusing to boot"
    )]
    VeritySetup {
        what: String,
        root_hash: String,
        source: Box<DmError>,
    },
    #[error(
        "mount root: dm-verity rejected {label}: its data does not match roothash={root_hash} \
         (EIO); refusing to boot"
    )]
    RootRejected { label: String, root_hash: String },
    #[error("mount root: {0}")]
    MountRoot(#[source] MountError),
    #[error("prepare {SYSROOT}: {0}")]
    MoveApiFilesystems(#[source] MountError),
    #[error("STATE: {0}")]
    State(#[from] StateError),
    #[error("STATE: {0}")]
    StateMount(#[source] MountError),
    #[error("STATE: {0}")]
    StateCopy(#[from] CopyError),
    #[error("/etc overlay: {0}")]
    EtcOverlay(#[source] MountError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error("switch root: {0}")]
    SwitchRoot(#[from] SwitchRootError),
    #[error("internal error: {0}")]
    Panic(String),
}

/// Runs the boot; on failure prints the FATAL line and, as PID 1, sleeps forever: exiting
/// would panic the kernel and scroll the reason away.
pub fn run_as_pid1(init_args: Vec<OsString>) -> ! {
    let outcome = std::panic::catch_unwind(|| boot(&init_args));
    let error = match outcome {
        Ok(Ok(never)) => match never {},
        Ok(Err(error)) => error,
        Err(panic) => {
            let text = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            InitError::Panic(text)
        }
    };
    console::fatal(&error.to_string());
    if std::process::id() != 1 {
        std::process::exit(1);
    }
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

/// Sizes for humans: 1.5 GiB, 64.0 MiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn boot(init_args: &[OsString]) -> Result<Infallible, InitError> {
    console::ensure_console();
    say(&format!(
        "starting (keel-init {})",
        env!("CARGO_PKG_VERSION")
    ));
    if std::process::id() != 1 {
        return Err(InitError::NotPid1(std::process::id()));
    }

    mounts::mount_api_filesystems().map_err(InitError::ApiFilesystems)?;
    say("mounted /proc /sys /dev /run");

    let loaded = modules::load_listed_modules(Path::new(modules::MODULE_LIST))?;
    say(&format!(
        "loaded {} modules ({} already present)",
        loaded.loaded, loaded.already_present
    ));

    let cmdline = fs::read_to_string("/proc/cmdline").map_err(InitError::ReadCmdline)?;
    let args = BootArgs::parse(&cmdline)?;
    if args.live {
        boot_live(&args)?;
    } else {
        boot_installed(&args)?;
    }
    mount_etc_overlay()?;
    run_local_provisioning(&cmdline);

    if !fs::symlink_metadata("/root").is_ok_and(|m| m.file_type().is_symlink()) {
        say("note: /root in the image is not a symlink into /var; root's home is read-only");
    }
    say("starting systemd");
    Err(switch_root::exec_init(init_args).into())
}

/// A boot from a disk: ROOT-A and its hash partition, STATE on the disk.
fn boot_installed(args: &BootArgs) -> Result<(), InitError> {
    let (root_uuid, verity_uuid) = args.partuuids();
    say(&format!(
        "roothash={}: looking for root PARTUUID {root_uuid} and verity PARTUUID {verity_uuid}{}",
        args.root_hash_hex(),
        if args.first_boot_forced {
            " (keel.first_boot=1)"
        } else {
            ""
        }
    ));

    let disk = disks::wait_for_keel_partitions(
        Path::new("/sys/block"),
        Path::new("/dev"),
        root_uuid,
        verity_uuid,
        DISK_POLL_INTERVAL,
        DISK_WAIT,
    )?;
    say(&format!(
        "found {} {}, {} {} and {} {} on {}",
        disk.root.label,
        disk.device(&disk.root).display(),
        disk.verity.label,
        disk.device(&disk.verity).display(),
        disk.state.label,
        disk.device(&disk.state).display(),
        disk.disk.display()
    ));

    mount_verified_root(&disk, &args.root_hash_hex())?;
    enter_verified_root()?;

    // From here on every path is the final system's own, so what `findmnt` shows later is
    // /dev/vda6 on /var and lowerdir=/etc, and STATE is formatted by the root's own mke2fs.
    let first_boot = mount_state(&disk, args)?;
    if first_boot {
        import_esp_user_data(&disk);
    }
    Ok(())
}

/// A live boot (ISO or PXE): the root image file on a loop device, STATE a tmpfs.
fn boot_live(args: &BootArgs) -> Result<(), InitError> {
    let root_hash = args.root_hash_hex();
    say(&format!(
        "roothash={root_hash}: live boot, looking for the root image"
    ));
    let (image, source) = live::find_root_image(
        Path::new("/sys/block"),
        Path::new("/dev"),
        DISK_POLL_INTERVAL,
        DISK_WAIT,
    )?;
    let data_len = live::ext4_size(&image)?;
    let device = live::attach_read_only(&image)?;
    say(&format!(
        "root image {} ({}) on {}, its hash tree from byte {data_len}",
        image.display(),
        match &source {
            LiveSource::Initramfs => "from the initramfs".to_string(),
            LiveSource::Medium(medium) => format!("from the live medium {}", medium.display()),
        },
        device.display()
    ));
    verify_and_mount(
        &device,
        &device,
        data_len,
        &format!("the live root image {}", image.display()),
        &root_hash,
    )?;
    enter_verified_root()?;

    let var = Path::new("/var");
    // The image's /var first goes aside, so the tmpfs can be filled from it.
    let staging = Path::new("/").join(STATE_INIT_MOUNT);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&staging)
        .map_err(|e| InitError::StateMount(MountError::new("create", &staging, e)))?;
    sys::mount("tmpfs", &staging, Some("tmpfs"), 0, Some("mode=0755"))
        .map_err(|e| InitError::StateMount(MountError::new("mount a tmpfs on", &staging, e)))?;
    let copied = copy::copy_tree(var, &staging)?;
    sys::mount(&staging.to_string_lossy(), var, None, libc::MS_MOVE, None)
        .map_err(|e| InitError::StateMount(MountError::new("move the tmpfs to", var, e)))?;
    say(&format!(
        "live system: STATE is a tmpfs at /var ({} entries, {} copied from the image); nothing is kept across boots",
        copied.entries,
        human_size(copied.bytes)
    ));
    Ok(())
}

/// keel-install leaves the machine's cloud-config on the ESP (`/keel/user-data`); the first
/// boot moves it to /var/lib/keel/user-data, where the provisioner's file source reads it on
/// this and every later boot. A failure here costs the config, not the boot.
fn import_esp_user_data(disk: &KeelPartitions) {
    let Some(esp) = disk.esp.as_ref().map(|p| disk.device(p)) else {
        return;
    };
    let mount = Path::new("/run/keel/esp");
    let result = (|| -> io::Result<Option<u64>> {
        fs::create_dir_all(mount)?;
        sys::mount(
            &esp.to_string_lossy(),
            mount,
            Some("vfat"),
            libc::MS_RDONLY,
            None,
        )?;
        let from = mount.join(ESP_USER_DATA);
        let copied = if from.is_file() {
            let to = Path::new(DEFAULT_USER_DATA_FILE);
            fs::create_dir_all(to.parent().expect("a folder"))?;
            let partial = to.with_extension("partial");
            fs::copy(&from, &partial)?;
            fs::set_permissions(
                &partial,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )?;
            fs::rename(&partial, to)?;
            Some(fs::metadata(to)?.len())
        } else {
            None
        };
        sys::umount(mount, 0)?;
        Ok(copied)
    })();
    match result {
        Ok(Some(bytes)) => say(&format!(
            "moved the installer's cloud-config ({bytes} bytes) from {} to {}",
            esp.display(),
            DEFAULT_USER_DATA_FILE
        )),
        Ok(None) => {}
        Err(e) => say(&format!(
            "could not read {ESP_USER_DATA} from the ESP {}: {e}",
            esp.display()
        )),
    }
}

/// Step 5: dm-verity over ROOT, mounted read-only at /sysroot.
fn mount_verified_root(disk: &KeelPartitions, root_hash: &str) -> Result<(), InitError> {
    let data_dev = disk.device(&disk.root);
    let hash_dev = disk.device(&disk.verity);
    verify_and_mount(
        &data_dev,
        &hash_dev,
        0,
        &format!(
            "{} {} (hash {} {})",
            disk.root.label,
            data_dev.display(),
            disk.verity.label,
            hash_dev.display()
        ),
        root_hash,
    )
}

/// Sets up dm-verity over `data_dev` with the hash device (superblock first) at byte
/// `hash_offset` of `hash_dev`, and mounts it read-only at /sysroot. A root that does not
/// match `root_hash` is refused.
fn verify_and_mount(
    data_dev: &Path,
    hash_dev: &Path,
    hash_offset: u64,
    what: &str,
    root_hash: &str,
) -> Result<(), InitError> {
    let superblock_error = |detail: String| InitError::VeritySuperblock {
        label: what.to_string(),
        device: hash_dev.to_path_buf(),
        detail,
    };
    let mut superblock_bytes = [0u8; SUPERBLOCK_SIZE];
    File::open(hash_dev)
        .and_then(|mut f| {
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(hash_offset))?;
            f.read_exact(&mut superblock_bytes)
        })
        .map_err(|e| superblock_error(e.to_string()))?;
    let superblock =
        Superblock::parse(&superblock_bytes).map_err(|e| superblock_error(e.to_string()))?;
    // The tree starts one hash block after the superblock.
    let hash_start_block = hash_offset / u64::from(superblock.hash_block_size) + 1;
    let target = DmTarget {
        start_sector: 0,
        length_sectors: superblock.data_sectors(),
        target_type: "verity".into(),
        params: superblock.dm_table_params_at(
            &data_dev.to_string_lossy(),
            &hash_dev.to_string_lossy(),
            root_hash,
            hash_start_block,
        ),
    };
    let uuid = format!("KEEL-VERITY-{root_hash}");
    let verified =
        dm::create_read_only_device(DM_ROOT_NAME, &uuid, &[target]).map_err(|source| {
            InitError::VeritySetup {
                what: what.to_string(),
                root_hash: root_hash.to_string(),
                source: Box::new(source),
            }
        })?;

    let sysroot = Path::new(SYSROOT);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(sysroot)
        .map_err(|e| InitError::MountRoot(MountError::new("create mount point", sysroot, e)))?;
    match sys::mount(
        &verified.to_string_lossy(),
        sysroot,
        Some("ext4"),
        libc::MS_RDONLY,
        None,
    ) {
        Ok(()) => {}
        // dm-verity answers EIO for any block that does not hash to the tree.
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {
            return Err(InitError::RootRejected {
                label: what.to_string(),
                root_hash: root_hash.to_string(),
            })
        }
        Err(e) => return Err(InitError::MountRoot(MountError::new("mount", sysroot, e))),
    }
    say(&format!(
        "root verified by dm-verity: {} ({what}), mounted read-only at {SYSROOT}",
        verified.display(),
    ));
    Ok(())
}

/// Step 6: on first boot grow, format and fill STATE; every boot mount it at /var. Returns
/// whether this was the first boot.
fn mount_state(disk: &KeelPartitions, args: &BootArgs) -> Result<bool, InitError> {
    let state_dev = disk.device(&disk.state);
    let formatted = state::has_ext4_superblock(&state_dev)?;
    let first_boot = !formatted || args.first_boot_forced;

    if first_boot {
        say(&format!(
            "first boot ({}): preparing STATE {}",
            if formatted {
                "keel.first_boot=1"
            } else {
                "STATE has no filesystem"
            },
            state_dev.display()
        ));
        let growth = state::grow_last_partition(&disk.disk, disk.block_size, disk.state.number)?;
        if growth.changed() {
            state::resize_partition_in_kernel(
                &disk.disk,
                disk.state.number,
                growth.first_lba * growth.block_size,
                growth.new_size_bytes(),
            )?;
            say(&format!(
                "grew STATE {} to the end of {}: {} -> {}",
                state_dev.display(),
                disk.disk.display(),
                human_size((growth.old_last_lba - growth.first_lba + 1) * growth.block_size),
                human_size(growth.new_size_bytes())
            ));
        } else {
            say(&format!(
                "STATE {} already fills {}",
                state_dev.display(),
                disk.disk.display()
            ));
        }

        state::format_state(&state_dev)?;
        say(&format!(
            "formatted STATE {} as ext4 with the root's mkfs.ext4",
            state_dev.display()
        ));

        let staging = Path::new("/").join(STATE_INIT_MOUNT);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&staging)
            .map_err(|e| InitError::StateMount(MountError::new("create", &staging, e)))?;
        sys::mount(
            &state_dev.to_string_lossy(),
            &staging,
            Some("ext4"),
            0,
            None,
        )
        .map_err(|e| InitError::StateMount(MountError::new("mount", &staging, e)))?;
        let copied = copy::copy_tree(Path::new("/var"), &staging)?;
        sys::umount(&staging, 0)
            .map_err(|e| InitError::StateMount(MountError::new("unmount", &staging, e)))?;
        let _ = fs::remove_dir(&staging);
        say(&format!(
            "copied the image's /var into STATE: {} entries, {}",
            copied.entries,
            human_size(copied.bytes)
        ));
    }

    let var = Path::new("/var");
    sys::mount(&state_dev.to_string_lossy(), var, Some("ext4"), 0, None)
        .map_err(|e| InitError::StateMount(MountError::new("mount", var, e)))?;
    let size = state::size_of(&state_dev)?;
    say(&format!(
        "mounted STATE {} ({}) read-write at /var; first boot: {}",
        state_dev.display(),
        human_size(size),
        if first_boot { "yes" } else { "no" }
    ));
    Ok(first_boot)
}

/// Step 7: /etc = the image's /etc with a writable layer on STATE.
fn mount_etc_overlay() -> Result<(), InitError> {
    let etc = Path::new("/etc");
    let upper = Path::new("/").join(ETC_UPPER);
    let work = Path::new("/").join(ETC_WORK);
    for dir in [&upper, &work] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| InitError::EtcOverlay(MountError::new("create", dir, e)))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        etc.display(),
        upper.display(),
        work.display()
    );
    sys::mount("overlay", etc, Some("overlay"), 0, Some(&options))
        .map_err(|e| InitError::EtcOverlay(MountError::new("mount overlay on", etc, e)))?;
    say(&format!(
        "/etc is an overlay: the image's /etc under /{ETC_UPPER}"
    ));
    Ok(())
}

/// Step 9: the provisioner's local stage (config drive, NoCloud, fw_cfg, a file named on the
/// command line) against the final root, before systemd reads its units. It runs every boot:
/// the stage itself skips a config it already applied. Nothing it meets stops the boot. An
/// image built with `provisioner: none` skips it (another agent provisions that machine).
/// The line ends with the CPU time the stage took, for comparing provisioners.
fn run_local_provisioning(cmdline: &str) {
    let marker = Path::new("/").join(PROVISIONER_FILE);
    if let Ok(text) = fs::read_to_string(&marker) {
        match Provisioner::from_word(&text) {
            Some(Provisioner::Keel) => {}
            Some(Provisioner::None) => {
                say(&format!(
                    "provisioning: off (this image is built with `provisioner: none`, {})",
                    marker.display()
                ));
                return;
            }
            None => say(&format!(
                "provisioning: {} says {:?}, neither keel nor none; running the local stage",
                marker.display(),
                text.trim()
            )),
        }
    }
    let ctx = crate::datasource::Context::new(cmdline.trim_end());
    let cpu_before = cpu_time();
    let report = std::panic::catch_unwind(|| {
        crate::stage::run(crate::stage::Stage::Local, Path::new("/"), &ctx)
    });
    let cpu = cpu_time().saturating_sub(cpu_before);
    match report {
        Ok(report) => say(&format!(
            "provisioning: {}, CPU time {:.3}s",
            report.summary().trim_start_matches("keel-provision: "),
            cpu.as_secs_f64()
        )),
        Err(_) => say("provisioning: the local stage panicked; booting without it"),
    }
}

/// User plus system CPU time of this process and of the children it has reaped.
fn cpu_time() -> Duration {
    let of = |who: libc::c_int| {
        // SAFETY: getrusage fills the rusage we own; all-zero is a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        tv(usage.ru_utime) + tv(usage.ru_stime)
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

/// Step 8 (before STATE): move the API filesystems into /sysroot, free the initramfs and
/// make /sysroot the root of this process; systemd is exec'd once /var and /etc are in place.
fn enter_verified_root() -> Result<(), InitError> {
    mounts::move_api_filesystems(Path::new(SYSROOT)).map_err(InitError::MoveApiFilesystems)?;
    match switch_root::free_initramfs() {
        Ok(removed) => say(&format!("freed the initramfs ({removed} entries)")),
        Err(e) => say(&format!("not freeing the initramfs: {e}")),
    }
    switch_root::enter_new_root(Path::new(SYSROOT))?;
    say("switched root to the verified filesystem");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_this_process() {
        let before = cpu_time();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_time() > before, "{x}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(64 << 20), "64.0 MiB");
        assert_eq!(human_size(3 << 29), "1.5 GiB");
    }

    #[test]
    fn verity_rejection_message_says_why() {
        let err = InitError::RootRejected {
            label: "ROOT-A".into(),
            root_hash: "ab".repeat(32),
        };
        let text = err.to_string();
        assert!(
            text.starts_with("mount root: dm-verity rejected ROOT-A"),
            "{text}"
        );
        assert!(
            text.contains(&format!("roothash={}", "ab".repeat(32))),
            "{text}"
        );
        assert!(text.ends_with("(EIO); refusing to boot"), "{text}");
    }
}
