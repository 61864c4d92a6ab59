//! The disk layout Keel images share with `keel-init`: partition labels, the Discoverable
//! Partitions Specification type GUIDs, and how partition UUIDs derive from the root hash.

use uuid::Uuid;

/// EFI System Partition.
pub const ESP_TYPE: Uuid = Uuid::from_u128(0xc12a7328_f81f_11d2_ba4b_00a0c93ec93b);
/// DPS "Root Partition (x86-64)".
pub const ROOT_X86_64_TYPE: Uuid = Uuid::from_u128(0x4f68bce3_e8cd_4db1_96e7_fbcaf984b709);
/// DPS "Root Verity Partition (x86-64)".
pub const ROOT_VERITY_X86_64_TYPE: Uuid = Uuid::from_u128(0x2c7357ed_ebd2_46d9_aec9_cef08cc0be2f);
/// DPS "Variable Data Partition" (/var).
pub const VAR_TYPE: Uuid = Uuid::from_u128(0x4d21b016_b534_45c2_a9fb_5c16e091fd2d);

pub const LABEL_ESP: &str = "EFI-SYSTEM";
pub const LABEL_ROOT_A: &str = "ROOT-A";
pub const LABEL_ROOT_A_VERITY: &str = "ROOT-A-VERITY";
pub const LABEL_ROOT_B: &str = "ROOT-B";
pub const LABEL_ROOT_B_VERITY: &str = "ROOT-B-VERITY";
pub const LABEL_STATE: &str = "STATE";

/// Kernel command line key that carries the root hash (hex), as systemd spells it.
pub const ROOTHASH_ARG: &str = "roothash";
/// Kernel command line key that forces the first-boot path (format STATE again).
pub const FIRST_BOOT_ARG: &str = "keel.first_boot";

/// Kernel argument of live boots (ISO, PXE): the root is an image file, not a partition, and
/// STATE is a tmpfs.
pub const LIVE_ARG: &str = "keel.live";
/// The ISO's volume id, by which keel-init finds the live medium (a CD, or the ISO on a disk).
pub const LIVE_VOLUME_ID: &str = "KEEL_LIVE";
/// The live root image, inside the ISO and inside a PXE boot's initramfs: the ext4 root
/// followed by its dm-verity hash device (superblock first), so one file is the whole root.
pub const LIVE_ROOT_IMAGE: &str = "keel/rootfs.img";
/// The compressed disk image on the ISO, which keel-install writes to a disk by default.
pub const LIVE_DISK_IMAGE: &str = "keel/keel.raw.gz";
/// Where keel-init mounts the live medium; it stays mounted in the running system.
pub const LIVE_MOUNT: &str = "/run/keel/live";
/// A cloud-config keel-install placed on an installed disk's ESP; the first boot moves it to
/// /var/lib/keel/user-data.
pub const ESP_USER_DATA: &str = "keel/user-data";

/// Where a packaged program goes when a Keel program of the same name takes its place in
/// /usr/bin (Debian's etcdctl, which Keel's etcdctl runs for every v3 command).
pub const PACKAGED_DIR: &str = "usr/lib/keel/packaged";

/// Where the image records who provisions it (`keel` or `none`, from the spec's `provisioner:`),
/// relative to the root. It lives under /usr, on the verified root, so nothing written at run
/// time can change it; keel-init reads it before its local stage and a missing file means
/// `keel`.
pub const PROVISIONER_FILE: &str = "usr/lib/keel/provisioner";
/// The unit of the provisioner's network stage.
pub const PROVISION_NETWORK_UNIT: &str = "keel-provision-network.service";

/// The PARTUUIDs of a root slot and its verity partition: the first and the second half of the
/// root hash, as systemd-repart and the Discoverable Partitions Specification do it. The init
/// finds the partitions by these, so a root hash on the command line names its own devices.
pub fn partuuids_from_root_hash(root_hash: &[u8; 32]) -> (Uuid, Uuid) {
    let mut data = [0u8; 16];
    let mut verity = [0u8; 16];
    data.copy_from_slice(&root_hash[..16]);
    verity.copy_from_slice(&root_hash[16..]);
    (Uuid::from_bytes(data), Uuid::from_bytes(verity))
}

/// Parses a 64-digit hex root hash.
pub fn parse_root_hash(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partuuids_are_the_hash_halves_in_text_order() {
        let hash =
            parse_root_hash("00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef")
                .unwrap();
        let (data, verity) = partuuids_from_root_hash(&hash);
        assert_eq!(data.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(verity.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn root_hash_must_be_32_bytes_of_hex() {
        assert!(parse_root_hash("abcd").is_none());
        assert!(parse_root_hash(&"g".repeat(64)).is_none());
    }
}
