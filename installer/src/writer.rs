//! Streaming the image onto the target in 1 MiB chunks, decompressing gzip on the way.
//!
//! Every chunk of a block device is written, zeros included: the disk may hold old data that
//! must not show through. On a regular-file target an all-zero chunk becomes a punched hole
//! instead, which reads back as zeros whatever was there and keeps image files sparse.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::error::InstallError;
use crate::progress;
use crate::target::{Target, TargetKind};

const CHUNK: usize = 1 << 20;

pub(crate) struct Written {
    /// Uncompressed bytes placed on the target.
    pub bytes: u64,
    pub elapsed: Duration,
    /// sha256 of the image file's bytes as read for writing (compressed, if it is).
    pub source_sha256: String,
}

/// Writes `image` (at offset 0 of its file) onto `target`, expecting about `expected_bytes`
/// (for the progress bar; the hard limit is the target's size), and syncs the target.
pub(crate) fn write_image(
    image: &File,
    image_name: &str,
    gzip: bool,
    target: &Target,
    expected_bytes: u64,
) -> Result<Written, InstallError> {
    let started = Instant::now();
    // Hashing for verification left the cursor at the end.
    let mut image = image;
    image
        .seek(SeekFrom::Start(0))
        .map_err(InstallError::io(format!("cannot rewind {image_name}")))?;
    let mut hashing = HashingReader {
        inner: BufReader::with_capacity(CHUNK, image),
        hasher: Sha256::new(),
    };
    let mut source: Box<dyn Read + '_> = if gzip {
        Box::new(MultiGzDecoder::new(&mut hashing))
    } else {
        Box::new(&mut hashing)
    };

    let bar = progress::bytes_bar(expected_bytes, "writing");
    let mut holes = target.kind == TargetKind::RegularFile;
    let mut buf = vec![0u8; CHUNK];
    let mut offset: u64 = 0;
    loop {
        let n = fill(&mut source, &mut buf).map_err(|source| InstallError::Decompress {
            image: image_name.to_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        if offset + n as u64 > target.size {
            return Err(InstallError::Overflow {
                image: image_name.to_owned(),
                device: target.path.clone(),
                target_bytes: target.size,
                announced_bytes: expected_bytes,
            });
        }
        let chunk = &buf[..n];
        let punched = holes && is_zero(chunk) && {
            match punch_hole(&target.file, offset, n as u64) {
                Ok(()) => true,
                Err(err) => {
                    // tmpfs before 3.5, some FUSE filesystems: write the zeros after all.
                    tracing::debug!("punching holes in {}: {err}", target.path.display());
                    holes = false;
                    false
                }
            }
        };
        if !punched {
            target
                .file
                .write_all_at(chunk, offset)
                .map_err(InstallError::io(format!(
                    "cannot write to {} at byte {offset}",
                    target.path.display()
                )))?;
        }
        offset += n as u64;
        bar.set_position(offset);
    }
    drop(source);
    // Whatever the decoder left unread (padding after the last gzip member) is part of the
    // file SHA256SUMS vouches for, so it is hashed too.
    io::copy(&mut hashing, &mut io::sink())
        .map_err(InstallError::io(format!("cannot read {image_name}")))?;
    bar.finish_and_clear();
    target.file.sync_all().map_err(InstallError::io(format!(
        "cannot flush {} to the disk",
        target.path.display()
    )))?;
    Ok(Written {
        bytes: offset,
        elapsed: started.elapsed(),
        source_sha256: hex::encode(hashing.hasher.finalize()),
    })
}

/// Reads until `buf` is full or the stream ends; decompressors hand out short reads.
fn fill(source: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

fn is_zero(chunk: &[u8]) -> bool {
    // Word-wise, so the check costs little next to the write it saves.
    let words = chunk.chunks_exact(8);
    let tail = words.remainder();
    words
        .map(|word| u64::from_ne_bytes(word.try_into().expect("8-byte chunk")))
        .all(|word| word == 0)
        && tail.iter().all(|&byte| byte == 0)
}

fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: fallocate only reads its integer arguments.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hashes the image bytes as they are read for writing, so a file swapped or modified after
/// verification is caught rather than silently installed.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_check_sees_every_byte() {
        let mut chunk = vec![0u8; 1027];
        assert!(is_zero(&chunk));
        for at in [0, 7, 8, 1000, 1026] {
            chunk[at] = 1;
            assert!(!is_zero(&chunk), "byte {at}");
            chunk[at] = 0;
        }
    }
}
