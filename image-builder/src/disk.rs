//! GPT disk assembly: lays partitions out on a raw disk image, writes the protective MBR and both
//! GPT headers with fixed GUIDs, and copies partition contents in, keeping the file sparse.
//!
//! The output depends only on the arguments — no random GUIDs, no timestamps — so the same spec
//! gives a byte-identical image.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types::{OperatingSystem, Type};
use gpt::{GptConfig, GptError};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Logical sector size of the images we write (and the only one we read).
pub const SECTOR_SIZE: u64 = 512;
/// Partition starts and sizes are multiples of this, as every partitioning tool does it, so that
/// filesystems stay aligned to any physical block or erase-block size the image lands on.
pub const ALIGNMENT: u64 = 1024 * 1024;
/// A GPT partition name holds at most 36 UTF-16 code units; the gpt crate would cut longer ones.
const MAX_LABEL_UTF16_UNITS: usize = 36;
/// Contents are copied in chunks of this size; all-zero chunks are skipped so they stay holes.
const COPY_CHUNK: usize = 1024 * 1024;

/// One partition to create.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionSpec {
    /// GPT partition name (PARTLABEL).
    pub label: String,
    pub type_guid: Uuid,
    /// Unique partition GUID (PARTUUID).
    pub uuid: Uuid,
    /// Size in bytes, rounded up to a whole MiB; 0 fills the rest of the disk (last one only).
    pub size_bytes: u64,
    /// A file copied to the start of the partition; it must fit.
    pub contents: Option<PathBuf>,
}

/// A partition as it lies on the disk.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PlacedPartition {
    /// Partition number, from 1.
    pub number: u32,
    pub label: String,
    #[serde(with = "uuid_as_text")]
    pub type_guid: Uuid,
    #[serde(with = "uuid_as_text")]
    pub uuid: Uuid,
    pub offset_bytes: u64,
    pub size_bytes: u64,
}

/// Serde for `Uuid` as its hyphenated text, the form sfdisk, blkid and manifests use. (The
/// workspace's `uuid` is built without its `serde` feature.)
mod uuid_as_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use uuid::Uuid;

    pub fn serialize<S: Serializer>(uuid: &Uuid, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&uuid.hyphenated())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
        let text = String::deserialize(deserializer)?;
        Uuid::parse_str(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "disk size {size} bytes for {path} is not a multiple of the {SECTOR_SIZE}-byte sector"
    )]
    UnalignedDiskSize { path: PathBuf, size: u64 },
    #[error("partition {label:?} is {units} UTF-16 units long; a GPT name holds at most 36")]
    LabelTooLong { label: String, units: usize },
    #[error("partition {label:?} has size 0 (fill the rest of the disk) but is not the last one")]
    FillNotLast { label: String },
    #[error(
        "partition {label:?} ({size_bytes} bytes at offset {offset_bytes}) does not fit on the \
         {disk_size}-byte disk {path} (last usable byte is {last_usable_byte})"
    )]
    DoesNotFit {
        path: PathBuf,
        label: String,
        offset_bytes: u64,
        size_bytes: u64,
        disk_size: u64,
        last_usable_byte: u64,
    },
    #[error(
        "contents {contents} ({contents_size} bytes) do not fit in partition {label:?} \
         ({partition_size} bytes)"
    )]
    ContentsTooBig {
        label: String,
        contents: PathBuf,
        contents_size: u64,
        partition_size: u64,
    },
    #[error("cannot read partition contents {path}: {source}")]
    ReadContents { path: PathBuf, source: io::Error },
    #[error("cannot create disk image {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write to disk image {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot write the protective MBR of {path}: {source}")]
    WriteMbr {
        path: PathBuf,
        source: gpt::mbr::MBRError,
    },
    #[error("cannot write the GPT of {path}: {source}")]
    WriteGpt { path: PathBuf, source: GptError },
    #[error("cannot open disk image {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} has no readable GPT (is it a raw disk image?): {source}")]
    ReadGpt { path: PathBuf, source: GptError },
    #[error("{path} has no partition labelled {label:?} (it has: {present})")]
    PartitionNotFound {
        path: PathBuf,
        label: String,
        present: String,
    },
}

