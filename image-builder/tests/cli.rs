//! The `keel` binary's promises on bad input: a spec error names the file and line, a missing
//! host tool names the Debian package, and nothing is written to the output folder.

use std::path::Path;
use std::process::Command;

fn keel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keel"))
}

fn real_spec() -> String {
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::read_to_string(ws.join("configs/image.yaml")).unwrap()
}

#[test]
fn a_spec_typo_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("image.yaml");
    let text = real_spec().replacen("\noverlays: ", "\noverlay: [extra]\noverlays: ", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("overlay:"))
        .unwrap()
        + 1;
    std::fs::write(&spec, text).unwrap();
    let out = keel()
        .arg("build")
        .arg(&spec)
        .arg("--out")
        .arg(dir.path().join("out"))
        .args(["--init", "/bin/true", "--provision", "/bin/true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("image.yaml:{line}: unknown field `overlay`")),
        "{stderr}"
    );
    assert!(
        !dir.path().join("out").exists(),
        "output written despite the error"
    );
}

#[test]
fn a_wrong_type_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("image.yaml");
    let text = real_spec().replacen(
        "source_date_epoch: 1700000000",
        "source_date_epoch: yesterday",
        1,
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("source_date_epoch:"))
        .unwrap()
        + 1;
    std::fs::write(&spec, text).unwrap();
    let out = keel()
        .arg("build")
        .arg(&spec)
        .args(["--init", "/bin/true", "--provision", "/bin/true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "image.yaml:{line}: source_date_epoch: invalid type"
        )),
        "{stderr}"
    );
}

#[test]
fn a_missing_host_tool_names_its_debian_package() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("image.yaml");
    std::fs::write(&spec, real_spec()).unwrap();
    // An empty PATH hides every tool; the builder also looks in /usr/sbin and /sbin, so point
    // the check at a tool that lives in neither: mmdebstrap is in /usr/bin.
    let out = keel()
        .arg("build")
        .arg(&spec)
        .args(["--init", "/bin/true", "--provision", "/bin/true"])
        .env("PATH", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`mmdebstrap` is not installed: apt-get install mmdebstrap"),
        "{stderr}"
    );
}

#[test]
fn inspect_refuses_a_missing_image_clearly() {
    let out = keel()
        .args(["inspect", "/nonexistent/keel.raw", "/etc/os-release"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/keel.raw"));
}
