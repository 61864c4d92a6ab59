//! dm-verity, format version 1 with a superblock, as `veritysetup format` writes it.
//!
//! The hash device holds a 512-byte superblock in its first hash block, then the hash tree with
//! its top level first and the level over the data blocks last. Each hash is
//! `sha256(salt || block)`; each hash block is filled with hashes and padded with zeros. The root
//! hash is the hash of the single top block (or of the only data block when there is one).

use sha2::{Digest, Sha256};
use std::io::{self, Read};
use uuid::Uuid;

pub const BLOCK_SIZE: u32 = 4096;
const DIGEST_SIZE: usize = 32;
const SIGNATURE: &[u8; 8] = b"verity\0\0";
pub const SUPERBLOCK_SIZE: usize = 512;
const MAX_SALT: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("no dm-verity superblock (signature missing)")]
    NoSignature,
    #[error("unsupported dm-verity superblock: {0}")]
    Unsupported(String),
    #[error("data size {0} is not a multiple of the {BLOCK_SIZE}-byte block")]
    Unaligned(u64),
    #[error("reading the data to hash: {0}")]
    Io(#[from] io::Error),
}

/// The fields of the on-disk superblock that matter to Keel (sha256, version 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: Uuid,
    pub algorithm: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl Superblock {
    pub fn new(uuid: Uuid, salt: &[u8], data_blocks: u64) -> Self {
        assert!(
            salt.len() <= MAX_SALT,
            "dm-verity salt is at most 256 bytes"
        );
        Superblock {
            uuid,
            algorithm: "sha256".into(),
            data_block_size: BLOCK_SIZE,
            hash_block_size: BLOCK_SIZE,
            data_blocks,
            salt: salt.to_vec(),
        }
    }

    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes()); // superblock version
        b[12..16].copy_from_slice(&1u32.to_le_bytes()); // hash type: salt first
        b[16..32].copy_from_slice(self.uuid.as_bytes());
        b[32..32 + self.algorithm.len()].copy_from_slice(self.algorithm.as_bytes());
        b[64..68].copy_from_slice(&self.data_block_size.to_le_bytes());
        b[68..72].copy_from_slice(&self.hash_block_size.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        b[80..82].copy_from_slice(&(self.salt.len() as u16).to_le_bytes());
        b[88..88 + self.salt.len()].copy_from_slice(&self.salt);
        b
    }

    pub fn parse(b: &[u8]) -> Result<Self, VerityError> {
        if b.len() < SUPERBLOCK_SIZE || &b[0..8] != SIGNATURE {
            return Err(VerityError::NoSignature);
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let version = u32_at(8);
        let hash_type = u32_at(12);
        if version != 1 || hash_type != 1 {
            return Err(VerityError::Unsupported(format!(
                "version {version}, hash type {hash_type}"
            )));
        }
        let alg_end = b[32..64].iter().position(|&c| c == 0).unwrap_or(32);
        let algorithm = String::from_utf8_lossy(&b[32..32 + alg_end]).into_owned();
        let salt_len = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_len > MAX_SALT {
            return Err(VerityError::Unsupported(format!(
                "salt of {salt_len} bytes"
            )));
        }
        Ok(Superblock {
            uuid: Uuid::from_slice(&b[16..32]).expect("16 bytes"),
            algorithm,
            data_block_size: u32_at(64),
            hash_block_size: u32_at(68),
            data_blocks: u64::from_le_bytes(b[72..80].try_into().unwrap()),
            salt: b[88..88 + salt_len].to_vec(),
        })
    }

    /// The device-mapper "verity" target parameters for this superblock, the data and hash
    /// devices and the root hash. The hash tree starts one block in, after the superblock.
    pub fn dm_table_params(&self, data_dev: &str, hash_dev: &str, root_hash_hex: &str) -> String {
        self.dm_table_params_at(data_dev, hash_dev, root_hash_hex, 1)
    }

    /// Like [`Superblock::dm_table_params`] with the tree starting `hash_start_block` hash
    /// blocks into `hash_dev` (the block after the superblock): for a live root image, where
    /// data and hash device are one file.
    pub fn dm_table_params_at(
        &self,
        data_dev: &str,
        hash_dev: &str,
        root_hash_hex: &str,
        hash_start_block: u64,
    ) -> String {
        let salt = if self.salt.is_empty() {
            "-".to_string()
        } else {
            hex::encode(&self.salt)
        };
        format!(
            "1 {data_dev} {hash_dev} {} {} {} {hash_start_block} {} {root_hash_hex} {salt}",
            self.data_block_size, self.hash_block_size, self.data_blocks, self.algorithm
        )
    }

    /// Sectors (512 bytes) of the data device the verity target covers.
    pub fn data_sectors(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size) / 512
    }
}

