//! A pretend systemd for host tests with many fleetd instances in one process: it records
//! every call and keeps load and active states in memory, starting and stopping at once.
//! The D-Bus backend does the same against a real systemd in the VM tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use super::backend::{BackendError, SystemdBackend, SystemdState};

#[derive(Debug, Default)]
pub struct RecordingSystemd {
    calls: Mutex<Vec<String>>,
    /// name → (enabled, active)
    units: Mutex<BTreeMap<String, (bool, bool)>>,
}

impl RecordingSystemd {
    pub fn new() -> RecordingSystemd {
        RecordingSystemd::default()
    }

    /// Every call so far, e.g. "load a.service", "start a.service".
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Units currently active, sorted.
    pub fn active_units(&self) -> Vec<String> {
        self.units
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, active))| *active)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Units currently loaded, sorted.
    pub fn loaded_units(&self) -> Vec<String> {
        self.units.lock().unwrap().keys().cloned().collect()
    }

    pub fn is_enabled(&self, name: &str) -> bool {
        self.units
            .lock()
            .unwrap()
            .get(name)
            .is_some_and(|(enabled, _)| *enabled)
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn not_loaded(operation: &'static str, name: &str) -> BackendError {
        BackendError {
            operation,
            unit: name.to_string(),
            message: "unit not loaded".into(),
        }
    }
}

impl SystemdBackend for RecordingSystemd {
    fn load(&self, name: &str, path: &Path, enable: bool) -> Result<(), BackendError> {
        if !path.is_file() {
            return Err(BackendError {
                operation: "load",
                unit: name.to_string(),
                message: format!("{} does not exist", path.display()),
            });
        }
        self.record(format!(
            "load {name}{}",
            if enable { " enable" } else { "" }
        ));
        let mut units = self.units.lock().unwrap();
        let entry = units.entry(name.to_string()).or_insert((false, false));
        entry.0 = enable;
        Ok(())
    }

    fn unload(&self, name: &str) -> Result<(), BackendError> {
        self.record(format!("unload {name}"));
        self.units.lock().unwrap().remove(name);
        Ok(())
    }

    fn start(&self, name: &str) -> Result<(), BackendError> {
        self.record(format!("start {name}"));
        match self.units.lock().unwrap().get_mut(name) {
            Some(unit) => {
                unit.1 = true;
                Ok(())
            }
            None => Err(Self::not_loaded("start", name)),
        }
    }

    fn stop(&self, name: &str) -> Result<(), BackendError> {
        self.record(format!("stop {name}"));
        if let Some(unit) = self.units.lock().unwrap().get_mut(name) {
            unit.1 = false;
        }
        Ok(())
    }

    fn state(&self, name: &str) -> Result<SystemdState, BackendError> {
        let units = self.units.lock().unwrap();
        Ok(match units.get(name) {
            Some((_, true)) => SystemdState {
                load: "loaded".into(),
                active: "active".into(),
                sub: "running".into(),
            },
            Some((_, false)) => SystemdState {
                load: "loaded".into(),
                active: "inactive".into(),
                sub: "dead".into(),
            },
            None => SystemdState {
                load: "not-found".into(),
                active: "inactive".into(),
                sub: "dead".into(),
            },
        })
    }
}
