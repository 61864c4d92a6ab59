//! Three machines booted from one image form a cluster by themselves: etcd, fleet and
//! flannel across three VMs under QEMU, on a private segment between them (a hub on the
//! host's loopback), each with the repository's cluster-node cloud-config unchanged. Then one
//! machine is killed and the others carry on. The same formation through etcd discovery.

use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;
use anyhow::{ensure, Context, Result};
use keel_image::cluster::{subnet_network, Cluster, ClusterError, Machine, FLEETCTL};
use keel_image::registry::Registry;
use keel_image::vm::GuestForward;
use qemu_tests::cluster::{
    fleet_units, formation_timeout, put_unit_file, spec, start_mover, wait_mover_moved,
    wait_routes_gone,
};
use qemu_tests::{out_dir, WorkDir};

/// The container pattern of CoreOS's fleet documentation, unchanged but for the image: one
/// HTTP container per machine.
const HELLO_TEMPLATE: &str = "[Unit]
Description=hello %i, one per machine
After=docker.service
Requires=docker.service

[Service]
TimeoutStartSec=0
ExecStartPre=-/usr/bin/docker kill hello%i
ExecStartPre=-/usr/bin/docker rm hello%i
ExecStartPre=/usr/bin/docker pull registry.keel.internal:5000/http
ExecStart=/usr/bin/docker run --rm --name hello%i registry.keel.internal:5000/http
ExecStop=/usr/bin/docker stop hello%i

[X-Fleet]
Conflicts=hello@*.service
";

const REGISTRY: &str = "registry.keel.internal:5000";

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

/// The address of the container `name` on `machine` (docker's bridge network).
fn container_ip(machine: &Machine, name: &str) -> Result<String> {
    let ip = machine.ssh_ok(&format!(
        "docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {name}"
    ))?;
    Ok(ip.trim().to_string())
}

/// The name of the hello container running on `machine`, if any.
fn hello_on(machine: &Machine) -> Result<Option<String>, ClusterError> {
    let names = machine.ssh_ok("docker ps --filter name=hello --format '{{.Names}}'")?;
    Ok(names.lines().next().map(|n| n.trim().to_string()))
}

/// A page fetched by a container on `from` from the HTTP server at a container address. (No
/// `-T`: bookworm's static busybox wget crashes with it; ssh's own timeout bounds the wait.)
fn fetch_whoami(from: &Machine, ip: &str) -> Result<String> {
    Ok(from.ssh_ok(&format!(
        "docker run --rm {REGISTRY}/shell wget -qO- http://{ip}/cgi-bin/whoami"
    ))?)
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
    let mut spec = spec(work.path(), "cluster-node.yaml", 3)?;
    let registry = Registry::start(&work.path().join("registry"))?;
    let pushed = registry.push_all(&out_dir().join("containers"))?;
    ensure!(
        pushed.iter().any(|p| p == "http:latest") && pushed.iter().any(|p| p == "shell:latest"),
        "built images {pushed:?}: run `make image` (it builds configs/containers)"
    );
    spec.guest_forwards
        .push(registry.guest_forward(env!("CARGO_BIN_EXE_tcp-relay")));
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

    // docker with flannel: each machine's hello container has an address in that machine's
    // flannel subnet and the vxlan MTU, and containers reach each other across machines at
    // their container addresses, with FORWARD's policy at DROP.
    let subnets = cluster.flannel_subnets()?;
    let mut hello_ips = Vec::new();
    for (i, machine) in cluster.machines().iter().enumerate() {
        let name = cluster.poll(
            &format!("a hello container on {}", machine.name),
            deadline(timeout),
            || Ok(hello_on(machine)?.ok_or("none yet".to_string())),
        )?;
        let ip = container_ip(machine, &name)?;
        let network = subnet_network(&subnets[i].1).unwrap_or_default();
        let prefix = network
            .rsplit_once('.')
            .map(|(p, _)| format!("{p}."))
            .unwrap_or_default();
        ensure!(
            !prefix.is_empty() && ip.starts_with(&prefix),
            "{}: {name} has {ip}, outside its flannel subnet {network}",
            machine.name
        );
        let opts = machine.ssh_ok("cat /run/flannel/flannel_docker_opts.env")?;
        ensure!(
            opts.contains("DOCKER_OPT_BIP=\"--bip=")
                && opts.contains("DOCKER_OPT_IPMASQ=\"--ip-masq=false\"")
                && opts.contains("DOCKER_OPT_MTU=\"--mtu=1450\""),
            "{}: {opts}",
            machine.name
        );
        let mtu = machine.ssh_ok(&format!("docker exec {name} cat /sys/class/net/eth0/mtu"))?;
        ensure!(
            mtu.trim() == "1450",
            "{}: container MTU {mtu}",
            machine.name
        );
        // dockerd sets FORWARD's policy to DROP when it has to turn forwarding on itself; Keel
        // has it on already (for flannel), so set DROP here as on such a machine: forwarded
        // container traffic must pass through flanneld's FLANNEL-FWD rules.
        let forward = machine.ssh_ok("iptables -P FORWARD DROP && iptables -S FORWARD")?;
        ensure!(
            forward.contains("-P FORWARD DROP") && forward.contains("-j FLANNEL-FWD"),
            "{}: {forward}",
            machine.name
        );
        hello_ips.push(ip);
    }
    for ip in &hello_ips[1..] {
        let page = fetch_whoami(first, ip)?;
        ensure!(
            page.contains(&format!("address {ip}/")),
            "from node1 to {ip}: {page:?}"
        );
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
    // Free a machine other than the victim of its hello instance, so the victim's can move.
    let victim_hello = hello_on(&cluster.machines()[victim])?
        .with_context(|| format!("no hello container on {dead_name}"))?;
    let freed = (0..3).find(|i| *i != victim).expect("three machines");
    let freed_hello = hello_on(&cluster.machines()[freed])?
        .with_context(|| format!("no hello container on {}", cluster.machines()[freed].name))?;
    first.ssh_ok(&format!(
        "timeout 300 {FLEETCTL} destroy {}.service",
        freed_hello.replace("hello", "hello@")
    ))?;
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
    // The dead machine's hello instance runs its container on the machine that was freed,
    // and the survivors' containers reach each other.
    let freed_machine = &cluster.machines()[freed];
    cluster.poll(
        &format!("{victim_hello} to start on {}", freed_machine.name),
        deadline(timeout),
        || {
            let name = hello_on(freed_machine)?;
            Ok((name.as_deref() == Some(victim_hello.as_str()))
                .then_some(())
                .ok_or(format!("{name:?}")))
        },
    )?;
    eprintln!(
        "{victim_hello} moved to {} {:.1} s after the kill",
        freed_machine.name,
        killed.elapsed().as_secs_f64()
    );
    let alive: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let from = &cluster.machines()[alive[0]];
    let to = &cluster.machines()[alive[1]];
    let to_hello = hello_on(to)?.context("a hello container on a survivor")?;
    let ip = container_ip(to, &to_hello)?;
    let page = fetch_whoami(from, &ip)?;
    ensure!(
        page.contains(&format!("address {ip}/")),
        "after the kill, to {ip}: {page:?}"
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
