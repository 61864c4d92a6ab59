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

    // Warm boot: the same QEMU process reboots the guest, so figures are measured from the
    // reboot request.
    let asked = Instant::now();
    let asked_at = asked - vm.started_at();
    vm.reboot()?;
    let warm = wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    let ssh = asked.elapsed();
    println!(
        "warm.first_init_line_s {:.1}",
        secs(warm.first_init_line.saturating_sub(asked_at))
    );
    println!(
        "warm.multi_user_s {:.1}",
        secs(warm.multi_user.saturating_sub(asked_at))
    );
    println!("warm.ssh_s {:.1}", secs(ssh));
    drop(vm);
    work.passed();
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
