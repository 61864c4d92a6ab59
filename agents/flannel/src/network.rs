//! The network config flannel keeps at `<prefix>/config`:
//!
//! ```json
//! {"Network": "10.5.0.0/16", "SubnetLen": 24, "SubnetMin": "10.5.1.0", "SubnetMax": "10.5.255.0",
//!  "Backend": {"Type": "vxlan", "VNI": 1, "Port": 0, "DirectRouting": false}}
//! ```
//!
//! Read with flannel's defaults and checks, so a config upstream flanneld accepts means the same
//! network here. Like Go's `encoding/json`, which flannel parses it with, field names match
//! case-insensitively (an exact match wins) and unknown fields are ignored.

use std::net::Ipv4Addr;

pub use ipnet::Ipv4Net;
use serde_json::{Map, Value};

/// The backends Keel's flanneld implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendType {
    Vxlan,
    HostGw,
}

impl BackendType {
    /// flannel's name, as in the config's `Backend.Type` and a lease's `BackendType`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendType::Vxlan => "vxlan",
            BackendType::HostGw => "host-gw",
        }
    }
}

impl std::fmt::Display for BackendType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendType {
    type Err = String;

    /// Case-insensitive, as flanneld reads it.
    fn from_str(s: &str) -> Result<BackendType, String> {
        match s.to_ascii_lowercase().as_str() {
            "vxlan" => Ok(BackendType::Vxlan),
            "host-gw" => Ok(BackendType::HostGw),
            other => Err(format!(
                "unsupported backend type {other:?} (this flanneld has vxlan and host-gw)"
            )),
        }
    }
}

/// flannel's default when `Backend` or its `Type` is absent (older releases used "udp", which
/// flannel has since removed).
pub const DEFAULT_BACKEND: BackendType = BackendType::Vxlan;

/// The VXLAN network identifier flannel uses when `VNI` is absent.
pub const DEFAULT_VNI: u32 = 1;

/// Linux's VXLAN port (flannel's `Port: 0` leaves it to the kernel, which picks this one, not
/// IANA's 4789).
pub const KERNEL_VXLAN_PORT: u16 = 8472;

/// `Backend` of the network config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub backend_type: BackendType,
    /// vxlan: the VXLAN network identifier (24 bits); the device is `flannel.<VNI>`.
    pub vni: u32,
    /// vxlan: the UDP port; 0 leaves it to the kernel ([`KERNEL_VXLAN_PORT`]).
    pub port: u16,
    /// vxlan: a plain route instead of the tunnel to peers on the same L2 segment.
    pub direct_routing: bool,
    /// The whole `Backend` object as written (null when absent), for options this type does
    /// not name.
    pub raw: Value,
}

impl BackendConfig {
    /// The UDP port VXLAN packets travel on, with the kernel's default filled in.
    pub fn effective_port(&self) -> u16 {
        if self.port == 0 {
            KERNEL_VXLAN_PORT
        } else {
            self.port
        }
    }
}

/// A checked network config with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The whole flannel network (`Network`), its host bits cleared.
    pub network: Ipv4Net,
    /// The prefix length of each machine's subnet (`SubnetLen`).
    pub subnet_len: u8,
    /// The first subnet handed out (`SubnetMin`).
    pub subnet_min: Ipv4Net,
    /// The last subnet handed out (`SubnetMax`).
    pub subnet_max: Ipv4Net,
    pub backend: BackendConfig,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkConfigError {
    #[error("network config is not valid JSON: {0}")]
    Json(String),
    #[error("network config must be a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("network config has no Network (an IPv4 CIDR such as \"10.5.0.0/16\"): it is the one required field")]
    MissingNetwork,
    #[error("network config field {field}: {problem} (found {found})")]
    InvalidField {
        field: &'static str,
        found: String,
        problem: String,
    },
    #[error(
        "Network {network} is too small: flannel needs at least a /28 to give out four subnets"
    )]
    NetworkTooSmall { network: Ipv4Net },
    #[error("SubnetLen {subnet_len} is too long: a subnet needs room for at least a /30, so SubnetLen must be 30 or less")]
    SubnetLenTooLong { subnet_len: u8 },
    #[error("SubnetLen {subnet_len} leaves Network {network} fewer than four subnets: SubnetLen must be at least {minimum}")]
    TooFewSubnets {
        network: Ipv4Net,
        subnet_len: u8,
        minimum: u8,
    },
    #[error("{field} {addr} is outside Network {network}")]
    OutsideNetwork {
        field: &'static str,
        addr: Ipv4Addr,
        network: Ipv4Net,
    },
    #[error("{field} {addr} is not the start of a /{subnet_len} subnet (SubnetLen)")]
    Misaligned {
        field: &'static str,
        addr: Ipv4Addr,
        subnet_len: u8,
    },
    #[error("SubnetMin {min} is above SubnetMax {max}: no subnet to give out")]
    EmptyRange { min: Ipv4Addr, max: Ipv4Addr },
    #[error("Backend type {0:?} is not supported by Keel's flanneld (it implements \"vxlan\" and \"host-gw\")")]
    UnsupportedBackend(String),
    #[error("{0} is not supported by Keel's flanneld: it runs IPv4 networks only")]
    UnsupportedIpFamily(&'static str),
}

