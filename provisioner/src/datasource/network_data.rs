//! OpenStack's network metadata, `openstack/latest/network_data.json`: `links` (NICs by MAC
//! address), `networks` on those links and `services` (DNS servers). Static `ipv4` and `ipv6`
//! networks become [`StaticInterface`]s so that a machine on a network without DHCP still gets
//! its addresses; DHCP and SLAAC networks are left to the image's own DHCP. An entry that cannot
//! be used (an unknown link, a bad address or netmask) is skipped with a warning: one bad network
//! must not cost the machine the others.

use std::net::IpAddr;

use serde_json::Value;

use crate::cloudconfig::model::{IpPrefix, StaticInterface};

/// Link types that are not one NIC with its own MAC address: matching their MAC in a
/// systemd-networkd file would configure the underlying NIC instead.
const UNSUPPORTED_LINK_TYPES: &[&str] = &["bond", "vlan"];

/// A link as the networks see it: its MAC address, or why it cannot carry a static network.
struct Link<'a> {
    id: &'a str,
    mac: Result<String, String>,
}

/// The static interfaces `doc` describes, one per MAC address, in the order their first network
/// appears; DNS servers of the network itself first, then the document's global ones.
pub fn parse(doc: &Value) -> Vec<StaticInterface> {
    let links: Vec<Link> = array(doc, "links").filter_map(link).collect();
    let global_dns = dns_servers(doc, "network_data.json");
    let mut interfaces: Vec<StaticInterface> = Vec::new();
    for (index, network) in array(doc, "networks").enumerate() {
        let name = network
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| format!("networks[{index}]"), str::to_string);
        let Some((mac, address, gateways)) = static_network(network, &name, &links) else {
            continue;
        };
        let position = match interfaces.iter().position(|i| i.mac == mac) {
            Some(position) => position,
            None => {
                interfaces.push(StaticInterface {
                    mac,
                    ..StaticInterface::default()
                });
                interfaces.len() - 1
            }
        };
        let interface = &mut interfaces[position];
        push_unique(&mut interface.addresses, [address]);
        push_unique(&mut interface.gateways, gateways);
        push_unique(&mut interface.dns, dns_servers(network, &name));
    }
    for interface in &mut interfaces {
        push_unique(&mut interface.dns, global_dns.iter().copied());
    }
    interfaces
}

/// The entries of `doc[key]`, or none when it is missing or not a list.
fn array<'a>(doc: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    doc.get(key).and_then(Value::as_array).into_iter().flatten()
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

fn link(entry: &Value) -> Option<Link<'_>> {
    let id = entry.get("id").and_then(Value::as_str)?;
    let kind = entry.get("type").and_then(Value::as_str).unwrap_or("phy");
    let mac = if UNSUPPORTED_LINK_TYPES.contains(&kind) {
        Err(format!("link {id:?} is a {kind}, which is not supported"))
    } else {
        match entry.get("ethernet_mac_address").and_then(Value::as_str) {
            Some(text) => {
                normalize_mac(text).ok_or_else(|| format!("link {id:?} has a bad MAC {text:?}"))
            }
            None => Err(format!("link {id:?} has no ethernet_mac_address")),
        }
    };
    Some(Link { id, mac })
}

/// "FA:16:3E:9C:BF:3D" → "fa:16:3e:9c:bf:3d"; `None` unless six two-digit hex octets.
pub fn normalize_mac(text: &str) -> Option<String> {
    let mac = text.trim().to_ascii_lowercase();
    let octets: Vec<&str> = mac.split(':').collect();
    let valid = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()));
    valid.then_some(mac)
}

