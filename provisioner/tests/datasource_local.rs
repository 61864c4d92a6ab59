//! Local datasources: config drive and NoCloud from directories and from real vfat/iso9660
//! images (label reading, device scanning in a fake /sys tree, and — where this kernel can —
//! mounting), QEMU fw_cfg from a fake tree, the local file and `cloud-config-url=` paths.

use std::path::{Path, PathBuf};
use std::process::Command;

use provisioner::cloudconfig::model::{IpPrefix, StaticInterface};
use provisioner::datasource::cmdline::{split_args, KernelArgs, NocloudSeed};
use provisioner::datasource::config_drive::ConfigDrive;
use provisioner::datasource::labels::{find_by_label, read_label, FsKind, Labelled, ReadOnlyMount};
use provisioner::datasource::nocloud::{read_seed_dir, NoCloud};
use provisioner::datasource::{
    first_available, local_sources, Context, Datasource, DatasourceError, RetryPolicy,
};

const CLOUD_CONFIG: &str = "#cloud-config\nhostname: local\n";

fn context(cmdline: &str, root: &Path) -> Context {
    Context {
        cmdline: cmdline.to_string(),
        root: root.to_path_buf(),
        mount_dir: root.join("mnt"),
        retry: RetryPolicy::default(),
        metadata_url: None,
        user_data_file: root.join("var/lib/keel/user-data"),
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("tool runs");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn config_drive_tree(dir: &Path) {
    write(&dir.join("openstack/latest/user_data"), CLOUD_CONFIG);
    write(
        &dir.join("openstack/latest/meta_data.json"),
        r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "drive-host",
            "name": "drive", "public_keys": {"b": "ssh-rsa BBBB b", "a": "ssh-ed25519 AAAA a"}}"#,
    );
    write(
        &dir.join("ec2/latest/meta-data.json"),
        r#"{"local-ipv4": "10.1.2.3", "public-ipv4": "198.51.100.9"}"#,
    );
}

fn nocloud_tree(dir: &Path) {
    write(&dir.join("user-data"), CLOUD_CONFIG);
    write(
        &dir.join("meta-data"),
        "instance-id: iid-local01\nlocal-hostname: cloudimg\npublic-keys:\n  - ssh-ed25519 AAAA k\n",
    );
    write(&dir.join("network-config"), "version: 2\n");
}

fn vfat_image(path: &Path, label: &str, fat32: bool) {
    let size_kib = if fat32 { "34000" } else { "2048" };
    let mut command = Command::new("mkfs.vfat");
    if fat32 {
        command.args(["-F", "32"]);
    }
    command.args(["-n", label, "-C"]).arg(path).arg(size_kib);
    run(&mut command);
}

fn iso_image(path: &Path, label: &str, contents: &Path) {
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-J", "-r", "-V", label, "-o"])
        .arg(path)
        .arg(contents));
}

#[test]
fn config_drive_from_directory() {
    let dir = tempfile::tempdir().unwrap();
    config_drive_tree(dir.path());
    let drive = ConfigDrive::from_dir(dir.path());
    assert!(drive.available());
    let fetched = drive.fetch().unwrap();
    assert_eq!(
        fetched.source,
        format!("config-drive:{}", dir.path().display())
    );
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    let meta = fetched.metadata;
    assert_eq!(meta.hostname.as_deref(), Some("drive-host"));
    assert_eq!(
        meta.instance_id.as_deref(),
        Some("83679162-1378-4288-a2d4-70e13ec132aa")
    );
    assert_eq!(
        meta.ssh_public_keys,
        vec!["ssh-ed25519 AAAA a", "ssh-rsa BBBB b"]
    );
    assert_eq!(meta.private_ipv4, Some("10.1.2.3".parse().unwrap()));
    assert_eq!(meta.public_ipv4, Some("198.51.100.9".parse().unwrap()));
}

#[test]
fn config_drive_with_bad_json_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("openstack/latest/meta_data.json"),
        "{not json",
    );
    let error = ConfigDrive::from_dir(dir.path()).fetch().unwrap_err();
    assert!(matches!(error, DatasourceError::Json { .. }), "{error}");
    assert!(error.to_string().contains("meta_data.json"), "{error}");
}

const NETWORK_DATA: &str = r#"{
    "links": [
        {"id": "tap-static", "type": "phy", "ethernet_mac_address": "FA:16:3E:9C:BF:3D", "mtu": 1500},
        {"id": "tap-dhcp", "type": "ovs", "ethernet_mac_address": "fa:16:3e:d4:57:ad"}
    ],
    "networks": [
        {"id": "network0", "type": "ipv4", "link": "tap-static", "ip_address": "10.77.0.11",
         "netmask": "255.255.255.0",
         "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.77.0.1"}]},
        {"id": "network1", "type": "ipv4_dhcp", "link": "tap-dhcp"},
        {"id": "network2", "type": "ipv4", "link": "tap-gone", "ip_address": "10.99.0.5",
         "netmask": "255.255.255.0"}
    ],
    "services": [{"type": "dns", "address": "10.77.0.2"}]
}"#;

