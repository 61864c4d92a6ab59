//! Reads files out of a built raw image without mounting it: finds the ROOT-A partition in the
//! GPT and reads its ext4 with `ext4-view`, in user space, so no root or loop devices are needed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ext4_view::{Ext4, Ext4Error, Ext4Read, FileType, Metadata};

use crate::disk::{self, DiskError, PlacedPartition};
use crate::layout;

/// First bytes of every qcow2 file.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("image {image} does not exist")]
    ImageMissing { image: PathBuf },
    #[error("cannot open image {image}: {source}")]
    Open { image: PathBuf, source: io::Error },
    #[error(
        "{image} is a qcow2 image; inspect reads the raw image (out/keel.raw) — or convert it \
         with `qemu-img convert -O raw`"
    )]
    Qcow2 { image: PathBuf },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("cannot read the ext4 filesystem in partition {label} of {image}: {source}")]
    LoadFilesystem {
        image: PathBuf,
        label: &'static str,
        source: Ext4Error,
    },
    #[error("{path} not found in {image}")]
    NotFound { image: PathBuf, path: String },
    #[error("{path} is a directory in {image}; list it with `--ls`")]
    IsADirectory { image: PathBuf, path: String },
    #[error("{path} is not a directory in {image}")]
    NotADirectory { image: PathBuf, path: String },
    #[error("{path} in {image} is not a regular file (device, fifo or socket)")]
    SpecialFile { image: PathBuf, path: String },
    #[error("cannot read {path} in {image}: {source}")]
    Read {
        image: PathBuf,
        path: String,
        source: Ext4Error,
    },
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntryInfo {
    pub name: String,
    /// The file type as `ls -l` shows it: 'd', '-', 'l', 'c', 'b', 'p' or 's'.
    pub kind: char,
    /// Permission bits, including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes; for a symlink, the length of its target.
    pub size: u64,
    pub symlink_target: Option<String>,
}

/// Reads the file at `path` (absolute, or taken as relative to /) from the root filesystem in
/// the ROOT-A partition of the raw `image`, following symlinks.
pub fn read_file(image: &Path, path: &str) -> Result<Vec<u8>, InspectError> {
    let root = RootFilesystem::open(image)?;
    let path = absolute(path);
    root.fs
        .read(path.as_str())
        .map_err(|err| root.path_error(&path, err))
}

