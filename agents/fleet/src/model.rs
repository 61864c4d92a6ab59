//! The objects fleet talks about, with the JSON names of fleet's HTTP API v1: units and their
//! desired state, where they run and what systemd says of them, and machines.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A unit's desired (or current) state, as fleet: inactive → loaded → launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Known to the cluster, not placed on any machine.
    Inactive,
    /// Placed on a machine and loaded into its systemd, not started.
    Loaded,
    /// Placed, loaded and started.
    Launched,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Inactive => "inactive",
            TargetState::Loaded => "loaded",
            TargetState::Launched => "launched",
        }
    }

    pub fn parse(word: &str) -> Option<TargetState> {
        match word {
            "inactive" => Some(TargetState::Inactive),
            "loaded" => Some(TargetState::Loaded),
            "launched" => Some(TargetState::Launched),
            _ => None,
        }
    }
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `Name=Value` line of a unit file, with its section: the API's form of a unit's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitOption {
    pub section: String,
    pub name: String,
    pub value: String,
}

/// A unit as the API shows it (`/fleet/v1/units`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    pub name: String,
    #[serde(default)]
    pub options: Vec<UnitOption>,
    pub desired_state: TargetState,
    /// What the scheduler and agent have made of it so far (None: not yet acted on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_state: Option<TargetState>,
    /// The machine it is scheduled to (None: unscheduled, or a global unit).
    #[serde(rename = "machineID", default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
}

/// What systemd on one machine says of one unit (`/fleet/v1/state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitState {
    pub name: String,
    /// The hash of the unit file the machine runs.
    pub hash: String,
    #[serde(rename = "machineID")]
    pub machine_id: String,
    #[serde(rename = "systemdLoadState")]
    pub load_state: String,
    #[serde(rename = "systemdActiveState")]
    pub active_state: String,
    #[serde(rename = "systemdSubState")]
    pub sub_state: String,
}

/// A machine running fleetd (`/fleet/v1/machines`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    #[serde(rename = "primaryIP", default)]
    pub public_ip: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}
