//! A machine's presence in the cluster: an etcd lease of agent_ttl kept alive at a third of
//! it, with the machine object published under it. Everything this machine publishes (its
//! unit states, its engine candidacy) hangs off the same lease, so when fleetd stops or loses
//! etcd for longer than agent_ttl, all of it disappears together and the engine reschedules.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::model::Machine;
use crate::registry::{Registry, RegistryError};

/// A registered machine. Dropping it stops the keep-alive (the lease then runs out).
pub struct Session {
    lease: i64,
    lost: watch::Receiver<bool>,
    keeper: JoinHandle<()>,
}

impl Session {
    /// Grants a lease and registers `machine` under it. If a live lease already holds the
    /// machine ID, it may be this machine's previous fleetd whose lease has not run out yet:
    /// registration is retried for one `ttl`; after that the other holder is alive, and that
    /// is [`RegistryError::DuplicateMachine`].
    pub async fn start(
        registry: &Registry,
        machine: &Machine,
        ttl: Duration,
    ) -> Result<Session, RegistryError> {
        let ttl_secs = ttl.as_secs().max(1) as i64;
        let mut client = registry.client();
        let lease = client.lease_grant(ttl_secs, None).await?.id();
        let give_up = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
        loop {
            match registry.register_machine(machine, lease).await {
                Ok(()) => break,
                Err(RegistryError::DuplicateMachine(id))
                    if tokio::time::Instant::now() < give_up =>
                {
                    tracing::info!(machine = %id, "machine ID still registered; waiting for the old lease to run out");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    let _ = client.lease_revoke(lease).await;
                    return Err(e);
                }
            }
        }
        let (lost_tx, lost) = watch::channel(false);
        let keeper = tokio::spawn(keep_alive(registry.clone(), lease, ttl, lost_tx));
        tracing::info!(machine = %machine.id, lease, ?ttl, "registered");
        Ok(Session {
            lease,
            lost,
            keeper,
        })
    }

    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Resolves once the lease is gone (expired while etcd was out of reach, or revoked).
    pub async fn lost(&self) {
        let mut lost = self.lost.clone();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Ends the session at once: the lease is revoked, so the machine and its states vanish
    /// now instead of after agent_ttl.
    pub async fn end(self, registry: &Registry) {
        self.keeper.abort();
        let _ = registry.client().lease_revoke(self.lease).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

/// Refreshes `lease` every ttl/3. Errors (etcd restarting, a broken stream) are retried until
/// etcd answers that the lease no longer exists.
async fn keep_alive(registry: Registry, lease: i64, ttl: Duration, lost: watch::Sender<bool>) {
    let period = (ttl / 3).max(Duration::from_millis(200));
    loop {
        let mut client = registry.client();
        let (mut keeper, mut stream) = match client.lease_keep_alive(lease).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "lease keep-alive: etcd unreachable; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            if let Err(e) = keeper.keep_alive().await {
                tracing::warn!(error = %e, "lease keep-alive failed; reconnecting");
                break;
            }
            match stream.message().await {
                Ok(Some(resp)) if resp.ttl() <= 0 => {
                    tracing::warn!(lease, "lease expired; this machine left the cluster");
                    let _ = lost.send(true);
                    return;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    tracing::warn!("lease keep-alive stream ended; reconnecting");
                    break;
                }
            }
            tokio::time::sleep(period).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
