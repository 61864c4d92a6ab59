//! The image's `/usr/lib/keel/require-config`, the ExecCondition= of etcd (etcd2), fleet and
//! flanneld: run here with the environments those units would give it. The VM test
//! (qemu-tests/tests/fleet.rs) shows systemd skipping an unconfigured flanneld with its message.

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../overlays/agents/usr/lib/keel/require-config")
}

/// Exit code and stderr of `require-config <unit>` with exactly `env` set (and PATH).
fn run(unit: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new("sh")
        .arg(script())
        .arg(unit)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .expect("running sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn etcd_needs_more_than_the_units_own_defaults() {
    // Debian's etcd.service sets these two itself: they are not configuration.
    let (code, message) = run(
        "etcd",
        &[
            ("ETCD_NAME", "node1"),
            ("ETCD_DATA_DIR", "/var/lib/etcd/default"),
        ],
    );
    assert_eq!(code, 1, "{message}");
    assert!(
        message.contains("etcd: not started: no configuration"),
        "{message}"
    );
    assert!(message.contains("coreos.etcd2"), "{message}");
    let (code, _) = run(
        "etcd",
        &[
            ("ETCD_NAME", "node1"),
            ("ETCD_INITIAL_CLUSTER", "node1=http://10.0.0.1:2380"),
        ],
    );
    assert_eq!(code, 0);
    let (code, _) = run(
        "etcd",
        &[("ETCD_DISCOVERY", "http://10.0.2.100:2379/v2/keys/d/x")],
    );
    assert_eq!(code, 0);
}

#[test]
fn fleet_and_flanneld_need_their_variables() {
    let (code, message) = run("fleet", &[("ETCD_NAME", "x")]);
    assert_eq!(code, 1);
    assert!(message.contains("coreos.fleet"), "{message}");
    assert_eq!(run("fleet", &[("FLEET_METADATA", "role=node")]).0, 0);

    let (code, message) = run("flanneld", &[]);
    assert_eq!(code, 1);
    assert!(
        message.contains("flanneld: not started: no configuration"),
        "{message}"
    );
    assert_eq!(run("flanneld", &[("FLANNELD_IFACE", "10.77.0.11")]).0, 0);
    assert_eq!(
        run("flanneld", &[("FLANNELD_SUBNET_LEASE_TTL", "60s")]).0,
        0
    );
    // The unit's own FLANNEL_OPTS (--ip-masq=true) is no configuration; other flags are.
    assert_eq!(run("flanneld", &[("FLANNEL_OPTS", "--ip-masq=true")]).0, 1);
    assert_eq!(
        run(
            "flanneld",
            &[("FLANNEL_OPTS", "--etcd-endpoints=http://10.77.0.11:2379")]
        )
        .0,
        0
    );
}

#[test]
fn an_unknown_unit_is_a_usage_error_not_a_skip() {
    // Exit 2..254 would also skip; 2 is kept apart from 1 so a typo in a unit file shows.
    let (code, message) = run("etcd3", &[]);
    assert_eq!(code, 2);
    assert!(message.contains("unknown unit"), "{message}");
}
