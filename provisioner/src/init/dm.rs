//! Device-mapper through its ioctls on /dev/mapper/control, just enough to set up dm-verity:
//! create a device, load its table, resume it.
//!
//! Every ioctl takes one buffer: a `struct dm_ioctl` header (312 bytes), then, for a table
//! load, one `struct dm_target_spec` (40 bytes) per target, each followed by its parameter
//! string, NUL-terminated and padded so the next spec starts 8-byte aligned.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const CONTROL_PATH: &str = "/dev/mapper/control";
/// misc major 10, MAPPER_CTRL_MINOR 236.
const CONTROL_MAJOR: u32 = 10;
const CONTROL_MINOR: u32 = 236;

/// sizeof(struct dm_ioctl).
pub const DM_IOCTL_SIZE: usize = 312;
/// sizeof(struct dm_target_spec).
pub const DM_TARGET_SPEC_SIZE: usize = 40;
const DM_NAME_LEN: usize = 128;
const DM_UUID_LEN: usize = 129;
const DM_MAX_TYPE_NAME: usize = 16;
/// Interface version 4.0.0: every kernel with device-mapper ioctls accepts it.
const DM_VERSION: [u32; 3] = [4, 0, 0];

// Field offsets inside struct dm_ioctl.
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const OFF_UUID: usize = OFF_NAME + DM_NAME_LEN;

/// Room the kernel may use for its answers; it fails with ENOSPC-like flags when short.
const MIN_BUFFER: usize = 16 * 1024;

pub const DM_READONLY_FLAG: u32 = 1 << 0;

const DM_DEV_CREATE: u8 = 3;
const DM_DEV_REMOVE: u8 = 4;
const DM_DEV_SUSPEND: u8 = 6;
const DM_TABLE_LOAD: u8 = 9;

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("device-mapper name {0:?} is longer than 127 bytes")]
    NameTooLong(String),
    #[error("device-mapper uuid {0:?} is longer than 128 bytes")]
    UuidTooLong(String),
    #[error("device-mapper target type {0:?} is longer than 15 bytes")]
    TargetTypeTooLong(String),
    #[error("opening {CONTROL_PATH}: {0}")]
    Control(io::Error),
    #[error("{call} for {name}: {source}")]
    Ioctl {
        call: &'static str,
        name: String,
        source: io::Error,
    },
    #[error("device node {0} did not appear")]
    NoNode(PathBuf),
}

/// One line of a device-mapper table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmTarget {
    pub start_sector: u64,
    pub length_sectors: u64,
    pub target_type: String,
    pub params: String,
}

/// The ioctl request number: _IOWR(0xfd, nr, struct dm_ioctl).
pub fn ioctl_request(nr: u8) -> libc::c_ulong {
    const IOC_READ_WRITE: libc::c_ulong = 3;
    (IOC_READ_WRITE << 30)
        | ((DM_IOCTL_SIZE as libc::c_ulong) << 16)
        | (0xfd << 8)
        | nr as libc::c_ulong
}

fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
}

fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    buf[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
}

