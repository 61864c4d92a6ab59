//! host-gw: each remote subnet is routed to its host's PublicIP on the external interface,
//! which only works when every host shares one L2 segment.

use anyhow::{bail, Result};

use super::{direct_entries, BackendOptions, ExternalInterface, Installed, LocalInfo};
use crate::netlink::Netlink;
use crate::subnet::Lease;

pub(super) fn prepare(ext: &ExternalInterface, opts: &BackendOptions) -> Result<LocalInfo> {
    if let Some(public_ip) = opts.public_ip.filter(|&ip| ip != ext.addr) {
        bail!(
            "the PublicIP {public_ip} differs from {}'s address {}: probably behind a NAT, \
             which the host-gw backend does not support",
            ext.name,
            ext.addr
        );
    }
    Ok(LocalInfo {
        mtu: ext.mtu,
        backend_type: "host-gw".into(),
        backend_data: None,
    })
}

/// The route to a remote subnet; None (with a warning) when its PublicIP is not directly
/// reachable on the external interface, where the kernel would refuse the route anyway.
pub(super) async fn plan(
    nl: &Netlink,
    ext: &ExternalInterface,
    lease: &Lease,
) -> Result<Option<Installed>> {
    if !nl
        .directly_reachable(lease.attrs.public_ip, Some(ext.index))
        .await?
    {
        tracing::warn!(
            "host-gw: skipping subnet {}: its host {} is not on the segment of {} ({})",
            lease.subnet,
            lease.attrs.public_ip,
            ext.name,
            ext.network()
        );
        return Ok(None);
    }
    Ok(Some(direct_entries(ext, lease)))
}
