//! `keel_installer::install` against a small Keel-like disk image, on sparse-file targets,
//! over HTTP, and on loop devices (those tests skip, saying so, where loop devices cannot be
//! made). Run as root for the loop-device tests.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use keel_installer::{install, InstallError, InstallOptions, TargetKind};

const CONFIG: &str = "#cloud-config\nhostname: keel-test\n";

fn options(device: &Path, image: impl Into<String>) -> InstallOptions {
    InstallOptions {
        image: image.into(),
        tmp_dir: device.parent().unwrap().to_owned(),
        ..InstallOptions::new(device)
    }
}

fn with_config(mut options: InstallOptions, dir: &Path, text: &str) -> InstallOptions {
    let path = dir.join("user.yaml");
    fs::write(&path, text).unwrap();
    options.cloud_config = Some(path);
    options
}

fn run(options: &InstallOptions) -> (Result<keel_installer::InstallReport, InstallError>, String) {
    let mut steps = Vec::new();
    let result = install(options, &mut steps);
    (result, String::from_utf8(steps).unwrap())
}

/// The target outside the ESP equals the image, the ESP holds the config next to what the
/// image put there, and everything past the image is still zero.
fn assert_installed(fixture: &Fixture, target: &Path, config: &str) {
    let image = fixture.raw_bytes();
    let esp = &fixture.esp;
    let (esp_start, esp_end) = (esp.offset_bytes, esp.offset_bytes + esp.size_bytes);
    let written = read_range(target, 0, IMAGE_SIZE);
    assert!(
        written[..esp_start as usize] == image[..esp_start as usize],
        "GPT and everything before the ESP match the image"
    );
    assert!(
        written[esp_end as usize..] == image[esp_end as usize..],
        "everything after the ESP matches the image"
    );
    let size = fs::metadata(target).unwrap().len();
    let rest = read_range(target, IMAGE_SIZE, size - IMAGE_SIZE);
    assert!(
        rest == vec![0u8; rest.len()],
        "nothing written past the image"
    );

    assert_eq!(
        read_esp_file(target, esp, "keel/user-data").unwrap(),
        config.as_bytes()
    );
    assert_eq!(read_esp_file(target, esp, KERNEL_PATH).unwrap(), KERNEL);
    assert!(
        read_esp_file(target, esp, "keel/user-data.tmp").is_err(),
        "the temporary name is gone"
    );
}

#[test]
fn installs_a_raw_image_onto_a_larger_file() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);

    let (result, steps) = run(&options(&target, fixture.raw.to_str().unwrap()));
    let report = result.unwrap();
    assert!(report.verified);
    assert_eq!(report.bytes_written, IMAGE_SIZE);
    assert_eq!(report.target_kind, TargetKind::RegularFile);
    assert!(!report.cloud_config_placed);
    assert_eq!(report.image_sha256, sha256_file(&fixture.raw));

    // Without -c the ESP is not touched: the whole image is there byte for byte.
    assert!(read_range(&target, 0, IMAGE_SIZE) == fixture.raw_bytes());
    assert!(read_range(&target, IMAGE_SIZE, IMAGE_SIZE) == vec![0u8; IMAGE_SIZE as usize]);
    let lines: Vec<&str> = steps.lines().collect();
    assert_eq!(lines.len(), 3, "{steps}");
    assert!(lines[0].starts_with("verified keel.raw against SHA256SUMS"));
    assert!(lines[1].starts_with("wrote 64 MiB to "));
    assert!(lines[2].starts_with("done: "));
}

