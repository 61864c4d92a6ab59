//! Everything `keel-install` can refuse or fail on. Each message names the device or file it
//! is about and, where there is one, what the operator can do about it.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },

    #[error(
        "{location} is not a supported image location: give a local path or an http:// or \
         https:// URL"
    )]
    BadLocation { location: String },

    #[error("cannot fetch {url}: {detail}")]
    Fetch { url: String, detail: String },

    #[error(
        "cannot verify {image}: SHA256SUMS is missing ({location}: {detail}); put the \
         SHA256SUMS that came with the image beside it, or pass --insecure-skip-verify"
    )]
    SumsMissing {
        image: String,
        location: String,
        detail: String,
    },

    #[error(
        "cannot verify {image}: SHA256SUMS at {location} has no entry for {name}; use the \
         SHA256SUMS published with this image, or pass --insecure-skip-verify"
    )]
    SumsNoEntry {
        image: String,
        location: String,
        name: String,
    },

    #[error(
        "{image} does not match SHA256SUMS at {location}: expected sha256 {expected}, got \
         {actual}; the image is corrupt or not the one published (nothing was written to \
         {device})"
    )]
    ChecksumMismatch {
        image: String,
        location: String,
        expected: String,
        actual: String,
        device: PathBuf,
    },

    #[error(
        "{image} changed while it was being written to {device} (sha256 {actual}, verified \
         {expected}); {device} now holds unverified data: run keel-install again"
    )]
    ImageChanged {
        image: String,
        device: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "cannot install onto {device}: it is neither a block device nor a regular file; give \
         a whole disk such as /dev/sdb or /dev/nvme0n1"
    )]
    NotBlockOrFile { device: PathBuf },

    #[error("refusing to install onto {device}: it is the image file itself")]
    SameFile { device: PathBuf },

    #[error(
        "refusing to install onto {device}: {what} is mounted on {mount_point}; unmount it \
         first (umount {mount_point})"
    )]
    Mounted {
        device: PathBuf,
        what: String,
        mount_point: String,
    },

    #[error(
        "refusing to install onto {device}: {what} is in use as swap; turn it off first \
         (swapoff {what})"
    )]
    Swap { device: PathBuf, what: String },

    #[error(
        "refusing to install onto {device}: {what} is held by {holders} (device-mapper, LVM \
         or RAID); stop those first"
    )]
    Held {
        device: PathBuf,
        what: String,
        holders: String,
    },

    #[error(
        "refusing to install onto {device}: the kernel reports it busy (mounted, swap, RAID or \
         device-mapper, or opened exclusively by another program); release it first"
    )]
    Busy { device: PathBuf },

    #[error(
        "refusing to install onto {device}: it holds {target_bytes} bytes ({target_mib} MiB) \
         but the image needs {image_bytes} bytes ({image_mib} MiB); choose a larger disk",
        target_mib = target_bytes >> 20,
        image_mib = image_bytes.div_ceil(1 << 20)
    )]
    TooSmall {
        device: PathBuf,
        target_bytes: u64,
        image_bytes: u64,
    },

    #[error(
        "{image} unpacked past the end of {device} ({target_bytes} bytes) although its size \
         was announced as {announced_bytes} bytes; {device} now holds a partial image: use a \
         larger disk"
    )]
    Overflow {
        image: String,
        device: PathBuf,
        target_bytes: u64,
        announced_bytes: u64,
    },

    #[error("cannot decompress {image}: {source}")]
    Decompress { image: String, source: io::Error },

    #[error("{image} is gzip-compressed but too short ({len} bytes) to hold a gzip trailer")]
    TruncatedGzip { image: String, len: u64 },

    #[error("cloud-config {path} is empty; give a #cloud-config document or leave out -c")]
    EmptyCloudConfig { path: PathBuf },

    #[error("cloud-config {path} has errors (nothing was written to {device}):\n{listing}")]
    InvalidCloudConfig {
        path: PathBuf,
        device: PathBuf,
        /// One `FILE:LINE: error: message` line per error.
        listing: String,
    },

    #[error("{device} has no usable GPT after writing the image: {detail}")]
    Gpt { device: PathBuf, detail: String },

    #[error("{device} has no partition labelled EFI-SYSTEM (partitions: {present})")]
    NoEsp { device: PathBuf, present: String },

    #[error(
        "cannot place the cloud-config as /keel/user-data on the EFI-SYSTEM partition of \
         {device}: {source}"
    )]
    Esp { device: PathBuf, source: io::Error },
}

impl InstallError {
    /// Wraps an `io::Error` with what was being done, for `map_err`.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> InstallError {
        let context = context.into();
        move |source| InstallError::Io { context, source }
    }
}
