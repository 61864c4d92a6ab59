//! Live and install figures: `cargo bench -p qemu-tests --bench live`. Prints the sizes of
//! the ISO, the PXE files and the compressed disk image; the seconds from QEMU's start to an
//! SSH login for a boot from the disk image, from the ISO (CD drive) and over PXE (QEMU's
//! TFTP, iPXE); and how long an unattended install from the ISO takes. Under TCG unless KVM
//! works (the accelerator is printed). Prints `name value` lines; nothing is asserted.

use std::time::Duration;

use anyhow::{anyhow, Result};
use keel_image::vm::Vm;
use qemu_tests::live::{run_unattended_install, start_iso, start_pxe, LIVE_USER_DATA};
use qemu_tests::{boot_timeout, out_dir, output, start_vm, WorkDir};

fn size_mib(name: &str) -> Result<f64> {
    Ok(std::fs::metadata(output(name)?)?.len() as f64 / (1 << 20) as f64)
}

/// Seconds from QEMU's start until `vm` answers on SSH.
fn login_seconds(vm: &Vm, timeout: Duration) -> Result<f64> {
    vm.wait_for_ssh(timeout)?;
    Ok(vm.started_at().elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("live bench: run it with `cargo bench -p qemu-tests --bench live`");
        return Ok(());
    }
    for name in [
        "keel.iso",
        "keel.raw.gz",
        "keel.qcow2",
        "pxe/vmlinuz",
        "pxe/initrd.img",
        "pxe/rootfs.img",
    ] {
        println!("size.{name}_mib {:.1}", size_mib(name)?);
    }
    let pxe_total: u64 = std::fs::read_dir(out_dir().join("pxe"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "size.pxe_total_mib {:.1}",
        pxe_total as f64 / (1 << 20) as f64
    );

    let timeout = boot_timeout() * 2;
    let work = WorkDir::new("keel-bench-live-")?;
    let disk = start_vm(&output("keel.qcow2")?, &work.path().join("disk"))?;
    println!("boot.accel {}", disk.accel());
    println!("login.disk_s {:.1}", login_seconds(&disk, timeout)?);
    drop(disk);
    let iso = start_iso(&work.path().join("iso"), LIVE_USER_DATA)?;
    println!("login.iso_s {:.1}", login_seconds(&iso, timeout)?);
    drop(iso);
    let pxe = start_pxe(&work.path().join("pxe"), LIVE_USER_DATA)?;
    println!("login.pxe_s {:.1}", login_seconds(&pxe, timeout)?);
    drop(pxe);

    let install =
        run_unattended_install(&work.path().join("install"), timeout).map_err(|e| anyhow!(e))?;
    println!("install.keel_install_s {:.1}", install.install_seconds);
    println!(
        "install.qemu_start_to_done_s {:.1}",
        install.done_at.as_secs_f64()
    );
    println!("install.write_line {}", install.wrote_line.trim());
    work.passed();
    Ok(())
}
