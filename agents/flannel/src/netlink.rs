//! The kernel's routing tables over rtnetlink, for the backends: links (the vxlan device),
//! addresses, routes, IPv4 neighbour entries and the vxlan device's bridge FDB. Nothing here
//! runs `ip`.
//!
//! A [`Netlink`] talks to the network namespace of the thread that called
//! [`Netlink::connect`]: the socket is bound to it for its whole life, whichever thread polls
//! it later.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};

/// The UDP port the kernel (and flannel) uses for VXLAN when none is configured.
pub const DEFAULT_VXLAN_PORT: u16 = 8472;

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff` as flannel's VtepMAC is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random unicast, locally administered address (what flannel gives its vxlan device,
    /// so that the kernel or udev does not pick one that changes later).
    pub fn random_local() -> MacAddr {
        let mut bytes = [0u8; 6];
        let mut filled = 0;
        while filled < bytes.len() {
            // SAFETY: writes at most the remaining length into the buffer it points into.
            let n = unsafe {
                libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0)
            };
            if n > 0 {
                filled += n as usize;
            } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // No entropy source at all: fall back on time and pid, still unique enough
                // for a link-local MAC.
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
                    ^ u128::from(std::process::id()) << 64;
                bytes.copy_from_slice(&seed.to_le_bytes()[..6]);
                break;
            }
        }
        bytes[0] = (bytes[0] & 0xfe) | 0x02;
        MacAddr(bytes)
    }

    fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<MacAddr> {
        let mut bytes = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in bytes.iter_mut() {
            let part = parts
                .next()
                .ok_or_else(|| anyhow!("{s:?} is not a MAC address"))?;
            if part.len() != 2 {
                bail!("{s:?} is not a MAC address");
            }
            *byte =
                u8::from_str_radix(part, 16).map_err(|_| anyhow!("{s:?} is not a MAC address"))?;
        }
        if parts.next().is_some() {
            bail!("{s:?} is not a MAC address");
        }
        Ok(MacAddr(bytes))
    }
}

/// The interface flannel talks to other hosts over (`--iface`, else the default route's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalInterface {
    pub name: String,
    pub index: u32,
    /// Its IPv4 address: the vxlan device's local address, and the default PublicIP.
    pub addr: Ipv4Addr,
    /// The prefix length of that address.
    pub prefix_len: u8,
    pub mtu: u32,
}

impl ExternalInterface {
    /// The subnet the interface's address is on.
    pub fn network(&self) -> Ipv4Net {
        Ipv4Net::new(self.addr, self.prefix_len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| Ipv4Net::from(self.addr))
    }
}

/// A link as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// The rtnetlink kind ("vxlan", "bridge", "veth", …); None for plain devices.
    pub kind: Option<String>,
    /// The vxlan attributes, for a vxlan link.
    pub vxlan: Option<VxlanAttrs>,
}

/// What a vxlan device is made of (the `ip link add … type vxlan` arguments flannel uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanAttrs {
    pub vni: u32,
    /// The local (source) address of the encapsulating packets.
    pub local: Option<Ipv4Addr>,
    /// The index of the underlying (external) device.
    pub dev_index: Option<u32>,
    /// The UDP destination port.
    pub port: u16,
    pub learning: bool,
}

/// The vxlan device to create or update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub dev_index: u32,
    /// 0 means [`DEFAULT_VXLAN_PORT`].
    pub port: u16,
    pub mtu: u32,
    pub learning: bool,
}

/// An IPv4 route in the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    /// The output device's index.
    pub oif: Option<u32>,
    /// RTNH_F_ONLINK: the gateway is on the device even without a matching address.
    pub onlink: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        Ok(())
    }
}

/// An IPv4 neighbour (ARP) entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Neighbour {
    pub ifindex: u32,
    pub ip: Ipv4Addr,
    pub mac: Option<MacAddr>,
    pub permanent: bool,
}

/// A bridge forwarding-database entry (on a vxlan device: which VTEP a MAC is behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FdbEntry {
    pub ifindex: u32,
    pub mac: MacAddr,
    /// The remote VTEP's address (NDA_DST).
    pub dst: Option<Ipv4Addr>,
    pub permanent: bool,
    /// NTF_SELF: the entry is the device's own (the vxlan driver's), not a bridge master's.
    pub is_self: bool,
}

/// The errno a netlink request failed with, if it was refused by the kernel.
pub fn errno_of(err: &anyhow::Error) -> Option<i32> {
    err.chain()
        .find_map(|e| match e.downcast_ref::<rtnetlink::Error>() {
            Some(rtnetlink::Error::NetlinkError(msg)) => msg.code.map(|c| -c.get()),
            _ => None,
        })
}

fn nl_errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// "It was not there": what a delete of something already gone answers.
fn is_absent(err: &rtnetlink::Error) -> bool {
    matches!(
        nl_errno(err),
        Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL)
    )
}

/// A connection to rtnetlink in one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Netlink")
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace and spawns its connection
    /// on the current tokio runtime (panics outside one, like `tokio::spawn`).
    pub fn connect() -> Result<Netlink> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening an rtnetlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    // ---- links ----

    /// Every link.
    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing links")?;
        Ok(msgs.iter().map(link_from_message).collect())
    }

    /// The link called `name`, None if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_name(name)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.as_ref().map(link_from_message)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
        }
    }

    /// The link with index `index`, None if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let found = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await;
        match found {
            Ok(msg) => Ok(msg.as_ref().map(link_from_message)),
            Err(e) if is_absent(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("looking up link #{index}")),
        }
    }

    /// Sets a link administratively up.
    pub async fn set_link_up(&self, index: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .with_context(|| format!("setting link #{index} up"))
    }

    /// Sets a link's MTU.
    pub async fn set_link_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .with_context(|| format!("setting the MTU of link #{index} to {mtu}"))
    }

    /// Deletes a link; false if it was already gone.
    pub async fn delete_link(&self, index: u32) -> Result<bool> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("deleting link #{index}")),
        }
    }

    /// Creates the vxlan device `spec` describes, or keeps the one of that name if it is
    /// compatible (same VNI, local address, underlying device and port, learning as asked) and
    /// only brings its MTU in line; an incompatible one is deleted and created anew (flannel's
    /// `ensureLink`). A new device gets a random locally administered MAC; a kept one keeps
    /// its MAC, so the VtepMAC other hosts know stays valid across restarts.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<Link> {
        let port = if spec.port == 0 {
            DEFAULT_VXLAN_PORT
        } else {
            spec.port
        };
        if let Some(existing) = self.link_by_name(&spec.name).await? {
            match vxlan_incompatibility(&existing, spec, port) {
                None => {
                    if existing.mtu != spec.mtu {
                        self.set_link_mtu(existing.index, spec.mtu).await?;
                    }
                    return self
                        .link_by_index(existing.index)
                        .await?
                        .ok_or_else(|| anyhow!("{} vanished", spec.name));
                }
                Some(why) => {
                    tracing::warn!(
                        "{} already exists with an incompatible configuration ({why}); recreating it",
                        spec.name
                    );
                    self.delete_link(existing.index).await?;
                }
            }
        }
        let message = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.dev_index)
            .local(spec.local)
            .port(port)
            .learning(spec.learning)
            .mtu(spec.mtu)
            .address(MacAddr::random_local().0.to_vec())
            .build();
        self.handle
            .link()
            .add(message)
            .execute()
            .await
            .with_context(|| format!("creating vxlan device {}", spec.name))?;
        self.link_by_name(&spec.name)
            .await?
            .ok_or_else(|| anyhow!("{} was created but cannot be found", spec.name))
    }

    // ---- addresses ----

    /// The IPv4 addresses on a link (address and prefix length).
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Net>> {
        Ok(self
            .ipv4_address_messages(index)
            .await?
            .iter()
            .filter_map(address_of)
            .collect())
    }

    async fn ipv4_address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing the addresses of link #{index}"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
            .collect())
    }

    /// Adds an IPv4 address to a link; already having it is fine.
    pub async fn add_address(&self, index: u32, addr: Ipv4Net) -> Result<()> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding address {addr} to link #{index}"))
    }

    /// Removes an IPv4 address from a link; false if it did not have it.
    pub async fn delete_address(&self, index: u32, addr: Ipv4Net) -> Result<bool> {
        for msg in self.ipv4_address_messages(index).await? {
            if address_of(&msg) == Some(addr) {
                return match self.handle.address().del(msg).execute().await {
                    Ok(()) => Ok(true),
                    Err(e) if is_absent(&e) => Ok(false),
                    Err(e) => Err(e)
                        .with_context(|| format!("removing address {addr} from link #{index}")),
                };
            }
        }
        Ok(false)
    }

    /// Makes `addr` the only address of the link inside `within` (flannel's
    /// `EnsureV4AddressOnLink`): others in that range are removed, `addr` added if missing.
    pub async fn ensure_sole_address(
        &self,
        index: u32,
        addr: Ipv4Net,
        within: Ipv4Net,
    ) -> Result<()> {
        let mut present = false;
        for existing in self.ipv4_addresses(index).await? {
            if existing == addr {
                present = true;
            } else if within.contains(&existing.addr()) {
                tracing::info!("removing address {existing} from link #{index}");
                self.delete_address(index, existing).await?;
            }
        }
        if !present {
            self.add_address(index, addr).await?;
        }
        Ok(())
    }

    // ---- the external interface ----

    /// The interface to reach other hosts over, as flanneld picks it: the first of
    /// `candidates` (each an interface name or one of its IPv4 addresses) that exists, else
    /// the interface of the default route. An interface named by address uses that address;
    /// otherwise its first global IPv4 address (a link-local one if it has nothing else).
    pub async fn external_interface(&self, candidates: &[String]) -> Result<ExternalInterface> {
        if candidates.is_empty() {
            let index = self.default_route_interface().await?;
            return self.interface_with_address(index, None).await;
        }
        let mut errors = Vec::new();
        for candidate in candidates {
            let found = match candidate.parse::<Ipv4Addr>() {
                Ok(ip) => match self.interface_holding(ip).await {
                    Ok(Some(index)) => self.interface_with_address(index, Some(ip)).await,
                    Ok(None) => Err(anyhow!("no interface has the address {ip}")),
                    Err(e) => Err(e),
                },
                Err(_) => match self.link_by_name(candidate).await {
                    Ok(Some(link)) => self.interface_with_address(link.index, None).await,
                    Ok(None) => Err(anyhow!("no interface named {candidate}")),
                    Err(e) => Err(e),
                },
            };
            match found {
                Ok(ext) => return Ok(ext),
                Err(e) => errors.push(format!("{candidate}: {e:#}")),
            }
        }
        bail!(
            "none of the interfaces given with --iface is usable ({})",
            errors.join("; ")
        )
    }

    async fn default_route_interface(&self) -> Result<u32> {
        for route in self.route_messages().await? {
            if route.header.destination_prefix_length != 0
                || route.header.kind != RouteType::Unicast
            {
                continue;
            }
            if let Some(oif) = route_oif(&route) {
                return Ok(oif);
            }
            bail!("found the default route but not its interface");
        }
        bail!("there is no default route: name the interface with --iface")
    }

    async fn interface_holding(&self, ip: Ipv4Addr) -> Result<Option<u32>> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing addresses")?;
        Ok(msgs
            .iter()
            .find(|m| address_of(m).map(|a| a.addr()) == Some(ip))
            .map(|m| m.header.index))
    }

    async fn interface_with_address(
        &self,
        index: u32,
        want: Option<Ipv4Addr>,
    ) -> Result<ExternalInterface> {
        let link = self
            .link_by_index(index)
            .await?
            .ok_or_else(|| anyhow!("interface #{index} does not exist"))?;
        let addrs = self.ipv4_addresses(index).await?;
        let chosen = match want {
            Some(ip) => addrs.iter().find(|a| a.addr() == ip),
            None => addrs
                .iter()
                .find(|a| !a.addr().is_link_local() && !a.addr().is_loopback())
                .or_else(|| addrs.iter().find(|a| a.addr().is_link_local())),
        }
        .ok_or_else(|| anyhow!("interface {} has no usable IPv4 address", link.name))?;
        if link.mtu == 0 {
            bail!("interface {} reports an MTU of 0", link.name);
        }
        Ok(ExternalInterface {
            name: link.name,
            index,
            addr: chosen.addr(),
            prefix_len: chosen.prefix_len(),
            mtu: link.mtu,
        })
    }

    // ---- routes ----

    async fn route_messages(&self) -> Result<Vec<RouteMessage>> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(request)
            .execute()
            .try_collect()
            .await
            .context("listing routes")?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.address_family == AddressFamily::Inet && route_table(m) == 254)
            .collect())
    }

    /// The unicast IPv4 routes of the main table.
    pub async fn routes(&self) -> Result<Vec<Route>> {
        Ok(self
            .route_messages()
            .await?
            .iter()
            .filter(|m| m.header.kind == RouteType::Unicast)
            .map(route_from_message)
            .collect())
    }

    /// What the kernel would use to reach `ip` (`ip route get`): the gateway is None when
    /// `ip` is directly connected. None when the kernel has no route at all.
    pub async fn route_to(&self, ip: Ipv4Addr) -> Result<Option<(Route, RouteType)>> {
        let request = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .build();
        let mut request = self.handle.route().get(request);
        // A lookup, not a dump: the kernel answers with the one route it would take.
        request.message_mut().header.table = RouteHeader::RT_TABLE_UNSPEC;
        request.message_mut().header.protocol = Default::default();
        request.message_mut().header.scope = Default::default();
        request.message_mut().header.kind = RouteType::Unspec;
        match request.execute().try_next().await {
            Ok(Some(msg)) => Ok(Some((route_from_message(&msg), msg.header.kind))),
            Ok(None) => Ok(None),
            Err(e) if matches!(nl_errno(&e), Some(libc::ENETUNREACH | libc::EHOSTUNREACH)) => {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("looking up the route to {ip}")),
        }
    }

    /// Whether `ip` is on a segment directly attached to this host: the kernel's route to it
    /// has no gateway (flannel's `DirectRouting` test). Only `oif`, if given, counts as the
    /// segment.
    pub async fn directly_reachable(&self, ip: Ipv4Addr, oif: Option<u32>) -> Result<bool> {
        Ok(match self.route_to(ip).await? {
            Some((route, RouteType::Unicast)) => {
                route.gateway.is_none() && (oif.is_none() || route.oif == oif)
            }
            _ => false,
        })
    }

    fn route_message(route: &Route) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len());
        if let Some(gw) = route.gateway {
            builder = builder.gateway(gw);
        }
        if let Some(oif) = route.oif {
            builder = builder.output_interface(oif);
        }
        if route.onlink {
            builder = builder.onlink();
        }
        builder.build()
    }

    /// Adds the route or replaces the one to the same destination (`ip route replace`).
    pub async fn replace_route(&self, route: &Route) -> Result<()> {
        self.handle
            .route()
            .add(Self::route_message(route))
            .replace()
            .execute()
            .await
            .with_context(|| format!("replacing route {route}"))
    }

    /// Deletes the route to `route.dst` that goes through its gateway and device (so another
    /// route to the same destination is left alone); false if there was none.
    pub async fn delete_route(&self, route: &Route) -> Result<bool> {
        let mut message = Self::route_message(route);
        message.header.flags = RouteFlags::empty();
        match self.handle.route().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("deleting route {route}")),
        }
    }

    // ---- neighbours ----

    /// Adds or replaces a permanent IPv4 neighbour entry `ip` → `mac` on a link.
    pub async fn replace_neighbour(&self, ifindex: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .kind(RouteType::Unicast)
            .replace()
            .execute()
            .await
            .with_context(|| format!("setting neighbour {ip} → {mac} on link #{ifindex}"))
    }

    /// Deletes the IPv4 neighbour entry for `ip` on a link; false if there was none.
    pub async fn delete_neighbour(&self, ifindex: u32, ip: Ipv4Addr) -> Result<bool> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = ifindex;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e).with_context(|| format!("deleting neighbour {ip} on link #{ifindex}")),
        }
    }

    /// The neighbour-table messages of `family` (Inet: ARP entries, Bridge: FDB entries) for
    /// one link.
    async fn neighbour_messages(
        &self,
        family: AddressFamily,
        ifindex: u32,
    ) -> Result<Vec<NeighbourMessage>> {
        let msgs: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing {family:?} neighbour entries"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.family == family && m.header.ifindex == ifindex)
            .collect())
    }

    /// The IPv4 neighbour entries of a link.
    pub async fn neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>> {
        Ok(self
            .neighbour_messages(AddressFamily::Inet, ifindex)
            .await?
            .iter()
            .filter_map(|m| {
                Some(Neighbour {
                    ifindex,
                    ip: neighbour_dst(m)?,
                    mac: neighbour_lladdr(m),
                    permanent: m.header.state == NeighbourState::Permanent,
                })
            })
            .collect())
    }

    // ---- the vxlan device's forwarding database ----

    /// Adds or replaces the permanent FDB entry `mac` → VTEP `dst` on a vxlan device
    /// (`bridge fdb replace MAC dev DEV dst DST self permanent`).
    pub async fn replace_fdb(&self, ifindex: u32, mac: MacAddr, dst: Ipv4Addr) -> Result<()> {
        self.handle
            .neighbours()
            .add_bridge(ifindex, &mac.0)
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .destination(IpAddr::V4(dst))
            .replace()
            .execute()
            .await
            .with_context(|| format!("setting FDB entry {mac} → {dst} on link #{ifindex}"))
    }

    /// Deletes the FDB entry `mac` → `dst` of a vxlan device; false if there was none.
    pub async fn delete_fdb(&self, ifindex: u32, mac: MacAddr, dst: Ipv4Addr) -> Result<bool> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = ifindex;
        message.header.flags = NeighbourFlags::Own;
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(e)
                .with_context(|| format!("deleting FDB entry {mac} → {dst} on link #{ifindex}")),
        }
    }

    /// The FDB entries of a device.
    pub async fn fdb(&self, ifindex: u32) -> Result<Vec<FdbEntry>> {
        Ok(self
            .neighbour_messages(AddressFamily::Bridge, ifindex)
            .await?
            .iter()
            .filter_map(|m| {
                Some(FdbEntry {
                    ifindex,
                    mac: neighbour_lladdr(m)?,
                    dst: neighbour_dst(m),
                    permanent: m.header.state == NeighbourState::Permanent,
                    is_self: m.header.flags.contains(NeighbourFlags::Own),
                })
            })
            .collect())
    }
}

fn vxlan_incompatibility(existing: &Link, spec: &VxlanSpec, port: u16) -> Option<String> {
    let Some(attrs) = &existing.vxlan else {
        return Some(format!(
            "it is a {} device, not vxlan",
            existing.kind.as_deref().unwrap_or("plain")
        ));
    };
    if attrs.vni != spec.vni {
        return Some(format!("VNI {} instead of {}", attrs.vni, spec.vni));
    }
    if let Some(dev) = attrs.dev_index.filter(|&d| d != 0 && d != spec.dev_index) {
        return Some(format!(
            "external interface #{dev} instead of #{}",
            spec.dev_index
        ));
    }
    if let Some(local) = attrs.local.filter(|&l| l != spec.local) {
        return Some(format!("local address {local} instead of {}", spec.local));
    }
    if attrs.port != 0 && attrs.port != port {
        return Some(format!("port {} instead of {port}", attrs.port));
    }
    if attrs.learning != spec.learning {
        return Some(format!(
            "learning {} instead of {}",
            attrs.learning, spec.learning
        ));
    }
    None
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        vxlan: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(info_kind_name(kind)),
                        LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                            link.vxlan = Some(vxlan_attrs(attrs))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn info_kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Other(name) => name.clone(),
        other => other.to_string(),
    }
}

fn vxlan_attrs(infos: &[InfoVxlan]) -> VxlanAttrs {
    let mut attrs = VxlanAttrs {
        vni: 0,
        local: None,
        dev_index: None,
        port: 0,
        learning: true,
    };
    for info in infos {
        match info {
            InfoVxlan::Id(vni) => attrs.vni = *vni,
            InfoVxlan::Local(ip) => attrs.local = Some(*ip),
            InfoVxlan::Link(index) => attrs.dev_index = Some(*index),
            InfoVxlan::Port(port) => attrs.port = *port,
            InfoVxlan::Learning(learning) => attrs.learning = *learning,
            _ => {}
        }
    }
    attrs
}

fn address_ip(msg: &AddressMessage) -> Option<Ipv4Addr> {
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on point-to-point
    // links); fall back on IFA_ADDRESS when there is no IFA_LOCAL.
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })
}

/// The address with its prefix length (host bits kept).
fn address_of(msg: &AddressMessage) -> Option<Ipv4Net> {
    Ipv4Net::new(address_ip(msg)?, msg.header.prefix_len).ok()
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_oif(msg: &RouteMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(oif) => Some(*oif),
        RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
        _ => None,
    })
}

fn route_from_message(msg: &RouteMessage) -> Route {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            _ => {}
        }
    }
    Route {
        dst: Ipv4Net::new(dst, msg.header.destination_prefix_length)
            .unwrap_or_else(|_| Ipv4Net::from(dst)),
        gateway,
        oif: route_oif(msg),
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
    }
}

fn neighbour_dst(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        // In AF_BRIDGE (FDB) messages the address is left undecoded.
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn neighbour_lladdr(msg: &NeighbourMessage) -> Option<MacAddr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => MacAddr::from_slice(bytes),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips() {
        let mac: MacAddr = "aa:bb:cc:dd:ee:0f".parse().unwrap();
        assert_eq!(mac.0, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]);
        assert_eq!(mac.to_string(), "aa:bb:cc:dd:ee:0f");
        assert!("aa:bb:cc:dd:ee".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:ff:00".parse::<MacAddr>().is_err());
        assert!("aa:bb:cc:dd:ee:fg".parse::<MacAddr>().is_err());
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..32 {
            let mac = MacAddr::random_local();
            assert_eq!(mac.0[0] & 0x03, 0x02, "{mac}");
        }
        assert_ne!(MacAddr::random_local(), MacAddr::random_local());
    }

    #[test]
    fn external_network() {
        let ext = ExternalInterface {
            name: "eth0".into(),
            index: 2,
            addr: "10.213.4.11".parse().unwrap(),
            prefix_len: 24,
            mtu: 1500,
        };
        assert_eq!(ext.network(), "10.213.4.0/24".parse::<Ipv4Net>().unwrap());
    }
}