/// A static network's link MAC, address and default gateways; `None` (with a warning unless it
/// is a DHCP or SLAAC network) when it yields nothing.
fn static_network(
    network: &Value,
    name: &str,
    links: &[Link],
) -> Option<(String, IpPrefix, Vec<IpAddr>)> {
    let kind = network.get("type").and_then(Value::as_str).unwrap_or("");
    let want_v4 = match kind {
        "ipv4" => true,
        "ipv6" => false,
        _ if kind.starts_with("ipv4_") || kind.starts_with("ipv6_") => {
            tracing::debug!(network = name, kind, "dynamic network; left to DHCP");
            return None;
        }
        _ => {
            tracing::warn!(network = name, kind, "unknown network type; ignored");
            return None;
        }
    };
    let link_id = network.get("link").and_then(Value::as_str).unwrap_or("");
    let mac = match links.iter().find(|link| link.id == link_id) {
        None => {
            tracing::warn!(
                network = name,
                link = link_id,
                "network names an unknown link; ignored"
            );
            return None;
        }
        Some(Link { mac: Err(why), .. }) => {
            tracing::warn!(network = name, "{why}; network ignored");
            return None;
        }
        Some(Link { mac: Ok(mac), .. }) => mac.clone(),
    };
    let address = match prefix(network.get("ip_address"), network.get("netmask")) {
        Ok(address) if address.address.is_ipv4() == want_v4 => address,
        Ok(address) => {
            tracing::warn!(network = name, kind, %address, "address of the wrong family; network ignored");
            return None;
        }
        Err(why) => {
            tracing::warn!(network = name, "{why}; network ignored");
            return None;
        }
    };
    let gateways = array(network, "routes")
        .filter_map(|route| default_gateway(route, name, want_v4))
        .collect();
    Some((mac, address, gateways))
}

/// The gateway of a default route (network 0.0.0.0 or :: with an all-zero netmask) of the right
/// family. Other routes are not applied: the model holds default gateways only.
fn default_gateway(route: &Value, network: &str, want_v4: bool) -> Option<IpAddr> {
    let destination = match prefix(route.get("network"), route.get("netmask")) {
        Ok(destination) => destination,
        Err(why) => {
            tracing::warn!(network, "route: {why}; route ignored");
            return None;
        }
    };
    let gateway = route.get("gateway").and_then(Value::as_str).unwrap_or("");
    let Ok(gateway) = gateway.trim().parse::<IpAddr>() else {
        tracing::warn!(network, gateway, "route has a bad gateway; route ignored");
        return None;
    };
    if !(destination.address.is_unspecified() && destination.prefix_len == 0) {
        tracing::warn!(network, %destination, %gateway, "only default routes are applied; route ignored");
        return None;
    }
    if gateway.is_ipv4() != want_v4 || destination.address.is_ipv4() != want_v4 {
        tracing::warn!(network, %gateway, "gateway of the wrong family; route ignored");
        return None;
    }
    Some(gateway)
}

