//! `/run/flannel/subnet.env`, what container runtimes (and docker's flannel drop-in on
//! Container Linux) read: the network, this machine's subnet as its first address, the MTU
//! and whether flannel masquerades. Written atomically: a reader never sees half a file.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    /// The machine's whole subnet; written as its first address (`10.1.17.1/24`).
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ip_masq: bool,
}

impl SubnetEnv {
    pub fn to_text(&self) -> String {
        let first = Ipv4Addr::from(u32::from(self.subnet.network()) + 1);
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            first,
            self.subnet.prefix_len(),
            self.mtu,
            self.ip_masq
        )
    }

    /// Writes `path` through a temporary file in the same folder, then renames it.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir)?;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "subnet.env".into());
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(self.to_text().as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

/// The subnet a previous run wrote to `path` (its FLANNEL_SUBNET, as a whole subnet), so a
/// restarted flanneld asks for the same one.
pub fn previous_subnet(path: &Path) -> Option<Ipv4Net> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))?;
    let addr: Ipv4Net = value.trim().parse().ok()?;
    Some(addr.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_flannels_variables_atomically_and_reads_the_subnet_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        let env = SubnetEnv {
            network: "10.1.0.0/16".parse().unwrap(),
            subnet: "10.1.17.0/24".parse().unwrap(),
            mtu: 1450,
            ip_masq: true,
        };
        env.write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["subnet.env"]);
        assert_eq!(previous_subnet(&path), Some(env.subnet));
        assert_eq!(previous_subnet(&dir.path().join("none")), None);
    }
}
