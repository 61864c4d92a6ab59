//! Docker checks on one machine, run inside the NoCloud provisioning test so they share its
//! boot and its reboot (tests/provision.rs): socket activation (nothing runs until the first
//! `docker`), Container Linux's `core` user running docker over its own SSH login, the
//! cloud-config's docker.service drop-in in effect, images pulled from a real registry
//! (Debian's docker-registry on the host's loopback, reached through a QEMU guest forward at
//! registry.keel.internal:5000), /var/lib/docker on STATE, and images and stopped containers
//! still there after a reboot. The registry holds the images `make image` built.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use keel_image::registry::Registry;
use keel_image::vm::Vm;

use crate::out_dir;

pub const REGISTRY: &str = "registry.keel.internal:5000";

/// The classic Container Linux drop-in, as a `coreos.units` entry (indented for `units:`).
pub const DOCKER_DROP_IN_UNIT: &str = r#"    - name: docker.service
      drop-ins:
        - name: 50-insecure-registry.conf
          content: |
            [Service]
            Environment="DOCKER_OPTS=--insecure-registry=10.0.2.100:5000 --label=keel-test=drop-in"
"#;

/// A registry in `dir` holding the images `make image` built (out/containers).
pub fn registry_with_built_images(dir: &Path) -> Result<Registry> {
    let registry = Registry::start(dir)?;
    let pushed = registry.push_all(&out_dir().join("containers"))?;
    for wanted in ["shell:latest", "http:latest"] {
        ensure!(
            pushed.iter().any(|p| p == wanted),
            "{wanted} is not among the built images {pushed:?}: run `make image` (it builds configs/containers)"
        );
    }
    Ok(registry)
}

fn unit_state(vm: &Vm, unit: &str) -> Result<String> {
    let out = vm.ssh(&format!("systemctl is-active {unit}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The first boot's checks; `vm` is logged in as core.
pub fn check_first_boot(vm: &Vm) -> Result<()> {
    // Socket activation: after boot only the socket exists; no daemon has run.
    ensure!(
        unit_state(vm, "docker.socket")? == "active",
        "docker.socket is not listening"
    );
    for unit in ["docker.service", "containerd.service"] {
        let state = unit_state(vm, unit)?;
        ensure!(
            state == "inactive",
            "{unit} is {state} before anything used docker"
        );
    }
    ensure!(
        vm.ssh("pgrep -x dockerd")?.status.code() == Some(1),
        "dockerd runs at boot"
    );

    // Container Linux's core: uid 500, /home/core, in docker and sudo, passwordless sudo.
    let passwd = vm.ssh_ok("getent passwd core")?;
    ensure!(
        passwd
            .trim()
            .starts_with("core:x:500:500:CoreOS Admin:/home/core:/bin/bash"),
        "{passwd}"
    );
    let groups = vm.ssh_ok("id -nG")?;
    for group in ["core", "sudo", "docker"] {
        ensure!(
            groups.split_whitespace().any(|g| g == group),
            "core is not in {group}: {groups}"
        );
    }
    vm.ssh_ok("sudo -n true")
        .context("core's passwordless sudo")?;

    // The first docker command starts the daemon; the image comes from the registry.
    let started = Instant::now();
    let hello = vm.ssh_ok(&format!(
        "docker run --name kept {REGISTRY}/shell echo hello-from-a-container"
    ))?;
    eprintln!(
        "first docker run (socket activation, pull, run): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ensure!(hello.contains("hello-from-a-container"), "{hello}");
    ensure!(
        unit_state(vm, "docker.service")? == "active",
        "docker.service did not start"
    );

    // The cloud-config's drop-in is in effect, beside Keel's own registry setting.
    let info = vm.ssh_ok("docker info")?;
    ensure!(
        info.contains("keel-test=drop-in"),
        "docker info shows no drop-in label:\n{info}"
    );
    ensure!(
        info.contains("10.0.2.100:5000") && info.contains(REGISTRY),
        "insecure registries:\n{info}"
    );
    // Images live on STATE (ext4, overlay2); the root stays the read-only verity device.
    let storage = vm.ssh_ok(
        "docker info --format '{{.Driver}} {{.DockerRootDir}}'; findmnt -no FSTYPE -T /var/lib/docker; findmnt -no SOURCE,OPTIONS /",
    )?;
    let lines: Vec<&str> = storage.lines().collect();
    ensure!(
        lines.first() == Some(&"overlay2 /var/lib/docker"),
        "{storage}"
    );
    ensure!(
        lines.get(1) == Some(&"ext4"),
        "/var/lib/docker is not on ext4: {storage}"
    );
    ensure!(
        lines.get(2).is_some_and(|l| {
            (l.starts_with("/dev/mapper/root ") || l.starts_with("/dev/dm-"))
                && l.split([' ', ',']).any(|o| o == "ro")
        }),
        "/ is not the read-only verity root: {storage}"
    );

    // The HTTP image serves, container to container.
    vm.ssh_ok(&format!("docker run -d --name web {REGISTRY}/http"))?;
    let web_ip = vm.ssh_ok("docker inspect -f '{{.NetworkSettings.IPAddress}}' web")?;
    let page = vm.ssh_ok(&format!(
        "docker run --rm {REGISTRY}/shell wget -qO- http://{}/cgi-bin/whoami",
        web_ip.trim()
    ))?;
    ensure!(
        page.contains(&format!("address {}/", web_ip.trim())),
        "whoami said {page:?}"
    );

    // A missing image: docker's own error, and docker goes on working.
    let missing = vm.ssh(&format!("docker pull {REGISTRY}/no-such-image"))?;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    ensure!(
        !missing.status.success(),
        "pulling a missing image succeeded"
    );
    ensure!(
        stderr.contains("manifest unknown") || stderr.contains("not found"),
        "docker's error for a missing image: {stderr}"
    );
    vm.ssh_ok(&format!("docker run --rm {REGISTRY}/shell true"))?;
    vm.ssh_ok("docker rm -f web")?;
    Ok(())
}

/// After a reboot: still socket-activated, the image and the stopped container still there.
pub fn check_after_reboot(vm: &Vm) -> Result<()> {
    ensure!(
        unit_state(vm, "docker.service")? == "inactive",
        "docker started at boot after the reboot"
    );
    let images = vm.ssh_ok("docker image ls --format '{{.Repository}}'")?;
    ensure!(
        images.lines().any(|l| l == format!("{REGISTRY}/shell")),
        "images after the reboot: {images}"
    );
    let kept = vm.ssh_ok("docker ps -a --filter name=kept --format '{{.Status}}'")?;
    ensure!(
        kept.trim().starts_with("Exited (0)"),
        "the stopped container after the reboot: {kept:?}"
    );
    let again = vm.ssh_ok("docker start -a kept")?;
    ensure!(again.contains("hello-from-a-container"), "{again}");
    Ok(())
}
