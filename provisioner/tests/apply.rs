//! Applying a whole cloud-config to a temporary root tree and checking every effect on disk,
//! then applying it again and checking that nothing moved.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use provisioner::apply::{apply_to_root, ApplyReport};
use provisioner::cloudconfig::model::*;

/// A minimal Keel root: account files with root and a few system accounts, /etc/skel, a
/// shell, a unit shipped in /usr/lib, and /home as Keel has it, a relative link to var/home.
fn make_root() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let sentinel = dir.path().join("sentinel");
    fs::create_dir_all(&sentinel).unwrap();
    let write = |path: &str, content: &str, mode: u32| {
        let host = root.join(path);
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        fs::write(&host, content).unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
         messagebus:x:999:999::/nonexistent:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        0o644,
    );
    write(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n\
         messagebus:!:19000::::::\nnobody:*:19000:0:99999:7:::\n",
        0o640,
    );
    write(
        "etc/group",
        "root:x:0:\ndaemon:x:1:\nsudo:x:27:\nshadow:x:42:\nusers:x:100:\n\
         messagebus:x:999:\ndocker:x:998:\nnogroup:x:65534:\n",
        0o644,
    );
    write(
        "etc/gshadow",
        "root:*::\ndaemon:*::\nsudo:*::\nshadow:*::\nusers:*::\nmessagebus:!::\n\
         docker:!::\nnogroup:*::\n",
        0o640,
    );
    for secret in ["etc/shadow", "etc/gshadow"] {
        std::os::unix::fs::chown(root.join(secret), Some(0), Some(42)).unwrap();
    }
    write("etc/skel/.bashrc", "# skel bashrc\n", 0o644);
    write("bin/bash", "#!fake shell\n", 0o755);
    write(
        "usr/lib/systemd/system/shipped.service",
        "[Unit]\nDescription=shipped\n[Service]\nExecStart=/bin/true\n\
         [Install]\nWantedBy=multi-user.target\nAlias=shipped-alias.service\n",
        0o644,
    );
    write(
        "usr/lib/systemd/system/getty@.service",
        "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target\n\
         DefaultInstance=tty1\n",
        0o644,
    );
    write("etc/coreos/update.conf", "GROUP=stable\nKEEP=me\n", 0o644);
    fs::create_dir_all(root.join("var/home")).unwrap();
    symlink("var/home", root.join("home")).unwrap();
    // Links planted to lead writes out of the tree: relative, and absolute to the sentinel.
    symlink("../sentinel", root.join("relative-escape")).unwrap();
    symlink(&sentinel, root.join("absolute-escape")).unwrap();
    symlink("/tmp", root.join("tmp-link")).unwrap();
    (dir, root, sentinel)
}

fn file(line: usize, path: &str, content: &str) -> WriteFile {
    WriteFile {
        line,
        path: path.into(),
        content: content.into(),
        encoding: None,
        permissions: None,
        owner: None,
        append: false,
    }
}

