//! The backends against the real kernel: hosts are network namespaces on a test bridge
//! (flannel::testing::TestNetwork), each with its own netlink connection. Every packet stays
//! on this machine: the pings go between addresses of the test bridge's /24 and of the
//! flannel network 10.50.0.0/16 that the hosts themselves hold.

use std::net::Ipv4Addr;

use flannel::backend::{Backend, BackendOptions, BackendType, Installed, LocalInfo};
use flannel::netlink::{MacAddr, Netlink, Route};
use flannel::subnet::{Ipv4Net, Lease, LeaseAttrs};
use flannel::testing::{TestNetwork, HOST_IFACE};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn network() -> Ipv4Net {
    net("10.50.0.0/16")
}

/// Host i's subnet: 10.50.<i+1>.0/24.
fn subnet(i: usize) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 50, i as u8 + 1, 0), 24).unwrap()
}

/// An address host i holds inside its subnet (on its fltest0 bridge): 10.50.<i+1>.2.
fn inside(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 50, i as u8 + 1, 2)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn lease(subnet: Ipv4Net, public_ip: Ipv4Addr, info: &LocalInfo) -> Lease {
    Lease {
        subnet,
        attrs: LeaseAttrs {
            public_ip,
            backend_type: info.backend_type.clone(),
            backend_data: info.backend_data.clone(),
        },
        etcd_lease: 0,
    }
}

struct Host {
    nl: Netlink,
    backend: Backend,
    lease: Lease,
}

/// Prepares `opts` on every host of `tn`, gives host i subnet(i), configures it, and puts
/// inside(i)/24 on the host's test bridge.
async fn set_up(tn: &TestNetwork, opts: &BackendOptions) -> Vec<Host> {
    let mut hosts = Vec::new();
    for i in 0..tn.len() {
        let nl = tn.netlink(i);
        let ext = nl.external_interface(&[]).await.unwrap();
        let mut backend = Backend::prepare(nl.clone(), &ext, opts).await.unwrap();
        backend.configure_local(network(), subnet(i)).await.unwrap();
        let lease = lease(subnet(i), tn.host(i).addr(), backend.local_info());
        hosts.push(Host { nl, backend, lease });
        tn.add_test_address(i, Ipv4Net::new(inside(i), 24).unwrap());
    }
    hosts
}

/// Every host adds every other host's lease.
async fn add_all(hosts: &mut [Host]) -> Vec<Vec<Option<Installed>>> {
    let leases: Vec<Lease> = hosts.iter().map(|h| h.lease.clone()).collect();
    let mut out = Vec::new();
    for (i, host) in hosts.iter_mut().enumerate() {
        let mut row = Vec::new();
        for (j, lease) in leases.iter().enumerate() {
            if i != j {
                row.push(host.backend.add_remote(lease).await.unwrap());
            } else {
                row.push(None);
            }
        }
        out.push(row);
    }
    out
}

