//! Finding ROOT, its verity partition and STATE by GPT, the way the image builder laid them out.

use gpt::disk::LogicalBlockSize;
use keel_image::layout::VAR_TYPE;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Kinds of block devices that never hold the Keel disk.
const IGNORED_DISK_PREFIXES: [&str; 6] = ["loop", "ram", "dm-", "sr", "zram", "md"];

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("reading the GPT of {disk}: {source}")]
    Gpt {
        disk: PathBuf,
        source: gpt::GptError,
    },
    #[error("{disk} holds ROOT (PARTUUID {root}) but no STATE partition (type {VAR_TYPE})")]
    NoState { disk: PathBuf, root: Uuid },
    #[error(
        "no disk holds partitions with PARTUUID {root} (root) and {verity} (verity) after \
         {waited_secs} s; disks seen: {seen}"
    )]
    NotFound {
        root: Uuid,
        verity: Uuid,
        waited_secs: u64,
        seen: String,
    },
}

/// One GPT partition, by number (1-based, as the kernel names it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRef {
    pub number: u32,
    pub label: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

/// The partitions of the Keel disk that the init needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeelPartitions {
    /// The whole disk, e.g. `/dev/vda`.
    pub disk: PathBuf,
    pub block_size: u64,
    pub root: PartitionRef,
    pub verity: PartitionRef,
    pub state: PartitionRef,
    /// The EFI system partition (by its label), where keel-install leaves a cloud-config.
    pub esp: Option<PartitionRef>,
}

impl KeelPartitions {
    /// The device node of one of the partitions, e.g. `/dev/vda2`.
    pub fn device(&self, partition: &PartitionRef) -> PathBuf {
        let disk_name = self
            .disk
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        self.disk
            .with_file_name(partition_device_name(&disk_name, partition.number))
    }
}

/// Kernel name of partition `number` of `disk`: `vda` + 2 = `vda2`, but `nvme0n1` + 2 =
/// `nvme0n1p2`, because a trailing digit would make the number ambiguous.
pub fn partition_device_name(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{disk}p{number}")
    } else {
        format!("{disk}{number}")
    }
}

/// Logical block size for the gpt crate; 4096-byte disks exist (some NVMe), all else is 512.
pub fn gpt_block_size(bytes: u64) -> LogicalBlockSize {
    if bytes == 4096 {
        LogicalBlockSize::Lb4096
    } else {
        LogicalBlockSize::Lb512
    }
}

/// Reads the GPT of `disk` (a device node or an image file) and picks out the root partition
/// and its verity partition by PARTUUID and STATE by type GUID. `Ok(None)` when this disk
/// does not hold both root partitions.
pub fn find_keel_partitions(
    disk: &Path,
    block_size: u64,
    root_uuid: Uuid,
    verity_uuid: Uuid,
) -> Result<Option<KeelPartitions>, DiskError> {
    let table = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt_block_size(block_size))
        .open(disk)
        .map_err(|source| DiskError::Gpt {
            disk: disk.to_owned(),
            source,
        })?;
    let find = |pred: &dyn Fn(&gpt::partition::Partition) -> bool| {
        table
            .partitions()
            .iter()
            .find(|(_, p)| p.is_used() && pred(p))
            .map(|(&number, p)| PartitionRef {
                number,
                label: p.name.clone(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
            })
    };
    let (Some(root), Some(verity)) = (
        find(&|p| p.part_guid == root_uuid),
        find(&|p| p.part_guid == verity_uuid),
    ) else {
        return Ok(None);
    };
    let state = find(&|p| p.part_type_guid.guid == VAR_TYPE).ok_or(DiskError::NoState {
        disk: disk.to_owned(),
        root: root_uuid,
    })?;
    let esp = find(&|p| p.name == keel_image::layout::LABEL_ESP);
    Ok(Some(KeelPartitions {
        disk: disk.to_owned(),
        block_size,
        root,
        verity,
        state,
        esp,
    }))
}

/// Whole disks the kernel knows, by name (`vda`, `nvme0n1`), from a /sys/block directory.
pub fn whole_disks(sys_block: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            !IGNORED_DISK_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .collect();
    names.sort();
    names
}

/// What one look at a disk found; kept for the error message when nothing matches.
struct DiskSighting {
    name: String,
    note: String,
}

impl fmt::Display for DiskSighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.note)
    }
}

