//! The artifacts for machines that do not start from a ready disk: the live root image, the
//! PXE folder, the compressed disk image keel-install writes, and the hybrid ISO.
//!
//! - The root image: the ext4 root followed by its dm-verity hash device (superblock first),
//!   one file that keel-init verifies against the same `roothash=` as ROOT-A. The ISO holds
//!   it as `keel/rootfs.img`; `pxe/rootfs.img` is the same bytes as a one-file cpio archive,
//!   a second initrd that puts it at `/keel/rootfs.img` in the initramfs.
//! - `pxe/vmlinuz`, `pxe/initrd.img` (keel-init and its modules, the disk's own initramfs),
//!   `pxe/keel.ipxe`: an iPXE script that boots them with `keel.live`.
//! - `<name>.raw.gz`: the disk image, gzip-compressed, for keel-install.
//! - `<name>.iso`: ISO 9660 labelled `KEEL_LIVE` holding `keel/rootfs.img`, `keel/keel.raw.gz`
//!   and its `keel/SHA256SUMS`; it boots under UEFI from El Torito (a CD) and, through the GPT
//!   xorriso writes beside the ISO 9660 tree, as a USB disk: the EFI boot image is the same
//!   FAT ESP as the disk's (systemd-boot, kernel, initramfs) with `keel.live` added to the
//!   kernel command line.
//!
//! Everything is reproducible: fixed gzip headers, every staged file stamped with
//! `source_date_epoch`, xorriso run under `SOURCE_DATE_EPOCH`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::esp::{self, EspContents};
use crate::initramfs::write_single_file_cpio;
use crate::layout::{LIVE_ARG, LIVE_DISK_IMAGE, LIVE_ROOT_IMAGE, LIVE_VOLUME_ID};
use crate::tools::{self, ToolError};

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Esp(#[from] esp::EspError),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LiveError + '_ {
    move |source| LiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the live artifacts are made from (all produced earlier in the build).
pub struct LiveInputs<'a> {
    pub name: &'a str,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub bootloader: &'a Path,
    pub kernel_release: &'a str,
    /// The root filesystem (ROOT-A's content) and its hash device (ROOT-A-VERITY's).
    pub rootfs: &'a Path,
    pub verity: &'a Path,
    /// The disk image (`<name>.raw`).
    pub raw: &'a Path,
    /// The disk's kernel command line; `keel.live` is added to it.
    pub cmdline: &'a str,
    pub esp_size: u64,
    pub esp_volume_id: u32,
    pub epoch: u64,
    pub scratch: &'a Path,
    pub out_dir: &'a Path,
}

/// The files written, relative to the output folder, for SHA256SUMS.
pub struct LiveOutputs {
    pub files: Vec<PathBuf>,
    pub iso_bytes: u64,
    pub raw_gz_bytes: u64,
    pub root_image_bytes: u64,
}

/// The iPXE script of `pxe/`: the files next to it, fetched from wherever it was.
pub fn ipxe_script(cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         # Keel, live over the network: the kernel, keel-init's initramfs and the verified root\n\
         # image (a cpio archive that puts it at /{LIVE_ROOT_IMAGE} in the initramfs).\n\
         kernel vmlinuz {cmdline} {LIVE_ARG} initrd=initrd.img initrd=rootfs.img\n\
         initrd initrd.img\n\
         initrd rootfs.img\n\
         boot\n"
    )
}