fn vtep_mac(lease: &Lease) -> MacAddr {
    lease.attrs.backend_data.as_ref().unwrap()["VtepMAC"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// What host `h` has for remote `lease` on its flannel device: (route, neighbour, FDB).
async fn vxlan_entries(h: &Host, lease: &Lease) -> (Option<Route>, bool, bool) {
    let dev = h.backend.device().unwrap().index;
    let mac = vtep_mac(lease);
    let route =
        h.nl.routes()
            .await
            .unwrap()
            .into_iter()
            .find(|r| r.dst == lease.subnet);
    let neighbour =
        h.nl.neighbours(dev)
            .await
            .unwrap()
            .iter()
            .any(|n| n.ip == lease.subnet.network() && n.mac == Some(mac) && n.permanent);
    let fdb =
        h.nl.fdb(dev).await.unwrap().iter().any(|e| {
            e.mac == mac && e.dst == Some(lease.attrs.public_ip) && e.permanent && e.is_self
        });
    (route, neighbour, fdb)
}

fn ping(tn: &TestNetwork, from: usize, to: usize) -> bool {
    tn.ping(from, inside(from), inside(to))
}

#[test]
fn vxlan_three_hosts_reach_each_other_and_removal_cleans_up() {
    let tn = TestNetwork::new(3);
    let rt = runtime();
    let opts = BackendOptions::new(BackendType::Vxlan);
    let mut hosts = rt.block_on(set_up(&tn, &opts));

    rt.block_on(async {
        for (i, h) in hosts.iter().enumerate() {
            let ext = h.backend.external_interface();
            assert_eq!(ext.name, HOST_IFACE);
            assert_eq!(ext.addr, tn.host(i).addr());
            let veth = h.nl.link_by_name(HOST_IFACE).await.unwrap().unwrap();
            assert_eq!(ext.mtu, veth.mtu);

            // flannel.1: VNI 1 on eth0, local = eth0's address, port 8472, no learning,
            // MTU 50 below eth0's, up, address <subnet network>/32.
            let dev = h.nl.link_by_name("flannel.1").await.unwrap().unwrap();
            assert_eq!(Some(&dev.name), h.backend.device().map(|d| &d.name));
            assert_eq!(dev.mtu, veth.mtu - 50);
            assert!(dev.up);
            let attrs = dev.vxlan.clone().unwrap();
            assert_eq!(attrs.vni, 1);
            assert_eq!(attrs.local, Some(tn.host(i).addr()));
            assert_eq!(attrs.dev_index, Some(veth.index));
            assert_eq!(attrs.port, 8472);
            assert!(!attrs.learning);
            assert_eq!(
                h.nl.ipv4_addresses(dev.index).await.unwrap(),
                vec![Ipv4Net::new(subnet(i).network(), 32).unwrap()]
            );

            let info = h.backend.local_info();
            assert_eq!(info.mtu, veth.mtu - 50);
            assert_eq!(info.backend_type, "vxlan");
            assert_eq!(
                info.backend_data,
                Some(serde_json::json!({"VNI": 1, "VtepMAC": dev.mac.unwrap().to_string()}))
            );
        }
    });

    let installed = rt.block_on(add_all(&mut hosts));
    for (i, row) in installed.iter().enumerate() {
        for (j, entry) in row.iter().enumerate() {
            if i == j {
                continue;
            }
            match entry {
                Some(Installed::Vxlan {
                    route,
                    neighbour,
                    vtep_mac: mac,
                    public_ip,
                }) => {
                    assert_eq!(route.dst, subnet(j));
                    assert_eq!(route.gateway, Some(subnet(j).network()));
                    assert!(route.onlink);
                    assert_eq!(*neighbour, subnet(j).network());
                    assert_eq!(*mac, vtep_mac(&hosts[j].lease));
                    assert_eq!(*public_ip, tn.host(j).addr());
                }
                other => panic!("host {i} → {j}: {other:?}"),
            }
        }
    }
    rt.block_on(async {
        for (i, h) in hosts.iter().enumerate() {
            let dev = h.backend.device().unwrap().index;
            for (j, other) in hosts.iter().enumerate() {
                if i == j {
                    continue;
                }
                let (route, neighbour, fdb) = vxlan_entries(h, &other.lease).await;
                let route =
                    route.unwrap_or_else(|| panic!("host {i} has no route to {}", subnet(j)));
                assert_eq!(route.gateway, Some(subnet(j).network()));
                assert_eq!(route.oif, Some(dev));
                assert!(route.onlink, "{route}");
                assert!(neighbour, "host {i}: neighbour entry for {}", subnet(j));
                assert!(fdb, "host {i}: FDB entry for {}", subnet(j));
            }
        }
    });

    for (from, to) in [(0, 1), (0, 2), (1, 2), (2, 0)] {
        assert!(
            ping(&tn, from, to),
            "ping {} → {} over vxlan",
            inside(from),
            inside(to)
        );
    }

    // Applying the same leases again changes nothing and duplicates nothing.
    let again = rt.block_on(add_all(&mut hosts));
    assert_eq!(again, installed);
    rt.block_on(async {
        let h = &hosts[0];
        let dev = h.backend.device().unwrap().index;
        let mac = vtep_mac(&hosts[1].lease);
        let fdb = h.nl.fdb(dev).await.unwrap();
        assert_eq!(fdb.iter().filter(|e| e.mac == mac).count(), 1, "{fdb:?}");
        let routes = h.nl.routes().await.unwrap();
        assert_eq!(routes.iter().filter(|r| r.dst == subnet(1)).count(), 1);
    });
    assert!(ping(&tn, 0, 1));

    // Host 1 leaves as far as host 0 knows: its route, neighbour and FDB entries go.
    let lease1 = hosts[1].lease.clone();
    let removed = rt
        .block_on(hosts[0].backend.remove_remote(&lease1))
        .unwrap();
    assert_eq!(removed, installed[0][1]);
    rt.block_on(async {
        assert_eq!(
            vxlan_entries(&hosts[0], &lease1).await,
            (None, false, false)
        );
        // Host 2's entries stay.
        let (route, neighbour, fdb) = vxlan_entries(&hosts[0], &hosts[2].lease).await;
        assert!(route.is_some() && neighbour && fdb);
    });
    assert!(!hosts[0].backend.installed().contains_key(&subnet(1)));
    assert!(!ping(&tn, 0, 1), "ping still works after remove_remote");
    assert!(ping(&tn, 0, 2));

    // Removing again finds nothing.
    assert_eq!(
        rt.block_on(hosts[0].backend.remove_remote(&lease1))
            .unwrap(),
        None
    );
}

#[test]
fn host_gw_three_hosts_reach_each_other() {
    let tn = TestNetwork::new(3);
    let rt = runtime();
    let opts = BackendOptions::new(BackendType::HostGw);
    let mut hosts = rt.block_on(set_up(&tn, &opts));
    rt.block_on(async {
        for h in &hosts {
            let info = h.backend.local_info();
            assert_eq!(info.backend_type, "host-gw");
            assert_eq!(info.backend_data, None);
            assert_eq!(info.mtu, h.backend.external_interface().mtu);
            assert!(h.backend.device().is_none());
            assert!(h.nl.link_by_name("flannel.1").await.unwrap().is_none());
        }
    });
    let installed = rt.block_on(add_all(&mut hosts));
    rt.block_on(async {
        for (i, h) in hosts.iter().enumerate() {
            let ext = h.backend.external_interface().index;
            let routes = h.nl.routes().await.unwrap();
            for j in (0..3).filter(|&j| j != i) {
                let expected = Route {
                    dst: subnet(j),
                    gateway: Some(tn.host(j).addr()),
                    oif: Some(ext),
                    onlink: false,
                };
                assert_eq!(installed[i][j], Some(Installed::Direct { route: expected }));
                assert!(routes.contains(&expected), "host {i}: {routes:?}");
            }
        }
    });
    for (from, to) in [(0, 1), (0, 2), (1, 2), (2, 1)] {
        assert!(
            ping(&tn, from, to),
            "ping {} → {} over host-gw",
            inside(from),
            inside(to)
        );
    }

    let lease2 = hosts[2].lease.clone();
    rt.block_on(hosts[0].backend.remove_remote(&lease2))
        .unwrap()
        .unwrap();
    let routes = rt.block_on(hosts[0].nl.routes()).unwrap();
    assert!(routes.iter().all(|r| r.dst != subnet(2)), "{routes:?}");
    assert!(!ping(&tn, 0, 2), "ping still works after remove_remote");
    assert!(ping(&tn, 0, 1));
}

#[test]
fn host_gw_skips_hosts_off_the_segment() {
    let tn = TestNetwork::new(1);
    let rt = runtime();
    let mut hosts = rt.block_on(set_up(&tn, &BackendOptions::new(BackendType::HostGw)));
    let h = &mut hosts[0];
    // An address of the test range that is not on this segment: reached via the default
    // route, so host-gw cannot route to it. (No packet is sent to it.)
    let off_segment = Ipv4Addr::new(10, 213, tn.subnet().network().octets()[2] ^ 0x80, 77);
    let far = Lease {
        subnet: net("10.50.77.0/24"),
        attrs: LeaseAttrs {
            public_ip: off_segment,
            backend_type: "host-gw".into(),
            backend_data: None,
        },
        etcd_lease: 0,
    };
    assert_eq!(rt.block_on(h.backend.add_remote(&far)).unwrap(), None);
    let routes = rt.block_on(h.nl.routes()).unwrap();
    assert!(routes.iter().all(|r| r.dst != far.subnet), "{routes:?}");
    assert!(h.backend.installed().is_empty());
}

#[test]
fn direct_routing_uses_plain_routes_on_the_segment() {
    let tn = TestNetwork::new(3);
    let rt = runtime();
    let opts = BackendOptions {
        direct_routing: true,
        ..BackendOptions::new(BackendType::Vxlan)
    };
    let mut hosts = rt.block_on(set_up(&tn, &opts));
    let installed = rt.block_on(add_all(&mut hosts));
    rt.block_on(async {
        for (i, h) in hosts.iter().enumerate() {
            let ext = h.backend.external_interface().index;
            for j in (0..3).filter(|&j| j != i) {
                let expected = Route {
                    dst: subnet(j),
                    gateway: Some(tn.host(j).addr()),
                    oif: Some(ext),
                    onlink: false,
                };
                assert_eq!(installed[i][j], Some(Installed::Direct { route: expected }));
                let (route, neighbour, fdb) = vxlan_entries(h, &hosts[j].lease).await;
                assert_eq!(route, Some(expected));
                assert!(
                    !neighbour && !fdb,
                    "host {i}: vxlan entries despite DirectRouting"
                );
            }
        }
    });
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        assert!(
            ping(&tn, from, to),
            "ping {} → {} (direct)",
            inside(from),
            inside(to)
        );
    }

    // A host that is not on our segment still goes over vxlan. (Only entries are written;
    // nothing is sent to it.)
    let off_segment = Ipv4Addr::new(10, 213, tn.subnet().network().octets()[2] ^ 0x80, 77);
    let far_mac: MacAddr = "02:00:00:00:00:77".parse().unwrap();
    let far = Lease {
        subnet: net("10.50.77.0/24"),
        attrs: LeaseAttrs {
            public_ip: off_segment,
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": far_mac.to_string()})),
        },
        etcd_lease: 0,
    };
    let h = &mut hosts[0];
    match rt.block_on(h.backend.add_remote(&far)).unwrap() {
        Some(Installed::Vxlan { route, .. }) => assert!(route.onlink),
        other => panic!("{other:?}"),
    }
    let entries = rt.block_on(vxlan_entries(h, &far));
    assert!(entries.0.is_some() && entries.1 && entries.2, "{entries:?}");
    rt.block_on(h.backend.remove_remote(&far)).unwrap().unwrap();
    assert_eq!(rt.block_on(vxlan_entries(h, &far)), (None, false, false));

    // Removing a direct peer removes its plain route.
    let lease1 = hosts[1].lease.clone();
    rt.block_on(hosts[0].backend.remove_remote(&lease1))
        .unwrap()
        .unwrap();
    let routes = rt.block_on(hosts[0].nl.routes()).unwrap();
    assert!(routes.iter().all(|r| r.dst != subnet(1)), "{routes:?}");
    assert!(!ping(&tn, 0, 1));
}

#[test]
fn leases_of_other_types_and_our_own_are_skipped() {
    let tn = TestNetwork::new(2);
    let rt = runtime();
    let mut hosts = rt.block_on(set_up(&tn, &BackendOptions::new(BackendType::Vxlan)));
    let host_gw_peer = Lease {
        subnet: subnet(1),
        attrs: LeaseAttrs {
            public_ip: tn.host(1).addr(),
            backend_type: "host-gw".into(),
            backend_data: None,
        },
        etcd_lease: 0,
    };
    let own = hosts[0].lease.clone();
    let h = &mut hosts[0];
    assert_eq!(
        rt.block_on(h.backend.add_remote(&host_gw_peer)).unwrap(),
        None
    );
    assert_eq!(rt.block_on(h.backend.add_remote(&own)).unwrap(), None);
    assert!(h.backend.installed().is_empty());
    let routes = rt.block_on(h.nl.routes()).unwrap();
    assert!(routes
        .iter()
        .all(|r| !network().contains(&r.dst) || r.dst == net("10.50.1.0/24")));

    // A vxlan lease without a usable VtepMAC is an error, and leaves nothing behind.
    let broken = Lease {
        attrs: LeaseAttrs {
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1})),
            ..host_gw_peer.attrs.clone()
        },
        ..host_gw_peer
    };
    assert!(rt.block_on(h.backend.add_remote(&broken)).is_err());
    assert!(h.backend.installed().is_empty());
}

