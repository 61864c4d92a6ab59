//! Placing the cloud-config on the target's EFI System Partition as `/keel/user-data`, where
//! keel-init looks on first boot and copies it to `/var/lib/keel/user-data` (read by the
//! provisioner's `file` datasource). The ESP is the one partition every machine's firmware,
//! and every operator, can read and fix from anywhere, which is why it carries the config.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use fatfs::{FileSystem, FsOptions};

use crate::error::InstallError;
use crate::fat_clock::UTC_CLOCK;
use crate::gpt_table::{self, GptPartition};
use crate::partition_slice::PartitionSlice;

/// The ESP's partition name in Keel images.
pub const ESP_LABEL: &str = "EFI-SYSTEM";
/// Folder and file on the ESP (FAT is case-insensitive; keel-init reads these names).
pub const USER_DATA_DIR: &str = "keel";
pub const USER_DATA_FILE: &str = "user-data";
/// Written first and renamed, so an interrupted install never leaves keel-init a truncated
/// config to apply.
const USER_DATA_TMP: &str = "user-data.tmp";

/// Finds the EFI-SYSTEM partition in the target's GPT.
pub(crate) fn find_esp(
    device: &Path,
    file: &File,
    target_size: u64,
) -> Result<GptPartition, InstallError> {
    let partitions = gpt_table::read_partitions(file).map_err(|detail| InstallError::Gpt {
        device: device.to_owned(),
        detail,
    })?;
    let esp = partitions
        .iter()
        .find(|part| part.name == ESP_LABEL)
        .cloned()
        .ok_or_else(|| InstallError::NoEsp {
            device: device.to_owned(),
            present: if partitions.is_empty() {
                "none".to_owned()
            } else {
                partitions
                    .iter()
                    .map(|part| format!("{} {}", part.number, part.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })?;
    if esp.size_bytes() == 0 || esp.offset_bytes() + esp.size_bytes() > target_size {
        return Err(InstallError::Gpt {
            device: device.to_owned(),
            detail: format!(
                "partition {} ({ESP_LABEL}) lies outside the disk (LBA {}..={})",
                esp.number, esp.first_lba, esp.last_lba
            ),
        });
    }
    Ok(esp)
}

/// Writes `user_data` to `/keel/user-data` in the FAT filesystem of `esp` on `file`.
pub(crate) fn place_user_data(
    device: &Path,
    file: &File,
    esp: &GptPartition,
    user_data: &[u8],
) -> Result<(), InstallError> {
    let slice = PartitionSlice::new(file, esp.offset_bytes(), esp.size_bytes());
    write_into_fat(slice, user_data).map_err(|source| InstallError::Esp {
        device: device.to_owned(),
        source,
    })
}

fn write_into_fat(slice: PartitionSlice<&File>, user_data: &[u8]) -> io::Result<()> {
    let fs = FileSystem::new(slice, FsOptions::new().time_provider(&UTC_CLOCK))
        .map_err(|err| io::Error::new(err.kind(), format!("not a FAT filesystem: {err}")))?;
    {
        let dir = fs.root_dir().create_dir(USER_DATA_DIR)?;
        remove_if_present(&dir, USER_DATA_TMP)?;
        {
            let mut tmp = dir.create_file(USER_DATA_TMP)?;
            tmp.truncate()?;
            tmp.write_all(user_data)?;
            tmp.flush()?;
        }
        remove_if_present(&dir, USER_DATA_FILE)?;
        dir.rename(USER_DATA_TMP, &dir, USER_DATA_FILE)?;
    }
    // Writes the FSInfo sector and clears the dirty flag; dropping would do it silently.
    fs.unmount()
}

fn remove_if_present<T: fatfs::ReadWriteSeek>(dir: &fatfs::Dir<T>, name: &str) -> io::Result<()> {
    match dir.remove(name) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
