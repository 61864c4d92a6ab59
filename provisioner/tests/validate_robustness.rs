//! No input makes the user-data parser panic, loop, or overflow the stack: malformed YAML,
//! wrong types everywhere, huge values, deep nesting, invalid UTF-8 and random bytes.

use std::io::Write;
use std::time::{Duration, Instant};

use provisioner::cloudconfig::{validate, Diagnostic};
use provisioner::userdata::parse_user_data;

/// Runs the parser and the validator; each must return (the test fails on a panic).
fn survives(bytes: &[u8]) -> Vec<Diagnostic> {
    let _ = parse_user_data(bytes);
    validate(bytes)
}

fn has_error(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

#[test]
fn malformed_yaml() {
    let cases = [
        "#cloud-config\nhostname: \"unclosed\n",
        "#cloud-config\nhostname: 'unclosed\n",
        "#cloud-config\nusers:\n  - name: a\n   groups: [x\n",
        "#cloud-config\ncoreos:\n\tunits: []\n",
        "#cloud-config\n\t- a\n",
        "#cloud-config\n: :\n",
        "#cloud-config\n[}\n",
        "#cloud-config\n{a: [b, {c: d]}\n",
        "#cloud-config\nkey: value\n  bad indent: x\n",
        "#cloud-config\n- a\nb: c\n",
        "#cloud-config\n&a\n",
        "#cloud-config\n*unknown\n",
        "#cloud-config\na: *unknown\n",
        "#cloud-config\na: !!int notanint\n",
        "#cloud-config\n%YAML 1.2\n%YAML 1.2\n---\na: 1\n",
        "#cloud-config\n%TAG ! !foo\n%TAG ! !foo\n---\na\n",
        "#cloud-config\n---\na: 1\n---\nb: [\n",
        "#cloud-config\n? [a, b]\n: c\n",
        "#cloud-config\na: |\n b\n  c\n d: e\n",
        "#cloud-config\na: >-\n\n\n",
        "#cloud-config\n\"\\x\"\n",
        "#cloud-config\n\"\\uZZZZ\"\n",
        "#cloud-config\n- - - - - -\n",
        "#cloud-config\n!<tag:x> a\n",
        "#cloud-config\n...\n...\n",
        "#cloud-config\n\u{feff}a: b\n",
        "#cloud-config\na: \0\n",
    ];
    for case in cases {
        survives(case.as_bytes());
    }
    assert!(has_error(&validate(cases[0].as_bytes())));
    assert!(has_error(&validate(cases[3].as_bytes())));
}

#[test]
fn wrong_types_everywhere() {
    // Every known key given every kind of wrong value.
    let values = [
        "[a, b]",
        "{x: y}",
        "42",
        "true",
        "",
        "\"text\"",
        "[[a], {b: c}]",
        "~",
    ];
    let keys = [
        "hostname",
        "ssh_authorized_keys",
        "users",
        "write_files",
        "manage_etc_hosts",
        "coreos",
        "runcmd",
        "bootcmd",
    ];
    for key in keys {
        for value in values {
            survives(format!("#cloud-config\n{key}: {value}\n").as_bytes());
        }
    }
    let nested = [
        "users:\n  - VALUE",
        "users:\n  - name: VALUE\n    groups: VALUE\n    system: VALUE\n    ssh_authorized_keys: VALUE",
        "write_files:\n  - VALUE",
        "write_files:\n  - path: VALUE\n    content: VALUE\n    encoding: VALUE\n    permissions: VALUE\n    append: VALUE\n    owner: VALUE",
        "coreos:\n  etcd2: VALUE",
        "coreos:\n  etcd2:\n    name: VALUE",
        "coreos:\n  fleet: VALUE\n  flannel: VALUE\n  locksmith: VALUE\n  etcd: VALUE",
        "coreos:\n  update: VALUE",
        "coreos:\n  update:\n    reboot_strategy: VALUE\n    group: VALUE",
        "coreos:\n  oem: VALUE",
        "coreos:\n  units: VALUE",
        "coreos:\n  units:\n    - VALUE",
        "coreos:\n  units:\n    - name: VALUE\n      command: VALUE\n      enable: VALUE\n      drop_ins: VALUE",
        "coreos:\n  units:\n    - name: a\n      drop_ins:\n        - VALUE",
        "coreos:\n  units:\n    - name: a\n      drop_ins:\n        - name: VALUE\n          content: VALUE",
        "runcmd:\n  - VALUE",
        "VALUE: VALUE",
    ];
    for template in nested {
        for value in values {
            let text = format!("#cloud-config\n{}\n", template.replace("VALUE", value));
            survives(text.as_bytes());
        }
    }
    // A list where a map is expected is a warning naming the key, not an error.
    let found = validate(b"#cloud-config\ncoreos: [a, b]\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].message.contains("\"coreos\" should be a map"),
        "{found:?}"
    );
    // Complex keys and maps in scalar places.
    survives(b"#cloud-config\n? {a: b}\n: c\nhostname: {a: {b: c}}\n");
}

