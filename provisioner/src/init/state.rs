//! STATE, the writable partition mounted at /var: detecting the first boot, growing the
//! partition to the end of the disk, formatting it with the root image's own mke2fs.

use super::disks::gpt_block_size;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the ext4 superblock magic sits: superblock at 1024, s_magic at offset 56 in it.
const EXT4_MAGIC_OFFSET: u64 = 1024 + 56;
const EXT4_MAGIC: u16 = 0xef53;

/// BLKPG = _IO(0x12, 105).
const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("GPT of {disk}: {source}")]
    Gpt {
        disk: PathBuf,
        source: gpt::GptError,
    },
    #[error("writing {disk}: {source}")]
    Write { disk: PathBuf, source: io::Error },
    #[error("partition {number} is not in the GPT of {disk}")]
    NoSuchPartition { disk: PathBuf, number: u32 },
    #[error("STATE (partition {number}) is not the last partition of {disk}; cannot grow it")]
    NotLast { disk: PathBuf, number: u32 },
    #[error(
        "the GPT of {disk} numbers its partitions with gaps; rewriting it would renumber them"
    )]
    NumberingGaps { disk: PathBuf },
    #[error(
        "the GPT of {disk} leaves no room: last usable LBA {last_usable} < STATE start {first_lba}"
    )]
    NoRoom {
        disk: PathBuf,
        last_usable: u64,
        first_lba: u64,
    },
    #[error("telling the kernel the new size of partition {number} of {disk} (BLKPG): {source}")]
    Blkpg {
        disk: PathBuf,
        number: u32,
        source: io::Error,
    },
    #[error("running {command}: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("{command} failed: {status}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
    },
}

/// Whether the device or file holds an ext2/3/4 superblock.
pub fn has_ext4_superblock(device: &Path) -> Result<bool, StateError> {
    let read_magic = || -> io::Result<u16> {
        let mut file = File::open(device)?;
        file.seek(SeekFrom::Start(EXT4_MAGIC_OFFSET))?;
        let mut magic = [0u8; 2];
        file.read_exact(&mut magic)?;
        Ok(u16::from_le_bytes(magic))
    };
    match read_magic() {
        Ok(magic) => Ok(magic == EXT4_MAGIC),
        // A partition too small to hold a superblock holds none.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(source) => Err(StateError::Read {
            path: device.to_owned(),
            source,
        }),
    }
}

