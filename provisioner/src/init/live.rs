//! Live boots (`keel.live` on the kernel command line): the root is one image file — the ext4
//! root followed by its dm-verity hash device — found in the initramfs (a PXE boot's iPXE
//! script adds it there as `/keel/rootfs.img`) or on the live medium (an ISO 9660 volume
//! labelled `KEEL_LIVE`: a CD, or the ISO written to a USB disk), attached to a read-only loop
//! device and verified like ROOT-A. STATE is then a tmpfs.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_image::layout::{LIVE_MOUNT, LIVE_ROOT_IMAGE, LIVE_VOLUME_ID};

use super::sys;

/// Where an ISO 9660 primary volume descriptor starts (sector 16), and its fields.
const ISO_PVD_OFFSET: u64 = 16 * 2048;
const ISO_VOLUME_ID_AT: usize = 40;
const ISO_VOLUME_ID_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error(
        "keel.live: no root image: /{LIVE_ROOT_IMAGE} is not in the initramfs and no ISO 9660 volume labelled {LIVE_VOLUME_ID} appeared within {0:?}"
    )]
    NoMedium(Duration),
    #[error("keel.live: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("keel.live: {0} does not start with an ext4 filesystem, so it is no Keel root image")]
    NotExt4(PathBuf),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LiveError + 'a {
    move |source| LiveError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where the root image came from, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveSource {
    Initramfs,
    Medium(PathBuf),
}

/// The live root image: from the initramfs if the boot loader put it there, else from the
/// live medium, which is mounted at [`LIVE_MOUNT`] (and stays mounted, for keel-install).
pub fn find_root_image(
    sys_block: &Path,
    dev: &Path,
    poll: Duration,
    wait: Duration,
) -> Result<(PathBuf, LiveSource), LiveError> {
    let in_initramfs = Path::new("/").join(LIVE_ROOT_IMAGE);
    if in_initramfs.is_file() {
        return Ok((in_initramfs, LiveSource::Initramfs));
    }
    let deadline = Instant::now() + wait;
    let medium = loop {
        if let Some(device) = find_iso_volume(sys_block, dev, LIVE_VOLUME_ID) {
            break device;
        }
        if Instant::now() >= deadline {
            return Err(LiveError::NoMedium(wait));
        }
        std::thread::sleep(poll);
    };
    let mount = Path::new(LIVE_MOUNT);
    std::fs::create_dir_all(mount).map_err(io_err("creating", mount))?;
    sys::mount(
        &medium.to_string_lossy(),
        mount,
        Some("iso9660"),
        libc::MS_RDONLY,
        None,
    )
    .map_err(io_err("mounting the live medium on", mount))?;
    Ok((mount.join(LIVE_ROOT_IMAGE), LiveSource::Medium(medium)))
}

/// The first block device (whole disks first, as /sys/block lists them) holding an ISO 9660
/// volume with this id.
pub fn find_iso_volume(sys_block: &Path, dev: &Path, volume_id: &str) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("dm-"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| dev.join(name))
        .find(|device| iso_volume_id(device).is_some_and(|id| id == volume_id))
}

/// The volume id of the ISO 9660 filesystem on `device`, if it has one.
pub fn iso_volume_id(device: &Path) -> Option<String> {
    let mut file = File::open(device).ok()?;
    file.seek(SeekFrom::Start(ISO_PVD_OFFSET)).ok()?;
    let mut pvd = [0u8; 2048];
    file.read_exact(&mut pvd).ok()?;
    // Type 1 (primary volume descriptor), "CD001", version 1.
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" || pvd[6] != 1 {
        return None;
    }
    let id = &pvd[ISO_VOLUME_ID_AT..ISO_VOLUME_ID_AT + ISO_VOLUME_ID_LEN];
    Some(String::from_utf8_lossy(id).trim_end().to_string())
}

