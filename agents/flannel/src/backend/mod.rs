//! The backends: how packets for other hosts' subnets get there. `vxlan` (flannel's default)
//! encapsulates them through the device `flannel.<VNI>`; `host-gw` routes them to the other
//! host's PublicIP directly, which needs every host on one L2 segment.
//!
//! The daemon calls, in this order: [`Backend::prepare`] (before it acquires a lease: the
//! lease carries [`LocalInfo`]'s backend type and data), [`Backend::configure_local`] once it
//! has its subnet, then [`Backend::add_remote`] / [`Backend::remove_remote`] for each other
//! host's lease as the watch reports them, or [`Backend::sync_remotes`] with a full listing.
//! Everything is replace-or-create, so applying a lease twice is harmless, and the backend
//! remembers what it installed for each subnet, so a removal needs only the lease.

mod hostgw;
mod vxlan;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Result};
use ipnet::Ipv4Net;

pub use crate::netlink::ExternalInterface;
use crate::netlink::{Link, MacAddr, Netlink, Route};
use crate::subnet::Lease;

/// What the vxlan header and outer UDP/IP headers take off the external interface's MTU.
pub const VXLAN_OVERHEAD: u32 = 50;
/// flannel's default VNI.
pub const DEFAULT_VNI: u32 = 1;

pub use crate::network::BackendType;

/// The network config's `Backend` section, as far as the backends use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOptions {
    pub backend_type: BackendType,
    /// vxlan: the VNI, and the device's name `flannel.<VNI>` (default 1).
    pub vni: u32,
    /// vxlan: the UDP port; 0 for the kernel's and flannel's default, 8472.
    pub port: u16,
    /// vxlan: plain routes to hosts on the same L2 segment, vxlan only for the others.
    pub direct_routing: bool,
    /// The PublicIP this host announces, when `--public-ip` sets one; host-gw refuses one that
    /// differs from the interface's address (flannel: "probably you're on a NAT").
    pub public_ip: Option<Ipv4Addr>,
}

impl BackendOptions {
    /// flannel's defaults for a backend type.
    pub fn new(backend_type: BackendType) -> BackendOptions {
        BackendOptions {
            backend_type,
            vni: DEFAULT_VNI,
            port: 0,
            direct_routing: false,
            public_ip: None,
        }
    }
}

/// What the lease of this host says about its backend, and the MTU for subnet.env.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalInfo {
    /// vxlan: the external interface's MTU less 50; host-gw: the interface's MTU.
    pub mtu: u32,
    /// The lease's `BackendType`: "vxlan" or "host-gw".
    pub backend_type: String,
    /// The lease's `BackendData`: vxlan's `{"VNI":1,"VtepMAC":"…"}`; None for host-gw.
    pub backend_data: Option<serde_json::Value>,
}

/// What the backend installed for one remote subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// vxlan: `route` (the subnet via its network address, onlink on flannel.VNI), the
    /// neighbour entry network address → VtepMAC, the FDB entry VtepMAC → PublicIP.
    Vxlan {
        route: Route,
        neighbour: Ipv4Addr,
        vtep_mac: MacAddr,
        public_ip: Ipv4Addr,
    },
    /// host-gw, or vxlan with DirectRouting to a host on our segment: the subnet via the
    /// host's PublicIP on the external interface.
    Direct { route: Route },
}

impl Installed {
    /// The route to the subnet.
    pub fn route(&self) -> &Route {
        match self {
            Installed::Vxlan { route, .. } | Installed::Direct { route } => route,
        }
    }
}

/// A backend set up on this host.
#[derive(Debug)]
pub struct Backend {
    nl: Netlink,
    ext: ExternalInterface,
    opts: BackendOptions,
    local: LocalInfo,
    /// vxlan: the device flannel.VNI.
    device: Option<Link>,
    network: Option<Ipv4Net>,
    own_subnet: Option<Ipv4Net>,
    installed: BTreeMap<Ipv4Net, Installed>,
}