/// Size in bytes of a device or file.
pub fn size_of(path: &Path) -> Result<u64, StateError> {
    let read = || -> io::Result<u64> { File::open(path)?.seek(SeekFrom::End(0)) };
    read().map_err(|source| StateError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What growing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Growth {
    pub first_lba: u64,
    pub old_last_lba: u64,
    pub new_last_lba: u64,
    pub block_size: u64,
}

impl Growth {
    pub fn changed(&self) -> bool {
        self.old_last_lba != self.new_last_lba
    }

    pub fn new_size_bytes(&self) -> u64 {
        (self.new_last_lba - self.first_lba + 1) * self.block_size
    }
}

/// Rewrites the GPT of `disk` so the backup header sits at the disk's real end (the image may
/// have been enlarged since it was written) and partition `number`, which must be the last
/// one, ends at the last usable LBA. Also stretches the protective MBR over the disk and
/// wipes the stale backup header, which now lies inside the partition. Nothing is written
/// when everything is already in place.
pub fn grow_last_partition(
    disk: &Path,
    block_size: u64,
    number: u32,
) -> Result<Growth, StateError> {
    let gpt_err = |source| StateError::Gpt {
        disk: disk.to_owned(),
        source,
    };
    let write_err = |source| StateError::Write {
        disk: disk.to_owned(),
        source,
    };

    let mut table = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(gpt_block_size(block_size))
        .open(disk)
        .map_err(gpt_err)?;
    let mut partitions = table.partitions().clone();
    let numbers_contiguous = partitions.keys().copied().eq(1..=partitions.len() as u32);
    let state = partitions
        .get(&number)
        .ok_or(StateError::NoSuchPartition {
            disk: disk.to_owned(),
            number,
        })?
        .clone();
    if partitions
        .values()
        .any(|p| p.is_used() && p.first_lba > state.first_lba)
    {
        return Err(StateError::NotLast {
            disk: disk.to_owned(),
            number,
        });
    }

    let header = table.header().clone();
    let disk_sectors = size_of(disk)? / block_size;
    let new_backup_lba = disk_sectors - 1;
    let entry_sectors =
        (u64::from(header.num_parts) * u64::from(header.part_size)).div_ceil(block_size);
    let new_last_usable = new_backup_lba - entry_sectors - 1;
    if new_last_usable < state.first_lba {
        return Err(StateError::NoRoom {
            disk: disk.to_owned(),
            last_usable: new_last_usable,
            first_lba: state.first_lba,
        });
    }
    let growth = Growth {
        first_lba: state.first_lba,
        old_last_lba: state.last_lba,
        new_last_lba: new_last_usable,
        block_size,
    };
    let backup_in_place = table
        .backup_header()
        .map(|b| b.current_lba == new_backup_lba && b.last_usable == new_last_usable)
        .unwrap_or(false);
    if !growth.changed() && backup_in_place && header.last_usable == new_last_usable {
        return Ok(growth);
    }
    // The gpt crate writes used entries packed from slot 0; with gaps that would renumber.
    if !numbers_contiguous {
        return Err(StateError::NumberingGaps {
            disk: disk.to_owned(),
        });
    }

    let old_backup_lba = header.backup_lba;
    partitions.get_mut(&number).expect("checked above").last_lba = new_last_usable;
    table.update_partitions(partitions).map_err(gpt_err)?;
    let mut device = table.write().map_err(gpt_err)?;

    if old_backup_lba < new_backup_lba && old_backup_lba <= new_last_usable {
        device
            .seek(SeekFrom::Start(old_backup_lba * block_size))
            .and_then(|_| device.write_all(&vec![0u8; block_size as usize]))
            .map_err(write_err)?;
    }
    let protective_sectors = u32::try_from(disk_sectors - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(protective_sectors)
        .update_conservative(&mut device)
        .map_err(|e| write_err(io::Error::other(e.to_string())))?;
    device.sync_all().map_err(write_err)?;
    Ok(growth)
}

/// struct blkpg_partition.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; 64],
    volname: [libc::c_char; 64],
}

/// struct blkpg_ioctl_arg.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

/// Tells the kernel partition `number` of `disk` now has the given extent. Unlike BLKRRPART
/// this works while other partitions of the disk are in use (the root is).
pub fn resize_partition_in_kernel(
    disk: &Path,
    number: u32,
    start_bytes: u64,
    length_bytes: u64,
) -> Result<(), StateError> {
    let blkpg_err = |source| StateError::Blkpg {
        disk: disk.to_owned(),
        number,
        source,
    };
    let device = File::open(disk).map_err(blkpg_err)?;
    let mut partition = BlkpgPartition {
        start: start_bytes as libc::c_longlong,
        length: length_bytes as libc::c_longlong,
        pno: number as libc::c_int,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as libc::c_int,
        data: (&mut partition as *mut BlkpgPartition).cast(),
    };
    // SAFETY: arg points at a blkpg_partition that lives across the call.
    let ret = unsafe { libc::ioctl(device.as_raw_fd(), BLKPG, &mut arg) };
    if ret == -1 {
        return Err(blkpg_err(io::Error::last_os_error()));
    }
    Ok(())
}

/// Formats `device` as ext4 labelled STATE with the root image's own mke2fs (the initramfs
/// carries none; keel-init runs this after switching into the verified root).
pub fn format_state(device: &Path) -> Result<(), StateError> {
    let mut command = Command::new("/sbin/mkfs.ext4");
    command
        .args(["-q", "-F", "-L", "STATE", "-E", "root_owner=0:0"])
        .arg(device)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    let description = format!("{command:?}");
    let status = command.status().map_err(|source| StateError::Spawn {
        command: description.clone(),
        source,
    })?;
    if !status.success() {
        return Err(StateError::Command {
            command: description,
            status,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::disks::find_keel_partitions;
    use crate::init::disks::tests::{write_test_disk, MIB_SECTORS};
    use uuid::Uuid;

    const ROOT: Uuid = Uuid::from_u128(0xaa);
    const VERITY: Uuid = Uuid::from_u128(0xbb);

    #[test]
    fn grows_state_to_the_end_of_an_enlarged_disk() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        write_test_disk(&image, 12 << 20, ROOT, VERITY);
        let before = find_keel_partitions(&image, 512, ROOT, VERITY)
            .unwrap()
            .unwrap();
        assert_eq!(before.state.last_lba, 10 * MIB_SECTORS - 1);

        // qemu-img resize: the image grows, the backup GPT is now in the middle.
        File::options()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let growth = grow_last_partition(&image, 512, 4).unwrap();
        let sectors = (64u64 << 20) / 512;
        assert!(growth.changed());
        assert_eq!(growth.new_last_lba, sectors - 1 - 32 - 1);
        assert_eq!(
            growth.new_size_bytes(),
            (sectors - 33 - 8 * MIB_SECTORS) * 512
        );

        // Both headers must now be valid and agree.
        let table = gpt::GptConfig::new()
            .only_valid_headers(true)
            .open(&image)
            .unwrap();
        let primary = table.primary_header().unwrap();
        let backup = table.backup_header().unwrap();
        assert_eq!(primary.backup_lba, sectors - 1);
        assert_eq!(backup.current_lba, sectors - 1);
        assert_eq!(primary.last_usable, growth.new_last_lba);
        assert_eq!(backup.last_usable, growth.new_last_lba);
        let after = find_keel_partitions(&image, 512, ROOT, VERITY)
            .unwrap()
            .unwrap();
        assert_eq!(after.state.last_lba, primary.last_usable);
        assert_eq!(after.state.first_lba, before.state.first_lba);
        assert_eq!(after.root, before.root);
        assert_eq!(after.verity, before.verity);

        // The stale backup header inside STATE is gone.
        let mut old_backup = [0u8; 8];
        let mut file = File::open(&image).unwrap();
        file.seek(SeekFrom::Start((12 << 20) - 512)).unwrap();
        file.read_exact(&mut old_backup).unwrap();
        assert_ne!(&old_backup, b"EFI PART");

        // util-linux agrees the table is sound.
        let verify = Command::new("sfdisk")
            .arg("--verify")
            .arg(&image)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&verify.stdout).into_owned()
            + &String::from_utf8_lossy(&verify.stderr);
        assert!(verify.status.success(), "sfdisk --verify: {report}");
        assert!(!report.contains("mismatch"), "sfdisk --verify: {report}");
        assert!(
            !report.contains("not on the end"),
            "sfdisk --verify: {report}"
        );

        // A second run has nothing left to do.
        let again = grow_last_partition(&image, 512, 4).unwrap();
        assert!(!again.changed());
    }

    #[test]
    fn refuses_to_grow_a_partition_that_is_not_last() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        write_test_disk(&image, 12 << 20, ROOT, VERITY);
        let err = grow_last_partition(&image, 512, 2).unwrap_err();
        assert!(
            matches!(err, StateError::NotLast { number: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn ext4_superblock_detection() {
        let dir = tempfile::tempdir().unwrap();
        let blank = dir.path().join("blank");
        std::fs::write(&blank, vec![0u8; 4096]).unwrap();
        assert!(!has_ext4_superblock(&blank).unwrap());
        let mut fake = vec![0u8; 4096];
        fake[1080..1082].copy_from_slice(&0xef53u16.to_le_bytes());
        let ext4 = dir.path().join("ext4");
        std::fs::write(&ext4, fake).unwrap();
        assert!(has_ext4_superblock(&ext4).unwrap());
        let tiny = dir.path().join("tiny");
        std::fs::write(&tiny, [0u8; 10]).unwrap();
        assert!(!has_ext4_superblock(&tiny).unwrap());
    }

    #[test]
    fn blkpg_structs_match_the_kernel_abi() {
        assert_eq!(std::mem::size_of::<BlkpgPartition>(), 152);
        assert_eq!(std::mem::size_of::<BlkpgIoctlArg>(), 24);
    }
}