#[test]
fn a_changed_lease_replaces_its_entries() {
    let tn = TestNetwork::new(2);
    let rt = runtime();
    let mut hosts = rt.block_on(set_up(&tn, &BackendOptions::new(BackendType::Vxlan)));
    let old = hosts[1].lease.clone();
    let lease0 = hosts[0].lease.clone();
    rt.block_on(hosts[1].backend.add_remote(&lease0))
        .unwrap()
        .unwrap();
    rt.block_on(hosts[0].backend.add_remote(&old))
        .unwrap()
        .unwrap();
    assert!(ping(&tn, 0, 1));

    // Host 1 comes back with a new VTEP MAC: the old FDB entry must not linger.
    let new_mac: MacAddr = "02:11:22:33:44:55".parse().unwrap();
    let mut new = old.clone();
    new.attrs.backend_data = Some(serde_json::json!({"VNI": 1, "VtepMAC": new_mac.to_string()}));
    rt.block_on(hosts[0].backend.add_remote(&new))
        .unwrap()
        .unwrap();
    rt.block_on(async {
        let h = &hosts[0];
        let dev = h.backend.device().unwrap().index;
        let fdb = h.nl.fdb(dev).await.unwrap();
        assert!(fdb.iter().all(|e| e.mac != vtep_mac(&old)), "{fdb:?}");
        assert!(fdb
            .iter()
            .any(|e| e.mac == new_mac && e.dst == Some(tn.host(1).addr())));
        let neighbours = h.nl.neighbours(dev).await.unwrap();
        let n: Vec<_> = neighbours
            .iter()
            .filter(|n| n.ip == subnet(1).network())
            .collect();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].mac, Some(new_mac));
    });
    // Host 0 now sends to a MAC host 1's device does not have.
    assert!(!ping(&tn, 0, 1));
    rt.block_on(hosts[0].backend.add_remote(&old))
        .unwrap()
        .unwrap();
    assert!(ping(&tn, 0, 1));
}

