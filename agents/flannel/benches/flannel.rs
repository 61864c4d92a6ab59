//! flanneld's figures, on this machine's kernel, in network namespaces on a test bridge
//! (nothing leaves the machine): time from start to ready, time for a new host's route to
//! appear on the others, and TCP throughput between two hosts over flannel's vxlan against
//! the same pair over the bare veth (iperf3). Printed, not asserted.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;
use flannel::subnet::Ipv4Net;
use flannel::testing::{is_ready, FlanneldProcess, TestNetwork};

const PREFIX: &str = "/coreos.com/network";
const PORT: u16 = 18080;

fn flanneld() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flanneld"))
}

fn wait(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if check() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn inside(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 2)
}

fn has_route(tn: &TestNetwork, i: usize, subnet: Ipv4Net) -> bool {
    tn.exec(i, "ip")
        .args(["-4", "route", "show", &subnet.to_string()])
        .output()
        .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
}

/// iperf3 from host 0 (bound to `from`) to a server on host 1 at `to`: Gbit/s received.
fn iperf(tn: &TestNetwork, from: Ipv4Addr, to: Ipv4Addr) -> Option<f64> {
    let mut server = tn
        .exec(1, "iperf3")
        .args(["-s", "-1", "-B", &to.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (Debian package iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let out = tn
        .exec(0, "iperf3")
        .args([
            "-c",
            &to.to_string(),
            "-B",
            &from.to_string(),
            "-t",
            "5",
            "-J",
        ])
        .output();
    // The server serves one client (-1) and exits; if the client never ran, stop it.
    if out.is_err() {
        let _ = server.kill();
    }
    let _ = server.wait();
    let out = out.ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
}

fn main() {
    let mut tn = TestNetwork::new(3);
    let etcd = TestEtcd::start_on(tn.bridge_addr());
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = etcd.config().connect().await.unwrap();
        client
            .put(
                format!("{PREFIX}/config"),
                r#"{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}"#,
                None,
            )
            .await
            .unwrap();
    });
    let start = |i: usize| {
        FlanneldProcess::start(
            &tn,
            i,
            flanneld(),
            &etcd.endpoint(),
            dir.path(),
            PREFIX,
            PORT,
            &[],
        )
    };

    println!("flannel (vxlan, network namespaces on a test bridge, real etcd)");
    let mut daemons = Vec::new();
    for i in 0..2 {
        let t0 = Instant::now();
        daemons.push(start(i));
        match wait(Duration::from_secs(30), || is_ready(&tn, i, PORT)) {
            Some(_) => println!(
                "  host {i}: start to ready          {:>8.3} s",
                t0.elapsed().as_secs_f64()
            ),
            None => println!("  host {i}: not ready after 30 s"),
        }
    }
    // A third host joins: how long until the first two route to its subnet.
    let t0 = Instant::now();
    daemons.push(start(2));
    let subnet = match wait(Duration::from_secs(30), || daemons[2].subnet().is_some()) {
        Some(_) => daemons[2].subnet().unwrap(),
        None => {
            println!("  host 2 got no subnet in 30 s");
            return;
        }
    };
    let leased = t0.elapsed();
    match wait(Duration::from_secs(30), || has_route(&tn, 0, subnet) && has_route(&tn, 1, subnet)) {
        Some(_) => println!(
            "  new host's route on the others    {:>8.3} s after its start ({:.3} s after its subnet.env)",
            t0.elapsed().as_secs_f64(),
            (t0.elapsed() - leased).as_secs_f64()
        ),
        None => println!("  the new host's route never appeared"),
    }

    // Throughput: host 0 → host 1 over flannel's vxlan, then over the bare veth.
    let subnets: Vec<Ipv4Net> = daemons.iter().map(|d| d.subnet().unwrap()).collect();
    for (i, s) in subnets.iter().enumerate() {
        tn.add_test_address(i, Ipv4Net::new(inside(*s), s.prefix_len()).unwrap());
    }
    wait(Duration::from_secs(10), || {
        tn.ping(0, inside(subnets[0]), inside(subnets[1]))
    });
    let over_vxlan = iperf(&tn, inside(subnets[0]), inside(subnets[1]));
    let over_veth = iperf(&tn, tn.host(0).addr(), tn.host(1).addr());
    let show = |v: Option<f64>| v.map_or("failed".to_string(), |g| format!("{g:.2} Gbit/s"));
    println!(
        "  iperf3 over flannel vxlan         {:>12}",
        show(over_vxlan)
    );
    println!(
        "  iperf3 over the bare veth         {:>12}",
        show(over_veth)
    );
    if let (Some(a), Some(b)) = (over_vxlan, over_veth) {
        println!(
            "  vxlan / veth                      {:>11.0} %",
            100.0 * a / b
        );
    }
    drop(daemons);
    tn.remove_host(2);
}
