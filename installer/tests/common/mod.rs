//! Test fixtures shared by the installer's integration tests: a small Keel-like disk image
//! (GPT with a FAT EFI-SYSTEM partition) with its SHA256SUMS, sparse targets, a throwaway
//! HTTP server, and loop devices and mounts that clean up after themselves.
#![allow(dead_code)] // each test binary uses its own subset

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fatfs::{FileSystem, FormatVolumeOptions, FsOptions};
use flate2::write::GzEncoder;
use keel_image::disk::{self, PartitionSpec, PlacedPartition};
use keel_installer::PartitionSlice;
use tempfile::TempDir;
use uuid::Uuid;

pub const MIB: u64 = 1 << 20;
pub const IMAGE_SIZE: u64 = 64 * MIB;
pub const ESP_SIZE: u64 = 32 * MIB;
/// What the fixture's ESP holds before the install, to show the installer leaves it alone.
pub const KERNEL_PATH: &str = "keel/a/vmlinuz";
pub const KERNEL: &[u8] = b"not really a kernel\n";

const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
const ROOT_X86_64_TYPE: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
const VAR_TYPE: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";

/// A folder with `keel.raw`, `keel.raw.gz` and a SHA256SUMS listing both.
pub struct Fixture {
    pub dir: TempDir,
    pub raw: PathBuf,
    pub gz: PathBuf,
    pub esp: PlacedPartition,
}

impl Fixture {
    /// A fresh copy of the fixture folder, which the test may change at will.
    pub fn new() -> Fixture {
        let template = template();
        let dir = tempfile::tempdir().unwrap();
        for name in ["keel.raw", "keel.raw.gz", "SHA256SUMS"] {
            fs::copy(template.dir.join(name), dir.path().join(name)).unwrap();
        }
        Fixture {
            raw: dir.path().join("keel.raw"),
            gz: dir.path().join("keel.raw.gz"),
            dir,
            esp: template.esp.clone(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_sums(&self, entries: &[(&str, &str)]) {
        let text: String = entries
            .iter()
            .map(|(name, hash)| format!("{hash}  {name}\n"))
            .collect();
        fs::write(self.path("SHA256SUMS"), text).unwrap();
    }

    pub fn write_manifest(&self, raw_bytes: u64) {
        let manifest = format!(
            "{{\"name\":\"keel\",\"sizes\":{{\"raw_bytes\":{raw_bytes},\"qcow2_bytes\":1}}}}"
        );
        fs::write(self.path("manifest.json"), manifest).unwrap();
    }

    pub fn raw_bytes(&self) -> Vec<u8> {
        fs::read(&self.raw).unwrap()
    }
}

struct Template {
    dir: PathBuf,
    esp: PlacedPartition,
}

/// The fixture, built once per test process: making and compressing the image takes seconds
/// in a debug build, copying it a fraction of that. It lives in Cargo's scratch folder for
/// integration tests under this process's id; folders of processes that are gone are removed.
fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        const PREFIX: &str = "installer-fixture-";
        for entry in fs::read_dir(base).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(PREFIX) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("{PREFIX}{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let esp = build_image(&dir);
        Template { dir, esp }
    })
}

/// Writes keel.raw, keel.raw.gz and SHA256SUMS into `dir`; returns where the ESP is.
fn build_image(dir: &Path) -> PlacedPartition {
    let scratch = tempfile::tempdir().unwrap();
    let esp_image = scratch.path().join("esp.img");
    make_esp(&esp_image);
    // Pseudo-random bytes, so a byte written to the wrong place cannot go unnoticed.
    let root_image = scratch.path().join("root.img");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let root: Vec<u8> = (0..4 * MIB)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(&root_image, root).unwrap();

    let raw = dir.join("keel.raw");
    let placed = disk::write_disk(
        &raw,
        Uuid::from_u128(0x6b65_656c),
        IMAGE_SIZE,
        &[
            part("EFI-SYSTEM", ESP_TYPE, 1, ESP_SIZE, Some(esp_image)),
            part("ROOT-A", ROOT_X86_64_TYPE, 2, 8 * MIB, Some(root_image)),
            part("STATE", VAR_TYPE, 3, 0, None),
        ],
    )
    .unwrap();

    let gz = dir.join("keel.raw.gz");
    let mut encoder = GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
    io::copy(&mut File::open(&raw).unwrap(), &mut encoder).unwrap();
    encoder.finish().unwrap();

    let sums = format!(
        "{}  keel.raw\n{}  keel.raw.gz\n",
        sha256_file(&raw),
        sha256_file(&gz)
    );
    fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    placed[0].clone()
}

fn part(
    label: &str,
    type_guid: &str,
    n: u128,
    size: u64,
    contents: Option<PathBuf>,
) -> PartitionSpec {
    PartitionSpec {
        label: label.into(),
        type_guid: Uuid::parse_str(type_guid).unwrap(),
        uuid: Uuid::from_u128(n),
        size_bytes: size,
        contents,
    }
}

/// A FAT filesystem as `keel build` makes it, with a kernel in slot A's folder.
fn make_esp(path: &Path) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(ESP_SIZE).unwrap();
    let mut slice = PartitionSlice::new(&file, 0, ESP_SIZE);
    fatfs::format_volume(
        &mut slice,
        FormatVolumeOptions::new().volume_label(*b"EFI-SYSTEM "),
    )
    .unwrap();
    let fs = FileSystem::new(PartitionSlice::new(&file, 0, ESP_SIZE), FsOptions::new()).unwrap();
    fs.root_dir().create_dir("keel").unwrap();
    fs.root_dir().create_dir("keel/a").unwrap();
    let mut kernel = fs.root_dir().create_file(KERNEL_PATH).unwrap();
    kernel.write_all(KERNEL).unwrap();
    drop(kernel);
    fs.unmount().unwrap();
}

