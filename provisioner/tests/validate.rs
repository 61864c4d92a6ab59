//! The cloud-config parser and validator: real Container Linux configs, each diagnostic class
//! with its line, user-data format detection, and the `keel-provision validate` command.

use std::io::Write;
use std::process::Command as Process;

use provisioner::cloudconfig::{
    parse_cloud_config, validate, Command, Diagnostic, Encoding, Kind, UnitCommand, UserData,
};
use provisioner::userdata::parse_user_data;

/// A typical Container Linux cluster node, as written for coreos-cloudinit.
const CLUSTER_NODE: &str = r#"#cloud-config

hostname: node1
ssh_authorized_keys:
  - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests core@example"
users:
  - name: elroy
    passwd: "$6$5s2u6/jR$un0AvWnqilcgaNB3Mkxd5yYv6mTlWfOoCYHZmfi3LDKVltj"
    groups:
      - sudo
      - docker
    ssh-authorized-keys:
      - "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC0g+ZTxC7weoIJLUafOgrm+h elroy"
write_files:
  - path: /etc/resolv.conf
    permissions: 0644
    owner: root
    content: |
      nameserver 8.8.8.8
  - path: "/tmp/or_like_this"
    permissions: "0644"
    owner: "root"
    encoding: "gzip+base64"
    content: |
      H4sIAKgdh1QAAwtITM5WyK1USMqvUCjPLMlQSMssS1VIya9KzVPIySwszS9SyCpNLwYARQFQ5CcAAAA=
  - path: "/tmp/todolist"
    encoding: "base64"
    content: |
      UGFjayBteSBib3ggd2l0aCBmaXZlIGRvemVuIGxpcXVvciBqdWdz
manage_etc_hosts: localhost
coreos:
  etcd2:
    discovery: "https://discovery.etcd.io/<token>"
    advertise-client-urls: "http://$public_ipv4:2379"
    initial-advertise-peer-urls: "http://$private_ipv4:2380"
    listen-client-urls: "http://0.0.0.0:2379,http://0.0.0.0:4001"
    listen-peer-urls: "http://$private_ipv4:2380,http://$private_ipv4:7001"
    heartbeat-interval: 100
  fleet:
    public-ip: "$public_ipv4"
    metadata: "region=us-west"
  flannel:
    etcd_prefix: "/coreos.com/network2"
  locksmith:
    window-start: Thu 04:00
    window-length: 1h
  update:
    reboot-strategy: etcd-lock
    group: stable
  units:
    - name: etcd2.service
      command: start
    - name: fleet.service
      command: start
    - name: docker.service
      drop-ins:
        - name: 50-insecure-registry.conf
          content: |
            [Service]
            Environment=DOCKER_OPTS='--insecure-registry="10.0.1.0/24"'
    - name: docker-redis.service
      enable: true
      command: reload-or-try-restart
      content: |
        [Unit]
        Description=Redis container

        [Service]
        ExecStart=/usr/bin/docker start -a redis_server

        [Install]
        WantedBy=multi-user.target
"#;

fn config(text: &str) -> provisioner::cloudconfig::CloudConfig {
    let (config, diagnostics) = parse_cloud_config(text);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    config
}

/// Validates `text` and returns its diagnostics as "line: kind: message" strings.
fn findings(text: &str) -> Vec<Diagnostic> {
    validate(text.as_bytes())
}

/// The one diagnostic of `kind` the text produces, checked to be on `line`, mentioning `needle`.
#[track_caller]
fn expect_one(text: &str, kind: Kind, line: usize, needle: &str) -> Diagnostic {
    let found = findings(text);
    let matching: Vec<&Diagnostic> = found.iter().filter(|d| d.kind == kind).collect();
    assert_eq!(matching.len(), 1, "expected one {kind}, got {found:#?}");
    let diagnostic = matching[0].clone();
    assert_eq!(diagnostic.line, line, "{diagnostic}");
    assert!(
        diagnostic.message.contains(needle),
        "{diagnostic} should mention {needle:?}"
    );
    diagnostic
}