/// Writes a GPT disk image of `disk_size` bytes to `path` with `parts` in the given order,
/// numbered from 1, each starting on a MiB boundary right after the previous one.
///
/// The file is created (or truncated) and left sparse: only the MBR, both GPTs and the non-zero
/// MiB chunks of each partition's contents are written. It is not synced; the caller, which
/// writes to a temporary name and renames, decides when that matters.
pub fn write_disk(
    path: &Path,
    disk_guid: Uuid,
    disk_size: u64,
    parts: &[PartitionSpec],
) -> Result<Vec<PlacedPartition>, DiskError> {
    if disk_size % SECTOR_SIZE != 0 {
        return Err(DiskError::UnalignedDiskSize {
            path: path.to_owned(),
            size: disk_size,
        });
    }
    let placed = place_partitions(path, disk_size, parts)?;
    let contents_sizes = check_contents_fit(parts, &placed)?;

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|source| DiskError::Create {
            path: path.to_owned(),
            source,
        })?;
    file.set_len(disk_size)
        .map_err(|source| DiskError::Create {
            path: path.to_owned(),
            source,
        })?;

    for ((spec, placed), contents_size) in parts.iter().zip(&placed).zip(contents_sizes) {
        if let Some(contents) = &spec.contents {
            copy_contents(contents, contents_size, &file, path, placed.offset_bytes)?;
        }
    }

    write_partition_table(path, file, disk_guid, disk_size, &placed)?;
    Ok(placed)
}

/// Reads the partition table of a raw disk image with 512-byte sectors, in partition-number
/// order. Unused entries are left out.
pub fn read_partitions(path: &Path) -> Result<Vec<PlacedPartition>, DiskError> {
    let file = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_owned(),
        source,
    })?;
    let disk = GptConfig::new()
        .writable(false)
        .logical_block_size(LogicalBlockSize::Lb512)
        .open_from_device(file)
        .map_err(|source| DiskError::ReadGpt {
            path: path.to_owned(),
            source,
        })?;
    let placed = disk
        .partitions()
        .iter()
        .filter(|(_, part)| part.is_used())
        .map(|(&number, part)| PlacedPartition {
            number,
            label: part.name.clone(),
            type_guid: part.part_type_guid.guid,
            uuid: part.part_guid,
            offset_bytes: part.first_lba * SECTOR_SIZE,
            size_bytes: (part.last_lba + 1).saturating_sub(part.first_lba) * SECTOR_SIZE,
        })
        .collect();
    Ok(placed)
}

