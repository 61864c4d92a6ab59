//! Keel's provisioner against Debian's cloud-init: `cargo bench -p qemu-tests --bench cloud_init`
//! (run by `make bench`, which builds both images first; this bench builds nothing).
//!
//! The Keel image (`out/keel.qcow2`) and the cloud-init image from the same base
//! (`out-cloud-init/keel-cloud-init.qcow2`, `make image-cloud-init`) boot under the harness's
//! accelerator (TCG here) with one NoCloud seed: a user with the test key, files (plain and
//! base64), a hostname and a runcmd that prints a marker on the console. For each image it
//! prints `name value` lines, counted in seconds from QEMU's start:
//!
//! - `config_applied_s`: users, keys, files and hostname are in place. Keel: keel-init's
//!   `provisioning:` line (its local stage, before systemd). cloud-init: the end of
//!   cloud-init.service, the stage whose modules write files, set the hostname, add users and
//!   their keys.
//! - `provisioning_done_s`: the provisioner has nothing left to do. Keel: the end of
//!   keel-provision-network.service. cloud-init: its `Cloud-init v. ... finished` line.
//! - `runcmd_s`: the runcmd's console marker, or `not run`.
//! - `ssh_s`: the first successful SSH login as the user the seed creates.
//! - `multi_user_s`: keel-ready.service's line.
//! - `cpu_s`: the provisioner's own CPU time (user + system), with its parts: keel-init's local
//!   stage (from its console line) and the network stage's `CPUUsageNSec`; the `CPUUsageNSec`
//!   of cloud-init's four services (cloud-init's generator, ds-identify, is not in any unit
//!   and not counted).
//! - `host_keys_cpu_s` (Keel): keel-sshd-keygen.service, which makes the SSH host keys there;
//!   on the cloud-init image its ssh module does that inside cloud-init.service, so this is
//!   what to add to Keel's `cpu_s` for a like-for-like sum.
//! - `cloud_init_blame_s[...]` (cloud-init): its slowest modules, by `cloud-init analyze blame`.
//!
//! Guest times (systemd's monotonic timestamps) are put on QEMU's clock with keel-init's lines,
//! which both images print with the guest's uptime. Nothing is asserted; a config that was not
//! applied shows as a failed `checks` line. `KEEL_BENCH_RUNS` (default 1) boots each image that
//! many times; `KEEL_BOOT_TIMEOUT` limits each wait (default 300 s); `KEEL_BENCH_KEEP=1` keeps
//! the VMs' files (serial logs, disk overlays).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use qemu_tests::guest_figures::{
    guest_boot_offset, keel_init_cpu, parse_unit_figures, unit_figures_command, UnitFigures,
};
use qemu_tests::vm::Vm;
use qemu_tests::{
    boot_timeout, nocloud_seed, output, start_vm_with, test_key, wait_for_boot, WorkDir,
    INIT_PREFIX,
};

/// What the seed's runcmd prints on the console.
const RUNCMD_MARKER: &str = "keel-bench: runcmd ran after ";
/// cloud-init's final message: `Cloud-init v. 22.4.2 finished at ...`.
const CLOUD_INIT_FINISHED: &str = " finished at ";
const CLOUD_INIT_PREFIX: &str = "Cloud-init v. ";
/// keel-init's provisioning line (it ends with the CPU time of the local stage).
const KEEL_PROVISIONING: &str = "keel-init: provisioning: ";
const KEEL_NETWORK_UNIT: &str = "keel-provision-network.service";
/// Makes the SSH host keys on the Keel image (cloud-init's ssh module does it on the other).
const KEEL_HOST_KEYS_UNIT: &str = "keel-sshd-keygen.service";
const CLOUD_INIT_UNITS: [&str; 4] = [
    "cloud-init-local.service",
    "cloud-init.service",
    "cloud-config.service",
    "cloud-final.service",
];
const HOSTNAME: &str = "bench-host";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provisioner {
    Keel,
    CloudInit,
}

struct Image {
    label: &'static str,
    path: PathBuf,
    provisioner: Provisioner,
}

#[derive(Default)]
struct Figures {
    config_applied: Option<f64>,
    provisioning_done: Option<f64>,
    runcmd: Option<f64>,
    ssh: f64,
    multi_user: f64,
    /// (part, seconds), `None` where the guest did not say.
    cpu: Vec<(String, Option<f64>)>,
    /// Keel: CPU seconds of keel-sshd-keygen.service, which cloud-init's ssh module does
    /// inside cloud-init.service; printed apart, not part of `cpu`.
    host_keys_cpu: Option<f64>,
    /// cloud-init: its slowest modules and stages by `cloud-init analyze blame` (wall seconds).
    blame: Vec<(String, f64)>,
    /// What the guest got wrong; empty when the config was applied as written.
    check_failures: Vec<String>,
    system_state: String,
}