/// The result of hashing a data device.
pub struct HashTree {
    pub root_hash: [u8; 32],
    /// Superblock block followed by the tree: exactly what goes at the start of the hash device.
    pub hash_device: Vec<u8>,
}

/// Number of hash blocks at each level, bottom level (over the data) first.
fn level_sizes(data_blocks: u64) -> Vec<u64> {
    let per_block = u64::from(BLOCK_SIZE) / DIGEST_SIZE as u64;
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(per_block);
        sizes.push(n);
    }
    sizes
}

/// Bytes the hash device needs for `data_bytes` of data: superblock block plus the tree.
pub fn hash_device_size(data_bytes: u64) -> u64 {
    let blocks = data_bytes / u64::from(BLOCK_SIZE);
    (1 + level_sizes(blocks).iter().sum::<u64>()) * u64::from(BLOCK_SIZE)
}

fn salted_hash(salt: &[u8], block: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Hashes `data_bytes` read from `data` (a multiple of the block size) and returns the root
/// hash and the hash device contents. `progress` is called with the bytes hashed so far.
pub fn build(
    data: &mut impl Read,
    data_bytes: u64,
    salt: &[u8],
    uuid: Uuid,
    mut progress: impl FnMut(u64),
) -> Result<HashTree, VerityError> {
    let bs = BLOCK_SIZE as usize;
    if data_bytes % bs as u64 != 0 || data_bytes == 0 {
        return Err(VerityError::Unaligned(data_bytes));
    }
    let data_blocks = data_bytes / bs as u64;

    // Bottom level: one digest per data block, packed into hash blocks.
    let mut level: Vec<u8> = Vec::with_capacity((data_blocks as usize) * DIGEST_SIZE + bs);
    let mut block = vec![0u8; bs];
    let mut only_block_hash = [0u8; 32];
    for i in 0..data_blocks {
        data.read_exact(&mut block)?;
        only_block_hash = salted_hash(salt, &block);
        level.extend_from_slice(&only_block_hash);
        if i % 4096 == 0 {
            progress(i * bs as u64);
        }
    }
    progress(data_bytes);
    if data_blocks == 1 {
        let sb = Superblock::new(uuid, salt, data_blocks);
        let mut hash_device = sb.to_bytes().to_vec();
        hash_device.resize(bs, 0);
        return Ok(HashTree {
            root_hash: only_block_hash,
            hash_device,
        });
    }

    // Each level is padded to whole blocks, then hashed block by block into the next one,
    // until a single block remains; its hash is the root hash.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    loop {
        level.resize(level.len().div_ceil(bs) * bs, 0);
        let blocks = level.len() / bs;
        let mut next = Vec::with_capacity(blocks * DIGEST_SIZE + bs);
        for chunk in level.chunks_exact(bs) {
            next.extend_from_slice(&salted_hash(salt, chunk));
        }
        levels.push(level);
        if blocks == 1 {
            let root_hash: [u8; 32] = next[..32].try_into().unwrap();
            let sb = Superblock::new(uuid, salt, data_blocks);
            let mut hash_device = sb.to_bytes().to_vec();
            hash_device.resize(bs, 0);
            for l in levels.iter().rev() {
                hash_device.extend_from_slice(l);
            }
            debug_assert_eq!(hash_device.len() as u64, hash_device_size(data_bytes));
            return Ok(HashTree {
                root_hash,
                hash_device,
            });
        }
        level = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblock_round_trips() {
        let sb = Superblock::new(Uuid::from_u128(7), &[1, 2, 3], 1234);
        assert_eq!(Superblock::parse(&sb.to_bytes()).unwrap(), sb);
    }

    #[test]
    fn level_sizes_follow_128_hashes_per_block() {
        assert_eq!(level_sizes(1), Vec::<u64>::new());
        assert_eq!(level_sizes(2), vec![1]);
        assert_eq!(level_sizes(128), vec![1]);
        assert_eq!(level_sizes(129), vec![2, 1]);
        assert_eq!(level_sizes(128 * 128 + 1), vec![129, 2, 1]);
    }

    #[test]
    fn tree_size_matches_the_prediction() {
        let data = vec![0xa5u8; 4096 * 300];
        let t = build(
            &mut &data[..],
            data.len() as u64,
            b"salt",
            Uuid::nil(),
            |_| {},
        )
        .unwrap();
        assert_eq!(
            t.hash_device.len() as u64,
            hash_device_size(data.len() as u64)
        );
        // Top level is one block, right after the superblock, and hashes to the root.
        assert_eq!(
            salted_hash(b"salt", &t.hash_device[4096..8192]),
            t.root_hash
        );
    }

    #[test]
    fn unaligned_data_is_refused() {
        let data = [0u8; 100];
        assert!(matches!(
            build(&mut &data[..], 100, b"", Uuid::nil(), |_| {}),
            Err(VerityError::Unaligned(100))
        ));
    }
}
