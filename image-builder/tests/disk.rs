//! GPT disk assembly: layout, determinism, sparseness, and agreement with util-linux's sfdisk.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_image::disk::{
    find_partition, read_partitions, write_disk, DiskError, PartitionSpec, PlacedPartition,
};
use keel_image::layout;
use uuid::Uuid;

const MIB: u64 = 1024 * 1024;
const DISK_GUID: Uuid = Uuid::from_u128(0x0d15c000_0000_4000_8000_000000000001);

fn partuuid(n: u128) -> Uuid {
    Uuid::from_u128(0x9a7e0000_0000_4000_8000_000000000000 + n)
}

fn spec(label: &str, type_guid: Uuid, n: u128, size_bytes: u64) -> PartitionSpec {
    PartitionSpec {
        label: label.to_owned(),
        type_guid,
        uuid: partuuid(n),
        size_bytes,
        contents: None,
    }
}

/// Keel's six partitions, with sizes that need rounding and a STATE that fills the disk.
fn keel_layout(root_contents: Option<PathBuf>) -> Vec<PartitionSpec> {
    let mut root = spec(layout::LABEL_ROOT_A, layout::ROOT_X86_64_TYPE, 2, 20 * MIB);
    root.contents = root_contents;
    vec![
        spec(layout::LABEL_ESP, layout::ESP_TYPE, 1, 8 * MIB),
        root,
        // Not a MiB multiple: rounds up to 1 MiB.
        spec(
            layout::LABEL_ROOT_A_VERITY,
            layout::ROOT_VERITY_X86_64_TYPE,
            3,
            100_000,
        ),
        spec(layout::LABEL_ROOT_B, layout::ROOT_X86_64_TYPE, 4, 20 * MIB),
        // One byte over 2 MiB: rounds up to 3 MiB.
        spec(
            layout::LABEL_ROOT_B_VERITY,
            layout::ROOT_VERITY_X86_64_TYPE,
            5,
            2 * MIB + 1,
        ),
        spec(layout::LABEL_STATE, layout::VAR_TYPE, 6, 0),
    ]
}

/// 5 MiB of contents: non-zero first MiB, an all-zero 2 MiB gap, then non-zero data and a
/// short non-zero tail, so both skipped chunks and a partial last chunk are exercised.
fn write_contents(path: &Path) -> Vec<u8> {
    let mut data = vec![0u8; (4 * MIB) as usize + 1000];
    for (i, byte) in data.iter_mut().enumerate() {
        let in_gap = (MIB as usize..(3 * MIB) as usize).contains(&i);
        if !in_gap {
            *byte = (i % 251) as u8 + 1;
        }
    }
    fs::write(path, &data).unwrap();
    data
}

/// sha256 through coreutils: the sha2 crate is unoptimised in test builds and takes seconds
/// per image.
fn sha256_of(path: &Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    text.split_whitespace().next().unwrap().to_owned()
}

const DISK_SIZE: u64 = 64 * MIB;

#[test]
fn partitions_are_aligned_in_order_and_rounded_up() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    let placed = write_disk(&image, DISK_GUID, DISK_SIZE, &keel_layout(None)).unwrap();

    let expected: Vec<(u32, &str, u64, u64)> = vec![
        (1, layout::LABEL_ESP, MIB, 8 * MIB),
        (2, layout::LABEL_ROOT_A, 9 * MIB, 20 * MIB),
        (3, layout::LABEL_ROOT_A_VERITY, 29 * MIB, MIB),
        (4, layout::LABEL_ROOT_B, 30 * MIB, 20 * MIB),
        (5, layout::LABEL_ROOT_B_VERITY, 50 * MIB, 3 * MIB),
        // The backup GPT takes the last 33 sectors, so STATE ends one MiB short of the disk.
        (6, layout::LABEL_STATE, 53 * MIB, DISK_SIZE - 54 * MIB),
    ];
    let got: Vec<(u32, &str, u64, u64)> = placed
        .iter()
        .map(|p| (p.number, p.label.as_str(), p.offset_bytes, p.size_bytes))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(fs::metadata(&image).unwrap().len(), DISK_SIZE);
    for (part, spec) in placed.iter().zip(keel_layout(None)) {
        assert_eq!(part.uuid, spec.uuid);
        assert_eq!(part.type_guid, spec.type_guid);
    }
}

