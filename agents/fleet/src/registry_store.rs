//! The registry as the HTTP API's [`FleetStore`]: units with their options, desired and
//! current state and machine; unit states; machines and their metadata. Unit files are
//! validated here (name, syntax, `[X-Fleet]`) so nothing unschedulable enters the registry.

use crate::model::{Machine, TargetState, Unit, UnitOption, UnitState};
use crate::registry::{Registry, RegistryError};
use crate::store::{FleetStore, MetadataChange, StoreError};
use crate::unit::{Requirements, UnitFile, UnitName};

impl From<RegistryError> for StoreError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::UnitNotFound(name) => StoreError::UnitNotFound(name),
            RegistryError::Conflict(name) => StoreError::Conflict(name),
            RegistryError::MachineNotFound(id) => StoreError::MachineNotFound(id),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl FleetStore for Registry {
    async fn units(&self) -> Result<Vec<Unit>, StoreError> {
        let jobs = self.jobs().await?;
        let states = self.states().await?;
        Ok(jobs
            .into_iter()
            .map(|job| {
                let options = UnitFile::parse(&job.unit_text)
                    .map(|f| f.options())
                    .unwrap_or_default();
                // What the agents achieved: the scheduled machine's report, or for a global
                // unit the furthest any machine got.
                let current = states
                    .iter()
                    .filter(|s| s.state.name == job.name)
                    .filter(|s| job.target.as_ref().is_none_or(|t| *t == s.state.machine_id))
                    .map(|s| s.current)
                    .max()
                    .unwrap_or(TargetState::Inactive);
                Unit {
                    name: job.name,
                    options,
                    desired_state: job.desired,
                    current_state: Some(current),
                    machine_id: job.target,
                }
            })
            .collect())
    }

    async fn unit(&self, name: &str) -> Result<Option<Unit>, StoreError> {
        Ok(self.units().await?.into_iter().find(|u| u.name == name))
    }

    async fn create_unit(
        &self,
        name: &str,
        options: Vec<UnitOption>,
        desired: TargetState,
    ) -> Result<bool, StoreError> {
        let unit_name = UnitName::parse(name).map_err(|e| StoreError::Invalid(e.to_string()))?;
        if unit_name.is_template() {
            return Err(StoreError::Invalid(format!(
                "{name} is a template: submit an instance of it, such as {}",
                name.replacen("@.", "@1.", 1)
            )));
        }
        let file = UnitFile::from_options(&options);
        Requirements::from_unit(&unit_name, &file)
            .map_err(|e| StoreError::Invalid(format!("{name}: {e}")))?;
        Ok(self
            .create_job(name, &file.to_text(), &file.hash(), desired)
            .await?)
    }

    async fn set_desired_state(&self, name: &str, desired: TargetState) -> Result<(), StoreError> {
        Ok(Registry::set_desired_state(self, name, desired).await?)
    }

    async fn destroy_unit(&self, name: &str) -> Result<(), StoreError> {
        Ok(self.destroy_job(name).await?)
    }

    async fn unit_states(&self) -> Result<Vec<UnitState>, StoreError> {
        Ok(self.states().await?.into_iter().map(|s| s.state).collect())
    }

    async fn machines(&self) -> Result<Vec<Machine>, StoreError> {
        Ok(Registry::machines(self).await?)
    }

    async fn change_machine_metadata(
        &self,
        machine_id: &str,
        changes: Vec<MetadataChange>,
    ) -> Result<(), StoreError> {
        Ok(self
            .update_machine_metadata(machine_id, |metadata| {
                for change in &changes {
                    match change {
                        MetadataChange::Set { key, value } => {
                            metadata.insert(key.clone(), value.clone());
                        }
                        MetadataChange::Remove { key } => {
                            metadata.remove(key);
                        }
                    }
                }
            })
            .await?)
    }
}