/// Finds the partition labelled `label` in the image at `path`.
pub fn find_partition(path: &Path, label: &str) -> Result<PlacedPartition, DiskError> {
    let partitions = read_partitions(path)?;
    let present = partitions
        .iter()
        .map(|part| part.label.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    partitions
        .iter()
        .find(|part| part.label == label)
        .cloned()
        .ok_or_else(|| DiskError::PartitionNotFound {
            path: path.to_owned(),
            label: label.to_owned(),
            present: if present.is_empty() {
                "no partitions".to_owned()
            } else {
                present
            },
        })
}

/// Where each partition goes. Mirrors the gpt crate's own header arithmetic for 512-byte
/// sectors and 128 entries of 128 bytes: the entry array takes 32 sectors after the primary
/// header, and 32 more before the backup header in the last sector.
fn place_partitions(
    path: &Path,
    disk_size: u64,
    parts: &[PartitionSpec],
) -> Result<Vec<PlacedPartition>, DiskError> {
    const ENTRY_ARRAY_SECTORS: u64 = 128 * 128 / SECTOR_SIZE;
    let total_sectors = disk_size / SECTOR_SIZE;
    // Last usable LBA is total - 1 (backup header) - 32 (backup entries) - 1; as an exclusive
    // byte bound that is (total - 1 - 32) sectors.
    let usable_end = total_sectors.saturating_sub(1 + ENTRY_ARRAY_SECTORS) * SECTOR_SIZE;

    let mut placed = Vec::with_capacity(parts.len());
    let mut next_offset = ALIGNMENT;
    for (index, spec) in parts.iter().enumerate() {
        let units = spec.label.encode_utf16().count();
        if units > MAX_LABEL_UTF16_UNITS {
            return Err(DiskError::LabelTooLong {
                label: spec.label.clone(),
                units,
            });
        }
        let is_last = index + 1 == parts.len();
        let offset_bytes = next_offset;
        let size_bytes = if spec.size_bytes == 0 {
            if !is_last {
                return Err(DiskError::FillNotLast {
                    label: spec.label.clone(),
                });
            }
            // Whole MiBs only, so the partition's end stays aligned too.
            align_down(usable_end.saturating_sub(offset_bytes), ALIGNMENT)
        } else {
            spec.size_bytes
                .checked_next_multiple_of(ALIGNMENT)
                .unwrap_or(u64::MAX)
        };
        let end = offset_bytes.checked_add(size_bytes);
        if size_bytes == 0 || end.is_none_or(|end| end > usable_end) {
            return Err(DiskError::DoesNotFit {
                path: path.to_owned(),
                label: spec.label.clone(),
                offset_bytes,
                size_bytes,
                disk_size,
                last_usable_byte: usable_end.saturating_sub(1),
            });
        }
        next_offset = offset_bytes + size_bytes;
        placed.push(PlacedPartition {
            number: index as u32 + 1,
            label: spec.label.clone(),
            type_guid: spec.type_guid,
            uuid: spec.uuid,
            offset_bytes,
            size_bytes,
        });
    }
    Ok(placed)
}

fn align_down(value: u64, alignment: u64) -> u64 {
    value - value % alignment
}

/// Checks, before anything is written, that every contents file fits in its partition, and
/// returns the contents sizes (0 where there are none).
fn check_contents_fit(
    parts: &[PartitionSpec],
    placed: &[PlacedPartition],
) -> Result<Vec<u64>, DiskError> {
    parts
        .iter()
        .zip(placed)
        .map(|(spec, placed)| {
            let Some(contents) = &spec.contents else {
                return Ok(0);
            };
            let contents_size = std::fs::metadata(contents)
                .map_err(|source| DiskError::ReadContents {
                    path: contents.clone(),
                    source,
                })?
                .len();
            if contents_size > placed.size_bytes {
                return Err(DiskError::ContentsTooBig {
                    label: spec.label.clone(),
                    contents: contents.clone(),
                    contents_size,
                    partition_size: placed.size_bytes,
                });
            }
            Ok(contents_size)
        })
        .collect()
}

/// Copies `contents` to `offset` in `disk`, leaving all-zero chunks as holes (the disk file is
/// freshly truncated, so a hole reads back as zeros). A root filesystem is mostly free space,
/// so this keeps the image small and the copy fast.
fn copy_contents(
    contents: &Path,
    expected_size: u64,
    disk: &File,
    disk_path: &Path,
    offset: u64,
) -> Result<(), DiskError> {
    let read_error = |source| DiskError::ReadContents {
        path: contents.to_owned(),
        source,
    };
    let mut source = File::open(contents).map_err(read_error)?;
    let mut chunk = vec![0u8; COPY_CHUNK];
    let mut copied = 0u64;
    loop {
        let filled = read_full(&mut source, &mut chunk).map_err(read_error)?;
        if filled == 0 {
            break;
        }
        // The size was checked against the partition before writing; a file that grew since
        // must not spill into the next partition.
        if copied + filled as u64 > expected_size {
            return Err(read_error(io::Error::other(format!(
                "file grew beyond {expected_size} bytes while it was being copied"
            ))));
        }
        let data = &chunk[..filled];
        if data.iter().any(|&byte| byte != 0) {
            disk.write_all_at(data, offset + copied)
                .map_err(|source| DiskError::Write {
                    path: disk_path.to_owned(),
                    source,
                })?;
        }
        copied += filled as u64;
    }
    Ok(())
}

/// Reads until `buf` is full or the reader is exhausted; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Writes the protective MBR and both GPT headers and entry arrays.
fn write_partition_table(
    path: &Path,
    mut file: File,
    disk_guid: Uuid,
    disk_size: u64,
    placed: &[PlacedPartition],
) -> Result<(), DiskError> {
    // The protective partition covers LBA 1 to the end, capped at what 32 bits can say.
    let protective_sectors = u32::try_from(disk_size / SECTOR_SIZE - 1).unwrap_or(u32::MAX);
    // The default disk signature, boot code and the rest are zeros, which keeps LBA 0 fixed.
    ProtectiveMBR::with_lb_size(protective_sectors)
        .overwrite_lba0(&mut file)
        .map_err(|source| DiskError::WriteMbr {
            path: path.to_owned(),
            source,
        })?;

    let gpt_error = |source| DiskError::WriteGpt {
        path: path.to_owned(),
        source,
    };
    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(file, Some(disk_guid))
        .map_err(gpt_error)?;
    // Entries are built directly rather than with `add_partition`, which would pick a random
    // partition GUID and its own placement.
    let entries: BTreeMap<u32, Partition> = placed
        .iter()
        .map(|part| {
            let entry = Partition {
                part_type_guid: Type {
                    guid: part.type_guid,
                    os: OperatingSystem::None,
                },
                part_guid: part.uuid,
                first_lba: part.offset_bytes / SECTOR_SIZE,
                last_lba: (part.offset_bytes + part.size_bytes) / SECTOR_SIZE - 1,
                flags: 0,
                name: part.label.clone(),
            };
            (part.number, entry)
        })
        .collect();
    disk.update_partitions(entries).map_err(gpt_error)?;
    disk.write().map_err(gpt_error)?;
    Ok(())
}
