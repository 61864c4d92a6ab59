//! **Test double.** An in-memory [`FleetStore`] for the tests of the HTTP API and fleetctl
//! (`tests/api.rs`, `tests/fleetctl.rs`), which exercise the API's shape — routes, status
//! codes, paging, JSON — and fleetctl's commands and output without etcd. It is not fleet's
//! registry and never runs in fleetd: the real, etcd-backed store is `crate::registry`, tested
//! against a real etcd beside these tests, as the project allows a double only next to a
//! test of the real part.
//!
//! It imitates the rest of the cluster crudely so that fleetctl's waiting can be tested: when
//! "converging" (at once after every change unless [`MemoryStore::set_auto_converge`] turned it
//! off, else on [`MemoryStore::converge`]) every unit reaches its desired state, placed on the
//! least loaded machine, and its systemd state appears in `unit_states` (`loaded/active/running`
//! when launched, `loaded/inactive/dead` when loaded; global units on every machine).

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::model::{Machine, TargetState, Unit, UnitOption, UnitState};
use crate::store::{FleetStore, MetadataChange, StoreError};
use crate::unit::{Requirements, UnitFile, UnitName};

#[derive(Debug, Clone)]
struct Record {
    options: Vec<UnitOption>,
    desired: TargetState,
    current: Option<TargetState>,
    machine: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    units: BTreeMap<String, Record>,
    machines: BTreeMap<String, Machine>,
    manual: bool,
    failure: Option<String>,
}

/// In-memory [`FleetStore`] test double; see the module documentation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

fn is_global(name: &str, options: &[UnitOption]) -> bool {
    let Ok(name) = UnitName::parse(name) else {
        return false;
    };
    Requirements::from_unit(&name, &UnitFile::from_options(options))
        .is_ok_and(|(r, _)| r.is_global())
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces) a live machine.
    pub fn add_machine(&self, id: &str, ip: &str, metadata: &[(&str, &str)]) {
        let mut inner = self.lock();
        inner.machines.insert(
            id.to_string(),
            Machine {
                id: id.to_string(),
                public_ip: ip.to_string(),
                metadata: metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
        );
        if !inner.manual {
            converge(&mut inner);
        }
    }

    /// With `true` (the default) units reach their desired state as soon as it is set; with
    /// `false` they stay where they are until [`MemoryStore::converge`].
    pub fn set_auto_converge(&self, auto: bool) {
        self.lock().manual = !auto;
    }

    /// Moves every unit to its desired state now.
    pub fn converge(&self) {
        converge(&mut self.lock());
    }

    /// Makes every call fail as an unreachable backend would (None: work again).
    pub fn fail_with(&self, failure: Option<&str>) {
        self.lock().failure = failure.map(str::to_string);
    }

    /// A unit's record as the API would show it, bypassing failure injection.
    pub fn peek(&self, name: &str) -> Option<Unit> {
        let inner = self.lock();
        inner.units.get(name).map(|r| to_unit(name, r))
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        let inner = self.lock();
        match &inner.failure {
            Some(f) => Err(StoreError::Backend(f.clone())),
            None => Ok(inner),
        }
    }

    fn after_change(inner: &mut Inner) {
        if !inner.manual {
            converge(inner);
        }
    }
}

fn converge(inner: &mut Inner) {
    let machine_ids: Vec<String> = inner.machines.keys().cloned().collect();
    let names: Vec<String> = inner.units.keys().cloned().collect();
    for name in names {
        let record = inner.units[&name].clone();
        let mut next = record.clone();
        if is_global(&name, &record.options) {
            next.current = None;
            next.machine = None;
        } else if record.desired == TargetState::Inactive {
            next.current = Some(TargetState::Inactive);
            next.machine = None;
        } else {
            let placed = record
                .machine
                .clone()
                .filter(|m| inner.machines.contains_key(m));
            let placed = placed.or_else(|| {
                machine_ids
                    .iter()
                    .min_by_key(|m| {
                        let load = inner
                            .units
                            .values()
                            .filter(|r| r.machine.as_deref() == Some(m.as_str()))
                            .count();
                        (load, (*m).clone())
                    })
                    .cloned()
            });
            match placed {
                Some(m) => {
                    next.machine = Some(m);
                    next.current = Some(record.desired);
                }
                None => {
                    next.machine = None;
                    next.current = Some(TargetState::Inactive);
                }
            }
        }
        inner.units.insert(name, next);
    }
}

