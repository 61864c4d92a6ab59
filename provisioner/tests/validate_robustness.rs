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

// --- Errors name their line ---------------------------------------------------------------
//
// The tests above check that nothing panics; these check that what goes wrong is reported on
// the line where it is, that the line is one the document has, and that the model keeps what
// the rest of the document says.

use provisioner::cloudconfig::{CloudConfig, Kind, UserData};
use provisioner::userdata::MAX_DECOMPRESSED_SIZE;

/// The highest line a diagnostic may name: the line after the last line break.
fn last_line(bytes: &[u8]) -> usize {
    1 + bytes.iter().filter(|&&b| b == b'\n').count()
}

/// `validate`, checking that every diagnostic names a line of `bytes` and is short.
fn checked(bytes: &[u8]) -> Vec<Diagnostic> {
    let found = validate(bytes);
    let last = last_line(bytes);
    for diagnostic in &found {
        assert!(
            (1..=last).contains(&diagnostic.line),
            "line outside 1..={last}: {diagnostic}"
        );
        assert!(
            diagnostic.message.len() < 1000,
            "{}-byte message",
            diagnostic.message.len()
        );
    }
    found
}

/// The diagnostic of `kind` on `line` whose message contains `needle`.
#[track_caller]
fn expect(found: &[Diagnostic], kind: Kind, line: usize, needle: &str) {
    assert!(
        found
            .iter()
            .any(|d| d.kind == kind && d.line == line && d.message.contains(needle)),
        "no {kind} on line {line} containing {needle:?} in {found:#?}"
    );
}

fn cloud_config(data: UserData) -> CloudConfig {
    match data {
        UserData::CloudConfig(config) => config,
        other => panic!("not a cloud-config: {other:?}"),
    }
}

#[test]
fn malformed_yaml_is_an_error_on_its_line() {
    let deep = format!(
        "#cloud-config\nhostname: a\nusers: {}\n",
        "[".repeat(10_000)
    );
    let cases: &[(&str, usize, &str)] = &[
        (
            "#cloud-config\nhostname: a\nusers: \"unclosed\n",
            3,
            "quoted scalar",
        ),
        (
            "#cloud-config\nhostname: 'unclosed\nusers: []\n",
            2,
            "quoted scalar",
        ),
        (
            "#cloud-config\nusers:\n  - name: a\n   groups: [x]\n",
            4,
            "YAML syntax error",
        ),
        (
            "#cloud-config\nusers:\n  - name: a\n     groups: [x]\n",
            4,
            "mapping values",
        ),
        ("#cloud-config\ncoreos:\n\tunits: []\n", 3, "tabs"),
        (
            "#cloud-config\ncoreos:\n  units:\n  \t- name: a.service\n",
            4,
            "tabs",
        ),
        (
            "#cloud-config\nhostname: [a, b\nusers: []\n",
            3,
            "YAML syntax error",
        ),
        ("#cloud-config\nhostname: *nope\n", 2, "unknown anchor"),
        ("#cloud-config\na: &x [1, *x]\n", 2, "recursive"),
        // No final line break: the end of the text is still on the last line.
        ("#cloud-config\nhostname: a\nwrit", 3, "YAML syntax error"),
        (&deep, 3, "YAML"),
    ];
    for &(text, line, needle) in cases {
        let found = checked(text.as_bytes());
        expect(&found, Kind::Error, line, needle);
        // A document that does not parse applies nothing.
        let (data, _) = parse_user_data(text.as_bytes());
        assert_eq!(cloud_config(data), CloudConfig::default(), "{text}");
    }
}

