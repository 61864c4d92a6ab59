//! Boots Keel images under QEMU: used by `keel vm` and by the `qemu-tests` crate.
//!
//! A [`Vm`] runs one QEMU process on a copy-on-write overlay of the image (the image itself is
//! never written), with OVMF firmware, the serial console on QEMU's stdout, and the guest's SSH
//! port forwarded to a free loopback port. Networking is user-mode with `restrict=on`, so the
//! guest cannot reach anything outside QEMU.

mod accel;
mod cli;
mod drive;
mod lan;
mod qemu;
pub mod relay;
mod serial;
mod ssh;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use accel::{Accel, PROBE_CACHE};
pub(crate) use cli::{
    catch_interrupts, default_containers, default_image, default_key, interrupted, start_registry,
};
pub use cli::{run_cli, VmArgs};
pub use drive::vfat_drive;
pub use lan::{LanCounters, LanHub, LanNic};
pub use qemu::DiskFormat;
pub use serial::{SerialLine, SerialMatch};

use serial::{SerialBuffer, WaitFailure, TAIL_LINES};

/// systemd's status line for multi-user.target; it shows only until a getty owns the console.
pub const MULTI_USER: &str = "Reached target multi-user.target";
/// What the image's keel-ready.service prints once multi-user.target is reached.
pub const KEEL_READY: &str = "keel: reached multi-user.target";
/// Either line means the guest reached multi-user.target.
pub const MULTI_USER_MARKERS: [&str; 2] = [MULTI_USER, KEEL_READY];

/// How long a guest may take from `systemctl reboot` to powering off.
const REBOOT_EXIT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `ssh()` lets one remote command run before giving up on it.
pub const DEFAULT_SSH_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{tool} not found: install the Debian package {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("image {0} does not exist (run `make image` first)")]
    ImageNotFound(PathBuf),
    #[error("SSH key {0} does not exist (run `make image`, which creates it)")]
    KeyNotFound(PathBuf),
    #[error("KEEL_ACCEL={0:?} is neither tcg nor kvm")]
    BadAccel(String),
    #[error("the registry for the machines: {0}")]
    Registry(#[from] Box<crate::registry::RegistryError>),
    #[error("guest forward command {0:?} has a comma, which QEMU's option syntax cannot hold")]
    CommaInForward(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu-img create failed ({status}): {stderr}")]
    QemuImg { status: ExitStatus, stderr: String },
    #[error("QEMU exited ({status}) while {during}\nQEMU stderr:\n{stderr}\nlast serial lines:\n{serial_tail}")]
    QemuExited {
        status: String,
        during: String,
        stderr: String,
        serial_tail: String,
    },
    #[error("timed out after {waited:?} waiting for {what}\nlast serial lines:\n{serial_tail}")]
    Timeout {
        what: String,
        waited: Duration,
        serial_tail: String,
    },
    #[error("ssh `{command}` failed ({status}): {stderr}")]
    Ssh {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },
}

impl VmError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        VmError::Io {
            context: context.into(),
            source,
        }
    }
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The qcow2 or raw image; only read, through an overlay in `work_dir`.
    pub disk: PathBuf,
    /// Holds the overlay, the firmware variables, `serial.log` and `qemu.stderr`.
    pub work_dir: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Private key for root; without one, ssh falls back to the user's own identities.
    pub ssh_key: Option<PathBuf>,
    /// Raw images attached read-only after the disk (config drives: NoCloud, config-2).
    pub extra_drives: Vec<PathBuf>,
    /// QEMU fw_cfg entries: (name, file), e.g. ("opt/org.keel/user-data", path).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// Boot this kernel directly (through the firmware) instead of the disk's boot loader,
    /// e.g. to add kernel arguments.
    pub direct_boot: Option<DirectBoot>,
    /// Guest TCP connections to these addresses reach a program on the host instead.
    pub guest_forwards: Vec<GuestForward>,
    /// More host ports forwarded to the guest, as (host port on 127.0.0.1, guest port): a
    /// service the guest runs, reached from the host's loopback only.
    pub host_forwards: Vec<(u16, u16)>,
    /// A second NIC on a private segment shared with other VMs through a [`LanHub`].
    pub lan: Option<LanNic>,
    /// An ISO in a CD drive (virtio-scsi), booted before the disk.
    pub cdrom: Option<PathBuf>,
    /// Boot over the network first: QEMU's TFTP server serves this folder and its DHCP names
    /// the boot file (run by the NIC's iPXE ROM).
    pub pxe: Option<PxeBoot>,
}

pub use qemu::{DirectBoot, GuestForward, PxeBoot};

