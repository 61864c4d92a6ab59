//! flanneld itself, as processes in network namespaces (three "hosts" on a test bridge, made
//! by flannel::testing::TestNetwork) against a real etcd listening on the bridge's address.
//! Every packet stays on this machine.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;
use flannel::subnet::{parse_subnet_key, Ipv4Net};
use flannel::testing::{FlanneldProcess, TestNetwork};

const PREFIX: &str = "/coreos.com/network";
const HEALTHZ_PORT: u16 = 18080;

fn start_flanneld(
    tn: &TestNetwork,
    i: usize,
    etcd: &TestEtcd,
    dir: &std::path::Path,
    prefix: &str,
) -> FlanneldProcess {
    // One health port per network, so two flanneld can share a host.
    let port = if prefix == PREFIX {
        HEALTHZ_PORT
    } else {
        HEALTHZ_PORT + 1
    };
    FlanneldProcess::start(
        tn,
        i,
        std::path::Path::new(env!("CARGO_BIN_EXE_flanneld")),
        &etcd.endpoint(),
        dir,
        prefix,
        port,
        &[],
    )
}

fn subnet_of(f: &FlanneldProcess) -> Option<Ipv4Net> {
    f.subnet()
}

fn ready(tn: &TestNetwork, i: usize) -> bool {
    flannel::testing::is_ready(tn, i, HEALTHZ_PORT)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An address inside `subnet` that the test puts on the host: the subnet's .2.
fn inside(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 2)
}