/// An address and its prefix length from `address` ("10.0.0.5" or "10.0.0.5/24") and `netmask`
/// (dotted "255.255.255.0", an IPv6 mask "ffff:ffff::", or a prefix length as a number or a
/// string); a "/len" in the address wins over the netmask.
fn prefix(address: Option<&Value>, netmask: Option<&Value>) -> Result<IpPrefix, String> {
    let text = address
        .and_then(Value::as_str)
        .map(str::trim)
        .ok_or("no address")?;
    let (host, length) = match text.split_once('/') {
        Some((host, length)) => (host, Some(length)),
        None => (text, None),
    };
    let address: IpAddr = host.parse().map_err(|_| format!("bad address {text:?}"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match (length, netmask) {
        (Some(length), _) => length.parse::<u8>().ok(),
        (None, Some(Value::Number(n))) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        (None, Some(Value::String(mask))) => {
            let mask = mask.trim();
            mask.parse::<u8>()
                .ok()
                .or_else(|| mask_length(mask.parse().ok()?, address))
        }
        (None, _) => return Err(format!("address {text:?} has no netmask")),
    }
    .filter(|&length| length <= max)
    .ok_or_else(|| format!("address {text:?} has a bad netmask or prefix length"))?;
    Ok(IpPrefix {
        address,
        prefix_len,
    })
}

/// The prefix length of a contiguous netmask of `address`'s family.
fn mask_length(mask: IpAddr, address: IpAddr) -> Option<u8> {
    let bits = match (mask, address) {
        (IpAddr::V4(mask), IpAddr::V4(_)) => u128::from(u32::from(mask)) << 96,
        (IpAddr::V6(mask), IpAddr::V6(_)) => u128::from(mask),
        _ => return None,
    };
    let ones = bits.leading_ones();
    // Contiguous: nothing set after the leading ones.
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// The addresses of `doc`'s `services` of type "dns".
fn dns_servers(doc: &Value, name: &str) -> Vec<IpAddr> {
    array(doc, "services")
        .filter(|service| service.get("type").and_then(Value::as_str) == Some("dns"))
        .filter_map(|service| {
            let text = service.get("address").and_then(Value::as_str).unwrap_or("");
            let parsed = text.trim().parse().ok();
            if parsed.is_none() {
                tracing::warn!(
                    source = name,
                    address = text,
                    "bad DNS server address; ignored"
                );
            }
            parsed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpPrefix {
        let (address, length) = text.split_once('/').unwrap();
        IpPrefix {
            address: ip(address),
            prefix_len: length.parse().unwrap(),
        }
    }

    /// As Nova writes it (trimmed of ids nobody reads): a static IPv4 link with a default route,
    /// a DHCP link, a static IPv6 link, and a network on a link that does not exist.
    const NETWORK_DATA: &str = r#"{
        "links": [
            {"id": "tap1a81968a-79", "vif_id": "1a81968a-797a-400f-8a80-567f997eb93f",
             "type": "phy", "ethernet_mac_address": "FA:16:3E:9C:BF:3D", "mtu": 1500},
            {"id": "tap2ecc7709-b3", "vif_id": "2ecc7709-b3f7-4448-9580-e1ec32d75bbd",
             "type": "ovs", "ethernet_mac_address": "fa:16:3e:d4:57:ad", "mtu": 1450},
            {"id": "tap3f22c1e7-0a", "type": "vif",
             "ethernet_mac_address": "fa:16:3e:05:30:fe", "mtu": 1500}
        ],
        "networks": [
            {"id": "network0", "type": "ipv4", "link": "tap1a81968a-79",
             "ip_address": "10.77.0.11", "netmask": "255.255.255.0",
             "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.77.0.1"}],
             "network_id": "da5bb487-5193-4a65-a3df-4a0055a8c0d7"},
            {"id": "network1", "type": "ipv4_dhcp", "link": "tap2ecc7709-b3",
             "network_id": "6ff6c22f-ab39-4ee0-a5cb-80f4ffbb8ba0"},
            {"id": "network2", "type": "ipv6", "link": "tap3f22c1e7-0a",
             "ip_address": "2001:db8:77::11/64",
             "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8:77::1"}],
             "services": [{"type": "dns", "address": "2001:db8:77::53"}]},
            {"id": "network3", "type": "ipv4", "link": "tap-gone",
             "ip_address": "10.99.0.5", "netmask": "255.255.255.0"}
        ],
        "services": [{"type": "dns", "address": "10.77.0.2"}, {"type": "ntp", "address": "10.77.0.3"}]
    }"#;

    #[test]
    fn realistic_network_data() {
        let doc: Value = serde_json::from_str(NETWORK_DATA).unwrap();
        assert_eq!(
            parse(&doc),
            vec![
                StaticInterface {
                    mac: "fa:16:3e:9c:bf:3d".into(),
                    addresses: vec![net("10.77.0.11/24")],
                    gateways: vec![ip("10.77.0.1")],
                    dns: vec![ip("10.77.0.2")],
                },
                StaticInterface {
                    mac: "fa:16:3e:05:30:fe".into(),
                    addresses: vec![net("2001:db8:77::11/64")],
                    gateways: vec![ip("2001:db8:77::1")],
                    dns: vec![ip("2001:db8:77::53"), ip("10.77.0.2")],
                },
            ]
        );
    }

    #[test]
    fn dhcp_only_and_empty_documents_give_nothing() {
        let dhcp = json!({
            "links": [{"id": "l", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
            "networks": [{"id": "n", "type": "ipv4_dhcp", "link": "l"},
                         {"id": "n6", "type": "ipv6_slaac", "link": "l"}],
            "services": [{"type": "dns", "address": "10.0.0.2"}]
        });
        assert!(parse(&dhcp).is_empty());
        assert!(parse(&json!({})).is_empty());
        assert!(parse(&json!([])).is_empty());
        assert!(parse(&json!({"links": "nope", "networks": 3})).is_empty());
    }

    #[test]
    fn dual_stack_link_merges_into_one_interface() {
        let doc = json!({
            "links": [{"id": "l", "type": "ethernet", "ethernet_mac_address": "fa:16:3e:00:00:01"}],
            "networks": [
                {"id": "v4", "type": "ipv4", "link": "l", "ip_address": "192.0.2.10", "netmask": 24,
                 "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"},
                            {"network": "198.51.100.0", "netmask": "255.255.255.0", "gateway": "192.0.2.254"}]},
                {"id": "v6", "type": "ipv6", "link": "l", "ip_address": "2001:db8::10",
                 "netmask": "ffff:ffff:ffff:ffff::",
                 "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8::1"}]}
            ]
        });
        assert_eq!(
            parse(&doc),
            vec![StaticInterface {
                mac: "fa:16:3e:00:00:01".into(),
                addresses: vec![net("192.0.2.10/24"), net("2001:db8::10/64")],
                gateways: vec![ip("192.0.2.1"), ip("2001:db8::1")],
                dns: vec![],
            }]
        );
    }

    #[test]
    fn bad_entries_are_skipped_not_fatal() {
        let network = |id: &str, link: &str, address: &str, netmask: Value| json!({"id": id, "type": "ipv4", "link": link, "ip_address": address, "netmask": netmask});
        let doc = json!({
            "links": [
                {"id": "good", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:00:01"},
                {"id": "badmac", "type": "phy", "ethernet_mac_address": "fa:16:3e:00:01"},
                {"id": "nomac", "type": "phy"},
                {"id": "vlan", "type": "vlan", "ethernet_mac_address": "fa:16:3e:00:00:02"}
            ],
            "networks": [
                network("noncontiguous", "good", "10.0.0.5", json!("255.0.255.0")),
                network("nomask", "good", "10.0.0.5", Value::Null),
                network("toolong", "good", "10.0.0.5/33", Value::Null),
                network("v6mask", "good", "10.0.0.5", json!("ffff::")),
                network("notip", "good", "10.0.0.500", json!("255.255.255.0")),
                network("v6address", "good", "2001:db8::5/64", Value::Null),
                network("badmac", "badmac", "10.0.1.5", json!(24)),
                network("nomac", "nomac", "10.0.2.5", json!(24)),
                network("vlan", "vlan", "10.0.3.5", json!(24)),
                {"id": "mystery", "type": "ipv5", "link": "good"},
                network("ok", "good", "10.0.9.5", json!("16"))
            ],
            "services": [{"type": "dns", "address": "not-an-ip"}, {"type": "dns", "address": "10.0.0.2"}]
        });
        assert_eq!(
            parse(&doc),
            vec![StaticInterface {
                mac: "fa:16:3e:00:00:01".into(),
                addresses: vec![net("10.0.9.5/16")],
                gateways: vec![],
                dns: vec![ip("10.0.0.2")],
            }]
        );
    }

    #[test]
    fn netmasks() {
        let p = |address: &str, mask: Value| prefix(Some(&json!(address)), Some(&mask));
        assert_eq!(
            p("10.0.0.5", json!("255.255.255.0")),
            Ok(net("10.0.0.5/24"))
        );
        assert_eq!(
            p("10.0.0.5", json!("255.255.255.255")),
            Ok(net("10.0.0.5/32"))
        );
        assert_eq!(p("10.0.0.5", json!("0.0.0.0")), Ok(net("10.0.0.5/0")));
        assert_eq!(
            p("10.0.0.5/8", json!("255.255.255.0")),
            Ok(net("10.0.0.5/8"))
        );
        assert_eq!(p("2001:db8::5", json!(64)), Ok(net("2001:db8::5/64")));
        assert_eq!(
            p("2001:db8::5", json!("ffff:ffff:ffff:ff80::")),
            Ok(net("2001:db8::5/57"))
        );
        assert!(p("10.0.0.5", json!("255.255.255.1")).is_err());
        assert!(p("2001:db8::5", json!(129)).is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac(" FA:16:3e:0A:bC:00 ").as_deref(),
            Some("fa:16:3e:0a:bc:00")
        );
        assert_eq!(normalize_mac("fa-16-3e-0a-bc-00"), None);
        assert_eq!(normalize_mac("fa:16:3e:0a:bc:0g"), None);
        assert_eq!(normalize_mac("fa:16:3e:0a:bc:000"), None);
    }
}