#[test]
fn container_linux_cluster_config_validates_clean() {
    assert_eq!(findings(CLUSTER_NODE), Vec::<Diagnostic>::new());
    let config = config(CLUSTER_NODE);
    assert_eq!(config.hostname.as_ref().unwrap().value, "node1");
    assert_eq!(config.hostname.as_ref().unwrap().line, 3);
    assert_eq!(config.ssh_authorized_keys.len(), 1);
    let elroy = &config.users[0];
    assert_eq!(elroy.name, "elroy");
    assert_eq!(elroy.line, 7);
    assert_eq!(elroy.groups, ["sudo", "docker"]);
    assert_eq!(elroy.ssh_authorized_keys.len(), 1);
    assert!(elroy.passwd.as_ref().unwrap().starts_with("$6$"));

    assert_eq!(config.write_files.len(), 3);
    assert_eq!(config.write_files[0].permissions, Some(0o644));
    assert_eq!(config.write_files[0].content, "nameserver 8.8.8.8\n");
    assert_eq!(config.write_files[1].permissions, Some(0o644));
    assert_eq!(config.write_files[1].encoding, Some(Encoding::GzipBase64));
    assert!(!config.write_files[1].decoded_content().unwrap().is_empty());
    assert_eq!(
        config.write_files[2].decoded_content().unwrap(),
        b"Pack my box with five dozen liquor jugs"
    );
    assert_eq!(config.manage_etc_hosts.as_ref().unwrap().value, "localhost");

    let etcd2 = &config.coreos.etcd2;
    assert_eq!(etcd2[1].key, "advertise_client_urls");
    assert_eq!(
        etcd2[1].value, "http://$public_ipv4:2379",
        "left for apply to substitute"
    );
    assert_eq!(etcd2[5].key, "heartbeat_interval");
    assert_eq!(etcd2[5].value, "100");
    assert_eq!(config.coreos.fleet[0].key, "public_ip");
    assert_eq!(config.coreos.locksmith[0].value, "Thu 04:00");
    let update = config.coreos.update.as_ref().unwrap();
    assert_eq!(update.reboot_strategy.as_deref(), Some("etcd-lock"));
    assert_eq!(update.group.as_deref(), Some("stable"));

    let units = &config.coreos.units;
    assert_eq!(units.len(), 4);
    assert_eq!(units[0].command, Some(UnitCommand::Start));
    assert_eq!(units[2].drop_ins[0].name, "50-insecure-registry.conf");
    assert!(units[2].drop_ins[0].content.contains("DOCKER_OPTS"));
    assert!(units[3].enable);
    assert_eq!(units[3].command, Some(UnitCommand::ReloadOrTryRestart));
    assert!(units[3].content.as_ref().unwrap().contains("WantedBy="));
}

#[test]
fn dash_and_underscore_spellings_give_the_same_model() {
    let dashes = "#cloud-config\nssh-authorized-keys: [k]\nmanage-etc-hosts: localhost\nusers:\n  - name: a\n    primary-group: g\n    no-create-home: true\n    no-user-group: yes\n    no-log-init: on\n    ssh-authorized-keys: [k2]\ncoreos:\n  etcd2:\n    data-dir: /var/lib/etcd2\n  update:\n    reboot-strategy: \"off\"\n  units:\n    - name: a.service\n      drop-ins:\n        - name: x.conf\n          content: \"[Service]\"\n";
    let underscores = dashes
        .replace("ssh-authorized-keys", "ssh_authorized_keys")
        .replace("manage-etc-hosts", "manage_etc_hosts")
        .replace("primary-group", "primary_group")
        .replace("no-create-home", "no_create_home")
        .replace("no-user-group", "no_user_group")
        .replace("no-log-init", "no_log_init")
        .replace("data-dir", "data_dir")
        .replace("reboot-strategy", "reboot_strategy")
        .replace("drop-ins", "drop_ins");
    let a = config(dashes);
    let b = config(&underscores);
    assert_eq!(a, b);
    assert!(a.users[0].no_create_home && a.users[0].no_user_group && a.users[0].no_log_init);
    assert_eq!(a.coreos.etcd2[0].key, "data_dir");
    assert_eq!(a.coreos.units[0].drop_ins.len(), 1);
}

