//! A stage end to end on a temp root: datasource → parse → apply → provision.json, and a
//! second boot with the same config changes nothing while a changed config is applied.

use provisioner::datasource::config_drive::ConfigDrive;
use provisioner::datasource::file::LocalFile;
use provisioner::datasource::Datasource;
use provisioner::stage::{pending_scripts, run_with_sources, Stage, REPORT_FILE};
use serde_json::Value;
use std::fs;
use std::path::Path;

fn minimal_root(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nusers:x:100:\n").unwrap();
    fs::write(root.join("etc/gshadow"), "root:*::\nusers:*::\n").unwrap();
    fs::create_dir_all(root.join("var/home")).unwrap();
    std::os::unix::fs::symlink("var/home", root.join("home")).unwrap();
}

fn sources(path: &Path) -> Vec<Box<dyn Datasource>> {
    vec![Box::new(LocalFile::new(path))]
}

fn report(root: &Path) -> Value {
    serde_json::from_slice(&fs::read(root.join(REPORT_FILE)).unwrap()).unwrap()
}

const CONFIG: &str = "#cloud-config
hostname: node1.example
write_files:
  - path: /etc/motd
    content: hello
coreos:
  etcd2:
    name: node1
";

const ETCD2_DROPIN: &str = "run/systemd/system/etcd2.service.d/20-cloudinit.conf";

#[test]
fn applies_once_then_leaves_an_unchanged_config_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    minimal_root(&root);
    let user_data = dir.path().join("user-data");
    fs::write(&user_data, CONFIG).unwrap();

    let first = run_with_sources(Stage::Local, &root, &sources(&user_data));
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "node1\n"
    );
    assert_eq!(fs::read_to_string(root.join("etc/motd")).unwrap(), "hello");
    assert!(
        first.summary().contains("applied config from"),
        "{}",
        first.summary()
    );
    let json = report(&root);
    assert!(
        json["local"]["applied"]["changed"]
            .as_array()
            .unwrap()
            .len()
            >= 2,
        "{json}"
    );

    assert!(fs::read_to_string(root.join(ETCD2_DROPIN))
        .unwrap()
        .contains("ETCD_NAME=node1"));

    // The operator edits a file the config wrote and the machine reboots (/run is empty
    // again): the file is kept, the /run drop-in comes back.
    fs::write(root.join("etc/motd"), "edited").unwrap();
    fs::remove_dir_all(root.join("run")).unwrap();
    let second = run_with_sources(Stage::Local, &root, &sources(&user_data));
    assert!(second.unchanged_since_last_boot);
    assert_eq!(fs::read_to_string(root.join("etc/motd")).unwrap(), "edited");
    assert!(fs::read_to_string(root.join(ETCD2_DROPIN))
        .unwrap()
        .contains("ETCD_NAME=node1"));
    assert!(
        second.summary().contains("unchanged"),
        "{}",
        second.summary()
    );

    // A changed config is applied again.
    fs::write(&user_data, CONFIG.replace("hello", "hello again")).unwrap();
    let third = run_with_sources(Stage::Local, &root, &sources(&user_data));
    assert!(!third.unchanged_since_last_boot);
    assert_eq!(
        fs::read_to_string(root.join("etc/motd")).unwrap(),
        "hello again"
    );
}

#[test]
fn a_broken_config_is_reported_with_its_line_and_the_stage_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    minimal_root(&root);
    let user_data = dir.path().join("user-data");
    fs::write(&user_data, "#cloud-config\nhostname: ok\ncoreos:\n  units:\n    - name: a.service\n      command: launch\n").unwrap();
    let r = run_with_sources(Stage::Network, &root, &sources(&user_data));
    let json = report(&root);
    let diags = json["network"]["diagnostics"].as_array().unwrap();
    assert!(
        diags.iter().any(|d| d["kind"] == "error" && d["line"] == 6),
        "expected an error at line 6: {json}"
    );
    assert!(r.summary().contains("errors"), "{}", r.summary());
    // What is valid still applied.
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "ok\n"
    );
}

