//! Several machines booted from one Keel image that form a cluster by themselves: used by
//! `keel cluster up` and by the qemu-tests crate.
//!
//! Every machine boots the same image (through its own copy-on-write overlay) with the same
//! cloud-config, on a config drive (OpenStack `config-2`) that also carries what differs
//! between machines: hostname, instance id and the address on the cluster's private segment
//! (`network_data.json`, and the EC2-style `local-ipv4` that becomes `$private_ipv4`). The
//! segment is a [`LanHub`] on the host's loopback; each machine keeps its `restrict=on` user
//! network for SSH from the host. Nothing a machine sends can leave this host.

pub mod cli;
pub mod demo;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::vm::{vfat_drive, GuestForward, LanHub, Vm, VmConfig, VmError};

/// The private segment's /24: machine `i` (from 0) is `10.77.0.(11 + i)`, named `node(i + 1)`.
pub const LAN_NETWORK: [u8; 3] = [10, 77, 0];
const FIRST_HOST: u8 = 11;
/// The most machines one segment numbers (addresses .11 to .250).
pub const MAX_MACHINES: usize = 240;

/// fleetctl as the harness runs it: fleet's 3 s request timeout is shorter than an etcd write
/// can take on emulated machines that share the host's cores.
pub const FLEETCTL: &str = "fleetctl --request-timeout=60";

/// How often the waits ask the machines again: each question is an SSH login, which costs an
/// emulated machine a noticeable share of its CPU.
const POLL: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("a cluster has 1 to {MAX_MACHINES} machines, not {0}")]
    Size(usize),
    #[error("timed out after {waited:?} waiting for {what}; last answer:\n{last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    #[error("machine {0} is not running")]
    NotRunning(String),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The image every machine boots (only read, through overlays).
    pub image: PathBuf,
    /// One folder per machine goes here (overlay, config drive, serial.log).
    pub work_dir: PathBuf,
    pub machines: usize,
    /// The cloud-config every machine gets, unchanged (`$private_ipv4` is the provisioner's).
    pub user_data: String,
    pub ssh_key: Option<PathBuf>,
    pub memory_mib: u32,
    /// Host services every machine reaches on its user network (a discovery service).
    pub guest_forwards: Vec<GuestForward>,
    /// Another cloud-config for some machines, by index (from 0), instead of `user_data`: a
    /// machine with a role of its own, such as the demo's database machine.
    pub machine_user_data: std::collections::BTreeMap<usize, String>,
    /// Host loopback ports forwarded to a machine's port, as (machine index, host port,
    /// guest port): the demo's load balancer on the first machine.
    pub host_forwards: Vec<(usize, u16, u16)>,
}

impl ClusterSpec {
    pub fn new(image: impl Into<PathBuf>, work_dir: impl Into<PathBuf>, machines: usize) -> Self {
        ClusterSpec {
            image: image.into(),
            work_dir: work_dir.into(),
            machines,
            user_data: String::new(),
            ssh_key: None,
            memory_mib: 1024,
            guest_forwards: Vec::new(),
            machine_user_data: Default::default(),
            host_forwards: Vec::new(),
        }
    }
}

/// One machine of the cluster.
pub struct Machine {
    pub name: String,
    pub address: Ipv4Addr,
    pub mac: String,
    vm: Option<Vm>,
}

impl Machine {
    /// The running VM; `None` once it was killed.
    pub fn vm(&self) -> Option<&Vm> {
        self.vm.as_ref()
    }

    fn running(&self) -> Result<&Vm, ClusterError> {
        self.vm
            .as_ref()
            .ok_or_else(|| ClusterError::NotRunning(self.name.clone()))
    }

    /// Runs `command` as root; its stdout, or an error carrying stderr.
    pub fn ssh_ok(&self, command: &str) -> Result<String, ClusterError> {
        Ok(self.running()?.ssh_ok(command)?)
    }