#[test]
fn sync_removes_what_is_no_longer_listed() {
    let tn = TestNetwork::new(3);
    let rt = runtime();
    let mut hosts = rt.block_on(set_up(&tn, &BackendOptions::new(BackendType::Vxlan)));
    let all: Vec<Lease> = hosts.iter().map(|h| h.lease.clone()).collect();
    // The others know host 0 (for the replies).
    for h in &mut hosts[1..] {
        rt.block_on(h.backend.sync_remotes(&all)).unwrap();
    }
    rt.block_on(hosts[0].backend.sync_remotes(&all)).unwrap();
    let keys: Vec<Ipv4Net> = hosts[0].backend.installed().keys().copied().collect();
    assert_eq!(keys, vec![subnet(1), subnet(2)]);
    assert!(ping(&tn, 0, 1) && ping(&tn, 0, 2));

    rt.block_on(hosts[0].backend.sync_remotes(&all[..2]))
        .unwrap();
    let keys: Vec<Ipv4Net> = hosts[0].backend.installed().keys().copied().collect();
    assert_eq!(keys, vec![subnet(1)]);
    assert_eq!(
        rt.block_on(vxlan_entries(&hosts[0], &all[2])),
        (None, false, false)
    );
    assert!(ping(&tn, 0, 1));
    assert!(!ping(&tn, 0, 2));
}

