//! vxlan: the device `flannel.<VNI>` on the external interface, and per remote host a route
//! through it, a neighbour entry and an FDB entry (flannel's "no L2/L3 miss" scheme: nothing
//! is learned at run time, every entry is written when the lease appears).

use anyhow::{anyhow, Context, Result};
use ipnet::Ipv4Net;
use serde::Deserialize;

use super::{
    direct_entries, BackendOptions, ExternalInterface, Installed, LocalInfo, VXLAN_OVERHEAD,
};
use crate::netlink::{Link, MacAddr, Netlink, Route, VxlanSpec};
use crate::subnet::Lease;

/// The device's name for a VNI.
pub(super) fn device_name(vni: u32) -> String {
    format!("flannel.{vni}")
}

/// Creates `flannel.<VNI>` (or keeps a compatible one): VNI, local address and underlying
/// device from the external interface, the configured port (default 8472), no learning, MTU
/// 50 below the interface's.
pub(super) async fn ensure_device(
    nl: &Netlink,
    ext: &ExternalInterface,
    opts: &BackendOptions,
) -> Result<Link> {
    let mtu = ext
        .mtu
        .checked_sub(VXLAN_OVERHEAD)
        .filter(|&m| m >= 68)
        .ok_or_else(|| {
            anyhow!(
                "the MTU of {} ({}) is too small for vxlan",
                ext.name,
                ext.mtu
            )
        })?;
    let spec = VxlanSpec {
        name: device_name(opts.vni),
        vni: opts.vni,
        local: ext.addr,
        dev_index: ext.index,
        port: opts.port,
        mtu,
        learning: false,
    };
    nl.ensure_vxlan(&spec).await
}

pub(super) fn local_info(
    ext: &ExternalInterface,
    opts: &BackendOptions,
    device: &Link,
) -> Result<LocalInfo> {
    let mac = device
        .mac
        .ok_or_else(|| anyhow!("{} has no MAC address", device.name))?;
    Ok(LocalInfo {
        mtu: ext.mtu - VXLAN_OVERHEAD,
        backend_type: "vxlan".into(),
        backend_data: Some(serde_json::json!({ "VNI": opts.vni, "VtepMAC": mac.to_string() })),
    })
}

/// The device gets `<subnet's network address>/32`, the only address it has inside the
/// flannel network, and goes up.
pub(super) async fn configure(
    nl: &Netlink,
    device: &Link,
    network: Ipv4Net,
    own_subnet: Ipv4Net,
) -> Result<()> {
    let addr = Ipv4Net::new(own_subnet.network(), 32)?;
    nl.ensure_sole_address(device.index, addr, network)
        .await
        .with_context(|| format!("configuring {}", device.name))?;
    nl.set_link_up(device.index).await
}

/// A remote lease's `BackendData`.
#[derive(Debug, Deserialize)]
struct VxlanLeaseData {
    #[serde(rename = "VtepMAC")]
    vtep_mac: String,
}

fn vtep_mac(lease: &Lease) -> Result<MacAddr> {
    let data = lease
        .attrs
        .backend_data
        .clone()
        .ok_or_else(|| anyhow!("the lease of {} has no BackendData", lease.subnet))?;
    let data: VxlanLeaseData = serde_json::from_value(data)
        .with_context(|| format!("decoding the BackendData of {}", lease.subnet))?;
    data.vtep_mac
        .parse()
        .with_context(|| format!("the VtepMAC of {}", lease.subnet))
}

/// The vxlan way to a remote subnet: route `subnet via <its network address> dev
/// flannel.VNI onlink`, neighbour `<network address>` → VtepMAC, FDB VtepMAC → PublicIP.
pub(super) fn vxlan_entries(device: &Link, lease: &Lease) -> Result<Installed> {
    let mac = vtep_mac(lease)?;
    let gateway = lease.subnet.network();
    Ok(Installed::Vxlan {
        route: Route {
            dst: lease.subnet,
            gateway: Some(gateway),
            oif: Some(device.index),
            onlink: true,
        },
        neighbour: gateway,
        vtep_mac: mac,
        public_ip: lease.attrs.public_ip,
    })
}

/// What to install for a remote lease: with DirectRouting and the remote's PublicIP directly
/// reachable on the external interface, a plain route; otherwise the vxlan entries.
pub(super) async fn plan(
    nl: &Netlink,
    ext: &ExternalInterface,
    opts: &BackendOptions,
    device: &Link,
    lease: &Lease,
) -> Result<Installed> {
    if opts.direct_routing {
        match nl
            .directly_reachable(lease.attrs.public_ip, Some(ext.index))
            .await
        {
            Ok(true) => return Ok(direct_entries(ext, lease)),
            Ok(false) => {}
            Err(e) => tracing::warn!("DirectRouting check for {}: {e:#}", lease.attrs.public_ip),
        }
    }
    vxlan_entries(device, lease)
}