#[test]
fn installs_a_gzip_image_and_places_the_cloud_config() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);

    let options = with_config(
        options(&target, fixture.gz.to_str().unwrap()),
        work.path(),
        CONFIG,
    );
    let (result, steps) = run(&options);
    let report = result.unwrap();
    assert!(report.verified);
    assert!(report.cloud_config_placed);
    assert_eq!(report.bytes_written, IMAGE_SIZE);
    assert_eq!(
        report.image_sha256,
        sha256_file(&fixture.gz),
        "hash of the .gz as stored"
    );
    assert_installed(&fixture, &target, CONFIG);
    assert!(
        steps.contains("verified keel.raw.gz against SHA256SUMS"),
        "{steps}"
    );
    assert!(
        steps.contains("placed cloud-config ") && steps.contains(" partition 1 (EFI-SYSTEM)"),
        "{steps}"
    );

    // A second install over the first replaces the config rather than failing on it.
    let options = with_config(options, work.path(), "#cloud-config\nhostname: again\n");
    run(&options).0.unwrap();
    assert_installed(&fixture, &target, "#cloud-config\nhostname: again\n");
}

#[test]
fn keeps_a_regular_file_target_sparse() {
    use std::os::unix::fs::MetadataExt;
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 4 * IMAGE_SIZE);
    run(&options(&target, fixture.gz.to_str().unwrap()))
        .0
        .unwrap();
    let allocated = fs::metadata(&target).unwrap().blocks() * 512;
    assert!(
        allocated < IMAGE_SIZE,
        "{allocated} bytes allocated for a mostly-empty 64 MiB image"
    );
}

#[test]
fn a_wrong_checksum_leaves_the_target_untouched() {
    let fixture = Fixture::new();
    fixture.write_sums(&[("keel.raw", &"0".repeat(64))]);
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);

    let err = run(&options(&target, fixture.raw.to_str().unwrap()))
        .0
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, InstallError::ChecksumMismatch { .. }),
        "{message}"
    );
    assert!(message.contains("SHA256SUMS"), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    assert!(all_zero(&target));
}

#[test]
fn a_missing_sums_file_or_entry_refuses_unless_told_to_skip() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);

    fixture.write_sums(&[("keel.raw.gz", &sha256_file(&fixture.gz))]);
    let err = run(&options(&target, fixture.raw.to_str().unwrap()))
        .0
        .unwrap_err();
    assert!(matches!(err, InstallError::SumsNoEntry { .. }), "{err}");
    assert!(
        err.to_string().contains("has no entry for keel.raw"),
        "{err}"
    );

    fs::remove_file(fixture.path("SHA256SUMS")).unwrap();
    let err = run(&options(&target, fixture.raw.to_str().unwrap()))
        .0
        .unwrap_err();
    assert!(matches!(err, InstallError::SumsMissing { .. }), "{err}");
    assert!(err.to_string().contains("--insecure-skip-verify"), "{err}");
    assert!(all_zero(&target));

    let mut skipping = options(&target, fixture.raw.to_str().unwrap());
    skipping.insecure_skip_verify = true;
    let (result, steps) = run(&skipping);
    assert!(!result.unwrap().verified);
    assert!(steps.starts_with("not verified keel.raw"), "{steps}");
    assert!(read_range(&target, 0, IMAGE_SIZE) == fixture.raw_bytes());
}

#[test]
fn a_target_smaller_than_the_image_is_refused() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let small = IMAGE_SIZE / 2;
    let target = sparse_target(work.path(), small);

    // Raw: the file's length; gzip: its trailer; with manifest.json: the manifest's number.
    for image in [&fixture.raw, &fixture.gz] {
        let err = run(&options(&target, image.to_str().unwrap()))
            .0
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, InstallError::TooSmall { .. }), "{message}");
        assert!(message.contains(&small.to_string()), "{message}");
        assert!(message.contains(&IMAGE_SIZE.to_string()), "{message}");
        assert!(message.contains("choose a larger disk"), "{message}");
    }
    let bigger = 3 * IMAGE_SIZE;
    fixture.write_manifest(bigger);
    let large_target = sparse_target(work.path(), 2 * IMAGE_SIZE);
    let err = run(&options(&large_target, fixture.gz.to_str().unwrap()))
        .0
        .unwrap_err();
    assert!(err.to_string().contains(&bigger.to_string()), "{err}");
    assert!(all_zero(&target));
    assert!(all_zero(&large_target));
}

