//! Finding a config drive by filesystem label, without blkid or udev (the initramfs has
//! neither): the label is read straight from the device, then the filesystem is mounted
//! read-only for as long as it is being read.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::DatasourceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    Iso9660,
    Vfat,
}

impl FsKind {
    /// The filesystem type mount(2) takes.
    pub fn mount_type(self) -> &'static str {
        match self {
            FsKind::Iso9660 => "iso9660",
            FsKind::Vfat => "vfat",
        }
    }
}

/// A filesystem found on a device, with its label (trailing padding removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    pub kind: FsKind,
    pub label: String,
}

/// ISO 9660 volume descriptors start at sector 16 (of 2048 bytes).
const ISO_DESCRIPTORS_START: u64 = 0x8000;
const ISO_SECTOR: u64 = 2048;
/// Enough descriptors to get past a boot record or two before the primary one.
const ISO_MAX_DESCRIPTORS: u64 = 16;
const ISO_TYPE_PRIMARY: u8 = 1;
const ISO_TYPE_TERMINATOR: u8 = 255;
/// Volume identifier: bytes 40..72 of the primary volume descriptor.
const ISO_VOLUME_ID: std::ops::Range<usize> = 40..72;

/// Reads the label of an iso9660 or vfat filesystem at the start of `path` (a block device or
/// an image file). `Ok(None)` when it is neither, or has no label.
pub fn read_label(path: &Path) -> io::Result<Option<Labelled>> {
    let file = File::open(path)?;
    if let Some(label) = read_iso9660_label(&file)? {
        return Ok(Some(label));
    }
    read_vfat_label(&file)
}

/// Reads as much of `buf` as the device holds at `offset`; a short device is not an error.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn padded_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_string()
}

