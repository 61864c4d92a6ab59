//! fleetctl and the HTTP API against fleetd's real store: the etcd registry (real etcd), with
//! three fleetd instances scheduling what fleetctl submits. The in-memory store in
//! tests/api.rs checks the API's shape; this checks the same calls on the real thing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use agent_common::testing::TestEtcd;
use common::*;
use fleet::api::client::{Client, ClientError};
use fleet::api::server::{serve_until, ApiConfig, Listener};
use fleet::model::{TargetState, UnitOption};

struct Api {
    endpoint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn serve_registry(etcd: &TestEtcd, token_limit: u16) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("fleet.sock");
    let listener = Listener::unix(&socket).unwrap();
    let endpoint = listener.endpoint();
    let store = Arc::new(registry(etcd).await);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_until(
        store,
        listener,
        ApiConfig { token_limit },
        async move {
            let _ = stopped.await;
        },
    ));
    Api {
        endpoint,
        stop,
        _dir: dir,
    }
}

async fn fleetctl(api: &Api, args: &[&str]) -> (i32, String, String) {
    let mut argv = vec![
        "fleetctl".to_string(),
        format!("--endpoint={}", api.endpoint),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = fleet::fleetctl::run_args(argv, &mut out, &mut err).await;
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

async fn ok(api: &Api, args: &[&str]) -> String {
    let (code, out, err) = fleetctl(api, args).await;
    assert_eq!(code, 0, "fleetctl {args:?}: {out}{err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleetctl_drives_a_three_machine_cluster() {
    let etcd = TestEtcd::start();
    let a = start_node(
        &etcd,
        "aaaaaaaa11111111aaaaaaaa11111111",
        &[("region", "eu")],
    )
    .await;
    let b = start_node(
        &etcd,
        "bbbbbbbb22222222bbbbbbbb22222222",
        &[("region", "us")],
    )
    .await;
    let c = start_node(
        &etcd,
        "cccccccc33333333cccccccc33333333",
        &[("region", "eu")],
    )
    .await;
    let nodes = [&a, &b, &c];
    let api = serve_registry(&etcd, 100).await;
    let reg = registry(&etcd).await;
    let deadline = std::time::Instant::now() + SETTLE;
    while reg.machines().await.unwrap().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "machines never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let machines = ok(&api, &["list-machines", "--no-legend", "--full"]).await;
    assert_eq!(machines.lines().count(), 3, "{machines}");
    assert!(
        machines.contains("aaaaaaaa11111111aaaaaaaa11111111"),
        "{machines}"
    );
    assert!(machines.contains("region=us"), "{machines}");
    let short = ok(&api, &["list-machines"]).await;
    assert!(short.starts_with("MACHINE"), "{short}");
    assert!(short.contains("aaaaaaaa..."), "{short}");

    // A template started as three instances that conflict: one per machine.
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("web@.service");
    std::fs::write(
        &template,
        "[Unit]\nDescription=web %i\n\n[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nConflicts=web@*.service\n",
    )
    .unwrap();
    let instances: Vec<String> = (1..=3)
        .map(|i| {
            dir.path()
                .join(format!("web@{i}.service"))
                .display()
                .to_string()
        })
        .collect();
    let mut args = vec!["start", "--no-block"];
    args.extend(instances.iter().map(String::as_str));
    ok(&api, &args).await;
    eventually("three web instances, one per machine", SETTLE, || {
        nodes.iter().all(|n| n.systemd.active_units().len() == 1)
    })
    .await;
    let units = ok(&api, &["list-units", "--no-legend"]).await;
    assert_eq!(units.lines().count(), 3, "{units}");
    assert!(units.lines().all(|l| l.contains("active")), "{units}");

    // cat round-trips the unit text.
    let cat = ok(&api, &["cat", "web@2.service"]).await;
    assert!(cat.contains("Description=web %i"), "{cat}");
    assert!(cat.contains("Conflicts=web@*.service"), "{cat}");

    // stop, unload, destroy.
    ok(&api, &["stop", "--no-block", "web@1.service"]).await;
    eventually("web@1 stopped", SETTLE, || {
        where_runs(&nodes, "web@1.service").is_empty()
    })
    .await;
    ok(&api, &["unload", "--no-block", "web@1.service"]).await;
    eventually("web@1 unloaded", SETTLE, || {
        nodes.iter().all(|n| {
            !n.systemd
                .loaded_units()
                .contains(&"web@1.service".to_string())
        })
    })
    .await;
    ok(&api, &["destroy", "web@1.service"]).await;
    let files = ok(
        &api,
        &["list-unit-files", "--no-legend", "--fields=unit,dstate"],
    )
    .await;
    assert!(!files.contains("web@1.service"), "{files}");
    let web2 = files
        .lines()
        .find(|l| l.starts_with("web@2.service"))
        .unwrap_or_else(|| panic!("web@2.service not listed: {files}"));
    assert!(web2.split_whitespace().any(|f| f == "launched"), "{files}");

    // A changed file is refused without --replace and taken with it.
    let single = dir.path().join("hello.service");
    std::fs::write(&single, "[Service]\nExecStart=/bin/sleep 1\n").unwrap();
    ok(&api, &["start", "--no-block", single.to_str().unwrap()]).await;
    std::fs::write(&single, "[Service]\nExecStart=/bin/sleep 2\n").unwrap();
    // As fleetctl: submitting a unit that exists is not an error and changes nothing.
    let (code, _, _) = fleetctl(&api, &["submit", single.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    assert!(ok(&api, &["cat", "hello.service"])
        .await
        .contains("sleep 1"));
    ok(
        &api,
        &["start", "--replace", "--no-block", single.to_str().unwrap()],
    )
    .await;
    assert!(ok(&api, &["cat", "hello.service"])
        .await
        .contains("sleep 2"));
    eventually("hello.service running", SETTLE, || {
        where_runs(&nodes, "hello.service").len() == 1
    })
    .await;

    let _ = api.stop.send(());
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_the_real_registry_answers_with_fleets_codes_and_pages() {
    let etcd = TestEtcd::start();
    let node = start_node(
        &etcd,
        "dddddddd44444444dddddddd44444444",
        &[("disk", "ssd")],
    )
    .await;
    let api = serve_registry(&etcd, 10).await;
    let reg = registry(&etcd).await;
    let deadline = std::time::Instant::now() + SETTLE;
    while reg.machines().await.unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the machine never registered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = Client::connect(&api.endpoint).unwrap();
    let options = vec![UnitOption {
        section: "Service".into(),
        name: "ExecStart".into(),
        value: "/bin/true".into(),
    }];

    // 201 created, then identical options with a desired state is an update, other options
    // a conflict (409), an unknown unit a 404.
    assert!(client
        .create_unit("one.service", &options, TargetState::Loaded)
        .await
        .unwrap());
    client
        .set_unit_target_state("one.service", TargetState::Launched)
        .await
        .unwrap();
    let other = vec![UnitOption {
        value: "/bin/false".into(),
        ..options[0].clone()
    }];
    let err = client
        .create_unit("one.service", &other, TargetState::Loaded)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { code: 409, .. }), "{err:?}");
    assert!(client.unit("none.service").await.unwrap().is_none());
    let err = client.destroy_unit("none.service").await.unwrap_err();
    assert!(matches!(err, ClientError::Api { code: 404, .. }), "{err:?}");
    // An invalid [X-Fleet] section is a 400.
    let bad = vec![
        options[0].clone(),
        UnitOption {
            section: "X-Fleet".into(),
            name: "Global".into(),
            value: "true".into(),
        },
        UnitOption {
            section: "X-Fleet".into(),
            name: "MachineOf".into(),
            value: "one.service".into(),
        },
    ];
    let err = client
        .create_unit("bad.service", &bad, TargetState::Loaded)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Api { code: 400, .. }), "{err:?}");

    // 25 units with a page size of 10: three pages, all units listed once.
    for i in 0..24 {
        client
            .create_unit(&format!("u{i:02}.service"), &options, TargetState::Inactive)
            .await
            .unwrap();
    }
    let first = client.unit_page(None).await.unwrap();
    assert_eq!(first.units.len(), 10);
    assert!(first.next_page_token.is_some());
    let all = client.units().await.unwrap();
    assert_eq!(all.len(), 25);
    let mut names: Vec<_> = all.iter().map(|u| u.name.clone()).collect();
    names.dedup();
    assert_eq!(names.len(), 25);

    // The scheduled unit's state and machine show up; machine metadata can be patched.
    eventually_async(&client).await;
    client
        .set_machine_metadata("dddddddd44444444dddddddd44444444", "rack", "r1")
        .await
        .unwrap();
    let machines = client.machines().await.unwrap();
    assert_eq!(
        machines[0].metadata.get("rack").map(String::as_str),
        Some("r1")
    );
    assert_eq!(
        machines[0].metadata.get("disk").map(String::as_str),
        Some("ssd")
    );
    client
        .delete_machine_metadata("dddddddd44444444dddddddd44444444", "rack")
        .await
        .unwrap();
    assert!(!client.machines().await.unwrap()[0]
        .metadata
        .contains_key("rack"));

    let _ = api.stop.send(());
    node.stop().await;
}

/// Waits for one.service to be launched on the only machine, as the API reports it.
async fn eventually_async(client: &Client) {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let unit = client.unit("one.service").await.unwrap().unwrap();
        let states = client.unit_states().await.unwrap();
        if unit.current_state == Some(TargetState::Launched)
            && unit.machine_id.as_deref() == Some("dddddddd44444444dddddddd44444444")
            && states
                .iter()
                .any(|s| s.name == "one.service" && s.active_state == "active")
        {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{unit:?} {states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
