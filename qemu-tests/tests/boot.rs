//! Boots the built image under QEMU and checks what a verified Keel system must look like.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use qemu_tests::{
    boot_timeout, flip_byte, output, sparse_copy, start_vm, wait_for_boot, Manifest, WorkDir,
    INIT_FATAL, INIT_STARTING, KEEL_READY, KERNEL_PANIC, MULTI_USER, MULTI_USER_MARKERS,
};

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn verified_image_boots_and_keeps_state() -> Result<()> {
    let manifest = Manifest::load()?;
    let image = output("keel.qcow2")?;
    let work = WorkDir::new("keel-boot-")?;
    let mut vm = start_vm(&image, work.path())?;
    let timeout = boot_timeout();

    let first = wait_for_boot(&vm, timeout)?;
    eprintln!(
        "first boot: keel-init at {:.1} s, multi-user at {:.1} s",
        first.first_init_line.as_secs_f64(),
        first.multi_user.as_secs_f64()
    );
    let init_lines: Vec<_> = vm
        .serial_lines()
        .into_iter()
        .filter(|l| l.text.contains("keel-init: "))
        .collect();
    ensure!(
        init_lines
            .first()
            .is_some_and(|l| l.text.contains(INIT_STARTING)),
        "keel-init's first line should be {INIT_STARTING:?}, got {:?}",
        init_lines.first().map(|l| &l.text)
    );
    vm.wait_for_ssh(timeout)?;

    let state = vm.ssh("systemctl is-system-running --wait")?;
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    if state != "running" {
        let failed = vm
            .ssh("systemctl --failed --no-legend")
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(could not list failed units: {e})"));
        bail!("system state is {state:?}, not running; failed units:\n{failed}");
    }

    // The root is the verity device, read-only.
    let root = vm.ssh_ok("findmnt -no SOURCE,FSTYPE,OPTIONS /")?;
    let fields: Vec<&str> = root.split_whitespace().collect();
    ensure!(fields.len() == 3, "unexpected findmnt output {root:?}");
    ensure!(
        fields[0] == "/dev/mapper/root" || fields[0].starts_with("/dev/dm-"),
        "/ is mounted from {}, not the verity device",
        fields[0]
    );
    ensure!(fields[1] == "ext4", "/ is {}, not ext4", fields[1]);
    ensure!(
        fields[2].split(',').any(|o| o == "ro"),
        "/ is mounted with {}, not ro",
        fields[2]
    );
    let dm = vm.ssh_ok(
        r#"d=$(readlink -f "$(findmnt -no SOURCE /)"); n=${d##*/}; cat /sys/block/$n/dm/name /sys/block/$n/dm/uuid"#,
    )?;
    let dm: Vec<&str> = dm.lines().map(str::trim).collect();
    ensure!(
        dm.len() == 2,
        "could not read the root's dm name and uuid: {dm:?}"
    );
    ensure!(dm[0] == "root", "root's dm name is {:?}, not root", dm[0]);
    let want_uuid = format!("KEEL-VERITY-{}", manifest.root_hash);
    ensure!(
        dm[1].eq_ignore_ascii_case(&want_uuid),
        "root's dm uuid is {:?}, want {want_uuid:?}",
        dm[1]
    );
    let cmdline = vm.ssh_ok("cat /proc/cmdline")?;
    ensure!(
        cmdline
            .split_whitespace()
            .any(|w| w.eq_ignore_ascii_case(&format!("roothash={}", manifest.root_hash))),
        "/proc/cmdline lacks roothash={}: {cmdline}",
        manifest.root_hash
    );

    // /usr is immutable; /etc (overlay) and /var (STATE) take writes.
    let usr = vm.ssh("touch /usr/keel-probe")?;
    let usr_err = String::from_utf8_lossy(&usr.stderr);
    ensure!(
        !usr.status.success() && usr_err.contains("Read-only"),
        "touch /usr/keel-probe should fail with Read-only, got {} {usr_err:?}",
        usr.status
    );
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let etc_marker = format!("etc-{nonce}");
    let var_marker = format!("var-{nonce}");
    vm.ssh_ok(&format!(
        "echo {etc_marker} > /etc/keel-marker && echo {var_marker} > /var/keel-marker && sync"
    ))
    .context("writing under /etc and /var")?;

    vm.reboot()?;
    let second_boot_starts = vm.serial_cursor();
    let second = wait_for_boot(&vm, timeout).context("second boot")?;
    eprintln!(
        "second boot: keel-init at {:.1} s, multi-user at {:.1} s (since QEMU start)",
        second.first_init_line.as_secs_f64(),
        second.multi_user.as_secs_f64()
    );
    let second_boot_state = vm.serial_lines()[second_boot_starts..]
        .iter()
        .find(|l| l.text.contains("keel-init: mounted STATE"))
        .map(|l| l.text.clone())
        .unwrap_or_default();
    ensure!(
        second_boot_state.contains("first boot: no"),
        "the second boot should mount the existing STATE, got {second_boot_state:?}"
    );
    vm.wait_for_ssh(timeout)?;
    let markers = vm.ssh_ok("cat /etc/keel-marker /var/keel-marker")?;
    ensure!(
        markers.lines().collect::<Vec<_>>() == [etc_marker.as_str(), var_marker.as_str()],
        "markers after reboot are {markers:?}, want {etc_marker} and {var_marker}"
    );
    drop(vm);
    work.passed();
    Ok(())
}

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn tampered_root_stops_at_verity() -> Result<()> {
    let manifest = Manifest::load()?;
    let raw = output("keel.raw")?;
    let root = manifest
        .partition("ROOT-A")
        .context("manifest has no ROOT-A partition")?;
    let work = WorkDir::new("keel-tamper-")?;
    let copy = work.path().join("tampered.raw");
    sparse_copy(&raw, &copy)?;
    // Inside the ext4 superblock (1024 bytes in), which every mount reads: a verity check
    // cannot be skipped by the filesystem never touching the block.
    let offset = root.offset_bytes + 1024 + 0x40;
    ensure!(
        offset < root.offset_bytes + root.size_bytes,
        "ROOT-A is too small"
    );
    flip_byte(&copy, offset)?;

    let vm = start_vm(&copy, &work.path().join("vm"))?;
    let timeout = boot_timeout();
    vm.wait_for_line(INIT_STARTING, timeout)?;
    let stop =
        vm.wait_for_any_line(&[INIT_FATAL, MULTI_USER, KEEL_READY, KERNEL_PANIC], timeout)?;
    ensure!(
        stop.text.contains(INIT_FATAL),
        "the tampered image should stop with {INIT_FATAL:?}, but printed {:?}\nlast serial lines:\n{}",
        stop.text,
        vm.serial_tail()
    );
    ensure!(
        stop.text.to_ascii_lowercase().contains("verity"),
        "keel-init stopped, but not naming verity: {:?}",
        stop.text
    );
    // A fallback that carried on booting would print multi-user shortly after.
    std::thread::sleep(Duration::from_secs(5));
    let booted: Vec<_> = vm
        .serial_lines()
        .into_iter()
        .filter(|l| MULTI_USER_MARKERS.iter().any(|m| l.text.contains(m)))
        .collect();
    ensure!(
        booted.is_empty(),
        "the tampered image reached multi-user after all: {booted:?}"
    );
    drop(vm);
    work.passed();
    Ok(())
}