/// Builds the buffer for one ioctl: header naming the device, then the targets.
pub fn ioctl_buffer(
    name: &str,
    uuid: &str,
    flags: u32,
    targets: &[DmTarget],
) -> Result<Vec<u8>, DmError> {
    if name.len() >= DM_NAME_LEN {
        return Err(DmError::NameTooLong(name.into()));
    }
    if uuid.len() >= DM_UUID_LEN {
        return Err(DmError::UuidTooLong(uuid.into()));
    }
    let mut buf = vec![0u8; DM_IOCTL_SIZE];
    for (i, part) in DM_VERSION.iter().enumerate() {
        put_u32(&mut buf, i * 4, *part);
    }
    put_u32(&mut buf, OFF_DATA_START, DM_IOCTL_SIZE as u32);
    put_u32(&mut buf, OFF_TARGET_COUNT, targets.len() as u32);
    put_u32(&mut buf, OFF_FLAGS, flags);
    buf[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
    buf[OFF_UUID..OFF_UUID + uuid.len()].copy_from_slice(uuid.as_bytes());

    for target in targets {
        if target.target_type.len() >= DM_MAX_TYPE_NAME {
            return Err(DmError::TargetTypeTooLong(target.target_type.clone()));
        }
        let spec_start = buf.len();
        // Params plus their NUL, rounded up so the next spec is 8-byte aligned.
        let params_len = (target.params.len() + 1).next_multiple_of(8);
        buf.resize(spec_start + DM_TARGET_SPEC_SIZE + params_len, 0);
        let spec = &mut buf[spec_start..];
        put_u64(spec, 0, target.start_sector);
        put_u64(spec, 8, target.length_sectors);
        // status (offset 16) stays 0; next is relative to this spec.
        put_u32(spec, 20, (DM_TARGET_SPEC_SIZE + params_len) as u32);
        spec[24..24 + target.target_type.len()].copy_from_slice(target.target_type.as_bytes());
        spec[DM_TARGET_SPEC_SIZE..DM_TARGET_SPEC_SIZE + target.params.len()]
            .copy_from_slice(target.params.as_bytes());
    }
    let used = buf.len();
    buf.resize(used.max(MIN_BUFFER), 0);
    let data_size = buf.len() as u32;
    put_u32(&mut buf, OFF_DATA_SIZE, data_size);
    Ok(buf)
}

/// The `dev` field the kernel filled in, as (major, minor) (huge_encode_dev format).
pub fn decode_dev(buf: &[u8]) -> (u32, u32) {
    let dev = u64::from_ne_bytes(buf[OFF_DEV..OFF_DEV + 8].try_into().expect("8 bytes"));
    let major = ((dev >> 8) & 0xfff) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// An open /dev/mapper/control.
pub struct Control {
    file: File,
}

impl Control {
    /// Opens the control node, creating it first if devtmpfs has not.
    pub fn open() -> Result<Control, DmError> {
        let path = Path::new(CONTROL_PATH);
        if !path.exists() {
            std::fs::create_dir_all("/dev/mapper").map_err(DmError::Control)?;
            let dev = libc::makedev(CONTROL_MAJOR, CONTROL_MINOR);
            super::sys::mknod(path, libc::S_IFCHR | 0o600, dev).map_err(DmError::Control)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(DmError::Control)?;
        Ok(Control { file })
    }

    fn call(&self, nr: u8, call: &'static str, name: &str, buf: &mut [u8]) -> Result<(), DmError> {
        // SAFETY: buf is a dm_ioctl header followed by data_size - 312 bytes we own; the
        // kernel reads and writes only within data_size.
        let ret =
            unsafe { libc::ioctl(self.file.as_raw_fd(), ioctl_request(nr), buf.as_mut_ptr()) };
        if ret == -1 {
            return Err(DmError::Ioctl {
                call,
                name: name.into(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// DM_DEV_CREATE: a new, table-less device. Returns its (major, minor).
    pub fn create(&self, name: &str, uuid: &str) -> Result<(u32, u32), DmError> {
        let mut buf = ioctl_buffer(name, uuid, 0, &[])?;
        self.call(DM_DEV_CREATE, "DM_DEV_CREATE", name, &mut buf)?;
        Ok(decode_dev(&buf))
    }

    /// DM_TABLE_LOAD into the inactive table.
    pub fn load_table(&self, name: &str, flags: u32, targets: &[DmTarget]) -> Result<(), DmError> {
        let mut buf = ioctl_buffer(name, "", flags, targets)?;
        self.call(DM_TABLE_LOAD, "DM_TABLE_LOAD", name, &mut buf)
    }

    /// DM_DEV_SUSPEND without the suspend flag: resume, which makes the loaded table live.
    pub fn resume(&self, name: &str) -> Result<(), DmError> {
        let mut buf = ioctl_buffer(name, "", 0, &[])?;
        self.call(DM_DEV_SUSPEND, "DM_DEV_SUSPEND (resume)", name, &mut buf)
    }

    /// DM_DEV_REMOVE.
    pub fn remove(&self, name: &str) -> Result<(), DmError> {
        let mut buf = ioctl_buffer(name, "", 0, &[])?;
        self.call(DM_DEV_REMOVE, "DM_DEV_REMOVE", name, &mut buf)
    }
}

/// Creates a read-only device `name` with `targets` and returns its node, `/dev/dm-<minor>`.
/// On a failed table load the half-made device is removed again.
pub fn create_read_only_device(
    name: &str,
    uuid: &str,
    targets: &[DmTarget],
) -> Result<PathBuf, DmError> {
    let control = Control::open()?;
    let (_major, minor) = control.create(name, uuid)?;
    let live = control
        .load_table(name, DM_READONLY_FLAG, targets)
        .and_then(|()| control.resume(name));
    if let Err(e) = live {
        let _ = control.remove(name);
        return Err(e);
    }
    // devtmpfs creates the node as the disk is added; allow for it to lag a moment.
    let node = PathBuf::from(format!("/dev/dm-{minor}"));
    let started = Instant::now();
    while !node.exists() {
        if started.elapsed() > Duration::from_secs(5) {
            return Err(DmError::NoNode(node));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(buf: &[u8], offset: usize) -> u32 {
        u32::from_ne_bytes(buf[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(buf: &[u8], offset: usize) -> u64 {
        u64::from_ne_bytes(buf[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn request_numbers_match_the_kernel_headers() {
        // Values of DM_DEV_CREATE etc. as compiled from <linux/dm-ioctl.h> on x86-64.
        assert_eq!(ioctl_request(DM_DEV_CREATE), 0xc138fd03);
        assert_eq!(ioctl_request(DM_DEV_REMOVE), 0xc138fd04);
        assert_eq!(ioctl_request(DM_DEV_SUSPEND), 0xc138fd06);
        assert_eq!(ioctl_request(DM_TABLE_LOAD), 0xc138fd09);
    }

    #[test]
    fn header_layout() {
        let buf = ioctl_buffer("root", "KEEL-VERITY-ab", DM_READONLY_FLAG, &[]).unwrap();
        assert_eq!(
            &[u32_at(&buf, 0), u32_at(&buf, 4), u32_at(&buf, 8)],
            &[4, 0, 0]
        );
        assert_eq!(u32_at(&buf, OFF_DATA_SIZE) as usize, buf.len());
        assert!(buf.len() >= MIN_BUFFER);
        assert_eq!(u32_at(&buf, OFF_DATA_START), 312);
        assert_eq!(u32_at(&buf, OFF_TARGET_COUNT), 0);
        assert_eq!(u32_at(&buf, OFF_FLAGS), DM_READONLY_FLAG);
        assert_eq!(&buf[48..53], b"root\0");
        assert_eq!(&buf[176..191], b"KEEL-VERITY-ab\0");
        // The uuid field ends right where the 7-byte data tail of the struct starts.
        assert_eq!(OFF_UUID + DM_UUID_LEN, 305);
    }

    #[test]
    fn target_spec_follows_the_header_with_params_after_it() {
        let params = "1 /dev/vda2 /dev/vda3 4096 4096 100 1 sha256 abc -";
        let targets = [DmTarget {
            start_sector: 0,
            length_sectors: 800,
            target_type: "verity".into(),
            params: params.into(),
        }];
        let buf = ioctl_buffer("root", "", DM_READONLY_FLAG, &targets).unwrap();
        assert_eq!(u32_at(&buf, OFF_TARGET_COUNT), 1);
        let spec = &buf[DM_IOCTL_SIZE..];
        assert_eq!(u64_at(spec, 0), 0);
        assert_eq!(u64_at(spec, 8), 800);
        assert_eq!(u32_at(spec, 16), 0);
        assert_eq!(&spec[24..31], b"verity\0");
        let params_at = DM_TARGET_SPEC_SIZE;
        assert_eq!(
            &spec[params_at..params_at + params.len()],
            params.as_bytes()
        );
        assert_eq!(
            spec[params_at + params.len()],
            0,
            "params are NUL-terminated"
        );
        let next = u32_at(spec, 20) as usize;
        assert_eq!(next % 8, 0);
        assert!(next > DM_TARGET_SPEC_SIZE + params.len());
        assert!(next < DM_TARGET_SPEC_SIZE + params.len() + 1 + 8);
    }

    #[test]
    fn two_targets_chain_through_next() {
        let target = |start, params: &str| DmTarget {
            start_sector: start,
            length_sectors: 8,
            target_type: "zero".into(),
            params: params.into(),
        };
        let buf = ioctl_buffer("t", "", 0, &[target(0, "a"), target(8, "exactly8")]).unwrap();
        let first = DM_IOCTL_SIZE;
        let second = first + u32_at(&buf, first + 20) as usize;
        assert_eq!(second, first + 40 + 8);
        assert_eq!(u64_at(&buf, second), 8);
        assert_eq!(&buf[second + 40..second + 49], b"exactly8\0");
        assert_eq!(u32_at(&buf, second + 20), 40 + 16);
    }

    #[test]
    fn overlong_names_are_refused() {
        assert!(matches!(
            ioctl_buffer(&"n".repeat(128), "", 0, &[]),
            Err(DmError::NameTooLong(_))
        ));
        assert!(ioctl_buffer(&"n".repeat(127), &"u".repeat(128), 0, &[]).is_ok());
        assert!(matches!(
            ioctl_buffer("n", &"u".repeat(129), 0, &[]),
            Err(DmError::UuidTooLong(_))
        ));
    }

    #[test]
    fn dev_decoding_handles_large_minors() {
        let mut buf = vec![0u8; DM_IOCTL_SIZE];
        // huge_encode_dev(MKDEV(253, 0x12345)) = 0x45 | 253 << 8 | 0x12300 << 12
        put_u64(&mut buf, OFF_DEV, 0x45 | (253 << 8) | (0x12300 << 12));
        assert_eq!(decode_dev(&buf), (253, 0x12345));
    }
}
