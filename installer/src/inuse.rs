//! Is the target disk in use? Writing an image under a mounted filesystem, an active swap
//! area or a device-mapper/RAID stack corrupts both, so any of these refuses the install.
//!
//! Devices are compared by major:minor number, never by name: `/dev/disk/by-id/...`, a
//! `/dev/mapper` alias and `/dev/sdb` can all be the same disk. The disk's partitions are
//! found in sysfs (`/sys/dev/block/MAJ:MIN/<partition>/dev`).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::InstallError;

/// A block device by number, with the name to show for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlockDev {
    pub name: String,
    pub major: u32,
    pub minor: u32,
}

/// Refuses `device` (block device number `rdev`) when it or one of its partitions is mounted,
/// used as swap or held by another block device.
pub(crate) fn check_not_in_use(device: &Path, rdev: u64) -> Result<(), InstallError> {
    let devices = devices_of(device, rdev);

    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(InstallError::io("cannot read /proc/self/mountinfo"))?;
    if let Some((what, mount_point)) = find_mounted(&mountinfo, &devices, source_number) {
        return Err(InstallError::Mounted {
            device: device.to_owned(),
            what,
            mount_point,
        });
    }

    // No swap support in the kernel means no /proc/swaps, and nothing to check.
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        if let Some(what) = find_swap(&swaps, &devices, source_number) {
            return Err(InstallError::Swap {
                device: device.to_owned(),
                what,
            });
        }
    }

    for dev in &devices {
        let holders = holders_of(dev);
        if !holders.is_empty() {
            return Err(InstallError::Held {
                device: device.to_owned(),
                what: dev.name.clone(),
                holders: holders.join(", "),
            });
        }
    }
    Ok(())
}

/// The device itself and, for a whole disk, its partitions.
fn devices_of(device: &Path, rdev: u64) -> Vec<BlockDev> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let mut devices = vec![BlockDev {
        name: device.display().to_string(),
        major,
        minor,
    }];
    // Without sysfs (unusual, but possible in a chroot) only the disk itself can be checked;
    // the exclusive open that follows still catches a mounted partition.
    let Ok(entries) = fs::read_dir(sys_dir(major, minor)) else {
        return devices;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.join("partition").exists() {
            continue;
        }
        let Some((major, minor)) = fs::read_to_string(path.join("dev"))
            .ok()
            .and_then(|text| parse_dev_number(text.trim()))
        else {
            continue;
        };
        devices.push(BlockDev {
            name: format!("/dev/{}", entry.file_name().to_string_lossy()),
            major,
            minor,
        });
    }
    devices.sort_by_key(|dev| (dev.major, dev.minor));
    devices
}

fn sys_dir(major: u32, minor: u32) -> PathBuf {
    PathBuf::from(format!("/sys/dev/block/{major}:{minor}"))
}

/// What sits on top of `dev` (dm-0, md127, ...), from its sysfs `holders` folder.
fn holders_of(dev: &BlockDev) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sys_dir(dev.major, dev.minor).join("holders")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The block device number of a path named as a mount or swap source, if it is one.
fn source_number(path: &str) -> Option<(u32, u32)> {
    let meta = fs::metadata(path).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev())))
}

fn parse_dev_number(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn matching(devices: &[BlockDev], number: (u32, u32)) -> Option<&BlockDev> {
    devices.iter().find(|dev| (dev.major, dev.minor) == number)
}

/// The first of `devices` that /proc/self/mountinfo shows mounted, and where. A line's third
/// field is the filesystem's device number; btrfs and a few others report an anonymous one
/// there, so the mount source (after the ` - ` separator) is also resolved to its number.
fn find_mounted(
    mountinfo: &str,
    devices: &[BlockDev],
    resolve: impl Fn(&str) -> Option<(u32, u32)>,
) -> Option<(String, String)> {
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 5 {
            continue;
        }
        let mount_point = unescape(fields[4]);
        let by_number = parse_dev_number(fields[2]).and_then(|n| matching(devices, n));
        let by_source = || {
            let separator = fields.iter().position(|field| *field == "-")?;
            let source = unescape(fields.get(separator + 2)?);
            if !source.starts_with('/') {
                return None;
            }
            matching(devices, resolve(&source)?)
        };
        if let Some(dev) = by_number.or_else(by_source) {
            return Some((dev.name.clone(), mount_point));
        }
    }
    None
}

/// The first of `devices` that /proc/swaps lists (its first line is a header).
fn find_swap(
    swaps: &str,
    devices: &[BlockDev],
    resolve: impl Fn(&str) -> Option<(u32, u32)>,
) -> Option<String> {
    swaps.lines().skip(1).find_map(|line| {
        let path = unescape(line.split_whitespace().next()?);
        matching(devices, resolve(&path)?).map(|dev| dev.name.clone())
    })
}

/// Undoes the kernel's octal escapes in mountinfo and swaps fields (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(value) = u8::try_from(value) {
                    out.push(value);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> Vec<BlockDev> {
        vec![
            BlockDev {
                name: "/dev/sdb".into(),
                major: 8,
                minor: 16,
            },
            BlockDev {
                name: "/dev/sdb1".into(),
                major: 8,
                minor: 17,
            },
        ]
    }

    const MOUNTINFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
40 22 8:17 / /mnt/my\\040esp rw,relatime shared:9 - vfat /dev/sdb1 rw
41 22 0:45 / /data rw,relatime shared:10 - btrfs /dev/sdc rw
";

    #[test]
    fn finds_a_mounted_partition_by_number() {
        let found = find_mounted(MOUNTINFO, &disk(), |_| None);
        assert_eq!(
            found,
            Some(("/dev/sdb1".to_owned(), "/mnt/my esp".to_owned()))
        );
    }

    #[test]
    fn finds_a_mount_by_its_source_when_the_number_is_anonymous() {
        let sdc = vec![BlockDev {
            name: "/dev/sdc".into(),
            major: 8,
            minor: 32,
        }];
        let resolve = |path: &str| (path == "/dev/sdc").then_some((8, 32));
        assert_eq!(
            find_mounted(MOUNTINFO, &sdc, resolve),
            Some(("/dev/sdc".to_owned(), "/data".to_owned()))
        );
        let sdd = vec![BlockDev {
            name: "/dev/sdd".into(),
            major: 8,
            minor: 48,
        }];
        assert_eq!(find_mounted(MOUNTINFO, &sdd, resolve), None);
    }

    #[test]
    fn finds_swap_on_a_partition() {
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb1 partition 1024 0 -2\n";
        let resolve = |path: &str| (path == "/dev/sdb1").then_some((8, 17));
        assert_eq!(
            find_swap(swaps, &disk(), resolve),
            Some("/dev/sdb1".to_owned())
        );
        assert_eq!(find_swap("Filename\n", &disk(), resolve), None);
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), r"/mnt/a b\c");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
    }
}
