//! Keel's initramfs: `keel-init` as /init, the few modules it loads, and the list of them in
//! load order. Written as a newc cpio archive, gzip-compressed, with fixed owners, times and
//! order so it is the same bytes for the same inputs.

use flate2::{Compression, GzBuilder};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// An initramfs being assembled: paths (without leading '/') to entries.
#[derive(Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

/// Where `keel-init` reads its module list from (one absolute path per line, load order).
pub const MODULE_LIST: &str = "etc/keel/modules";

impl Initramfs {
    /// The skeleton every Keel initramfs has: mount points, and the two device nodes the kernel
    /// needs before /dev is mounted (it opens /dev/console for init's output).
    pub fn new() -> Self {
        let mut i = Initramfs::default();
        for d in ["dev", "etc", "proc", "run", "sys", "sysroot", "tmp"] {
            i.dir(d);
        }
        i.entries.insert(
            "dev/console".into(),
            Entry::CharDev {
                major: 5,
                minor: 1,
                mode: 0o600,
            },
        );
        i.entries.insert(
            "dev/null".into(),
            Entry::CharDev {
                major: 1,
                minor: 3,
                mode: 0o666,
            },
        );
        i
    }

    fn dir(&mut self, path: &str) {
        let mut acc = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.entries.entry(acc.clone()).or_insert(Entry::Dir);
        }
    }

    pub fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries
            .insert(path.to_string(), Entry::File { data, mode });
    }

    pub fn add_host_file(
        &mut self,
        path: &str,
        from: &Path,
        mode: u32,
    ) -> Result<(), InitramfsError> {
        let data = std::fs::read(from).map_err(|source| InitramfsError::Io {
            path: from.into(),
            source,
        })?;
        self.add_file(path, data, mode);
        Ok(())
    }

    /// Adds the modules (paths relative to the release folder of `modules_root`, already in
    /// load order) and the list `keel-init` loads them from.
    pub fn add_modules(
        &mut self,
        modules_root: &Path,
        release: &str,
        ordered: &[String],
    ) -> Result<(), InitramfsError> {
        let mut list = String::new();
        for rel in ordered {
            let dest = format!("lib/modules/{release}/{rel}");
            self.add_host_file(&dest, &modules_root.join(rel), 0o644)?;
            list.push('/');
            list.push_str(&dest);
            list.push('\n');
        }
        self.add_file(MODULE_LIST, list.into_bytes(), 0o644);
        Ok(())
    }

    /// The uncompressed newc archive.
    pub fn to_cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // BTreeMap order puts a directory before everything under it.
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir => (0o040755, &[], (0, 0)),
                Entry::File { data, mode } => (0o100000 | mode, data, (0, 0)),
                Entry::CharDev { major, minor, mode } => (0o020000 | mode, &[], (*major, *minor)),
            };
            let nlink = if matches!(entry, Entry::Dir) { 2 } else { 1 };
            write_header(&mut out, ino, mode, nlink, data.len() as u32, rdev, path);
            out.extend_from_slice(data);
            pad4(&mut out);
        }
        write_header(&mut out, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
        out
    }

    /// The gzip-compressed archive the kernel unpacks.
    pub fn to_gzip(&self) -> Vec<u8> {
        let mut enc = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::best());
        enc.write_all(&self.to_cpio()).expect("writing to a Vec");
        enc.finish().expect("writing to a Vec")
    }
}

/// Streams a newc archive holding one file at `path` (its folders first) with `size` bytes
/// from `data`, then the trailer: an extra initramfs a boot loader can load next to the main
/// one, without holding the file in memory.
pub fn write_single_file_cpio(
    out: &mut impl Write,
    path: &str,
    mode: u32,
    data: &mut impl std::io::Read,
    size: u64,
) -> std::io::Result<()> {
    let size32 = u32::try_from(size)
        .map_err(|_| std::io::Error::other(format!("{path}: newc cannot hold {size} bytes")))?;
    let mut head = Vec::new();
    let mut ino = 1;
    let parts: Vec<&str> = path.split('/').collect();
    for n in 1..parts.len() {
        write_header(
            &mut head,
            ino,
            0o040755,
            2,
            0,
            (0, 0),
            &parts[..n].join("/"),
        );
        ino += 1;
    }
    write_header(&mut head, ino, 0o100000 | mode, 1, size32, (0, 0), path);
    out.write_all(&head)?;
    let copied = std::io::copy(&mut std::io::Read::take(&mut *data, size), out)?;
    if copied != size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{path}: {copied} of {size} bytes"),
        ));
    }
    let mut tail = vec![0u8; (4 - (size % 4) as usize) % 4];
    let mut trailer = Vec::new();
    write_header(&mut trailer, 0, 0, 1, 0, (0, 0), "TRAILER!!!");
    tail.extend_from_slice(&trailer);
    out.write_all(&tail)
}

fn write_header(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_file_archive_is_what_cpio_unpacks() {
        let data = b"root image bytes".repeat(3);
        let mut archive = Vec::new();
        write_single_file_cpio(
            &mut archive,
            "keel/rootfs.img",
            0o644,
            &mut &data[..],
            data.len() as u64,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cpio = std::process::Command::new("cpio")
            .args(["-idm", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("cpio (Debian package cpio)");
        cpio.stdin.take().unwrap().write_all(&archive).unwrap();
        assert!(cpio.wait().unwrap().success());
        assert_eq!(
            std::fs::read(dir.path().join("keel/rootfs.img")).unwrap(),
            data
        );
        // Short input is an error, not a truncated archive.
        let mut short = Vec::new();
        assert!(write_single_file_cpio(&mut short, "f", 0o644, &mut &data[..4], 10).is_err());
    }
    use std::process::{Command, Stdio};

    #[test]
    fn cpio_lists_and_extracts_with_gnu_cpio() {
        let mut i = Initramfs::new();
        i.add_file("/init", b"#!/bin/sh\n".to_vec(), 0o755);
        i.add_file("lib/modules/6.1/kernel/x.ko", vec![7; 5], 0o644);
        let archive = i.to_cpio();
        assert_eq!(archive.len() % 4, 0);
        let mut child = Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cpio is missing: apt-get install cpio (make deps does)");
        child.stdin.take().unwrap().write_all(&archive).unwrap();
        let out = child.wait_with_output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            listing.contains("crw-------") && listing.contains("dev/console"),
            "{listing}"
        );
        assert!(
            listing.contains("-rwxr-xr-x") && listing.contains(" init"),
            "{listing}"
        );
        assert!(listing.contains("lib/modules/6.1/kernel/x.ko"), "{listing}");
    }

    #[test]
    fn archives_are_reproducible_and_parents_come_first() {
        let make = || {
            let mut i = Initramfs::new();
            i.add_file("b/c", vec![1], 0o644);
            i.add_file("a", vec![2], 0o644);
            i.to_gzip()
        };
        assert_eq!(make(), make());
        let i = {
            let mut i = Initramfs::new();
            i.add_file("b/c/d", vec![1], 0o644);
            i
        };
        let names: Vec<&String> = i.entries.keys().collect();
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("b") < pos("b/c") && pos("b/c") < pos("b/c/d"));
    }
}
