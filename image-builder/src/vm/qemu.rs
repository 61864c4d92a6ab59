//! Host tools, firmware, disk overlays and the QEMU command line.

use std::ffi::OsString;
use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::accel::Accel;
use super::lan::LanNic;
use super::VmError;

pub const QEMU: &str = "qemu-system-x86_64";
pub const QEMU_IMG: &str = "qemu-img";
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Finds `tool` on PATH, or says which Debian package provides it.
pub fn require_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, VmError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
        .ok_or(VmError::MissingTool { tool, package })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The OVMF firmware code and the variable-store template.
pub fn require_ovmf() -> Result<(PathBuf, PathBuf), VmError> {
    for file in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(file).is_file() {
            return Err(VmError::MissingTool {
                tool: file,
                package: "ovmf",
            });
        }
    }
    Ok((OVMF_CODE.into(), OVMF_VARS.into()))
}

pub fn pflash_code_arg(code: &Path) -> OsString {
    let mut arg = OsString::from("if=pflash,format=raw,readonly=on,file=");
    arg.push(code);
    arg
}

pub fn pflash_vars_arg(vars: &Path) -> OsString {
    let mut arg = OsString::from("if=pflash,format=raw,file=");
    arg.push(vars);
    arg
}

/// A loopback port nobody listens on right now. The listener is dropped before QEMU binds the
/// port, so another process could take it in between; `Vm::start` retries with a fresh port
/// when QEMU cannot set up the forward.
pub fn free_loopback_port() -> Result<u16, VmError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| VmError::io("binding a loopback port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| VmError::io("reading the bound port", e))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    /// By content, not by file name: qcow2 files start with "QFI\xfb".
    pub fn detect(path: &Path) -> Result<Self, VmError> {
        let mut magic = [0u8; 4];
        let mut file = std::fs::File::open(path)
            .map_err(|e| VmError::io(format!("opening {}", path.display()), e))?;
        let n = file
            .read(&mut magic)
            .map_err(|e| VmError::io(format!("reading {}", path.display()), e))?;
        Ok(if n == 4 && &magic == b"QFI\xfb" {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        })
    }
}

