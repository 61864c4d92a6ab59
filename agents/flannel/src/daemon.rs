//! flanneld from start to steady state: wait for the network config, prepare the backend
//! (the vxlan device, whose MAC goes into the lease), lease a subnet (the previous one if
//! possible), route to every other machine's subnet, write subnet.env, report ready — then
//! follow the leases as machines come and go, and renew ours ahead of expiry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use crate::backend::{Backend, BackendOptions};
use crate::config::FlannelConfig;
use crate::health::Readiness;
use crate::iptables;
use crate::netlink::Netlink;
use crate::registry::SubnetRegistry;
use crate::subnet::{LeaseAttrs, LeaseEvent};
use crate::subnet_env::{previous_subnet, SubnetEnv};

/// Runs until `shutdown` turns true. The subnet lease is kept on exit (as flanneld does), so
/// a restarted flanneld gets the same subnet back.
pub async fn run(
    config: FlannelConfig,
    readiness: Arc<Readiness>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // flanneld starts with the machine; etcd may come up later.
    let client = config
        .etcd()
        .connect_retrying(Duration::from_secs(10 * 365 * 24 * 3600))
        .await?;
    let registry =
        SubnetRegistry::new(client, &config.etcd_prefix).with_lease_ttl(config.subnet_lease_ttl);
    tracing::info!(key = %registry.config_key(), "waiting for the network config");
    let network = tokio::select! {
        n = registry.wait_network_config(Duration::from_secs(1)) => n,
        _ = agent_common::shutdown::requested(&mut shutdown) => return Ok(()),
    };
    tracing::info!(network = %network.network, backend = network.backend.backend_type.as_str(), "network config");

    let netlink = Netlink::connect()?;
    let selectors: Vec<String> = config.iface.iter().map(|s| s.to_string()).collect();
    let ext = netlink
        .external_interface(&selectors)
        .await
        .context("finding the interface to reach other machines over")?;
    let public_ip = config.public_ip.unwrap_or(ext.addr);
    let mut options = BackendOptions::new(network.backend.backend_type);
    options.vni = network.backend.vni;
    options.port = network.backend.port;
    options.direct_routing = network.backend.direct_routing;
    options.public_ip = Some(public_ip);
    let mut backend = Backend::prepare(netlink, &ext, &options).await?;
    let info = backend.local_info().clone();

    let attrs = LeaseAttrs {
        public_ip,
        backend_type: info.backend_type.clone(),
        backend_data: info.backend_data.clone(),
    };
    let previous = previous_subnet(&config.subnet_file);
    let mut lease = registry.acquire_lease(&network, &attrs, previous).await?;
    // The lease runs from here: with a short TTL, the setup below counts.
    let leased_at = tokio::time::Instant::now();
    tracing::info!(subnet = %lease.subnet, %public_ip, "leased");
    // The device must be up with its address before onlink routes through it are accepted.
    backend
        .configure_local(network.network, lease.subnet)
        .await?;
    let mut rule_sets = Vec::new();
    if config.ip_masq {
        rule_sets.push(iptables::masq_rules(network.network, lease.subnet));
    }
    if config.iptables_forward_rules {
        rule_sets.push(iptables::forward_rules(network.network));
    }
    for rules in &rule_sets {
        iptables::ensure(rules)?;
    }
    let (leases, revision) = registry.list_leases().await?;
    backend.sync_remotes(&leases).await?;
    write_subnet_env(
        &config.subnet_file,
        &network.network,
        &lease.subnet,
        info.mtu,
        config.ip_masq,
    )?;
    readiness.set_ready(true);
    // Type=notify: units ordered after flanneld (flannel-docker-opts, docker) start now.
    if let Err(e) = agent_common::sd_notify::ready() {
        tracing::warn!(error = %e, "could not tell systemd flanneld is ready");
    }
    tracing::info!(
        remotes = leases.len().saturating_sub(1),
        "routes in place; ready"
    );

    let (events_tx, mut events) = mpsc::channel(256);
    let watcher = {
        let registry = registry.clone();
        tokio::spawn(async move { registry.watch_leases(leases, revision, events_tx).await })
    };
    let renew_after = registry.renew_after(config.subnet_lease_renew_margin);
    // A failed renewal is retried well before a short lease (--subnet-lease-ttl) runs out.
    let renew_retry = (renew_after / 2).min(Duration::from_secs(5));
    tracing::info!(
        ttl = ?registry.lease_ttl(),
        ?renew_after,
        "renewing the subnet lease ahead of expiry"
    );
    let renew = tokio::time::sleep_until(leased_at + renew_after);
    tokio::pin!(renew);
    // Someone may flush flannel's rules (dockerd rewrites FORWARD when it starts): put them back.
    let mut resync = tokio::time::interval(config.iptables_resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = resync.tick(), if !rule_sets.is_empty() => {
                for rules in &rule_sets {
                    match iptables::ensure(rules) {
                        Ok(true) => tracing::info!(table = rules[0].table, "iptables rules were missing; added them again"),
                        Ok(false) => {}
                        Err(e) => tracing::warn!(error = %e, "checking flannel's iptables rules"),
                    }
                }
            }
            Some(event) = events.recv() => {
                let result = match &event {
                    LeaseEvent::Added(remote) => backend.add_remote(remote).await.map(|_| ()),
                    LeaseEvent::Removed(remote) => backend.remove_remote(remote).await.map(|_| ()),
                };
                if let Err(e) = result {
                    tracing::warn!(?event, error = %e, "could not follow a lease change");
                }
            }
            _ = &mut renew => {
                match registry.renew_lease(&lease).await {
                    Ok(renewed) => {
                        lease = renewed;
                        renew.as_mut().reset(tokio::time::Instant::now() + renew_after);
                    }
                    // Another machine holds our subnet now: routes and subnet.env would lie.
                    // Exiting lets systemd restart flanneld, which leases afresh.
                    Err(e @ crate::registry::RegistryError::LeaseLost { .. }) => {
                        watcher.abort();
                        return Err(e.into());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewing the subnet lease failed; retrying");
                        renew.as_mut().reset(tokio::time::Instant::now() + renew_retry);
                    }
                }
            }
            _ = agent_common::shutdown::requested(&mut shutdown) => break,
        }
    }
    watcher.abort();
    Ok(())
}

fn write_subnet_env(
    path: &Path,
    network: &ipnet::Ipv4Net,
    subnet: &ipnet::Ipv4Net,
    mtu: u32,
    ip_masq: bool,
) -> Result<()> {
    SubnetEnv {
        network: *network,
        subnet: *subnet,
        mtu,
        ip_masq,
    }
    .write(path)
    .with_context(|| format!("writing {}", path.display()))
}
