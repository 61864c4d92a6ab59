//! How the agent drives systemd, as a trait: the real backend talks to systemd over D-Bus
//! (`dbus.rs`, exercised in the VM tests); the recording one (`recording.rs`) lets several
//! fleetd instances share one test process, each with its own pretend systemd.

use std::path::Path;

/// What systemd says of one unit: its LoadState, ActiveState and SubState properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdState {
    pub load: String,
    pub active: String,
    pub sub: String,
}

impl SystemdState {
    /// Running or on its way there (a start job already queued counts).
    pub fn is_active(&self) -> bool {
        matches!(self.active.as_str(), "active" | "activating" | "reloading")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("systemd {operation} {unit}: {message}")]
pub struct BackendError {
    pub operation: &'static str,
    pub unit: String,
    pub message: String,
}

pub trait SystemdBackend: Send + Sync + 'static {
    /// Makes the unit file at `path` (in fleet's unit folder) known to systemd as `name` and
    /// reloads; with `enable`, also enables it (the unit has an [Install] section).
    fn load(&self, name: &str, path: &Path, enable: bool) -> Result<(), BackendError>;
    /// Forgets `name`: disabled, unlinked, reloaded. The unit is stopped first by the caller.
    fn unload(&self, name: &str) -> Result<(), BackendError>;
    /// Queues a start job ("replace" mode, as systemctl).
    fn start(&self, name: &str) -> Result<(), BackendError>;
    fn stop(&self, name: &str) -> Result<(), BackendError>;
    fn state(&self, name: &str) -> Result<SystemdState, BackendError>;
}