#[test]
fn config_drive_reads_network_data() {
    let dir = tempfile::tempdir().unwrap();
    config_drive_tree(dir.path());
    write(
        &dir.path().join("openstack/latest/network_data.json"),
        NETWORK_DATA,
    );
    let meta = ConfigDrive::from_dir(dir.path()).fetch().unwrap().metadata;
    // The rest of the drive is read as before.
    assert_eq!(meta.hostname.as_deref(), Some("drive-host"));
    assert_eq!(
        meta.interfaces,
        vec![StaticInterface {
            mac: "fa:16:3e:9c:bf:3d".into(),
            addresses: vec![IpPrefix {
                address: "10.77.0.11".parse().unwrap(),
                prefix_len: 24,
            }],
            gateways: vec!["10.77.0.1".parse().unwrap()],
            dns: vec!["10.77.0.2".parse().unwrap()],
        }]
    );

    // Without network_data.json there is nothing to configure statically.
    let plain = tempfile::tempdir().unwrap();
    config_drive_tree(plain.path());
    let meta = ConfigDrive::from_dir(plain.path())
        .fetch()
        .unwrap()
        .metadata;
    assert!(meta.interfaces.is_empty());
}

#[test]
fn config_drive_with_bad_network_data_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    config_drive_tree(dir.path());
    write(
        &dir.path().join("openstack/latest/network_data.json"),
        r#"{"links": ["#,
    );
    let error = ConfigDrive::from_dir(dir.path()).fetch().unwrap_err();
    assert!(matches!(error, DatasourceError::Json { .. }), "{error}");
    assert!(error.to_string().contains("network_data.json"), "{error}");
}

#[test]
fn nocloud_from_directory() {
    let dir = tempfile::tempdir().unwrap();
    nocloud_tree(dir.path());
    let fetched = NoCloud::from_dir(dir.path()).fetch().unwrap();
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    assert_eq!(fetched.metadata.instance_id.as_deref(), Some("iid-local01"));
    assert_eq!(fetched.metadata.hostname.as_deref(), Some("cloudimg"));
    assert_eq!(fetched.metadata.ssh_public_keys, vec!["ssh-ed25519 AAAA k"]);
}

#[test]
fn nocloud_seed_directory_from_kernel_command_line() {
    let root = tempfile::tempdir().unwrap();
    let seed = root.path().join("seed");
    nocloud_tree(&seed);
    let ctx = context(
        &format!("ds=nocloud;s=file://{}/;i=iid-cmdline", seed.display()),
        root.path(),
    );
    let fetched = first_available(&local_sources(&ctx)).unwrap().unwrap();
    assert!(fetched.source.starts_with("nocloud:"), "{}", fetched.source);
    assert_eq!(fetched.metadata.instance_id.as_deref(), Some("iid-cmdline"));
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
}

#[test]
fn label_of_fat12_fat32_and_iso9660_images() {
    let dir = tempfile::tempdir().unwrap();
    let fat12 = dir.path().join("fat12.img");
    vfat_image(&fat12, "cidata", false);
    assert_eq!(
        read_label(&fat12).unwrap(),
        Some(Labelled {
            kind: FsKind::Vfat,
            label: "cidata".to_string()
        })
    );

    let fat32 = dir.path().join("fat32.img");
    vfat_image(&fat32, "CONFIG-2", true);
    assert_eq!(
        read_label(&fat32).unwrap(),
        Some(Labelled {
            kind: FsKind::Vfat,
            label: "CONFIG-2".to_string()
        })
    );

    let contents = dir.path().join("contents");
    config_drive_tree(&contents);
    let iso = dir.path().join("config.iso");
    iso_image(&iso, "config-2", &contents);
    assert_eq!(
        read_label(&iso).unwrap(),
        Some(Labelled {
            kind: FsKind::Iso9660,
            label: "config-2".to_string()
        })
    );

    let unlabelled = dir.path().join("plain.img");
    run(Command::new("mkfs.vfat")
        .arg("-C")
        .arg(&unlabelled)
        .arg("2048"));
    assert_eq!(read_label(&unlabelled).unwrap(), None);

    let garbage = dir.path().join("garbage.img");
    std::fs::write(&garbage, vec![0x5a; 70_000]).unwrap();
    assert_eq!(read_label(&garbage).unwrap(), None);
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, b"short").unwrap();
    assert_eq!(read_label(&tiny).unwrap(), None);
}

