//! What the HTTP API and fleetctl need from the cluster's state, as a trait: the etcd registry
//! implements it for fleetd; tests of the API shape may use an in-memory one beside the
//! real-etcd tests.

use std::future::Future;

use crate::model::{Machine, TargetState, Unit, UnitOption, UnitState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unit {0} not found")]
    UnitNotFound(String),
    #[error("machine {0} not found")]
    MachineNotFound(String),
    /// PUT of a unit that exists with different options (fleet answers 409).
    #[error("unit {0} already exists with different options")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    /// etcd or another backend failed (fleet answers 500).
    #[error("registry: {0}")]
    Backend(String),
}

/// How the machine metadata PATCH changes one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataChange {
    Set { key: String, value: String },
    Remove { key: String },
}

pub trait FleetStore: Send + Sync + 'static {
    /// Every unit, sorted by name.
    fn units(&self) -> impl Future<Output = Result<Vec<Unit>, StoreError>> + Send;
    fn unit(&self, name: &str) -> impl Future<Output = Result<Option<Unit>, StoreError>> + Send;
    /// Creates `name` with `options` and `desired` (fleet's PUT of a new unit). A unit that
    /// exists with the same options only gets its desired state set; with other options it is
    /// a [`StoreError::Conflict`]. Returns true when the unit was created.
    fn create_unit(
        &self,
        name: &str,
        options: Vec<UnitOption>,
        desired: TargetState,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Sets an existing unit's desired state ([`StoreError::UnitNotFound`] otherwise).
    fn set_desired_state(
        &self,
        name: &str,
        desired: TargetState,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Removes a unit ([`StoreError::UnitNotFound`] when there is none).
    fn destroy_unit(&self, name: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every machine's systemd state of every unit, sorted by unit name then machine ID.
    fn unit_states(&self) -> impl Future<Output = Result<Vec<UnitState>, StoreError>> + Send;
    /// Every live machine, sorted by ID.
    fn machines(&self) -> impl Future<Output = Result<Vec<Machine>, StoreError>> + Send;
    fn change_machine_metadata(
        &self,
        machine_id: &str,
        changes: Vec<MetadataChange>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
