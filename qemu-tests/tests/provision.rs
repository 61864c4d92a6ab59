//! The provisioner's local stage on a real boot: a cloud-config from a NoCloud drive and from
//! QEMU fw_cfg is applied by keel-init before systemd starts.

use anyhow::{ensure, Context, Result};
use base64::Engine;
use flate2::{write::GzEncoder, Compression};
use qemu_tests::vm::{GuestForward, Vm};
use qemu_tests::{
    boot_timeout, direct_boot_from_esp, nocloud_seed, output, start_vm_with,
    start_vm_with_user_data, test_key, wait_for_boot, WorkDir,
};
use std::io::Write;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn gzip_b64(data: &[u8]) -> String {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    b64(&enc.finish().unwrap())
}

fn user_data(pubkey: &str) -> String {
    format!(
        r#"#cloud-config
hostname: keel-nocloud.example
users:
  - name: core
    groups: [sudo]
    ssh-authorized-keys:
      - {pubkey}
write_files:
  - path: /etc/keel-test/plain
    content: plain text
  - path: /etc/keel-test/b64
    encoding: b64
    content: {b64}
  - path: /etc/keel-test/gzb64
    encoding: gzip+base64
    content: {gzb64}
  - path: /var/lib/keel-test/owned
    permissions: '0600'
    owner: core:core
    content: secret
coreos:
  etcd2:
    name: node1
    advertise-client-urls: http://$private_ipv4:2379
  units:
{docker_drop_in}    - name: keel-hello.service
      enable: true
      content: |
        [Unit]
        Description=Say hello from a cloud-config unit
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/sh -c 'echo "$GREETING" > /run/keel-hello'
        [Install]
        WantedBy=multi-user.target
      drop-ins:
        - name: 10-greeting.conf
          content: |
            [Service]
            Environment=GREETING=hi-from-dropin
    - name: keel-cmd.service
      command: start
      content: |
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/bin/touch /run/keel-cmd
bootcmd:
  - echo boot >> /var/lib/keel-test/bootcmd-runs
runcmd:
  - echo run >> /var/lib/keel-test/runcmd-runs
  - [sh, -c, "hostname > /var/lib/keel-test/runcmd-saw-hostname"]
"#,
        docker_drop_in = qemu_tests::containers::DOCKER_DROP_IN_UNIT,
        b64 = b64(b"base64 text"),
        gzb64 = gzip_b64(b"gzip text"),
    )
}

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn nocloud_config_is_applied_on_first_boot() -> Result<()> {
    let image = output("keel.qcow2")?;
    let work = WorkDir::new("keel-nocloud-")?;
    let pubkey = std::fs::read_to_string(test_key()?.with_extension("pub"))?;
    let drive = nocloud_seed(
        work.path(),
        &user_data(pubkey.trim()),
        "instance-id: keel-test-1\nlocal-hostname: from-meta-data\n",
    )?;
    // Docker's checks share this boot and its reboot (qemu_tests::containers).
    let registry =
        qemu_tests::containers::registry_with_built_images(&work.path().join("registry"))?;
    let forward = registry.guest_forward(env!("CARGO_BIN_EXE_tcp-relay"));
    let mut vm = start_vm_with(&image, &work.path().join("vm"), |cfg| {
        cfg.extra_drives.push(drive);
        cfg.guest_forwards.push(forward);
    })?;
    let timeout = boot_timeout();
    wait_for_boot(&vm, timeout)?;
    expect_applied(&vm, "keel-init: provisioning:", "nocloud")?;

    vm.set_ssh_user("core");
    vm.wait_for_ssh(timeout)?;
    check(&vm, "whoami", "core")?;
    check(&vm, "hostname", "keel-nocloud")?;
    check(&vm, "id -nG | tr ' ' '\\n' | grep -x sudo", "sudo")?;
    check(&vm, "cat /etc/keel-test/plain", "plain text")?;
    check(&vm, "cat /etc/keel-test/b64", "base64 text")?;
    check(&vm, "cat /etc/keel-test/gzb64", "gzip text")?;
    check(
        &vm,
        "stat -c '%a %U %G' /var/lib/keel-test/owned",
        "600 core core",
    )?;
    check(&vm, "systemctl is-active keel-hello.service", "active")?;
    check(&vm, "cat /run/keel-hello", "hi-from-dropin")?;
    // Not enabled: only the network stage's D-Bus StartUnit can have started it.
    check(&vm,
        "for i in $(seq 30); do systemctl is-active -q keel-cmd.service && break; sleep 1; done; systemctl is-active keel-cmd.service",
        "active",
    )?;
    let dropin = vm.ssh_ok("cat /run/systemd/system/etcd2.service.d/20-cloudinit.conf")?;
    ensure!(
        dropin.contains("Environment=\"ETCD_NAME=node1\""),
        "{dropin}"
    );
    ensure!(dropin.contains("ETCD_ADVERTISE_CLIENT_URLS="), "{dropin}");
    // runcmd and bootcmd run as transient units, queued by the network stage.
    check(
        &vm,
        &wait_for_file("/var/lib/keel-test/runcmd-saw-hostname"),
        "keel-nocloud",
    )?;
    check(&vm, "cat /var/lib/keel-test/runcmd-runs", "run")?;
    check(&vm, "cat /var/lib/keel-test/bootcmd-runs", "boot")?;
    qemu_tests::containers::check_first_boot(&vm)?;

    // A second boot with the same config: bootcmd runs again, runcmd does not, and the
    // user and files are left as they are. Only root may reboot; the rest is root's to read.
    vm.set_ssh_user("root");
    vm.reboot()?;
    wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    let line = vm
        .serial_lines()
        .into_iter()
        .rev()
        .find(|l| l.text.contains("keel-init: provisioning:"))
        .context("no provisioning line on the second boot")?;
    ensure!(line.text.contains("unchanged"), "{}", line.text);
    vm.ssh_ok(&wait_for_lines("/var/lib/keel-test/bootcmd-runs", 2))?;
    // The network stage has finished (it queued bootcmd), so runcmd would have been queued too.
    vm.ssh_ok("systemctl is-active -q keel-provision-network.service && sleep 2")?;
    check(&vm, "cat /var/lib/keel-test/bootcmd-runs", "boot\nboot")?;
    check(&vm, "cat /var/lib/keel-test/runcmd-runs", "run")?;
    qemu_tests::containers::check_after_reboot(&vm)?;
    let report = vm.ssh_ok("cat /run/keel/provision.json")?;
    let report: serde_json::Value = serde_json::from_str(&report)?;
    ensure!(
        report["local"]["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("nocloud"),
        "{report}"
    );
    drop(vm);
    work.passed();
    Ok(())
}

/// Finds the stage's console line (`marker`) and checks it applied a config from `source`
/// without errors.
fn expect_applied(vm: &Vm, marker: &str, source: &str) -> Result<()> {
    let line = vm
        .serial_lines()
        .into_iter()
        .find(|l| l.text.contains(marker))
        .with_context(|| format!("no `{marker}` line on the console"))?;
    ensure!(
        line.text.contains(&format!("applied config from {source}"))
            && line.text.contains(" 0 errors"),
        "{}",
        line.text
    );
    Ok(())
}

/// Runs `cmd` over SSH and compares its trimmed output with `want`.
fn check(vm: &Vm, cmd: &str, want: &str) -> Result<()> {
    let got = vm.ssh_ok(cmd)?;
    ensure!(got.trim() == want, "`{cmd}` gave {got:?}, want {want:?}");
    Ok(())
}

/// A shell command that waits up to 60 s for `path` to exist, then prints it.
fn wait_for_file(path: &str) -> String {
    format!("for i in $(seq 60); do test -e {path} && break; sleep 1; done; cat {path}")
}

/// A shell command that waits up to 60 s for `path` to have `lines` lines.
fn wait_for_lines(path: &str, lines: usize) -> String {
    format!("for i in $(seq 60); do test \"$(wc -l < {path})\" -ge {lines} && break; sleep 1; done")
}

/// The address the guest reaches the fake metadata service at (a guestfwd, inside QEMU).
const IMDS_ADDR: &str = "10.0.2.100:80";

/// Multipart user-data as EC2 users write it: a cloud-config part using the metadata's
/// addresses, and a `#!` script part.
fn imds_user_data() -> String {
    let boundary = "KEEL-BOUNDARY";
    format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
--{boundary}\nContent-Type: text/cloud-config\n\n\
#cloud-config\nwrite_files:\n  - path: /etc/keel-test/addresses\n    content: |\n      private=$private_ipv4 public=$public_ipv4 literal=\\$private_ipv4\n\
coreos:\n  fleet:\n    public-ip: $private_ipv4\n    metadata: region=test\n\n\
--{boundary}\nContent-Type: text/x-shellscript\n\n\
#!/bin/sh\nmkdir -p /var/lib/keel-test\necho \"script ran as $(id -un)\" > /var/lib/keel-test/script\n\n\
--{boundary}--\n"
    )
}

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn metadata_service_config_is_applied_by_the_network_stage() -> Result<()> {
    let image = output("keel.qcow2")?;
    let work = WorkDir::new("keel-imds-")?;
    let imds = work.path().join("imds");
    let meta = imds.join("latest/meta-data");
    std::fs::create_dir_all(meta.join("public-keys/0"))?;
    std::fs::write(imds.join("latest/user-data"), imds_user_data())?;
    std::fs::write(meta.join("local-ipv4"), "10.0.2.15")?;
    std::fs::write(meta.join("public-ipv4"), "203.0.113.9")?;
    std::fs::write(
        meta.join("hostname"),
        "keel-imds.eu-test-1.compute.internal",
    )?;
    std::fs::write(meta.join("instance-id"), "i-0123456789abcdef0")?;
    let pubkey = std::fs::read_to_string(test_key()?.with_extension("pub"))?;
    std::fs::write(meta.join("public-keys/0/openssh-key"), pubkey.trim())?;

    let boot = direct_boot_from_esp(
        work.path(),
        &format!("keel.metadata_url=http://{IMDS_ADDR}"),
    )?;
    let server = format!("{} {}", env!("CARGO_BIN_EXE_fake-imds"), imds.display());
    let mut vm = start_vm_with(&image, &work.path().join("vm"), |cfg| {
        cfg.direct_boot = Some(boot);
        cfg.guest_forwards.push(GuestForward {
            guest_addr: IMDS_ADDR.parse().expect("a socket address"),
            command: server,
        });
    })?;
    let timeout = boot_timeout();
    wait_for_boot(&vm, timeout)?;
    // The network stage finishes before multi-user.target, so its line is already there.
    expect_applied(&vm, "keel-provision: network stage:", "ec2:")?;

    // The metadata's key makes `core` (Container Linux's default user) and lets it in.
    vm.set_ssh_user("core");
    vm.wait_for_ssh(timeout)?;
    check(&vm, "hostname", "keel-imds")?;
    check(
        &vm,
        "cat /etc/keel-test/addresses",
        "private=10.0.2.15 public=203.0.113.9 literal=$private_ipv4",
    )?;
    let fleet = vm.ssh_ok("cat /run/systemd/system/fleet.service.d/20-cloudinit.conf")?;
    ensure!(
        fleet.contains("FLEET_PUBLIC_IP=10.0.2.15") && fleet.contains("FLEET_METADATA=region=test"),
        "{fleet}"
    );
    check(
        &vm,
        &wait_for_file("/var/lib/keel-test/script"),
        "script ran as root",
    )?;

    vm.set_ssh_user("root");
    let report: serde_json::Value =
        serde_json::from_str(&vm.ssh_ok("cat /run/keel/provision.json")?)?;
    ensure!(
        report["network"]["source"] == format!("ec2:http://{IMDS_ADDR}"),
        "{report}"
    );
    ensure!(
        report["network"]["errors"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{report}"
    );
    drop(vm);
    // IMDSv2: a token first, then every GET carries it.
    let log = std::fs::read_to_string(imds.join("requests.log"))?;
    let first = log.lines().next().unwrap_or_default();
    ensure!(first.starts_with("PUT /latest/api/token"), "{log}");
    ensure!(
        log.lines()
            .filter(|l| l.starts_with("GET"))
            .all(|l| l.contains("token=valid")),
        "{log}"
    );
    ensure!(
        log.contains("GET /latest/user-data token=valid status=200"),
        "{log}"
    );
    work.passed();
    Ok(())
}

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn a_broken_config_from_fw_cfg_still_boots_and_reports_its_line() -> Result<()> {
    let image = output("keel.qcow2")?;
    let work = WorkDir::new("keel-fwcfg-")?;
    // Line 6 holds an invalid unit command; the hostname before it must still be applied.
    let vm = start_vm_with_user_data(
        &image,
        work.path(),
        "#cloud-config\nhostname: keel-fwcfg\ncoreos:\n  units:\n    - name: x.service\n      command: launch\n",
    )?;
    let timeout = boot_timeout();
    wait_for_boot(&vm, timeout)?;
    vm.wait_for_ssh(timeout)?;
    ensure!(vm.ssh_ok("hostname")?.trim() == "keel-fwcfg");
    let report: serde_json::Value =
        serde_json::from_str(&vm.ssh_ok("cat /run/keel/provision.json")?)?;
    ensure!(
        report["local"]["source"]
            .as_str()
            .unwrap_or("")
            .contains("fw-cfg"),
        "{report}"
    );
    let diags = report["local"]["diagnostics"]
        .as_array()
        .context("no diagnostics")?;
    ensure!(
        diags.iter().any(|d| d["kind"] == "error" && d["line"] == 6),
        "{report}"
    );
    drop(vm);
    work.passed();
    Ok(())
}