#[test]
fn read_partitions_returns_what_write_disk_placed() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    let placed = write_disk(&image, DISK_GUID, DISK_SIZE, &keel_layout(None)).unwrap();
    assert_eq!(read_partitions(&image).unwrap(), placed);

    let root = find_partition(&image, layout::LABEL_ROOT_A).unwrap();
    assert_eq!(root, placed[1]);
    let err = find_partition(&image, "NOPE").unwrap_err();
    assert!(
        matches!(err, DiskError::PartitionNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("NOPE") && message.contains("ROOT-A-VERITY"),
        "{message}"
    );
}

#[test]
fn placed_partition_serializes_guids_as_text() {
    let placed = PlacedPartition {
        number: 2,
        label: layout::LABEL_ROOT_A.to_owned(),
        type_guid: layout::ROOT_X86_64_TYPE,
        uuid: partuuid(2),
        offset_bytes: 9 * MIB,
        size_bytes: 20 * MIB,
    };
    let json = serde_json::to_value(&placed).unwrap();
    assert_eq!(json["type_guid"], "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    let back: PlacedPartition = serde_json::from_value(json).unwrap();
    assert_eq!(back, placed);
}

#[test]
fn sfdisk_sees_the_requested_table_and_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    let specs = keel_layout(None);
    let placed = write_disk(&image, DISK_GUID, DISK_SIZE, &specs).unwrap();

    let output = Command::new("sfdisk")
        .arg("--json")
        .arg(&image)
        .output()
        .expect("sfdisk (util-linux fdisk package) must be installed");
    assert!(output.status.success(), "{output:?}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let table = &json["partitiontable"];
    assert_eq!(table["label"], "gpt");
    assert_eq!(table["sectorsize"], 512);
    assert_eq!(
        table["id"].as_str().unwrap().to_lowercase(),
        DISK_GUID.to_string()
    );
    let partitions = table["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), specs.len());
    for ((entry, spec), part) in partitions.iter().zip(&specs).zip(&placed) {
        assert_eq!(entry["name"], spec.label.as_str());
        assert_eq!(
            entry["type"].as_str().unwrap().to_lowercase(),
            spec.type_guid.to_string()
        );
        assert_eq!(
            entry["uuid"].as_str().unwrap().to_lowercase(),
            spec.uuid.to_string()
        );
        assert_eq!(entry["start"], part.offset_bytes / 512);
        assert_eq!(entry["size"], part.size_bytes / 512);
        // sfdisk lists "attrs" only when some attribute bit is set.
        assert!(entry.get("attrs").is_none(), "{entry}");
    }

    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("No errors detected"), "{stdout}\n{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn protective_mbr_is_written_with_a_zero_signature() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    write_disk(&image, DISK_GUID, DISK_SIZE, &keel_layout(None)).unwrap();
    let lba0 = &fs::read(&image).unwrap()[..512];
    assert_eq!(&lba0[440..444], &[0, 0, 0, 0], "disk signature");
    assert_eq!(lba0[446 + 4], 0xee, "protective partition type");
    let protective_start = u32::from_le_bytes(lba0[446 + 8..446 + 12].try_into().unwrap());
    let protective_sectors = u32::from_le_bytes(lba0[446 + 12..446 + 16].try_into().unwrap());
    assert_eq!(protective_start, 1);
    assert_eq!(u64::from(protective_sectors), DISK_SIZE / 512 - 1);
    assert_eq!(&lba0[510..], &[0x55, 0xaa]);
}

#[test]
fn same_arguments_give_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("root.img");
    write_contents(&contents);
    let first = dir.path().join("first.raw");
    let second = dir.path().join("second.raw");
    write_disk(
        &first,
        DISK_GUID,
        DISK_SIZE,
        &keel_layout(Some(contents.clone())),
    )
    .unwrap();
    write_disk(
        &second,
        DISK_GUID,
        DISK_SIZE,
        &keel_layout(Some(contents.clone())),
    )
    .unwrap();
    assert_eq!(sha256_of(&first), sha256_of(&second));

    // Writing over an existing image gives the same bytes too (the file is truncated first).
    fs::write(&second, vec![0xffu8; (DISK_SIZE + 4096) as usize]).unwrap();
    write_disk(&second, DISK_GUID, DISK_SIZE, &keel_layout(Some(contents))).unwrap();
    assert_eq!(sha256_of(&first), sha256_of(&second));
}

#[test]
fn contents_are_copied_and_zero_chunks_stay_holes() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("root.img");
    let data = write_contents(&contents);
    let image = dir.path().join("disk.raw");
    let placed = write_disk(&image, DISK_GUID, DISK_SIZE, &keel_layout(Some(contents))).unwrap();

    let disk = fs::read(&image).unwrap();
    let root = &placed[1];
    let start = root.offset_bytes as usize;
    assert_eq!(&disk[start..start + data.len()], &data[..]);
    // The rest of the partition reads as zeros.
    assert!(disk[start + data.len()..start + root.size_bytes as usize]
        .iter()
        .all(|&b| b == 0));

    // Only the GPT structures and the 3 non-zero MiBs of contents are allocated: well under the
    // 5 MiB the contents span. (Filesystems may allocate a little more than asked; allow slack.)
    let allocated = fs::metadata(&image).unwrap().blocks() * 512;
    assert!(allocated < 4 * MIB, "{allocated} bytes allocated");
}

