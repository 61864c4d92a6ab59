//! The metadata's static interfaces as systemd-networkd files, one per MAC address:
//! `/etc/systemd/network/10-keel-<mac without colons>.network`. networkd takes the first file in
//! lexical order that matches a link, so this one wins over the image's `20-wired.network`
//! (DHCP on every en*/eth* link) for that link only, while a user-data `.network` unit whose
//! name sorts before it (`10-eth0.network`) still takes precedence.

use super::fsutil::Attrs;
use super::Applier;
use crate::cloudconfig::model::StaticInterface;
use crate::datasource::network_data::normalize_mac;

pub const NETWORK_DIR: &str = "/etc/systemd/network";

/// The file for the link with `mac` (already normalised).
pub fn file_path(mac: &str) -> String {
    format!("{NETWORK_DIR}/10-keel-{}.network", mac.replace(':', ""))
}

/// The .network file's text.
pub fn network_file(interface: &StaticInterface) -> String {
    let mut text = String::from(
        "# Written by keel-provision from the datasource's network metadata.\n\
         [Match]\n",
    );
    text.push_str(&format!("MACAddress={}\n\n[Network]\n", interface.mac));
    for address in &interface.addresses {
        text.push_str(&format!("Address={address}\n"));
    }
    for gateway in &interface.gateways {
        text.push_str(&format!("Gateway={gateway}\n"));
    }
    for server in &interface.dns {
        text.push_str(&format!("DNS={server}\n"));
    }
    text
}

pub fn apply(applier: &mut Applier, interfaces: &[StaticInterface]) {
    for interface in interfaces {
        // The metadata may come from outside a datasource (`keel-provision apply`): the MAC
        // names a file, so it must be one.
        let Some(mac) = normalize_mac(&interface.mac) else {
            applier.issue(
                0,
                format!("network metadata: {:?} is not a MAC address", interface.mac),
            );
            continue;
        };
        if interface.addresses.is_empty() {
            // A file without addresses would only take the link away from DHCP.
            applier.issue(
                0,
                format!("network metadata: link {mac} has no static address; left to DHCP"),
            );
            continue;
        }
        let interface = StaticInterface {
            mac,
            ..interface.clone()
        };
        let path = file_path(&interface.mac);
        let content = network_file(&interface);
        match applier
            .fs
            .write(&path, content.as_bytes(), Attrs::root(0o644))
        {
            Ok(changed) => applier.outcome(changed, || {
                let addresses: Vec<String> =
                    interface.addresses.iter().map(|a| a.to_string()).collect();
                format!("wrote {path} ({})", addresses.join(", "))
            }),
            Err(err) => applier.issue(0, format!("network metadata: {err}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_text_and_name() {
        let interface = StaticInterface {
            mac: "fa:16:3e:9c:bf:3d".into(),
            addresses: vec![crate::cloudconfig::model::IpPrefix {
                address: "10.77.0.11".parse().unwrap(),
                prefix_len: 24,
            }],
            gateways: vec![],
            dns: vec!["10.77.0.2".parse().unwrap()],
        };
        assert_eq!(
            file_path(&interface.mac),
            "/etc/systemd/network/10-keel-fa163e9cbf3d.network"
        );
        assert_eq!(
            network_file(&interface),
            "# Written by keel-provision from the datasource's network metadata.\n\
             [Match]\nMACAddress=fa:16:3e:9c:bf:3d\n\n[Network]\nAddress=10.77.0.11/24\n\
             DNS=10.77.0.2\n"
        );
    }
}