/// Looks a field up as Go's encoding/json does: the exact name first, then any name equal
/// ignoring case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

/// A present field; null counts as absent, as in Go (it leaves the zero value).
fn present<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    field(object, name).filter(|value| !value.is_null())
}

fn invalid(field: &'static str, found: &Value, problem: impl Into<String>) -> NetworkConfigError {
    NetworkConfigError::InvalidField {
        field,
        found: found.to_string(),
        problem: problem.into(),
    }
}

fn string_field<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, NetworkConfigError> {
    match present(object, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(name, other, "expected a string")),
    }
}

fn unsigned_field(
    object: &Map<String, Value>,
    name: &'static str,
    max: u64,
) -> Result<Option<u64>, NetworkConfigError> {
    match present(object, name) {
        None => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n <= max => Ok(Some(n)),
            Some(_) => Err(invalid(name, value, format!("must be at most {max}"))),
            None => Err(invalid(name, value, "expected a whole number, 0 or more")),
        },
    }
}

fn bool_field(object: &Map<String, Value>, name: &'static str) -> Result<bool, NetworkConfigError> {
    match present(object, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(name, other, "expected true or false")),
    }
}

fn address_field(
    object: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<Ipv4Addr>, NetworkConfigError> {
    let Some(text) = string_field(object, name)? else {
        return Ok(None);
    };
    let addr: Ipv4Addr = text.trim().parse().map_err(|_| {
        invalid(
            name,
            &Value::String(text.to_string()),
            "expected an IPv4 address such as \"10.5.1.0\"",
        )
    })?;
    // flannel reads 0.0.0.0 as "not set" (its zero value) and fills in the default.
    Ok((!addr.is_unspecified()).then_some(addr))
}

/// `Network`: an IPv4 CIDR. Host bits are cleared, as Go's net.ParseCIDR (which flannel uses)
/// does, so "10.5.0.1/16" means 10.5.0.0/16.
fn network_field(object: &Map<String, Value>) -> Result<Ipv4Net, NetworkConfigError> {
    let Some(text) = string_field(object, "Network")? else {
        return Err(NetworkConfigError::MissingNetwork);
    };
    if text.trim().is_empty() {
        return Err(NetworkConfigError::MissingNetwork);
    }
    let network: Ipv4Net = text.trim().parse().map_err(|_| {
        let problem = if text.contains(':') {
            "IPv6 networks are not supported; expected an IPv4 CIDR such as \"10.5.0.0/16\""
        } else {
            "expected an IPv4 CIDR such as \"10.5.0.0/16\""
        };
        invalid("Network", &Value::String(text.to_string()), problem)
    })?;
    Ok(network.trunc())
}

fn backend_field(object: &Map<String, Value>) -> Result<BackendConfig, NetworkConfigError> {
    let raw = present(object, "Backend").cloned().unwrap_or(Value::Null);
    let empty = Map::new();
    let backend = match &raw {
        Value::Null => &empty,
        Value::Object(backend) => backend,
        other => {
            return Err(invalid(
                "Backend",
                other,
                "expected an object such as {\"Type\": \"vxlan\"}",
            ))
        }
    };
    let backend_type = match string_field(backend, "Type")? {
        None | Some("") => DEFAULT_BACKEND,
        Some("vxlan") => BackendType::Vxlan,
        Some("host-gw") => BackendType::HostGw,
        Some(other) => return Err(NetworkConfigError::UnsupportedBackend(other.to_string())),
    };
    let vni = unsigned_field(backend, "VNI", (1 << 24) - 1)?.map_or(DEFAULT_VNI, |n| n as u32);
    let port = unsigned_field(backend, "Port", u16::MAX.into())?.map_or(0, |n| n as u16);
    let direct_routing = bool_field(backend, "DirectRouting")?;
    Ok(BackendConfig {
        backend_type,
        vni,
        port,
        direct_routing,
        raw,
    })
}

/// The subnet of length `len` that starts at `addr` (already checked to be aligned).
fn subnet_at(addr: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(addr, len).expect("prefix lengths are checked to be at most 30")
}

fn subnet_size(len: u8) -> u64 {
    1u64 << (32 - u32::from(len))
}

impl NetworkConfig {
    /// Parses and checks the value of `<prefix>/config`.
    pub fn parse(json: &[u8]) -> Result<NetworkConfig, NetworkConfigError> {
        let value: Value =
            serde_json::from_slice(json).map_err(|e| NetworkConfigError::Json(e.to_string()))?;
        let object = match &value {
            Value::Object(object) => object,
            Value::Null => return Err(NetworkConfigError::NotAnObject("null")),
            Value::Bool(_) => return Err(NetworkConfigError::NotAnObject("a boolean")),
            Value::Number(_) => return Err(NetworkConfigError::NotAnObject("a number")),
            Value::String(_) => return Err(NetworkConfigError::NotAnObject("a string")),
            Value::Array(_) => return Err(NetworkConfigError::NotAnObject("an array")),
        };
        // flannel's dual-stack and IPv6-only modes: refuse rather than run half of them.
        if bool_field(object, "EnableIPv6")? {
            return Err(NetworkConfigError::UnsupportedIpFamily("EnableIPv6"));
        }
        if matches!(present(object, "EnableIPv4"), Some(Value::Bool(false))) {
            return Err(NetworkConfigError::UnsupportedIpFamily("EnableIPv4: false"));
        }

        let network = network_field(object)?;
        let subnet_len = match unsigned_field(object, "SubnetLen", 32)? {
            // 0 is Go's zero value: flannel treats it as absent.
            None | Some(0) => default_subnet_len(network)?,
            Some(len) => {
                let len = len as u8;
                if len > 30 {
                    return Err(NetworkConfigError::SubnetLenTooLong { subnet_len: len });
                }
                // More than two subnets, because the first is never handed out.
                let minimum = network.prefix_len() + 2;
                if len < minimum {
                    return Err(NetworkConfigError::TooFewSubnets {
                        network,
                        subnet_len: len,
                        minimum,
                    });
                }
                len
            }
        };

        let size = subnet_size(subnet_len);
        let first = u64::from(u32::from(network.network()));
        let end = first + subnet_size(network.prefix_len());
        let subnet_min = match address_field(object, "SubnetMin")? {
            // The second subnet: the first would give a machine the network's own address.
            None => Ipv4Addr::from((first + size) as u32),
            Some(addr) => addr,
        };
        let subnet_max = match address_field(object, "SubnetMax")? {
            None => Ipv4Addr::from((end - size) as u32),
            Some(addr) => addr,
        };
        for (field, addr) in [("SubnetMin", subnet_min), ("SubnetMax", subnet_max)] {
            if !network.contains(&addr) {
                return Err(NetworkConfigError::OutsideNetwork {
                    field,
                    addr,
                    network,
                });
            }
            if u64::from(u32::from(addr)) % size != 0 {
                return Err(NetworkConfigError::Misaligned {
                    field,
                    addr,
                    subnet_len,
                });
            }
        }
        if subnet_min > subnet_max {
            return Err(NetworkConfigError::EmptyRange {
                min: subnet_min,
                max: subnet_max,
            });
        }

        Ok(NetworkConfig {
            network,
            subnet_len,
            subnet_min: subnet_at(subnet_min, subnet_len),
            subnet_max: subnet_at(subnet_max, subnet_len),
            backend: backend_field(object)?,
        })
    }

    /// Every subnet that may be handed out, SubnetMin to SubnetMax in order.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> {
        let len = self.subnet_len;
        let size = subnet_size(len);
        let first = u64::from(u32::from(self.subnet_min.network()));
        let last = u64::from(u32::from(self.subnet_max.network()));
        (0..)
            .map(move |i| first + i * size)
            .take_while(move |start| *start <= last)
            .map(move |start| subnet_at(Ipv4Addr::from(start as u32), len))
    }

    /// How many subnets SubnetMin..=SubnetMax holds.
    pub fn subnet_count(&self) -> u64 {
        let first = u64::from(u32::from(self.subnet_min.network()));
        let last = u64::from(u32::from(self.subnet_max.network()));
        (last - first) / subnet_size(self.subnet_len) + 1
    }

    /// Whether `subnet` is one this config hands out: of length SubnetLen and within
    /// SubnetMin..=SubnetMax (flannel's test before it reuses a lease).
    pub fn allows(&self, subnet: Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len
            && subnet.network() == subnet.addr()
            && subnet.network() >= self.subnet_min.network()
            && subnet.network() <= self.subnet_max.network()
    }
}

