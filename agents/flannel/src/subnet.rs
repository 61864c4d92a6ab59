//! Subnet leases as flannel stores them: the key `<prefix>/subnets/10.5.34.0-24` holds
//! `{"PublicIP":"192.0.2.7","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}}`.

use std::net::Ipv4Addr;

pub use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// What a lease says about the machine holding it (flannel's JSON field names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "BackendType", default)]
    pub backend_type: String,
    /// Backend-specific: vxlan's `{"VNI":1,"VtepMAC":"…"}`; absent for host-gw.
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<serde_json::Value>,
}

/// One machine's subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub subnet: Ipv4Net,
    pub attrs: LeaseAttrs,
    /// The etcd lease the key is bound to (0 when read from a listing that did not say).
    pub etcd_lease: i64,
}

/// A change to the set of leases, as a watch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Added(Lease),
    Removed(Lease),
}

/// `10.5.34.0/24` → `10.5.34.0-24`, flannel's key form.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// The inverse of [`subnet_key`]; None for anything else.
pub fn parse_subnet_key(key: &str) -> Option<Ipv4Net> {
    let (addr, len) = key.rsplit_once('-')?;
    let net = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.addr()).then_some(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let net: Ipv4Net = "10.5.34.0/24".parse().unwrap();
        assert_eq!(subnet_key(net), "10.5.34.0-24");
        assert_eq!(parse_subnet_key("10.5.34.0-24"), Some(net));
        assert_eq!(parse_subnet_key("10.5.34.1-24"), None);
        assert_eq!(parse_subnet_key("config"), None);
    }

    #[test]
    fn lease_json_is_flannels() {
        let attrs = LeaseAttrs {
            public_ip: "192.0.2.7".parse().unwrap(),
            backend_type: "vxlan".into(),
            backend_data: Some(serde_json::json!({"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"})),
        };
        let json = serde_json::to_string(&attrs).unwrap();
        assert_eq!(
            json,
            r#"{"PublicIP":"192.0.2.7","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#
        );
        let hostgw: LeaseAttrs =
            serde_json::from_str(r#"{"PublicIP":"192.0.2.8","BackendType":"host-gw"}"#).unwrap();
        assert_eq!(hostgw.backend_data, None);
    }
}
