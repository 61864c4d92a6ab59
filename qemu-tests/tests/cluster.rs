//! Three machines booted from one image form a cluster by themselves: etcd, fleet and
//! flannel across three VMs under QEMU, on a private segment between them (a hub on the
//! host's loopback), each with the repository's cluster-node cloud-config unchanged. Then one
//! machine is killed and the others carry on. The same formation through etcd discovery.

use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;
use anyhow::{ensure, Context, Result};
use keel_image::cluster::{subnet_network, Cluster, Machine, FLEETCTL};
use keel_image::vm::GuestForward;
use qemu_tests::cluster::{
    fleet_units, formation_timeout, put_unit_file, spec, start_mover, wait_mover_moved,
    wait_routes_gone,
};
use qemu_tests::WorkDir;

const HELLO_TEMPLATE: &str = "[Unit]
Description=hello %i, one per machine

[Service]
ExecStart=/bin/sleep infinity

[X-Fleet]
Conflicts=hello@*.service
";

const EVERYWHERE: &str = "[Unit]
Description=a unit on every machine

[Service]
ExecStart=/bin/sleep infinity

[X-Fleet]
Global=true
";

/// The discovery URL in configs/cloud-config/cluster-node-discovery.yaml: the harness's etcd,
/// reached through QEMU's guestfwd.
const DISCOVERY_GUEST_ADDR: &str = "10.0.2.100:2379";
const DISCOVERY_PATH: &str = "/discovery/keel-cluster";

/// A network namespace on `machine`, addressed in the machine's flannel subnet (.2, with the
/// host end of its veth as .1 and the gateway), as a container would be. Returns its address.
fn container_namespace(machine: &Machine) -> Result<String> {
    let address = machine.ssh_ok(
        r#"set -e
net=$(sed -n 's/^FLANNEL_SUBNET=\(.*\)\.1\/[0-9]*$/\1/p' /run/flannel/subnet.env)
ip netns add box
ip link add box-host type veth peer name box-ns
ip link set box-ns netns box
ip addr add "$net.1/24" dev box-host
ip link set box-host up
ip -n box addr add "$net.2/24" dev box-ns
ip -n box link set lo up
ip -n box link set box-ns up
ip -n box route add default via "$net.1"
echo "$net.2""#,
    )?;
    Ok(address.trim().to_string())
}