impl Backend {
    /// Sets up what the backend needs before the lease: vxlan creates (or keeps a
    /// compatible) `flannel.<VNI>` on `ext` and reports its MAC as VtepMAC; host-gw checks
    /// that the PublicIP is the interface's own.
    pub async fn prepare(
        nl: Netlink,
        ext: &ExternalInterface,
        opts: &BackendOptions,
    ) -> Result<Backend> {
        let (local, device) = match opts.backend_type {
            BackendType::Vxlan => {
                let device = vxlan::ensure_device(&nl, ext, opts).await?;
                (vxlan::local_info(ext, opts, &device)?, Some(device))
            }
            BackendType::HostGw => (hostgw::prepare(ext, opts)?, None),
        };
        Ok(Backend {
            nl,
            ext: ext.clone(),
            opts: opts.clone(),
            local,
            device,
            network: None,
            own_subnet: None,
            installed: BTreeMap::new(),
        })
    }

    /// The MTU and lease attributes of this host.
    pub fn local_info(&self) -> &LocalInfo {
        &self.local
    }

    pub fn backend_type(&self) -> BackendType {
        self.opts.backend_type
    }

    pub fn external_interface(&self) -> &ExternalInterface {
        &self.ext
    }

    /// vxlan: the device `flannel.<VNI>` as it was after [`Backend::prepare`].
    pub fn device(&self) -> Option<&Link> {
        self.device.as_ref()
    }

    /// What is installed, per remote subnet.
    pub fn installed(&self) -> &BTreeMap<Ipv4Net, Installed> {
        &self.installed
    }

    /// Sets up this host's side once it holds `own_subnet` of `network`: vxlan gives
    /// flannel.VNI the address `<subnet's network address>/32` (the only one it has inside
    /// `network`; flannel's choice: a /32 creates no broadcast or subnet route, and gives
    /// host-to-remote traffic a source address in the flannel network) and sets it up.
    /// Must come before [`Backend::add_remote`] (an onlink route needs the device up).
    pub async fn configure_local(&mut self, network: Ipv4Net, own_subnet: Ipv4Net) -> Result<()> {
        if !network.contains(&own_subnet) {
            bail!("subnet {own_subnet} is not inside the network {network}");
        }
        if let Some(device) = &self.device {
            vxlan::configure(&self.nl, device, network, own_subnet).await?;
        }
        self.network = Some(network);
        self.own_subnet = Some(own_subnet);
        Ok(())
    }

    /// Installs the routes (and for vxlan the neighbour and FDB entries) to another host's
    /// subnet, replacing what an earlier version of the lease installed. Returns what is
    /// now installed; None when the lease is skipped with a warning: another backend type,
    /// this host's own subnet or address, or (host-gw) a PublicIP not on our segment.
    pub async fn add_remote(&mut self, lease: &Lease) -> Result<Option<Installed>> {
        if !self.applies_to(lease) {
            // Whatever an earlier version of this lease installed no longer applies.
            if self.installed.contains_key(&lease.subnet) {
                self.uninstall(lease.subnet).await?;
            }
            return Ok(None);
        }
        let wanted = match self.opts.backend_type {
            BackendType::Vxlan => {
                let device = self
                    .device
                    .as_ref()
                    .ok_or_else(|| anyhow!("no vxlan device"))?;
                Some(vxlan::plan(&self.nl, &self.ext, &self.opts, device, lease).await?)
            }
            BackendType::HostGw => hostgw::plan(&self.nl, &self.ext, lease).await?,
        };
        let Some(wanted) = wanted else {
            if self.installed.contains_key(&lease.subnet) {
                self.uninstall(lease.subnet).await?;
            }
            return Ok(None);
        };
        if let Some(previous) = self.installed.get(&lease.subnet).copied() {
            if previous != wanted {
                tracing::info!("subnet {} changed: {previous:?} → {wanted:?}", lease.subnet);
                self.remove_stale(&previous, &wanted).await;
            }
        }
        match self.apply(&wanted).await {
            Ok(()) => {
                tracing::info!(
                    "subnet {} via {}: {}",
                    lease.subnet,
                    lease.attrs.public_ip,
                    wanted.route()
                );
                self.installed.insert(lease.subnet, wanted);
                Ok(Some(wanted))
            }
            Err(e) => {
                // Leave nothing half-done: the next listing tries again from scratch.
                self.remove_entries(&wanted).await;
                if let Some(previous) = self.installed.remove(&lease.subnet) {
                    self.remove_entries(&previous).await;
                }
                Err(e.context(format!("adding subnet {}", lease.subnet)))
            }
        }
    }