/// Lists the directory at `dir` (following symlinks) in ROOT-A of `image`, sorted by name,
/// without "." and "..".
pub fn list_dir(image: &Path, dir: &str) -> Result<Vec<DirEntryInfo>, InspectError> {
    let root = RootFilesystem::open(image)?;
    let dir = absolute(dir);
    let read_dir = root
        .fs
        .read_dir(dir.as_str())
        .map_err(|err| root.path_error(&dir, err))?;

    let mut entries = Vec::new();
    for entry in read_dir {
        let entry = entry.map_err(|err| root.path_error(&dir, err))?;
        let name = String::from_utf8_lossy(entry.file_name().as_ref()).into_owned();
        if name == "." || name == ".." {
            continue;
        }
        let entry_path = entry.path();
        let entry_path_text = entry_path.display().to_string();
        // Metadata of the entry itself: a symlink is listed as a symlink, not as its target.
        let metadata = entry
            .metadata()
            .map_err(|err| root.path_error(&entry_path_text, err))?;
        let symlink_target = if metadata.is_symlink() {
            let target = root
                .fs
                .read_link(&entry_path)
                .map_err(|err| root.path_error(&entry_path_text, err))?;
            Some(target.display().to_string())
        } else {
            None
        };
        entries.push(DirEntryInfo {
            name,
            kind: kind_char(&metadata),
            mode: u32::from(metadata.mode()),
            size: metadata.len(),
            symlink_target,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Formats entries one per line like `ls -l` without links, owners and dates:
/// `drwxr-xr-x       4096 etc` and `lrwxrwxrwx          7 bin -> usr/bin`.
pub fn format_listing(entries: &[DirEntryInfo]) -> String {
    let mut listing = String::new();
    for entry in entries {
        listing.push(entry.kind);
        listing.push_str(&permission_text(entry.mode));
        listing.push_str(&format!(" {:>10} {}", entry.size, entry.name));
        if let Some(target) = &entry.symlink_target {
            listing.push_str(" -> ");
            listing.push_str(target);
        }
        listing.push('\n');
    }
    listing
}

/// `rwxr-xr-x` for the low 12 mode bits, with s/S and t/T where `ls` puts them.
fn permission_text(mode: u32) -> String {
    const SETUID: u32 = 0o4000;
    const SETGID: u32 = 0o2000;
    const STICKY: u32 = 0o1000;
    // (read bit, write bit, execute bit, special bit, letter for special+x, letter for special only)
    let triads = [
        (0o400, 0o200, 0o100, SETUID, 's', 'S'),
        (0o040, 0o020, 0o010, SETGID, 's', 'S'),
        (0o004, 0o002, 0o001, STICKY, 't', 'T'),
    ];
    let mut text = String::with_capacity(9);
    for (read, write, execute, special, special_exec, special_only) in triads {
        text.push(if mode & read != 0 { 'r' } else { '-' });
        text.push(if mode & write != 0 { 'w' } else { '-' });
        text.push(match (mode & special != 0, mode & execute != 0) {
            (true, true) => special_exec,
            (true, false) => special_only,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    text
}

fn kind_char(metadata: &Metadata) -> char {
    match metadata.file_type() {
        FileType::Directory => 'd',
        FileType::Regular => '-',
        FileType::Symlink => 'l',
        FileType::CharacterDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
    }
}

/// ext4-view only resolves absolute paths; `etc/os-release` means `/etc/os-release` here.
fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// The ext4 in ROOT-A of an image, opened for reading.
struct RootFilesystem {
    image: PathBuf,
    fs: Ext4,
}

impl RootFilesystem {
    fn open(image: &Path) -> Result<Self, InspectError> {
        let file = open_raw_image(image)?;
        let partition = disk::find_partition(image, layout::LABEL_ROOT_A)?;
        let reader = PartitionReader { file, partition };
        let fs = Ext4::load(Box::new(reader)).map_err(|source| InspectError::LoadFilesystem {
            image: image.to_owned(),
            label: layout::LABEL_ROOT_A,
            source,
        })?;
        Ok(Self {
            image: image.to_owned(),
            fs,
        })
    }

    /// Turns an ext4-view error about `path` into one that names the path and the image.
    fn path_error(&self, path: &str, err: Ext4Error) -> InspectError {
        let image = self.image.clone();
        let path = path.to_owned();
        match err {
            Ext4Error::NotFound => InspectError::NotFound { image, path },
            Ext4Error::IsADirectory => InspectError::IsADirectory { image, path },
            Ext4Error::NotADirectory => InspectError::NotADirectory { image, path },
            Ext4Error::IsASpecialFile => InspectError::SpecialFile { image, path },
            source => InspectError::Read {
                image,
                path,
                source,
            },
        }
    }
}

/// Opens the image, telling a missing file and a qcow2 apart from a raw image up front, since
/// both would otherwise surface as a puzzling "no GPT" error.
fn open_raw_image(image: &Path) -> Result<File, InspectError> {
    let mut file = File::open(image).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            InspectError::ImageMissing {
                image: image.to_owned(),
            }
        } else {
            InspectError::Open {
                image: image.to_owned(),
                source,
            }
        }
    })?;
    let mut magic = [0u8; 4];
    let starts_with_qcow2_magic = match file.read_exact(&mut magic) {
        Ok(()) => &magic == QCOW2_MAGIC,
        // Shorter than four bytes: not qcow2; the GPT reader will say what is wrong with it.
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => false,
        Err(source) => {
            return Err(InspectError::Open {
                image: image.to_owned(),
                source,
            })
        }
    };
    if starts_with_qcow2_magic {
        return Err(InspectError::Qcow2 {
            image: image.to_owned(),
        });
    }
    Ok(file)
}

/// Gives ext4-view the bytes of one partition of the image file.
struct PartitionReader {
    file: File,
    partition: PlacedPartition,
}

impl Ext4Read for PartitionReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte.checked_add(dst.len() as u64);
        if end.is_none_or(|end| end > self.partition.size_bytes) {
            return Err(Box::new(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at {start_byte} runs past the end of partition {} \
                     ({} bytes)",
                    dst.len(),
                    self.partition.label,
                    self.partition.size_bytes
                ),
            )));
        }
        self.file
            .read_exact_at(dst, self.partition.offset_bytes + start_byte)?;
        Ok(())
    }
}