fn main() -> Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without --bench; minutes of booting
    // have no place there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cloud-init bench: run it with `cargo bench -p qemu-tests --bench cloud_init`");
        return Ok(());
    }
    let images = [
        Image {
            label: "keel",
            path: output("keel.qcow2")?,
            provisioner: Provisioner::Keel,
        },
        Image {
            label: "cloud-init",
            path: cloud_init_image()?,
            provisioner: Provisioner::CloudInit,
        },
    ];
    let runs: usize = std::env::var("KEEL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let work = WorkDir::new("keel-bench-cloud-init-")?;
    let pubkey = std::fs::read_to_string(test_key()?.with_extension("pub"))
        .context("reading the test key's public half")?;
    let seed = nocloud_seed(
        work.path(),
        &user_data(pubkey.trim()),
        "instance-id: keel-bench-1\nlocal-hostname: bench-meta-data\n",
    )?;

    for run in 1..=runs {
        for image in &images {
            let label = if runs == 1 {
                image.label.to_string()
            } else {
                format!("{}#{run}", image.label)
            };
            let dir = work.path().join(format!("{}-{run}", image.label));
            let figures = measure(image, &seed, &dir)?;
            print_figures(&label, &figures);
        }
    }
    // KEEL_BENCH_KEEP=1 keeps the serial logs and disk overlays for a look afterwards.
    if std::env::var_os("KEEL_BENCH_KEEP").is_none_or(|v| v.is_empty()) {
        work.passed();
    }
    Ok(())
}

