//! The per-machine agent: makes this machine's systemd run what the cluster assigned to it —
//! units the engine scheduled here and global units that qualify here — and publishes what
//! systemd says of them. Unit files are written to fleet's folder (`/run/fleet/units`), loaded
//! through the backend, started or stopped towards the desired state (inactive → loaded →
//! launched, as fleet), and unloaded when they are no longer this machine's.

pub mod backend;
pub mod dbus;
pub mod recording;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::jobs::{job_view, machine_view, unit_hash_of_text};
use crate::model::{TargetState, UnitState};
use crate::registry::{JobRecord, PublishedState, Registry, RegistryError};
use crate::schedule::global_unit_runs_here;
pub use backend::{BackendError, SystemdBackend, SystemdState};

/// fleet's unit folder on a real machine.
pub const DEFAULT_UNIT_DIR: &str = "/run/fleet/units";

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("writing unit file {path}: {source}")]
    UnitFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the agent has done with one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    hash: String,
    state: TargetState,
}

pub struct Agent<B: SystemdBackend> {
    registry: Registry,
    backend: Arc<B>,
    machine_id: String,
    unit_dir: PathBuf,
    applied: Mutex<BTreeMap<String, Applied>>,
    /// What was last published per unit, and under which lease: unchanged states are not
    /// written again.
    published: Mutex<BTreeMap<String, (i64, PublishedState)>>,
}

