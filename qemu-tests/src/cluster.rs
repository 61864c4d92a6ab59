//! What the cluster test and the cluster benchmark share: booting the repository's
//! cluster-node cloud-config on N machines, reading fleet's view of units, and the
//! kill-a-machine scenario.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use keel_image::cluster::{Cluster, ClusterError, ClusterSpec, Machine, FLEETCTL};

use crate::{output, test_key, workspace_root};

/// A unit with no constraints, so fleet may run it anywhere and must move it when its machine
/// dies.
pub const MOVER: &str = "[Unit]
Description=a unit fleet moves when its machine dies

[Service]
ExecStart=/bin/sleep infinity
";

/// A spec for `machines` machines of the built image, each given
/// `configs/cloud-config/<config>` unchanged.
pub fn spec(work: &Path, config: &str, machines: usize) -> Result<ClusterSpec> {
    let path = workspace_root().join("configs/cloud-config").join(config);
    let mut spec = ClusterSpec::new(output("keel.qcow2")?, work, machines);
    spec.user_data =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    spec.ssh_key = Some(test_key()?);
    Ok(spec)
}

/// How long a cluster of emulated machines may take to form: they share the host's cores.
pub fn formation_timeout(machines: usize) -> Duration {
    crate::boot_timeout() * machines as u32
}

/// One row of `fleetctl list-units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetUnit {
    pub unit: String,
    pub active: String,
    /// The machine's public IP as fleet shows it (`<id>/<ip>`), or "-".
    pub ip: String,
}

/// fleet's view of every unit, as a machine's fleetctl prints it.
pub fn fleet_units(machine: &Machine) -> Result<Vec<FleetUnit>, ClusterError> {
    let text = machine.ssh_ok(&format!(
        "{FLEETCTL} list-units --no-legend --full --fields unit,active,machine"
    ))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let unit = words.next()?.to_string();
            let active = words.next()?.to_string();
            let machine = words.next().unwrap_or("-");
            let ip = machine.rsplit('/').next().unwrap_or("-").to_string();
            Some(FleetUnit { unit, active, ip })
        })
        .collect())
}

/// Writes `text` as `/var/roothome/<name>` on `machine`, where fleetctl is run from.
pub fn put_unit_file(machine: &Machine, name: &str, text: &str) -> Result<()> {
    machine.ssh_ok(&format!("cat > /var/roothome/{name} <<'EOF'\n{text}EOF"))?;
    Ok(())
}

/// Starts [`MOVER`] and returns the index of the machine it runs on.
pub fn start_mover(cluster: &Cluster, deadline: Instant) -> Result<usize> {
    let first = cluster.first_alive()?;
    put_unit_file(first, "mover.service", MOVER)?;
    first.ssh_ok(&format!(
        "cd /var/roothome && timeout 300 {FLEETCTL} start mover.service"
    ))?;
    let ip = cluster.poll("mover.service to run", deadline, || {
        let units = fleet_units(cluster.first_alive()?)?;
        Ok(units
            .iter()
            .find(|u| u.unit == "mover.service" && u.active == "active")
            .map(|u| u.ip.clone())
            .ok_or_else(|| format!("{units:?}")))
    })?;
    cluster
        .machines()
        .iter()
        .position(|m| m.address.to_string() == ip)
        .with_context(|| format!("mover.service runs on {ip}, which is no machine of the cluster"))
}

/// Waits until [`MOVER`] is active on a machine other than `dead_ip`; returns that machine's IP.
pub fn wait_mover_moved(cluster: &Cluster, dead_ip: &str, deadline: Instant) -> Result<String> {
    let ip = cluster.poll("fleet to run mover.service on a survivor", deadline, || {
        let units = fleet_units(cluster.first_alive()?)?;
        Ok(units
            .iter()
            .find(|u| u.unit == "mover.service" && u.active == "active" && u.ip != dead_ip)
            .map(|u| u.ip.clone())
            .ok_or_else(|| format!("{units:?}")))
    })?;
    Ok(ip)
}

/// Waits until no running machine has a route to `network` (a dead machine's flannel subnet).
pub fn wait_routes_gone(cluster: &Cluster, network: &str, deadline: Instant) -> Result<()> {
    cluster.poll(
        "the survivors' routes to the dead machine's subnet to go",
        deadline,
        || {
            let mut left = Vec::new();
            for machine in cluster.alive() {
                if machine.route_destinations()?.iter().any(|d| d == network) {
                    left.push(format!("{} still routes {network}", machine.name));
                }
            }
            Ok(left.is_empty().then_some(()).ok_or(left.join("\n")))
        },
    )?;
    Ok(())
}
