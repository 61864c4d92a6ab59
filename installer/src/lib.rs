//! `keel-install`: writes the Keel disk image onto a disk and prepares its first boot, as
//! `coreos-install` did for Container Linux.
//!
//! [`install`] checks everything that can be checked before the disk is touched (the
//! cloud-config, that the target is a disk nobody uses and is large enough, the image's
//! sha256 against the SHA256SUMS published beside it), then streams the image onto the
//! target, and finally places the cloud-config on the target's EFI System Partition as
//! `/keel/user-data`, where keel-init picks it up on first boot.

mod checksum;
mod cloud_config;
mod error;
mod esp;
mod fat_clock;
mod fetch;
mod gpt_table;
mod inuse;
mod location;
mod partition_slice;
mod progress;
mod size;
mod target;
mod writer;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

pub use error::InstallError;
pub use esp::{ESP_LABEL, USER_DATA_DIR, USER_DATA_FILE};
pub use location::ImageLocation;
pub use partition_slice::PartitionSlice;
pub use target::TargetKind;

use fetch::Fetcher;
use target::Target;

/// Where the live ISO system has its medium mounted, with the compressed disk image on it.
pub const DEFAULT_IMAGE: &str = "/run/keel/live/keel/keel.raw.gz";
/// Where a downloaded image waits for verification: on disk, since /tmp may be a small tmpfs.
pub const DEFAULT_TMP_DIR: &str = "/var/tmp";
/// The checksum list looked up beside the image.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// `keel build`'s manifest beside the image; its `sizes.raw_bytes` is the image's true size.
pub const MANIFEST: &str = "manifest.json";

/// What to install where.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The target disk (or, for tests and VM images, a regular file of the wanted size).
    pub device: PathBuf,
    /// A local path or an http(s) URL of `keel.raw` or `keel.raw.gz`.
    pub image: String,
    /// A cloud-config to place on the target's ESP as `/keel/user-data`.
    pub cloud_config: Option<PathBuf>,
    /// Write the image even without a matching SHA256SUMS entry.
    pub insecure_skip_verify: bool,
    /// Where a downloaded image is kept until it is verified and written.
    pub tmp_dir: PathBuf,
}

impl InstallOptions {
    /// Options for installing the default image onto `device`.
    pub fn new(device: impl Into<PathBuf>) -> InstallOptions {
        InstallOptions {
            device: device.into(),
            image: DEFAULT_IMAGE.to_owned(),
            cloud_config: None,
            insecure_skip_verify: false,
            tmp_dir: PathBuf::from(DEFAULT_TMP_DIR),
        }
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq)]
pub struct InstallReport {
    /// Whether the image was checked against SHA256SUMS (false only with
    /// `insecure_skip_verify`).
    pub verified: bool,
    /// sha256 of the image file as stored (compressed, if it is).
    pub image_sha256: String,
    pub target_kind: TargetKind,
    /// Uncompressed bytes written to the target.
    pub bytes_written: u64,
    pub write_time: Duration,
    pub cloud_config_placed: bool,
}

