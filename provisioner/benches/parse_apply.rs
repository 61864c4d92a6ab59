//! Throughput of the user-data path on a large cloud-config: validate, parse, apply into a
//! fresh root, apply again (the idempotent pass). Prints figures; asserts only that the config
//! is clean and that the second pass changes nothing.
//!
//! `cargo bench -p provisioner --bench parse_apply` (also run by `make bench`).
//! BENCH_SCALE=N multiplies the config's size (default 1: ~7 MB).

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use provisioner::apply::apply_to_root;
use provisioner::cloudconfig::model::{Metadata, UserData};
use provisioner::cloudconfig::{validate, Kind};
use provisioner::userdata::parse_user_data;

const FILES: usize = 2_000;
const USERS: usize = 500;
const UNITS: usize = 300;

fn main() {
    let scale: usize = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1)
        .max(1);
    let text = generate(scale);
    let megabytes = text.len() as f64 / 1e6;
    println!(
        "cloud-config: {:.2} MB, {} lines ({} write_files, {} users, {} units with 2 drop-ins each)",
        megabytes,
        text.lines().count(),
        FILES * scale,
        USERS * scale,
        UNITS * scale
    );

    let (elapsed, diagnostics) = best_of(3, || validate(text.as_bytes()));
    let worst = diagnostics.iter().map(|d| d.kind).min();
    assert!(
        worst.is_none_or(|kind| kind != Kind::Error),
        "the generated config has errors: {:#?}",
        &diagnostics[..diagnostics.len().min(10)]
    );
    println!(
        "validate:      {:>9.1} ms  {:>7.1} MB/s  ({} diagnostics)",
        ms(elapsed),
        megabytes / elapsed.as_secs_f64(),
        diagnostics.len()
    );

    let (elapsed, (user_data, _)) = best_of(3, || parse_user_data(text.as_bytes()));
    println!(
        "parse:         {:>9.1} ms  {:>7.1} MB/s",
        ms(elapsed),
        megabytes / elapsed.as_secs_f64()
    );
    let items = items(&user_data);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("root");
    make_root(&root);
    let metadata = Metadata {
        hostname: Some("bench.example.com".into()),
        private_ipv4: Some("10.0.0.5".parse().unwrap()),
        public_ipv4: Some("203.0.113.5".parse().unwrap()),
        ..Metadata::default()
    };

    let started = Instant::now();
    let first = apply_to_root(&root, &user_data, &metadata).expect("apply");
    let elapsed = started.elapsed();
    let written = count_files(&root);
    println!(
        "apply (fresh): {:>9.1} ms  {:>7.0} items/s  {:>7.0} files/s  ({} changes, {} files in the root, {} errors)",
        ms(elapsed),
        items as f64 / elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64(),
        first.changed.len(),
        written,
        first.errors.len()
    );
    for issue in first.errors.iter().take(5) {
        println!("    line {}: {}", issue.line, issue.message);
    }

    let started = Instant::now();
    let second = apply_to_root(&root, &user_data, &metadata).expect("apply");
    let elapsed = started.elapsed();
    println!(
        "apply (again): {:>9.1} ms  {:>7.0} items/s  ({} changes, {} unchanged, {} errors)",
        ms(elapsed),
        items as f64 / elapsed.as_secs_f64(),
        second.changed.len(),
        second.unchanged,
        second.errors.len()
    );
    assert!(
        second.changed.is_empty(),
        "the second pass changed things: {:?}",
        &second.changed[..second.changed.len().min(10)]
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The fastest of `runs` runs, and the last result.
fn best_of<T>(runs: usize, mut run: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..runs {
        let started = Instant::now();
        let value = run();
        best = best.min(started.elapsed());
        result = Some(value);
    }
    (best, result.unwrap())
}

/// What apply works through: files, users, units and drop-ins.
fn items(user_data: &UserData) -> usize {
    let UserData::CloudConfig(config) = user_data else {
        panic!("not a cloud-config")
    };
    let units = &config.coreos.units;
    config.write_files.len()
        + config.users.len()
        + units.len()
        + units.iter().map(|unit| unit.drop_ins.len()).sum::<usize>()
}

fn count_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                count_files(&entry.path())
            } else {
                1
            }
        })
        .sum()
}

