//! Build figures, printed not asserted: a cold build (empty base-tree cache, so mmdebstrap
//! runs), a warm build (cached base tree), and the sizes of what they made.
//! Run with `make bench` (or `cargo bench -p keel-image --bench build` after `make tools`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn target_dir(ws: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| ws.join("target"), PathBuf::from)
}

fn build(ws: &Path, cache: &Path, out: &Path) -> Value {
    let t = target_dir(ws);
    let status = Command::new(t.join("release/keel"))
        .arg("build")
        .arg(ws.join("configs/image.yaml"))
        .arg("--out")
        .arg(out)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--init")
        .arg(t.join("x86_64-unknown-linux-gnu/release/keel-init"))
        .arg("--provision")
        .arg(t.join("x86_64-unknown-linux-gnu/release/keel-provision"))
        .status()
        .expect("run keel build (make tools first)");
    assert!(status.success(), "keel build failed");
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn mib(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0) / 1048576.0
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let scratch = tempfile::tempdir_in(
        std::env::var_os("KEEL_CACHE_DIR").unwrap_or("/var/cache/keel".into()),
    )
    .unwrap();
    let cache = scratch.path().join("cache");
    let cold = build(&ws, &cache, &scratch.path().join("cold"));
    let warm = build(&ws, &cache, &scratch.path().join("warm"));
    println!(
        "build.cold_s {:.1}",
        cold["build"]["seconds"].as_f64().unwrap()
    );
    println!(
        "build.warm_s {:.1}",
        warm["build"]["seconds"].as_f64().unwrap()
    );
    for (step, secs) in warm["build"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_str().unwrap(), s[1].as_f64().unwrap()))
    {
        println!("build.warm_step_s[{step}] {secs:.1}");
    }
    let s = &warm["sizes"];
    println!("size.raw_mib {:.1}", mib(&s["raw_bytes"]));
    println!(
        "size.raw_allocated_mib {:.1}",
        mib(&s["raw_allocated_bytes"])
    );
    println!("size.qcow2_mib {:.1}", mib(&s["qcow2_bytes"]));
    println!("size.root_tree_mib {:.1}", mib(&s["root_tree_bytes"]));
    println!(
        "size.rootfs_used_mib {:.1}",
        mib(&s["rootfs"]["used_bytes"])
    );
    println!("size.rootfs_mib {:.1}", mib(&s["rootfs"]["size_bytes"]));
    println!(
        "size.verity_kib {:.0}",
        s["verity_bytes"].as_f64().unwrap() / 1024.0
    );
    println!(
        "size.initramfs_kib {:.0}",
        s["initramfs_bytes"].as_f64().unwrap() / 1024.0
    );
    println!("packages {}", warm["packages"].as_object().unwrap().len());
}
