//! A byte range of a disk seen as a whole stream, so a filesystem library can work on one
//! partition of the target without a partition device node (none exists for a regular-file
//! target, and the kernel may not have re-read the table yet for a real disk).

use std::io::{self, Read, Seek, SeekFrom, Write};

/// `len` bytes of `inner` starting at `start`; position 0 is `start`. Reads stop and writes
/// fail at the end of the range, so nothing outside the partition can be touched.
pub struct PartitionSlice<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> PartitionSlice<T> {
    pub fn new(inner: T, start: u64, len: u64) -> PartitionSlice<T> {
        PartitionSlice {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    /// How many of `wanted` bytes fit before the end of the range.
    fn room(&self, wanted: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        wanted.min(usize::try_from(left).unwrap_or(usize::MAX))
    }

    /// Puts the inner cursor where ours is: the inner stream may be shared or moved by others.
    fn sync_inner(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        Ok(())
    }
}

impl<T: Read + Seek> Read for PartitionSlice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.sync_inner()?;
        let n = self.inner.read(&mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Write + Seek> Write for PartitionSlice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.room(buf.len());
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.sync_inner()?;
        let n = self.inner.write(&buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T> Seek for PartitionSlice<T> {
    fn seek(&mut self, from: SeekFrom) -> io::Result<u64> {
        let target = match from {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        // Like a file, seeking past the end is allowed (reads there return 0); before the
        // start is not.
        self.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn stays_inside_its_range() {
        let mut disk = Cursor::new(vec![0u8; 64]);
        let mut slice = PartitionSlice::new(&mut disk, 16, 16);
        slice.write_all(b"0123456789").unwrap();
        assert_eq!(slice.seek(SeekFrom::End(-2)).unwrap(), 14);
        assert_eq!(slice.write(b"abcdef").unwrap(), 2, "cut at the end");
        assert!(slice.write(b"x").is_err());
        assert!(slice.seek(SeekFrom::Current(-17)).is_err());

        slice.seek(SeekFrom::Start(8)).unwrap();
        let mut rest = Vec::new();
        slice.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"89\0\0\0\0ab");

        let disk = disk.into_inner();
        assert!(disk[..16].iter().all(|&b| b == 0));
        assert_eq!(&disk[16..26], b"0123456789");
        assert_eq!(&disk[30..32], b"ab");
        assert!(disk[32..].iter().all(|&b| b == 0));
    }
}