#[test]
fn duplicate_keys_keep_the_last_and_name_the_first() {
    let text = "#cloud-config\nhostname: a\nhostname: b\nhostname: c\n\
                ssh-authorized-keys: [k1]\nssh_authorized_keys: [k2]\n\
                coreos:\n  units:\n    - name: a.service\n      enable: true\n      enable: false\n";
    let found = checked(text.as_bytes());
    expect(&found, Kind::Warning, 3, "replaces the one on line 2");
    expect(&found, Kind::Warning, 4, "replaces the one on line 3");
    expect(&found, Kind::Warning, 6, "\"ssh_authorized_keys\"");
    expect(&found, Kind::Warning, 11, "\"coreos.units[0].enable\"");
    assert_eq!(found.len(), 4, "{found:#?}");
    let config = cloud_config(parse_user_data(text.as_bytes()).0);
    let hostname = config.hostname.unwrap();
    assert_eq!((hostname.value.as_str(), hostname.line), ("c", 4));
    assert_eq!(config.ssh_authorized_keys, ["k2"]);
    assert!(!config.coreos.units[0].enable);

    // Many keys in one map: each unknown one is reported on its line (and, with duplicates
    // found through an index, this is linear).
    let mut text = String::from("#cloud-config\ncoreos:\n  etcd2:\n");
    for index in 0..50_000 {
        text.push_str(&format!("    key{index}: v\n"));
    }
    text.push_str("    key7: again\n");
    let found = validate(text.as_bytes());
    assert_eq!(found.len(), 50_001);
    expect(&found, Kind::Warning, 4, "\"coreos.etcd2.key0\"");
    expect(&found, Kind::Warning, 50_003, "\"coreos.etcd2.key49999\"");
    expect(&found, Kind::Warning, 50_004, "replaces the one on line 11");
}

#[test]
fn anchors_and_aliases_keep_their_lines() {
    let text = "#cloud-config\nkeys: &keys [k1, k2]\nssh_authorized_keys: *keys\n\
                users:\n  - &core {name: core, groups: [docker]}\n  - <<: *core\n    name: other\n\
                coreos:\n  units:\n    - &unit {name: a.service, command: start}\n    - *unit\n";
    let found = checked(text.as_bytes());
    expect(&found, Kind::Warning, 2, "unknown key \"keys\"");
    // YAML 1.1 merge keys are not YAML 1.2 and not supported: the key is unknown.
    expect(&found, Kind::Warning, 6, "unknown key \"users[1].<<\"");
    let config = cloud_config(parse_user_data(text.as_bytes()).0);
    assert_eq!(config.ssh_authorized_keys, ["k1", "k2"]);
    let users: Vec<(&str, usize)> = config
        .users
        .iter()
        .map(|user| (user.name.as_str(), user.line))
        .collect();
    assert_eq!(users, [("core", 5), ("other", 6)]);
    // An alias is an item on the alias's line.
    let units: Vec<usize> = config.coreos.units.iter().map(|unit| unit.line).collect();
    assert_eq!(units, [10, 11]);
}

#[test]
fn wrong_types_are_reported_on_their_line_with_their_path() {
    let cases: &[(&str, usize, &str)] = &[
        ("hostname: [a]", 2, "\"hostname\" should be a string"),
        ("ssh_authorized_keys: {a: b}", 2, "\"ssh_authorized_keys\""),
        ("users: abc", 2, "\"users\""),
        ("users:\n  - 42", 3, "\"users[0]\""),
        (
            "users:\n  - name: a\n    groups: {x: y}",
            4,
            "\"users[0].groups\"",
        ),
        (
            "users:\n  - name: a\n    system: maybe",
            4,
            "\"users[0].system\"",
        ),
        ("write_files: {path: /a}", 2, "\"write_files\""),
        ("write_files:\n  - path: [a]", 3, "\"write_files[0].path\""),
        (
            "write_files:\n  - path: /a\n    permissions: [1]",
            4,
            "\"write_files[0].permissions\"",
        ),
        (
            "write_files:\n  - path: /a\n    append: maybe",
            4,
            "\"write_files[0].append\"",
        ),
        ("manage_etc_hosts: [a]", 2, "\"manage_etc_hosts\""),
        ("coreos: [a]", 2, "\"coreos\" should be a map"),
        ("coreos:\n  etcd2: [a]", 3, "\"coreos.etcd2\""),
        (
            "coreos:\n  etcd2:\n    name: [a]",
            4,
            "\"coreos.etcd2.name\"",
        ),
        ("coreos:\n  fleet: 42", 3, "\"coreos.fleet\""),
        ("coreos:\n  flannel: true", 3, "\"coreos.flannel\""),
        ("coreos:\n  locksmith: [a]", 3, "\"coreos.locksmith\""),
        ("coreos:\n  etcd: x", 3, "\"coreos.etcd\""),
        ("coreos:\n  update: [a]", 3, "\"coreos.update\""),
        (
            "coreos:\n  update:\n    reboot_strategy: [a]",
            4,
            "\"coreos.update.reboot_strategy\"",
        ),
        ("coreos:\n  oem: 1", 3, "\"coreos.oem\""),
        ("coreos:\n  units: {name: a}", 3, "\"coreos.units\""),
        ("coreos:\n  units:\n    - [a]", 4, "\"coreos.units[0]\""),
        (
            "coreos:\n  units:\n    - name: a.service\n      enable: maybe",
            5,
            "\"coreos.units[0].enable\"",
        ),
        (
            "coreos:\n  units:\n    - name: a.service\n      drop_ins: x",
            5,
            "\"coreos.units[0].drop_ins\"",
        ),
        (
            "coreos:\n  units:\n    - name: a.service\n      drop_ins:\n        - name: [x]",
            6,
            "\"coreos.units[0].drop_ins[0].name\"",
        ),
        ("runcmd: {a: b}", 2, "\"runcmd\""),
        ("runcmd:\n  - {a: b}", 3, "\"runcmd[0]\""),
        ("bootcmd: 42", 2, "\"bootcmd\""),
    ];
    for &(yaml, line, needle) in cases {
        let found = checked(format!("#cloud-config\n{yaml}\n").as_bytes());
        assert!(
            found
                .iter()
                .any(|d| d.kind != Kind::Info && d.line == line && d.message.contains(needle)),
            "{yaml}: nothing on line {line} containing {needle:?} in {found:#?}"
        );
    }
}