fn read_iso9660_label(file: &File) -> io::Result<Option<Labelled>> {
    let mut descriptor = [0u8; ISO_SECTOR as usize];
    for index in 0..ISO_MAX_DESCRIPTORS {
        let offset = ISO_DESCRIPTORS_START + index * ISO_SECTOR;
        if read_at_most(file, &mut descriptor, offset)? < descriptor.len() {
            return Ok(None);
        }
        if &descriptor[1..6] != b"CD001" {
            return Ok(None);
        }
        match descriptor[0] {
            ISO_TYPE_PRIMARY => {
                let label = padded_text(&descriptor[ISO_VOLUME_ID]);
                return Ok(Some(Labelled {
                    kind: FsKind::Iso9660,
                    label,
                }));
            }
            ISO_TYPE_TERMINATOR => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

/// The "extended boot signature" that says the volume id and label fields are present.
const FAT_EXTENDED_SIGNATURE: u8 = 0x29;
/// What mkfs.fat and Windows write when no label was given.
const FAT_NO_LABEL: &str = "NO NAME";

fn read_vfat_label(file: &File) -> io::Result<Option<Labelled>> {
    let mut boot = [0u8; 512];
    if read_at_most(file, &mut boot, 0)? < boot.len() || boot[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let bytes_per_sector = u16::from_le_bytes([boot[11], boot[12]]);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) || boot[13] == 0 {
        return Ok(None);
    }
    // FAT32 has no 16-bit sectors-per-FAT count (offset 22) and keeps its extended BPB further in.
    let sectors_per_fat16 = u16::from_le_bytes([boot[22], boot[23]]);
    let label_bytes = if sectors_per_fat16 == 0 {
        (boot[66] == FAT_EXTENDED_SIGNATURE && &boot[82..87] == b"FAT32").then(|| &boot[71..82])
    } else {
        (boot[38] == FAT_EXTENDED_SIGNATURE && &boot[54..57] == b"FAT").then(|| &boot[43..54])
    };
    let Some(label_bytes) = label_bytes else {
        return Ok(None);
    };
    let label = padded_text(label_bytes);
    if label.is_empty() || label == FAT_NO_LABEL {
        return Ok(None);
    }
    Ok(Some(Labelled {
        kind: FsKind::Vfat,
        label,
    }))
}

/// A device holding a filesystem with one of the wanted labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundDevice {
    /// The device node, under the context's root (e.g. "/dev/vdb").
    pub path: PathBuf,
    pub filesystem: Labelled,
}

/// Device names whose probing can stall the boot (a floppy drive with no disk takes seconds to
/// give up) and never hold a config drive.
fn never_probed(name: &str) -> bool {
    name.starts_with("fd")
}

/// Scans `<root>/sys/class/block` for a filesystem labelled with one of `labels` (compared
/// without regard to case: vfat labels are often upper-cased) and returns the first in name
/// order. Devices that report a size of 0 (empty CD drives, unattached loop devices) and
/// devices that cannot be opened are skipped.
pub fn find_by_label(root: &Path, labels: &[&str]) -> Option<FoundDevice> {
    let class_dir = root.join("sys/class/block");
    let mut names: Vec<String> = std::fs::read_dir(&class_dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| !never_probed(name))
        .collect();
    names.sort();
    for name in names {
        let size = std::fs::read_to_string(class_dir.join(&name).join("size")).ok();
        if size.as_deref().map(str::trim) == Some("0") {
            continue;
        }
        let path = root.join("dev").join(&name);
        match read_label(&path) {
            Ok(Some(filesystem))
                if labels
                    .iter()
                    .any(|wanted| wanted.eq_ignore_ascii_case(&filesystem.label)) =>
            {
                return Some(FoundDevice { path, filesystem });
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(device = %path.display(), %error, "cannot probe label"),
        }
    }
    None
}

/// A read-only mount that is undone when dropped.
pub struct ReadOnlyMount {
    target: PathBuf,
}

impl ReadOnlyMount {
    pub fn new(
        datasource: &str,
        device: &Path,
        target: &Path,
        kind: FsKind,
    ) -> Result<ReadOnlyMount, DatasourceError> {
        let fstype = kind.mount_type();
        let mount_error = |error| DatasourceError::Mount {
            datasource: datasource.to_string(),
            device: device.to_path_buf(),
            target: target.to_path_buf(),
            fstype,
            error,
        };
        std::fs::create_dir_all(target).map_err(mount_error)?;
        let c_device = path_to_cstring(device).map_err(mount_error)?;
        let c_target = path_to_cstring(target).map_err(mount_error)?;
        let c_fstype = std::ffi::CString::new(fstype).expect("filesystem names have no NUL");
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; no data.
        let result = unsafe {
            libc::mount(
                c_device.as_ptr(),
                c_target.as_ptr(),
                c_fstype.as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        if result != 0 {
            return Err(mount_error(io::Error::last_os_error()));
        }
        Ok(ReadOnlyMount {
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let Ok(target) = path_to_cstring(&self.target) else {
            return;
        };
        // SAFETY: `target` is a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let error = io::Error::last_os_error();
            tracing::warn!(target = %self.target.display(), %error, "unmount failed; detaching");
            // SAFETY: as above. A lazy unmount cannot fail for a busy filesystem.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

fn path_to_cstring(path: &Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Where a drive-style source reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveLocation {
    /// Look for a labelled filesystem under `root` and mount it at `mount_dir`.
    Label { root: PathBuf, mount_dir: PathBuf },
    /// An already available directory with the drive's contents.
    Directory(PathBuf),
}

impl DriveLocation {
    /// Whether the drive is there: the directory exists, or a device carries one of `labels`.
    /// Reads a few sectors per block device; never waits.
    pub fn available(&self, labels: &[&str]) -> bool {
        match self {
            DriveLocation::Directory(dir) => dir.is_dir(),
            DriveLocation::Label { root, .. } => find_by_label(root, labels).is_some(),
        }
    }

    /// Runs `read` on the drive's contents and says where they came from (the device or the
    /// directory); a labelled device is mounted read-only around the call.
    pub fn read<T>(
        &self,
        datasource: &str,
        labels: &[&str],
        read: impl FnOnce(&Path) -> Result<T, DatasourceError>,
    ) -> Result<(PathBuf, T), DatasourceError> {
        match self {
            DriveLocation::Directory(dir) => Ok((dir.clone(), read(dir)?)),
            DriveLocation::Label { root, mount_dir } => {
                let found =
                    find_by_label(root, labels).ok_or_else(|| DatasourceError::NoFilesystem {
                        datasource: datasource.to_string(),
                        labels: labels.join(" or "),
                    })?;
                let mount =
                    ReadOnlyMount::new(datasource, &found.path, mount_dir, found.filesystem.kind)?;
                let value = read(mount.path())?;
                Ok((found.path, value))
            }
        }
    }
}

/// Reads `dir/name`; `Ok(None)` when the file does not exist.
pub(crate) fn read_optional(
    datasource: &str,
    dir: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, DatasourceError> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(DatasourceError::Read {
            datasource: datasource.to_string(),
            path,
            error,
        }),
    }
}