#[test]
fn cloud_init_extras_are_read() {
    let config = config(
        "#cloud-config\nruncmd:\n  - echo hi\n  - [ls, -l, /]\nbootcmd:\n  - true\nwrite_files:\n  - path: /etc/motd\n    append: true\n    content: more\n",
    );
    assert_eq!(config.runcmd[0].value, Command::Shell("echo hi".into()));
    assert_eq!(config.runcmd[0].line, 3);
    assert_eq!(
        config.runcmd[1].value,
        Command::Argv(vec!["ls".into(), "-l".into(), "/".into()])
    );
    assert_eq!(config.bootcmd.len(), 1);
    assert!(config.write_files[0].append);
}

#[test]
fn permissions_are_the_written_octal_digits() {
    for (written, mode) in [
        ("0644", 0o644),
        ("\"0644\"", 0o644),
        ("\"644\"", 0o644),
        ("0755", 0o755),
        ("'0600'", 0o600),
        ("420", 0o420),
    ] {
        let text =
            format!("#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: {written}\n");
        assert_eq!(
            config(&text).write_files[0].permissions,
            Some(mode),
            "{written}"
        );
    }
}

#[test]
fn binary_tagged_content_with_gzip_encoding() {
    let text = "#cloud-config\nwrite_files:\n  - path: /tmp/like_this\n    encoding: gzip\n    content: !!binary |\n      H4sIAKgdh1QAAwtITM5WyK1USMqvUCjPLMlQSMssS1VIya9KzVPIySwszS9SyCpNLwYARQFQ5CcAAAA=\n";
    let config = config(text);
    let decoded = config.write_files[0].decoded_content().unwrap();
    assert!(!decoded.is_empty());
}