/// The file's sha256 as `sha256sum` (coreutils) prints it: the real tool, and far faster
/// than a debug build of the sha2 crate.
pub fn sha256_file(path: &Path) -> String {
    let line = run(Command::new("sha256sum").arg(path)).unwrap();
    line.split_whitespace().next().unwrap().to_owned()
}

/// A sparse all-zero file of `size` bytes, as the tests' install target.
pub fn sparse_target(dir: &Path, size: u64) -> PathBuf {
    let path = dir.join("target.img");
    File::create(&path).unwrap().set_len(size).unwrap();
    path
}

/// Whether every byte of `path` is zero.
pub fn all_zero(path: &Path) -> bool {
    let mut file = File::open(path).unwrap();
    let zeros = vec![0u8; MIB as usize];
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return true;
        }
        // Slice equality is a memcmp even in a debug build; a byte loop is not.
        if buf[..n] != zeros[..n] {
            return false;
        }
    }
}

/// Reads a file from the FAT filesystem of `esp` on the disk (image or device) at `disk`.
pub fn read_esp_file(disk: &Path, esp: &PlacedPartition, name: &str) -> io::Result<Vec<u8>> {
    let file = File::open(disk)?;
    let fs = FileSystem::new(
        PartitionSlice::new(&file, esp.offset_bytes, esp.size_bytes),
        FsOptions::new(),
    )?;
    let mut contents = Vec::new();
    fs.root_dir().open_file(name)?.read_to_end(&mut contents)?;
    Ok(contents)
}

/// Bytes `[offset, offset + len)` of `path`.
pub fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len as usize];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Serves the files of `root` at `http://127.0.0.1:PORT/` (HTTP/1.0, one connection at a
/// time, 404 for anything missing) from a thread that lives as long as the test process.
pub fn serve(root: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let root = root.to_owned();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers up to the blank line.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("/");
            let name = path.trim_start_matches('/').split('?').next().unwrap_or("");
            let file = (!name.contains("..")).then(|| root.join(name));
            let _ = match file.and_then(|file| fs::read(file).ok()) {
                Some(body) => stream
                    .write_all(
                        format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                None => stream.write_all(
                    b"HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
                ),
            };
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// Whether `tool` can be run; otherwise prints why the test is skipped, naming the Debian
/// package that provides it.
pub fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: {tool} is not installed (apt-get install {package})");
    }
    found
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|err| format!("{command:?}: {err}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A loop device over a file, detached when dropped (also when the test panics).
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    /// `losetup -f --show [-P] FILE`; `Err` when this machine cannot make loop devices (a
    /// container without /dev/loop-control), which tests take as a reason to skip.
    pub fn attach(file: &Path, partitions: bool) -> Result<LoopDevice, String> {
        let mut command = Command::new("losetup");
        command.args(["-f", "--show"]);
        if partitions {
            command.arg("-P");
        }
        let path = run(command.arg(file))?;
        Ok(LoopDevice { path: path.into() })
    }

    /// The sysfs name of partition `n` (`loop3p1`), present once the kernel has scanned it.
    pub fn partition_sysfs(&self, n: u32) -> PathBuf {
        let name = self
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        PathBuf::from(format!("/sys/class/block/{name}/{name}p{n}"))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("losetup").arg("-d").arg(&self.path)) {
            eprintln!("cleanup: {err}");
        }
    }
}

/// A mounted filesystem, unmounted when dropped.
pub struct Mount {
    pub point: PathBuf,
}

impl Mount {
    pub fn new(device: &Path, point: &Path) -> Result<Mount, String> {
        run(Command::new("mount").arg(device).arg(point))?;
        Ok(Mount {
            point: point.to_owned(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("umount").arg(&self.point)) {
            eprintln!("cleanup: {err}");
        }
    }
}

/// `mkfs.ext4` on a new file of `size` bytes.
pub fn ext4_file(path: &Path, size: u64) -> Result<(), String> {
    File::create(path).unwrap().set_len(size).unwrap();
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(path)).map(drop)
}
