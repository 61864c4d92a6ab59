//! Several fleetd instances in one process against a real etcd: each with its own machine ID
//! and a recording systemd, scheduling through the elected engine. The real D-Bus backend is
//! exercised in the VM tests.

mod common;

use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;
use common::*;
use fleet::model::TargetState;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn machine_of_pairs_land_together_and_conflicting_units_spread() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[]).await;
    let b = start_node(&etcd, "m-b", &[]).await;
    let c = start_node(&etcd, "m-c", &[]).await;
    let nodes = [&a, &b, &c];

    // Five mutually conflicting units on three machines: three run, one per machine.
    for i in 1..=5 {
        submit(
            &reg,
            &format!("web@{i}.service"),
            &with_fleet("Conflicts=web@*.service"),
            TargetState::Launched,
        )
        .await;
    }
    // A follower lands with its target.
    submit(&reg, "db.service", SERVICE, TargetState::Launched).await;
    submit(
        &reg,
        "db-backup.service",
        &with_fleet("MachineOf=db.service"),
        TargetState::Launched,
    )
    .await;

    eventually("three web units and the db pair", SETTLE, || {
        let webs: usize = nodes
            .iter()
            .map(|n| {
                n.systemd
                    .active_units()
                    .iter()
                    .filter(|u| u.starts_with("web@"))
                    .count()
            })
            .sum();
        webs == 3 && where_runs(&nodes, "db-backup.service").len() == 1
    })
    .await;
    tokio::time::sleep(INTERVAL * 4).await;
    for node in nodes {
        let webs = node
            .systemd
            .active_units()
            .iter()
            .filter(|u| u.starts_with("web@"))
            .count();
        assert_eq!(webs, 1, "{:?}", running(&nodes));
    }
    assert_eq!(
        where_runs(&nodes, "db.service"),
        where_runs(&nodes, "db-backup.service"),
        "{:?}",
        running(&nodes)
    );

    // The API's view: states published for what runs, each unit on one machine.
    let states = reg.states().await.unwrap();
    assert_eq!(states.len(), 5, "{states:?}");
    for state in &states {
        assert_eq!(state.state.active_state, "active");
        assert_eq!(state.current, TargetState::Launched);
    }
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_machines_units_move_and_followers_follow() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[("disk", "ssd")]).await;
    let b = start_node(&etcd, "m-b", &[("disk", "ssd")]).await;
    let nodes = [&a, &b];
    submit(
        &reg,
        "db.service",
        &with_fleet("MachineMetadata=disk=ssd"),
        TargetState::Launched,
    )
    .await;
    submit(
        &reg,
        "db-backup.service",
        &with_fleet("MachineOf=db.service"),
        TargetState::Launched,
    )
    .await;
    eventually("the db pair", SETTLE, || {
        where_runs(&nodes, "db-backup.service").len() == 1
    })
    .await;
    let first = where_runs(&nodes, "db.service");
    assert_eq!(first, where_runs(&nodes, "db-backup.service"));
    let (dying, survivor) = if first[0] == a.id { (a, b) } else { (b, a) };

    // Kill the machine that runs them: within agent_ttl and a reconcile interval (plus the
    // agent's own pass), both run on the survivor.
    let killed_at = Instant::now();
    dying.kill();
    eventually("the pair on the survivor", TTL * 3 + INTERVAL * 4, || {
        survivor.systemd.active_units() == vec!["db-backup.service", "db.service"]
    })
    .await;
    let moved = killed_at.elapsed();
    eprintln!("units moved {moved:?} after the kill");
    // fleet's promise: rescheduled within agent_ttl plus one engine interval. The agent's own
    // pass (one more interval) starts them, and etcd checks lease expiry every 500 ms.
    assert!(
        moved <= TTL + INTERVAL * 2 + Duration::from_millis(1500),
        "took {moved:?}"
    );
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_units_run_on_every_qualifying_machine() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[("role", "web")]).await;
    let b = start_node(&etcd, "m-b", &[("role", "web")]).await;
    let c = start_node(&etcd, "m-c", &[("role", "db")]).await;
    let nodes = [&a, &b, &c];
    submit(
        &reg,
        "logger.service",
        &with_fleet("Global=true"),
        TargetState::Launched,
    )
    .await;
    submit(
        &reg,
        "web-agent.service",
        &with_fleet("Global=true\nMachineMetadata=role=web"),
        TargetState::Launched,
    )
    .await;
    // Two globals that conflict: one of them per machine, the same one everywhere.
    submit(
        &reg,
        "alpha.service",
        &with_fleet("Global=true\nConflicts=beta.service"),
        TargetState::Launched,
    )
    .await;
    submit(
        &reg,
        "beta.service",
        &with_fleet("Global=true"),
        TargetState::Launched,
    )
    .await;
    eventually("globals everywhere they qualify", SETTLE, || {
        where_runs(&nodes, "logger.service").len() == 3
            && where_runs(&nodes, "web-agent.service") == vec!["m-a", "m-b"]
    })
    .await;
    tokio::time::sleep(INTERVAL * 4).await;
    let alpha = where_runs(&nodes, "alpha.service");
    let beta = where_runs(&nodes, "beta.service");
    assert!(
        (alpha.len() == 3 && beta.is_empty()) || (beta.len() == 3 && alpha.is_empty()),
        "{:?}",
        running(&nodes)
    );
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_engine_takes_over_and_nothing_runs_twice() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[]).await;
    // m-a registered first, so it won the election; the others are candidates.
    tokio::time::sleep(INTERVAL * 2).await;
    let b = start_node(&etcd, "m-b", &[]).await;
    let c = start_node(&etcd, "m-c", &[]).await;
    for i in 1..=6 {
        submit(
            &reg,
            &format!("job{i}.service"),
            SERVICE,
            TargetState::Launched,
        )
        .await;
    }
    let all = [&a, &b, &c];
    eventually("six jobs running", SETTLE, || {
        all.iter()
            .map(|n| n.systemd.active_units().len())
            .sum::<usize>()
            == 6
    })
    .await;

    // Kill the leader; new units still get scheduled, and at no sample does a unit run on
    // two live machines.
    a.kill();
    for i in 7..=9 {
        submit(
            &reg,
            &format!("job{i}.service"),
            SERVICE,
            TargetState::Launched,
        )
        .await;
    }
    let live = [&b, &c];
    let deadline = Instant::now() + TTL * 3 + SETTLE;
    loop {
        for i in 1..=9 {
            let unit = format!("job{i}.service");
            assert!(
                where_runs(&live, &unit).len() <= 1,
                "{unit} runs twice: {:?}",
                running(&live)
            );
        }
        let total: usize = live.iter().map(|n| n.systemd.active_units().len()).sum();
        if total == 9 {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", running(&live));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everyone_recovers_after_etcd_restarts() {
    let mut etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[]).await;
    let b = start_node(&etcd, "m-b", &[]).await;
    submit(&reg, "one.service", SERVICE, TargetState::Launched).await;
    let nodes = [&a, &b];
    eventually("one.service running", SETTLE, || {
        where_runs(&nodes, "one.service").len() == 1
    })
    .await;

    etcd.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    etcd.start_again();
    let reg = registry(&etcd).await;
    submit(&reg, "two.service", SERVICE, TargetState::Launched).await;
    eventually("both units running after the restart", SETTLE * 2, || {
        where_runs(&nodes, "one.service").len() == 1 && where_runs(&nodes, "two.service").len() == 1
    })
    .await;
    assert_eq!(reg.machines().await.unwrap().len(), 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn desired_states_load_start_stop_unload() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[]).await;
    let text = format!("{SERVICE}\n[Install]\nWantedBy=multi-user.target\n");
    submit(&reg, "cycle.service", &text, TargetState::Loaded).await;
    eventually("loaded, not started", SETTLE, || {
        a.systemd.loaded_units() == vec!["cycle.service"]
    })
    .await;
    assert!(a.systemd.active_units().is_empty());
    assert!(a.systemd.is_enabled("cycle.service"), "[Install] enables");

    reg.set_desired_state("cycle.service", TargetState::Launched)
        .await
        .unwrap();
    eventually("started", SETTLE, || {
        a.systemd.active_units() == vec!["cycle.service"]
    })
    .await;
    reg.set_desired_state("cycle.service", TargetState::Loaded)
        .await
        .unwrap();
    eventually("stopped", SETTLE, || a.systemd.active_units().is_empty()).await;
    reg.set_desired_state("cycle.service", TargetState::Inactive)
        .await
        .unwrap();
    eventually("unloaded", SETTLE, || a.systemd.loaded_units().is_empty()).await;
    reg.set_desired_state("cycle.service", TargetState::Launched)
        .await
        .unwrap();
    eventually("running again", SETTLE, || {
        a.systemd.active_units() == vec!["cycle.service"]
    })
    .await;
    reg.destroy_job("cycle.service").await.unwrap();
    eventually("gone", SETTLE, || a.systemd.loaded_units().is_empty()).await;
    let calls = a.systemd.calls();
    assert_eq!(
        calls.first().map(String::as_str),
        Some("load cycle.service enable")
    );
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicts_pins_metadata_and_replaces_on_real_etcd() {
    let etcd = TestEtcd::start();
    let reg = registry(&etcd).await;
    let a = start_node(&etcd, "m-a", &[("region", "eu"), ("disk", "ssd")]).await;
    let b = start_node(&etcd, "m-b", &[("region", "us"), ("disk", "ssd")]).await;
    let c = start_node(&etcd, "m-c", &[("region", "ap"), ("disk", "hdd")]).await;
    let nodes = [&a, &b, &c];

    // MachineID pins; metadata: same key repeated is OR, different keys AND.
    submit(
        &reg,
        "pinned.service",
        &with_fleet("MachineID=m-c"),
        TargetState::Launched,
    )
    .await;
    submit(
        &reg,
        "meta.service",
        &with_fleet(
            "MachineMetadata=region=us\nMachineMetadata=region=ap\nMachineMetadata=disk=ssd",
        ),
        TargetState::Launched,
    )
    .await;
    // One-way conflict: only `lonely` names `pinned`; and multiple Conflicts on one unit.
    submit(
        &reg,
        "lonely.service",
        &with_fleet("Conflicts=pinned.service\nConflicts=meta.service"),
        TargetState::Launched,
    )
    .await;
    eventually("pinned, meta and lonely placed", SETTLE, || {
        where_runs(&nodes, "pinned.service") == vec!["m-c"]
            && where_runs(&nodes, "meta.service") == vec!["m-b"]
            && where_runs(&nodes, "lonely.service") == vec!["m-a"]
    })
    .await;

    // Replaces: `new` replaces `lonely`, takes its machine, and `lonely` moves away — to a
    // machine without `pinned` or `meta`, and there is none, so it waits.
    submit(
        &reg,
        "new.service",
        &with_fleet("Replaces=lonely.service"),
        TargetState::Launched,
    )
    .await;
    eventually("new on lonely's machine, lonely waiting", SETTLE, || {
        where_runs(&nodes, "new.service") == vec!["m-a"]
            && where_runs(&nodes, "lonely.service").is_empty()
    })
    .await;

    // A Replaces cycle: at most one of the two runs, and it stays put.
    submit(
        &reg,
        "ping.service",
        &with_fleet("Replaces=pong.service"),
        TargetState::Launched,
    )
    .await;
    submit(
        &reg,
        "pong.service",
        &with_fleet("Replaces=ping.service"),
        TargetState::Launched,
    )
    .await;
    eventually("one of ping and pong", SETTLE, || {
        where_runs(&nodes, "ping.service").len() + where_runs(&nodes, "pong.service").len() == 1
    })
    .await;
    let before = running(&nodes);
    tokio::time::sleep(INTERVAL * 6).await;
    assert_eq!(running(&nodes), before, "the schedule kept changing");
    for n in [a, b, c] {
        n.stop().await;
    }
}
