//! Reading files out of a raw image: a staged tree goes through mkfs.ext4 -d and write_disk,
//! and comes back out through inspect.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_image::disk::{write_disk, PartitionSpec};
use keel_image::inspect::{format_listing, list_dir, read_file, DirEntryInfo, InspectError};
use keel_image::layout;
use tempfile::TempDir;
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;
const OS_RELEASE: &str = "ID=keel\nNAME=Keel\n";
const HELLO: &str = "#!/bin/sh\necho hello\n";

fn part(label: &str, type_guid: Uuid, n: u128, size_bytes: u64) -> PartitionSpec {
    PartitionSpec {
        label: label.to_owned(),
        type_guid,
        uuid: Uuid::from_u128(0x1e570000_0000_4000_8000_000000000000 + n),
        size_bytes,
        contents: None,
    }
}

/// Stages a small root tree: a file, nested directories (one empty), a relative symlink to a
/// file, a relative symlink to a directory, and an executable.
fn stage_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/empty")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("usr/lib/os-release"), OS_RELEASE).unwrap();
    symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    let hello = root.join("usr/bin/hello");
    fs::write(&hello, HELLO).unwrap();
    fs::set_permissions(&hello, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc/hostname"), "keel\n").unwrap();
    fs::set_permissions(root.join("etc/hostname"), fs::Permissions::from_mode(0o644)).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
}

/// Builds a raw image whose ROOT-A holds an ext4 of the staged tree, in a fresh tempdir.
fn build_image() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    stage_tree(&tree);
    let rootfs = dir.path().join("root.ext4");
    // Captured: even with -q, mkfs.ext4 announces that it creates the file.
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&rootfs)
        .arg("16M")
        .output()
        .expect("mkfs.ext4 (e2fsprogs) must be installed");
    assert!(output.status.success(), "{output:?}");

    let mut root = part(layout::LABEL_ROOT_A, layout::ROOT_X86_64_TYPE, 2, 16 * MIB);
    root.contents = Some(rootfs);
    let parts = vec![
        part(layout::LABEL_ESP, layout::ESP_TYPE, 1, MIB),
        root,
        part(
            layout::LABEL_ROOT_A_VERITY,
            layout::ROOT_VERITY_X86_64_TYPE,
            3,
            MIB,
        ),
        part(layout::LABEL_STATE, layout::VAR_TYPE, 4, 0),
    ];
    let image = dir.path().join("keel.raw");
    write_disk(&image, Uuid::from_u128(7), 24 * MIB, &parts).unwrap();
    (dir, image)
}

#[test]
fn reads_a_file() {
    let (_dir, image) = build_image();
    assert_eq!(
        read_file(&image, "/usr/lib/os-release").unwrap(),
        OS_RELEASE.as_bytes()
    );
    // A path without the leading slash is taken from the root too.
    assert_eq!(
        read_file(&image, "usr/bin/hello").unwrap(),
        HELLO.as_bytes()
    );
}

#[test]
fn follows_symlinks() {
    let (_dir, image) = build_image();
    // A relative symlink to a file, and a path through a symlinked directory.
    assert_eq!(
        read_file(&image, "/etc/os-release").unwrap(),
        OS_RELEASE.as_bytes()
    );
    assert_eq!(read_file(&image, "/bin/hello").unwrap(), HELLO.as_bytes());
}

#[test]
fn lists_the_root_sorted_with_kinds_and_links() {
    let (_dir, image) = build_image();
    let entries = list_dir(&image, "/").unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["bin", "etc", "lost+found", "usr"]);

    let bin = &entries[0];
    assert_eq!(bin.kind, 'l');
    assert_eq!(bin.symlink_target.as_deref(), Some("usr/bin"));
    assert_eq!(bin.size, "usr/bin".len() as u64);
    assert_eq!(bin.mode, 0o777);
    let etc = &entries[1];
    assert_eq!(
        (etc.kind, etc.mode, etc.symlink_target.as_deref()),
        ('d', 0o755, None)
    );

    let listing = format_listing(&entries);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines[0], "lrwxrwxrwx          7 bin -> usr/bin");
    assert_eq!(lines[1], format!("drwxr-xr-x {:>10} etc", etc.size));
}

#[test]
fn lists_files_with_their_modes_and_sizes() {
    let (_dir, image) = build_image();
    let etc = list_dir(&image, "/etc").unwrap();
    assert_eq!(
        etc,
        [
            DirEntryInfo {
                name: "hostname".into(),
                kind: '-',
                mode: 0o644,
                size: 5,
                symlink_target: None,
            },
            DirEntryInfo {
                name: "os-release".into(),
                kind: 'l',
                mode: 0o777,
                size: "../usr/lib/os-release".len() as u64,
                symlink_target: Some("../usr/lib/os-release".into()),
            },
        ]
    );

    // Listing through the /bin symlink lists /usr/bin.
    let bin = list_dir(&image, "/bin").unwrap();
    assert_eq!(bin.len(), 1);
    assert_eq!(
        (bin[0].name.as_str(), bin[0].kind, bin[0].mode),
        ("hello", '-', 0o755)
    );
    assert_eq!(
        format_listing(&bin),
        format!("-rwxr-xr-x {:>10} hello\n", HELLO.len())
    );

    assert!(list_dir(&image, "/usr/share/empty").unwrap().is_empty());
}