#[test]
fn huge_values() {
    let started = Instant::now();
    let big = "x".repeat(10 << 20);
    let text = format!("#cloud-config\nwrite_files:\n  - path: /etc/big\n    content: \"{big}\"\n");
    let (_, diagnostics) = parse_user_data(text.as_bytes());
    assert!(diagnostics.is_empty(), "{diagnostics:?}");

    let mut list = String::from("#cloud-config\nssh_authorized_keys:\n");
    for index in 0..100_000 {
        list.push_str(&format!("  - key{index}\n"));
    }
    let (data, diagnostics) = parse_user_data(list.as_bytes());
    assert!(diagnostics.is_empty());
    let provisioner::cloudconfig::UserData::CloudConfig(config) = data else {
        panic!()
    };
    assert_eq!(config.ssh_authorized_keys.len(), 100_000);

    // A huge unknown key is reported without repeating 10 MB in the message.
    let text = format!("#cloud-config\nhostname: [\"{big}\"]\n");
    let found = validate(text.as_bytes());
    assert!(found.iter().all(|d| d.message.len() < 1000));
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for opener in ["[", "{", "- ", "{a: ", "[{a: "] {
        let text = format!("#cloud-config\nhostname: {}\n", opener.repeat(10_000));
        assert!(has_error(&survives(text.as_bytes())), "{opener}");
    }
    // Block-style nesting, one level per line.
    let mut text = String::from("#cloud-config\n");
    for depth in 0..5_000 {
        text.push_str(&" ".repeat(depth));
        text.push_str("a:\n");
    }
    assert!(has_error(&survives(text.as_bytes())));
    // Nested multipart and gzip.
    let mut data = b"#cloud-config\nhostname: deep\n".to_vec();
    for _ in 0..20 {
        data = gzip(&data);
    }
    assert!(has_error(&survives(&data)));
    let mut mime = String::from("#cloud-config\n");
    for level in 0..50 {
        mime = format!(
            "Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n{}\n--b{level}--\n",
            if mime.starts_with("Content-Type") {
                mime.clone()
            } else {
                format!("Content-Type: text/cloud-config\n\n{mime}")
            }
        );
    }
    assert!(has_error(&survives(mime.as_bytes())));
}

#[test]
fn alias_bombs_and_recursive_aliases() {
    let mut text =
        String::from("#cloud-config\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let items = vec![format!("*a{}", level - 1); 9].join(", ");
        text.push_str(&format!("x{level}: &a{level} [{items}]\n"));
    }
    assert!(has_error(&survives(text.as_bytes())));
    assert!(has_error(&survives(b"#cloud-config\na: &x {b: *x}\n")));
    // Ordinary aliases work.
    let found = validate(b"#cloud-config\nusers:\n  - &u {name: a}\nhostname: *h\n");
    assert!(has_error(&found));
    let found = validate(b"#cloud-config\nkeys: &k [a]\nssh_authorized_keys: *k\n");
    assert_eq!(found.len(), 1, "only the unknown key: {found:?}");
}

#[test]
fn invalid_utf8() {
    for bytes in [
        &b"#cloud-config\n\xff"[..],
        b"#cloud-config\nhostname: \xc3\x28\n",
        b"#cloud-config\xfe\n",
        b"\xef\xbb\xbf#cloud-config\nhostname: \xed\xa0\x80\n",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\n\n\xff\xff\n--b--\n",
    ] {
        let found = survives(bytes);
        assert!(has_error(&found), "{bytes:?}: {found:?}");
    }
}

#[test]
fn gzip_bombs_are_bounded() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..65 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    let found = survives(&bomb);
    assert!(
        found
            .iter()
            .any(|d| d.is_error() && d.message.contains("MiB")),
        "{found:?}"
    );
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEED_CONFIG: &str = "#cloud-config\nhostname: h\nusers:\n  - name: core\n    groups: [a, b]\n    ssh-authorized-keys: [\"ssh-ed25519 AAAA\"]\nwrite_files:\n  - path: /etc/x\n    permissions: 0644\n    encoding: b64\n    content: aGk=\n  - path: /etc/y\n    content: |\n      line\ncoreos:\n  etcd2: {name: n, proxy: on}\n  locksmith: {window_start: \"Thu 04:00\"}\n  update: {reboot-strategy: reboot}\n  units:\n    - name: a.service\n      command: start\n      drop-ins: [{name: d.conf, content: x}]\nruncmd: [[ls, -l], \"echo\"]\nx: &a [1]\ny: *a\n";

/// YAML-ish alphabet so random inputs get past the scanner's first characters.
const ALPHABET: &[u8] = b" \n\t:-[]{},&*!|>'\"#%@`?~0123456789abcxyz\\\x00\xff\xc3";

#[test]
fn random_inputs_do_not_panic() {
    let prefixes: [&[u8]; 5] = [
        b"#cloud-config\n",
        b"",
        b"#!",
        b"\x1f\x8b",
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n",
    ];
    // KEEL_RANDOM_ROUNDS raises the count for a longer soak (cargo test --release).
    let rounds = std::env::var("KEEL_RANDOM_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(2000);
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for round in 0..rounds {
        let mut input = Vec::new();
        match round % 3 {
            // Raw random bytes after a format prefix.
            0 => {
                input.extend_from_slice(prefixes[random.below(prefixes.len())]);
                for _ in 0..random.below(300) {
                    input.push(random.next() as u8);
                }
            }
            // Random YAML-ish text.
            1 => {
                input.extend_from_slice(b"#cloud-config\n");
                for _ in 0..random.below(300) {
                    input.push(ALPHABET[random.below(ALPHABET.len())]);
                }
            }
            // A valid config with a few bytes changed, inserted or cut.
            _ => {
                input.extend_from_slice(SEED_CONFIG.as_bytes());
                for _ in 0..1 + random.below(8) {
                    let at = random.below(input.len());
                    match random.below(3) {
                        0 => input[at] = ALPHABET[random.below(ALPHABET.len())],
                        1 => input.insert(at, ALPHABET[random.below(ALPHABET.len())]),
                        _ => {
                            input.truncate(at.max(14));
                        }
                    }
                }
            }
        }
        survives(&input);
    }
    assert!(validate(SEED_CONFIG.as_bytes())
        .iter()
        .all(|d| !d.is_error()));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
