//! fleetd's life: register the machine, run the agent and (unless disabled) the engine while
//! the registration lasts, register again when it is lost (etcd was away longer than
//! agent_ttl), and leave cleanly when asked to stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::agent::{Agent, SystemdBackend};
use crate::engine::run_engine;
use crate::model::Machine;
use crate::registry::{Registry, RegistryError};
use crate::session::Session;

/// What one fleetd needs beyond its etcd connection and systemd backend.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub machine: Machine,
    pub agent_ttl: Duration,
    /// How often the engine and the agent reconcile.
    pub reconcile_interval: Duration,
    pub disable_engine: bool,
    pub unit_dir: PathBuf,
}

/// Runs until `shutdown` becomes true (then the lease is revoked, so the machine leaves at
/// once) or the machine ID turns out to be taken by another live fleetd.
pub async fn run_daemon<B: SystemdBackend>(
    registry: Registry,
    config: DaemonConfig,
    backend: Arc<B>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), RegistryError> {
    let agent = Arc::new(Agent::new(
        registry.clone(),
        backend,
        &config.machine.id,
        &config.unit_dir,
    ));
    loop {
        let session = tokio::select! {
            session = Session::start(&registry, &config.machine, config.agent_ttl) => match session {
                Ok(session) => session,
                Err(e @ RegistryError::DuplicateMachine(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register with etcd yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            _ = agent_common::shutdown::requested(&mut shutdown) => return Ok(()),
        };
        let lease = session.lease();
        let mut tasks = tokio::task::JoinSet::new();
        // Agent and engine pass every interval, and at once when a watch sees a change.
        let changed = Arc::new(Notify::new());
        {
            let registry = registry.clone();
            let changed = Arc::clone(&changed);
            tasks.spawn(async move { registry.watch_changes(changed).await });
        }
        {
            let agent = Arc::clone(&agent);
            let interval = config.reconcile_interval;
            let changed = Arc::clone(&changed);
            tasks.spawn(async move {
                loop {
                    // Registered before the pass, so a change during it wakes the next one.
                    let woken = changed.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    if let Err(e) = agent.reconcile(lease).await {
                        tracing::warn!(error = %e, "agent pass failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = woken => {}
                    }
                }
            });
        }
        if !config.disable_engine {
            tasks.spawn(run_engine(
                registry.clone(),
                config.machine.id.clone(),
                lease,
                config.reconcile_interval,
                Arc::clone(&changed),
            ));
        }
        tokio::select! {
            _ = session.lost() => {
                tracing::warn!("registration lost; registering again");
                tasks.shutdown().await;
            }
            _ = agent_common::shutdown::requested(&mut shutdown) => {
                tasks.shutdown().await;
                session.end(&registry).await;
                return Ok(());
            }
        }
    }
}