/// Installs the image onto the target, printing one line per step to `steps` (verified,
/// wrote, placed cloud-config, done). Nothing is written to the target unless the
/// cloud-config, the target and the image all pass their checks.
pub fn install(
    options: &InstallOptions,
    steps: &mut dyn Write,
) -> Result<InstallReport, InstallError> {
    let device = options.device.as_path();
    let location = ImageLocation::parse(&options.image)?;
    let image_name = location.file_name();

    let user_data = match &options.cloud_config {
        Some(path) => Some(cloud_config::load(path, device)?),
        None => None,
    };
    let target = Target::open(device)?;

    let fetcher = match location {
        ImageLocation::Url(_) => Some(Fetcher::new()?),
        ImageLocation::Path(_) => None,
    };
    let fetcher = fetcher.as_ref();

    // The checksum list is read before the image, so a missing one fails before a long
    // download.
    let sums_location = location.sibling(SHA256SUMS);
    let sums = if options.insecure_skip_verify {
        tracing::warn!(
            "not verifying {location} against {SHA256SUMS} (--insecure-skip-verify): a corrupt \
             or tampered image would be installed as it is"
        );
        None
    } else {
        let sums = fetch::read_small(&sums_location, fetcher)?.ok_or_else(|| {
            InstallError::SumsMissing {
                image: location.to_string(),
                location: sums_location.to_string(),
                detail: fetch::not_found_detail(&sums_location).to_owned(),
            }
        })?;
        let sums = String::from_utf8_lossy(&sums).into_owned();
        if checksum::lookup(&sums, &image_name).is_none() {
            return Err(InstallError::SumsNoEntry {
                image: location.to_string(),
                location: sums_location.to_string(),
                name: image_name,
            });
        }
        Some(sums)
    };

    let announced_size = size::announced_size(&location, fetcher, sums.as_deref());
    if let Some(image_bytes) = announced_size {
        check_fits(&target, image_bytes)?;
    }

    let fetched = fetch::fetch_image(&location, fetcher, &options.tmp_dir)?;
    refuse_same_file(&fetched.file, &target)?;
    let verified = match &sums {
        Some(sums) => {
            let expected = checksum::lookup(sums, &image_name).expect("checked above");
            if expected != fetched.sha256 {
                return Err(InstallError::ChecksumMismatch {
                    image: location.to_string(),
                    location: sums_location.to_string(),
                    expected,
                    actual: fetched.sha256,
                    device: device.to_owned(),
                });
            }
            step(
                steps,
                format_args!(
                    "verified {image_name} against {SHA256SUMS} (sha256 {})",
                    fetched.sha256
                ),
            );
            true
        }
        None => {
            step(
                steps,
                format_args!(
                    "not verified {image_name}: --insecure-skip-verify (sha256 {})",
                    fetched.sha256
                ),
            );
            false
        }
    };

    let gzip = size::is_gzip(&fetched.file)
        .map_err(InstallError::io(format!("cannot read {location}")))?;
    let image_bytes = match announced_size {
        Some(bytes) => bytes,
        None if gzip => size::gzip_isize(&fetched.file, fetched.len)
            .map_err(InstallError::io(format!("cannot read {location}")))?
            .ok_or(InstallError::TruncatedGzip {
                image: location.to_string(),
                len: fetched.len,
            })?,
        None => fetched.len,
    };
    check_fits(&target, image_bytes)?;

    let written = writer::write_image(
        &fetched.file,
        &location.to_string(),
        gzip,
        &target,
        image_bytes,
    )?;
    if written.source_sha256 != fetched.sha256 {
        return Err(InstallError::ImageChanged {
            image: location.to_string(),
            device: device.to_owned(),
            expected: fetched.sha256,
            actual: written.source_sha256,
        });
    }
    if announced_size.is_some_and(|bytes| bytes != written.bytes) {
        tracing::warn!(
            "{MANIFEST} announced {image_bytes} bytes but {location} holds {} bytes",
            written.bytes
        );
    }
    step(
        steps,
        format_args!(
            "wrote {} MiB to {} in {:.1} s",
            written.bytes.div_ceil(1 << 20),
            device.display(),
            written.elapsed.as_secs_f64()
        ),
    );
    // The download is no longer needed; remove it before the (short) remaining steps.
    drop(fetched);

    if let (Some(user_data), Some(path)) = (&user_data, &options.cloud_config) {
        let esp = esp::find_esp(device, &target.file, target.size)?;
        esp::place_user_data(device, &target.file, &esp, user_data)?;
        target.file.sync_all().map_err(InstallError::io(format!(
            "cannot flush {} to the disk",
            device.display()
        )))?;
        step(
            steps,
            format_args!(
                "placed cloud-config {} as /{USER_DATA_DIR}/{USER_DATA_FILE} on {} partition {} \
                 ({ESP_LABEL})",
                path.display(),
                device.display(),
                esp.number
            ),
        );
    }

    target.reread_partitions();
    step(
        steps,
        format_args!("done: {} is ready to boot Keel", device.display()),
    );
    Ok(InstallReport {
        verified,
        image_sha256: written.source_sha256,
        target_kind: target.kind,
        bytes_written: written.bytes,
        write_time: written.elapsed,
        cloud_config_placed: user_data.is_some(),
    })
}

/// One step line. A closed stdout must not turn a finished install into a failure, so
/// write errors are only logged.
fn step(steps: &mut dyn Write, line: std::fmt::Arguments<'_>) {
    tracing::debug!("{line}");
    if let Err(err) = writeln!(steps, "{line}").and_then(|()| steps.flush()) {
        tracing::debug!("cannot print a step line: {err}");
    }
}

fn check_fits(target: &Target, image_bytes: u64) -> Result<(), InstallError> {
    if image_bytes > target.size {
        return Err(InstallError::TooSmall {
            device: target.path.clone(),
            target_bytes: target.size,
            image_bytes,
        });
    }
    Ok(())
}

/// Installing an image file onto itself would read back what was just overwritten.
fn refuse_same_file(image: &std::fs::File, target: &Target) -> Result<(), InstallError> {
    let (Ok(image_meta), Ok(target_meta)) = (image.metadata(), target.file.metadata()) else {
        return Ok(());
    };
    if target.kind == TargetKind::RegularFile
        && image_meta.dev() == target_meta.dev()
        && image_meta.ino() == target_meta.ino()
    {
        return Err(InstallError::SameFile {
            device: target.path.clone(),
        });
    }
    Ok(())
}