/// flannel's default SubnetLen: a /24 per machine when Network is a /22 or larger, else a
/// quarter of Network; a network smaller than /28 cannot be split usefully.
fn default_subnet_len(network: Ipv4Net) -> Result<u8, NetworkConfigError> {
    match network.prefix_len() {
        len if len > 28 => Err(NetworkConfigError::NetworkTooSmall { network }),
        len if len <= 22 => Ok(24),
        len => Ok(len + 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<NetworkConfig, NetworkConfigError> {
        NetworkConfig::parse(json.as_bytes())
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_are_flannels() {
        let config = parse(r#"{"Network": "10.5.0.0/16"}"#).unwrap();
        assert_eq!(config.network, net("10.5.0.0/16"));
        assert_eq!(config.subnet_len, 24);
        assert_eq!(config.subnet_min, net("10.5.1.0/24"));
        assert_eq!(config.subnet_max, net("10.5.255.0/24"));
        assert_eq!(config.backend.backend_type, BackendType::Vxlan);
        assert_eq!(config.backend.vni, 1);
        assert_eq!(config.backend.port, 0);
        assert_eq!(config.backend.effective_port(), 8472);
        assert!(!config.backend.direct_routing);
        assert_eq!(config.subnet_count(), 255);
        assert_eq!(config.subnets().count(), 255);
        assert_eq!(config.subnets().next(), Some(net("10.5.1.0/24")));
        assert_eq!(config.subnets().last(), Some(net("10.5.255.0/24")));
    }

    #[test]
    fn small_networks_get_a_quarter_each() {
        let config = parse(r#"{"Network": "192.168.8.0/23"}"#).unwrap();
        assert_eq!(config.subnet_len, 25);
        assert_eq!(
            config.subnets().collect::<Vec<_>>(),
            vec![
                net("192.168.8.128/25"),
                net("192.168.9.0/25"),
                net("192.168.9.128/25")
            ]
        );
        let config = parse(r#"{"Network": "10.0.0.0/22"}"#).unwrap();
        assert_eq!(config.subnet_len, 24);
        let config = parse(r#"{"Network": "10.0.0.0/28"}"#).unwrap();
        assert_eq!(config.subnet_len, 30);
        assert_eq!(
            parse(r#"{"Network": "10.0.0.0/29"}"#),
            Err(NetworkConfigError::NetworkTooSmall {
                network: net("10.0.0.0/29")
            })
        );
    }

    #[test]
    fn explicit_fields_and_the_example_from_flannels_docs() {
        let config = parse(
            r#"{"Network": "10.0.0.0/8", "SubnetLen": 20, "SubnetMin": "10.10.0.0",
                "SubnetMax": "10.99.0.0", "Backend": {"Type": "host-gw"}}"#,
        )
        .unwrap();
        assert_eq!(config.subnet_len, 20);
        assert_eq!(config.subnet_min, net("10.10.0.0/20"));
        assert_eq!(config.subnet_max, net("10.99.0.0/20"));
        assert_eq!(config.backend.backend_type, BackendType::HostGw);
        assert_eq!(config.subnet_count(), (0x63 - 0x0a) * 16 + 1);
        let vxlan = parse(
            r#"{"Network": "10.1.0.0/16", "Backend": {"Type": "vxlan", "VNI": 4096,
                "Port": 4789, "DirectRouting": true, "GBP": false, "MTU": 1400}}"#,
        )
        .unwrap();
        assert_eq!(vxlan.backend.vni, 4096);
        assert_eq!(vxlan.backend.port, 4789);
        assert_eq!(vxlan.backend.effective_port(), 4789);
        assert!(vxlan.backend.direct_routing);
        assert_eq!(vxlan.backend.raw["MTU"], 1400);
    }

    #[test]
    fn names_match_like_go_and_unknown_fields_are_ignored() {
        let config = parse(
            r#"{"network": "10.7.0.0/16", "subnetlen": 26, "backend": {"type": "host-gw"},
                "Comment": "ignored", "IPv6Network": "fc00::/48"}"#,
        )
        .unwrap();
        assert_eq!(config.network, net("10.7.0.0/16"));
        assert_eq!(config.subnet_len, 26);
        assert_eq!(config.backend.backend_type, BackendType::HostGw);
        // Host bits are dropped as net.ParseCIDR drops them; nulls mean "not set".
        let config =
            parse(r#"{"Network": "10.7.3.4/16", "SubnetLen": null, "Backend": null}"#).unwrap();
        assert_eq!(config.network, net("10.7.0.0/16"));
        assert_eq!(config.subnet_len, 24);
        assert_eq!(config.backend.backend_type, BackendType::Vxlan);
        // An empty Backend, or one without a Type, is flannel's default backend.
        let config = parse(r#"{"Network": "10.7.0.0/16", "Backend": {"VNI": 3}}"#).unwrap();
        assert_eq!(config.backend.backend_type, BackendType::Vxlan);
        assert_eq!(config.backend.vni, 3);
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        let message = |json: &str| parse(json).unwrap_err().to_string();
        assert!(message("{").contains("not valid JSON"));
        assert!(message("[]").contains("must be a JSON object, found an array"));
        assert!(message("{}").contains("no Network"));
        assert!(message(r#"{"Network": ""}"#).contains("no Network"));
        assert!(message(r#"{"Network": "10.0.0.0"}"#).contains("field Network"));
        assert!(message(r#"{"Network": "fc00::/48"}"#).contains("IPv6 networks are not supported"));
        assert!(message(r#"{"Network": 10}"#).contains("expected a string"));
        assert_eq!(
            parse(r#"{"Network": "10.0.0.0/16", "SubnetLen": 17}"#),
            Err(NetworkConfigError::TooFewSubnets {
                network: net("10.0.0.0/16"),
                subnet_len: 17,
                minimum: 18
            })
        );
        assert!(message(r#"{"Network": "10.0.0.0/16", "SubnetLen": 31}"#).contains("30 or less"));
        assert!(message(r#"{"Network": "10.0.0.0/16", "SubnetLen": -1}"#).contains("SubnetLen"));
        assert!(
            message(r#"{"Network": "10.0.0.0/16", "SubnetLen": 24.5}"#).contains("whole number")
        );
        assert_eq!(
            message(r#"{"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}"#),
            "SubnetMin 10.1.0.0 is outside Network 10.0.0.0/16"
        );
        assert_eq!(
            message(r#"{"Network": "10.0.0.0/16", "SubnetMax": "10.0.3.128"}"#),
            "SubnetMax 10.0.3.128 is not the start of a /24 subnet (SubnetLen)"
        );
        assert!(
            message(r#"{"Network": "10.0.0.0/16", "SubnetMin": "ten"}"#).contains("IPv4 address")
        );
        assert!(message(
            r#"{"Network": "10.0.0.0/16", "SubnetMin": "10.0.9.0", "SubnetMax": "10.0.3.0"}"#
        )
        .contains("above SubnetMax"));
        assert_eq!(
            parse(r#"{"Network": "10.0.0.0/16", "Backend": {"Type": "udp"}}"#),
            Err(NetworkConfigError::UnsupportedBackend("udp".into()))
        );
        assert!(
            message(r#"{"Network": "10.0.0.0/16", "Backend": {"Type": "wireguard"}}"#)
                .contains("\"vxlan\" and \"host-gw\"")
        );
        assert!(
            message(r#"{"Network": "10.0.0.0/16", "Backend": {"VNI": 16777216}}"#).contains("VNI")
        );
        assert!(
            message(r#"{"Network": "10.0.0.0/16", "Backend": {"Port": 70000}}"#).contains("Port")
        );
        assert!(
            message(r#"{"Network": "10.0.0.0/16", "Backend": {"DirectRouting": "yes"}}"#)
                .contains("true or false")
        );
        assert!(message(r#"{"Network": "10.0.0.0/16", "Backend": "vxlan"}"#).contains("Backend"));
        assert!(message(r#"{"Network": "10.0.0.0/16", "EnableIPv6": true}"#).contains("IPv4"));
    }

    #[test]
    fn allows_only_subnets_in_range_of_the_right_length() {
        let config = parse(
            r#"{"Network": "10.5.0.0/16", "SubnetMin": "10.5.10.0", "SubnetMax": "10.5.20.0"}"#,
        )
        .unwrap();
        assert!(config.allows(net("10.5.10.0/24")));
        assert!(config.allows(net("10.5.20.0/24")));
        assert!(!config.allows(net("10.5.9.0/24")));
        assert!(!config.allows(net("10.5.21.0/24")));
        assert!(!config.allows(net("10.5.12.0/25")));
        assert!(!config.allows(net("10.5.12.1/24")));
        assert_eq!(config.subnet_count(), 11);
    }

    #[test]
    fn the_top_of_the_address_space_does_not_overflow() {
        let config = parse(r#"{"Network": "255.255.0.0/16"}"#).unwrap();
        assert_eq!(config.subnets().last(), Some(net("255.255.255.0/24")));
        assert_eq!(config.subnets().count(), 255);
    }
}