async fn put_config(etcd: &TestEtcd, prefix: &str, json: &str) {
    let mut client = etcd.config().connect().await.unwrap();
    client
        .put(format!("{prefix}/config"), json, None)
        .await
        .unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Three hosts on one backend: distinct subnets, subnet.env, readiness, pings between the
/// subnets; a restarted flanneld keeps its subnet; a host that leaves loses its routes on
/// the others.
fn three_hosts(backend: &str) {
    let tn = TestNetwork::new(3);
    let etcd = TestEtcd::start_on(tn.bridge_addr());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut daemons: Vec<FlanneldProcess> = (0..3)
        .map(|i| start_flanneld(&tn, i, &etcd, dir.path(), PREFIX))
        .collect();
    // flanneld waits for the config to appear.
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemons.iter().all(|d| subnet_of(d).is_none()));
    assert!(!ready(&tn, 0));
    rt.block_on(put_config(
        &etcd,
        PREFIX,
        &format!(r#"{{"Network":"10.60.0.0/16","Backend":{{"Type":"{backend}"}}}}"#),
    ));
    wait_until("three subnet.env files", Duration::from_secs(30), || {
        daemons.iter().all(|d| subnet_of(d).is_some())
    });
    let subnets: Vec<Ipv4Net> = daemons.iter().map(|d| subnet_of(d).unwrap()).collect();
    let mut distinct = subnets.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{subnets:?}");
    let env = std::fs::read_to_string(daemons[0].subnet_file()).unwrap();
    assert!(env.contains("FLANNEL_NETWORK=10.60.0.0/16"), "{env}");
    let mtu = if backend == "vxlan" { 1450 } else { 1500 };
    assert!(env.contains(&format!("FLANNEL_MTU={mtu}")), "{env}");
    wait_until("readiness", Duration::from_secs(10), || {
        (0..3).all(|i| ready(&tn, i))
    });

    for (i, subnet) in subnets.iter().enumerate() {
        tn.add_test_address(
            i,
            Ipv4Net::new(inside(*subnet), subnet.prefix_len()).unwrap(),
        );
    }
    for (from, to) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        wait_until(
            &format!("ping {from} -> {to}"),
            Duration::from_secs(20),
            || tn.ping(from, inside(subnets[from]), inside(subnets[to])),
        );
    }

    // Restart host 0's flanneld: same subnet, and the others still reach it.
    // Its subnet.env goes too, so the subnet comes back by the lease's PublicIP alone.
    let old = daemons.remove(0);
    std::fs::remove_file(old.subnet_file()).unwrap();
    drop(old);
    let restarted = start_flanneld(&tn, 0, &etcd, dir.path(), PREFIX);
    wait_until(
        "the restarted flanneld's subnet.env",
        Duration::from_secs(30),
        || subnet_of(&restarted).is_some(),
    );
    assert_eq!(subnet_of(&restarted), Some(subnets[0]));
    daemons.insert(0, restarted);
    wait_until(
        "ping 1 -> 0 after the restart",
        Duration::from_secs(20),
        || tn.ping(1, inside(subnets[1]), inside(subnets[0])),
    );

    // Host 2 leaves: its flanneld stops and its lease goes (as when it expires); the others
    // drop their routes to it.
    drop(daemons.remove(2));
    rt.block_on(async {
        let mut client = etcd.config().connect().await.unwrap();
        let key = format!(
            "{PREFIX}/subnets/{}",
            flannel::subnet::subnet_key(subnets[2])
        );
        client.delete(key, None).await.unwrap();
    });
    let route_gone = |i: usize| {
        let out = tn
            .exec(i, "ip")
            .args(["-4", "route", "show", &subnets[2].to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };
    wait_until(
        "routes to the departed host removed",
        Duration::from_secs(20),
        || route_gone(0) && route_gone(1),
    );
    if backend == "vxlan" {
        let fdb = tn
            .exec(0, "bridge")
            .args(["fdb", "show", "dev", "flannel.1"])
            .output()
            .unwrap();
        let fdb = String::from_utf8_lossy(&fdb.stdout);
        assert!(
            !fdb.contains(&tn.host(2).addr().to_string()),
            "FDB still points at the departed host: {fdb}"
        );
    }
    assert!(tn.ping(0, inside(subnets[0]), inside(subnets[1])));
}

#[test]
fn three_hosts_over_vxlan() {
    three_hosts("vxlan");
}

#[test]
fn three_hosts_over_host_gw() {
    three_hosts("host-gw");
}

/// What host `i` has towards `subnet` over vxlan: the route, the neighbour entry of the
/// subnet's VTEP address on flannel.1, and whether the FDB points at `public_ip`.
fn vxlan_state(tn: &TestNetwork, i: usize, subnet: Ipv4Net, public_ip: Ipv4Addr) -> [bool; 3] {
    let output = |program: &str, args: &[&str]| {
        let out = tn.exec(i, program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let route = output("ip", &["-4", "route", "show", &subnet.to_string()]);
    let neigh = output(
        "ip",
        &[
            "-4",
            "neigh",
            "show",
            &subnet.network().to_string(),
            "dev",
            "flannel.1",
        ],
    );
    let fdb = output("bridge", &["fdb", "show", "dev", "flannel.1"]);
    [
        !route.trim().is_empty(),
        !neigh.trim().is_empty(),
        fdb.contains(&format!("dst {public_ip} ")),
    ]
}

/// With `--subnet-lease-ttl=5s`, a flanneld killed outright (no chance to clean up) loses its
/// lease to etcd's expiry within the TTL, and the survivor removes its route, neighbour and
/// FDB entry to it; the survivor's own lease lives on through its renewals.
#[test]
fn a_killed_hosts_lease_expires_after_the_ttl_and_its_routes_go() {
    let tn = TestNetwork::new(2);
    let etcd = TestEtcd::start_on(tn.bridge_addr());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(put_config(
        &etcd,
        PREFIX,
        r#"{"Network":"10.65.0.0/16","Backend":{"Type":"vxlan"}}"#,
    ));
    let start = |i: usize| {
        FlanneldProcess::start(
            &tn,
            i,
            std::path::Path::new(env!("CARGO_BIN_EXE_flanneld")),
            &etcd.endpoint(),
            dir.path(),
            PREFIX,
            HEALTHZ_PORT,
            // The default margin (60 minutes) is longer than the TTL: renewal at half of it.
            &["--subnet-lease-ttl=5s"],
        )
    };
    let survivor = start(0);
    let victim = start(1);
    wait_until("two subnet.env files", Duration::from_secs(20), || {
        survivor.subnet().is_some() && victim.subnet().is_some()
    });
    let (ours, theirs) = (survivor.subnet().unwrap(), victim.subnet().unwrap());
    let victim_ip = tn.host(1).addr();
    wait_until(
        "host 0's route, neighbour and FDB entry to host 1",
        Duration::from_secs(10),
        || vxlan_state(&tn, 0, theirs, victim_ip) == [true; 3],
    );
    let keys = || {
        rt.block_on(async {
            let mut client = etcd.config().connect().await.unwrap();
            let resp = client
                .get(
                    format!("{PREFIX}/subnets/"),
                    Some(etcd_client::GetOptions::new().with_prefix()),
                )
                .await
                .unwrap();
            let mut subnets: Vec<Ipv4Net> = resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    parse_subnet_key(key.rsplit('/').next()?)
                })
                .collect();
            subnets.sort();
            subnets
        })
    };
    let mut both = vec![ours, theirs];
    both.sort();
    // Longer than the TTL: the leases are renewed, not merely young.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(keys(), both);

    // kill -9 (what dropping a FlanneldProcess does): nothing revokes its lease.
    drop(victim);
    let killed_at = Instant::now();
    assert_eq!(vxlan_state(&tn, 0, theirs, victim_ip), [true; 3]);
    wait_until(
        "host 1's lease to expire and host 0 to drop its route, neighbour and FDB entry",
        Duration::from_secs(5 + 4),
        || keys() == vec![ours] && vxlan_state(&tn, 0, theirs, victim_ip) == [false; 3],
    );
    eprintln!(
        "host 1's entries gone {:.1?} after the kill",
        killed_at.elapsed()
    );
    // The survivor keeps its lease and readiness.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(keys(), vec![ours]);
    assert!(ready(&tn, 0));
    drop(survivor);
}

#[test]
fn twenty_flanneld_at_once_get_twenty_subnets_and_networks_stay_apart() {
    let tn = TestNetwork::new(20);
    let etcd = TestEtcd::start_on(tn.bridge_addr());
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        put_config(
            &etcd,
            PREFIX,
            r#"{"Network":"10.70.0.0/16","Backend":{"Type":"vxlan"}}"#,
        )
        .await;
        put_config(
            &etcd,
            "/second/network",
            r#"{"Network":"10.80.0.0/16","Backend":{"Type":"vxlan","VNI":2}}"#,
        )
        .await;
    });
    let daemons: Vec<FlanneldProcess> = (0..20)
        .map(|i| start_flanneld(&tn, i, &etcd, dir.path(), PREFIX))
        .collect();
    // A second network on two of the hosts, under another prefix (its own VNI and device).
    let second: Vec<FlanneldProcess> = (0..2)
        .map(|i| start_flanneld(&tn, i, &etcd, dir.path(), "/second/network"))
        .collect();
    wait_until("twenty subnet.env files", Duration::from_secs(90), || {
        daemons.iter().all(|d| subnet_of(d).is_some())
    });
    let mut subnets: Vec<Ipv4Net> = daemons.iter().map(|d| subnet_of(d).unwrap()).collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 20);
    assert!(subnets.iter().all(|s| s.to_string().starts_with("10.70.")));

    wait_until(
        "the second network's subnets",
        Duration::from_secs(30),
        || second.iter().all(|d| subnet_of(d).is_some()),
    );
    assert!(second
        .iter()
        .all(|d| subnet_of(d).unwrap().to_string().starts_with("10.80.")));
    let keys = rt.block_on(async {
        let mut client = etcd.config().connect().await.unwrap();
        let resp = client
            .get(
                "/second/network/subnets/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .unwrap();
        resp.kvs()
            .iter()
            .filter_map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                parse_subnet_key(key.rsplit('/').next()?)
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(keys.len(), 2, "{keys:?}");
    drop(second);
    drop(daemons);
}

#[test]
fn ip_masq_installs_flannels_rules_once() {
    let tn = TestNetwork::new(1);
    let etcd = TestEtcd::start_on(tn.bridge_addr());
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(put_config(
        &etcd,
        PREFIX,
        r#"{"Network":"10.90.0.0/16","Backend":{"Type":"host-gw"}}"#,
    ));
    let start = || {
        FlanneldProcess::start(
            &tn,
            0,
            std::path::Path::new(env!("CARGO_BIN_EXE_flanneld")),
            &etcd.endpoint(),
            dir.path(),
            PREFIX,
            HEALTHZ_PORT,
            &["--ip-masq"],
        )
    };
    let rules = || {
        let mut text = String::new();
        for (table, chain) in [
            ("nat", "POSTROUTING"),
            ("nat", "FLANNEL-POSTRTG"),
            ("filter", "FORWARD"),
            ("filter", "FLANNEL-FWD"),
        ] {
            text.push_str(&iptables_s(&tn, 0, table, chain));
        }
        text
    };
    let first = start();
    wait_until("subnet.env", Duration::from_secs(30), || {
        first.subnet().is_some()
    });
    let subnet = first.subnet().unwrap();
    let env = std::fs::read_to_string(first.subnet_file()).unwrap();
    assert!(env.contains("FLANNEL_IPMASQ=true"), "{env}");
    wait_until("ready", Duration::from_secs(30), || {
        flannel::testing::is_ready(&tn, 0, HEALTHZ_PORT)
    });
    let installed = rules();
    // Upstream flanneld's layout, comments included.
    for line in [
        "-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG".to_string(),
        "-A FLANNEL-POSTRTG -s 10.90.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully".to_string(),
        format!("-A FLANNEL-POSTRTG ! -s 10.90.0.0/16 -d {subnet} -m comment --comment \"flanneld masq\" -j RETURN"),
        "-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD".to_string(),
        "-A FLANNEL-FWD -d 10.90.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT".to_string(),
    ] {
        assert!(installed.contains(&line), "no {line:?} in\n{installed}");
    }
    // A restart adds nothing twice.
    drop(first);
    let second = start();
    wait_until("ready again", Duration::from_secs(30), || {
        flannel::testing::is_ready(&tn, 0, HEALTHZ_PORT)
    });
    assert_eq!(rules(), installed);
    drop(second);
}

/// `iptables -t TABLE -S CHAIN` in host `i`.
fn iptables_s(tn: &TestNetwork, i: usize, table: &str, chain: &str) -> String {
    let out = tn
        .exec(i, "iptables")
        .args(["-w", "-t", table, "-S", chain])
        .output()
        .expect("iptables (Debian package iptables)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What dockerd does with flannel, in namespaces: each host's "container" sits behind a
/// docker-like bridge holding mk-docker-opts' DOCKER_OPT_BIP, with its MTU, and the hosts'
/// FORWARD policy is DROP, as dockerd sets it. Containers reach each other at their container
/// addresses through flanneld's FLANNEL-FWD rules, which come back within --iptables-resync
/// when something flushes them.
fn containers_reach_each_other(backend: &str, network: &str) {
    let mut tn = TestNetwork::new(2);
    let etcd = TestEtcd::start_on(tn.bridge_addr());
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(put_config(
        &etcd,
        PREFIX,
        &format!(r#"{{"Network":"{network}","Backend":{{"Type":"{backend}"}}}}"#),
    ));
    let daemons: Vec<FlanneldProcess> = (0..2)
        .map(|i| {
            FlanneldProcess::start(
                &tn,
                i,
                std::path::Path::new(env!("CARGO_BIN_EXE_flanneld")),
                &etcd.endpoint(),
                dir.path(),
                PREFIX,
                HEALTHZ_PORT,
                &["--ip-masq", "--iptables-resync=1"],
            )
        })
        .collect();
    wait_until("both ready", Duration::from_secs(30), || {
        (0..2).all(|i| ready(&tn, i))
    });
    let mut containers = Vec::new();
    for (i, daemon) in daemons.iter().enumerate() {
        let opts = dir.path().join(format!("docker-opts-{i}.env"));
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_mk-docker-opts"))
            .arg("-f")
            .arg(daemon.subnet_file())
            .arg("-d")
            .arg(&opts)
            .arg("-i")
            .status()
            .unwrap();
        assert!(status.success());
        let vars = flannel::docker_opts::parse_env(&std::fs::read_to_string(&opts).unwrap());
        let bip: Ipv4Net = vars["DOCKER_OPT_BIP"]
            .strip_prefix("--bip=")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(bip.trunc(), daemon.subnet().unwrap());
        assert_eq!(vars["DOCKER_OPT_IPMASQ"], "--ip-masq=false");
        let mtu: u32 = vars["DOCKER_OPT_MTU"]
            .strip_prefix("--mtu=")
            .unwrap()
            .parse()
            .unwrap();
        let out = tn
            .exec(i, "iptables")
            .args(["-w", "-P", "FORWARD", "DROP"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        containers.push(tn.add_container(i, bip, mtu));
    }
    let ping = |from: usize, to: Ipv4Addr| {
        tn.exec_container(from, "ping")
            .args(["-c1", "-W2", "-n", "-q", &to.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    for (from, to) in [(0, 1), (1, 0)] {
        wait_until(
            &format!("container {from} -> container {to} ({backend})"),
            Duration::from_secs(20),
            || ping(from, containers[to]),
        );
    }
    // Something (dockerd starting, a person) flushes flannel's forward chain: it comes back.
    let out = tn
        .exec(1, "iptables")
        .args(["-w", "-F", "FLANNEL-FWD"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_until("FLANNEL-FWD restored", Duration::from_secs(10), || {
        iptables_s(&tn, 1, "filter", "FLANNEL-FWD")
            .matches("-j ACCEPT")
            .count()
            == 2
    });
    wait_until(
        "container 0 -> container 1 again",
        Duration::from_secs(10),
        || ping(0, containers[1]),
    );
    drop(daemons);
}

#[test]
fn containers_reach_each_other_over_vxlan() {
    containers_reach_each_other("vxlan", "10.71.0.0/16");
}

#[test]
fn containers_reach_each_other_over_host_gw() {
    containers_reach_each_other("host-gw", "10.72.0.0/16");
}