#[test]
fn installs_from_an_http_url_and_reports_a_missing_sums_file() {
    let fixture = Fixture::new();
    fixture.write_manifest(IMAGE_SIZE);
    let base = serve(fixture.dir.path());
    let work = tempfile::tempdir().unwrap();
    let downloads = work.path().join("downloads");
    fs::create_dir(&downloads).unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);

    let mut url_options = with_config(
        options(&target, format!("{base}/keel.raw.gz")),
        work.path(),
        CONFIG,
    );
    url_options.tmp_dir = downloads.clone();
    let (result, steps) = run(&url_options);
    let report = result.unwrap();
    assert!(report.verified, "{steps}");
    assert_installed(&fixture, &target, CONFIG);
    assert_eq!(
        fs::read_dir(&downloads).unwrap().count(),
        0,
        "the download is removed"
    );

    // A folder without SHA256SUMS: the server answers 404.
    let bare = tempfile::tempdir().unwrap();
    fs::copy(&fixture.gz, bare.path().join("keel.raw.gz")).unwrap();
    let bare_base = serve(bare.path());
    let fresh = sparse_target(bare.path(), 2 * IMAGE_SIZE);
    let mut bare_options = options(&fresh, format!("{bare_base}/keel.raw.gz"));
    bare_options.tmp_dir = downloads.clone();
    let err = run(&bare_options).0.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("SHA256SUMS"), "{message}");
    assert!(message.contains("404"), "{message}");
    assert!(
        message.contains(&format!("{bare_base}/SHA256SUMS")),
        "{message}"
    );
    assert!(all_zero(&fresh));

    // The image itself missing (listed, but not served) is an HTTP error naming the URL.
    fixture.write_sums(&[("gone.raw.gz", &"0".repeat(64))]);
    let err = run(&options(&fresh, format!("{base}/gone.raw.gz")))
        .0
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&format!("{base}/gone.raw.gz")),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");
}

#[test]
fn a_cloud_config_with_errors_is_refused_before_writing() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let target = sparse_target(work.path(), 2 * IMAGE_SIZE);

    let broken = "#cloud-config\nhostname: keel\nusers:\n  - name: core\n   groups: [sudo\n";
    let options_broken = with_config(
        options(&target, fixture.raw.to_str().unwrap()),
        work.path(),
        broken,
    );
    let err = run(&options_broken).0.unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, InstallError::InvalidCloudConfig { .. }),
        "{message}"
    );
    let config_path = work.path().join("user.yaml");
    assert!(
        message.contains(&format!("{}:", config_path.display())),
        "names the file: {message}"
    );
    assert!(
        (3..=6).any(|line| message.contains(&format!("user.yaml:{line}: error"))),
        "names the line: {message}"
    );
    assert!(all_zero(&target));

    let empty = with_config(
        options(&target, fixture.raw.to_str().unwrap()),
        work.path(),
        "\n  \n",
    );
    let err = run(&empty).0.unwrap_err();
    assert!(
        matches!(err, InstallError::EmptyCloudConfig { .. }),
        "{err}"
    );
    assert!(all_zero(&target));
}

#[test]
fn refuses_what_is_not_a_disk() {
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    for device in [work.path().to_owned(), PathBuf::from("/dev/null")] {
        let err = run(&options(&device, fixture.raw.to_str().unwrap()))
            .0
            .unwrap_err();
        assert!(matches!(err, InstallError::NotBlockOrFile { .. }), "{err}");
        assert!(err.to_string().contains(&device.display().to_string()));
    }
    let err = run(&options(&fixture.raw, fixture.raw.to_str().unwrap()))
        .0
        .unwrap_err();
    assert!(matches!(err, InstallError::SameFile { .. }), "{err}");
}

