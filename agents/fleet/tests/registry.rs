//! The registry and machine sessions against a real etcd (Debian's etcd-server, started by the
//! test on free loopback ports).

use std::collections::BTreeMap;
use std::time::Duration;

use agent_common::testing::TestEtcd;
use fleet::model::{Machine, TargetState, UnitState};
use fleet::registry::{PublishedState, Registry, RegistryError};
use fleet::session::Session;

async fn registry(etcd: &TestEtcd, prefix: &str) -> Registry {
    Registry::new(etcd.config().connect().await.unwrap(), prefix)
}

fn machine(id: &str) -> Machine {
    Machine {
        id: id.to_string(),
        public_ip: "10.0.0.1".to_string(),
        metadata: BTreeMap::from([("region".to_string(), "eu".to_string())]),
    }
}

#[tokio::test]
async fn units_are_created_once_and_conflict_on_other_text() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd, "/_coreos.com/fleet").await;
    assert_eq!(reg.prefix(), "/_coreos.com/fleet/");
    let created = reg
        .create_job(
            "a.service",
            "[Service]\nExecStart=/bin/true\n",
            "h1",
            TargetState::Loaded,
        )
        .await
        .unwrap();
    assert!(created);
    // Same text: only the desired state changes.
    let created = reg
        .create_job(
            "a.service",
            "[Service]\nExecStart=/bin/true\n",
            "h1",
            TargetState::Launched,
        )
        .await
        .unwrap();
    assert!(!created);
    let job = reg.job("a.service").await.unwrap().unwrap();
    assert_eq!(job.desired, TargetState::Launched);
    assert_eq!(job.unit_text, "[Service]\nExecStart=/bin/true\n");
    assert_eq!(job.target, None);
    // Other text: a conflict, nothing changed.
    let err = reg
        .create_job(
            "a.service",
            "[Service]\nExecStart=/bin/false\n",
            "h2",
            TargetState::Inactive,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Conflict(_)), "{err}");
    assert_eq!(
        reg.job("a.service").await.unwrap().unwrap().desired,
        TargetState::Launched
    );

    reg.set_desired_state("a.service", TargetState::Inactive)
        .await
        .unwrap();
    assert!(matches!(
        reg.set_desired_state("nope.service", TargetState::Loaded)
            .await,
        Err(RegistryError::UnitNotFound(_))
    ));
    reg.destroy_job("a.service").await.unwrap();
    assert!(reg.job("a.service").await.unwrap().is_none());
    assert!(matches!(
        reg.destroy_job("a.service").await,
        Err(RegistryError::UnitNotFound(_))
    ));
}

#[tokio::test]
async fn prefixes_keep_clusters_apart() {
    let etcd = TestEtcd::start();
    let one = registry(&etcd, "/one/").await;
    let two = registry(&etcd, "/two/").await;
    one.create_job("a.service", "x", "h", TargetState::Loaded)
        .await
        .unwrap();
    assert_eq!(one.jobs().await.unwrap().len(), 1);
    assert!(two.jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_machine_lives_as_long_as_its_lease_and_an_id_is_not_taken_twice() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd, "/fleet/").await;
    let ttl = Duration::from_secs(2);
    let session = Session::start(&reg, &machine("m1"), ttl).await.unwrap();
    assert_eq!(reg.machines().await.unwrap(), vec![machine("m1")]);

    // A second fleetd with the same machine ID, while the first keeps its lease alive: after
    // waiting out one TTL it gives up with a clear error instead of taking over.
    let started = std::time::Instant::now();
    let err = match Session::start(&reg, &machine("m1"), ttl).await {
        Ok(_) => panic!("a duplicate machine ID was accepted"),
        Err(e) => e,
    };
    assert!(matches!(err, RegistryError::DuplicateMachine(_)), "{err}");
    assert!(started.elapsed() >= ttl);
    assert_eq!(reg.machines().await.unwrap().len(), 1);

    // Unit states hang off the same lease.
    let state = PublishedState {
        state: UnitState {
            name: "a.service".into(),
            hash: "h".into(),
            machine_id: "m1".into(),
            load_state: "loaded".into(),
            active_state: "active".into(),
            sub_state: "running".into(),
        },
        current: TargetState::Launched,
    };
    reg.publish_state(&state, session.lease()).await.unwrap();
    assert_eq!(reg.states().await.unwrap(), vec![state]);

    // Metadata changed through the API keeps the lease.
    reg.update_machine_metadata("m1", |m| {
        m.insert("disk".into(), "ssd".into());
    })
    .await
    .unwrap();
    let machines = reg.machines().await.unwrap();
    assert_eq!(machines[0].metadata["disk"], "ssd");
    assert!(matches!(
        reg.update_machine_metadata("m9", |_| {}).await,
        Err(RegistryError::MachineNotFound(_))
    ));

    // The machine stops refreshing its lease: machine and states are gone within the TTL
    // (etcd checks expiry about every 500 ms).
    drop(session);
    let deadline = std::time::Instant::now() + ttl + Duration::from_secs(3);
    while !reg.machines().await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "machine outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reg.states().await.unwrap().is_empty());
    // Now the ID is free again.
    let again = Session::start(&reg, &machine("m1"), ttl).await.unwrap();
    again.end(&reg).await;
    assert!(reg.machines().await.unwrap().is_empty());
}

#[tokio::test]
async fn only_the_current_engine_leader_may_schedule() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd, "/fleet/").await;
    reg.create_job("a.service", "x", "h", TargetState::Launched)
        .await
        .unwrap();
    let mut client = reg.client();
    let lease_one = client.lease_grant(30, None).await.unwrap().id();
    let lease_two = client.lease_grant(30, None).await.unwrap().id();
    let one = client
        .campaign(reg.election_name(), "m1", lease_one)
        .await
        .unwrap()
        .take_leader()
        .unwrap();
    reg.schedule(&one, "a.service", "m1").await.unwrap();
    assert_eq!(
        reg.job("a.service")
            .await
            .unwrap()
            .unwrap()
            .target
            .as_deref(),
        Some("m1")
    );
    assert!(matches!(
        reg.schedule(&one, "gone.service", "m1").await,
        Err(RegistryError::UnitNotFound(_))
    ));

    // The first leader's lease ends; the second candidate takes over, and the deposed
    // leader's late write is refused.
    let campaign = {
        let mut client = reg.client();
        let name = reg.election_name();
        tokio::spawn(async move { client.campaign(name, "m2", lease_two).await })
    };
    client.lease_revoke(lease_one).await.unwrap();
    let two = campaign.await.unwrap().unwrap().take_leader().unwrap();
    assert!(matches!(
        reg.schedule(&one, "a.service", "m9").await,
        Err(RegistryError::NotLeader)
    ));
    reg.unschedule(&two, "a.service").await.unwrap();
    assert_eq!(reg.job("a.service").await.unwrap().unwrap().target, None);
}
