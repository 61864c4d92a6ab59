//! The disk the image is written to: a block device (the real case) or a regular file (tests,
//! or preparing an image file for a VM).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::InstallError;
use crate::inuse;

/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)`: the device size in bytes. (Not in the libc
/// crate; the number is fixed by the kernel ABI.)
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
/// `BLKRRPART` = `_IO(0x12, 95)`: re-read the partition table.
const BLKRRPART: libc::c_ulong = 0x125f;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    BlockDevice,
    RegularFile,
}

/// An opened, checked target.
pub(crate) struct Target {
    pub path: PathBuf,
    pub kind: TargetKind,
    pub file: File,
    /// Bytes the target holds; nothing is written past this.
    pub size: u64,
}

impl Target {
    /// Opens `path` for writing after refusing what must not be overwritten: anything but a
    /// block device or regular file, and a disk that is mounted, swap or held.
    pub fn open(path: &Path) -> Result<Target, InstallError> {
        let meta = std::fs::metadata(path)
            .map_err(InstallError::io(format!("cannot use {}", path.display())))?;
        let file_type = meta.file_type();
        let kind = if file_type.is_block_device() {
            TargetKind::BlockDevice
        } else if file_type.is_file() {
            TargetKind::RegularFile
        } else {
            return Err(InstallError::NotBlockOrFile {
                device: path.to_owned(),
            });
        };

        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if kind == TargetKind::BlockDevice {
            // Read the reasons first: they name the mount point or swap area. O_EXCL then
            // has the kernel refuse anything it knows is using the device (and keeps a mount
            // from starting while we write).
            inuse::check_not_in_use(path, meta.rdev())?;
            options.custom_flags(libc::O_EXCL);
        }
        let mut file = options.open(path).map_err(|err| {
            if err.raw_os_error() == Some(libc::EBUSY) {
                InstallError::Busy {
                    device: path.to_owned(),
                }
            } else {
                InstallError::io(format!("cannot open {} for writing", path.display()))(err)
            }
        })?;

        let size = match kind {
            TargetKind::RegularFile => meta.len(),
            TargetKind::BlockDevice => block_device_size(&mut file).map_err(InstallError::io(
                format!("cannot get the size of {}", path.display()),
            ))?,
        };
        Ok(Target {
            path: path.to_owned(),
            kind,
            file,
            size,
        })
    }

    /// Asks the kernel to read the new partition table, so /dev/sdX1... match the image at
    /// once. A failure only means the old partitions stay visible until the next boot, so it
    /// is a warning, not an error.
    pub fn reread_partitions(&self) {
        if self.kind != TargetKind::BlockDevice {
            return;
        }
        // SAFETY: BLKRRPART takes no argument; the descriptor is open for the call's duration.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), BLKRRPART as _) };
        if rc == 0 {
            return;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EBUSY) => tracing::warn!(
                "{}: the kernel keeps the old partition table while a partition is busy; \
                 it reads the new one at the next boot",
                self.path.display()
            ),
            // A loop device without partition scanning (losetup without -P) and similar.
            Some(libc::EINVAL) => tracing::warn!(
                "{}: does not support partitions (re-reading the partition table: {err})",
                self.path.display()
            ),
            _ => tracing::warn!(
                "{}: cannot re-read the partition table: {err}",
                self.path.display()
            ),
        }
    }
}

fn block_device_size(file: &mut File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc == 0 {
        return Ok(size);
    }
    // Some block drivers lack the ioctl; seeking to the end gives the same number.
    let size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(size)
}
