//! The running systemd, over D-Bus: reload the unit files the provisioner wrote, then carry
//! out each unit's cloud-config `command` (start, restart, ...), as coreos-cloudinit did.

use crate::cloudconfig::UnitCommand;
use zbus::blocking::Connection;

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    // zbus errors are large; boxed so every Result here stays small.
    #[error("connecting to the system bus: {0}")]
    Connect(#[source] Box<zbus::Error>),
    #[error("systemd {method}: {source}")]
    Call {
        method: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("unit {unit}: `{word}` is not a unit command")]
    UnknownCommand { unit: String, word: String },
}

pub struct Systemd {
    bus: Connection,
}

impl Systemd {
    pub fn connect() -> Result<Systemd, SystemdError> {
        Ok(Systemd {
            bus: Connection::system().map_err(|e| SystemdError::Connect(Box::new(e)))?,
        })
    }

    /// `daemon-reload`; systemd answers once the reload is done.
    pub fn reload(&self) -> Result<(), SystemdError> {
        self.bus
            .call_method(Some(DESTINATION), PATH, Some(MANAGER), "Reload", &())
            .map_err(|source| SystemdError::Call {
                method: "Reload".into(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Queues `word` ("start", "try-restart", ...) for `unit` in "replace" mode, as
    /// `systemctl` does; the job runs on its own, like `systemctl --no-block`.
    pub fn run_command(&self, unit: &str, word: &str) -> Result<(), SystemdError> {
        let command = UnitCommand::parse(word).ok_or_else(|| SystemdError::UnknownCommand {
            unit: unit.to_string(),
            word: word.to_string(),
        })?;
        let method = command.dbus_method();
        self.bus
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(MANAGER),
                method,
                &(unit, "replace"),
            )
            .map_err(|source| SystemdError::Call {
                method: format!("{method} {unit}"),
                source: Box::new(source),
            })?;
        Ok(())
    }
}