/// `$KEEL_CLOUD_INIT_OUT/keel-cloud-init.qcow2`, or the one in `out-cloud-init/`.
fn cloud_init_image() -> Result<PathBuf> {
    let dir = std::env::var_os("KEEL_CLOUD_INIT_OUT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| qemu_tests::workspace_root().join("out-cloud-init"));
    let path = dir.join("keel-cloud-init.qcow2");
    if !path.is_file() {
        bail!(
            "the cloud-init image is not at {}: run `make image-cloud-init` first",
            path.display()
        );
    }
    Ok(path)
}

/// One seed both provisioners read: cloud-init's key spellings, which Keel accepts too.
fn user_data(pubkey: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode("base64 text");
    format!(
        r#"#cloud-config
hostname: {HOSTNAME}
users:
  - name: core
    ssh_authorized_keys:
      - {pubkey}
write_files:
  - path: /etc/keel-bench/plain
    content: plain text
  - path: /etc/keel-bench/b64
    encoding: b64
    content: {b64}
runcmd:
  - 'echo "{RUNCMD_MARKER}$(cut -d" " -f1 /proc/uptime)s" > /dev/console'
  - 'date +%s.%N > /run/keel-bench-runcmd'
"#
    )
}

fn measure(image: &Image, seed: &Path, dir: &Path) -> Result<Figures> {
    let timeout = boot_timeout();
    let mut vm = start_vm_with(&image.path, dir, |cfg| cfg.extra_drives.push(seed.into()))?;
    let mut figures = Figures::default();

    // SSH first, polled from the start, so its time does not wait on anything else; the
    // serial lines keep their arrival times meanwhile.
    vm.wait_for_any_line(&[INIT_PREFIX], timeout)?;
    vm.set_ssh_user("core");
    vm.wait_for_ssh(timeout)
        .with_context(|| format!("{}: SSH login as core", image.label))?;
    figures.ssh = vm.started_at().elapsed().as_secs_f64();
    vm.set_serial_cursor(0);
    figures.multi_user = wait_for_boot(&vm, timeout)?.multi_user.as_secs_f64();

    for (cmd, want) in [
        ("whoami".to_string(), "core"),
        ("hostname".to_string(), HOSTNAME),
        ("cat /etc/keel-bench/plain".to_string(), "plain text"),
        ("cat /etc/keel-bench/b64".to_string(), "base64 text"),
    ] {
        match vm.ssh(&cmd) {
            Ok(out) if String::from_utf8_lossy(&out.stdout).trim() == want => {}
            Ok(out) => figures.check_failures.push(format!(
                "`{cmd}` gave {:?}",
                String::from_utf8_lossy(&out.stdout).trim()
            )),
            Err(e) => figures.check_failures.push(format!("`{cmd}`: {e}")),
        }
    }

    // Root reads systemd's figures (its key is in the image); first every start-up job,
    // the provisioner's included, must be done.
    vm.set_ssh_user("root");
    let state = vm.ssh_timeout("systemctl is-system-running --wait", timeout)?;
    figures.system_state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    if figures.system_state != "running" {
        let failed = vm
            .ssh_ok("systemctl list-units --failed --plain --no-legend | cut -d' ' -f1 | xargs")
            .unwrap_or_default();
        figures.system_state = format!("{} (failed: {})", figures.system_state, failed.trim());
    }

    let lines = vm.serial_lines();
    let boot_offset = guest_boot_offset(&lines).with_context(|| {
        format!(
            "{}: no keel-init line with an uptime on the console",
            image.label
        )
    })?;
    let units: &[&str] = match image.provisioner {
        Provisioner::Keel => &[KEEL_NETWORK_UNIT, KEEL_HOST_KEYS_UNIT],
        Provisioner::CloudInit => &CLOUD_INIT_UNITS,
    };
    let mut shown = unit_properties(&vm, units)?;
    if let Some(i) = shown.iter().position(|u| u.name == KEEL_HOST_KEYS_UNIT) {
        figures.host_keys_cpu = shown.remove(i).cpu;
    }
    let exited = |unit: &str| {
        shown
            .iter()
            .find(|u| u.name == unit)
            .and_then(|u| u.exit_monotonic)
            .map(|t| t + boot_offset)
    };
    match image.provisioner {
        Provisioner::Keel => {
            let line = lines
                .iter()
                .find(|l| l.text.contains(KEEL_PROVISIONING))
                .with_context(|| format!("{}: no `{KEEL_PROVISIONING}` line", image.label))?;
            figures.config_applied = Some(line.at.as_secs_f64());
            figures.provisioning_done = exited(KEEL_NETWORK_UNIT);
            figures
                .cpu
                .push(("keel-init local stage".into(), keel_init_cpu(&line.text)));
        }
        Provisioner::CloudInit => {
            figures.config_applied = exited("cloud-init.service");
            figures.provisioning_done = lines
                .iter()
                .find(|l| {
                    l.text.contains(CLOUD_INIT_PREFIX) && l.text.contains(CLOUD_INIT_FINISHED)
                })
                .map(|l| l.at.as_secs_f64());
            // Where cloud-init's time went, from its own log; asked after every figure above.
            if let Ok(text) = vm.ssh_ok("cloud-init analyze blame") {
                figures.blame = parse_blame(&text, 4);
            }
        }
    }
    for unit in &shown {
        figures.cpu.push((unit.name.clone(), unit.cpu));
    }

    // Keel runs the runcmd from its network stage, which is done by now; a short grace
    // period covers a transient unit still finishing.
    figures.runcmd = vm
        .wait_for_line_from(0, &[RUNCMD_MARKER], Duration::from_secs(15))
        .ok()
        .map(|m| m.at.as_secs_f64());
    drop(vm);
    Ok(figures)
}

/// The first `n` lines of the first boot record of `cloud-init analyze blame`:
/// `     09.27400s (init-network/config-ssh)`, slowest first.
fn parse_blame(text: &str, n: usize) -> Vec<(String, f64)> {
    text.lines()
        .skip_while(|l| !l.contains("Boot Record"))
        .skip(1)
        .take_while(|l| !l.contains("Boot Record"))
        .filter_map(|l| {
            let (secs, rest) = l.trim().split_once("s (")?;
            Some((rest.strip_suffix(')')?.to_string(), secs.parse().ok()?))
        })
        .take(n)
        .collect()
}

fn unit_properties(vm: &Vm, units: &[&str]) -> Result<Vec<UnitFigures>> {
    Ok(parse_unit_figures(
        &vm.ssh_ok(&unit_figures_command(units))?,
    ))
}

fn print_figures(label: &str, f: &Figures) {
    let secs = |v: Option<f64>, missing: &str| v.map_or(missing.to_string(), |s| format!("{s:.1}"));
    let p = |name: &str, value: String| println!("provision.{label}.{name} {value}");
    p("config_applied_s", secs(f.config_applied, "unknown"));
    p("provisioning_done_s", secs(f.provisioning_done, "unknown"));
    p("runcmd_s", secs(f.runcmd, "not run"));
    p("ssh_s", format!("{:.1}", f.ssh));
    p("multi_user_s", format!("{:.1}", f.multi_user));
    let total: Option<f64> = f.cpu.iter().map(|(_, s)| *s).sum();
    p(
        "cpu_s",
        total.map_or("unknown".into(), |s| format!("{s:.2}")),
    );
    for (part, s) in &f.cpu {
        p(
            &format!("cpu_s[{part}]"),
            s.map_or("unknown".into(), |s| format!("{s:.2}")),
        );
    }
    if let Some(s) = f.host_keys_cpu {
        p("host_keys_cpu_s", format!("{s:.2}"));
    }
    for (what, s) in &f.blame {
        p(&format!("cloud_init_blame_s[{what}]"), format!("{s:.2}"));
    }
    p("system_state", f.system_state.clone());
    p(
        "checks",
        if f.check_failures.is_empty() {
            "ok".into()
        } else {
            format!("FAILED: {}", f.check_failures.join("; "))
        },
    );
}
