//! The EFI System Partition: systemd-boot, its loader entry carrying `roothash=`, and the
//! kernel and initramfs of slot A. A FAT image made by mkfs.vfat and filled with mtools, both
//! with fixed volume id and times so the bytes repeat.

use crate::tools::{self, ToolError};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("systemd-boot is not in the image: add `systemd-boot-efi` to the spec's packages ({0} missing)")]
    NoBootloader(PathBuf),
}

pub struct EspContents<'a> {
    pub bootloader: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub kernel_release: &'a str,
    pub cmdline: &'a str,
}

/// Where systemd-boot sits inside a Debian tree.
pub const SYSTEMD_BOOT: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

pub fn loader_entry(c: &EspContents) -> String {
    format!(
        "title Keel (slot A)\nversion {}\nlinux /keel/a/vmlinuz\ninitrd /keel/a/initrd.img\noptions {}\n",
        c.kernel_release, c.cmdline
    )
}

/// Boot slot A at once; the console stays as the firmware left it.
pub const LOADER_CONF: &str = "default keel-a.conf\ntimeout 0\nconsole-mode keep\neditor no\n";

pub fn make(
    c: &EspContents,
    size_bytes: u64,
    volume_id: u32,
    epoch: u64,
    work: &Path,
    out: &Path,
) -> Result<(), EspError> {
    if !c.bootloader.is_file() {
        return Err(EspError::NoBootloader(c.bootloader.to_path_buf()));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| EspError::Io { path, source }
    };
    let _ = fs::remove_file(out);
    let epoch = epoch.to_string();
    tools::run(
        tools::command(
            "mkfs.vfat",
            [
                "--invariant",
                "-i",
                &format!("{volume_id:08x}"),
                "-n",
                "EFI-SYSTEM",
                "-C",
            ],
        )
        .arg(out)
        .arg((size_bytes / 1024).to_string())
        .env("SOURCE_DATE_EPOCH", &epoch),
    )?;
    let entry = work.join("keel-a.conf");
    fs::write(&entry, loader_entry(c)).map_err(io(&entry))?;
    let loader_conf = work.join("loader.conf");
    fs::write(&loader_conf, LOADER_CONF).map_err(io(&loader_conf))?;

    let mtools = |args: &[&str]| {
        let mut cmd = tools::command(args[0], ["-i"]);
        cmd.arg(out)
            .args(&args[1..])
            .env("SOURCE_DATE_EPOCH", &epoch)
            .env("MTOOLS_SKIP_CHECK", "1");
        tools::run(&mut cmd)
    };
    for dir in [
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/loader",
        "::/loader/entries",
        "::/keel",
        "::/keel/a",
    ] {
        mtools(&["mmd", dir])?;
    }
    let copies: [(&Path, &str); 6] = [
        (c.bootloader, "::/EFI/BOOT/BOOTX64.EFI"),
        (c.bootloader, "::/EFI/systemd/systemd-bootx64.efi"),
        (&loader_conf, "::/loader/loader.conf"),
        (&entry, "::/loader/entries/keel-a.conf"),
        (c.kernel, "::/keel/a/vmlinuz"),
        (c.initrd, "::/keel/a/initrd.img"),
    ];
    for (from, to) in copies {
        mtools(&["mcopy", from.to_str().expect("utf-8 work paths"), to])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_is_reproducible_and_holds_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| {
            let path = dir.path().join(n);
            fs::write(&path, n.repeat(1000)).unwrap();
            path
        };
        let (boot, kernel, initrd) = (p("boot"), p("kernel"), p("initrd"));
        let c = EspContents {
            bootloader: &boot,
            kernel: &kernel,
            initrd: &initrd,
            kernel_release: "6.1.0-test",
            cmdline: "roothash=ab console=ttyS0",
        };
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        make(&c, 32 << 20, 0x1234abcd, 1_700_000_000, dir.path(), &a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make(&c, 32 << 20, 0x1234abcd, 1_700_000_000, dir.path(), &b).unwrap();
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "two ESPs differ"
        );
        let entry = tools::run(
            tools::command("mtype", ["-i"])
                .arg(&a)
                .arg("::/loader/entries/keel-a.conf")
                .env("MTOOLS_SKIP_CHECK", "1"),
        )
        .unwrap();
        assert!(
            entry.contains("options roothash=ab console=ttyS0"),
            "{entry}"
        );
    }
}
