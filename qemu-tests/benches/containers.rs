//! Container figures: `cargo bench -p qemu-tests --bench containers` (TCG unless the probe boot
//! proves KVM: figures are emulated). Prints `name value` lines; nothing is asserted.
//!
//! - image builds: each spec of configs/containers built cold (empty caches) and warm, with the
//!   compressed layer and unpacked sizes;
//! - a three-machine cluster (configs/cloud-config/cluster-node.yaml, flannel vxlan) with the
//!   built images in the registry: the first `docker run` after boot (socket activation, pull
//!   and run, until the container's first output) and a second one;
//! - iperf3 TCP throughput container to container over flannel vxlan, against machine to
//!   machine on the same segment (`--net=host`), in the same run, and their ratio.

use std::time::Instant;

use anyhow::{Context, Result};
use keel_image::cluster::Cluster;
use keel_image::registry::Registry;
use qemu_tests::cluster::{formation_timeout, spec};
use qemu_tests::{out_dir, workspace_root, WorkDir};

const REGISTRY: &str = "registry.keel.internal:5000";

fn image_builds(work: &std::path::Path) -> Result<()> {
    let mut specs: Vec<_> = std::fs::read_dir(workspace_root().join("configs/containers"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    specs.sort();
    let cache = work.join("cache");
    for spec in specs {
        let cold = keel_image::container::build(&spec, None, &work.join("out"), &cache)?;
        let warm = keel_image::container::build(&spec, None, &work.join("out"), &cache)?;
        let name = &cold.image.reference;
        println!(
            "container.{name}.build_cold_s {:.1}",
            cold.elapsed.as_secs_f64()
        );
        println!(
            "container.{name}.build_warm_s {:.1}",
            warm.elapsed.as_secs_f64()
        );
        println!(
            "container.{name}.layer_compressed_mib {:.2}",
            cold.image.layer.bytes.len() as f64 / (1u64 << 20) as f64
        );
        println!(
            "container.{name}.files_mib {:.2} ({} entries)",
            cold.file_bytes as f64 / (1u64 << 20) as f64,
            cold.files
        );
        println!("container.{name}.digest {}", cold.image.manifest.digest());
    }
    Ok(())
}

/// iperf3 client on `from` against a server at `address`; bits per second received.
fn iperf3(machine: &keel_image::cluster::Machine, net: &str, address: &str) -> Result<f64> {
    let json = machine.ssh_ok(&format!(
        "docker run --rm {net} {REGISTRY}/iperf3 --client {address} --time 5 --json"
    ))?;
    let value: serde_json::Value = serde_json::from_str(&json).context("iperf3's JSON")?;
    value["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("no end.sum_received.bits_per_second in iperf3's report")
}

fn main() -> Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("containers bench: run it with `cargo bench -p qemu-tests --bench containers`");
        return Ok(());
    }
    let work = WorkDir::new("keel-bench-containers-")?;
    image_builds(work.path())?;

    let registry = Registry::start(&work.path().join("registry"))?;
    registry.push_all(&out_dir().join("containers"))?;
    let mut spec = spec(work.path(), "cluster-node.yaml", 3)?;
    spec.guest_forwards
        .push(registry.guest_forward(env!("CARGO_BIN_EXE_tcp-relay")));
    let cluster = Cluster::start(&spec)?;
    cluster.wait_formed(formation_timeout(3))?;
    let accel = cluster
        .first_alive()?
        .vm()
        .map(|vm| vm.accel().to_string())
        .unwrap_or_default();
    println!("containers.accel {accel}");
    let (a, b) = (&cluster.machines()[0], &cluster.machines()[1]);

    let started = Instant::now();
    a.ssh_ok(&format!("docker run --rm {REGISTRY}/shell echo first"))?;
    println!(
        "containers.first_docker_run_s {:.1} (socket activation, pull, run)",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    a.ssh_ok(&format!("docker run --rm {REGISTRY}/shell echo second"))?;
    println!(
        "containers.second_docker_run_s {:.1}",
        started.elapsed().as_secs_f64()
    );

    b.ssh_ok(&format!(
        "docker run -d --name iperf-flannel {REGISTRY}/iperf3"
    ))?;
    b.ssh_ok(&format!(
        "docker run -d --name iperf-host --net=host {REGISTRY}/iperf3 --server --port 5202"
    ))?;
    let server = b.ssh_ok("docker inspect -f '{{.NetworkSettings.IPAddress}}' iperf-flannel")?;
    // Let both servers come up.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let over_flannel = iperf3(a, "", server.trim())?;
    let host = format!("{} --port 5202", b.address);
    let machine_to_machine = iperf3(a, "--net=host", &host)?;
    println!(
        "containers.iperf3_container_to_container_vxlan_mbit_s {:.0}",
        over_flannel / 1e6
    );
    println!(
        "containers.iperf3_machine_to_machine_mbit_s {:.0}",
        machine_to_machine / 1e6
    );
    println!(
        "containers.iperf3_ratio {:.2} (container over vxlan / machine to machine)",
        over_flannel / machine_to_machine
    );
    drop(cluster);
    work.passed();
    Ok(())
}
