//! How many bytes the image occupies once written: what the target must hold at least.
//!
//! `manifest.json` (written by `keel build` beside the image) says it exactly in
//! `sizes.raw_bytes`. Without it, a raw image is as long as its file, and a gzip image's
//! trailer (ISIZE) holds the uncompressed length modulo 2^32: exact below 4 GiB, which is why
//! the manifest is preferred, and why the writer still stops at the target's end.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use crate::checksum;
use crate::fetch::{self, Fetcher};
use crate::location::ImageLocation;
use crate::{MANIFEST, SHA256SUMS};

/// gzip's magic bytes (RFC 1952): an image starting with them is decompressed while written,
/// whatever its name. A raw GPT disk starts with the protective MBR, never with these.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether the image file is gzip-compressed.
pub(crate) fn is_gzip(file: &File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    match file.read_exact_at(&mut magic, 0) {
        Ok(()) => Ok(magic == GZIP_MAGIC),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(err) => Err(err),
    }
}

/// `sizes.raw_bytes` from a manifest.json, or why it could not be read.
pub(crate) fn manifest_raw_bytes(manifest: &[u8]) -> Result<u64, String> {
    let value: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|err| format!("not JSON: {err}"))?;
    value
        .get("sizes")
        .and_then(|sizes| sizes.get("raw_bytes"))
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| "no sizes.raw_bytes number".to_owned())
}

/// The uncompressed length a gzip file's last member records (ISIZE, little-endian, mod 2^32).
/// `None` when the file is too short to have a trailer.
pub(crate) fn gzip_isize(file: &File, len: u64) -> io::Result<Option<u64>> {
    // 10-byte header + 8-byte trailer is the smallest possible gzip member.
    if len < 18 {
        return Ok(None);
    }
    let mut trailer = [0u8; 4];
    file.read_exact_at(&mut trailer, len - 4)?;
    Ok(Some(u64::from(u32::from_le_bytes(trailer))))
}

/// The image's uncompressed size from manifest.json, when there is a usable one. The file is
/// optional and only informs the size check, so problems with it are warnings and it is then
/// ignored; that includes not matching its SHA256SUMS entry, when the list has one.
pub(crate) fn announced_size(
    location: &ImageLocation,
    fetcher: Option<&Fetcher>,
    sums: Option<&str>,
) -> Option<u64> {
    let manifest_location = location.sibling(MANIFEST);
    let bytes = match fetch::read_small(&manifest_location, fetcher) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return None,
        Err(err) => {
            tracing::warn!("ignoring {MANIFEST}: {err}");
            return None;
        }
    };
    if let Some(expected) = sums.and_then(|sums| checksum::lookup(sums, MANIFEST)) {
        let actual = hex::encode(Sha256::digest(&bytes));
        if actual != expected {
            tracing::warn!(
                "ignoring {manifest_location}: it does not match its {SHA256SUMS} entry"
            );
            return None;
        }
    }
    match manifest_raw_bytes(&bytes) {
        Ok(raw_bytes) => Some(raw_bytes),
        Err(detail) => {
            tracing::warn!("ignoring {manifest_location}: {detail}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    #[test]
    fn reads_raw_bytes_from_a_manifest() {
        let manifest = br#"{"name":"keel","sizes":{"raw_bytes":1073741824,"qcow2_bytes":5}}"#;
        assert_eq!(manifest_raw_bytes(manifest), Ok(1 << 30));
        assert!(manifest_raw_bytes(br#"{"sizes":{}}"#).is_err());
        assert!(manifest_raw_bytes(b"not json").is_err());
    }

    #[test]
    fn reads_the_gzip_trailer() {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&vec![7u8; 300_000]).unwrap();
        let gz = encoder.finish().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&gz).unwrap();
        assert!(is_gzip(&file).unwrap());
        assert_eq!(gzip_isize(&file, gz.len() as u64).unwrap(), Some(300_000));

        let raw = tempfile::tempfile().unwrap();
        raw.write_all_at(&[0u8; 512], 0).unwrap();
        assert!(!is_gzip(&raw).unwrap());
        assert!(
            !is_gzip(&tempfile::tempfile().unwrap()).unwrap(),
            "empty file"
        );
    }
}
