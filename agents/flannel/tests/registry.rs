//! The subnet registry against a real etcd (Debian's etcd-server): flannel's keys and JSON,
//! waiting for the network config, reuse of a machine's subnet after a restart, allocation
//! under contention, exhaustion, separate networks under separate prefixes, renewal and
//! expiry, and the lease watch through deletes, expiries, compaction and an etcd restart.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use agent_common::testing::TestEtcd;
use etcd_client::{Client, PutOptions};
use flannel::network::NetworkConfig;
use flannel::registry::{RegistryError, SubnetRegistry, SUBNET_LEASE_TTL};
use flannel::subnet::{Ipv4Net, Lease, LeaseAttrs, LeaseEvent};
use serde_json::json;
use tokio::sync::mpsc;

const PREFIX: &str = "/coreos.com/network";
const CONFIG: &str = r#"{"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}"#;

/// flanneld's log in the test's output (shown when a test fails); `RUST_LOG` overrides.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flannel=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

async fn client(etcd: &TestEtcd) -> Client {
    etcd.config()
        .connect()
        .await
        .expect("connecting to the test etcd")
}

async fn open_registry(etcd: &TestEtcd, prefix: &str) -> SubnetRegistry {
    SubnetRegistry::new(client(etcd).await, prefix)
}

async fn put(etcd: &TestEtcd, key: &str, value: &str) {
    client(etcd).await.put(key, value, None).await.unwrap();
}

/// Writes `json` as the network config and returns it parsed.
async fn network(etcd: &TestEtcd, prefix: &str, json: &str) -> NetworkConfig {
    put(etcd, &format!("{prefix}/config"), json).await;
    NetworkConfig::parse(json.as_bytes()).unwrap()
}

fn vxlan(ip: &str, mac: &str) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: ip.parse().unwrap(),
        backend_type: "vxlan".into(),
        backend_data: Some(json!({"VNI": 1, "VtepMAC": mac})),
    }
}