#[test]
fn yaml_syntax_error_is_an_error_on_its_line() {
    let found =
        findings("#cloud-config\nhostname: a\nusers:\n  - name: \"unclosed\n    groups: [a\n");
    assert!(found.iter().any(Diagnostic::is_error), "{found:?}");
    let found = findings("#cloud-config\nhostname: a\ncoreos:\n  units:\n  - name: a\n bad: 1\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].is_error());
    assert_eq!(found[0].line, 6, "{found:?}");
    assert!(found[0].message.starts_with("YAML syntax error"));
}

#[test]
fn tabs_as_indentation_are_a_syntax_error() {
    let found = findings("#cloud-config\ncoreos:\n\tunits: []\n");
    assert!(
        found.iter().any(|d| d.is_error() && d.line == 3),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_are_warnings_with_their_path() {
    let text = "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n    - name: b.service\n      comand: start\n";
    let diagnostic = expect_one(text, Kind::Warning, 6, "coreos.units[1].comand");
    assert!(
        diagnostic.message.contains("did you mean \"command\""),
        "{diagnostic}"
    );
    expect_one(
        "#cloud-config\nhostnam: x\n",
        Kind::Warning,
        2,
        "\"hostnam\"",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  etcd2:\n    nmae: x\n",
        Kind::Warning,
        4,
        "coreos.etcd2.nmae",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  fleet:\n    bogus: x\n",
        Kind::Warning,
        4,
        "coreos.fleet.bogus",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  flannel:\n    bogus: x\n",
        Kind::Warning,
        4,
        "coreos.flannel.bogus",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  locksmith:\n    bogus: x\n",
        Kind::Warning,
        4,
        "coreos.locksmith.bogus",
    );
    expect_one(
        "#cloud-config\nusers:\n  - name: a\n    sudo: ALL\n",
        Kind::Warning,
        4,
        "users[0].sudo",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /a\n    mode: 1\n",
        Kind::Warning,
        4,
        "write_files[0].mode",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  oem:\n    colour: x\n",
        Kind::Warning,
        4,
        "coreos.oem.colour",
    );
}

#[test]
fn wrong_types_are_warnings_naming_the_key() {
    let text = "#cloud-config\nhostname: [a, b]\nusers:\n  - name: a\n    groups: wheel\n    system: maybe\ncoreos:\n  units: {name: a}\n";
    let found = findings(text);
    let lines: Vec<(usize, Kind)> = found.iter().map(|d| (d.line, d.kind)).collect();
    assert_eq!(
        lines,
        [
            (2, Kind::Warning),
            (5, Kind::Warning),
            (6, Kind::Warning),
            (8, Kind::Warning)
        ],
        "{found:#?}"
    );
    assert!(found[0]
        .message
        .contains("\"hostname\" should be a string, not a list"));
    assert!(found[1].message.contains("users[0].groups"));
    assert!(found[2].message.contains("users[0].system"));
    assert!(found[3].message.contains("coreos.units"));
    let (config, _) = parse_cloud_config(text);
    assert!(config.hostname.is_none() && config.users[0].groups.is_empty());
}

#[test]
fn deprecated_keys_are_warnings() {
    expect_one(
        "#cloud-config\ncoreos:\n  etcd:\n    name: node1\n",
        Kind::Warning,
        3,
        "coreos.etcd is deprecated; use coreos.etcd2",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  update:\n    reboot-strategy: best-effort\n",
        Kind::Warning,
        4,
        "best-effort",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  etcd2:\n    ca-file: /x\n",
        Kind::Warning,
        4,
        "deprecated",
    );
}

#[test]
fn invalid_values_are_errors_on_their_line() {
    expect_one(
        "#cloud-config\ncoreos:\n  units:\n    - name: a.service\n      command: begin\n",
        Kind::Error,
        5,
        "not one of start, stop, restart",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: 0999\n",
        Kind::Error,
        4,
        "not an octal file mode",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    permissions: rw-r--r--\n",
        Kind::Error,
        4,
        "not an octal file mode",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  update:\n    reboot_strategy: sometimes\n",
        Kind::Error,
        4,
        "not one of etcd-lock, reboot, off",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: base64\n    content: \"not base64!\"\n",
        Kind::Error,
        5,
        "cannot be decoded",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: gzip\n    content: plain text\n",
        Kind::Error,
        5,
        "cannot be decoded",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: rot13\n    content: x\n",
        Kind::Error,
        4,
        "rot13",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /usr/bin/evil\n    content: x\n",
        Kind::Error,
        3,
        "/usr is read-only on Keel",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /usr\n",
        Kind::Error,
        3,
        "/usr is read-only on Keel",
    );
    expect_one(
        "#cloud-config\nwrite_files:\n  - path: /etc/../usr/lib/x\n",
        Kind::Error,
        3,
        "/usr is read-only on Keel",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  units:\n    - command: start\n",
        Kind::Error,
        4,
        "coreos.units[0]\" has no name",
    );
    expect_one(
        "#cloud-config\nusers:\n  - groups: [a]\n",
        Kind::Error,
        3,
        "users[0]\" has no name",
    );
    expect_one(
        "#cloud-config\ncoreos:\n  etcd2:\n    proxy: sometimes\n",
        Kind::Error,
        4,
        "on, off, readonly",
    );
    expect_one(
        "#cloud-config\nmanage_etc_hosts: template\n",
        Kind::Error,
        2,
        "localhost",
    );
    // /usrlocal is not /usr.
    assert!(findings("#cloud-config\nwrite_files:\n  - path: /usrlocal/x\n").is_empty());
}

#[test]
fn invalid_items_are_left_out_of_the_model() {
    let (config, diagnostics) = parse_cloud_config(
        "#cloud-config\nwrite_files:\n  - path: /usr/x\n  - path: /etc/ok\ncoreos:\n  units:\n    - command: start\n    - name: ok.service\n      command: nope\n",
    );
    assert_eq!(diagnostics.iter().filter(|d| d.is_error()).count(), 3);
    assert_eq!(config.write_files.len(), 1);
    assert_eq!(config.write_files[0].path, "/etc/ok");
    assert_eq!(config.coreos.units.len(), 1);
    assert_eq!(config.coreos.units[0].command, None);
}

#[test]
fn diagnostics_are_sorted_by_line() {
    let found = findings("#cloud-config\nzzz: 1\nhostname: [x]\naaa: 2\n");
    let lines: Vec<usize> = found.iter().map(|d| d.line).collect();
    assert_eq!(lines, [2, 3, 4]);
}

#[test]
fn display_and_json_shapes() {
    let diagnostic = Diagnostic::error(3, "bad");
    assert_eq!(diagnostic.to_string(), "line 3: error: bad");
    assert_eq!(
        Diagnostic::warning(1, "w").to_string(),
        "line 1: warning: w"
    );
    assert_eq!(Diagnostic::info(2, "i").to_string(), "line 2: info: i");
    assert_eq!(
        serde_json::to_string(&diagnostic).unwrap(),
        r#"{"kind":"error","line":3,"message":"bad"}"#
    );
}

// --- user-data format detection ---

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn detects_scripts_empty_and_garbage() {
    let (data, diagnostics) = parse_user_data(b"#!/bin/sh\necho hi\n");
    assert_eq!(data, UserData::Script(b"#!/bin/sh\necho hi\n".to_vec()));
    assert!(diagnostics.is_empty());
    assert_eq!(parse_user_data(b"").0, UserData::Empty);
    assert_eq!(parse_user_data(b"  \n\t\n").0, UserData::Empty);
    let (data, diagnostics) = parse_user_data(b"hostname: x\n");
    assert_eq!(data, UserData::Empty);
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(
        diagnostics[0].to_string(),
        "line 1: error: user-data must start with #cloud-config or #!, or be gzip or multipart MIME"
    );
    // Trailing spaces and CRLF after the header are fine, as in coreos-cloudinit.
    let (data, diagnostics) = parse_user_data(b"#cloud-config  \r\nhostname: x\r\n");
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let UserData::CloudConfig(config) = data else {
        panic!()
    };
    assert_eq!(config.hostname.unwrap().value, "x");
}

#[test]
fn detects_gzip() {
    let (data, diagnostics) = parse_user_data(&gzip(b"#cloud-config\nhostname: zipped\n"));
    assert!(diagnostics.is_empty());
    let UserData::CloudConfig(config) = data else {
        panic!("{data:?}")
    };
    assert_eq!(config.hostname.unwrap().value, "zipped");
    let (data, _) = parse_user_data(&gzip(b"#!/bin/bash\ntrue\n"));
    assert!(matches!(data, UserData::Script(_)));
    let (_, diagnostics) = parse_user_data(&[0x1f, 0x8b, 1, 2, 3]);
    assert!(diagnostics[0].is_error() && diagnostics[0].message.contains("gzip"));
}

const MULTIPART: &str = "Content-Type: multipart/mixed; boundary=\"===BOUNDARY==\"\nMIME-Version: 1.0\n\n--===BOUNDARY==\nContent-Type: text/cloud-config; charset=\"us-ascii\"\nMIME-Version: 1.0\n\n#cloud-config\nhostname: multi\ncoreos:\n  units:\n    - name: x.service\n      command: launch\n\n--===BOUNDARY==\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\nContent-Transfer-Encoding: base64\n\nIyEvYmluL3NoCmVjaG8gaGkK\n--===BOUNDARY==\nContent-Type: text/x-include-url\n\nhttp://example.com/x\n--===BOUNDARY==--\n";

#[test]
fn detects_multipart_mime() {
    let (data, diagnostics) = parse_user_data(MULTIPART.as_bytes());
    let UserData::Multipart(parts) = data else {
        panic!("{data:?}")
    };
    assert_eq!(parts.len(), 2, "{parts:?}");
    let UserData::CloudConfig(config) = &parts[0] else {
        panic!()
    };
    assert_eq!(config.hostname.as_ref().unwrap().value, "multi");
    assert_eq!(
        config.hostname.as_ref().unwrap().line,
        9,
        "lines are lines of the whole file"
    );
    assert_eq!(parts[1], UserData::Script(b"#!/bin/sh\necho hi\n".to_vec()));
    // The bad command is reported on its line in the whole document; the unsupported part too.
    let lines: Vec<(usize, Kind)> = diagnostics.iter().map(|d| (d.line, d.kind)).collect();
    assert_eq!(
        lines,
        [(13, Kind::Error), (23, Kind::Warning)],
        "{diagnostics:#?}"
    );
}

#[test]
fn multipart_crlf_and_base64_cloud_config() {
    let part = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "#cloud-config\nhostname: [oops]\n",
    );
    let text = format!(
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/cloud-config\r\nContent-Transfer-Encoding: base64\r\n\r\n{part}\r\n--b--\r\n"
    );
    let (data, diagnostics) = parse_user_data(text.as_bytes());
    assert!(
        matches!(&data, UserData::Multipart(parts) if parts.len() == 1),
        "{data:?}"
    );
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0].line, 8);
    assert!(
        diagnostics[0].message.contains("line 2"),
        "{}",
        diagnostics[0]
    );
}

