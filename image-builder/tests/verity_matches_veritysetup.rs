//! The Rust hash tree must be byte-identical to `veritysetup format` with the same salt and
//! UUID, and `veritysetup verify` must accept it.

use keel_image::verity;
use std::fs;
use std::process::Command;
use uuid::Uuid;

fn veritysetup() -> &'static str {
    assert!(
        Command::new("veritysetup")
            .arg("--version")
            .output()
            .is_ok(),
        "veritysetup is missing: apt-get install cryptsetup-bin"
    );
    "veritysetup"
}

fn check(data_blocks: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data");
    // Varied content so that a swapped or misplaced block changes the hashes.
    let data: Vec<u8> = (0..data_blocks * 4096)
        .map(|i| ((i / 4096) as u8).wrapping_mul(31) ^ (i as u8))
        .collect();
    fs::write(&data_path, &data).unwrap();
    let salt = [0x5au8; 32];
    let uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);

    let ours = verity::build(&mut &data[..], data.len() as u64, &salt, uuid, |_| {}).unwrap();
    let our_hash_path = dir.path().join("ours.hash");
    fs::write(&our_hash_path, &ours.hash_device).unwrap();

    let theirs_path = dir.path().join("theirs.hash");
    let out = Command::new(veritysetup())
        .args([
            "format",
            "--hash=sha256",
            "--data-block-size=4096",
            "--hash-block-size=4096",
        ])
        .arg(format!("--salt={}", hex::encode(salt)))
        .arg(format!("--uuid={uuid}"))
        .arg(&data_path)
        .arg(&theirs_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root_line = stdout
        .lines()
        .find(|l| l.starts_with("Root hash:"))
        .unwrap();
    assert_eq!(
        root_line.split_whitespace().last().unwrap(),
        hex::encode(ours.root_hash)
    );

    let theirs = fs::read(&theirs_path).unwrap();
    assert_eq!(
        theirs.len(),
        ours.hash_device.len(),
        "hash device sizes differ"
    );
    assert!(theirs == ours.hash_device, "hash devices differ");

    let verify = Command::new("veritysetup")
        .arg("verify")
        .arg(&data_path)
        .arg(&our_hash_path)
        .arg(hex::encode(ours.root_hash))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
}

#[test]
fn one_level_tree_matches() {
    check(100);
}

#[test]
fn multi_level_tree_matches() {
    check(128 * 130 + 7);
}

#[test]
fn single_block_matches() {
    check(1);
}