#[test]
fn huge_content() {
    // A 20 MB file content in a block scalar; what follows it is still on its own line.
    let line = "x".repeat(99);
    let mut text =
        String::from("#cloud-config\nwrite_files:\n  - path: /var/big\n    content: |\n");
    for _ in 0..200_000 {
        text.push_str("      ");
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("hostname: [oops]\n");
    let (data, found) = parse_user_data(text.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    expect(&found, Kind::Warning, 200_005, "\"hostname\"");
    let config = cloud_config(data);
    assert_eq!(config.write_files[0].content.len(), 20_000_000);
}

#[test]
fn many_users() {
    // 100,000 users with keys, one per line; the bad one at the end is named on its line.
    let mut text = String::from("#cloud-config\nusers:\n");
    for index in 0..100_000 {
        text.push_str(&format!(
            "  - {{name: user{index}, groups: [docker], ssh_authorized_keys: [\"ssh-ed25519 K{index}\"]}}\n"
        ));
    }
    text.push_str("  - {name: \"not a name\"}\n");
    let (data, found) = parse_user_data(text.as_bytes());
    assert_eq!(found.len(), 1, "{found:?}");
    expect(&found, Kind::Error, 100_003, "not a valid user name");
    let config = cloud_config(data);
    assert_eq!(config.users.len(), 100_000);
    let last = &config.users[99_999];
    assert_eq!((last.name.as_str(), last.line), ("user99999", 100_002));
    assert_eq!(last.ssh_authorized_keys, ["ssh-ed25519 K99999"]);
}

#[test]
fn nul_bytes() {
    // A raw NUL anywhere in a cloud-config: an error on its line, and nothing applied.
    let text = b"#cloud-config\nhostname: a\nusers: x\0y\n";
    let (data, found) = parse_user_data(text);
    expect(&found, Kind::Error, 3, "NUL byte");
    assert_eq!(cloud_config(data), CloudConfig::default());
    // Before or inside the #cloud-config line, it is not a cloud-config at all.
    expect(
        &checked(b"\0#cloud-config\n"),
        Kind::Error,
        1,
        "must start with",
    );
    expect(
        &checked(b"#cloud-config\0\n"),
        Kind::Error,
        1,
        "must start with",
    );
    // A NUL written as an escape is valid YAML, but not in a hostname or a path.
    let text = b"#cloud-config\nhostname: \"a\\0b\"\nwrite_files:\n  - path: \"/etc/a\\0b\"\n";
    let found = checked(text);
    expect(&found, Kind::Error, 2, "control character");
    expect(&found, Kind::Error, 4, "NUL byte");
    let config = cloud_config(parse_user_data(text).0);
    assert!(config.hostname.is_none() && config.write_files.is_empty());
    // A block scalar's final line break is not a control character in a hostname.
    let config = cloud_config(parse_user_data(b"#cloud-config\nhostname: |\n  node1\n").0);
    assert_eq!(config.hostname.unwrap().value, "node1\n");
    // Scripts are bytes: NULs are theirs to keep.
    let script = b"#!/bin/sh\nprintf '\0\0'\n";
    let (data, found) = parse_user_data(script);
    assert!(found.is_empty());
    assert_eq!(data, UserData::Script(script.to_vec()));
    // In a MIME part: on the part's line in the whole document.
    let text = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: \0\n--b--\n";
    expect(&checked(text), Kind::Error, 7, "NUL byte");
    checked(b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-\0Type: text/cloud-config\n\n#cloud-config\n--b--\n");
}

#[test]
fn invalid_utf8_in_parts_and_gzip_is_on_its_line() {
    let text = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: a\nusers: \xff\n--b--\n";
    expect(&checked(text), Kind::Error, 8, "invalid UTF-8");
    // Lines of gzip user-data are lines of its decompressed text.
    let found = validate(&gzip(b"#cloud-config\nhostname: a\n\nusers: \xc3\x28\n"));
    expect(&found, Kind::Error, 4, "invalid UTF-8");
    // Decoded content is reported on the part's first line, naming its own line.
    let part = base64(b"#cloud-config\nhostname: a\n\xff\n");
    let text = format!(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\nContent-Transfer-Encoding: base64\n\n{part}\n--b--\n"
    );
    expect(
        &checked(text.as_bytes()),
        Kind::Error,
        7,
        "(decoded), line 3: invalid UTF-8",
    );
}

#[test]
fn truncated_gzip_is_an_error_at_line_1() {
    let zipped = gzip(SEED_CONFIG.as_bytes());
    for cut in 2..zipped.len() {
        let found = validate(&zipped[..cut]);
        assert_eq!(found.len(), 1, "cut at {cut}: {found:?}");
        expect(&found, Kind::Error, 1, "not valid gzip");
    }
    // Trailing garbage is not another gzip member.
    let mut garbage = zipped.clone();
    garbage.extend_from_slice(b"garbage");
    expect(&validate(&garbage), Kind::Error, 1, "not valid gzip");
    // In a MIME part: at the part's first line.
    let part = base64(&zipped[..zipped.len() / 2]);
    let text = format!(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/gzip\nContent-Transfer-Encoding: base64\n\n{part}\n--b--\n"
    );
    expect(&checked(text.as_bytes()), Kind::Error, 7, "not valid gzip");
    // In write_files: at the entry.
    let content = base64(&gzip(b"hello\n")[..10]);
    let text = format!(
        "#cloud-config\nwrite_files:\n  - path: /etc/x\n    encoding: gzip+base64\n    content: {content}\n"
    );
    let found = checked(text.as_bytes());
    assert!(
        found
            .iter()
            .any(|d| d.is_error() && (3..=5).contains(&d.line) && d.message.contains("gzip")),
        "{found:?}"
    );
}

#[test]
fn gzip_bombs_are_refused_on_their_line() {
    // Just over the limit, in one member and in gzip of gzip.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(MAX_DECOMPRESSED_SIZE >> 20) {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.write_all(b"\n").unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 100_000);
    let found = validate(&bomb);
    assert_eq!(found.len(), 1, "{found:?}");
    expect(&found, Kind::Error, 1, "decompresses to more than 64 MiB");
    let found = validate(&gzip(&bomb));
    expect(&found, Kind::Error, 1, "decompresses to more than 64 MiB");
    // As a MIME part: on the part's first line.
    let text = format!(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: application/gzip\nContent-Transfer-Encoding: base64\n\n{}\n--b--\n",
        base64(&bomb)
    );
    expect(
        &checked(text.as_bytes()),
        Kind::Error,
        7,
        "more than 64 MiB",
    );
}

#[test]
fn multipart_with_broken_boundaries() {
    const HEAD: &str = "Content-Type: multipart/mixed; boundary=b\n\n";
    let part = "--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: x\n";
    let cases: Vec<(String, Kind, usize, &str)> = vec![
        // The boundary never appears.
        (
            format!("{HEAD}--c\nContent-Type: text/cloud-config\n\n#cloud-config\n--c--\n"),
            Kind::Error,
            2,
            "no parts",
        ),
        // No closing delimiter: a warning at the end, the part still read.
        (format!("{HEAD}{part}"), Kind::Warning, 8, "does not end with \"--b--\""),
        // An empty boundary, a quote left open, no body at all.
        (
            "Content-Type: multipart/mixed; boundary=\"\"\n\n--\n".into(),
            Kind::Error,
            2,
            "no boundary parameter",
        ),
        (
            format!("Content-Type: multipart/mixed; boundary=\"b\n\n{part}--b--\n"),
            Kind::Error,
            2,
            "no parts",
        ),
        (
            "Content-Type: multipart/mixed; boundary=b\n".into(),
            Kind::Error,
            1,
            "no parts",
        ),
        // A part nested with the outer boundary ends where the outer one says.
        (
            format!("{HEAD}--b\nContent-Type: multipart/mixed; boundary=b\n\n--b\n--b--\n--b--\n"),
            Kind::Error,
            4,
            "no parts",
        ),
        // A part whose first header line is a continuation has no headers.
        (
            format!("{HEAD}--b\n folded\n\n#cloud-config\n--b--\n"),
            Kind::Error,
            4,
            "must start with",
        ),
        (
            format!("{HEAD}--b\nContent-Type: text/cloud-config\nContent-Transfer-Encoding: base64\n\n!!!\n--b--\n"),
            Kind::Error,
            7,
            "not valid base64",
        ),
        (
            format!("{HEAD}--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: [\n--b--\n"),
            Kind::Error,
            7,
            "YAML syntax error",
        ),
        // No line break before the closing delimiter's line break.
        (
            format!("{HEAD}--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: [a\n--b--"),
            Kind::Error,
            7,
            "YAML syntax error",
        ),
    ];
    for (text, kind, line, needle) in &cases {
        expect(&checked(text.as_bytes()), *kind, *line, needle);
    }
    let (data, _) = parse_user_data(format!("{HEAD}{part}").as_bytes());
    let UserData::Multipart(parts) = data else {
        panic!()
    };
    assert_eq!(cloud_config(parts[0].clone()).hostname.unwrap().line, 7);

    // CRLF and trailing blanks on delimiter lines; lines that only look like delimiters.
    let text = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b  \r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\necho --bb\r\n--b-\r\n--b--  \r\n";
    let (data, found) = parse_user_data(text.as_bytes());
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(
        data,
        UserData::Multipart(vec![UserData::Script(
            b"#!/bin/sh\r\necho --bb\r\n--b-".to_vec()
        )])
    );
}

#[test]
fn many_parts_keep_their_lines() {
    // 20,000 parts: each part's lines are still lines of the whole document (and counting
    // them is linear).
    let mut text = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
    for index in 0..20_000 {
        text.push_str(&format!(
            "--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: h{index}\n"
        ));
    }
    text.push_str(
        "--b\nContent-Type: text/cloud-config\n\n#cloud-config\nhostname: [bad]\n--b--\n",
    );
    let (data, found) = parse_user_data(text.as_bytes());
    expect(&found, Kind::Warning, 100_007, "\"hostname\"");
    let UserData::Multipart(parts) = data else {
        panic!()
    };
    assert_eq!(parts.len(), 20_001);
    let hostname = cloud_config(parts[19_999].clone()).hostname.unwrap();
    assert_eq!(
        (hostname.value.as_str(), hostname.line),
        ("h19999", 100_002)
    );
}

#[test]
fn decoded_parts_are_applied_with_the_parts_line() {
    // A base64 part's model names the part's first line, as its diagnostics do: lines of the
    // decoded text are not lines of the document.
    let part = base64(b"#cloud-config\n\n\n\n\n\n\n\n\n\nhostname: h\nusers:\n  - name: core\n");
    let text = format!(
        "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/cloud-config\nContent-Transfer-Encoding: base64\n\n{part}\n--b--\n"
    );
    let (data, found) = parse_user_data(text.as_bytes());
    assert!(found.is_empty(), "{found:?}");
    let UserData::Multipart(parts) = data else {
        panic!()
    };
    let config = cloud_config(parts[0].clone());
    assert_eq!(config.hostname.unwrap().line, 7);
    assert_eq!(config.users[0].line, 7);
}

#[test]
fn long_names_are_cut_in_messages() {
    let long = "k".repeat(10_000);
    let texts = [
        format!("#cloud-config\n{long}: 1\n"),
        format!("#cloud-config\n{long}: 1\n{long}: 2\n"),
        format!("#cloud-config\ncoreos:\n  etcd2:\n    {long}: 1\n"),
        format!("#cloud-config\nusers:\n  - name: \"{long} x\"\n"),
        format!("Content-Type: multipart/mixed; boundary={long}\n\n--b\n"),
        format!("Content-Type: multipart/mixed; boundary={long}\n\n--{long}\n"),
        format!("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/{long}\n\nx\n--b--\n"),
        format!("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Transfer-Encoding: {long}\n\nx\n--b--\n"),
        format!("Content-Type: {long}/mixed\n\n--b\n"),
    ];
    for text in &texts {
        let found = checked(text.as_bytes());
        assert!(!found.is_empty(), "{text:.100}");
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}
