//! The provisioner's local stage on a real boot: a cloud-config from a NoCloud drive and from
//! QEMU fw_cfg is applied by keel-init before systemd starts.

use anyhow::{ensure, Context, Result};
use base64::Engine;
use flate2::{write::GzEncoder, Compression};
use qemu_tests::{boot_timeout, output, start_vm_with, test_key, wait_for_boot, WorkDir};
use std::io::Write;
use std::path::Path;
use std::process::Command;

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn gzip_b64(data: &[u8]) -> String {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    b64(&enc.finish().unwrap())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A NoCloud seed: a small FAT image labelled cidata with user-data and meta-data.
fn nocloud_drive(dir: &Path, user_data: &str) -> Result<std::path::PathBuf> {
    let img = dir.join("cidata.img");
    std::fs::write(dir.join("user-data"), user_data)?;
    std::fs::write(
        dir.join("meta-data"),
        "instance-id: keel-test-1\nlocal-hostname: from-meta-data\n",
    )?;
    run(Command::new("mkfs.vfat")
        .args(["-n", "cidata", "-C"])
        .arg(&img)
        .arg("2048"))?;
    for f in ["user-data", "meta-data"] {
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg(dir.join(f))
            .arg(format!("::{f}"))
            .env("MTOOLS_SKIP_CHECK", "1"))?;
    }
    Ok(img)
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
    - name: keel-hello.service
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
"#,
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
    let drive = nocloud_drive(work.path(), &user_data(pubkey.trim()))?;
    let mut vm = start_vm_with(&image, &work.path().join("vm"), |cfg| {
        cfg.extra_drives.push(drive)
    })?;
    let timeout = boot_timeout();
    wait_for_boot(&vm, timeout)?;
    let line = vm
        .serial_lines()
        .into_iter()
        .find(|l| l.text.contains("keel-init: provisioning:"))
        .context("no provisioning line on the console")?;
    ensure!(
        line.text.contains("applied config from nocloud") && line.text.contains(" 0 errors"),
        "{}",
        line.text
    );

    vm.set_ssh_user("core");
    vm.wait_for_ssh(timeout)?;
    let check = |cmd: &str, want: &str| -> Result<()> {
        let got = vm.ssh_ok(cmd)?;
        ensure!(got.trim() == want, "`{cmd}` gave {got:?}, want {want:?}");
        Ok(())
    };
    check("whoami", "core")?;
    check("hostname", "keel-nocloud")?;
    check("id -nG | tr ' ' '\\n' | grep -x sudo", "sudo")?;
    check("cat /etc/keel-test/plain", "plain text")?;
    check("cat /etc/keel-test/b64", "base64 text")?;
    check("cat /etc/keel-test/gzb64", "gzip text")?;
    check(
        "stat -c '%a %U %G' /var/lib/keel-test/owned",
        "600 core core",
    )?;
    check("systemctl is-active keel-hello.service", "active")?;
    check("cat /run/keel-hello", "hi-from-dropin")?;
    // Not enabled: only the network stage's D-Bus StartUnit can have started it.
    check(
        "for i in $(seq 30); do systemctl is-active -q keel-cmd.service && break; sleep 1; done; systemctl is-active keel-cmd.service",
        "active",
    )?;
    let dropin = vm.ssh_ok("cat /run/systemd/system/etcd2.service.d/20-cloudinit.conf")?;
    ensure!(
        dropin.contains("Environment=\"ETCD_NAME=node1\""),
        "{dropin}"
    );
    ensure!(dropin.contains("ETCD_ADVERTISE_CLIENT_URLS="), "{dropin}");
    // The report is root's to read.
    vm.set_ssh_user("root");
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

#[test]
#[ignore = "boots the image under QEMU: run by make test"]
fn a_broken_config_from_fw_cfg_still_boots_and_reports_its_line() -> Result<()> {
    let image = output("keel.qcow2")?;
    let work = WorkDir::new("keel-fwcfg-")?;
    let user_data = work.path().join("user-data");
    // Line 6 holds an invalid unit command; the hostname before it must still be applied.
    std::fs::write(
        &user_data,
        "#cloud-config\nhostname: keel-fwcfg\ncoreos:\n  units:\n    - name: x.service\n      command: launch\n",
    )?;
    let vm = start_vm_with(&image, &work.path().join("vm"), |cfg| {
        cfg.fw_cfg
            .push(("opt/org.keel/user-data".into(), user_data.clone()))
    })?;
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
