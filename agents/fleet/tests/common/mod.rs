//! The test cluster shared by the multi-fleetd tests: a real etcd, fleetd instances in this
//! process with recording systemds, and waiting helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_common::testing::TestEtcd;
use fleet::agent::recording::RecordingSystemd;
use fleet::daemon::{run_daemon, DaemonConfig};
use fleet::model::{Machine, TargetState};
use fleet::registry::Registry;
use fleet::unit::UnitFile;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const TTL: Duration = Duration::from_secs(2);
pub const INTERVAL: Duration = Duration::from_millis(300);
pub const PREFIX: &str = "/_coreos.com/fleet/";

pub struct Node {
    pub id: String,
    pub systemd: Arc<RecordingSystemd>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    _units: tempfile::TempDir,
}

impl Node {
    /// Stops fleetd cleanly: its lease is revoked, so it leaves at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Kills fleetd abruptly: its lease runs out after the TTL, as after a crash.
    pub fn kill(self) {
        self.task.abort();
    }
}

pub async fn registry(etcd: &TestEtcd) -> Registry {
    Registry::new(etcd.config().connect().await.unwrap(), PREFIX)
}

pub async fn start_node(etcd: &TestEtcd, id: &str, metadata: &[(&str, &str)]) -> Node {
    let reg = registry(etcd).await;
    let units = tempfile::tempdir().unwrap();
    let systemd = Arc::new(RecordingSystemd::new());
    let (stop, stopped) = watch::channel(false);
    let config = DaemonConfig {
        machine: Machine {
            id: id.to_string(),
            public_ip: format!("10.0.0.{}", id.len()),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        agent_ttl: TTL,
        reconcile_interval: INTERVAL,
        disable_engine: false,
        unit_dir: units.path().to_path_buf(),
    };
    let backend = Arc::clone(&systemd);
    let task = tokio::spawn(async move {
        run_daemon(reg, config, backend, stopped).await.unwrap();
    });
    Node {
        id: id.to_string(),
        systemd,
        stop,
        task,
        _units: units,
    }
}

pub async fn submit(reg: &Registry, name: &str, text: &str, desired: TargetState) {
    let file = UnitFile::parse(text).unwrap();
    reg.create_job(name, &file.to_text(), &file.hash(), desired)
        .await
        .unwrap();
}

pub const SERVICE: &str = "[Service]\nExecStart=/bin/sleep infinity\n";

pub fn with_fleet(x_fleet: &str) -> String {
    format!("{SERVICE}\n[X-Fleet]\n{x_fleet}\n")
}

/// Which node runs which units, by node ID.
pub fn running(nodes: &[&Node]) -> BTreeMap<String, Vec<String>> {
    nodes
        .iter()
        .map(|n| (n.id.clone(), n.systemd.active_units()))
        .collect()
}

/// Where `unit` runs, if on exactly one node.
pub fn where_runs(nodes: &[&Node], unit: &str) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.systemd.active_units().iter().any(|u| u == unit))
        .map(|n| n.id.clone())
        .collect()
}

pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub const SETTLE: Duration = Duration::from_secs(20);