#[test]
fn multipart_without_boundary_is_an_error() {
    let (_, diagnostics) =
        parse_user_data(b"Content-Type: multipart/mixed\n\n--x\n\n#cloud-config\n--x--\n");
    assert!(
        diagnostics.iter().any(Diagnostic::is_error),
        "{diagnostics:?}"
    );
}

#[test]
fn invalid_utf8_is_an_error_at_its_line() {
    let (data, diagnostics) = parse_user_data(b"#cloud-config\nhostname: a\nusers: \xff\xfe\n");
    let UserData::CloudConfig(config) = data else {
        panic!()
    };
    assert_eq!(config, Default::default());
    assert!(diagnostics[0].is_error());
    assert_eq!(diagnostics[0].line, 3);
    assert!(diagnostics[0].message.contains("UTF-8"));
}

// --- the command ---

fn keel_provision(args: &[&str]) -> (i32, String, String) {
    let output = Process::new(env!("CARGO_BIN_EXE_keel-provision"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn validate_command_exit_codes_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.yaml");
    std::fs::write(&clean, CLUSTER_NODE).unwrap();
    let (code, stdout, _) = keel_provision(&["validate", clean.to_str().unwrap()]);
    assert_eq!((code, stdout.as_str()), (0, ""));

    let warned = dir.path().join("warned.yaml");
    std::fs::write(&warned, "#cloud-config\nhostnam: x\n").unwrap();
    let (code, stdout, _) = keel_provision(&["validate", warned.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with("line 2: warning: unknown key \"hostnam\""),
        "{stdout}"
    );

    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "#cloud-config\nhostnam: x\ncoreos:\n  units:\n    - name: a.service\n      command: go\n",
    )
    .unwrap();
    let (code, stdout, _) = keel_provision(&["validate", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("line 2: warning: "));
    assert!(lines[1].starts_with("line 6: error: "));

    let (code, stdout, _) = keel_provision(&["validate", "--json", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let entries = json.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["kind"], "error");
    assert_eq!(entries[1]["line"], 6);
    assert!(entries[1]["message"].as_str().unwrap().contains("\"go\""));
    let keys: Vec<&String> = entries[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3);

    let (code, stdout, _) = keel_provision(&["validate", "--json", clean.to_str().unwrap()]);
    assert_eq!((code, stdout.trim()), (0, "[]"));

    let missing = dir.path().join("missing.yaml");
    let (code, _, stderr) = keel_provision(&["validate", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("missing.yaml"), "{stderr}");
}

#[test]
fn apply_command_writes_into_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let file = dir.path().join("user-data");
    std::fs::write(
        &file,
        "#cloud-config\nwrite_files:\n  - path: /etc/keel-test\n    content: hello\n",
    )
    .unwrap();
    let (code, stdout, stderr) = keel_provision(&[
        "apply",
        "--root",
        root.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["changed"].is_array(), "{report}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/keel-test")).unwrap(),
        "hello"
    );
}

/// The repository's own cloud-configs (`configs/cloud-config/`, which `keel cluster up` and the
/// cluster VM tests boot) validate without a single finding, and start the three agents.
#[test]
fn the_repositorys_cluster_configs_validate_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/cloud-config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        seen += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let diagnostics = findings(&text);
        assert!(
            diagnostics.is_empty(),
            "{}: {diagnostics:#?}",
            path.display()
        );
        let config = config(&text);
        let started: Vec<&str> = config
            .coreos
            .units
            .iter()
            .filter(|u| u.command == Some(UnitCommand::Start))
            .map(|u| u.name.as_str())
            .collect();
        assert_eq!(
            started,
            ["etcd2.service", "fleet.service", "flanneld.service"],
            "{}",
            path.display()
        );
    }
    assert_eq!(seen, 2, "cluster-node.yaml and cluster-node-discovery.yaml");
}