fn to_unit(name: &str, r: &Record) -> Unit {
    Unit {
        name: name.to_string(),
        options: r.options.clone(),
        desired_state: r.desired,
        current_state: r.current,
        machine_id: r.machine.clone(),
    }
}

fn systemd_state(state: TargetState) -> Option<(&'static str, &'static str, &'static str)> {
    match state {
        TargetState::Inactive => None,
        TargetState::Loaded => Some(("loaded", "inactive", "dead")),
        TargetState::Launched => Some(("loaded", "active", "running")),
    }
}

impl FleetStore for MemoryStore {
    async fn units(&self) -> Result<Vec<Unit>, StoreError> {
        let inner = self.check()?;
        Ok(inner.units.iter().map(|(n, r)| to_unit(n, r)).collect())
    }

    async fn unit(&self, name: &str) -> Result<Option<Unit>, StoreError> {
        let inner = self.check()?;
        Ok(inner.units.get(name).map(|r| to_unit(name, r)))
    }

    async fn create_unit(
        &self,
        name: &str,
        options: Vec<UnitOption>,
        desired: TargetState,
    ) -> Result<bool, StoreError> {
        let mut inner = self.check()?;
        let created = match inner.units.get_mut(name) {
            Some(existing) if existing.options == options => {
                existing.desired = desired;
                false
            }
            Some(_) => return Err(StoreError::Conflict(name.to_string())),
            None => {
                inner.units.insert(
                    name.to_string(),
                    Record {
                        options,
                        desired,
                        current: None,
                        machine: None,
                    },
                );
                true
            }
        };
        MemoryStore::after_change(&mut inner);
        Ok(created)
    }

    async fn set_desired_state(&self, name: &str, desired: TargetState) -> Result<(), StoreError> {
        let mut inner = self.check()?;
        match inner.units.get_mut(name) {
            Some(r) => r.desired = desired,
            None => return Err(StoreError::UnitNotFound(name.to_string())),
        }
        MemoryStore::after_change(&mut inner);
        Ok(())
    }

    async fn destroy_unit(&self, name: &str) -> Result<(), StoreError> {
        let mut inner = self.check()?;
        match inner.units.remove(name) {
            Some(_) => Ok(()),
            None => Err(StoreError::UnitNotFound(name.to_string())),
        }
    }

    async fn unit_states(&self) -> Result<Vec<UnitState>, StoreError> {
        let inner = self.check()?;
        let mut states = Vec::new();
        for (name, r) in &inner.units {
            let hash = UnitFile::from_options(&r.options).hash();
            let (state, machines): (Option<TargetState>, Vec<String>) =
                if is_global(name, &r.options) {
                    (Some(r.desired), inner.machines.keys().cloned().collect())
                } else {
                    (r.current, r.machine.iter().cloned().collect())
                };
            let Some((load, active, sub)) = state.and_then(systemd_state) else {
                continue;
            };
            for machine in machines {
                states.push(UnitState {
                    name: name.clone(),
                    hash: hash.clone(),
                    machine_id: machine,
                    load_state: load.to_string(),
                    active_state: active.to_string(),
                    sub_state: sub.to_string(),
                });
            }
        }
        Ok(states)
    }

    async fn machines(&self) -> Result<Vec<Machine>, StoreError> {
        let inner = self.check()?;
        Ok(inner.machines.values().cloned().collect())
    }

    async fn change_machine_metadata(
        &self,
        machine_id: &str,
        changes: Vec<MetadataChange>,
    ) -> Result<(), StoreError> {
        let mut inner = self.check()?;
        let Some(machine) = inner.machines.get_mut(machine_id) else {
            return Err(StoreError::MachineNotFound(machine_id.to_string()));
        };
        for change in changes {
            match change {
                MetadataChange::Set { key, value } => {
                    machine.metadata.insert(key, value);
                }
                MetadataChange::Remove { key } => {
                    machine.metadata.remove(&key);
                }
            }
        }
        Ok(())
    }
}