#[test]
fn a_restarted_backend_keeps_the_device_and_removes_from_the_lease_alone() {
    let tn = TestNetwork::new(2);
    let rt = runtime();
    let opts = BackendOptions::new(BackendType::Vxlan);
    let mut hosts = rt.block_on(set_up(&tn, &opts));
    let peer = hosts[1].lease.clone();
    let lease0 = hosts[0].lease.clone();
    rt.block_on(hosts[1].backend.add_remote(&lease0))
        .unwrap()
        .unwrap();
    rt.block_on(hosts[0].backend.add_remote(&peer))
        .unwrap()
        .unwrap();
    assert!(ping(&tn, 0, 1));
    let mac_before = hosts[0].backend.device().unwrap().mac;

    // "flanneld restarts": a new backend on the same host, with no memory of the entries.
    let nl = hosts[0].nl.clone();
    let ext = hosts[0].backend.external_interface().clone();
    let mut restarted = rt
        .block_on(Backend::prepare(nl.clone(), &ext, &opts))
        .unwrap();
    assert_eq!(
        restarted.device().unwrap().mac,
        mac_before,
        "the VtepMAC must survive a restart"
    );
    rt.block_on(restarted.configure_local(network(), subnet(0)))
        .unwrap();
    assert!(ping(&tn, 0, 1), "a restart must not disturb traffic");
    assert!(restarted.installed().is_empty());
    let removed = rt.block_on(restarted.remove_remote(&peer)).unwrap();
    assert!(
        matches!(removed, Some(Installed::Vxlan { .. })),
        "{removed:?}"
    );
    let h = Host {
        nl,
        backend: restarted,
        lease: hosts[0].lease.clone(),
    };
    assert_eq!(rt.block_on(vxlan_entries(&h, &peer)), (None, false, false));

    // Another port makes the existing device incompatible: it is recreated.
    let other_port = BackendOptions {
        port: 4789,
        ..opts.clone()
    };
    let recreated = rt
        .block_on(Backend::prepare(h.nl.clone(), &ext, &other_port))
        .unwrap();
    let dev = rt
        .block_on(h.nl.link_by_name("flannel.1"))
        .unwrap()
        .unwrap();
    assert_eq!(dev.vxlan.unwrap().port, 4789);
    assert_eq!(Some(dev.index), recreated.device().map(|d| d.index));
}

