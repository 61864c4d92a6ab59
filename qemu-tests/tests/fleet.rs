//! fleetd on a real machine: the image's etcd (as etcd2.service) and fleetd started by a
//! cloud-config, then fleetctl runs a unit through systemd over D-Bus (the backend the host
//! tests replace with a recording one). flanneld, left unconfigured, is skipped with a message.

use anyhow::{ensure, Result};
use keel_image::cluster::FLEETCTL;
use qemu_tests::vm::Vm;
use qemu_tests::{boot_timeout, output, start_vm_with_user_data, wait_for_boot, WorkDir};

const USER_DATA: &str = "#cloud-config
coreos:
  etcd2:
    name: solo
    advertise_client_urls: http://127.0.0.1:2379
    listen_client_urls: http://127.0.0.1:2379
  fleet:
    metadata: role=test,disk=ssd
  units:
    - name: etcd2.service
      command: start
    - name: fleet.service
      command: start
";

const HELLO: &str = "[Unit]
Description=hello from fleet

[Service]
ExecStart=/bin/sh -c 'echo hello > /run/fleet-hello; exec sleep infinity'

[Install]
WantedBy=multi-user.target
";

/// Runs `cmd` until its output contains `want`, for up to `secs` seconds.
fn wait_for_output(vm: &Vm, cmd: &str, want: &str, secs: u32) -> Result<String> {
    let mut last = String::new();
    for _ in 0..secs {
        if let Ok(out) = vm.ssh(cmd) {
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && last.contains(want) {
                return Ok(last);
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    anyhow::bail!("`{cmd}` never printed {want:?}; last output:\n{last}")
}

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn fleetctl_runs_a_unit_through_systemd() -> Result<()> {
    let image = output("keel.qcow2")?;
    let work = WorkDir::new("keel-fleet-")?;
    let vm = start_vm_with_user_data(&image, work.path(), USER_DATA)?;
    let timeout = boot_timeout();
    wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;

    // The machine registers with its metadata from the coreos.fleet drop-in.
    let machines = wait_for_output(
        &vm,
        &format!("{FLEETCTL} list-machines --full --no-legend"),
        "role=test",
        120,
    )?;
    let machine_id = vm.ssh_ok("cat /etc/machine-id")?;
    ensure!(machines.contains(machine_id.trim()), "{machines}");
    ensure!(machines.contains("disk=ssd"), "{machines}");

    vm.ssh_ok(&format!(
        "cat > /var/roothome/hello.service <<'EOF'\n{HELLO}EOF"
    ))?;
    let started = vm.ssh_ok(&format!(
        "cd /var/roothome && timeout 120 {FLEETCTL} start hello.service"
    ))?;
    ensure!(started.contains("launched"), "{started}");
    ensure!(vm.ssh_ok("systemctl is-active hello.service")?.trim() == "active");
    wait_for_output(&vm, "cat /run/fleet-hello", "hello", 30)?;
    // Loaded from fleet's folder, enabled at runtime because of its [Install] section.
    let link = vm.ssh_ok("readlink /run/systemd/system/hello.service")?;
    ensure!(link.trim() == "/run/fleet/units/hello.service", "{link}");
    let enabled = vm.ssh("systemctl is-enabled hello.service")?;
    ensure!(
        String::from_utf8_lossy(&enabled.stdout).trim() == "enabled-runtime",
        "{enabled:?}"
    );
    let units = wait_for_output(
        &vm,
        &format!("{FLEETCTL} list-units --no-legend"),
        "running",
        30,
    )?;
    ensure!(
        units.contains("hello.service") && units.contains("active"),
        "{units}"
    );
    let status = vm.ssh_ok(&format!("{FLEETCTL} status hello.service"))?;
    ensure!(status.contains("hello from fleet"), "{status}");

    // etcd2.service is Debian's etcd.service under its alias, configured by the etcd2
    // drop-in (the member is named from the cloud-config, not after the host).
    let id = vm.ssh_ok("systemctl show -p Id --value etcd2.service")?;
    ensure!(id.trim() == "etcd.service", "etcd2.service is {id}");
    let members = vm.ssh_ok("etcdctl member list")?;
    ensure!(members.contains(", solo, "), "{members}");
    // flanneld has no configuration here: it is skipped with a message, not restarted.
    vm.ssh_ok("systemctl start flanneld.service")?;
    let state =
        vm.ssh_ok("systemctl show -p ActiveState,NRestarts,ConditionResult flanneld.service")?;
    ensure!(
        state.contains("ActiveState=inactive") && state.contains("NRestarts=0"),
        "{state}"
    );
    wait_for_output(
        &vm,
        "journalctl -u flanneld.service --no-pager",
        "flanneld: not started: no configuration",
        30,
    )?;

    vm.ssh_ok(&format!("timeout 120 {FLEETCTL} stop hello.service"))?;
    let active = vm.ssh("systemctl is-active hello.service")?;
    ensure!(
        String::from_utf8_lossy(&active.stdout).trim() == "inactive",
        "{active:?}"
    );
    vm.ssh_ok(&format!("{FLEETCTL} destroy hello.service"))?;
    wait_for_output(
        &vm,
        "test ! -e /run/fleet/units/hello.service && systemctl show -p LoadState --value hello.service",
        "not-found",
        60,
    )?;
    drop(vm);
    work.passed();
    Ok(())
}
