//! The engine: exactly one fleetd at a time (the winner of an etcd election on its machine
//! lease) places units on machines. Each pass reads machines and units, asks the pure
//! scheduler (`schedule::reconcile`) what to change, and writes the changes fenced by its
//! leadership key, so a deposed engine's late writes fail instead of double-scheduling.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use etcd_client::LeaderKey;

use crate::jobs::{job_view, machine_view};
use crate::registry::{Registry, RegistryError};
use crate::schedule::{reconcile, Decision};

/// Waits to be elected (for as long as it takes), then reconciles every `interval` and when
/// `changed` fires, until the leadership is lost; then campaigns again.
pub async fn run_engine(
    registry: Registry,
    machine_id: String,
    lease: i64,
    interval: Duration,
    changed: Arc<Notify>,
) {
    loop {
        let leader = match campaign(&registry, &machine_id, lease).await {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(error = %e, "engine election failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(machine = %machine_id, "elected engine leader");
        loop {
            let woken = changed.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match reconcile_once(&registry, &leader).await {
                Ok(_) => {}
                Err(RegistryError::NotLeader) => {
                    tracing::warn!("lost the engine leadership");
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "engine pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = woken => {}
            }
        }
    }
}

async fn campaign(
    registry: &Registry,
    machine_id: &str,
    lease: i64,
) -> Result<LeaderKey, RegistryError> {
    let mut client = registry.client();
    let resp = client
        .campaign(registry.election_name(), machine_id, lease)
        .await?;
    resp.leader().cloned().ok_or(RegistryError::NotLeader)
}

/// One engine pass; returns how many changes it made.
pub async fn reconcile_once(
    registry: &Registry,
    leader: &LeaderKey,
) -> Result<usize, RegistryError> {
    let machines = registry.machines().await?;
    let jobs = registry.jobs().await?;
    let machine_views: Vec<_> = machines.iter().map(machine_view).collect();
    let job_views: Vec<_> = jobs.iter().map(job_view).collect();
    let decisions = reconcile(&machine_views, &job_views);
    let mut changes = 0;
    for decision in decisions {
        let result = match &decision {
            Decision::Schedule { unit, machine } => {
                tracing::info!(unit, machine, "scheduling");
                registry.schedule(leader, unit, machine).await
            }
            Decision::Unschedule {
                unit,
                machine,
                reason,
            } => {
                tracing::info!(unit, machine, reason, "unscheduling");
                registry.unschedule(leader, unit).await
            }
        };
        match result {
            Ok(()) => changes += 1,
            // Destroyed meanwhile: the next pass sees it gone.
            Err(RegistryError::UnitNotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(changes)
}