impl VmConfig {
    pub fn new(disk: impl Into<PathBuf>, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            disk: disk.into(),
            work_dir: work_dir.into(),
            memory_mib: 1024,
            cpus: 1,
            ssh_key: None,
            extra_drives: Vec::new(),
            fw_cfg: Vec::new(),
            direct_boot: None,
            guest_forwards: Vec::new(),
            host_forwards: Vec::new(),
            lan: None,
            cdrom: None,
            pxe: None,
        }
    }
}

/// A running QEMU guest. Dropping it kills and reaps QEMU.
///
/// QEMU is started with a parent-death signal tied to the *thread* that called [`Vm::start`]
/// (so a killed test run leaves no QEMU behind); keep the `Vm` on that thread, or at least
/// keep that thread alive as long as the VM should run.
pub struct Vm {
    // Behind a mutex so the waits, which take &self, can notice that QEMU died.
    child: Mutex<Option<Child>>,
    serial: Arc<SerialBuffer>,
    reader: Option<JoinHandle<()>>,
    cursor: Mutex<usize>,
    ssh_port: u16,
    ssh_key: Option<PathBuf>,
    ssh_user: String,
    accel: Accel,
    work_dir: PathBuf,
    started: Instant,
    qemu_bin: PathBuf,
    launch: qemu::Launch,
}

