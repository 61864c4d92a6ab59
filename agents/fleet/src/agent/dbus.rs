//! The real backend: systemd's manager over the system D-Bus (zbus), as fleet drove it. Unit
//! files stay in fleet's folder (/run/fleet/units) and are linked into /run/systemd/system,
//! so nothing fleet loads survives a reboot unless fleet loads it again.

use std::path::Path;

use zbus::blocking::Connection;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use super::backend::{BackendError, SystemdBackend, SystemdState};

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
/// Where runtime links live; removing ours there is what unloading means.
const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

pub struct DbusSystemd {
    bus: Connection,
}

impl DbusSystemd {
    pub fn connect() -> Result<DbusSystemd, BackendError> {
        let bus = Connection::system().map_err(|e| BackendError {
            operation: "connect",
            unit: String::new(),
            message: format!("system bus: {e}"),
        })?;
        Ok(DbusSystemd { bus })
    }

    fn call<B>(
        &self,
        operation: &'static str,
        unit: &str,
        method: &str,
        body: &B,
    ) -> Result<zbus::Message, BackendError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.bus
            .call_method(Some(DESTINATION), PATH, Some(MANAGER), method, body)
            .map_err(|e| BackendError {
                operation,
                unit: unit.to_string(),
                message: e.to_string(),
            })
    }

    fn reload(&self, unit: &str) -> Result<(), BackendError> {
        self.call("daemon-reload", unit, "Reload", &())?;
        Ok(())
    }

    fn unit_property(
        &self,
        name: &str,
        path: &OwnedObjectPath,
        property: &str,
    ) -> Result<String, BackendError> {
        let reply = self
            .bus
            .call_method(
                Some(DESTINATION),
                path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(UNIT, property),
            )
            .map_err(|e| BackendError {
                operation: "state",
                unit: name.to_string(),
                message: e.to_string(),
            })?;
        let value: OwnedValue = reply.body().deserialize().map_err(|e| BackendError {
            operation: "state",
            unit: name.to_string(),
            message: e.to_string(),
        })?;
        String::try_from(value).map_err(|e| BackendError {
            operation: "state",
            unit: name.to_string(),
            message: e.to_string(),
        })
    }
}

impl SystemdBackend for DbusSystemd {
    fn load(&self, name: &str, path: &Path, enable: bool) -> Result<(), BackendError> {
        let file = path.display().to_string();
        // runtime = true (under /run), force = true (replace a stale link of ours).
        self.call(
            "link",
            name,
            "LinkUnitFiles",
            &(vec![file.as_str()], true, true),
        )?;
        if enable {
            self.call("enable", name, "EnableUnitFiles", &(vec![name], true, true))?;
        }
        self.reload(name)
    }

    fn unload(&self, name: &str) -> Result<(), BackendError> {
        // Disabling a unit that was never enabled is harmless.
        let _ = self.call("disable", name, "DisableUnitFiles", &(vec![name], true));
        let link = Path::new(RUNTIME_UNIT_DIR).join(name);
        if link.is_symlink() {
            std::fs::remove_file(&link).map_err(|e| BackendError {
                operation: "unlink",
                unit: name.to_string(),
                message: format!("{}: {e}", link.display()),
            })?;
        }
        self.reload(name)
    }

    fn start(&self, name: &str) -> Result<(), BackendError> {
        self.call("start", name, "StartUnit", &(name, "replace"))?;
        Ok(())
    }

    fn stop(&self, name: &str) -> Result<(), BackendError> {
        self.call("stop", name, "StopUnit", &(name, "replace"))?;
        Ok(())
    }

    fn state(&self, name: &str) -> Result<SystemdState, BackendError> {
        let reply = self.call("state", name, "LoadUnit", &(name,))?;
        let path: OwnedObjectPath = reply.body().deserialize().map_err(|e| BackendError {
            operation: "state",
            unit: name.to_string(),
            message: e.to_string(),
        })?;
        Ok(SystemdState {
            load: self.unit_property(name, &path, "LoadState")?,
            active: self.unit_property(name, &path, "ActiveState")?,
            sub: self.unit_property(name, &path, "SubState")?,
        })
    }
}