#[test]
fn formats_special_permission_bits_like_ls() {
    let entry = |name: &str, kind, mode| DirEntryInfo {
        name: name.into(),
        kind,
        mode,
        size: 0,
        symlink_target: None,
    };
    let listing = format_listing(&[
        entry("su", '-', 0o4755),
        entry("sgid-noexec", '-', 0o2640),
        entry("tmp", 'd', 0o1777),
        entry("sticky-noexec", 'd', 0o1776),
        entry("null", 'c', 0o666),
    ]);
    let expected = "\
-rwsr-xr-x          0 su
-rw-r-S---          0 sgid-noexec
drwxrwxrwt          0 tmp
drwxrwxrwT          0 sticky-noexec
crw-rw-rw-          0 null
";
    assert_eq!(listing, expected);
    assert_eq!(format_listing(&[]), "");
}

#[test]
fn missing_path_is_named_in_the_error() {
    let (_dir, image) = build_image();
    let err = read_file(&image, "/etc/shadow").unwrap_err();
    assert!(matches!(err, InspectError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("/etc/shadow"), "{err}");

    let err = list_dir(&image, "/nope").unwrap_err();
    assert!(matches!(err, InspectError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("/nope"), "{err}");
}

#[test]
fn reading_a_directory_suggests_ls() {
    let (_dir, image) = build_image();
    let err = read_file(&image, "/etc").unwrap_err();
    assert!(matches!(err, InspectError::IsADirectory { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("/etc") && message.contains("--ls"),
        "{message}"
    );

    // Also through a symlink to a directory.
    let err = read_file(&image, "/bin").unwrap_err();
    assert!(matches!(err, InspectError::IsADirectory { .. }), "{err:?}");
}

#[test]
fn listing_a_file_is_an_error() {
    let (_dir, image) = build_image();
    let err = list_dir(&image, "/etc/hostname").unwrap_err();
    assert!(matches!(err, InspectError::NotADirectory { .. }), "{err:?}");
    assert!(err.to_string().contains("/etc/hostname"), "{err}");
}

#[test]
fn missing_image_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("absent.raw");
    let err = read_file(&image, "/etc/os-release").unwrap_err();
    assert!(matches!(err, InspectError::ImageMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.raw"), "{err}");
}

#[test]
fn qcow2_image_points_at_the_raw_one() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("keel.qcow2");
    let mut header = b"QFI\xfb\x00\x00\x00\x03".to_vec();
    header.resize(4096, 0);
    fs::write(&image, header).unwrap();
    let err = list_dir(&image, "/").unwrap_err();
    assert!(matches!(err, InspectError::Qcow2 { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("qcow2"), "{message}");
    assert!(message.contains("qemu-img convert -O raw"), "{message}");
    assert!(message.contains("keel.qcow2"), "{message}");
}

#[test]
fn file_without_a_gpt_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("blank.raw");
    fs::write(&image, vec![0u8; MIB as usize]).unwrap();
    let err = read_file(&image, "/etc/os-release").unwrap_err();
    assert!(matches!(err, InspectError::Disk(_)), "{err:?}");
    assert!(err.to_string().contains("blank.raw"), "{err}");

    // Too short even for the qcow2 check.
    fs::write(&image, b"ab").unwrap();
    let err = read_file(&image, "/etc/os-release").unwrap_err();
    assert!(matches!(err, InspectError::Disk(_)), "{err:?}");
}

#[test]
fn image_without_root_a_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("no-root.raw");
    let parts = vec![
        part(layout::LABEL_ESP, layout::ESP_TYPE, 1, MIB),
        part(layout::LABEL_STATE, layout::VAR_TYPE, 4, 0),
    ];
    write_disk(&image, Uuid::from_u128(8), 8 * MIB, &parts).unwrap();
    let err = read_file(&image, "/etc/os-release").unwrap_err();
    let message = err.to_string();
    assert!(message.contains("ROOT-A"), "{message}");
    assert!(message.contains("EFI-SYSTEM, STATE"), "{message}");
}

#[test]
fn root_a_without_ext4_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("empty-root.raw");
    let parts = vec![part(
        layout::LABEL_ROOT_A,
        layout::ROOT_X86_64_TYPE,
        2,
        2 * MIB,
    )];
    write_disk(&image, Uuid::from_u128(9), 8 * MIB, &parts).unwrap();
    let err = read_file(&image, "/etc/os-release").unwrap_err();
    assert!(
        matches!(err, InspectError::LoadFilesystem { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("ROOT-A") && message.contains("empty-root.raw"),
        "{message}"
    );
}
