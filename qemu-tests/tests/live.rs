//! Live boots and installs: the hybrid ISO from a CD drive under OVMF, PXE through QEMU's own
//! TFTP server with the NIC's iPXE (both verify the same root image with keel-init, keep STATE
//! in a tmpfs and provision from a NoCloud drive), and an unattended keel-install from the
//! live ISO onto a blank disk, which then boots with its cloud-config and a grown STATE.

use std::time::Duration;

use anyhow::{anyhow, ensure, Result};
use keel_image::vm::Vm;
use qemu_tests::live::{run_unattended_install, start_iso, start_pxe, LIVE_USER_DATA};
use qemu_tests::{boot_timeout, nocloud_seed, output, start_vm_with, wait_for_boot, WorkDir};

/// What every live system shows: booted with keel.live, the root verified from a loop
/// device, /var a tmpfs, and the cloud-config applied.
fn check_live_system(vm: &Vm) -> Result<()> {
    let cmdline = vm.ssh_ok("cat /proc/cmdline")?;
    ensure!(cmdline.contains("keel.live"), "{cmdline}");
    let var = vm.ssh_ok("findmnt -n -o FSTYPE /var")?;
    ensure!(var.trim() == "tmpfs", "/var is {var}");
    let root = vm.ssh_ok("findmnt -n -o SOURCE,OPTIONS /")?;
    ensure!(root.starts_with("/dev/dm-0 ro"), "{root}");
    // dm-0 is keel-init's verity device, on a loop device over the root image file.
    let uuid = vm.ssh_ok("cat /sys/block/dm-0/dm/uuid")?;
    ensure!(uuid.starts_with("KEEL-VERITY-"), "{uuid}");
    let backing = vm.ssh_ok("cat /sys/block/dm-0/slaves/loop*/loop/backing_file")?;
    ensure!(
        backing.contains("keel/rootfs.img"),
        "dm-0 sits on {backing}"
    );
    ensure!(vm.ssh_ok("hostname")?.trim() == "live-node");
    let marker = vm.ssh_ok("cat /etc/keel-live-marker")?;
    ensure!(marker.contains("provisioned on a live boot"), "{marker}");
    Ok(())
}

#[test]
#[ignore = "boots the ISO under QEMU: run by make test"]
fn the_iso_boots_live_from_a_cd_and_provisions_from_nocloud() -> Result<()> {
    let work = WorkDir::new("keel-iso-")?;
    let vm = start_iso(work.path(), LIVE_USER_DATA)?;
    let timeout = boot_timeout();
    let times = wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    eprintln!(
        "ISO: multi-user after {:.1} s",
        times.multi_user.as_secs_f64()
    );
    let found = vm.wait_for_line_from(0, &["from the live medium"], Duration::from_secs(1))?;
    ensure!(found.text.contains("/dev/sr0"), "{}", found.text);
    check_live_system(&vm)?;
    // The medium stays mounted for keel-install, with the disk image and its checksum.
    let medium = vm.ssh_ok("findmnt -n -o FSTYPE /run/keel/live && ls /run/keel/live/keel")?;
    ensure!(
        medium.contains("iso9660")
            && medium.contains("keel.raw.gz")
            && medium.contains("SHA256SUMS"),
        "{medium}"
    );
    drop(vm);
    work.passed();
    Ok(())
}

#[test]
#[ignore = "boots the ISO as a disk under QEMU: run by make test"]
fn the_iso_written_to_a_disk_boots_as_a_usb_stick_would() -> Result<()> {
    // The ISO file as the machine's only disk: the firmware boots the ESP that xorriso put in
    // the ISO's GPT, and keel-init finds the ISO 9660 volume on the whole disk.
    let work = WorkDir::new("keel-iso-disk-")?;
    let seed = nocloud_seed(work.path(), LIVE_USER_DATA, "instance-id: live-usb\n")?;
    let vm = start_vm_with(&output("keel.iso")?, &work.path().join("vm"), |cfg| {
        cfg.extra_drives.push(seed.clone());
    })?;
    let timeout = boot_timeout();
    wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    let found = vm.wait_for_line_from(0, &["from the live medium"], Duration::from_secs(1))?;
    ensure!(found.text.contains("/dev/vda"), "{}", found.text);
    check_live_system(&vm)?;
    drop(vm);
    work.passed();
    Ok(())
}

#[test]
#[ignore = "boots over PXE under QEMU: run by make test"]
fn pxe_through_qemus_tftp_and_ipxe_boots_live() -> Result<()> {
    let work = WorkDir::new("keel-pxe-")?;
    let vm = start_pxe(work.path(), LIVE_USER_DATA)?;
    let timeout = boot_timeout() * 2;
    vm.wait_for_line("keel.ipxe", timeout)?;
    let times = wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    eprintln!(
        "PXE: multi-user after {:.1} s",
        times.multi_user.as_secs_f64()
    );
    vm.wait_for_line_from(0, &["from the initramfs"], Duration::from_secs(1))?;
    check_live_system(&vm)?;
    drop(vm);
    work.passed();
    Ok(())
}

#[test]
#[ignore = "installs from the ISO under QEMU, then boots the disk: run by make test"]
fn an_unattended_install_from_the_live_iso_boots_from_disk_with_its_config() -> Result<()> {
    let work = WorkDir::new("keel-install-")?;
    let timeout = boot_timeout();
    let install = run_unattended_install(work.path(), timeout).map_err(|e| anyhow!(e))?;
    eprintln!(
        "install done {:.1} s after QEMU started ({:.1} s in keel-install): {}",
        install.done_at.as_secs_f64(),
        install.install_seconds,
        install.wrote_line
    );

    // Boot what was installed: the live VM's disk overlay holds it (no CD, no NoCloud drive).
    let vm = start_vm_with(
        &install.installed_disk,
        &work.path().join("installed"),
        |_| {},
    )?;
    let times = wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    eprintln!(
        "installed system: multi-user after {:.1} s",
        times.multi_user.as_secs_f64()
    );
    vm.wait_for_line_from(
        0,
        &["moved the installer's cloud-config"],
        Duration::from_secs(1),
    )?;
    ensure!(vm.ssh_ok("hostname")?.trim() == "installed-node");
    let marker = vm.ssh_ok("cat /etc/keel-installed-marker")?;
    ensure!(marker.contains("installed by keel-install"), "{marker}");
    let cmdline = vm.ssh_ok("cat /proc/cmdline")?;
    ensure!(!cmdline.contains("keel.live"), "{cmdline}");
    // STATE grew from the image's size (about 2.4 GiB of its 4 GiB) to the end of the 6 GiB
    // disk.
    let var = vm.ssh_ok("findmnt -n -b -o SOURCE,FSTYPE,SIZE /var")?;
    let fields: Vec<&str> = var.split_whitespace().collect();
    ensure!(
        fields.len() == 3 && fields[0] == "/dev/vda6" && fields[1] == "ext4",
        "{var}"
    );
    let size: u64 = fields[2].parse()?;
    ensure!(
        size > 4_000_000_000,
        "/var is only {size} bytes: STATE did not grow to the disk"
    );
    drop(vm);
    work.passed();
    Ok(())
}