impl<B: SystemdBackend> Agent<B> {
    /// An agent for `machine_id`. Unit files a previous fleetd left in `unit_dir` are taken
    /// over as loaded (their hash read back from the file), so a restarted fleetd does not
    /// restart units that should keep running.
    pub fn new(registry: Registry, backend: Arc<B>, machine_id: &str, unit_dir: &Path) -> Self {
        let mut applied = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(unit_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Ok(text) = std::fs::read_to_string(entry.path()) else {
                    continue;
                };
                let state = match backend.state(&name) {
                    Ok(s) if s.is_active() => TargetState::Launched,
                    _ => TargetState::Loaded,
                };
                applied.insert(
                    name,
                    Applied {
                        hash: unit_hash_of_text(&text),
                        state,
                    },
                );
            }
        }
        Agent {
            registry,
            backend,
            machine_id: machine_id.to_string(),
            unit_dir: unit_dir.to_path_buf(),
            applied: Mutex::new(applied),
            published: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// The units that should be on this machine, by name.
    async fn wanted(&self) -> Result<BTreeMap<String, JobRecord>, AgentError> {
        let jobs = self.registry.jobs().await?;
        let machines = self.registry.machines().await?;
        let Some(me) = machines.iter().find(|m| m.id == self.machine_id) else {
            // Not registered (the lease is being renewed): change nothing until we are.
            return Ok(self
                .applied
                .lock()
                .await
                .keys()
                .filter_map(|name| jobs.iter().find(|j| &j.name == name))
                .map(|job| (job.name.clone(), job.clone()))
                .collect());
        };
        let me = machine_view(me);
        let views: Vec<_> = jobs.iter().map(job_view).collect();
        let mut wanted = BTreeMap::new();
        for (job, view) in jobs.iter().zip(&views) {
            if job.desired == TargetState::Inactive {
                continue;
            }
            let here = if view.requirements.global {
                // What else is (or may be) here: units scheduled here and every global unit;
                // global_unit_runs_here settles conflicts among globals the same way on
                // every machine.
                let others: Vec<_> = jobs
                    .iter()
                    .zip(&views)
                    .filter(|(other, other_view)| {
                        other.name != job.name
                            && other.desired != TargetState::Inactive
                            && (other.target.as_deref() == Some(self.machine_id.as_str())
                                || other_view.requirements.global)
                    })
                    .map(|(_, v)| v.clone())
                    .collect();
                global_unit_runs_here(view, &me, &others)
            } else {
                job.target.as_deref() == Some(self.machine_id.as_str())
            };
            if here {
                wanted.insert(job.name.clone(), job.clone());
            }
        }
        Ok(wanted)
    }

    /// One pass: unload what is no longer ours, load and start or stop what is, publish
    /// states under `lease`. Failures of one unit are logged and do not stop the others.
    pub async fn reconcile(&self, lease: i64) -> Result<(), AgentError> {
        let wanted = self.wanted().await?;
        let mut applied = self.applied.lock().await;

        let stale: Vec<String> = applied
            .iter()
            .filter(|(name, a)| wanted.get(*name).is_none_or(|j| j.unit_hash != a.hash))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            tracing::info!(unit = %name, "unloading");
            if let Err(e) = self.unload(&name) {
                tracing::warn!(error = %e, "unloading failed");
            }
            applied.remove(&name);
            self.published.lock().await.remove(&name);
            self.registry.remove_state(&name, &self.machine_id).await?;
        }

        for (name, job) in &wanted {
            if let Err(e) = self.converge(job, &mut applied) {
                tracing::warn!(unit = %name, error = %e, "could not reach the desired state");
            }
            let state = match self.backend.state(name) {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(unit = %name, error = %e, "no state from systemd");
                    continue;
                }
            };
            let current = applied.get(name).map_or(TargetState::Inactive, |a| a.state);
            let published = PublishedState {
                state: UnitState {
                    name: name.clone(),
                    hash: job.unit_hash.clone(),
                    machine_id: self.machine_id.clone(),
                    load_state: state.load,
                    active_state: state.active,
                    sub_state: state.sub,
                },
                current,
            };
            let mut last = self.published.lock().await;
            if last.get(name) != Some(&(lease, published.clone())) {
                self.registry.publish_state(&published, lease).await?;
                last.insert(name.clone(), (lease, published));
            }
        }
        Ok(())
    }

    /// Moves one unit towards its desired state.
    fn converge(
        &self,
        job: &JobRecord,
        applied: &mut BTreeMap<String, Applied>,
    ) -> Result<(), AgentError> {
        let name = &job.name;
        if !applied.contains_key(name) {
            let path = self.write_unit_file(name, &job.unit_text)?;
            let enable = job.unit_text.lines().any(|l| l.trim() == "[Install]");
            tracing::info!(unit = %name, "loading");
            self.backend.load(name, &path, enable)?;
            applied.insert(
                name.clone(),
                Applied {
                    hash: job.unit_hash.clone(),
                    state: TargetState::Loaded,
                },
            );
        }
        let entry = applied.get_mut(name).expect("inserted above");
        match (entry.state, job.desired) {
            (TargetState::Launched, TargetState::Loaded) => {
                tracing::info!(unit = %name, "stopping");
                self.backend.stop(name)?;
                entry.state = TargetState::Loaded;
            }
            (TargetState::Loaded | TargetState::Inactive, TargetState::Launched) => {
                tracing::info!(unit = %name, "starting");
                self.backend.start(name)?;
                entry.state = TargetState::Launched;
            }
            _ => {}
        }
        Ok(())
    }

    fn unload(&self, name: &str) -> Result<(), AgentError> {
        self.backend.stop(name)?;
        self.backend.unload(name)?;
        let path = self.unit_dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AgentError::UnitFile { path, source }),
        }
    }

    /// Writes the unit file atomically (temporary file, then rename).
    fn write_unit_file(&self, name: &str, text: &str) -> Result<PathBuf, AgentError> {
        let path = self.unit_dir.join(name);
        let fail = |source| AgentError::UnitFile {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.unit_dir).map_err(fail)?;
        let tmp = self.unit_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)?;
        Ok(path)
    }

    /// Stops and unloads everything this agent loaded (fleetd shutting down cleanly).
    pub async fn unload_all(&self) {
        let mut applied = self.applied.lock().await;
        for name in applied.keys() {
            if let Err(e) = self.unload(name) {
                tracing::warn!(unit = %name, error = %e, "unloading failed");
            }
        }
        applied.clear();
    }
}