    /// Removes what [`Backend::add_remote`] installed for the lease's subnet. For a subnet
    /// this backend does not remember (flanneld restarted since), it removes what the lease
    /// implies, where present. Returns what was removed.
    pub async fn remove_remote(&mut self, lease: &Lease) -> Result<Option<Installed>> {
        if self.installed.contains_key(&lease.subnet) {
            return self.uninstall(lease.subnet).await;
        }
        if !self.applies_to(lease) {
            return Ok(None);
        }
        let mut candidates = Vec::new();
        match self.opts.backend_type {
            BackendType::Vxlan => {
                if let Some(device) = &self.device {
                    if let Ok(entries) = vxlan::vxlan_entries(device, lease) {
                        candidates.push(entries);
                    }
                }
                if self.opts.direct_routing {
                    candidates.push(direct_entries(&self.ext, lease));
                }
            }
            BackendType::HostGw => candidates.push(direct_entries(&self.ext, lease)),
        }
        let mut removed = None;
        for entries in candidates {
            if self.delete_entries(&entries).await? {
                removed = Some(entries);
            }
        }
        Ok(removed)
    }

    /// Makes the installed set match a full listing of leases: subnets no longer listed are
    /// removed, every listed one is (re)applied. Tries every lease; fails afterwards if any
    /// failed.
    pub async fn sync_remotes(&mut self, leases: &[Lease]) -> Result<()> {
        let listed: std::collections::BTreeSet<Ipv4Net> = leases.iter().map(|l| l.subnet).collect();
        let mut failures = Vec::new();
        let gone: Vec<Ipv4Net> = self
            .installed
            .keys()
            .filter(|s| !listed.contains(s))
            .copied()
            .collect();
        for subnet in gone {
            if let Err(e) = self.uninstall(subnet).await {
                tracing::warn!("{e:#}");
                failures.push(subnet);
            }
        }
        for lease in leases {
            if let Err(e) = self.add_remote(lease).await {
                tracing::warn!("{e:#}");
                failures.push(lease.subnet);
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            let list: Vec<String> = failures.iter().map(|s| s.to_string()).collect();
            bail!("could not apply subnets {}", list.join(", "))
        }
    }

    /// Whether a lease is one this backend routes to (else it says why, once, as a warning).
    fn applies_to(&self, lease: &Lease) -> bool {
        if Some(lease.subnet) == self.own_subnet {
            tracing::debug!("skipping our own subnet {}", lease.subnet);
            return false;
        }
        if lease.attrs.backend_type != self.opts.backend_type.as_str() {
            tracing::warn!(
                "ignoring subnet {}: backend type {:?}, ours is {}",
                lease.subnet,
                lease.attrs.backend_type,
                self.opts.backend_type
            );
            return false;
        }
        if lease.attrs.public_ip == self.ext.addr
            || Some(lease.attrs.public_ip) == self.opts.public_ip
        {
            tracing::warn!(
                "ignoring subnet {}: its PublicIP {} is this host's",
                lease.subnet,
                lease.attrs.public_ip
            );
            return false;
        }
        true
    }

    async fn uninstall(&mut self, subnet: Ipv4Net) -> Result<Option<Installed>> {
        let Some(entries) = self.installed.remove(&subnet) else {
            return Ok(None);
        };
        tracing::info!("removing subnet {subnet}: {}", entries.route());
        self.delete_entries(&entries).await?;
        Ok(Some(entries))
    }

    /// Installs in flannel's order: neighbour and FDB entries before the route, so that the
    /// kernel never has the route without the entries it needs to use it.
    async fn apply(&self, entries: &Installed) -> Result<()> {
        match *entries {
            Installed::Vxlan {
                route,
                neighbour,
                vtep_mac,
                public_ip,
            } => {
                let ifindex = route.oif.unwrap_or_default();
                self.nl
                    .replace_neighbour(ifindex, neighbour, vtep_mac)
                    .await?;
                self.nl.replace_fdb(ifindex, vtep_mac, public_ip).await?;
                self.nl.replace_route(&route).await?;
            }
            Installed::Direct { route } => self.nl.replace_route(&route).await?,
        }
        Ok(())
    }

    /// Deletes the entries (route first); true if any was there. Tries all before failing.
    async fn delete_entries(&self, entries: &Installed) -> Result<bool> {
        let mut found = false;
        let mut first_error = None;
        let mut note = |r: Result<bool>| match r {
            Ok(f) => found |= f,
            Err(e) => {
                tracing::warn!("{e:#}");
                first_error.get_or_insert(e);
            }
        };
        match *entries {
            Installed::Vxlan {
                route,
                neighbour,
                vtep_mac,
                public_ip,
            } => {
                let ifindex = route.oif.unwrap_or_default();
                note(self.nl.delete_route(&route).await);
                note(self.nl.delete_fdb(ifindex, vtep_mac, public_ip).await);
                note(self.nl.delete_neighbour(ifindex, neighbour).await);
            }
            Installed::Direct { route } => note(self.nl.delete_route(&route).await),
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(found),
        }
    }

    /// Best effort, for cleaning up after a failure.
    async fn remove_entries(&self, entries: &Installed) {
        let _ = self.delete_entries(entries).await;
    }

    /// Before `wanted` replaces `previous` for one subnet: removes what the replacement will
    /// not overwrite (an FDB entry for a MAC or address that changed, a neighbour entry the
    /// new way does not use). The route itself is replaced in place.
    async fn remove_stale(&self, previous: &Installed, wanted: &Installed) {
        if let Installed::Vxlan {
            route,
            neighbour,
            vtep_mac,
            public_ip,
        } = *previous
        {
            let ifindex = route.oif.unwrap_or_default();
            let (keep_fdb, keep_neighbour) = match *wanted {
                Installed::Vxlan {
                    route: new_route,
                    neighbour: new_neighbour,
                    vtep_mac: new_mac,
                    public_ip: new_ip,
                } => (
                    new_route.oif == route.oif && new_mac == vtep_mac && new_ip == public_ip,
                    new_route.oif == route.oif && new_neighbour == neighbour,
                ),
                Installed::Direct { .. } => (false, false),
            };
            if !keep_fdb {
                let _ = self.nl.delete_fdb(ifindex, vtep_mac, public_ip).await;
            }
            if !keep_neighbour {
                let _ = self.nl.delete_neighbour(ifindex, neighbour).await;
            }
        }
        if previous.route().dst != wanted.route().dst || previous.route().oif != wanted.route().oif
        {
            let _ = self.nl.delete_route(previous.route()).await;
        }
    }
}

/// The plain route `subnet via PublicIP dev <external interface>`.
fn direct_entries(ext: &ExternalInterface, lease: &Lease) -> Installed {
    Installed::Direct {
        route: Route {
            dst: lease.subnet,
            gateway: Some(lease.attrs.public_ip),
            oif: Some(ext.index),
            onlink: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_types_parse_as_flannel_names_them() {
        assert_eq!("vxlan".parse::<BackendType>().unwrap(), BackendType::Vxlan);
        assert_eq!("VXLAN".parse::<BackendType>().unwrap(), BackendType::Vxlan);
        assert_eq!(
            "host-gw".parse::<BackendType>().unwrap(),
            BackendType::HostGw
        );
        assert_eq!(BackendType::HostGw.to_string(), "host-gw");
        assert!("udp".parse::<BackendType>().is_err());
    }

    #[test]
    fn defaults_are_flannels() {
        let opts = BackendOptions::new(BackendType::Vxlan);
        assert_eq!((opts.vni, opts.port, opts.direct_routing), (1, 0, false));
        assert_eq!(vxlan::device_name(opts.vni), "flannel.1");
    }

    #[test]
    fn a_backend_can_move_between_tasks() {
        fn send_and_sync<T: Send + Sync>() {}
        send_and_sync::<Backend>();
        send_and_sync::<Netlink>();
    }
}
