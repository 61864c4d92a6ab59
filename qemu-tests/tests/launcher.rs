//! The launcher against real QEMU and OVMF, without a Keel image: a blank disk is enough to
//! see the firmware on the serial console and to check the overlay and cleanup.

use std::time::Duration;

use anyhow::{ensure, Result};
use qemu_tests::vm::{Vm, VmConfig};

#[test]
#[ignore = "starts QEMU: run by make test"]
fn firmware_reaches_serial_and_the_base_image_stays_untouched() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let base = dir.path().join("blank.raw");
    let blank = vec![0u8; 1 << 20];
    std::fs::write(&base, &blank)?;

    let mut vm = Vm::start(VmConfig::new(&base, dir.path().join("vm")))?;
    ensure!(vm.is_running(), "QEMU is not running");
    // With nothing bootable OVMF falls through to its boot manager and says so.
    let (line, at) = vm.wait_for_line("BdsDxe", Duration::from_secs(120))?;
    eprintln!("firmware line after {:.1} s: {line}", at.as_secs_f64());
    ensure!(at > Duration::ZERO);
    // The cursor moved past the match; the same text is only found again if printed again.
    let next = vm.wait_for_line_from(
        vm.serial_cursor(),
        &["no-such-line"],
        Duration::from_millis(200),
    );
    ensure!(next.is_err());
    let log = std::fs::read_to_string(vm.serial_log_path())?;
    ensure!(
        log.contains("BdsDxe"),
        "serial.log lacks the firmware lines"
    );

    vm.shutdown();
    ensure!(!vm.is_running());
    ensure!(std::fs::read(&base)? == blank, "the base image was written");
    Ok(())
}