#[test]
fn the_external_interface_by_name_address_or_default_route() {
    let tn = TestNetwork::new(1);
    let rt = runtime();
    rt.block_on(async {
        let nl = tn.netlink(0);
        let by_default = nl.external_interface(&[]).await.unwrap();
        assert_eq!(by_default.name, HOST_IFACE);
        assert_eq!(by_default.addr, tn.host(0).addr());
        assert_eq!(by_default.prefix_len, 24);
        assert_eq!(by_default.network(), tn.subnet());
        assert_eq!(by_default.mtu, 1500);

        let by_name = nl.external_interface(&["eth0".into()]).await.unwrap();
        assert_eq!(by_name, by_default);
        let by_addr = nl
            .external_interface(&[tn.host(0).addr().to_string()])
            .await
            .unwrap();
        assert_eq!(by_addr, by_default);
        // The first usable of several, as flanneld's repeated --iface.
        let fallback = nl
            .external_interface(&["nosuch0".into(), "10.213.255.254".into(), "eth0".into()])
            .await
            .unwrap();
        assert_eq!(fallback, by_default);
        let err = nl
            .external_interface(&["nosuch0".into()])
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("nosuch0"), "{err:#}");
        // Loopback has no usable address for flannel.
        assert!(nl.external_interface(&["lo".into()]).await.is_err());
    });
}

#[test]
fn a_host_that_leaves_takes_its_namespace_and_veth() {
    let mut tn = TestNetwork::new(2);
    let forwarding = format!("/proc/sys/net/ipv4/conf/{}/forwarding", tn.bridge_name());
    assert_eq!(
        std::fs::read_to_string(forwarding).unwrap().trim(),
        "0",
        "the bridge must not route"
    );
    let name = tn.host(1).name().to_string();
    let veth = tn.host(1).veth().to_string();
    tn.remove_host(1);
    assert!(tn.host(1).is_removed());
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&list.stdout).contains(&name));
    let link = std::process::Command::new("ip")
        .args(["link", "show", &veth])
        .output()
        .unwrap();
    assert!(!link.status.success(), "{veth} still exists");
    // The other host is still reachable from the root namespace's side of the bridge.
    let out = tn.run_in(0, || async {
        Netlink::connect().unwrap().links().await.unwrap()
    });
    assert!(out.iter().any(|l| l.name == HOST_IFACE));
}