fn host_gw(ip: &str) -> LeaseAttrs {
    LeaseAttrs {
        public_ip: ip.parse().unwrap(),
        backend_type: "host-gw".into(),
        backend_data: None,
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

async fn next_event(events: &mut mpsc::Receiver<LeaseEvent>) -> LeaseEvent {
    tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .expect("a lease event within 15 s")
        .expect("the watcher is running")
}

/// No event arrives within `wait`.
async fn quiet(events: &mut mpsc::Receiver<LeaseEvent>, wait: Duration) {
    if let Ok(event) = tokio::time::timeout(wait, events.recv()).await {
        panic!("unexpected lease event {event:?}");
    }
}

/// Starts a watcher from a fresh listing; returns the listing's leases and the events.
async fn watch(registry: &SubnetRegistry) -> (Vec<Lease>, mpsc::Receiver<LeaseEvent>) {
    let (leases, revision) = registry.list_leases().await.unwrap();
    let (tx, rx) = mpsc::channel(64);
    let watcher = registry.clone();
    let known = leases.clone();
    tokio::spawn(async move { watcher.watch_leases(known, revision, tx).await });
    (leases, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_config_is_waited_for_and_used_once_written() {
    logs();
    let etcd = TestEtcd::start();
    let registry = open_registry(&etcd, PREFIX).await;
    assert_eq!(registry.get_network_config().await.unwrap(), None);

    // A long poll: only the watch on the key can wake the waiter in time.
    let waiter = registry.clone();
    let waiting =
        tokio::spawn(async move { waiter.wait_network_config(Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "returned without a config");

    let expected = network(&etcd, PREFIX, CONFIG).await;
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter woke up when the config was written")
        .unwrap();
    assert_eq!(got, expected);
    assert_eq!(got.subnet_min, net("10.5.1.0/24"));
    assert_eq!(registry.get_network_config().await.unwrap(), Some(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_a_clear_error_and_is_waited_past() {
    logs();
    let etcd = TestEtcd::start();
    let registry = open_registry(&etcd, PREFIX).await;
    put(
        &etcd,
        "/coreos.com/network/config",
        r#"{"Network": "10.5.0.0/16", "SubnetLen": 12}"#,
    )
    .await;
    let err = registry.get_network_config().await.unwrap_err();
    assert!(
        matches!(err, RegistryError::InvalidNetworkConfig { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the network config at /coreos.com/network/config is invalid: SubnetLen 12 leaves \
         Network 10.5.0.0/16 fewer than four subnets: SubnetLen must be at least 18"
    );
    put(&etcd, "/coreos.com/network/config", "Network: 10.5.0.0/16").await;
    let err = registry.get_network_config().await.unwrap_err().to_string();
    assert!(err.contains("not valid JSON"), "{err}");

    let waiter = registry.clone();
    let waiting =
        tokio::spawn(async move { waiter.wait_network_config(Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "accepted an invalid config");
    let expected = network(&etcd, PREFIX, CONFIG).await;
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiter woke up when the config was fixed")
        .unwrap();
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_have_flannels_key_and_json() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let registry = open_registry(&etcd, PREFIX).await;
    let attrs = vxlan("192.0.2.1", "aa:bb:cc:dd:ee:01");
    let lease = registry.acquire_lease(&config, &attrs, None).await.unwrap();
    assert!(config.allows(lease.subnet), "{}", lease.subnet);
    assert_eq!(lease.attrs, attrs);
    assert_ne!(lease.etcd_lease, 0);

    let key = format!("/coreos.com/network/subnets/{}-24", lease.subnet.network());
    assert_eq!(registry.lease_key(lease.subnet), key);
    let mut raw = client(&etcd).await;
    let got = raw.get(key.as_str(), None).await.unwrap();
    let kv = &got.kvs()[0];
    assert_eq!(
        kv.value_str().unwrap(),
        r#"{"PublicIP":"192.0.2.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}"#
    );
    assert_eq!(kv.lease(), lease.etcd_lease);
    let ttl = raw
        .lease_time_to_live(lease.etcd_lease, None)
        .await
        .unwrap();
    assert_eq!(ttl.granted_ttl(), SUBNET_LEASE_TTL.as_secs() as i64);
    let left = registry.time_to_live(&lease).await.unwrap().unwrap();
    assert!(left > Duration::from_secs(23 * 3600), "{left:?}");

    // A lease as upstream flanneld writes it (host-gw: no BackendData) is read as one.
    let upstream = raw.lease_grant(3600, None).await.unwrap().id();
    raw.put(
        "/coreos.com/network/subnets/10.5.200.0-24",
        r#"{"PublicIP":"192.0.2.200","BackendType":"host-gw"}"#,
        Some(PutOptions::new().with_lease(upstream)),
    )
    .await
    .unwrap();
    // Keys that are not subnets, and values that are not leases, are skipped.
    raw.put("/coreos.com/network/subnets/junk", "x", None)
        .await
        .unwrap();
    raw.put(
        "/coreos.com/network/subnets/10.5.201.0-24",
        "{not json",
        None,
    )
    .await
    .unwrap();
    let (leases, revision) = registry.list_leases().await.unwrap();
    assert!(revision > 0);
    assert_eq!(
        leases,
        vec![
            lease.clone(),
            Lease {
                subnet: net("10.5.200.0/24"),
                attrs: host_gw("192.0.2.200"),
                etcd_lease: upstream,
            },
        ]
    );
    // The garbled key still holds its subnet: it is never handed out.
    let previous = Some(net("10.5.201.0/24"));
    let other = registry
        .acquire_lease(&config, &host_gw("192.0.2.2"), previous)
        .await
        .unwrap();
    assert_ne!(other.subnet, net("10.5.201.0/24"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_machine_gets_its_subnet_back() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let first = open_registry(&etcd, PREFIX).await;
    let before = first
        .acquire_lease(&config, &vxlan("192.0.2.1", "aa:bb:cc:dd:ee:01"), None)
        .await
        .unwrap();
    let neighbour = first
        .acquire_lease(&config, &vxlan("192.0.2.2", "aa:bb:cc:dd:ee:02"), None)
        .await
        .unwrap();

    // flanneld restarts: a new connection, a new VTEP MAC, and a previous subnet that lost to
    // the lease found by PublicIP.
    let restarted = open_registry(&etcd, PREFIX).await;
    let new_attrs = vxlan("192.0.2.1", "aa:bb:cc:dd:ee:99");
    let after = restarted
        .acquire_lease(&config, &new_attrs, Some(net("10.5.250.0/24")))
        .await
        .unwrap();
    assert_eq!(after.subnet, before.subnet);
    assert_eq!(after.attrs, new_attrs);
    assert_ne!(
        after.etcd_lease, before.etcd_lease,
        "bound to a fresh etcd lease"
    );
    let mut raw = client(&etcd).await;
    let got = raw
        .get(restarted.lease_key(after.subnet).as_str(), None)
        .await
        .unwrap();
    assert!(got.kvs()[0]
        .value_str()
        .unwrap()
        .contains("aa:bb:cc:dd:ee:99"));
    assert_eq!(got.kvs()[0].lease(), after.etcd_lease);
    let (leases, _) = restarted.list_leases().await.unwrap();
    assert_eq!(leases.len(), 2);
    assert!(leases.contains(&neighbour));

    // A reservation (a key an operator wrote without an etcd lease) is reused and stays one.
    raw.put(
        "/coreos.com/network/subnets/10.5.42.0-24",
        r#"{"PublicIP":"192.0.2.42"}"#,
        None,
    )
    .await
    .unwrap();
    let reserved = restarted
        .acquire_lease(&config, &host_gw("192.0.2.42"), None)
        .await
        .unwrap();
    assert_eq!(reserved.subnet, net("10.5.42.0/24"));
    assert_eq!(reserved.etcd_lease, 0);
    assert_eq!(restarted.renew_lease(&reserved).await.unwrap(), reserved);

    // A lease with this PublicIP that the config no longer allows is dropped for a new one.
    let narrow = network(
        &etcd,
        PREFIX,
        r#"{"Network": "10.5.0.0/16", "SubnetMin": "10.5.150.0", "SubnetMax": "10.5.160.0"}"#,
    )
    .await;
    let moved = restarted
        .acquire_lease(&narrow, &new_attrs, None)
        .await
        .unwrap();
    assert!(narrow.allows(moved.subnet), "{}", moved.subnet);
    let (leases, _) = restarted.list_leases().await.unwrap();
    assert!(!leases.iter().any(|l| l.subnet == before.subnet));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_subnet_is_honoured_when_free_and_in_range() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let registry = open_registry(&etcd, PREFIX).await;
    let lease = registry
        .acquire_lease(&config, &host_gw("192.0.2.1"), Some(net("10.5.77.0/24")))
        .await
        .unwrap();
    assert_eq!(lease.subnet, net("10.5.77.0/24"));

    // Taken by another machine: that one keeps it.
    let other = registry
        .acquire_lease(&config, &host_gw("192.0.2.2"), Some(net("10.5.77.0/24")))
        .await
        .unwrap();
    assert_ne!(other.subnet, net("10.5.77.0/24"));
    assert!(config.allows(other.subnet));

    // Outside the network, the wrong length, or the network's own first subnet: ignored.
    for previous in ["10.6.1.0/24", "10.5.78.0/25", "10.5.0.0/24"] {
        let lease = registry
            .acquire_lease(&config, &host_gw("192.0.2.3"), Some(net(previous)))
            .await
            .unwrap();
        assert_ne!(lease.subnet, net(previous));
        assert!(config.allows(lease.subnet), "{}", lease.subnet);
        registry.release_lease(&lease).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_machines_starting_at_once_get_twenty_subnets() {
    logs();
    let etcd = TestEtcd::start();
    // 30 subnets for 20 machines: most random picks collide with someone's.
    let config = network(
        &etcd,
        PREFIX,
        r#"{"Network": "10.7.0.0/16", "SubnetMin": "10.7.1.0", "SubnetMax": "10.7.30.0"}"#,
    )
    .await;
    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut machines = Vec::new();
    for n in 1..=20 {
        let registry = open_registry(&etcd, PREFIX).await;
        let config = config.clone();
        let start = start.clone();
        machines.push(tokio::spawn(async move {
            let attrs = host_gw(&format!("192.0.2.{n}"));
            start.wait().await;
            registry.acquire_lease(&config, &attrs, None).await
        }));
    }
    let mut subnets = BTreeSet::new();
    for machine in machines {
        let lease = machine.await.unwrap().expect("every machine gets a subnet");
        assert!(config.allows(lease.subnet), "{}", lease.subnet);
        assert!(
            subnets.insert(lease.subnet),
            "{} handed out twice",
            lease.subnet
        );
    }
    assert_eq!(subnets.len(), 20);
    let (leases, _) = open_registry(&etcd, PREFIX)
        .await
        .list_leases()
        .await
        .unwrap();
    assert_eq!(leases.len(), 20);
    let owners: BTreeSet<_> = leases.iter().map(|l| l.attrs.public_ip).collect();
    assert_eq!(owners.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_range_is_a_clear_error() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(
        &etcd,
        PREFIX,
        r#"{"Network": "10.8.0.0/16", "SubnetMin": "10.8.1.0", "SubnetMax": "10.8.3.0"}"#,
    )
    .await;
    let registry = open_registry(&etcd, PREFIX).await;
    for n in 1..=3 {
        registry
            .acquire_lease(&config, &host_gw(&format!("192.0.2.{n}")), None)
            .await
            .unwrap();
    }
    let err = registry
        .acquire_lease(&config, &host_gw("192.0.2.4"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::RangeExhausted { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no free subnet left: all 3 subnets from 10.8.1.0/24 to 10.8.3.0/24 are leased"
    );
    // A machine already holding one still gets it back when the range is full.
    let again = registry
        .acquire_lease(&config, &host_gw("192.0.2.2"), None)
        .await
        .unwrap();
    assert!(config.allows(again.subnet));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_network_under_another_prefix_stays_separate() {
    logs();
    let etcd = TestEtcd::start();
    // A neighbouring name on purpose: "/coreos.com/network" is a string prefix of it.
    let other_prefix = "/coreos.com/network2";
    let config = network(&etcd, PREFIX, CONFIG).await;
    let other_config = network(
        &etcd,
        other_prefix,
        r#"{"Network": "10.5.0.0/16", "Backend": {"Type": "host-gw"}}"#,
    )
    .await;
    let first = open_registry(&etcd, PREFIX).await;
    let second = open_registry(&etcd, &format!("{other_prefix}/")).await;
    assert_eq!(second.prefix(), other_prefix);
    assert_eq!(
        first.get_network_config().await.unwrap(),
        Some(config.clone())
    );
    assert_eq!(
        second.get_network_config().await.unwrap(),
        Some(other_config.clone())
    );
    let (_, mut first_events) = watch(&first).await;

    // The same machine in both networks, with the same previous subnet.
    let previous = Some(net("10.5.9.0/24"));
    let in_first = first
        .acquire_lease(&config, &vxlan("192.0.2.1", "aa:bb:cc:dd:ee:01"), previous)
        .await
        .unwrap();
    let in_second = second
        .acquire_lease(&other_config, &host_gw("192.0.2.1"), previous)
        .await
        .unwrap();
    assert_eq!(in_first.subnet, net("10.5.9.0/24"));
    assert_eq!(in_second.subnet, net("10.5.9.0/24"));
    assert_ne!(in_first.etcd_lease, in_second.etcd_lease);
    assert_eq!(first.list_leases().await.unwrap().0, vec![in_first.clone()]);
    assert_eq!(
        second.list_leases().await.unwrap().0,
        vec![in_second.clone()]
    );

    assert_eq!(
        next_event(&mut first_events).await,
        LeaseEvent::Added(in_first)
    );
    second.release_lease(&in_second).await.unwrap();
    quiet(&mut first_events, Duration::from_millis(700)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_reports_added_and_removed_leases_and_expiries() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let registry = open_registry(&etcd, PREFIX).await;
    let short = registry.clone().with_lease_ttl(Duration::from_secs(2));
    let existing = registry
        .acquire_lease(&config, &host_gw("192.0.2.10"), None)
        .await
        .unwrap();
    let (listed, mut events) = watch(&registry).await;
    assert_eq!(listed, vec![existing.clone()]);

    let staying = registry
        .acquire_lease(&config, &vxlan("192.0.2.1", "aa:bb:cc:dd:ee:01"), None)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        LeaseEvent::Added(staying.clone())
    );
    let expiring = short
        .acquire_lease(&config, &host_gw("192.0.2.2"), None)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        LeaseEvent::Added(expiring.clone())
    );

    // A delete's event has no value: the lease is reported as it was known.
    registry.release_lease(&existing).await.unwrap();
    assert_eq!(next_event(&mut events).await, LeaseEvent::Removed(existing));

    // Not renewed: etcd expires it after its 2 s.
    let expired_at = tokio::time::Instant::now();
    assert_eq!(next_event(&mut events).await, LeaseEvent::Removed(expiring));
    assert!(expired_at.elapsed() < Duration::from_secs(6));

    // A machine restarting re-binds its lease: reported as Added with the new attributes.
    let rebound = registry
        .acquire_lease(&config, &vxlan("192.0.2.1", "aa:bb:cc:dd:ee:02"), None)
        .await
        .unwrap();
    assert_eq!(rebound.subnet, staying.subnet);
    assert_eq!(next_event(&mut events).await, LeaseEvent::Added(rebound));

    // A key overwritten with something that is not a lease is as good as removed.
    let broken = registry
        .acquire_lease(&config, &host_gw("192.0.2.3"), None)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        LeaseEvent::Added(broken.clone())
    );
    put(&etcd, &registry.lease_key(broken.subnet), "garbage").await;
    assert_eq!(next_event(&mut events).await, LeaseEvent::Removed(broken));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_lease_and_a_lapsed_lease_is_taken_again_if_free() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let registry = open_registry(&etcd, PREFIX)
        .await
        .with_lease_ttl(Duration::from_secs(2));
    assert_eq!(
        registry.renew_after(Duration::from_secs(3600)),
        Duration::from_secs(1)
    );
    let attrs = host_gw("192.0.2.1");
    let lease = registry.acquire_lease(&config, &attrs, None).await.unwrap();
    let key = registry.lease_key(lease.subnet);
    let mut raw = client(&etcd).await;
    let written = raw.get(key.as_str(), None).await.unwrap().kvs()[0].mod_revision();

    // Renewed every second for 4 s (twice the TTL): kept alive, and nothing rewritten.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(registry.renew_lease(&lease).await.unwrap(), lease);
    }
    let got = raw.get(key.as_str(), None).await.unwrap();
    assert_eq!(
        got.kvs()[0].mod_revision(),
        written,
        "a renewal wrote the key"
    );

    // Not renewed: it lapses; renewing then takes the still free subnet again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(registry.time_to_live(&lease).await.unwrap(), None);
    assert!(raw.get(key.as_str(), None).await.unwrap().kvs().is_empty());
    let renewed = registry.renew_lease(&lease).await.unwrap();
    assert_eq!(renewed.subnet, lease.subnet);
    assert_ne!(renewed.etcd_lease, lease.etcd_lease);

    // Lapsed again and taken by another machine meanwhile: lost, with who holds it now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let thief = registry
        .acquire_lease(&config, &host_gw("192.0.2.66"), Some(lease.subnet))
        .await
        .unwrap();
    assert_eq!(thief.subnet, lease.subnet);
    let err = registry.renew_lease(&renewed).await.unwrap_err();
    assert!(matches!(err, RegistryError::LeaseLost { .. }), "{err:?}");
    assert!(err.to_string().contains("leased to 192.0.2.66"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_compaction_the_watch_lists_again_and_goes_on() {
    logs();
    let etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let registry = open_registry(&etcd, PREFIX).await;
    let leaving = registry
        .acquire_lease(&config, &host_gw("192.0.2.1"), None)
        .await
        .unwrap();
    let staying = registry
        .acquire_lease(&config, &host_gw("192.0.2.2"), None)
        .await
        .unwrap();
    let (listed, listed_at) = registry.list_leases().await.unwrap();
    assert_eq!(listed.len(), 2);

    // Changes the watcher will have missed, then a compaction past its start revision.
    let joined = registry
        .acquire_lease(&config, &host_gw("192.0.2.3"), None)
        .await
        .unwrap();
    registry.release_lease(&leaving).await.unwrap();
    let mut raw = client(&etcd).await;
    let now = raw
        .get("/", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    raw.compact(now, None).await.unwrap();
    assert!(now > listed_at + 1);

    let (tx, mut events) = mpsc::channel(64);
    let watcher = registry.clone();
    tokio::spawn(async move { watcher.watch_leases(listed, listed_at, tx).await });
    // The difference between what the consumer knew and the fresh listing.
    assert_eq!(next_event(&mut events).await, LeaseEvent::Removed(leaving));
    assert_eq!(
        next_event(&mut events).await,
        LeaseEvent::Added(joined.clone())
    );
    quiet(&mut events, Duration::from_millis(500)).await;

    // And it keeps reporting from the new listing.
    let later = registry
        .acquire_lease(&config, &host_gw("192.0.2.4"), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, LeaseEvent::Added(later));
    registry.release_lease(&staying).await.unwrap();
    assert_eq!(next_event(&mut events).await, LeaseEvent::Removed(staying));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_rides_out_an_etcd_restart() {
    logs();
    let mut etcd = TestEtcd::start();
    let config = network(&etcd, PREFIX, CONFIG).await;
    let registry = open_registry(&etcd, PREFIX).await;
    let (_, mut events) = watch(&registry).await;
    let first = registry
        .acquire_lease(&config, &host_gw("192.0.2.1"), None)
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        LeaseEvent::Added(first.clone())
    );

    etcd.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    etcd.start_again();
    // Written through another connection while the watcher reconnects.
    let other = open_registry(&etcd, PREFIX).await;
    let second = other
        .acquire_lease(&config, &host_gw("192.0.2.2"), None)
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, LeaseEvent::Added(second));
    other.release_lease(&first).await.unwrap();
    assert_eq!(next_event(&mut events).await, LeaseEvent::Removed(first));

    // Dropping the receiver ends the watcher (it would otherwise hold etcd connections).
    drop(events);
}