/// Creates a qcow2 overlay on top of `base` so the guest's writes never reach the base image.
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<(), VmError> {
    let qemu_img = require_tool(QEMU_IMG, "qemu-utils")?;
    // qemu-img records the backing path as given and resolves relative ones against the
    // overlay's directory, so only an absolute path means the same file later.
    let base = std::fs::canonicalize(base)
        .map_err(|e| VmError::io(format!("resolving {}", base.display()), e))?;
    let format = DiskFormat::detect(&base)?;
    if overlay.exists() {
        std::fs::remove_file(overlay)
            .map_err(|e| VmError::io(format!("removing old {}", overlay.display()), e))?;
    }
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(&base)
        .args(["-F", format.as_str()])
        .arg(overlay)
        .output()
        .map_err(|e| VmError::io("running qemu-img", e))?;
    if !out.status.success() {
        return Err(VmError::QemuImg {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Everything the QEMU command line depends on.
#[derive(Debug, Clone)]
pub struct Launch {
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
    pub overlay: PathBuf,
    pub ssh_port: u16,
    pub extra_drives: Vec<PathBuf>,
    pub fw_cfg: Vec<(String, PathBuf)>,
    pub direct_boot: Option<DirectBoot>,
    pub guest_forwards: Vec<GuestForward>,
    pub host_forwards: Vec<(u16, u16)>,
    pub lan: Option<LanNic>,
    pub cdrom: Option<PathBuf>,
    pub pxe: Option<PxeBoot>,
}

/// A network boot from QEMU's own TFTP server (inside the user network: `restrict=on` holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeBoot {
    /// The folder the TFTP server serves.
    pub tftp_dir: PathBuf,
    /// The file QEMU's DHCP names as the boot file: an iPXE script, which the NIC's iPXE ROM
    /// runs.
    pub bootfile: String,
}

/// A kernel, its initramfs and its command line, loaded by QEMU and started by the firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// A TCP address on QEMU's user network (inside 10.0.2.0/24) served by a host program: QEMU
/// starts `command` for each guest connection with the connection on its stdin and stdout
/// (QEMU's `guestfwd=...-cmd:`). Nothing leaves QEMU, so `restrict=on` still holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestForward {
    pub guest_addr: std::net::SocketAddrV4,
    /// Split into words by QEMU (shell quoting rules, no shell): no commas.
    pub command: String,
}

impl Launch {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |a: &str| args.push(a.into());
        push("-machine");
        push("q35");
        push("-accel");
        push(self.accel.as_str());
        if self.accel == Accel::Tcg {
            // TCG's default CPU model lacks features the Debian kernel and systemd probe for;
            // "max" gives everything TCG can emulate except 5-level paging: once Linux has
            // enabled LA57, OVMF hangs silently after the guest reboots (QEMU 7.2, edk2 from
            // bookworm), and the tests reboot.
            push("-cpu");
            push("max,la57=off");
        }
        push("-m");
        push(&self.memory_mib.to_string());
        push("-smp");
        push(&self.cpus.to_string());
        // A guest reboot ends the process; Vm::reboot starts a fresh one on the same disk.
        for a in [
            "-no-reboot",
            "-display",
            "none",
            "-nodefaults",
            "-serial",
            "stdio",
        ] {
            push(a);
        }
        push("-monitor");
        push("none");
        // restrict=on isolates the guest from every network but QEMU's own: the hostfwd
        // below still reaches the guest's sshd, but the guest can never send traffic out.
        let mut netdev = format!(
            "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22",
            self.ssh_port
        );
        if let Some(pxe) = &self.pxe {
            netdev.push_str(&format!(
                ",tftp={},bootfile={}",
                pxe.tftp_dir.display(),
                pxe.bootfile
            ));
        }
        for (host, guest) in &self.host_forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        for forward in &self.guest_forwards {
            // Vm::start refuses commands with a comma, where QEMU would split the option.
            netdev.push_str(&format!(
                ",guestfwd=tcp:{}-cmd:{}",
                forward.guest_addr, forward.command
            ));
        }
        args.push("-drive".into());
        args.push(pflash_code_arg(&self.ovmf_code));
        args.push("-drive".into());
        args.push(pflash_vars_arg(&self.ovmf_vars));
        args.push("-drive".into());
        let mut disk = OsString::from("file=");
        disk.push(&self.overlay);
        disk.push(",format=qcow2,if=virtio");
        args.push(disk);
        for drive in &self.extra_drives {
            let mut d = OsString::from("file=");
            d.push(drive);
            d.push(",format=raw,if=virtio,readonly=on");
            args.push("-drive".into());
            args.push(d);
        }
        for (name, file) in &self.fw_cfg {
            let mut f = OsString::from(format!("name={name},file="));
            f.push(file);
            args.push("-fw_cfg".into());
            args.push(f);
        }
        if let Some(boot) = &self.direct_boot {
            args.push("-kernel".into());
            args.push(boot.kernel.clone().into());
            args.push("-initrd".into());
            args.push(boot.initrd.clone().into());
            args.push("-append".into());
            args.push(boot.cmdline.clone().into());
        }
        if let Some(iso) = &self.cdrom {
            let mut cd = OsString::from("file=");
            cd.push(iso);
            cd.push(",format=raw,if=none,id=cd0,media=cdrom,readonly=on");
            for a in ["-device", "virtio-scsi-pci,id=scsi0", "-drive"] {
                args.push(a.into());
            }
            args.push(cd);
            args.push("-device".into());
            args.push("scsi-cd,drive=cd0,bus=scsi0.0,bootindex=0".into());
        }
        args.push("-netdev".into());
        args.push(netdev.into());
        args.push("-device".into());
        args.push(if self.pxe.is_some() {
            // QEMU's iPXE ROM, first in the boot order: it runs the TFTP boot file.
            "virtio-net-pci,netdev=net0,bootindex=0".into()
        } else {
            // No option ROM: the firmware then has no iPXE to try, which only costs boot time.
            "virtio-net-pci,netdev=net0,romfile=".into()
        });
        if let Some(lan) = &self.lan {
            // A UDP socket on loopback to the hub: the segment's only other ends are QEMUs.
            args.push("-netdev".into());
            args.push(
                format!(
                    "socket,id=lan0,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                    lan.hub_port, lan.local_port
                )
                .into(),
            );
            args.push("-device".into());
            args.push(format!("virtio-net-pci,netdev=lan0,mac={},romfile=", lan.mac).into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(accel: Accel) -> Launch {
        Launch {
            accel,
            memory_mib: 1024,
            cpus: 2,
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: "/w/OVMF_VARS_4M.fd".into(),
            overlay: "/w/disk.qcow2".into(),
            ssh_port: 40222,
            extra_drives: vec!["/w/cidata.img".into()],
            fw_cfg: vec![("opt/org.keel/user-data".into(), "/w/user-data".into())],
            direct_boot: None,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
            lan: None,
            cdrom: None,
            pxe: None,
        }
    }

    #[test]
    fn the_cluster_nic_talks_only_to_the_hub_on_loopback() {
        let mut l = launch(Accel::Tcg);
        l.lan = Some(LanNic {
            mac: "52:54:00:4b:00:01".into(),
            local_port: 40001,
            hub_port: 40000,
        });
        let args = strings(&l);
        assert_eq!(
            value_after(&args, "-netdev"),
            vec![
                "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40222-:22",
                "socket,id=lan0,udp=127.0.0.1:40000,localaddr=127.0.0.1:40001",
            ]
        );
        assert_eq!(
            value_after(&args, "-device"),
            vec![
                "virtio-net-pci,netdev=net0,romfile=",
                "virtio-net-pci,netdev=lan0,mac=52:54:00:4b:00:01,romfile=",
            ]
        );
    }

    #[test]
    fn guest_forwards_stay_on_the_restricted_netdev_and_direct_boot_adds_kernel_args() {
        let mut l = launch(Accel::Tcg);
        l.guest_forwards.push(GuestForward {
            guest_addr: "10.0.2.100:80".parse().unwrap(),
            command: "/bin/imds /w/imds".into(),
        });
        l.host_forwards.push((48080, 80));
        l.direct_boot = Some(DirectBoot {
            kernel: "/w/vmlinuz".into(),
            initrd: "/w/initrd.img".into(),
            cmdline: "roothash=ab console=ttyS0".into(),
        });
        let args = strings(&l);
        assert_eq!(
            value_after(&args, "-netdev"),
            vec!["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40222-:22,hostfwd=tcp:127.0.0.1:48080-:80,guestfwd=tcp:10.0.2.100:80-cmd:/bin/imds /w/imds"]
        );
        assert_eq!(value_after(&args, "-kernel"), vec!["/w/vmlinuz"]);
        assert_eq!(value_after(&args, "-initrd"), vec!["/w/initrd.img"]);
        assert_eq!(
            value_after(&args, "-append"),
            vec!["roothash=ab console=ttyS0"]
        );
    }

    fn strings(l: &Launch) -> Vec<String> {
        l.args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn every_netdev_is_restricted_user_mode_with_loopback_forward() {
        let args = strings(&launch(Accel::Tcg));
        let netdevs = value_after(&args, "-netdev");
        assert_eq!(
            netdevs,
            vec!["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:40222-:22"]
        );
        assert!(!args.iter().any(|a| a == "-net" || a == "-nic"));
    }

    #[test]
    fn tcg_gets_cpu_max_and_kvm_does_not() {
        let tcg = strings(&launch(Accel::Tcg));
        assert_eq!(value_after(&tcg, "-accel"), vec!["tcg"]);
        assert_eq!(value_after(&tcg, "-cpu"), vec!["max,la57=off"]);
        let kvm = strings(&launch(Accel::Kvm));
        assert_eq!(value_after(&kvm, "-accel"), vec!["kvm"]);
        assert!(value_after(&kvm, "-cpu").is_empty());
    }

    #[test]
    fn drives_are_readonly_firmware_vars_copy_and_overlay() {
        let args = strings(&launch(Accel::Tcg));
        assert_eq!(
            value_after(&args, "-drive"),
            vec![
                "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                "if=pflash,format=raw,file=/w/OVMF_VARS_4M.fd",
                "file=/w/disk.qcow2,format=qcow2,if=virtio",
                "file=/w/cidata.img,format=raw,if=virtio,readonly=on",
            ]
        );
        assert_eq!(
            value_after(&args, "-fw_cfg"),
            vec!["name=opt/org.keel/user-data,file=/w/user-data"]
        );
        assert_eq!(value_after(&args, "-m"), vec!["1024"]);
        assert_eq!(value_after(&args, "-smp"), vec!["2"]);
        assert_eq!(value_after(&args, "-serial"), vec!["stdio"]);
    }

    #[test]
    fn free_ports_are_nonzero_and_bindable() {
        // Another test may take the port between the two binds (the very race Vm::start
        // retries on), so one success in a few tries is what "free" means here.
        let bindable = (0..5).any(|_| {
            let port = free_loopback_port().unwrap();
            assert_ne!(port, 0);
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
        assert!(
            bindable,
            "no port from free_loopback_port could be bound again"
        );
    }

    #[test]
    fn disk_format_is_detected_by_magic() {
        let dir = std::env::temp_dir().join(format!("keel-fmt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let q = dir.join("a.img");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03rest").unwrap();
        assert_eq!(DiskFormat::detect(&q).unwrap(), DiskFormat::Qcow2);
        let r = dir.join("b.qcow2");
        std::fs::write(&r, [0u8; 512]).unwrap();
        assert_eq!(DiskFormat::detect(&r).unwrap(), DiskFormat::Raw);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_tools_name_their_debian_package() {
        let err = require_tool("keel-no-such-tool", "some-package").unwrap_err();
        assert!(err.to_string().contains("some-package"), "{err}");
    }
}
