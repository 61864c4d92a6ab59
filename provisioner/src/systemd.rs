//! The running systemd, over D-Bus: reload the unit files the provisioner wrote, then carry
//! out each unit's cloud-config `command` (start, restart, ...), as coreos-cloudinit did.

use crate::cloudconfig::UnitCommand;
use zbus::blocking::Connection;
use zbus::zvariant::Value;

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

    /// Runs the executable at `path` as the transient oneshot service `unit` (what
    /// `systemd-run --unit` does), its output on the journal and the console. With `after`,
    /// the script waits for that unit's job to finish first, so scripts keep their order.
    /// Like the unit commands, this only queues the job.
    pub fn start_script(
        &self,
        unit: &str,
        path: &str,
        after: Option<&str>,
    ) -> Result<(), SystemdError> {
        let exec_start = vec![(path.to_string(), vec![path.to_string()], false)];
        let mut properties: Vec<(&str, Value)> = vec![
            (
                "Description",
                Value::from(format!("cloud-config script {path}")),
            ),
            ("Type", Value::from("oneshot")),
            ("ExecStart", Value::from(exec_start)),
            ("StandardOutput", Value::from("journal+console")),
            ("StandardError", Value::from("journal+console")),
        ];
        if let Some(after) = after {
            properties.push(("After", Value::from(vec![after.to_string()])));
        }
        let aux: Vec<(&str, Vec<(&str, Value)>)> = Vec::new();
        self.bus
            .call_method(
                Some(DESTINATION),
                PATH,
                Some(MANAGER),
                "StartTransientUnit",
                &(unit, "replace", properties, aux),
            )
            .map_err(|source| SystemdError::Call {
                method: format!("StartTransientUnit {unit}"),
                source: Box::new(source),
            })?;
        Ok(())
    }
}