/// A fake system root: /sys/class/block entries and /dev "nodes" that are image files.
fn fake_block_devices(root: &Path, devices: &[(&str, Option<&Path>, &str)]) {
    for (name, image, size) in devices {
        write(&root.join("sys/class/block").join(name).join("size"), size);
        let node = root.join("dev").join(name);
        std::fs::create_dir_all(node.parent().unwrap()).unwrap();
        match image {
            Some(image) => {
                std::fs::copy(image, &node).unwrap();
            }
            None => write(&node, ""),
        }
    }
}

#[test]
fn finds_devices_by_label_in_a_fake_sys_tree() {
    let images = tempfile::tempdir().unwrap();
    let cidata = images.path().join("cidata.img");
    vfat_image(&cidata, "CIDATA", false);
    let contents = images.path().join("contents");
    config_drive_tree(&contents);
    let config2 = images.path().join("config2.iso");
    iso_image(&config2, "config-2", &contents);
    let other = images.path().join("other.img");
    vfat_image(&other, "EFI", false);

    let root = tempfile::tempdir().unwrap();
    fake_block_devices(
        root.path(),
        &[
            ("vda", Some(&other), "4096"),
            ("vdb", Some(&cidata), "4096"),
            ("sr0", Some(&config2), "1000"),
            // Reported empty: never opened.
            ("loop0", Some(&cidata), "0"),
            // Floppies are never probed (an empty drive stalls for seconds).
            ("fd0", Some(&cidata), "2880"),
        ],
    );
    let found = find_by_label(root.path(), &["cidata"]).unwrap();
    assert_eq!(found.path, root.path().join("dev/vdb"));
    assert_eq!(found.filesystem.kind, FsKind::Vfat);
    let found = find_by_label(root.path(), &["config-2"]).unwrap();
    assert_eq!(found.path, root.path().join("dev/sr0"));
    assert_eq!(found.filesystem.kind, FsKind::Iso9660);
    assert_eq!(find_by_label(root.path(), &["missing"]), None);

    let ctx = context("", root.path());
    assert!(NoCloud::new(&ctx).available());
    assert!(ConfigDrive::new(&ctx).available());
    // The local stage tries the config drive before NoCloud.
    let sources = local_sources(&ctx);
    let first = sources.iter().find(|s| s.available()).unwrap();
    assert_eq!(first.name(), "config-drive");
}

#[test]
fn labelled_image_that_cannot_be_mounted_reports_the_device() {
    // /dev/vdb here is a regular file: mount(2) refuses it, and the error says what and where.
    let images = tempfile::tempdir().unwrap();
    let cidata = images.path().join("cidata.img");
    vfat_image(&cidata, "cidata", false);
    let root = tempfile::tempdir().unwrap();
    fake_block_devices(root.path(), &[("vdb", Some(&cidata), "4096")]);
    let ctx = context("", root.path());
    let error = NoCloud::new(&ctx).fetch().unwrap_err();
    let DatasourceError::Mount { device, fstype, .. } = &error else {
        panic!("expected a mount error, got {error}");
    };
    assert_eq!(device, &root.path().join("dev/vdb"));
    assert_eq!(*fstype, "vfat");
    assert!(
        error.to_string().starts_with("nocloud: cannot mount"),
        "{error}"
    );
}

#[test]
fn no_local_source_on_an_empty_system() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("console=ttyS0", root.path());
    let start = std::time::Instant::now();
    assert!(first_available(&local_sources(&ctx)).is_none());
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    let error = NoCloud::new(&ctx).fetch().unwrap_err();
    assert!(
        matches!(error, DatasourceError::NoFilesystem { .. }),
        "{error}"
    );
}

#[test]
fn fw_cfg_from_a_fake_tree() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("", root.path());
    assert!(first_available(&local_sources(&ctx)).is_none());
    write(
        &root
            .path()
            .join("sys/firmware/qemu_fw_cfg/by_name/opt/org.keel/user-data/raw"),
        CLOUD_CONFIG,
    );
    let fetched = first_available(&local_sources(&ctx)).unwrap().unwrap();
    assert_eq!(fetched.source, "fw-cfg:opt/org.keel/user-data");
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
}

#[test]
fn local_file_is_the_last_resort() {
    let root = tempfile::tempdir().unwrap();
    let ctx = context("", root.path());
    write(&ctx.user_data_file, CLOUD_CONFIG);
    let fetched = first_available(&local_sources(&ctx)).unwrap().unwrap();
    assert_eq!(
        fetched.source,
        format!("file:{}", ctx.user_data_file.display())
    );
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
}

