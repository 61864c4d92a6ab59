//! Whole-image builds through the real `keel` binary: two builds from the same inputs give the
//! same raw image, and a warm rebuild with one overlay file changed reuses the cached base tree.
//!
//! These run the real pipeline (mmdebstrap on a cold cache, mkfs, verity, GPT), so they are
//! ignored by default; `make test` runs them after `make image` has warmed the cache.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from)
}

fn keel_bin() -> PathBuf {
    let p = std::env::var_os("KEEL_BIN")
        .map_or_else(|| target_dir().join("release/keel"), PathBuf::from);
    assert!(
        p.is_file(),
        "{} missing: run `make tools` (or set KEEL_BIN)",
        p.display()
    );
    p
}

fn init_bin() -> PathBuf {
    let p = std::env::var_os("KEEL_INIT").map_or_else(
        || target_dir().join("x86_64-unknown-linux-gnu/release/keel-init"),
        PathBuf::from,
    );
    assert!(
        p.is_file(),
        "{} missing: run `make tools` (or set KEEL_INIT)",
        p.display()
    );
    p
}

/// Builds into `out`; `live` adds the ISO, raw.gz and PXE files.
fn build(out: &Path, overlays: &Path, live: bool) -> Value {
    let status = Command::new(keel_bin())
        .arg("build")
        .arg(workspace().join("configs/image.yaml"))
        .arg("--out")
        .arg(out)
        .arg("--overlays")
        .arg(overlays)
        .arg("--init")
        .arg(init_bin())
        .arg("--provision")
        .arg(init_bin().with_file_name("keel-provision"))
        .arg("--no-qcow2")
        .args(if live { &[][..] } else { &["--no-live"][..] })
        .status()
        .unwrap();
    assert!(status.success(), "keel build failed");
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
#[ignore = "runs two whole image builds: make test runs it"]
fn two_builds_give_the_same_raw_image_and_a_changed_overlay_reuses_the_base() {
    let tmp = tempfile::tempdir_in(
        std::env::var_os("KEEL_CACHE_DIR").unwrap_or("/var/cache/keel".into()),
    )
    .unwrap();
    let overlays = workspace().join("overlays");
    let a = build(&tmp.path().join("a"), &overlays, true);
    let b = build(&tmp.path().join("b"), &overlays, true);
    let (raw_a, raw_b) = (tmp.path().join("a/keel.raw"), tmp.path().join("b/keel.raw"));
    let sum_a = sha256sum(&raw_a);
    println!(
        "build 1: {sum_a}  ({:.1}s)",
        a["build"]["seconds"].as_f64().unwrap()
    );
    let sum_b = sha256sum(&raw_b);
    println!(
        "build 2: {sum_b}  ({:.1}s)",
        b["build"]["seconds"].as_f64().unwrap()
    );
    assert_eq!(sum_a, sum_b, "two builds from the same inputs differ");
    // Every other output too: the ISO, raw.gz and the PXE files are in SHA256SUMS.
    let sums =
        |dir: &str| std::fs::read_to_string(tmp.path().join(dir).join("SHA256SUMS")).unwrap();
    let (sums_a, sums_b) = (sums("a"), sums("b"));
    for name in [
        "keel.iso",
        "keel.raw.gz",
        "pxe/vmlinuz",
        "pxe/initrd.img",
        "pxe/rootfs.img",
        "pxe/keel.ipxe",
    ] {
        assert!(
            sums_a.contains(&format!("  {name}\n")),
            "{name} is not in SHA256SUMS:\n{sums_a}"
        );
    }
    assert_eq!(
        sums_a, sums_b,
        "two builds from the same inputs give different files"
    );
    assert_eq!(a["root_hash"], b["root_hash"]);
    assert_eq!(b["build"]["base_tree_cached"], Value::Bool(true));
    std::fs::remove_file(&raw_a).unwrap();

    // One overlay file changed: the base tree comes from the cache, the root hash moves.
    let changed = tmp.path().join("overlays");
    copy_tree(&overlays, &changed);
    std::fs::write(changed.join("base/etc/hostname"), "keel-changed\n").unwrap();
    let c = build(&tmp.path().join("c"), &changed, false);
    println!(
        "warm rebuild with one overlay file changed: {:.1}s",
        c["build"]["seconds"].as_f64().unwrap()
    );
    assert_eq!(c["build"]["base_tree_cached"], Value::Bool(true));
    assert_eq!(c["build"]["base_tree_key"], a["build"]["base_tree_key"]);
    assert_ne!(c["root_hash"], a["root_hash"]);
    let hostname = Command::new(keel_bin())
        .arg("inspect")
        .arg(tmp.path().join("c/keel.raw"))
        .arg("/etc/hostname")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hostname.stdout), "keel-changed\n");
}
