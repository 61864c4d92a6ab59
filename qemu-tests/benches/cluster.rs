//! Cluster figures: `cargo bench -p qemu-tests --bench cluster`. Boots three machines from the
//! built image with configs/cloud-config/cluster-node.yaml and prints, in seconds from
//! starting the VMs, when every machine answered on SSH, etcd was healthy, fleet listed every
//! machine and every flannel subnet was routed; then kills the machine running an
//! unconstrained fleet unit and prints how long until the unit ran elsewhere and until the
//! survivors' routes to its flannel subnet were gone. `KEEL_BENCH_RUNS` (default 1) repeats it.
//! Prints `name value` lines; nothing is asserted.

use std::time::{Duration, Instant};

use anyhow::Result;
use keel_image::cluster::Cluster;
use qemu_tests::cluster::{
    formation_timeout, spec, start_mover, wait_mover_moved, wait_routes_gone,
};

fn main() -> Result<()> {
    // `cargo test --all-targets` runs bench binaries too, without --bench; a multi-minute
    // cluster has no place there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cluster bench: run it with `cargo bench -p qemu-tests --bench cluster`");
        return Ok(());
    }
    let runs: usize = std::env::var("KEEL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for run in 1..=runs {
        let work = qemu_tests::WorkDir::new("keel-bench-cluster-")?;
        let spec = spec(work.path(), "cluster-node.yaml", 3)?;
        let mut cluster = Cluster::start(&spec)?;
        let formed = cluster.wait_formed(formation_timeout(3))?;
        let accel = cluster
            .first_alive()?
            .vm()
            .map(|vm| vm.accel().to_string())
            .unwrap_or_default();
        println!("cluster.run {run}");
        println!("cluster.machines 3");
        println!(
            "cluster.accel {accel} (every VM emulated{})",
            if accel == "tcg" {
                ", no KVM: figures are several times a real machine's"
            } else {
                ""
            }
        );
        println!("cluster.all_booted_s {:.1}", formed.booted.as_secs_f64());
        println!(
            "cluster.etcd_healthy_s {:.1}",
            formed.etcd_healthy.as_secs_f64()
        );
        println!(
            "cluster.fleet_lists_all_s {:.1}",
            formed.fleet_listed.as_secs_f64()
        );
        println!(
            "cluster.flannel_routed_s {:.1}",
            formed.flannel_routed.as_secs_f64()
        );

        let deadline = Instant::now() + Duration::from_secs(600);
        let victim = start_mover(&cluster, deadline)?;
        let dead_ip = cluster.machines()[victim].address.to_string();
        let dead_network = cluster.flannel_network_of(victim)?;
        let killed = Instant::now();
        cluster.kill(victim);
        wait_mover_moved(&cluster, &dead_ip, deadline)?;
        println!(
            "cluster.kill_to_unit_running_elsewhere_s {:.1} (fleet agent_ttl 30 s)",
            killed.elapsed().as_secs_f64()
        );
        wait_routes_gone(&cluster, &dead_network, deadline)?;
        println!(
            "cluster.kill_to_flannel_routes_gone_s {:.1} (subnet lease TTL 60 s)",
            killed.elapsed().as_secs_f64()
        );
        let counters = cluster.hub().counters();
        println!(
            "cluster.lan_frames {}",
            counters.frames.load(std::sync::atomic::Ordering::Relaxed)
        );
        drop(cluster);
        work.passed();
    }
    Ok(())
}