fn logical_block_size(sys_block: &Path, disk: &str) -> u64 {
    std::fs::read_to_string(sys_block.join(disk).join("queue/logical_block_size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(512)
}

/// Polls the disks every `interval` until one holds the root and verity partitions and their
/// device nodes exist, or `timeout` passes. Disks show up asynchronously as drivers probe.
pub fn wait_for_keel_partitions(
    sys_block: &Path,
    dev: &Path,
    root_uuid: Uuid,
    verity_uuid: Uuid,
    interval: Duration,
    timeout: Duration,
) -> Result<KeelPartitions, DiskError> {
    let started = Instant::now();
    loop {
        let mut sightings = Vec::new();
        for name in whole_disks(sys_block) {
            let node = dev.join(&name);
            if !node.exists() {
                sightings.push(DiskSighting {
                    name,
                    note: "no device node yet".into(),
                });
                continue;
            }
            let block_size = logical_block_size(sys_block, &name);
            match find_keel_partitions(&node, block_size, root_uuid, verity_uuid) {
                Ok(Some(found)) => {
                    let nodes_ready = [&found.root, &found.verity, &found.state]
                        .iter()
                        .all(|p| found.device(p).exists());
                    if nodes_ready {
                        return Ok(found);
                    }
                    sightings.push(DiskSighting {
                        name,
                        note: "partition nodes pending".into(),
                    });
                }
                Ok(None) => sightings.push(DiskSighting {
                    name,
                    note: "no match".into(),
                }),
                Err(DiskError::Gpt { source, .. }) => sightings.push(DiskSighting {
                    name,
                    note: format!("no GPT: {source}"),
                }),
                Err(other) => return Err(other),
            }
        }
        if started.elapsed() >= timeout {
            let seen = if sightings.is_empty() {
                "none".to_string()
            } else {
                sightings
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(DiskError::NotFound {
                root: root_uuid,
                verity: verity_uuid,
                waited_secs: timeout.as_secs(),
                seen,
            });
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use keel_image::layout::{ROOT_VERITY_X86_64_TYPE, ROOT_X86_64_TYPE};
    use std::collections::BTreeMap;

    pub const MIB_SECTORS: u64 = 2048;

    /// Writes a small Keel-like disk image: ESP, ROOT-A, ROOT-A-VERITY, STATE (last).
    pub fn write_test_disk(path: &Path, size: u64, root: Uuid, verity: Uuid) {
        let file = std::fs::File::create(path).unwrap();
        file.set_len(size).unwrap();
        drop(file);
        let mut disk = gpt::GptConfig::new().writable(true).create(path).unwrap();
        let part = |first_mib: u64, mib: u64, ty: Uuid, guid: Uuid, name: &str| {
            gpt::partition::Partition {
                part_type_guid: ty.into(),
                part_guid: guid,
                first_lba: first_mib * MIB_SECTORS,
                last_lba: (first_mib + mib) * MIB_SECTORS - 1,
                flags: 0,
                name: name.into(),
            }
        };
        let mut parts = BTreeMap::new();
        parts.insert(
            1,
            part(
                1,
                2,
                keel_image::layout::ESP_TYPE,
                Uuid::from_u128(1),
                "EFI-SYSTEM",
            ),
        );
        parts.insert(2, part(3, 4, ROOT_X86_64_TYPE, root, "ROOT-A"));
        parts.insert(
            3,
            part(7, 1, ROOT_VERITY_X86_64_TYPE, verity, "ROOT-A-VERITY"),
        );
        parts.insert(4, part(8, 2, VAR_TYPE, Uuid::from_u128(4), "STATE"));
        disk.update_partitions(parts).unwrap();
        let mut device = disk.write().unwrap();
        let sectors = u32::try_from(size / 512 - 1).unwrap();
        gpt::mbr::ProtectiveMBR::with_lb_size(sectors)
            .overwrite_lba0(&mut device)
            .unwrap();
    }

    #[test]
    fn partition_names_follow_the_kernel() {
        assert_eq!(partition_device_name("vda", 2), "vda2");
        assert_eq!(partition_device_name("sda", 12), "sda12");
        assert_eq!(partition_device_name("nvme0n1", 2), "nvme0n1p2");
        assert_eq!(partition_device_name("mmcblk0", 4), "mmcblk0p4");
    }

    #[test]
    fn finds_partitions_by_partuuid_and_state_by_type() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        let (root, verity) = (Uuid::from_u128(0xaa), Uuid::from_u128(0xbb));
        write_test_disk(&image, 12 << 20, root, verity);

        let found = find_keel_partitions(&image, 512, root, verity)
            .unwrap()
            .unwrap();
        assert_eq!(found.root.number, 2);
        assert_eq!(found.root.label, "ROOT-A");
        assert_eq!(found.verity.number, 3);
        assert_eq!(found.verity.label, "ROOT-A-VERITY");
        assert_eq!(found.state.number, 4);
        assert_eq!(found.state.label, "STATE");
        assert_eq!(found.state.first_lba, 8 * MIB_SECTORS);
        assert_eq!(found.device(&found.root), dir.path().join("disk.raw2"));
    }

    #[test]
    fn other_root_hash_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.raw");
        write_test_disk(
            &image,
            12 << 20,
            Uuid::from_u128(0xaa),
            Uuid::from_u128(0xbb),
        );
        let found = find_keel_partitions(&image, 512, Uuid::from_u128(0xaa), Uuid::from_u128(0xcc));
        assert!(found.unwrap().is_none());
    }

    #[test]
    fn disk_listing_skips_virtual_devices() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["vda", "loop0", "dm-0", "sr0", "ram1", "nvme0n1"] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        assert_eq!(whole_disks(dir.path()), vec!["nvme0n1", "vda"]);
    }

    #[test]
    fn waiting_gives_up_naming_what_it_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let sys_block = dir.path().join("block");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(sys_block.join("vda")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let err = wait_for_keel_partitions(
            &sys_block,
            &dev,
            Uuid::from_u128(0xaa),
            Uuid::from_u128(0xbb),
            Duration::from_millis(10),
            Duration::from_millis(30),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("00000000-0000-0000-0000-0000000000aa"),
            "{err}"
        );
        assert!(err.contains("vda (no device node yet)"), "{err}");
    }
}
