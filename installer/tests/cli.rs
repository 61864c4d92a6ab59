//! The `keel-install` binary: its step lines on stdout and its exit codes.

mod common;

use std::fs;
use std::process::Command;

use common::*;

#[test]
fn prints_one_line_per_step_and_exits_zero_or_one() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);
    let config = work.path().join("user.yaml");
    fs::write(&config, "#cloud-config\nhostname: from-cli\n").unwrap();

    let output = Command::new(env!("CARGO_BIN_EXE_keel-install"))
        .arg("-d")
        .arg(&target)
        .arg("-c")
        .arg(&config)
        .arg("-i")
        .arg(&fixture.gz)
        .arg("--tmp-dir")
        .arg(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(
        lines[0].starts_with("verified keel.raw.gz against SHA256SUMS"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("wrote 64 MiB to "), "{stdout}");
    assert!(lines[1].ends_with(" s"), "{stdout}");
    assert!(lines[2].starts_with("placed cloud-config "), "{stdout}");
    assert!(lines[3].starts_with("done: "), "{stdout}");
    assert_eq!(
        read_esp_file(&target, &fixture.esp, "keel/user-data").unwrap(),
        b"#cloud-config\nhostname: from-cli\n"
    );

    // A failure: exit status 1, the reason on stderr, nothing on stdout.
    let output = Command::new(env!("CARGO_BIN_EXE_keel-install"))
        .args(["-d", "/dev/null", "-i"])
        .arg(&fixture.raw)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(output.stdout.is_empty());
    assert!(
        stderr.contains("keel-install: error: cannot install onto /dev/null"),
        "{stderr}"
    );

    // A usage error is clap's (status 2), before anything is looked at.
    let output = Command::new(env!("CARGO_BIN_EXE_keel-install"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