fn option(line: usize, key: &str, value: &str) -> EnvOption {
    EnvOption {
        line,
        key: key.into(),
        value: value.into(),
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

const CORE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIcore core@example";
const ALICE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIalice alice@example";
const META_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADmeta meta@example";
const SCRIPT: &[u8] = b"#!/bin/sh\necho hello\n";

fn full_config() -> UserData {
    let b64 = base64::engine::general_purpose::STANDARD;
    let config = CloudConfig {
        hostname: Some(Located {
            value: "node1.example.com".into(),
            line: 2,
        }),
        manage_etc_hosts: Some(Located {
            value: "localhost".into(),
            line: 3,
        }),
        ssh_authorized_keys: vec![CORE_KEY.into()],
        users: vec![
            User {
                line: 5,
                name: "alice".into(),
                passwd: Some("$6$salt$hash".into()),
                groups: vec!["sudo".into(), "ops".into()],
                gecos: Some("Alice A".into()),
                ssh_authorized_keys: vec![ALICE_KEY.into()],
                ..User::default()
            },
            User {
                line: 12,
                name: "svc".into(),
                system: true,
                no_create_home: true,
                no_user_group: true,
                shell: Some("/usr/sbin/nologin".into()),
                ..User::default()
            },
        ],
        write_files: vec![
            file(
                20,
                "/etc/keel/ip.conf",
                "ip=$private_ipv4 public=$public_ipv4 lit=\\$private_ipv4 sh=\\$HOME v6=[$private_ipv6]\n",
            ),
            WriteFile {
                encoding: Some(Encoding::Base64),
                permissions: Some(0o600),
                owner: Some("alice:alice".into()),
                ..file(24, "/home/alice/notes.txt", &b64.encode("secret notes\n"))
            },
            WriteFile {
                encoding: Some(Encoding::GzipBase64),
                permissions: Some(0o755),
                ..file(30, "/opt/bin/tool", &b64.encode(gzip(b"#!/bin/sh\necho tool\n")))
            },
            WriteFile {
                append: true,
                ..file(36, "/etc/coreos/update.conf.extra", "appended line\n")
            },
            file(40, "../../etc/escape", "no\n"),
            file(42, "/relative-escape/x", "no\n"),
            file(44, "/absolute-escape/x", "no\n"),
            file(46, "/tmp-link/keel-apply-test-escape", "no\n"),
            WriteFile {
                encoding: Some(Encoding::Base64),
                ..file(48, "/etc/broken", "%%% not base64")
            },
            WriteFile {
                owner: Some("nosuchuser".into()),
                ..file(50, "/etc/owned-by-nobody-known", "x\n")
            },
        ],
        coreos: Coreos {
            etcd2: vec![
                option(60, "name", "node1"),
                option(61, "advertise_client_urls", "http://$private_ipv4:2379"),
                option(62, "initial-cluster", "node1=http://$private_ipv4:2380"),
            ],
            fleet: vec![option(65, "public_ip", "$public_ipv4"), option(66, "metadata", "region=eu")],
            locksmith: vec![option(68, "window_start", "Thu 04:00"), option(69, "group", "web")],
            flannel: vec![option(71, "etcd_endpoints", "http://127.0.0.1:2379"), option(72, "interface", "$private_ipv4")],
            update: Some(Update {
                line: 74,
                reboot_strategy: Some("etcd-lock".into()),
                group: Some("beta".into()),
                server: None,
            }),
            units: vec![
                Unit {
                    line: 80,
                    name: "hello.service".into(),
                    enable: true,
                    command: Some(UnitCommand::Start),
                    content: Some(
                        "[Service]\nExecStart=/bin/echo $private_ipv4\n[Install]\nWantedBy=multi-user.target\nRequiredBy=network-online.target\n".into(),
                    ),
                    drop_ins: vec![DropIn {
                        line: 86,
                        name: "10-env.conf".into(),
                        content: "[Service]\nEnvironment=IP=$public_ipv4\n".into(),
                    }],
                    ..Unit::default()
                },
                Unit {
                    line: 90,
                    name: "shipped.service".into(),
                    enable: true,
                    ..Unit::default()
                },
                Unit {
                    line: 92,
                    name: "getty@.service".into(),
                    enable: true,
                    ..Unit::default()
                },
                Unit {
                    line: 94,
                    name: "unwanted.service".into(),
                    mask: true,
                    ..Unit::default()
                },
                Unit {
                    line: 96,
                    name: "10-eth0.network".into(),
                    content: Some("[Match]\nName=eth0\n[Network]\nDHCP=yes\n".into()),
                    ..Unit::default()
                },
                Unit {
                    line: 100,
                    name: "ephemeral.service".into(),
                    runtime: true,
                    content: Some("[Service]\nExecStart=/bin/true\n".into()),
                    command: Some(UnitCommand::Restart),
                    ..Unit::default()
                },
                Unit {
                    line: 104,
                    name: "missing.service".into(),
                    enable: true,
                    ..Unit::default()
                },
            ],
            ..Coreos::default()
        },
        ..CloudConfig::default()
    };
    UserData::Multipart(vec![
        UserData::CloudConfig(config),
        UserData::Script(SCRIPT.to_vec()),
    ])
}

fn metadata() -> Metadata {
    Metadata {
        hostname: Some("ignored-because-user-data-names-one".into()),
        private_ipv4: Some("10.0.0.5".parse().unwrap()),
        public_ipv4: Some("203.0.113.7".parse().unwrap()),
        ssh_public_keys: vec![META_KEY.into()],
        ..Metadata::default()
    }
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn mode(root: &Path, path: &str) -> u32 {
    fs::symlink_metadata(root.join(path)).unwrap().mode() & 0o7777
}

fn owner(root: &Path, path: &str) -> (u32, u32) {
    let meta = fs::symlink_metadata(root.join(path)).unwrap();
    (meta.uid(), meta.gid())
}

fn link(root: &Path, path: &str) -> String {
    fs::read_link(root.join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .display()
        .to_string()
}

fn error_lines(report: &ApplyReport) -> Vec<usize> {
    report.errors.iter().map(|issue| issue.line).collect()
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    content: Vec<u8>,
}

/// Everything observable about a tree, symlinks not followed.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let (kind, content) = if meta.file_type().is_symlink() {
                (
                    "link",
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else {
                ("file", fs::read(&path).unwrap())
            };
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                Entry {
                    kind,
                    mode: meta.mode() & 0o7777,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mtime: (meta.mtime(), meta.mtime_nsec()),
                    content,
                },
            );
        }
    }
    out
}

#[test]
fn full_config_is_applied_and_a_second_run_changes_nothing() {
    let (_dir, root, sentinel) = make_root();
    let report = apply_to_root(&root, &full_config(), &metadata()).unwrap();

    // Every refused or broken item is reported with its line; everything else applied.
    let mut lines = error_lines(&report);
    lines.sort();
    assert_eq!(
        lines,
        vec![40, 42, 44, 46, 48, 50, 104],
        "{:#?}",
        report.errors
    );
    let message_of = |line| {
        let issue = report.errors.iter().find(|e| e.line == line).unwrap();
        issue.message.clone()
    };
    assert!(message_of(40).contains("'..'"), "{}", message_of(40));
    for line in [42, 44, 46] {
        assert!(
            message_of(line).contains("outside the root"),
            "{}",
            message_of(line)
        );
    }
    assert!(message_of(42).contains("/relative-escape -> ../sentinel"));
    assert!(message_of(48).contains("/etc/broken"), "{}", message_of(48));
    assert!(message_of(50).contains("nosuchuser"), "{}", message_of(50));
    assert!(
        message_of(104).contains("missing.service"),
        "{}",
        message_of(104)
    );

    // Hostname and /etc/hosts.
    assert_eq!(read(&root, "etc/hostname"), "node1\n");
    assert!(read(&root, "etc/hosts").starts_with("127.0.0.1 node1\n"));

    // Accounts: existing lines kept in order, new ones appended.
    let passwd = read(&root, "etc/passwd");
    assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:"));
    assert!(
        passwd.contains("alice:x:1000:1000:Alice A:/home/alice:/bin/bash\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("svc:x:998:100::/home/svc:/usr/sbin/nologin\n"),
        "{passwd}"
    );
    assert!(
        passwd.contains("core:x:1001:1001:CoreOS Admin:/home/core:/bin/bash\n"),
        "{passwd}"
    );
    let shadow = read(&root, "etc/shadow");
    assert!(shadow.contains("\nalice:$6$salt$hash:"), "{shadow}");
    assert!(shadow.contains("\ncore:*:"), "{shadow}");
    assert_eq!(mode(&root, "etc/shadow"), 0o640);
    assert_eq!(owner(&root, "etc/shadow"), (0, 42));
    assert_eq!(mode(&root, "etc/gshadow"), 0o640);
    let group = read(&root, "etc/group");
    assert!(group.contains("\nsudo:x:27:alice,core\n"), "{group}");
    assert!(group.contains("\ndocker:x:998:core\n"), "{group}");
    assert!(group.contains("\nalice:x:1000:\n"), "{group}");
    assert!(group.contains("\ncore:x:1001:\n"), "{group}");
    assert!(group.contains("\nops:x:997:alice\n"), "{group}");
    let gshadow = read(&root, "etc/gshadow");
    assert!(gshadow.contains("\nsudo:*::alice,core\n"), "{gshadow}");
    assert!(gshadow.contains("\nops:!::alice\n"), "{gshadow}");

    // Homes, through the home -> var/home link, from /etc/skel.
    assert_eq!(link(&root, "home"), "var/home");
    assert_eq!(mode(&root, "var/home/alice"), 0o755);
    assert_eq!(owner(&root, "var/home/alice"), (1000, 1000));
    assert_eq!(read(&root, "var/home/alice/.bashrc"), "# skel bashrc\n");
    assert_eq!(owner(&root, "var/home/alice/.bashrc"), (1000, 1000));
    assert!(!root.join("var/home/svc").exists());

    // SSH keys: one file per source plus the merged file.
    let ssh = "var/home/core/.ssh";
    assert_eq!(mode(&root, ssh), 0o700);
    assert_eq!(owner(&root, ssh), (1001, 1001));
    assert_eq!(mode(&root, &format!("{ssh}/authorized_keys.d")), 0o700);
    assert_eq!(
        read(&root, &format!("{ssh}/authorized_keys.d/coreos-cloudinit")),
        format!("{CORE_KEY}\n")
    );
    assert_eq!(
        read(&root, &format!("{ssh}/authorized_keys.d/metadata")),
        format!("{META_KEY}\n")
    );
    assert_eq!(
        read(&root, &format!("{ssh}/authorized_keys")),
        format!("# auto-generated by update-ssh-keys\n{CORE_KEY}\n{META_KEY}\n")
    );
    for file in [
        "authorized_keys",
        "authorized_keys.d/coreos-cloudinit",
        "authorized_keys.d/metadata",
    ] {
        assert_eq!(mode(&root, &format!("{ssh}/{file}")), 0o600, "{file}");
        assert_eq!(
            owner(&root, &format!("{ssh}/{file}")),
            (1001, 1001),
            "{file}"
        );
    }
    assert_eq!(
        read(&root, "var/home/alice/.ssh/authorized_keys"),
        format!("# auto-generated by update-ssh-keys\n{ALICE_KEY}\n")
    );

    // write_files: substitution and escaping, encodings, modes, owners.
    assert_eq!(
        read(&root, "etc/keel/ip.conf"),
        "ip=10.0.0.5 public=203.0.113.7 lit=$private_ipv4 sh=\\$HOME v6=[]\n"
    );
    assert_eq!(mode(&root, "etc/keel/ip.conf"), 0o644);
    assert_eq!(owner(&root, "etc/keel/ip.conf"), (0, 0));
    assert_eq!(mode(&root, "etc/keel"), 0o755);
    assert_eq!(read(&root, "var/home/alice/notes.txt"), "secret notes\n");
    assert_eq!(mode(&root, "var/home/alice/notes.txt"), 0o600);
    assert_eq!(owner(&root, "var/home/alice/notes.txt"), (1000, 1000));
    assert_eq!(read(&root, "opt/bin/tool"), "#!/bin/sh\necho tool\n");
    assert_eq!(mode(&root, "opt/bin/tool"), 0o755);
    assert_eq!(
        read(&root, "etc/coreos/update.conf.extra"),
        "appended line\n"
    );
    assert!(!root.join("etc/broken").exists());

    // Nothing escaped the root.
    assert_eq!(fs::read_dir(&sentinel).unwrap().count(), 0);
    assert!(!Path::new("/tmp/keel-apply-test-escape").exists());
    assert!(!root.parent().unwrap().join("etc/escape").exists());

    // Units.
    assert_eq!(
        read(&root, "etc/systemd/system/hello.service"),
        "[Service]\nExecStart=/bin/echo 10.0.0.5\n[Install]\nWantedBy=multi-user.target\nRequiredBy=network-online.target\n"
    );
    assert_eq!(
        read(&root, "etc/systemd/system/hello.service.d/10-env.conf"),
        "[Service]\nEnvironment=IP=203.0.113.7\n"
    );
    assert_eq!(
        link(
            &root,
            "etc/systemd/system/multi-user.target.wants/hello.service"
        ),
        "/etc/systemd/system/hello.service"
    );
    assert_eq!(
        link(
            &root,
            "etc/systemd/system/network-online.target.requires/hello.service"
        ),
        "/etc/systemd/system/hello.service"
    );
    assert_eq!(
        link(
            &root,
            "etc/systemd/system/multi-user.target.wants/shipped.service"
        ),
        "/usr/lib/systemd/system/shipped.service"
    );
    assert_eq!(
        link(&root, "etc/systemd/system/shipped-alias.service"),
        "/usr/lib/systemd/system/shipped.service"
    );
    assert_eq!(
        link(
            &root,
            "etc/systemd/system/getty.target.wants/getty@tty1.service"
        ),
        "/usr/lib/systemd/system/getty@.service"
    );
    assert_eq!(
        link(&root, "etc/systemd/system/unwanted.service"),
        "/dev/null"
    );
    assert_eq!(
        read(&root, "etc/systemd/network/10-eth0.network"),
        "[Match]\nName=eth0\n[Network]\nDHCP=yes\n"
    );
    assert_eq!(
        read(&root, "run/systemd/system/ephemeral.service"),
        "[Service]\nExecStart=/bin/true\n"
    );
    assert_eq!(
        report.units_to_run,
        vec![
            ("hello.service".to_string(), "start".to_string()),
            ("ephemeral.service".to_string(), "restart".to_string()),
            (
                "systemd-networkd.service".to_string(),
                "restart".to_string()
            ),
        ]
    );

    // coreos sections.
    assert_eq!(
        read(
            &root,
            "run/systemd/system/etcd2.service.d/20-cloudinit.conf"
        ),
        "[Service]\nEnvironment=\"ETCD_NAME=node1\"\n\
         Environment=\"ETCD_ADVERTISE_CLIENT_URLS=http://10.0.0.5:2379\"\n\
         Environment=\"ETCD_INITIAL_CLUSTER=node1=http://10.0.0.5:2380\"\n"
    );
    assert_eq!(
        read(&root, "run/systemd/system/fleet.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"FLEET_PUBLIC_IP=203.0.113.7\"\nEnvironment=\"FLEET_METADATA=region=eu\"\n"
    );
    assert_eq!(
        read(&root, "run/systemd/system/locksmithd.service.d/20-cloudinit.conf"),
        "[Service]\nEnvironment=\"REBOOT_WINDOW_START=Thu 04:00\"\nEnvironment=\"LOCKSMITHD_GROUP=web\"\n"
    );
    assert!(!root.join("run/systemd/system/etcd.service.d").exists());
    assert_eq!(
        read(&root, "run/flannel/options.env"),
        "FLANNELD_ETCD_ENDPOINTS=http://127.0.0.1:2379\nFLANNELD_IFACE=10.0.0.5\n"
    );
    assert_eq!(
        read(&root, "etc/coreos/update.conf"),
        "GROUP=beta\nKEEP=me\nREBOOT_STRATEGY=etcd-lock\n"
    );

    // The script part.
    assert_eq!(report.scripts.len(), 1);
    let script = &report.scripts[0];
    assert!(script.starts_with("/var/lib/keel/scripts/") && script.ends_with(".sh"));
    assert_eq!(fs::read(root.join(&script[1..])).unwrap(), SCRIPT);
    assert_eq!(mode(&root, &script[1..]), 0o700);

    // Second run: nothing changes, not even an mtime.
    let before = snapshot(&root);
    let second = apply_to_root(&root, &full_config(), &metadata()).unwrap();
    assert_eq!(second.changed, Vec::<String>::new());
    assert!(second.unchanged > 0);
    assert_eq!(error_lines(&second).len(), report.errors.len());
    assert_eq!(second.units_to_run, report.units_to_run);
    assert_eq!(second.scripts, report.scripts);
    let after = snapshot(&root);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, entry) in &before {
        assert_eq!(Some(entry), after.get(path), "{}", path.display());
    }
}

#[test]
fn metadata_hostname_is_used_when_the_config_has_none() {
    let (_dir, root, _) = make_root();
    let config = CloudConfig {
        manage_etc_hosts: Some(Located {
            value: "localhost".into(),
            line: 2,
        }),
        ..CloudConfig::default()
    };
    let metadata = Metadata {
        hostname: Some(format!("{}.example.com", "x".repeat(70))),
        ..Metadata::default()
    };
    let report = apply_to_root(&root, &UserData::CloudConfig(config), &metadata).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let short = "x".repeat(63);
    assert_eq!(read(&root, "etc/hostname"), format!("{short}\n"));
    assert!(read(&root, "etc/hosts").starts_with(&format!("127.0.0.1 {short}\n")));
}

#[test]
fn metadata_interfaces_become_networkd_files() {
    let (_dir, root, _) = make_root();
    let prefix = |text: &str| {
        let (address, length) = text.split_once('/').unwrap();
        IpPrefix {
            address: address.parse().unwrap(),
            prefix_len: length.parse().unwrap(),
        }
    };
    let metadata = Metadata {
        interfaces: vec![
            StaticInterface {
                mac: "fa:16:3e:9c:bf:3d".into(),
                addresses: vec![prefix("10.77.0.11/24"), prefix("2001:db8:77::11/64")],
                gateways: vec!["10.77.0.1".parse().unwrap()],
                dns: vec!["10.77.0.2".parse().unwrap(), "10.77.0.3".parse().unwrap()],
            },
            StaticInterface {
                mac: "FA:16:3E:00:00:02".into(),
                addresses: vec![prefix("192.0.2.5/28")],
                ..StaticInterface::default()
            },
            // Neither is written: a name that is no MAC, and a link with nothing static.
            StaticInterface {
                mac: "../../etc/passwd".into(),
                addresses: vec![prefix("192.0.2.6/28")],
                ..StaticInterface::default()
            },
            StaticInterface {
                mac: "fa:16:3e:00:00:03".into(),
                ..StaticInterface::default()
            },
        ],
        ..Metadata::default()
    };
    let first = apply_to_root(&root, &UserData::Empty, &metadata).unwrap();
    assert_eq!(first.errors.len(), 2, "{:?}", first.errors);
    assert!(
        first.errors.iter().all(|e| e.line == 0),
        "{:?}",
        first.errors
    );
    assert_eq!(
        read(&root, "etc/systemd/network/10-keel-fa163e9cbf3d.network"),
        "# Written by keel-provision from the datasource's network metadata.\n\
         [Match]\n\
         MACAddress=fa:16:3e:9c:bf:3d\n\
         \n\
         [Network]\n\
         Address=10.77.0.11/24\n\
         Address=2001:db8:77::11/64\n\
         Gateway=10.77.0.1\n\
         DNS=10.77.0.2\n\
         DNS=10.77.0.3\n"
    );
    assert_eq!(
        read(&root, "etc/systemd/network/10-keel-fa163e000002.network"),
        "# Written by keel-provision from the datasource's network metadata.\n\
         [Match]\n\
         MACAddress=fa:16:3e:00:00:02\n\
         \n\
         [Network]\n\
         Address=192.0.2.5/28\n"
    );
    assert_eq!(
        mode(&root, "etc/systemd/network/10-keel-fa163e9cbf3d.network"),
        0o644
    );
    let mut written: Vec<String> = fs::read_dir(root.join("etc/systemd/network"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    written.sort();
    assert_eq!(
        written,
        vec![
            "10-keel-fa163e000002.network",
            "10-keel-fa163e9cbf3d.network"
        ]
    );
    let changed: Vec<&String> = first
        .changed
        .iter()
        .filter(|line| line.contains("10-keel-"))
        .collect();
    assert_eq!(changed.len(), 2, "{:?}", first.changed);

    // Second run: both files already say so; nothing is rewritten.
    let before = snapshot(&root);
    let second = apply_to_root(&root, &UserData::Empty, &metadata).unwrap();
    assert_eq!(second.changed, Vec::<String>::new());
    assert_eq!(second.unchanged, 2);
    assert_eq!(snapshot(&root), before);
}

#[test]
fn existing_users_are_updated_not_recreated() {
    let (_dir, root, _) = make_root();
    let user = |passwd: &str, groups: &[&str]| User {
        line: 1,
        name: "alice".into(),
        passwd: Some(passwd.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..User::default()
    };
    let config = |u: User| {
        UserData::CloudConfig(CloudConfig {
            users: vec![u],
            ..CloudConfig::default()
        })
    };
    apply_to_root(
        &root,
        &config(user("$6$one", &["sudo"])),
        &Metadata::default(),
    )
    .unwrap();
    let report = apply_to_root(
        &root,
        &config(user("$6$two", &["sudo", "docker"])),
        &Metadata::default(),
    )
    .unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        read(&root, "etc/passwd")
            .lines()
            .filter(|l| l.starts_with("alice:"))
            .count(),
        1
    );
    assert!(read(&root, "etc/shadow").contains("\nalice:$6$two:"));
    assert!(read(&root, "etc/group").contains("\ndocker:x:998:alice\n"));
    assert!(
        report.changed.iter().any(|l| l.contains("password")),
        "{:?}",
        report.changed
    );
    assert!(!report.changed.iter().any(|l| l.starts_with("created user")));
}

#[test]
fn hand_written_authorized_keys_are_kept() {
    let (_dir, root, _) = make_root();
    let config = UserData::CloudConfig(CloudConfig {
        users: vec![User {
            line: 1,
            name: "core".into(),
            ..User::default()
        }],
        ..CloudConfig::default()
    });
    apply_to_root(&root, &config, &Metadata::default()).unwrap();
    fs::create_dir_all(root.join("var/home/core/.ssh")).unwrap();
    fs::write(
        root.join("var/home/core/.ssh/authorized_keys"),
        "ssh-ed25519 OLD old\n",
    )
    .unwrap();
    let config = UserData::CloudConfig(CloudConfig {
        ssh_authorized_keys: vec![CORE_KEY.into()],
        ..CloudConfig::default()
    });
    let report = apply_to_root(&root, &config, &Metadata::default()).unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        read(&root, "var/home/core/.ssh/authorized_keys"),
        format!("# auto-generated by update-ssh-keys\n{CORE_KEY}\nssh-ed25519 OLD old\n")
    );
}

#[test]
fn a_missing_root_is_a_whole_run_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(apply_to_root(
        &dir.path().join("nope"),
        &UserData::Empty,
        &Metadata::default()
    )
    .is_err());
}
