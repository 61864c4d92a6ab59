//! `keel cluster up` and `keel cluster down` as a person runs them: the supervisor in the
//! background, the printed report, a second `up` refused, `down` stopping every VM. One
//! machine with a one-member cloud-config keeps it short; qemu-tests/tests/cluster.rs boots
//! three through the same library.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// cluster-node.yaml cut down to one member.
const ONE_NODE: &str = r#"#cloud-config
coreos:
  etcd2:
    advertise_client_urls: http://$private_ipv4:2379
    initial_advertise_peer_urls: http://$private_ipv4:2380
    listen_client_urls: http://0.0.0.0:2379
    listen_peer_urls: http://$private_ipv4:2380
    initial_cluster: node1=http://10.77.0.11:2380
  fleet:
    public_ip: $private_ipv4
    metadata: role=solo
  flannel:
    interface: $private_ipv4
  units:
    - name: etcd2.service
      command: start
    - name: fleet.service
      command: start
    - name: flanneld.service
      command: start
      drop-ins:
        - name: 50-network-config.conf
          content: |
            [Service]
            ExecStartPre=/usr/bin/etcdctl put /coreos.com/network/config '{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}'
"#;

fn keel(args: &[&str]) -> Output {
    Command::new(KEEL)
        .args(args)
        .output()
        .expect("running keel")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn out_dir() -> PathBuf {
    std::env::var_os("KEEL_OUT").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../out"),
        PathBuf::from,
    )
}

/// Processes whose command line mentions `needle` (the cluster's folder).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[test]
fn up_names_a_missing_cloud_config_and_down_says_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let cluster_dir = cluster_dir.to_str().unwrap();
    let out = keel(&[
        "cluster",
        "up",
        "2",
        "--config",
        "/nonexistent/node.yaml",
        "--dir",
        cluster_dir,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/node.yaml"),
        "{}",
        text(&out)
    );
    let out = keel(&["cluster", "down", "--dir", cluster_dir]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no cluster is running"),
        "{}",
        text(&out)
    );
}

#[test]
#[ignore = "boots a VM under QEMU: run by make test"]
fn up_prints_the_formed_cluster_and_down_stops_it() {
    let image = out_dir().join("keel.qcow2");
    assert!(
        image.is_file(),
        "{} is missing: run `make image`",
        image.display()
    );
    let key = std::env::var("KEEL_TEST_KEY")
        .unwrap_or_else(|_| "/var/cache/keel/test-key/id_ed25519".to_string());
    let dir = tempfile::Builder::new()
        .prefix("keel-cluster-cli-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let config = dir.path().join("one-node.yaml");
    std::fs::write(&config, ONE_NODE).unwrap();
    let cluster_dir = dir.path().join("cluster");
    let cluster_dir = cluster_dir.to_str().unwrap();
    let up = [
        "cluster",
        "up",
        "1",
        "--config",
        config.to_str().unwrap(),
        "--image",
        image.to_str().unwrap(),
        "--ssh-key",
        &key,
        "--dir",
        cluster_dir,
    ];

    let out = keel(&up);
    let printed = text(&out);
    let stop = || keel(&["cluster", "down", "--dir", cluster_dir]);
    if !out.status.success() {
        stop();
        panic!("keel cluster up failed:\n{printed}");
    }
    for expected in [
        "$ etcdctl member list",
        ", started, node1, http://10.77.0.11:2380",
        "$ fleetctl list-machines",
        "10.77.0.11\trole=solo",
        "flannel subnets:",
        "node1    10.1.",
        "ssh -i ",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in:\n{printed}");
    }
    // The machine runs on after `up` returned; a second `up` on the same folder is refused.
    assert!(!processes_mentioning(cluster_dir).is_empty());
    let again = keel(&up);
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let down = stop();
    assert!(down.status.success(), "{}", text(&down));
    let left = processes_mentioning(cluster_dir);
    assert!(left.is_empty(), "still running: {left:#?}");
    assert!(!Path::new(cluster_dir).join("state.json").exists());
}
