//! Reading the primary GPT of the freshly written target, to find the EFI-SYSTEM partition.
//!
//! Only the primary header (LBA 1) and its entry array are read. The backup header sits at
//! the end of the *image*, not of the larger target disk, until keel-init's first boot moves
//! it; a general GPT library checks the backup at the disk's end and would balk at this
//! legitimate in-between state. Both CRC32s are checked, so a torn write is still noticed.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Keel images use 512-byte logical sectors (`keel build` writes them so); a disk with
/// 4 KiB logical sectors could not boot them as written anyway.
pub(crate) const SECTOR_SIZE: u64 = 512;
const SIGNATURE: &[u8; 8] = b"EFI PART";
/// An entry array larger than this is not a sane GPT (the usual one is 16 KiB).
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GptPartition {
    /// Partition number, from 1 (the entry's index + 1).
    pub number: u32,
    pub name: String,
    pub first_lba: u64,
    pub last_lba: u64,
}

impl GptPartition {
    pub fn offset_bytes(&self) -> u64 {
        self.first_lba * SECTOR_SIZE
    }

    pub fn size_bytes(&self) -> u64 {
        (self.last_lba + 1).saturating_sub(self.first_lba) * SECTOR_SIZE
    }
}

/// The used partitions of the disk in `file`, in entry order; `Err` says what is wrong.
pub(crate) fn read_partitions(file: &File) -> Result<Vec<GptPartition>, String> {
    let mut header = [0u8; SECTOR_SIZE as usize];
    file.read_exact_at(&mut header, SECTOR_SIZE)
        .map_err(|err| format!("cannot read LBA 1: {err}"))?;
    parse(&header, |offset, buf| file.read_exact_at(buf, offset))
}

fn parse(
    header: &[u8],
    read_at: impl Fn(u64, &mut [u8]) -> io::Result<()>,
) -> Result<Vec<GptPartition>, String> {
    if &header[..8] != SIGNATURE {
        return Err("no \"EFI PART\" signature at LBA 1 (not a GPT disk)".into());
    }
    let header_size = u32_at(header, 12) as usize;
    if !(92..=header.len()).contains(&header_size) {
        return Err(format!("GPT header size {header_size} is invalid"));
    }
    let mut copy = header[..header_size].to_vec();
    copy[16..20].fill(0);
    if crc32fast::hash(&copy) != u32_at(header, 16) {
        return Err("the primary GPT header fails its CRC32 check".into());
    }

    let entries_lba = u64_at(header, 72);
    let count = u64::from(u32_at(header, 80));
    let entry_size = u64::from(u32_at(header, 84));
    if entry_size < 128 || entry_size % 8 != 0 || count * entry_size > MAX_ENTRY_BYTES {
        return Err(format!(
            "GPT entry array of {count} entries of {entry_size} bytes is invalid"
        ));
    }
    let mut entries = vec![0u8; (count * entry_size) as usize];
    read_at(entries_lba * SECTOR_SIZE, &mut entries)
        .map_err(|err| format!("cannot read the GPT entries at LBA {entries_lba}: {err}"))?;
    if crc32fast::hash(&entries) != u32_at(header, 88) {
        return Err("the GPT partition entries fail their CRC32 check".into());
    }

    let mut partitions = Vec::new();
    for (index, entry) in entries.chunks_exact(entry_size as usize).enumerate() {
        // An all-zero partition type GUID marks an unused entry.
        if entry[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .take_while(|&unit| unit != 0)
            .collect();
        partitions.push(GptPartition {
            number: index as u32 + 1,
            name: String::from_utf16_lossy(&units),
            first_lba: u64_at(entry, 32),
            last_lba: u64_at(entry, 40),
        });
    }
    Ok(partitions)
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal GPT in memory: header at LBA 1, 4 entries at LBA 2.
    fn disk(names: &[(&str, u64, u64)]) -> Vec<u8> {
        let mut disk = vec![0u8; 8 * SECTOR_SIZE as usize];
        let entries_at = 2 * SECTOR_SIZE as usize;
        for (index, (name, first, last)) in names.iter().enumerate() {
            let entry = &mut disk[entries_at + index * 128..entries_at + (index + 1) * 128];
            entry[..16].fill(0xaa);
            entry[32..40].copy_from_slice(&first.to_le_bytes());
            entry[40..48].copy_from_slice(&last.to_le_bytes());
            for (i, unit) in name.encode_utf16().enumerate() {
                entry[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
            }
        }
        let entries_crc = crc32fast::hash(&disk[entries_at..entries_at + 4 * 128]);
        let header = &mut disk[SECTOR_SIZE as usize..2 * SECTOR_SIZE as usize];
        header[..8].copy_from_slice(SIGNATURE);
        header[12..16].copy_from_slice(&92u32.to_le_bytes());
        header[72..80].copy_from_slice(&2u64.to_le_bytes());
        header[80..84].copy_from_slice(&4u32.to_le_bytes());
        header[84..88].copy_from_slice(&128u32.to_le_bytes());
        header[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&header[..92]);
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        disk
    }

    fn parse_disk(disk: &[u8]) -> Result<Vec<GptPartition>, String> {
        let header = &disk[SECTOR_SIZE as usize..2 * SECTOR_SIZE as usize];
        parse(header, |offset, buf| {
            buf.copy_from_slice(&disk[offset as usize..offset as usize + buf.len()]);
            Ok(())
        })
    }

    #[test]
    fn reads_names_and_ranges() {
        let disk = disk(&[("EFI-SYSTEM", 2048, 4095), ("ROOT-A", 4096, 8191)]);
        let parts = parse_disk(&disk).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "EFI-SYSTEM");
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].offset_bytes(), 1 << 20);
        assert_eq!(parts[0].size_bytes(), 1 << 20);
        assert_eq!(parts[1].name, "ROOT-A");
    }

    #[test]
    fn a_damaged_table_is_refused() {
        let mut disk = disk(&[("EFI-SYSTEM", 2048, 4095)]);
        disk[2 * SECTOR_SIZE as usize + 40] ^= 1;
        assert!(parse_disk(&disk).unwrap_err().contains("CRC32"));
        let blank = vec![0u8; 8 * SECTOR_SIZE as usize];
        assert!(parse_disk(&blank).unwrap_err().contains("signature"));
    }
}
