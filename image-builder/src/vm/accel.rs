//! Choosing between TCG and KVM. KVM is only used when a probe boot proves it works: on some
//! hosts `/dev/kvm` exists yet guests stop at their first instruction ("KVM internal error"),
//! and a VM that hangs silently is far worse than one that is merely slow.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use super::{qemu, VmError};

/// Where the probe's verdict is kept between processes, so a test run does not pay the probe
/// once per test binary.
pub const PROBE_CACHE: &str = "/var/cache/keel/kvm-probe";

/// How long the firmware gets to print anything under KVM. Working KVM prints within a second;
/// the margin covers a loaded host.
const PROBE_WINDOW: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }

    pub fn parse(s: &str) -> Option<Accel> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tcg" => Some(Accel::Tcg),
            "kvm" => Some(Accel::Kvm),
            _ => None,
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The accelerator to use: `KEEL_ACCEL` if set, otherwise KVM only if the (cached) probe passed.
pub fn choose() -> Result<Accel, VmError> {
    if let Ok(forced) = std::env::var("KEEL_ACCEL") {
        if !forced.trim().is_empty() {
            let accel = Accel::parse(&forced).ok_or(VmError::BadAccel(forced))?;
            tracing::info!(accel = %accel, "accelerator forced by KEEL_ACCEL");
            return Ok(accel);
        }
    }
    static VERDICT: OnceLock<Accel> = OnceLock::new();
    if let Some(accel) = VERDICT.get() {
        return Ok(*accel);
    }
    let accel = if kvm_works()? { Accel::Kvm } else { Accel::Tcg };
    tracing::info!(accel = %accel, "accelerator chosen");
    Ok(*VERDICT.get_or_init(|| accel))
}

fn kvm_works() -> Result<bool, VmError> {
    if !kvm_device_usable() {
        tracing::info!("/dev/kvm missing or not accessible: using TCG");
        return Ok(false);
    }
    let release = kernel_release();
    if let Some(verdict) = std::fs::read_to_string(PROBE_CACHE)
        .ok()
        .and_then(|text| parse_cache(&text, &release))
    {
        tracing::info!(
            kvm_works = verdict,
            cache = PROBE_CACHE,
            "KVM probe verdict from cache"
        );
        return Ok(verdict);
    }
    let verdict = probe()?;
    tracing::info!(kvm_works = verdict, "KVM probe finished");
    // Best effort: without a writable cache the probe simply runs again next time.
    if let Some(dir) = Path::new(PROBE_CACHE).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(PROBE_CACHE, format_cache(verdict, &release));
    Ok(verdict)
}

fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// `uname -r`; a kernel update can fix (or break) KVM, so the cached verdict is tied to it.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn format_cache(kvm_works: bool, release: &str) -> String {
    format!(
        "kvm={}\nkernel={release}\n",
        if kvm_works { "works" } else { "broken" }
    )
}

/// The cached verdict, or None when the cache is unreadable or was written under another kernel.
pub fn parse_cache(text: &str, release: &str) -> Option<bool> {
    let mut verdict = None;
    let mut kernel = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("kvm", "works")) => verdict = Some(true),
            Some(("kvm", "broken")) => verdict = Some(false),
            Some(("kernel", k)) => kernel = Some(k.trim()),
            _ => {}
        }
    }
    if kernel? == release && !release.is_empty() {
        verdict
    } else {
        None
    }
}

/// Boots the firmware alone under KVM and reports whether it printed anything on the serial
/// console within the probe window.
fn probe() -> Result<bool, VmError> {
    let qemu_bin = qemu::require_tool(qemu::QEMU, "qemu-system-x86")?;
    let (code, vars) = qemu::require_ovmf()?;
    let scratch = ProbeVars::create(&vars)?;
    let mut child = Command::new(qemu_bin)
        .args(["-accel", "kvm", "-machine", "q35"])
        .args(["-display", "none", "-nodefaults", "-serial", "stdio"])
        .args(["-monitor", "none", "-net", "none"])
        .arg("-drive")
        .arg(qemu::pflash_code_arg(&code))
        .arg("-drive")
        .arg(qemu::pflash_vars_arg(&scratch.0))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| VmError::io("starting the KVM probe", e))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut byte = [0u8; 1];
        // One byte is proof enough that the vCPU ran the firmware far enough to talk.
        let printed = matches!(stdout.read(&mut byte), Ok(n) if n > 0);
        let _ = tx.send(printed);
    });
    let printed = rx.recv_timeout(PROBE_WINDOW).unwrap_or(false);
    let _ = child.kill();
    let _ = child.wait();
    Ok(printed)
}

/// A throwaway copy of the OVMF variable store, removed when the probe ends.
struct ProbeVars(PathBuf);

impl ProbeVars {
    fn create(template: &Path) -> Result<Self, VmError> {
        let path = std::env::temp_dir().join(format!("keel-kvm-probe-{}.fd", std::process::id()));
        std::fs::copy(template, &path)
            .map_err(|e| VmError::io(format!("copying {}", template.display()), e))?;
        Ok(Self(path))
    }
}

impl Drop for ProbeVars {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_round_trips_for_the_same_kernel() {
        let text = format_cache(true, "6.1.0-18-amd64");
        assert_eq!(parse_cache(&text, "6.1.0-18-amd64"), Some(true));
        let text = format_cache(false, "6.1.0-18-amd64");
        assert_eq!(parse_cache(&text, "6.1.0-18-amd64"), Some(false));
    }

    #[test]
    fn cache_is_ignored_after_a_kernel_change_or_when_garbled() {
        let text = format_cache(true, "6.1.0-18-amd64");
        assert_eq!(parse_cache(&text, "6.1.0-20-amd64"), None);
        assert_eq!(parse_cache("kvm=maybe\nkernel=x\n", "x"), None);
        assert_eq!(parse_cache("kvm=works\n", "x"), None);
        assert_eq!(parse_cache("", ""), None);
    }

    #[test]
    fn accel_names_parse() {
        assert_eq!(Accel::parse("KVM"), Some(Accel::Kvm));
        assert_eq!(Accel::parse(" tcg\n"), Some(Accel::Tcg));
        assert_eq!(Accel::parse("hvf"), None);
    }
}
