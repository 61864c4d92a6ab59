//! `keel vm`: boot an image for a person to look at or log into.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Vm, VmConfig, VmError};

/// Where `make image` leaves the test key whose public half is authorised for root.
pub const DEFAULT_TEST_KEY: &str = "/var/cache/keel/test-key/id_ed25519";

#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Image to boot (qcow2 or raw); never modified. Default: $KEEL_OUT/keel.qcow2 or
    /// out/keel.qcow2.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Private SSH key for root. Default: $KEEL_TEST_KEY or the key `make image` created.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// Print what the booted system looks like, then shut it down.
    #[arg(long)]
    pub show: bool,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Keep the overlay, serial.log and firmware variables here instead of a temporary
    /// directory that is removed afterwards.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seconds to wait for the guest to answer on SSH.
    #[arg(long, default_value_t = 600)]
    pub boot_timeout: u64,
    /// Built container images (`keel container build`'s output) to serve from a registry on
    /// the host's loopback, which the machine reaches as registry.keel.internal:5000.
    /// Default: $KEEL_OUT/containers or out/containers.
    #[arg(long)]
    pub containers: Option<PathBuf>,
    /// Start no registry.
    #[arg(long)]
    pub no_registry: bool,
}

pub(crate) fn default_image() -> PathBuf {
    std::env::var_os("KEEL_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("out"))
        .join("keel.qcow2")
}

pub(crate) fn default_containers() -> PathBuf {
    std::env::var_os("KEEL_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("out"))
        .join("containers")
}

/// Starts the registry the machines pull from, in `dir`, with the images built into
/// `containers`, and returns it with the guest forward that reaches it (`keel relay`).
pub(crate) fn start_registry(
    dir: &std::path::Path,
    containers: &std::path::Path,
) -> Result<(crate::registry::Registry, super::GuestForward), VmError> {
    let registry = crate::registry::Registry::start(dir).map_err(Box::new)?;
    let pushed = registry.push_all(containers).map_err(Box::new)?;
    let keel = std::env::current_exe().map_err(|source| VmError::Io {
        context: "finding the keel binary for the registry's relay".into(),
        source,
    })?;
    let forward = registry.guest_forward(&format!("{} relay", keel.display()));
    println!(
        "registry: {} on the host, {}:5000 in the machines; images: {}",
        registry.url(),
        crate::registry::GUEST_NAME,
        if pushed.is_empty() {
            format!(
                "none yet (build some: keel container build; looked in {})",
                containers.display()
            )
        } else {
            pushed.join(", ")
        }
    );
    Ok((registry, forward))
}

pub(crate) fn default_key() -> Option<PathBuf> {
    if let Some(key) = std::env::var_os("KEEL_TEST_KEY") {
        return Some(key.into());
    }
    let key = PathBuf::from(DEFAULT_TEST_KEY);
    key.is_file().then_some(key)
}

/// A work directory that is removed on the way out, unless the user named it.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM arrived since [`catch_interrupts`].
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM only set a flag, so the main loop can kill QEMU and clean up rather
/// than dying with the VM still running.
pub(crate) fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn run_cli(args: &VmArgs) -> Result<(), VmError> {
    let image = args.image.clone().unwrap_or_else(default_image);
    let work = match &args.work_dir {
        Some(dir) => WorkDir {
            path: dir.clone(),
            remove: false,
        },
        None => WorkDir {
            path: std::env::temp_dir().join(format!("keel-vm-{}", std::process::id())),
            remove: true,
        },
    };
    let mut cfg = VmConfig::new(&image, &work.path);
    cfg.memory_mib = args.memory;
    cfg.cpus = args.cpus;
    cfg.ssh_key = args.ssh_key.clone().or_else(default_key);
    std::fs::create_dir_all(&work.path).map_err(|source| VmError::Io {
        context: format!("creating {}", work.path.display()),
        source,
    })?;
    // Lives as long as the VM: dropped (stopped) when this function returns.
    let _registry = if args.no_registry {
        None
    } else {
        let containers = args.containers.clone().unwrap_or_else(default_containers);
        let (registry, forward) = start_registry(&work.path.join("registry"), &containers)?;
        cfg.guest_forwards.push(forward);
        Some(registry)
    };

    catch_interrupts();
    let mut vm = Vm::start(cfg)?;
    println!(
        "booting {} under QEMU ({}); console: {}",
        image.display(),
        vm.accel(),
        vm.serial_log_path().display()
    );
    // In short rounds, so that Ctrl-C during a slow TCG boot is noticed promptly.
    let deadline = std::time::Instant::now() + Duration::from_secs(args.boot_timeout);
    loop {
        let interrupted = INTERRUPTED.load(Ordering::SeqCst);
        match vm.wait_for_ssh(Duration::from_secs(5)) {
            _ if interrupted => {
                println!("interrupted; stopping the VM");
                vm.shutdown();
                return Ok(());
            }
            Ok(()) => break,
            Err(VmError::Timeout { .. }) if std::time::Instant::now() < deadline => {}
            Err(VmError::Timeout { serial_tail, .. }) => {
                return Err(VmError::Timeout {
                    what: format!("SSH on 127.0.0.1:{}", vm.ssh_port()),
                    waited: Duration::from_secs(args.boot_timeout),
                    serial_tail,
                })
            }
            // QEMU shares the terminal's process group, so Ctrl-C may have ended it first.
            Err(_) if INTERRUPTED.load(Ordering::SeqCst) => {
                println!("interrupted; stopping the VM");
                vm.shutdown();
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    let ssh_up = vm.started_at().elapsed();

    if args.show {
        show(&vm, ssh_up)?;
        vm.shutdown();
        return Ok(());
    }

    println!(
        "the VM answers on SSH; log in with:\n\n    {}\n",
        vm.ssh_login_line()
    );
    println!("press Ctrl-C to stop it");
    while !INTERRUPTED.load(Ordering::SeqCst) && vm.is_running() {
        std::thread::sleep(Duration::from_millis(200));
    }
    if !vm.is_running() && !INTERRUPTED.load(Ordering::SeqCst) {
        println!("the VM stopped on its own");
    }
    vm.shutdown();
    Ok(())
}

fn show(vm: &Vm, ssh_up: Duration) -> Result<(), VmError> {
    let lines = vm.serial_lines();
    let first = |needles: &[&str]| {
        lines
            .iter()
            .find(|l| needles.iter().any(|n| l.text.contains(n)))
            .map(|l| format!("{:.1} s", l.at.as_secs_f64()))
            .unwrap_or_else(|| "not seen".into())
    };
    println!("== boot ({})", vm.accel());
    println!("first keel-init line:  {}", first(&["keel-init:"]));
    println!(
        "multi-user.target:     {}",
        first(&super::MULTI_USER_MARKERS)
    );
    println!("SSH answering:         {:.1} s", ssh_up.as_secs_f64());

    println!("\n== /etc/os-release");
    print!("{}", vm.ssh_ok("cat /etc/os-release")?);
    println!("\n== findmnt /");
    print!("{}", vm.ssh_ok("findmnt /")?);
    println!("\n== root hash (from /proc/cmdline)");
    let cmdline = vm.ssh_ok("cat /proc/cmdline")?;
    let roothash = cmdline
        .split_whitespace()
        .find(|w| w.starts_with("roothash="))
        .unwrap_or("(no roothash= on the kernel command line)");
    println!("{roothash}");
    println!("\n== systemctl is-system-running");
    // Non-zero when degraded: still worth printing, so plain ssh() rather than ssh_ok().
    let state = vm.ssh_timeout(
        "systemctl is-system-running --wait",
        Duration::from_secs(180),
    )?;
    print!("{}", String::from_utf8_lossy(&state.stdout));
    Ok(())
}