/// A large Container Linux style cloud-config: every section, every write_files encoding.
fn generate(scale: usize) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut text = String::from("#cloud-config\nhostname: node-$private_ipv4\n");
    text.push_str("manage_etc_hosts: localhost\nssh_authorized_keys:\n");
    for index in 0..10 {
        writeln!(text, "  - {}", key("core", index)).unwrap();
    }

    text.push_str("users:\n");
    for index in 0..USERS * scale {
        writeln!(
            text,
            "  - name: user{index}\n    gecos: Bench user {index}\n    \
             passwd: $6$rounds=4096$salt{index}$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA\n    \
             groups: [users, docker]\n    ssh_authorized_keys:\n      - {}\n      - {}",
            key("user", index),
            key("backup", index),
        )
        .unwrap();
    }

    text.push_str("write_files:\n");
    for index in 0..FILES * scale {
        let body = file_body(index);
        let path = format!("/etc/bench/d{}/file{index}.conf", index % 50);
        writeln!(text, "  - path: {path}").unwrap();
        match index % 5 {
            // Plain, as a literal block.
            0 | 1 => {
                text.push_str("    permissions: \"0644\"\n    content: |\n");
                for line in body.lines() {
                    writeln!(text, "      {line}").unwrap();
                }
            }
            2 => writeln!(
                text,
                "    encoding: b64\n    owner: user{}:users\n    content: {}",
                index % (USERS * scale),
                b64.encode(&body)
            )
            .unwrap(),
            3 => writeln!(
                text,
                "    encoding: gzip+base64\n    permissions: 0600\n    content: {}",
                b64.encode(gzip(body.as_bytes()))
            )
            .unwrap(),
            // gzip as !!binary, the coreos-cloudinit spelling.
            _ => writeln!(
                text,
                "    encoding: gzip\n    permissions: 0755\n    content: !!binary |\n      {}",
                b64.encode(gzip(body.as_bytes()))
            )
            .unwrap(),
        }
    }

    text.push_str(
        "coreos:\n  etcd2:\n    name: $private_ipv4\n    \
         discovery: https://discovery.etcd.io/0123456789abcdef\n    \
         advertise-client-urls: http://$private_ipv4:2379\n    \
         initial-advertise-peer-urls: http://$private_ipv4:2380\n    \
         listen-client-urls: http://0.0.0.0:2379,http://0.0.0.0:4001\n    \
         listen-peer-urls: http://$private_ipv4:2380\n  \
         fleet:\n    public-ip: $public_ipv4\n    metadata: region=eu,disk=ssd\n  \
         flannel:\n    interface: $private_ipv4\n    etcd_endpoints: http://127.0.0.1:2379\n  \
         locksmith:\n    window_start: Thu 04:00\n    window_length: 1h\n  \
         update:\n    reboot-strategy: etcd-lock\n    group: stable\n  units:\n",
    );
    for index in 0..UNITS * scale {
        let name = format!("bench{index}.service");
        writeln!(text, "    - name: {name}").unwrap();
        if index % 3 == 0 {
            text.push_str("      command: start\n");
        }
        if index % 2 == 0 {
            text.push_str("      enable: true\n");
        }
        if index % 50 == 49 {
            text.push_str("      runtime: true\n");
        }
        writeln!(
            text,
            "      content: |\n        [Unit]\n        Description=Bench unit {index}\n        \
             After=network-online.target etcd2.service\n        [Service]\n        \
             Environment=ADDR=$private_ipv4\n        ExecStart=/usr/bin/sleep {index}\n        \
             Restart=always\n        [Install]\n        WantedBy=multi-user.target\n      \
             drop-ins:\n        - name: 10-limits.conf\n          content: |\n            \
             [Service]\n            LimitNOFILE=65536\n        - name: 20-env.conf\n          \
             content: |\n            [Service]\n            Environment=INDEX={index}"
        )
        .unwrap();
    }
    text.push_str("runcmd:\n  - [systemctl, daemon-reload]\n  - echo provisioned\n");
    text
}

fn key(kind: &str, index: usize) -> String {
    let body = base64::engine::general_purpose::STANDARD
        .encode(format!("bench-{kind}-key-{index:08}-0123456789abcdef"));
    format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{body} {kind}{index}@bench")
}

/// About 4 KB of configuration-file text, different for every file.
fn file_body(index: usize) -> String {
    let mut body = format!("# bench file {index}\n[section]\n");
    for line in 0..80 {
        writeln!(
            body,
            "option_{line} = value-{index}-{line} # {}",
            "abcdefghij".repeat(line % 4)
        )
        .unwrap();
    }
    body
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The parts of a Keel root that apply reads: account files, /etc/skel, a shell, /home as a
/// link to var/home.
fn make_root(root: &Path) {
    let write = |path: &str, content: &str, mode: u32| {
        let host = root.join(path);
        fs::create_dir_all(host.parent().unwrap()).unwrap();
        fs::write(&host, content).unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        0o644,
    );
    write(
        "etc/shadow",
        "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        0o640,
    );
    write(
        "etc/group",
        "root:x:0:\nsudo:x:27:\nusers:x:100:\ndocker:x:998:\nnogroup:x:65534:\n",
        0o644,
    );
    write(
        "etc/gshadow",
        "root:*::\nsudo:*::\nusers:*::\ndocker:!::\nnogroup:*::\n",
        0o640,
    );
    write("etc/skel/.bashrc", "# skel bashrc\n", 0o644);
    write("bin/bash", "#!fake shell\n", 0o755);
    fs::create_dir_all(root.join("var/home")).unwrap();
    symlink("var/home", root.join("home")).unwrap();
}
