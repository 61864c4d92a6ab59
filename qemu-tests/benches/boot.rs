//! Boot-time figures for the built image: `cargo bench -p qemu-tests --bench boot`.
//! Prints `name value` lines; nothing is asserted.

use std::time::{Duration, Instant};

use anyhow::Result;
use qemu_tests::{boot_timeout, output, start_vm, wait_for_boot};

fn main() -> Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without --bench; a multi-minute
    // boot has no place there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("boot bench: run it with `cargo bench -p qemu-tests --bench boot`");
        return Ok(());
    }
    let image = output("keel.qcow2")?;
    let work = qemu_tests::WorkDir::new("keel-bench-")?;
    let mut vm = start_vm(&image, work.path())?;
    let timeout = boot_timeout();
    println!("boot.accel {}", vm.accel());

    let cold = wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    let ssh = vm.started_at().elapsed();
    println!("boot.first_init_line_s {:.1}", secs(cold.first_init_line));
    println!("boot.multi_user_s {:.1}", secs(cold.multi_user));
    println!("boot.ssh_s {:.1}", secs(ssh));

    // Second boot (STATE already formatted): the guest reboots, QEMU exits and starts
    // again on the same disk, and the figures count from that new start, like the first.
    let asked = Instant::now();
    vm.reboot()?;
    let down = asked.elapsed();
    let second = wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    let ssh = vm.started_at().elapsed();
    println!("second_boot.shutdown_s {:.1}", secs(down));
    println!(
        "second_boot.first_init_line_s {:.1}",
        secs(second.first_init_line)
    );
    println!("second_boot.multi_user_s {:.1}", secs(second.multi_user));
    println!("second_boot.ssh_s {:.1}", secs(ssh));
    drop(vm);
    work.passed();
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
