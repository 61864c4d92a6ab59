//! `keel build`: the whole pipeline from the spec to `out/`.

use crate::basetree::{BaseTree, BaseTreeError};
use crate::disk::{self, PartitionSpec, PlacedPartition};
use crate::esp::{self, EspContents, EspError};
use crate::initramfs::{Initramfs, InitramfsError};
use crate::layout::{self, partuuids_from_root_hash};
use crate::live::{self, LiveError, LiveInputs};
use crate::progress::Steps;
use crate::rootfs::{self, RootfsError, RootfsParams, RootfsStats};
use crate::spec::{Seed, Spec, SpecError};
use crate::stage::{self, ModuleIndex, StageError};
use crate::tools::{self, ToolError};
use crate::verity;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Live(#[from] LiveError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    BaseTree(#[from] BaseTreeError),
    #[error("staging the root: {0}")]
    Stage(#[from] StageError),
    #[error("root filesystem: {0}")]
    Rootfs(#[from] RootfsError),
    #[error("initramfs: {0}")]
    Initramfs(#[from] InitramfsError),
    #[error("EFI system partition: {0}")]
    Esp(#[from] EspError),
    #[error("dm-verity: {0}")]
    Verity(#[from] verity::VerityError),
    #[error("disk: {0}")]
    Disk(#[from] disk::DiskError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} is not a static executable (it needs a dynamic loader, which the initramfs does not have): build it with RUSTFLAGS='-C target-feature=+crt-static' --target x86_64-unknown-linux-gnu, or run `make image`")]
    InitNotStatic(PathBuf),
    #[error("Keel binary not found at {0}: build it first (`make tools` does)")]
    BinaryMissing(PathBuf),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BuildError + '_ {
    move |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct BuildOptions {
    pub spec_path: PathBuf,
    pub out_dir: PathBuf,
    /// Base-tree cache and scratch space; never inside the checkout.
    pub cache_dir: PathBuf,
    pub overlays_dir: PathBuf,
    /// The static `keel-init` binary.
    pub init_binary: PathBuf,
    /// `keel-provision`, installed as /usr/bin/keel-provision (the network stage).
    pub provision_binary: PathBuf,
    /// More programs for /usr/bin, each under its own file name (the cluster agents).
    pub extra_binaries: Vec<PathBuf>,
    /// Public keys allowed to log in as root (the VM tests inject theirs here for now).
    pub authorized_keys: Vec<PathBuf>,
    /// Also write the compressed qcow2.
    pub qcow2: bool,
    /// Also write the live and installer artifacts: `<name>.iso`, `<name>.raw.gz`, `pxe/`.
    pub live: bool,
}

#[derive(Debug, Serialize)]
pub struct Sizes {
    pub raw_bytes: u64,
    pub raw_allocated_bytes: u64,
    pub qcow2_bytes: Option<u64>,
    /// The hybrid ISO, when the live artifacts were built.
    pub iso_bytes: Option<u64>,
    /// The gzip-compressed disk image keel-install writes.
    pub raw_gz_bytes: Option<u64>,
    /// The live root image (root filesystem and hash device in one file) of the ISO and PXE.
    pub live_root_image_bytes: Option<u64>,
    pub root_tree_bytes: u64,
    pub rootfs: RootfsStats,
    pub verity_bytes: u64,
    pub initramfs_bytes: u64,
    pub esp_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct KernelInfo {
    pub package: String,
    pub release: String,
    pub cmdline: String,
    pub initramfs_modules: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BuildInfo {
    /// Wall-clock start of the build (seconds since the epoch); not part of the image.
    pub started_at: u64,
    pub seconds: f64,
    pub base_tree_cached: bool,
    pub base_tree_key: String,
    pub steps: Vec<(String, f64)>,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub name: String,
    pub spec_sha256: String,
    pub suite: String,
    pub source_date_epoch: u64,
    /// `keel` or `none`: who provisions the machine (the spec's `provisioner:`).
    pub provisioner: &'static str,
    pub root_hash: String,
    pub verity_salt: String,
    pub kernel: KernelInfo,
    pub disk_guid: String,
    pub partitions: Vec<PlacedPartition>,
    pub sizes: Sizes,
    pub packages: BTreeMap<String, String>,
    pub build: BuildInfo,
}

/// True when the ELF file has no PT_INTERP program header (needs no dynamic loader).
fn is_static_elf(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        data.get(o..o + 4)
            .map(|t| u32::from_le_bytes(t.try_into().unwrap()))
            != Some(3)
    })
}

fn sha256_file(path: &Path) -> Result<String, BuildError> {
    tools::sha256_file(path).map_err(io_at(path))
}

/// Writes `data` next to `dest` and renames it into place: readers never see half a file.
fn write_atomic(dest: &Path, data: &[u8]) -> Result<(), BuildError> {
    tools::write_atomic_with(dest, |file| io::Write::write_all(file, data)).map_err(io_at(dest))
}

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(1 << 20) << 20
}

/// Removes the scratch directory however the build ends.
struct ScratchDir(PathBuf);
impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn build(opts: &BuildOptions) -> Result<Manifest, BuildError> {
    let started = Instant::now();
    let started_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let spec_text = fs::read_to_string(&opts.spec_path).map_err(|source| SpecError::Read {
        file: opts.spec_path.clone(),
        source,
    })?;
    let spec = Spec::parse(&spec_text, &opts.spec_path)?;
    let seed = Seed::from_spec_text(&spec_text);
    let mut steps = Steps::new(9 + usize::from(opts.qcow2) + usize::from(opts.live));

    let step = steps.start("checking host tools");
    tools::check_all()?;
    for binary in [&opts.init_binary, &opts.provision_binary]
        .into_iter()
        .chain(&opts.extra_binaries)
    {
        if !binary.is_file() {
            return Err(BuildError::BinaryMissing(binary.clone()));
        }
    }
    let init_bytes = fs::read(&opts.init_binary).map_err(io_at(&opts.init_binary))?;
    if !is_static_elf(&init_bytes) {
        return Err(BuildError::InitNotStatic(opts.init_binary.clone()));
    }
    for name in &spec.overlays {
        let path = opts.overlays_dir.join(name);
        if !path.is_dir() {
            return Err(StageError::MissingOverlay {
                name: name.clone(),
                path,
            }
            .into());
        }
    }
    steps.finish(step, "");

    let step = steps.start("base tree");
    let base = BaseTree::locate(&spec, &opts.cache_dir);
    let base_tree_cached = base.is_cached();
    if !base_tree_cached {
        base.create(&spec)?;
    }
    steps.finish(
        step,
        &format!(
            "{} ({})",
            base.tarball.display(),
            if base_tree_cached { "cached" } else { "new" }
        ),
    );

    let scratch = ScratchDir(opts.cache_dir.join("work").join(format!(
        "{}-{}",
        spec.name,
        std::process::id()
    )));
    let _ = fs::remove_dir_all(&scratch.0);
    let root = scratch.0.join("root");
    fs::create_dir_all(&root).map_err(io_at(&root))?;

    let step = steps.start("staging the root");
    base.extract(&root)?;
    let packages = stage::installed_packages(&root)?;
    let release = stage::kernel_release(&root)?;
    let mut overlay_files = 0;
    for name in &spec.overlays {
        overlay_files += stage::apply_overlay(&opts.overlays_dir.join(name), &root)?;
    }
    stage::install_file(
        &opts.init_binary,
        &root.join("usr/lib/keel/keel-init"),
        0o755,
    )?;
    stage::install_file(
        &opts.provision_binary,
        &root.join("usr/bin/keel-provision"),
        0o755,
    )?;
    for binary in &opts.extra_binaries {
        let name = binary
            .file_name()
            .ok_or_else(|| BuildError::BinaryMissing(binary.clone()))?;
        let target = root.join("usr/bin").join(name);
        // A Keel program that takes a packaged one's name keeps the packaged one beside it,
        // for what it hands on (Keel's etcdctl runs Debian's for every v3 command).
        if target.exists() {
            let kept = root.join(layout::PACKAGED_DIR).join(name);
            fs::create_dir_all(kept.parent().expect("a folder")).map_err(io_at(&kept))?;
            fs::rename(&target, &kept).map_err(io_at(&kept))?;
        }
        stage::install_file(binary, &target, 0o755)?;
    }
    stage::write_file(
        &root.join(layout::PROVISIONER_FILE),
        format!("{}\n", spec.provisioner.word()).as_bytes(),
        0o644,
    )?;
    let kernel = stage::take_kernel(&root, &release, &scratch.0)?;
    // systemd-boot comes from the image's own packages, so the host's version does not matter.
    let bootloader = scratch.0.join("systemd-bootx64.efi");
    let _ = fs::copy(root.join(esp::SYSTEMD_BOOT), &bootloader);
    let modules = ModuleIndex::load(&root, &release)?;
    let initramfs_modules = modules.resolve(&spec.kernel.initramfs_modules)?;
    let modules_dir = root.join("usr/lib/modules").join(&release);
    // The initramfs copies its modules before the root's are pruned.
    let mut initramfs = Initramfs::new();
    initramfs.add_file("init", init_bytes, 0o755);
    initramfs.add_modules(&modules_dir, &release, &initramfs_modules)?;
    let pruned_modules = match &spec.kernel.modules {
        Some(keep) => {
            let mut keep = modules.resolve(keep)?;
            keep.extend(initramfs_modules.iter().cloned());
            stage::prune_modules(&root, &release, &keep)?
        }
        None => 0,
    };
    stage::enable_units(&root, &spec.enable_units)?;
    stage::disable_units(&root, &spec.disable_units)?;
    stage::add_users(&root, &spec.users, spec.source_date_epoch)?;
    let pruned = stage::prune(&root, &spec.prune)?;
    stage::relocate_into_var(&root)?;
    stage::add_root_authorized_keys(&root, &opts.authorized_keys)?;
    let root_tree_bytes = stage::tree_size(&root)?;
    stage::normalise_times(&root, spec.source_date_epoch)?;
    steps.finish(
        step,
        &format!(
            "{} packages, kernel {release}, {overlay_files} overlay files, {pruned} paths and {pruned_modules} modules pruned, {} MiB",
            packages.len(),
            root_tree_bytes >> 20
        ),
    );

    let step = steps.start("initramfs");
    let initrd = scratch.0.join("initrd.img");
    let initrd_bytes = initramfs.to_gzip();
    fs::write(&initrd, &initrd_bytes).map_err(io_at(&initrd))?;
    steps.finish(
        step,
        &format!(
            "{} modules, {} KiB",
            initramfs_modules.len(),
            initrd_bytes.len() >> 10
        ),
    );

    let step = steps.start("root filesystem (ext4)");
    let rootfs_img = scratch.0.join("root.ext4");
    let rootfs_stats = rootfs::make(
        &RootfsParams {
            tree: &root,
            size_bytes: spec.disk.root_size.0,
            uuid: seed.uuid("rootfs-uuid"),
            hash_seed: seed.uuid("rootfs-hash-seed"),
            epoch: spec.source_date_epoch,
        },
        root_tree_bytes,
        &rootfs_img,
    )?;
    // The staged tree is no longer needed; free the space before the disk is written.
    let _ = fs::remove_dir_all(&root);
    steps.finish(
        step,
        &format!(
            "{} MiB used of {} MiB",
            rootfs_stats.used_bytes >> 20,
            rootfs_stats.size_bytes >> 20
        ),
    );

    let step = steps.start("dm-verity hash tree");
    let salt = seed.bytes("verity-salt");
    let data_len = spec.disk.root_size.0;
    step.bytes(data_len);
    let mut data = io::BufReader::with_capacity(
        1 << 20,
        fs::File::open(&rootfs_img).map_err(io_at(&rootfs_img))?,
    );
    let tree = verity::build(
        &mut data,
        data_len,
        &salt,
        seed.uuid("verity-uuid"),
        |pos| step.set_position(pos),
    )?;
    let verity_img = scratch.0.join("root.verity");
    fs::write(&verity_img, &tree.hash_device).map_err(io_at(&verity_img))?;
    let root_hash = hex::encode(tree.root_hash);
    steps.finish(step, &format!("roothash={root_hash}"));

    let step = steps.start("EFI system partition");
    let mut cmdline = vec![
        format!("{}={root_hash}", layout::ROOTHASH_ARG),
        // keel-init sets up verity and mounts /var itself; systemd's generators must not try.
        "systemd.verity=0".to_string(),
        "systemd.gpt_auto=0".to_string(),
    ];
    cmdline.extend(spec.kernel.cmdline.iter().cloned());
    let cmdline = cmdline.join(" ");
    let esp_img = scratch.0.join("esp.vfat");
    esp::make(
        &EspContents {
            bootloader: &bootloader,
            kernel: &kernel,
            initrd: &initrd,
            kernel_release: &release,
            cmdline: &cmdline,
        },
        spec.disk.esp_size.0,
        u32::from_le_bytes(seed.bytes("esp-volume-id")[..4].try_into().unwrap()),
        spec.source_date_epoch,
        &scratch.0,
        &esp_img,
    )?;
    steps.finish(step, "");

    let step = steps.start("disk image (GPT)");
    fs::create_dir_all(&opts.out_dir).map_err(io_at(&opts.out_dir))?;
    let (root_uuid, verity_uuid) = partuuids_from_root_hash(&tree.root_hash);
    let verity_size = round_up_mib(verity::hash_device_size(data_len));
    let part = |label: &str, type_guid, uuid, size_bytes, contents: Option<&Path>| PartitionSpec {
        label: label.to_string(),
        type_guid,
        uuid,
        size_bytes,
        contents: contents.map(Path::to_path_buf),
    };
    let parts = [
        part(
            layout::LABEL_ESP,
            layout::ESP_TYPE,
            seed.uuid("esp"),
            spec.disk.esp_size.0,
            Some(&esp_img),
        ),
        part(
            layout::LABEL_ROOT_A,
            layout::ROOT_X86_64_TYPE,
            root_uuid,
            data_len,
            Some(&rootfs_img),
        ),
        part(
            layout::LABEL_ROOT_A_VERITY,
            layout::ROOT_VERITY_X86_64_TYPE,
            verity_uuid,
            verity_size,
            Some(&verity_img),
        ),
        part(
            layout::LABEL_ROOT_B,
            layout::ROOT_X86_64_TYPE,
            seed.uuid("root-b"),
            data_len,
            None,
        ),
        part(
            layout::LABEL_ROOT_B_VERITY,
            layout::ROOT_VERITY_X86_64_TYPE,
            seed.uuid("root-b-verity"),
            verity_size,
            None,
        ),
        part(
            layout::LABEL_STATE,
            layout::VAR_TYPE,
            seed.uuid("state"),
            0,
            None,
        ),
    ];
    let raw = opts.out_dir.join(format!("{}.raw", spec.name));
    let raw_tmp = opts.out_dir.join(format!(".{}.raw.tmp", spec.name));
    let disk_guid = seed.uuid("disk");
    let placed = disk::write_disk(&raw_tmp, disk_guid, spec.disk.size.0, &parts)?;
    fs::rename(&raw_tmp, &raw).map_err(io_at(&raw))?;
    let raw_meta = fs::metadata(&raw).map_err(io_at(&raw))?;
    steps.finish(
        step,
        &format!(
            "{} ({} MiB, {} MiB allocated)",
            raw.display(),
            raw_meta.len() >> 20,
            (raw_meta.blocks() * 512) >> 20
        ),
    );

    let mut qcow2_bytes = None;
    let mut sums = format!("{}  {}.raw\n", sha256_file(&raw)?, spec.name);
    if opts.qcow2 {
        let step = steps.start("qcow2 (compressed)");
        let qcow2 = opts.out_dir.join(format!("{}.qcow2", spec.name));
        let qcow2_tmp = opts.out_dir.join(format!(".{}.qcow2.tmp", spec.name));
        tools::run(
            tools::command("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&qcow2_tmp),
        )?;
        fs::rename(&qcow2_tmp, &qcow2).map_err(io_at(&qcow2))?;
        let len = fs::metadata(&qcow2).map_err(io_at(&qcow2))?.len();
        qcow2_bytes = Some(len);
        sums.push_str(&format!("{}  {}.qcow2\n", sha256_file(&qcow2)?, spec.name));
        steps.finish(step, &format!("{} MiB", len >> 20));
    }

    let mut live_outputs = None;
    if opts.live {
        let step = steps.start("live ISO, PXE files, raw.gz");
        let outputs = live::make(&LiveInputs {
            name: &spec.name,
            kernel: &kernel,
            initrd: &initrd,
            bootloader: &bootloader,
            kernel_release: &release,
            rootfs: &rootfs_img,
            verity: &verity_img,
            raw: &raw,
            cmdline: &cmdline,
            esp_size: spec.disk.esp_size.0,
            esp_volume_id: u32::from_le_bytes(
                seed.bytes("iso-esp-volume-id")[..4].try_into().unwrap(),
            ),
            epoch: spec.source_date_epoch,
            scratch: &scratch.0,
            out_dir: &opts.out_dir,
        })?;
        for file in &outputs.files {
            sums.push_str(&format!(
                "{}  {}\n",
                sha256_file(&opts.out_dir.join(file))?,
                file.display()
            ));
        }
        steps.finish(
            step,
            &format!(
                "ISO {} MiB, root image {} MiB, raw.gz {} MiB",
                outputs.iso_bytes >> 20,
                outputs.root_image_bytes >> 20,
                outputs.raw_gz_bytes >> 20
            ),
        );
        live_outputs = Some(outputs);
    }

    let step = steps.start("manifest and checksums");
    let mut manifest = Manifest {
        name: spec.name.clone(),
        spec_sha256: seed.hex(),
        suite: spec.suite.clone(),
        source_date_epoch: spec.source_date_epoch,
        provisioner: spec.provisioner.word(),
        root_hash,
        verity_salt: hex::encode(salt),
        kernel: KernelInfo {
            package: spec.kernel.package.clone(),
            release,
            cmdline,
            initramfs_modules,
        },
        disk_guid: disk_guid.to_string(),
        partitions: placed,
        sizes: Sizes {
            raw_bytes: raw_meta.len(),
            raw_allocated_bytes: raw_meta.blocks() * 512,
            qcow2_bytes,
            iso_bytes: live_outputs.as_ref().map(|o| o.iso_bytes),
            raw_gz_bytes: live_outputs.as_ref().map(|o| o.raw_gz_bytes),
            live_root_image_bytes: live_outputs.as_ref().map(|o| o.root_image_bytes),
            root_tree_bytes,
            rootfs: rootfs_stats,
            verity_bytes: tree.hash_device.len() as u64,
            initramfs_bytes: initrd_bytes.len() as u64,
            esp_bytes: spec.disk.esp_size.0,
        },
        packages,
        build: BuildInfo {
            started_at,
            seconds: 0.0,
            base_tree_cached,
            base_tree_key: base.key.clone(),
            steps: Vec::new(),
        },
    };
    write_atomic(&opts.out_dir.join("SHA256SUMS"), sums.as_bytes())?;
    steps.finish(step, "");
    manifest.build.steps = steps.timings;
    manifest.build.seconds = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serialises");
    write_atomic(&opts.out_dir.join("manifest.json"), &json)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_elf_detection() {
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        // Test binaries are dynamically linked against glibc.
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"not an elf"));
    }
}
