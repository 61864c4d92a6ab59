//! What the live-boot tests and the live benchmark share: booting the ISO from a CD drive or
//! the PXE files through QEMU's TFTP and iPXE (each with a NoCloud drive and a blank disk),
//! and the unattended install from the ISO.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_image::vm::{PxeBoot, Vm};

use crate::{blank_disk, nocloud_seed, out_dir, output, start_vm_with, HarnessError};

/// A live system's cloud-config: a hostname and a file, to see that it was applied.
pub const LIVE_USER_DATA: &str = "#cloud-config
hostname: live-node
write_files:
  - path: /etc/keel-live-marker
    content: provisioned on a live boot
";

/// The live system's cloud-config for an unattended install: keel-install writes the disk
/// image from the ISO to the blank disk (/dev/vda), with the installed system's own
/// cloud-config, then the machine powers off.
pub const INSTALLER_USER_DATA: &str = "#cloud-config
hostname: installer
write_files:
  - path: /var/lib/keel/install/cloud-config.yaml
    permissions: '0600'
    content: |
      #cloud-config
      hostname: installed-node
      write_files:
        - path: /etc/keel-installed-marker
          content: installed by keel-install
coreos:
  units:
    - name: keel-install.service
      command: start
      content: |
        [Unit]
        Description=Install Keel onto /dev/vda, then power off
        [Service]
        Type=oneshot
        ExecStart=/usr/bin/keel-install -d /dev/vda -c /var/lib/keel/install/cloud-config.yaml
        ExecStartPost=/usr/bin/systemctl poweroff
        StandardOutput=journal+console
        StandardError=journal+console
";

/// Size of the blank disk every live VM gets (the install target).
pub const BLANK_DISK_GIB: u32 = 6;

/// The ISO in a CD drive, a blank disk and a NoCloud drive with `user_data`.
pub fn start_iso(work: &Path, user_data: &str) -> Result<Vm, HarnessError> {
    create(work)?;
    let iso = output("keel.iso")?;
    let blank = blank_disk(&work.join("blank.qcow2"), BLANK_DISK_GIB)?;
    let seed = nocloud_seed(work, user_data, "instance-id: live-iso\n")?;
    start_vm_with(&blank, &work.join("live"), |cfg| {
        cfg.cdrom = Some(iso);
        cfg.extra_drives.push(seed);
    })
}

/// A network boot of `out/pxe/keel.ipxe` through QEMU's TFTP server and the NIC's iPXE, with
/// a blank disk and a NoCloud drive with `user_data`.
pub fn start_pxe(work: &Path, user_data: &str) -> Result<Vm, HarnessError> {
    create(work)?;
    output("pxe/keel.ipxe")?;
    let blank = blank_disk(&work.join("blank.qcow2"), BLANK_DISK_GIB)?;
    let seed = nocloud_seed(work, user_data, "instance-id: live-pxe\n")?;
    start_vm_with(&blank, &work.join("live"), |cfg| {
        // The root image (774 MiB: the whole 768 MiB root slot and its hash tree) is in RAM
        // twice for a while: loaded by the EFI stub, then unpacked; 2560 MiB ran out
        // ("Initramfs unpacking failed: write error").
        cfg.memory_mib = 3584;
        cfg.pxe = Some(PxeBoot {
            tftp_dir: out_dir().join("pxe"),
            bootfile: "keel.ipxe".into(),
        });
        cfg.extra_drives.push(seed);
    })
}

fn create(dir: &Path) -> Result<(), HarnessError> {
    std::fs::create_dir_all(dir).map_err(|source| HarnessError::Io {
        context: format!("creating {}", dir.display()),
        source,
    })
}

/// How an unattended install went.
pub struct InstallRun {
    /// From QEMU's start to keel-install's `done:` line.
    pub done_at: Duration,
    /// keel-install's own `wrote N MiB to /dev/vda in S s` line.
    pub wrote_line: String,
    /// From the network stage starting keel-install to its `done:` line (guest clock).
    pub install_seconds: f64,
    /// The disk the install wrote (the live VM's overlay), to boot next.
    pub installed_disk: PathBuf,
}

/// Boots the ISO with [`INSTALLER_USER_DATA`], waits for keel-install to finish and the live
/// system to power off.
pub fn run_unattended_install(work: &Path, timeout: Duration) -> Result<InstallRun, String> {
    let mut live = start_iso(work, INSTALLER_USER_DATA).map_err(|e| e.to_string())?;
    // The install runs as soon as the network stage starts it, and may finish before the
    // console shows multi-user.target: wait for its end (or a failed boot) instead.
    let finished = live
        .wait_for_any_line(
            &[
                "done: /dev/vda is ready to boot Keel",
                "keel-install: error",
                "keel-init: FATAL",
            ],
            timeout * 4,
        )
        .map_err(|e| e.to_string())?;
    if !finished.text.contains("done:") {
        return Err(finished.text);
    }
    let started = live
        .wait_for_line_from(0, &["start keel-install.service"], Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let wrote = live
        .wait_for_line_from(0, &["wrote "], Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let install_seconds = kernel_seconds(&finished.text).unwrap_or_default()
        - kernel_seconds(&started.text).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    while live.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
    }
    if live.is_running() {
        return Err("the live system did not power off after installing".into());
    }
    live.shutdown();
    Ok(InstallRun {
        done_at: finished.at,
        wrote_line: wrote.text,
        install_seconds,
        installed_disk: work.join("live").join("disk.qcow2"),
    })
}

/// The `[   73.29]` kernel timestamp a journal+console line starts with.
fn kernel_seconds(line: &str) -> Option<f64> {
    let inside = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inside.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn console_timestamps_are_read() {
        assert_eq!(
            super::kernel_seconds("[   73.291836] keel-install[177]: wrote"),
            Some(73.291836)
        );
        assert_eq!(super::kernel_seconds("installer login: x"), None);
    }
}
