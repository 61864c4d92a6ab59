//! The kernel command line arguments keel-init reads.

use keel_image::layout::{
    parse_root_hash, partuuids_from_root_hash, FIRST_BOOT_ARG, LIVE_ARG, ROOTHASH_ARG,
};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error(
        "no {ROOTHASH_ARG}= on the kernel command line; cannot tell which root image to trust"
    )]
    MissingRootHash,
    #[error("{ROOTHASH_ARG}={0} is not 64 hex digits (a sha256 root hash)")]
    BadRootHash(String),
}

/// What the kernel command line tells keel-init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub root_hash: [u8; 32],
    /// `keel.first_boot=1`: treat this boot as the first one (format STATE again).
    pub first_boot_forced: bool,
    /// `keel.live`: the root is an image file (ISO or PXE) and STATE a tmpfs.
    pub live: bool,
}

impl BootArgs {
    /// Parses `/proc/cmdline`. Later occurrences of an argument win, as in the kernel.
    pub fn parse(cmdline: &str) -> Result<BootArgs, CmdlineError> {
        let mut root_hash_text = None;
        let mut first_boot_forced = false;
        let mut live = false;
        for word in cmdline.split_ascii_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            if key == ROOTHASH_ARG {
                root_hash_text = Some(value);
            } else if key == FIRST_BOOT_ARG {
                first_boot_forced = matches!(value, "1" | "yes" | "true");
            } else if key == LIVE_ARG {
                live = !matches!(value, "0" | "no" | "false");
            }
        }
        let text = root_hash_text.ok_or(CmdlineError::MissingRootHash)?;
        let root_hash =
            parse_root_hash(text).ok_or_else(|| CmdlineError::BadRootHash(text.to_string()))?;
        Ok(BootArgs {
            root_hash,
            first_boot_forced,
            live,
        })
    }

    /// The root hash as lowercase hex, as dm-verity takes it.
    pub fn root_hash_hex(&self) -> String {
        hex::encode(self.root_hash)
    }

    /// PARTUUIDs of the root data partition and of its verity partition.
    pub fn partuuids(&self) -> (Uuid, Uuid) {
        partuuids_from_root_hash(&self.root_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef";

    #[test]
    fn finds_roothash_among_other_arguments() {
        let line = format!("BOOT_IMAGE=/vmlinuz console=ttyS0 roothash={HASH} quiet\n");
        let args = BootArgs::parse(&line).unwrap();
        assert_eq!(args.root_hash_hex(), HASH);
        assert!(!args.first_boot_forced);
        let (data, verity) = args.partuuids();
        assert_eq!(data.to_string(), "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(verity.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    }

    #[test]
    fn first_boot_flag() {
        let args = BootArgs::parse(&format!("roothash={HASH} keel.first_boot=1")).unwrap();
        assert!(args.first_boot_forced);
        let args = BootArgs::parse(&format!("roothash={HASH} keel.first_boot=0")).unwrap();
        assert!(!args.first_boot_forced);
    }

    #[test]
    fn live_flag() {
        assert!(
            BootArgs::parse(&format!("roothash={HASH} keel.live"))
                .unwrap()
                .live
        );
        assert!(
            BootArgs::parse(&format!("roothash={HASH} keel.live=1"))
                .unwrap()
                .live
        );
        assert!(
            !BootArgs::parse(&format!("roothash={HASH} keel.live=0"))
                .unwrap()
                .live
        );
        assert!(!BootArgs::parse(&format!("roothash={HASH}")).unwrap().live);
    }

    #[test]
    fn uppercase_hash_is_normalised() {
        let args = BootArgs::parse(&format!("roothash={}", HASH.to_uppercase())).unwrap();
        assert_eq!(args.root_hash_hex(), HASH);
    }

    #[test]
    fn missing_roothash_is_an_error() {
        assert_eq!(
            BootArgs::parse("console=ttyS0 quiet"),
            Err(CmdlineError::MissingRootHash)
        );
        // A key that merely starts with the name does not count.
        assert_eq!(
            BootArgs::parse(&format!("roothashx={HASH}")),
            Err(CmdlineError::MissingRootHash)
        );
    }

    #[test]
    fn malformed_roothash_is_an_error() {
        assert_eq!(
            BootArgs::parse("roothash=abcd"),
            Err(CmdlineError::BadRootHash("abcd".into()))
        );
    }
}