/// Loop devices need root and a kernel that lends them; elsewhere these tests skip.
fn loop_tools() -> bool {
    have_tool("losetup", "mount") && have_tool("mkfs.ext4", "e2fsprogs")
}

#[test]
fn refuses_a_mounted_disk_or_partition() {
    if !loop_tools() {
        return;
    }
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();

    // The whole device mounted.
    let fs_file = work.path().join("ext4.img");
    ext4_file(&fs_file, 16 * MIB).unwrap();
    let device = match LoopDevice::attach(&fs_file, false) {
        Ok(device) => device,
        Err(err) => {
            eprintln!("skipping: cannot make a loop device here: {err}");
            return;
        }
    };
    let point = work.path().join("mnt");
    fs::create_dir(&point).unwrap();
    let mount = Mount::new(&device.path, &point).unwrap();
    let err = run(&options(&device.path, fixture.raw.to_str().unwrap()))
        .0
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, InstallError::Mounted { .. }), "{message}");
    assert!(message.contains("mounted"), "{message}");
    assert!(message.contains(&point.display().to_string()), "{message}");
    assert!(
        message.contains(&device.path.display().to_string()),
        "{message}"
    );
    drop(mount);
    drop(device);

    // One partition of a partitioned device mounted.
    let part_fs = work.path().join("part.ext4");
    ext4_file(&part_fs, 8 * MIB).unwrap();
    let disk_file = work.path().join("disk.img");
    keel_image::disk::write_disk(
        &disk_file,
        uuid::Uuid::from_u128(7),
        24 * MIB,
        &[keel_image::disk::PartitionSpec {
            label: "DATA".into(),
            type_guid: uuid::Uuid::from_u128(8),
            uuid: uuid::Uuid::from_u128(9),
            size_bytes: 8 * MIB,
            contents: Some(part_fs),
        }],
    )
    .unwrap();
    let disk = LoopDevice::attach(&disk_file, true).unwrap();
    let partition = PathBuf::from(format!("{}p1", disk.path.display()));
    if !partition.exists() {
        // Some VM kernels are built without CONFIG_EFI_PARTITION.
        eprintln!(
            "skipping the partition case: the kernel made no {} (it does not read GPTs)",
            partition.display()
        );
        return;
    }
    let mount = Mount::new(&partition, &point).unwrap();
    let err = run(&options(&disk.path, fixture.raw.to_str().unwrap()))
        .0
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("mounted"), "{message}");
    assert!(
        message.contains(&format!("{} is mounted", partition.display())),
        "{message}"
    );
    drop(mount);
}

#[test]
fn installs_onto_an_unmounted_loop_device() {
    if !loop_tools() {
        return;
    }
    let fixture = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let backing = work.path().join("disk.img");
    fs::File::create(&backing)
        .unwrap()
        .set_len(2 * IMAGE_SIZE)
        .unwrap();
    let device = match LoopDevice::attach(&backing, true) {
        Ok(device) => device,
        Err(err) => {
            eprintln!("skipping: cannot make a loop device here: {err}");
            return;
        }
    };
    let options = with_config(
        options(&device.path, fixture.gz.to_str().unwrap()),
        work.path(),
        CONFIG,
    );
    let (result, steps) = run(&options);
    let report = result.unwrap();
    assert_eq!(report.target_kind, TargetKind::BlockDevice, "{steps}");
    assert_installed(&fixture, &backing, CONFIG);
    // BLKRRPART made the kernel see the image's partitions, where the kernel reads GPTs at
    // all (some VM kernels are built without CONFIG_EFI_PARTITION).
    let scanned = LoopDevice::attach(&fixture.raw, true).unwrap();
    if !scanned.partition_sysfs(1).exists() {
        eprintln!("not checking the partition re-read: this kernel does not read GPTs");
        return;
    }
    drop(scanned);
    for n in 1..=3 {
        assert!(
            device.partition_sysfs(n).exists(),
            "{} after re-reading the table",
            device.partition_sysfs(n).display()
        );
    }
}