pub fn make(inputs: &LiveInputs) -> Result<LiveOutputs, LiveError> {
    let out = inputs.out_dir;
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(inputs.epoch);
    let pxe = out.join("pxe");
    fs::create_dir_all(&pxe).map_err(io_at(&pxe))?;

    // The root image: data, then the hash device, whose superblock keel-init finds right
    // after the ext4 filesystem. The ISO holds it as a file.
    let root_image = inputs.scratch.join("rootfs.img");
    write_atomic_with(&root_image, |file| {
        for part in [inputs.rootfs, inputs.verity] {
            io::copy(&mut fs::File::open(part)?, file)?;
        }
        Ok(())
    })?;
    let root_image_bytes = fs::metadata(&root_image).map_err(io_at(&root_image))?.len();
    // For PXE the same bytes, packed as a one-file cpio archive (`keel/rootfs.img`): any boot
    // loader that loads a second initrd then puts it into the initramfs, with no need for a
    // loader that wraps named files itself (QEMU's iPXE does not, under UEFI).
    let pxe_root = pxe.join("rootfs.img");
    write_atomic_with(&pxe_root, |file| {
        write_single_file_cpio(
            file,
            LIVE_ROOT_IMAGE,
            0o644,
            &mut fs::File::open(&root_image)?,
            root_image_bytes,
        )
    })?;
    copy_atomic(inputs.kernel, &pxe.join("vmlinuz"))?;
    // Zero-padded to a multiple of four bytes: the kernel finds a second initramfs (the root
    // image's archive, which the EFI stub loads right after this one) only on a 4-byte
    // boundary, and skips zeros to get there.
    write_atomic_with(&pxe.join("initrd.img"), |file| {
        let len = io::copy(&mut fs::File::open(inputs.initrd)?, file)?;
        file.write_all(&[0u8; 3][..((4 - len % 4) % 4) as usize])
    })?;
    let script = pxe.join("keel.ipxe");
    write_atomic_with(&script, |f| {
        f.write_all(ipxe_script(inputs.cmdline).as_bytes())
    })?;

    // The disk image for keel-install; the fastest gzip level, since most of it is zeros and
    // the rest is already compressed once, in the ISO's transfer.
    let raw_gz = out.join(format!("{}.raw.gz", inputs.name));
    write_atomic_with(&raw_gz, |file| {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(file, flate2::Compression::fast());
        io::copy(&mut fs::File::open(inputs.raw)?, &mut gz)?;
        gz.finish()?;
        Ok(())
    })?;
    let raw_gz_bytes = fs::metadata(&raw_gz).map_err(io_at(&raw_gz))?.len();

    // The ISO's tree: hard links, not copies, of the big files.
    let tree = inputs.scratch.join("iso-root");
    let _ = fs::remove_dir_all(&tree);
    let keel_dir = tree.join("keel");
    fs::create_dir_all(&keel_dir).map_err(io_at(&keel_dir))?;
    link_or_copy(&root_image, &tree.join(LIVE_ROOT_IMAGE))?;
    link_or_copy(&raw_gz, &tree.join(LIVE_DISK_IMAGE))?;
    let gz_name = Path::new(LIVE_DISK_IMAGE)
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned();
    let sums = format!(
        "{}  {gz_name}\n",
        tools::sha256_file(&raw_gz).map_err(io_at(&raw_gz))?
    );
    fs::write(keel_dir.join("SHA256SUMS"), sums).map_err(io_at(&keel_dir))?;
    for path in [
        tree.clone(),
        keel_dir.clone(),
        tree.join(LIVE_ROOT_IMAGE),
        tree.join(LIVE_DISK_IMAGE),
        keel_dir.join("SHA256SUMS"),
    ] {
        stamp(&path, epoch)?;
    }

    // The EFI boot image: the disk's ESP with `keel.live` on the kernel command line.
    let efiboot = inputs.scratch.join("efiboot.img");
    let live_cmdline = format!("{} {LIVE_ARG}", inputs.cmdline);
    esp::make(
        &EspContents {
            bootloader: inputs.bootloader,
            kernel: inputs.kernel,
            initrd: inputs.initrd,
            kernel_release: inputs.kernel_release,
            cmdline: &live_cmdline,
        },
        inputs.esp_size,
        inputs.esp_volume_id,
        inputs.epoch,
        inputs.scratch,
        &efiboot,
    )?;

    let iso = out.join(format!("{}.iso", inputs.name));
    let iso_tmp = out.join(format!(".{}.iso.tmp", inputs.name));
    let _ = fs::remove_file(&iso_tmp);
    tools::run(
        tools::command("xorriso", ["-as", "mkisofs", "-o"])
            .arg(&iso_tmp)
            .args(["-V", LIVE_VOLUME_ID, "-iso-level", "3", "-r"])
            // The ESP after the ISO 9660 tree, as GPT partition 2 (what a USB boot finds),
            // and the El Torito EFI entry pointing at that same partition (what a CD boot
            // finds).
            .args(["-partition_offset", "16", "-append_partition", "2", "0xef"])
            .arg(&efiboot)
            .args([
                "-appended_part_as_gpt",
                "-e",
                "--interval:appended_partition_2:all::",
                "-no-emul-boot",
            ])
            .arg(&tree)
            .env("SOURCE_DATE_EPOCH", inputs.epoch.to_string()),
    )?;
    fs::rename(&iso_tmp, &iso).map_err(io_at(&iso))?;
    let iso_bytes = fs::metadata(&iso).map_err(io_at(&iso))?.len();
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_file(&root_image);

    let files = [
        format!("{}.iso", inputs.name),
        format!("{}.raw.gz", inputs.name),
        "pxe/vmlinuz".into(),
        "pxe/initrd.img".into(),
        "pxe/rootfs.img".into(),
        "pxe/keel.ipxe".into(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect();
    Ok(LiveOutputs {
        files,
        iso_bytes,
        raw_gz_bytes,
        root_image_bytes,
    })
}

/// [`tools::write_atomic_with`], with the path in the error.
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut fs::File) -> io::Result<()>,
) -> Result<(), LiveError> {
    tools::write_atomic_with(path, fill).map_err(io_at(path))
}

fn copy_atomic(from: &Path, to: &Path) -> Result<(), LiveError> {
    write_atomic_with(to, |file| {
        io::copy(&mut fs::File::open(from)?, file)?;
        Ok(())
    })
}

fn link_or_copy(from: &Path, to: &Path) -> Result<(), LiveError> {
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).map(|_| ()).map_err(io_at(to))
}

fn stamp(path: &Path, at: SystemTime) -> Result<(), LiveError> {
    let file = fs::File::open(path).map_err(io_at(path))?;
    file.set_times(fs::FileTimes::new().set_accessed(at).set_modified(at))
        .map_err(io_at(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ipxe_script_boots_live_with_the_root_image_in_the_initramfs() {
        let script = ipxe_script("roothash=ab console=ttyS0");
        assert!(script.starts_with("#!ipxe\n"));
        assert!(script.contains(
            "kernel vmlinuz roothash=ab console=ttyS0 keel.live initrd=initrd.img initrd=rootfs.img\n"
        ));
        assert!(script.contains("initrd initrd.img\ninitrd rootfs.img\nboot\n"));
        assert!(script.ends_with("boot\n"));
    }
}