#[test]
fn error_when_partitions_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    // 53 MiB of fixed partitions start at 1 MiB; on a 54 MiB disk the backup GPT leaves no room
    // for a MiB of STATE.
    let err = write_disk(&image, DISK_GUID, 54 * MIB, &keel_layout(None)).unwrap_err();
    assert!(
        matches!(err, DiskError::DoesNotFit { ref label, .. } if label == "STATE"),
        "{err}"
    );

    let err = write_disk(&image, DISK_GUID, 40 * MIB, &keel_layout(None)).unwrap_err();
    assert!(
        matches!(err, DiskError::DoesNotFit { ref label, .. } if label == "ROOT-B"),
        "{err}"
    );
    assert!(err.to_string().contains("ROOT-B"), "{err}");

    // A fixed-size last partition that runs into the backup GPT.
    let exact = vec![spec("ONLY", layout::VAR_TYPE, 1, 3 * MIB)];
    let err = write_disk(&image, DISK_GUID, 4 * MIB, &exact).unwrap_err();
    assert!(matches!(err, DiskError::DoesNotFit { .. }), "{err}");
    let fits = vec![spec("ONLY", layout::VAR_TYPE, 1, 2 * MIB)];
    write_disk(&image, DISK_GUID, 4 * MIB, &fits).unwrap();
}

#[test]
fn error_when_contents_are_larger_than_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("big.img");
    fs::write(&contents, vec![1u8; (2 * MIB + 1) as usize]).unwrap();
    let image = dir.path().join("disk.raw");
    let mut parts = keel_layout(None);
    parts[0].contents = Some(contents.clone());
    parts[0].size_bytes = 2 * MIB;
    let err = write_disk(&image, DISK_GUID, DISK_SIZE, &parts).unwrap_err();
    assert!(matches!(err, DiskError::ContentsTooBig { .. }), "{err}");
    assert!(err.to_string().contains("big.img"), "{err}");

    parts[0].contents = Some(dir.path().join("missing.img"));
    let err = write_disk(&image, DISK_GUID, DISK_SIZE, &parts).unwrap_err();
    assert!(matches!(err, DiskError::ReadContents { .. }), "{err}");
    assert!(err.to_string().contains("missing.img"), "{err}");
}

#[test]
fn error_on_bad_specs() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");

    let mut parts = keel_layout(None);
    parts[1].size_bytes = 0;
    let err = write_disk(&image, DISK_GUID, DISK_SIZE, &parts).unwrap_err();
    assert!(
        matches!(err, DiskError::FillNotLast { ref label } if label == "ROOT-A"),
        "{err}"
    );

    let mut parts = keel_layout(None);
    parts[0].label = "X".repeat(37);
    let err = write_disk(&image, DISK_GUID, DISK_SIZE, &parts).unwrap_err();
    assert!(matches!(err, DiskError::LabelTooLong { .. }), "{err}");

    let err = write_disk(&image, DISK_GUID, DISK_SIZE + 1, &keel_layout(None)).unwrap_err();
    assert!(matches!(err, DiskError::UnalignedDiskSize { .. }), "{err}");
}

#[test]
fn reading_a_file_without_a_gpt_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("zeros.raw");
    fs::write(&image, vec![0u8; MIB as usize]).unwrap();
    let err = read_partitions(&image).unwrap_err();
    assert!(matches!(err, DiskError::ReadGpt { .. }), "{err}");
    assert!(err.to_string().contains("zeros.raw"), "{err}");

    let err = read_partitions(&dir.path().join("absent.raw")).unwrap_err();
    assert!(matches!(err, DiskError::Open { .. }), "{err}");
}