#[test]
fn no_datasource_is_recorded_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    minimal_root(&root);
    let r = run_with_sources(Stage::Local, &root, &sources(&dir.path().join("absent")));
    assert!(r.source.is_none());
    assert_eq!(
        r.summary(),
        "keel-provision: local stage: no datasource found"
    );
    assert!(report(&root)["local"].is_object());
}

#[test]
fn scripts_run_once_and_bootcmd_every_boot() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    minimal_root(&root);
    let user_data = dir.path().join("user-data");
    fs::write(
        &user_data,
        "#cloud-config\nbootcmd:\n  - echo early\nruncmd:\n  - echo once > /run/x\n  - [touch, /var/a b]\n",
    )
    .unwrap();
    run_with_sources(Stage::Local, &root, &sources(&user_data));
    let pending = pending_scripts(&root);
    assert_eq!(pending.len(), 2, "{pending:?}");
    // bootcmd first, from /run, with no record of having run.
    assert!(pending[0].path.starts_with("/run/keel/scripts/"));
    assert!(pending[0].unit.starts_with("keel-script-") && pending[0].unit.ends_with(".service"));
    assert_eq!(pending[0].ran_marker, None);
    let runcmd = &pending[1];
    assert!(runcmd.path.starts_with("/var/lib/keel/scripts/"));
    let body = fs::read_to_string(root.join(&runcmd.path[1..])).unwrap();
    assert_eq!(body, "#!/bin/sh\necho once > /run/x\ntouch '/var/a b'\n");

    // The network stage started the runcmd script and recorded it; on the next boot (same
    // config, /run empty again) only bootcmd is pending.
    let marker = runcmd.ran_marker.clone().unwrap();
    fs::write(root.join(&marker[1..]), "").unwrap();
    fs::remove_dir_all(root.join("run")).unwrap();
    let second = run_with_sources(Stage::Local, &root, &sources(&user_data));
    assert!(second.unchanged_since_last_boot);
    let pending = pending_scripts(&root);
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(pending[0].path.starts_with("/run/keel/scripts/"));
    assert!(root.join(&pending[0].path[1..]).is_file());
}

#[test]
fn network_metadata_is_part_of_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    minimal_root(&root);
    let drive = dir.path().join("drive");
    let latest = drive.join("openstack/latest");
    fs::create_dir_all(&latest).unwrap();
    fs::write(latest.join("user_data"), "#cloud-config\n").unwrap();
    let network_data = |address: &str| {
        format!(
            r#"{{"links": [{{"id": "l0", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}}],
                "networks": [{{"id": "n0", "type": "ipv4", "link": "l0", "ip_address": "{address}",
                               "netmask": "255.255.255.0"}}]}}"#
        )
    };
    let sources = || -> Vec<Box<dyn Datasource>> { vec![Box::new(ConfigDrive::from_dir(&drive))] };
    let file = root.join("etc/systemd/network/10-keel-fa163e000001.network");

    fs::write(latest.join("network_data.json"), network_data("10.77.0.11")).unwrap();
    let first = run_with_sources(Stage::Local, &root, &sources());
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    assert!(fs::read_to_string(&file)
        .unwrap()
        .contains("Address=10.77.0.11/24\n"));

    // Same drive on the next boot: the file is on STATE and stays as the operator left it.
    fs::write(&file, "edited").unwrap();
    let second = run_with_sources(Stage::Local, &root, &sources());
    assert!(second.unchanged_since_last_boot);
    assert_eq!(fs::read_to_string(&file).unwrap(), "edited");

    // Only the network metadata changed: that is a changed config, applied again.
    fs::write(latest.join("network_data.json"), network_data("10.77.0.12")).unwrap();
    let third = run_with_sources(Stage::Local, &root, &sources());
    assert!(!third.unchanged_since_last_boot);
    assert!(fs::read_to_string(&file)
        .unwrap()
        .contains("Address=10.77.0.12/24\n"));
}