/// The size of the ext4 filesystem at the start of `image`: where its hash device begins.
pub fn ext4_size(image: &Path) -> Result<u64, LiveError> {
    let mut file = File::open(image).map_err(io_err("opening", image))?;
    let mut sb = [0u8; 1024];
    file.seek(SeekFrom::Start(1024))
        .and_then(|_| file.read_exact(&mut sb))
        .map_err(io_err("reading", image))?;
    let u32_at = |at: usize| u32::from_le_bytes(sb[at..at + 4].try_into().expect("4 bytes"));
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return Err(LiveError::NotExt4(image.to_path_buf()));
    }
    let blocks_lo = u64::from(u32_at(0x04));
    // s_blocks_count_hi only counts with the 64bit feature (incompat 0x80).
    let blocks_hi = if u32_at(0x60) & 0x80 != 0 {
        u64::from(u32_at(0x150))
    } else {
        0
    };
    let block_size = 1024u64 << u32_at(0x18);
    Ok(((blocks_hi << 32) | blocks_lo) * block_size)
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;

/// Attaches `file` to a free loop device, read-only (the file is opened read-only, which makes
/// the loop device refuse writes), and returns the device.
pub fn attach_read_only(file: &Path) -> Result<PathBuf, LiveError> {
    use std::os::fd::AsRawFd;
    let control_path = Path::new("/dev/loop-control");
    let control = File::open(control_path).map_err(io_err("opening", control_path))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if number < 0 {
        return Err(LiveError::Io {
            what: "finding a free loop device with",
            path: control_path.to_path_buf(),
            source: io::Error::last_os_error(),
        });
    }
    let device = PathBuf::from(format!("/dev/loop{number}"));
    let backing = File::open(file).map_err(io_err("opening", file))?;
    let loop_dev = std::fs::OpenOptions::new()
        .read(true)
        .open(&device)
        .map_err(io_err("opening", &device))?;
    // SAFETY: LOOP_SET_FD takes the backing file's descriptor, which is open for the call;
    // the kernel keeps its own reference afterwards.
    let rc = unsafe {
        libc::ioctl(
            loop_dev.as_raw_fd(),
            LOOP_SET_FD as _,
            backing.as_raw_fd() as libc::c_ulong,
        )
    };
    if rc < 0 {
        return Err(LiveError::Io {
            what: "attaching the root image to",
            path: device,
            source: io::Error::last_os_error(),
        });
    }
    Ok(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_volume_ids_are_read_from_the_primary_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let iso = dir.path().join("x.iso");
        let mut bytes = vec![0u8; 40 * 2048];
        let pvd = &mut bytes[16 * 2048..17 * 2048];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[6] = 1;
        let mut id = [b' '; 32];
        id[..9].copy_from_slice(b"KEEL_LIVE");
        pvd[40..72].copy_from_slice(&id);
        std::fs::write(&iso, &bytes).unwrap();
        assert_eq!(iso_volume_id(&iso).as_deref(), Some("KEEL_LIVE"));

        let not_iso = dir.path().join("blank");
        std::fs::write(&not_iso, vec![0u8; 40 * 2048]).unwrap();
        assert_eq!(iso_volume_id(&not_iso), None);

        // A fake /sys/block and /dev: the device holding the volume is found by its id.
        let sys_block = dir.path().join("sys-block");
        let dev = dir.path().join("dev");
        for name in ["sr0", "vda", "loop0"] {
            std::fs::create_dir_all(sys_block.join(name)).unwrap();
        }
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::copy(&not_iso, dev.join("vda")).unwrap();
        std::fs::copy(&iso, dev.join("sr0")).unwrap();
        std::fs::copy(&iso, dev.join("loop0")).unwrap();
        assert_eq!(
            find_iso_volume(&sys_block, &dev, "KEEL_LIVE"),
            Some(dev.join("sr0"))
        );
        assert_eq!(find_iso_volume(&sys_block, &dev, "OTHER"), None);
    }

    #[test]
    fn the_ext4_size_comes_from_its_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("root.ext4");
        let out = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096"])
            .arg(&img)
            .arg("6M")
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            _ => {
                eprintln!("skipped: mkfs.ext4 (e2fsprogs) is not available");
                return;
            }
        }
        // Something after the filesystem, as the hash device follows it in a live image.
        let mut bytes = std::fs::read(&img).unwrap();
        bytes.extend_from_slice(&[7u8; 8192]);
        std::fs::write(&img, &bytes).unwrap();
        assert_eq!(ext4_size(&img).unwrap(), 6 << 20);

        let junk = dir.path().join("junk");
        std::fs::write(&junk, vec![1u8; 4096]).unwrap();
        assert!(matches!(ext4_size(&junk), Err(LiveError::NotExt4(_))));
    }
}