impl Vm {
    pub fn start(cfg: VmConfig) -> Result<Vm, VmError> {
        let qemu_bin = qemu::require_tool(qemu::QEMU, "qemu-system-x86")?;
        let (ovmf_code, ovmf_vars_template) = qemu::require_ovmf()?;
        qemu::require_tool(qemu::QEMU_IMG, "qemu-utils")?;
        qemu::require_tool("ssh", "openssh-client")?;
        if !cfg.disk.is_file() {
            return Err(VmError::ImageNotFound(cfg.disk.clone()));
        }
        if let Some(forward) = cfg.guest_forwards.iter().find(|f| f.command.contains(',')) {
            return Err(VmError::CommaInForward(forward.command.clone()));
        }
        std::fs::create_dir_all(&cfg.work_dir)
            .map_err(|e| VmError::io(format!("creating {}", cfg.work_dir.display()), e))?;
        let work_dir = std::fs::canonicalize(&cfg.work_dir)
            .map_err(|e| VmError::io(format!("resolving {}", cfg.work_dir.display()), e))?;

        let overlay = work_dir.join("disk.qcow2");
        qemu::create_overlay(&cfg.disk, &overlay)?;
        let ovmf_vars = work_dir.join("OVMF_VARS_4M.fd");
        std::fs::copy(&ovmf_vars_template, &ovmf_vars)
            .map_err(|e| VmError::io(format!("copying {}", ovmf_vars_template.display()), e))?;
        let ssh_key = match &cfg.ssh_key {
            Some(key) => Some(ssh::private_copy_of_key(key, &work_dir)?),
            None => None,
        };
        let accel = accel::choose()?;

        // The free port is only free until QEMU binds it; a lost race shows up as QEMU
        // failing to set up the forward, and is worth a few more tries.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let launch = qemu::Launch {
                accel,
                memory_mib: cfg.memory_mib,
                cpus: cfg.cpus,
                ovmf_code: ovmf_code.clone(),
                ovmf_vars: ovmf_vars.clone(),
                overlay: overlay.clone(),
                ssh_port: qemu::free_loopback_port()?,
                extra_drives: cfg.extra_drives.clone(),
                fw_cfg: cfg.fw_cfg.clone(),
                direct_boot: cfg.direct_boot.clone(),
                guest_forwards: cfg.guest_forwards.clone(),
                host_forwards: cfg.host_forwards.clone(),
                lan: cfg.lan.clone(),
                cdrom: cfg.cdrom.clone(),
                pxe: cfg.pxe.clone(),
            };
            match Self::launch(&qemu_bin, &launch, &work_dir, ssh_key.clone()) {
                Err(VmError::QemuExited { ref stderr, .. })
                    if attempt < 4 && stderr.contains("forward") =>
                {
                    tracing::warn!(port = launch.ssh_port, "SSH port was taken; retrying");
                }
                other => return other,
            }
        }
    }

    /// Starts QEMU for `launch`, feeding its console into `serial` (appending to the serial
    /// log when `append`, as after a reboot).
    fn spawn(
        qemu_bin: &Path,
        launch: &qemu::Launch,
        work_dir: &Path,
        serial: &Arc<SerialBuffer>,
        append: bool,
    ) -> Result<(Child, JoinHandle<()>, Instant), VmError> {
        let stderr_path = work_dir.join("qemu.stderr");
        let stderr = File::create(&stderr_path)
            .map_err(|e| VmError::io(format!("creating {}", stderr_path.display()), e))?;
        let serial_path = work_dir.join("serial.log");
        let serial_log = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&serial_path)
            .map_err(|e| VmError::io(format!("creating {}", serial_path.display()), e))?;

        let mut cmd = Command::new(qemu_bin);
        cmd.args(launch.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        kill_with_parent(&mut cmd);
        tracing::info!(
            accel = %launch.accel,
            ssh_port = launch.ssh_port,
            work_dir = %work_dir.display(),
            "starting QEMU"
        );
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| VmError::io("starting qemu-system-x86_64", e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let sink = Arc::clone(serial);
        match std::thread::Builder::new()
            .name("qemu-serial".into())
            .spawn(move || serial::pump(stdout, &sink, started, Some(serial_log)))
        {
            Ok(reader) => Ok((child, reader, started)),
            Err(e) => {
                // No Vm owns the child yet, so nothing else would stop it.
                let _ = child.kill();
                let _ = child.wait();
                Err(VmError::io("starting the serial reader", e))
            }
        }
    }

    fn launch(
        qemu_bin: &Path,
        launch: &qemu::Launch,
        work_dir: &Path,
        ssh_key: Option<PathBuf>,
    ) -> Result<Vm, VmError> {
        let serial = Arc::new(SerialBuffer::new());
        let (child, reader, started) = Self::spawn(qemu_bin, launch, work_dir, &serial, false)?;
        let mut vm = Vm {
            child: Mutex::new(Some(child)),
            serial,
            reader: Some(reader),
            cursor: Mutex::new(0),
            ssh_port: launch.ssh_port,
            ssh_key,
            ssh_user: "root".into(),
            accel: launch.accel,
            work_dir: work_dir.to_path_buf(),
            started,
            qemu_bin: qemu_bin.to_path_buf(),
            launch: launch.clone(),
        };
        if let Err(err) = vm.settle("starting") {
            vm.shutdown();
            return Err(err);
        }
        Ok(vm)
    }

    /// Bad arguments, a taken port or a locked image make QEMU quit at once; catching that
    /// here gives a clear error instead of a serial wait that times out much later.
    fn settle(&self, during: &str) -> Result<(), VmError> {
        let settle = Instant::now() + Duration::from_millis(500);
        while Instant::now() < settle {
            if let Some(err) = self.exited_error(during) {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn accel(&self) -> Accel {
        self.accel
    }

    pub fn ssh_port(&self) -> u16 {
        self.ssh_port
    }

    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// The instant QEMU was spawned; serial timestamps are relative to it.
    pub fn started_at(&self) -> Instant {
        self.started
    }

    pub fn serial_log_path(&self) -> PathBuf {
        self.work_dir.join("serial.log")
    }

    /// Everything the guest printed so far, with arrival times.
    pub fn serial_lines(&self) -> Vec<SerialLine> {
        self.serial.lines()
    }

    /// The last serial lines, for messages.
    pub fn serial_tail(&self) -> String {
        self.serial.tail(TAIL_LINES)
    }

    /// Index of the first line `wait_for_line` will look at next.
    pub fn serial_cursor(&self) -> usize {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_serial_cursor(&self, index: usize) {
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = index;
    }

    /// Waits for the next line (after the previous match) that contains `needle`; returns the
    /// line and when it arrived, counted from QEMU's start. The cursor moves past the match, so
    /// waiting for the same text again finds the next occurrence (the next boot's).
    pub fn wait_for_line(
        &self,
        needle: &str,
        timeout: Duration,
    ) -> Result<(String, Duration), VmError> {
        let m = self.wait_for_any_line(&[needle], timeout)?;
        Ok((m.text, m.at))
    }

    /// Waits for the next line containing any of `needles` and moves the cursor past it, so a
    /// boot can be awaited together with its failure markers.
    pub fn wait_for_any_line(
        &self,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<SerialMatch, VmError> {
        let from = self.serial_cursor();
        let m = self.wait_for_line_from(from, needles, timeout)?;
        self.set_serial_cursor(m.index + 1);
        Ok(m)
    }

    /// Waits for a line at or after `index` containing any of `needles`, leaving the cursor
    /// alone.
    pub fn wait_for_line_from(
        &self,
        index: usize,
        needles: &[&str],
        timeout: Duration,
    ) -> Result<SerialMatch, VmError> {
        let what = || format!("a serial line containing {needles:?}");
        match self.serial.wait_for_any(index, needles, timeout) {
            Ok(m) => Ok(m),
            Err(WaitFailure::TimedOut) => Err(VmError::Timeout {
                what: what(),
                waited: timeout,
                serial_tail: self.serial_tail(),
            }),
            Err(WaitFailure::Closed) => Err(self
                .exited_error(&format!("waiting for {}", what()))
                .unwrap_or_else(|| VmError::QemuExited {
                    status: "closed its console".into(),
                    during: what(),
                    stderr: self.qemu_stderr(),
                    serial_tail: self.serial_tail(),
                })),
        }
    }

    /// Retries `ssh … true` until it succeeds.
    pub fn wait_for_ssh(&self, timeout: Duration) -> Result<(), VmError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(err) = self.exited_error("waiting for SSH") {
                return Err(err);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let last_error = match self.ssh_timeout("true", left.min(Duration::from_secs(30))) {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() + Duration::from_secs(1) >= deadline {
                return Err(VmError::Timeout {
                    what: format!(
                        "SSH on 127.0.0.1:{} (last ssh error: {last_error})",
                        self.ssh_port
                    ),
                    waited: timeout,
                    serial_tail: self.serial_tail(),
                });
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Logs in as `user` from now on (root by default), with the same key.
    pub fn set_ssh_user(&mut self, user: &str) {
        self.ssh_user = user.to_string();
    }

    /// Runs `command` in the guest as the SSH user; a non-zero exit is not an error here.
    pub fn ssh(&self, command: &str) -> Result<Output, VmError> {
        self.ssh_timeout(command, DEFAULT_SSH_TIMEOUT)
    }

    /// Like [`Vm::ssh`] with a limit on how long the command may take.
    pub fn ssh_timeout(&self, command: &str, timeout: Duration) -> Result<Output, VmError> {
        let cmd = self.ssh_command(command);
        ssh::run_with_timeout(cmd, timeout).map_err(|e| match e {
            ssh::RunError::Io(e) => VmError::io("running ssh", e),
            ssh::RunError::TimedOut => VmError::Timeout {
                what: format!("ssh `{command}` to finish"),
                waited: timeout,
                serial_tail: self.serial_tail(),
            },
        })
    }

    /// Runs `command` and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn ssh_ok(&self, command: &str) -> Result<String, VmError> {
        let out = self.ssh(command)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(VmError::Ssh {
                command: command.to_string(),
                status: out.status.to_string(),
                stdout,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// The ssh invocation for `command` (for running it, or showing it to a person).
    pub fn ssh_command(&self, command: &str) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(ssh::options(
            self.ssh_key.as_deref(),
            self.ssh_port,
            &self.ssh_user,
        ))
        .arg(command)
        .stdin(Stdio::null());
        cmd
    }

    /// A shell line a person can paste to log in.
    pub fn ssh_login_line(&self) -> String {
        ssh::login_line(self.ssh_key.as_deref(), self.ssh_port)
    }

    /// Reboots the guest: asks it to reboot, waits for QEMU to exit (it runs with
    /// `-no-reboot`), then starts QEMU again on the same disk overlay and firmware variables.
    /// A fresh process is a cold reboot of the same machine; an in-process reset under TCG
    /// left OVMF hanging now and then. Serial waits afterwards see only the new boot's lines,
    /// and line times count from the new start.
    pub fn reboot(&mut self) -> Result<(), VmError> {
        self.set_serial_cursor(self.serial.len());
        // The connection usually drops mid-command as sshd is stopped, so the outcome says
        // nothing about whether the reboot started.
        match self.ssh_timeout("systemctl reboot", Duration::from_secs(60)) {
            Ok(_) | Err(VmError::Timeout { .. }) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + REBOOT_EXIT_TIMEOUT;
        while self.is_running() {
            if Instant::now() > deadline {
                return Err(VmError::Timeout {
                    what: "the guest to go down for reboot".into(),
                    waited: REBOOT_EXIT_TIMEOUT,
                    serial_tail: self.serial_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        self.shutdown();
        self.serial.reopen();
        let (child, reader, started) = Self::spawn(
            &self.qemu_bin,
            &self.launch,
            &self.work_dir,
            &self.serial,
            true,
        )?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        self.reader = Some(reader);
        self.started = started;
        self.settle("restarting after reboot")
    }

    /// Whether QEMU is still running.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        matches!(child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kills QEMU and reaps it; safe to call twice.
    pub fn shutdown(&mut self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(reader) = self.reader.take() {
            // The reader ends at EOF, which QEMU's death guarantees.
            let _ = reader.join();
        }
    }

    fn qemu_stderr(&self) -> String {
        let text = std::fs::read_to_string(self.work_dir.join("qemu.stderr")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// If QEMU has exited, an error describing it.
    fn exited_error(&self, during: &str) -> Option<VmError> {
        let status = {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            // std keeps the status once reaped, so asking again later gives the same answer.
            child.as_mut()?.try_wait().ok()??
        };
        Some(VmError::QemuExited {
            status: status.to_string(),
            during: during.to_string(),
            stderr: self.qemu_stderr(),
            serial_tail: self.serial_tail(),
        })
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Makes the kernel kill QEMU when the spawning thread dies, so a test process that is itself
/// killed (timeout, Ctrl-C, panic=abort) cannot leave a VM running.
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