    /// `FLANNEL_SUBNET` from the machine's /run/flannel/subnet.env (`10.1.23.1/24`), once
    /// flanneld has written it.
    pub fn flannel_subnet(&self) -> Result<Option<String>, ClusterError> {
        let env = self.ssh("cat /run/flannel/subnet.env")?;
        Ok(env
            .lines()
            .find_map(|l| l.strip_prefix("FLANNEL_SUBNET="))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty()))
    }

    /// The destinations of the machine's IPv4 routes (`10.1.23.0/24`, `default`, ...), read
    /// with one `ip route`.
    pub fn route_destinations(&self) -> Result<Vec<String>, ClusterError> {
        let routes = self.ssh("ip -4 route show")?;
        Ok(routes
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    /// Runs `command` as root; what it printed on both streams, whatever its exit status.
    pub fn ssh(&self, command: &str) -> Result<String, ClusterError> {
        let out = self.running()?.ssh(command)?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Seconds from starting the VMs to each milestone of [`Cluster::wait_formed`].
#[derive(Debug, Clone, Copy)]
pub struct Formation {
    pub booted: Duration,
    pub etcd_healthy: Duration,
    pub fleet_listed: Duration,
    pub flannel_routed: Duration,
}

/// A running cluster. Dropping it kills every VM and the segment.
pub struct Cluster {
    machines: Vec<Machine>,
    started: Instant,
    // Declared after the machines so it outlives them while they are dropped.
    hub: LanHub,
}

/// The address of machine `index` on the private segment.
pub fn machine_address(index: usize) -> Ipv4Addr {
    let [a, b, c] = LAN_NETWORK;
    Ipv4Addr::new(a, b, c, FIRST_HOST + index as u8)
}

/// The name of machine `index`: node1, node2, ...
pub fn machine_name(index: usize) -> String {
    format!("node{}", index + 1)
}

/// The config drive's files for one machine: OpenStack's layout, which Keel's provisioner reads
/// (hostname and instance id from meta_data.json, the static address from network_data.json,
/// `$private_ipv4` from the EC2-style meta-data.json).
pub fn config_drive_files(
    name: &str,
    address: Ipv4Addr,
    mac: &str,
    user_data: &str,
) -> Vec<(&'static str, Vec<u8>)> {
    let meta = json!({ "uuid": format!("keel-{name}"), "hostname": name, "name": name });
    let network = json!({
        "links": [{ "id": "lan0", "type": "phy", "ethernet_mac_address": mac }],
        "networks": [{
            "id": "lan0-ipv4", "link": "lan0", "type": "ipv4",
            "ip_address": address.to_string(), "netmask": "255.255.255.0",
        }],
        "services": [],
    });
    let ec2 = json!({ "local-ipv4": address.to_string(), "hostname": name });
    vec![
        ("openstack/latest/user_data", user_data.as_bytes().to_vec()),
        (
            "openstack/latest/meta_data.json",
            meta.to_string().into_bytes(),
        ),
        (
            "openstack/latest/network_data.json",
            network.to_string().into_bytes(),
        ),
        ("ec2/latest/meta-data.json", ec2.to_string().into_bytes()),
    ]
}

impl Cluster {
    /// Starts every machine; returns once the QEMU processes run (see [`Cluster::wait_formed`]).
    ///
    /// The VMs are tied to the calling thread (see [`Vm`]): keep the cluster on it.
    pub fn start(spec: &ClusterSpec) -> Result<Cluster, ClusterError> {
        if spec.machines == 0 || spec.machines > MAX_MACHINES {
            return Err(ClusterError::Size(spec.machines));
        }
        let mut hub = LanHub::start()?;
        let started = Instant::now();
        let mut machines = Vec::with_capacity(spec.machines);
        for index in 0..spec.machines {
            let name = machine_name(index);
            let address = machine_address(index);
            let nic = hub.add_member()?;
            let dir = spec.work_dir.join(&name);
            std::fs::create_dir_all(&dir)
                .map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
            let drive = dir.join("config-2.img");
            let user_data = spec
                .machine_user_data
                .get(&index)
                .unwrap_or(&spec.user_data);
            let files = config_drive_files(&name, address, &nic.mac, user_data);
            let files: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_slice())).collect();
            vfat_drive(&drive, "config-2", &files)?;
            let mut cfg = VmConfig::new(&spec.image, &dir);
            cfg.memory_mib = spec.memory_mib;
            cfg.ssh_key = spec.ssh_key.clone();
            cfg.extra_drives = vec![drive];
            cfg.guest_forwards = spec.guest_forwards.clone();
            cfg.host_forwards = spec
                .host_forwards
                .iter()
                .filter(|(machine, _, _)| *machine == index)
                .map(|(_, host, guest)| (*host, *guest))
                .collect();
            cfg.lan = Some(nic.clone());
            tracing::info!(%name, %address, "starting machine");
            let vm = Vm::start(cfg)?;
            machines.push(Machine {
                name,
                address,
                mac: nic.mac,
                vm: Some(vm),
            });
        }
        Ok(Cluster {
            machines,
            started,
            hub,
        })
    }

    pub fn machines(&self) -> &[Machine] {
        &self.machines
    }

    /// When the first VM was started: the zero of every figure.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The segment's hub (its counters show the cluster's traffic).
    pub fn hub(&self) -> &LanHub {
        &self.hub
    }

    /// The machines still running.
    pub fn alive(&self) -> impl Iterator<Item = &Machine> {
        self.machines.iter().filter(|m| m.vm.is_some())
    }

    /// Kills machine `index`'s VM at once, as a power failure would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut vm) = self.machines[index].vm.take() {
            tracing::info!(name = %self.machines[index].name, "killing machine");
            vm.shutdown();
        }
    }

    /// Waits until every running machine answers on SSH, etcd has a healthy member on each,
    /// fleet lists each, and each machine routes to every other machine's flannel subnet.
    pub fn wait_formed(&self, timeout: Duration) -> Result<Formation, ClusterError> {
        let deadline = Instant::now() + timeout;
        for machine in self.alive() {
            let vm = machine.running()?;
            vm.wait_for_ssh(deadline.saturating_duration_since(Instant::now()))?;
        }
        let booted = self.started.elapsed();
        tracing::info!(
            seconds = booted.as_secs_f64(),
            "every machine answers on SSH"
        );
        let count = self.alive().count();

        self.poll(
            "etcd to report a healthy member on every machine",
            deadline,
            || {
                let health = self
                    .first_alive()?
                    .ssh("etcdctl endpoint health --cluster 2>&1; etcdctl member list 2>&1")?;
                let healthy = health.matches("is healthy").count();
                let started = health.matches(", started,").count();
                Ok((healthy == count && started == count)
                    .then_some(())
                    .ok_or(health))
            },
        )?;
        let etcd_healthy = self.started.elapsed();
        tracing::info!(seconds = etcd_healthy.as_secs_f64(), "etcd is healthy");

        self.poll("fleet to list every machine", deadline, || {
            let list = self
                .first_alive()?
                .ssh(&format!("{FLEETCTL} list-machines --no-legend 2>&1"))?;
            let listed = self
                .alive()
                .filter(|m| list.contains(&m.address.to_string()))
                .count();
            Ok((listed == count).then_some(()).ok_or(list))
        })?;
        let fleet_listed = self.started.elapsed();
        tracing::info!(
            seconds = fleet_listed.as_secs_f64(),
            "fleet lists every machine"
        );

        self.poll(
            "every machine to route to every flannel subnet",
            deadline,
            || Ok(self.flannel_unrouted()?.map_or(Ok(()), Err)),
        )?;
        let flannel_routed = self.started.elapsed();
        tracing::info!(
            seconds = flannel_routed.as_secs_f64(),
            "flannel subnets are routed"
        );
        Ok(Formation {
            booted,
            etcd_healthy,
            fleet_listed,
            flannel_routed,
        })
    }

    /// Each running machine's flannel subnet (`FLANNEL_SUBNET` of /run/flannel/subnet.env:
    /// the machine's first address in it, with the prefix length), in machine order; empty
    /// for a machine that has none yet.
    pub fn flannel_subnets(&self) -> Result<Vec<(String, String)>, ClusterError> {
        self.alive()
            .map(|machine| {
                Ok((
                    machine.name.clone(),
                    machine.flannel_subnet()?.unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// The network of machine `index`'s flannel subnet (`10.1.23.0/24`), while it runs.
    pub fn flannel_network_of(&self, index: usize) -> Result<String, ClusterError> {
        let machine = &self.machines[index];
        machine
            .flannel_subnet()?
            .as_deref()
            .and_then(subnet_network)
            .ok_or_else(|| ClusterError::NotRunning(format!("flanneld on {}", machine.name)))
    }

    /// `None` when every running machine has a route to every other running machine's
    /// flannel subnet; otherwise what is missing.
    pub fn flannel_unrouted(&self) -> Result<Option<String>, ClusterError> {
        let mut networks = Vec::new();
        for machine in self.alive() {
            match machine
                .flannel_subnet()?
                .as_deref()
                .and_then(subnet_network)
            {
                Some(network) => networks.push((machine, network)),
                None => return Ok(Some(format!("{} has no flannel subnet yet", machine.name))),
            }
        }
        let mut missing = Vec::new();
        for (machine, _) in &networks {
            let routes = machine.route_destinations()?;
            for (other, network) in &networks {
                let routed = routes.contains(network);
                if other.name != machine.name && !routed {
                    missing.push(format!(
                        "{} has no route to {} ({network})",
                        machine.name, other.name
                    ));
                }
            }
        }
        Ok((!missing.is_empty()).then(|| missing.join("\n")))
    }

    /// What `keel cluster up` prints: etcd's members, fleet's machines, each machine's flannel
    /// subnet, and how to log in.
    pub fn report(&self) -> Result<String, ClusterError> {
        let first = self.first_alive()?;
        let mut text = String::from("$ etcdctl member list\n");
        text.push_str(&first.ssh_ok("etcdctl member list")?);
        text.push_str("\n$ fleetctl list-machines\n");
        text.push_str(&first.ssh_ok(&format!("{FLEETCTL} list-machines"))?);
        text.push_str("\nflannel subnets:\n");
        for (name, subnet) in self.flannel_subnets()? {
            text.push_str(&format!("  {name:<8} {subnet}\n"));
        }
        text.push_str("\nlog in:\n");
        for machine in self.alive() {
            text.push_str(&format!(
                "  {:<8} {:<12} {}\n",
                machine.name,
                machine.address,
                machine.running()?.ssh_login_line()
            ));
        }
        Ok(text)
    }

    /// The first machine still running, where the waits ask their questions.
    pub fn first_alive(&self) -> Result<&Machine, ClusterError> {
        self.alive()
            .next()
            .ok_or_else(|| ClusterError::NotRunning("every machine".into()))
    }

    /// Asks `check` every [`POLL`] until it answers `Ok(Ok(value))` or the deadline passes;
    /// `Ok(Err(last))` means "not yet", with what was seen.
    pub fn poll<T>(
        &self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut() -> Result<Result<T, String>, ClusterError>,
    ) -> Result<T, ClusterError> {
        let start = Instant::now();
        loop {
            let last = match check() {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(seen)) => seen,
                // SSH into a busy emulated machine can time out; that is a "not yet" too.
                Err(ClusterError::Vm(e)) => e.to_string(),
                Err(e) => return Err(e),
            };
            if Instant::now() + POLL >= deadline {
                return Err(ClusterError::Timeout {
                    what: what.to_string(),
                    waited: start.elapsed(),
                    last,
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

/// `10.1.23.1/24` → `10.1.23.0/24`.
pub fn subnet_network(cidr: &str) -> Option<String> {
    let (address, len) = cidr.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    Some(format!(
        "{}/{len}",
        Ipv4Addr::from(u32::from(address) & mask)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_are_numbered_on_the_private_segment() {
        assert_eq!(machine_name(0), "node1");
        assert_eq!(machine_address(0), Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(machine_address(2), Ipv4Addr::new(10, 77, 0, 13));
        assert_eq!(
            machine_address(MAX_MACHINES - 1),
            Ipv4Addr::new(10, 77, 0, 250)
        );
    }

    #[test]
    fn subnets_become_their_networks() {
        assert_eq!(subnet_network("10.1.23.1/24").unwrap(), "10.1.23.0/24");
        assert_eq!(subnet_network("10.1.23.129/25").unwrap(), "10.1.23.128/25");
        assert_eq!(subnet_network("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert!(subnet_network("10.1.23.1").is_none());
        assert!(subnet_network("10.1.23.1/33").is_none());
    }

    #[test]
    fn the_config_drive_carries_name_address_and_user_data() {
        let files = config_drive_files(
            "node2",
            machine_address(1),
            "52:54:00:4b:00:02",
            "#cloud-config\n",
        );
        let file = |name: &str| {
            let (_, content) = files.iter().find(|(p, _)| *p == name).unwrap();
            String::from_utf8(content.clone()).unwrap()
        };
        assert_eq!(file("openstack/latest/user_data"), "#cloud-config\n");
        let meta: serde_json::Value =
            serde_json::from_str(&file("openstack/latest/meta_data.json")).unwrap();
        assert_eq!(meta["hostname"], "node2");
        let net: serde_json::Value =
            serde_json::from_str(&file("openstack/latest/network_data.json")).unwrap();
        assert_eq!(net["links"][0]["ethernet_mac_address"], "52:54:00:4b:00:02");
        assert_eq!(net["networks"][0]["ip_address"], "10.77.0.12");
        let ec2: serde_json::Value =
            serde_json::from_str(&file("ec2/latest/meta-data.json")).unwrap();
        assert_eq!(ec2["local-ipv4"], "10.77.0.12");
    }
}