#[test]
fn cloud_config_url_file_is_read_locally_first() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("boot config.yml");
    write(&config, CLOUD_CONFIG);
    // Also present: fw_cfg, which comes later in the order.
    write(
        &root
            .path()
            .join("sys/firmware/qemu_fw_cfg/by_name/opt/org.keel/user-data/raw"),
        "#cloud-config\n",
    );
    for arg in [
        format!("\"cloud-config-url=file://{}\"", config.display()),
        format!("cloud-config-url='{}'", config.display()),
    ] {
        let ctx = context(&format!("quiet {arg} console=ttyS0"), root.path());
        let fetched = first_available(&local_sources(&ctx)).unwrap().unwrap();
        assert_eq!(fetched.source, format!("cmdline:{}", config.display()));
        assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    }
    // An http URL is for the network stage: the local stage skips it.
    let ctx = context("cloud-config-url=http://127.0.0.1:9/x", root.path());
    let fetched = first_available(&local_sources(&ctx)).unwrap().unwrap();
    assert_eq!(fetched.source, "fw-cfg:opt/org.keel/user-data");
}

#[test]
fn kernel_arguments() {
    let args = KernelArgs::parse(
        "BOOT_IMAGE=/vmlinuz root=LABEL=x ds=\"nocloud-net;s=http://10.0.2.2:8000/;h=node1\" \
         cloud-config-url=/a keel.metadata_url=http://127.0.0.1:1 cloud-config-url=\"/b c\" \
         keel.datasource=ec2 quiet",
    );
    assert_eq!(args.cloud_config_url.as_deref(), Some("/b c"));
    assert_eq!(args.metadata_url.as_deref(), Some("http://127.0.0.1:1"));
    assert_eq!(args.datasource.as_deref(), Some("ec2"));
    assert_eq!(
        args.nocloud,
        Some(NocloudSeed {
            kind: "nocloud-net".to_string(),
            seed: Some("http://10.0.2.2:8000/".to_string()),
            hostname: Some("node1".to_string()),
            instance_id: None,
        })
    );
    assert_eq!(KernelArgs::parse("ds=openstack").nocloud, None);
    assert_eq!(
        split_args("  a=\"1 2\"\tb  "),
        vec![
            ("a".to_string(), Some("1 2".to_string())),
            ("b".to_string(), None)
        ]
    );
}

/// Mounting needs root, a loop device and the filesystem in the running kernel. The tests that
/// mount are ignored by default (this project's CI kernel has neither vfat nor iso9660;
/// qemu-tests/tests/provision.rs mounts a real NoCloud drive in the guest); run with --ignored
/// on a host that can, and they fail loudly where it cannot.
fn require_loop_mount(fstype: &str) {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let supported = filesystems
        .lines()
        .any(|line| line.split_whitespace().last() == Some(fstype));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let losetup = Command::new("losetup").arg("-f").output();
    let loop_free = losetup.is_ok_and(|output| output.status.success());
    assert!(
        supported && root && loop_free,
        "cannot loop-mount {fstype} here (kernel support {supported}, root {root}, free loop device {loop_free})"
    );
}

struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(image: &Path) -> LoopDevice {
        let output = Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(image)
            .output()
            .unwrap();
        assert!(output.status.success());
        LoopDevice(PathBuf::from(
            String::from_utf8(output.stdout).unwrap().trim(),
        ))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs iso9660 and loop devices in the host kernel; the VM test mounts a real drive"]
fn mounts_an_iso_config_drive_when_the_kernel_can() {
    require_loop_mount("iso9660");
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("contents");
    nocloud_tree(&contents);
    let iso = dir.path().join("cidata.iso");
    iso_image(&iso, "cidata", &contents);
    let device = LoopDevice::attach(&iso);
    let target = dir.path().join("mnt");
    let mount = ReadOnlyMount::new("nocloud", &device.0, &target, FsKind::Iso9660).unwrap();
    let (user_data, metadata) = read_seed_dir(mount.path()).unwrap();
    assert_eq!(user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    assert_eq!(metadata.instance_id.as_deref(), Some("iid-local01"));
    drop(mount);
    assert!(!target.join("user-data").exists(), "unmounted on drop");
}

#[test]
#[ignore = "needs vfat and loop devices in the host kernel; the VM test mounts a real drive"]
fn mounts_a_vfat_nocloud_drive_when_the_kernel_can() {
    require_loop_mount("vfat");
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("cidata.img");
    vfat_image(&image, "cidata", false);
    let contents = dir.path().join("contents");
    nocloud_tree(&contents);
    for name in ["user-data", "meta-data"] {
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&image)
            .arg(contents.join(name))
            .arg(format!("::{name}")));
    }
    let device = LoopDevice::attach(&image);
    let target = dir.path().join("mnt");
    let mount = ReadOnlyMount::new("nocloud", &device.0, &target, FsKind::Vfat).unwrap();
    let (user_data, _) = read_seed_dir(mount.path()).unwrap();
    assert_eq!(user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
}