fn deadline(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

/// The checks every formed cluster passes: etcd's members, fleet's machines, distinct
/// flannel subnets.
fn check_formed(cluster: &Cluster) -> Result<()> {
    let first = cluster.first_alive()?;
    let health = first.ssh("etcdctl endpoint health --cluster")?;
    ensure!(health.matches("is healthy").count() == 3, "{health}");
    let members = first.ssh_ok("etcdctl member list")?;
    for name in ["node1", "node2", "node3"] {
        ensure!(
            members.contains(&format!(", started, {name}, ")),
            "{members}"
        );
    }

    let machines = first.ssh_ok(&format!("{FLEETCTL} list-machines --full --no-legend"))?;
    ensure!(machines.lines().count() == 3, "{machines}");
    for machine in cluster.machines() {
        let id = machine.ssh_ok("cat /etc/machine-id")?;
        let row = machines
            .lines()
            .find(|l| l.starts_with(id.trim()))
            .with_context(|| {
                format!(
                    "{} ({}) is not listed:\n{machines}",
                    machine.name,
                    id.trim()
                )
            })?;
        ensure!(row.contains(&machine.address.to_string()), "{row}");
        ensure!(
            row.contains("cluster=keel") && row.contains("role=node"),
            "{row}"
        );
    }

    let subnets = cluster.flannel_subnets()?;
    let mut networks: Vec<String> = subnets
        .iter()
        .map(|(_, s)| subnet_network(s).unwrap_or_default())
        .collect();
    networks.sort();
    networks.dedup();
    ensure!(
        networks.len() == 3 && networks.iter().all(|n| n.starts_with("10.1.")),
        "{subnets:?}"
    );
    Ok(())
}

#[test]
#[ignore = "boots three VMs under QEMU: run by make test"]
fn three_machines_form_a_cluster_and_survive_losing_one() -> Result<()> {
    let work = WorkDir::new("keel-cluster-")?;
    let spec = spec(work.path(), "cluster-node.yaml", 3)?;
    let mut cluster = Cluster::start(&spec)?;
    let formed = cluster.wait_formed(formation_timeout(3))?;
    eprintln!("formed: {formed:?}");
    check_formed(&cluster)?;
    let timeout = Duration::from_secs(300);

    // fleet: a template started as three Conflicts instances lands one per machine; a global
    // unit runs on all three.
    let first = &cluster.machines()[0];
    put_unit_file(first, "hello@.service", HELLO_TEMPLATE)?;
    put_unit_file(first, "everywhere.service", EVERYWHERE)?;
    first.ssh_ok(&format!(
        "cd /var/roothome && timeout 300 {FLEETCTL} start hello@1.service hello@2.service hello@3.service everywhere.service"
    ))?;
    let spread = cluster.poll(
        "three hello@ instances on three machines",
        deadline(timeout),
        || {
            let units = fleet_units(first)?;
            let mut ips: Vec<&str> = units
                .iter()
                .filter(|u| u.unit.starts_with("hello@") && u.active == "active")
                .map(|u| u.ip.as_str())
                .collect();
            ips.sort();
            ips.dedup();
            Ok((ips.len() == 3)
                .then(|| units.clone())
                .ok_or(format!("{units:?}")))
        },
    )?;
    eprintln!("fleet units: {spread:?}");
    for machine in cluster.machines() {
        cluster.poll(
            &format!("everywhere.service on {}", machine.name),
            deadline(timeout),
            || {
                let state = machine.ssh("systemctl is-active everywhere.service")?;
                Ok((state.trim() == "active").then_some(()).ok_or(state))
            },
        )?;
        let hellos = machine.ssh("systemctl list-units --no-legend --state=active 'hello@*'")?;
        ensure!(hellos.lines().count() == 1, "{}: {hellos}", machine.name);
    }

    // flannel: a namespace in node1's subnet pings namespaces in the others' over vxlan.
    let boxes: Vec<String> = cluster
        .machines()
        .iter()
        .map(container_namespace)
        .collect::<Result<_>>()?;
    for target in &boxes[1..] {
        let ping = first.ssh(&format!("ip netns exec box ping -c 3 -W 5 {target}"))?;
        ensure!(ping.contains(" 0% packet loss"), "ping {target}:\n{ping}");
    }
    let fdb = first.ssh_ok("bridge fdb show dev flannel.1")?;
    ensure!(
        fdb.contains("10.77.0.12") && fdb.contains("10.77.0.13"),
        "{fdb}"
    );

    // Kill the machine fleet put an unconstrained unit on.
    let victim = start_mover(&cluster, deadline(timeout))?;
    let dead = &cluster.machines()[victim];
    let (dead_name, dead_ip) = (dead.name.clone(), dead.address.to_string());
    let dead_network = cluster.flannel_network_of(victim)?;
    let killed = Instant::now();
    cluster.kill(victim);
    eprintln!("killed {dead_name} ({dead_ip}, flannel {dead_network})");

    // etcd keeps quorum: the survivors accept writes; the dead member is unhealthy.
    let survivor = cluster.first_alive()?;
    cluster.poll("a write with one member gone", deadline(timeout), || {
        let put = survivor.ssh("etcdctl put /keel/after-kill survived")?;
        Ok(put.contains("OK").then_some(()).ok_or(put))
    })?;
    let health = survivor.ssh("etcdctl endpoint health --cluster")?;
    ensure!(health.matches("is healthy").count() == 2, "{health}");
    ensure!(health.contains(&dead_ip), "{health}");

    // fleet moves the dead machine's unit to a survivor and forgets the machine.
    let moved_to = wait_mover_moved(&cluster, &dead_ip, deadline(timeout))?;
    eprintln!(
        "mover.service moved to {moved_to} {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    cluster.poll("fleet to list two machines", deadline(timeout), || {
        let list = survivor.ssh(&format!("{FLEETCTL} list-machines --no-legend"))?;
        Ok((list.lines().count() == 2 && !list.contains(&dead_ip))
            .then_some(())
            .ok_or(list))
    })?;

    // flannel: the dead machine's lease expires and the survivors drop their routes to it,
    // while they still reach each other.
    wait_routes_gone(&cluster, &dead_network, deadline(timeout))?;
    eprintln!(
        "routes to {dead_network} gone {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let from = &cluster.machines()[alive[0]];
    let to = &boxes[alive[1]];
    let ping = from.ssh(&format!("ip netns exec box ping -c 2 -W 5 {to}"))?;
    ensure!(
        ping.contains(" 0% packet loss"),
        "ping {to} after the kill:\n{ping}"
    );

    drop(cluster);
    work.passed();
    Ok(())
}

#[test]
#[ignore = "boots three VMs under QEMU: run by make test"]
fn three_machines_find_each_other_through_discovery() -> Result<()> {
    // The discovery service: an etcd with the v2 API, expecting three members.
    let discovery = TestEtcd::start_with_v2_api();
    let size = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", &discovery.endpoint(), "set"])
        .arg(format!("{DISCOVERY_PATH}/_config/size"))
        .arg("3")
        .output()
        .context("running etcdctl (Debian package etcd-client)")?;
    ensure!(size.status.success(), "{size:?}");
    let endpoint = discovery.endpoint();
    let service = endpoint.trim_start_matches("http://");

    let work = WorkDir::new("keel-cluster-discovery-")?;
    let mut spec = spec(work.path(), "cluster-node-discovery.yaml", 3)?;
    spec.guest_forwards.push(GuestForward {
        guest_addr: DISCOVERY_GUEST_ADDR.parse()?,
        command: format!("{} {service}", env!("CARGO_BIN_EXE_tcp-relay")),
    });
    let cluster = Cluster::start(&spec)?;
    let formed = cluster.wait_formed(formation_timeout(3))?;
    eprintln!("formed through discovery: {formed:?}");
    check_formed(&cluster)?;

    // The three members registered themselves with the discovery service.
    let registered = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", &endpoint, "ls", DISCOVERY_PATH])
        .output()?;
    let registered = String::from_utf8_lossy(&registered.stdout);
    ensure!(
        registered
            .lines()
            .filter(|l| !l.ends_with("/_config"))
            .count()
            == 3,
        "{registered}"
    );
    drop(cluster);
    work.passed();
    Ok(())
}
