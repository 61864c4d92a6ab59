//! The tutorial's demo on a running cluster: a highly available, multi-tier application
//! (PostgreSQL, a stateless application tier, nginx in front) started with fleetctl from the
//! units in `demo/units/`, written exactly as for CoreOS; then, optionally, a machine killed
//! under it. Used by `keel cluster up --demo` and by the demo VM test.
//!
//! The parts find each other through etcd: `db-discovery` and `app-discovery@N` announce
//! `address:port` with a TTL (`etcdctl set ... --ttl 60` in a loop, the sidekick pattern of
//! CoreOS's "Launching containers with fleet"), `app@N` reads the database's address, and
//! `lb-confd` rewrites nginx's instances on every change under `/services/app`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Cluster, ClusterError, Machine, FLEETCTL};

/// The demo's units, as a user copies them from `demo/units/`.
pub const UNITS: &[(&str, &str)] = &[
    ("db.service", include_str!("../../../demo/units/db.service")),
    (
        "db-discovery.service",
        include_str!("../../../demo/units/db-discovery.service"),
    ),
    (
        "app@.service",
        include_str!("../../../demo/units/app@.service"),
    ),
    (
        "app-discovery@.service",
        include_str!("../../../demo/units/app-discovery@.service"),
    ),
    ("lb.service", include_str!("../../../demo/units/lb.service")),
    (
        "lb-confd.service",
        include_str!("../../../demo/units/lb-confd.service"),
    ),
];

/// The cloud-config of the machine the database is pinned to (fleet metadata
/// `role=database`); the others boot `configs/cloud-config/cluster-node.yaml`.
pub const DATABASE_MACHINE_CONFIG: &str = include_str!("../../../demo/database-node.yaml");

/// The container images the demo's units pull.
pub const IMAGES: &[&str] = &["demo-db", "demo-app", "demo-lb"];

/// How many application instances: with `Conflicts=app@*.service` on three machines, one
/// fewer than the machines, so that an instance whose machine dies has a machine to move to.
pub const APP_INSTANCES: usize = 2;

/// Where fleetctl runs from on the first machine (the units' files are put there).
pub const UNIT_DIR: &str = "/var/roothome/keel-demo";

/// One answer of the application, through the load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub machine: String,
    pub container: String,
    pub instance: String,
}

/// What the failover showed.
#[derive(Debug, Clone)]
pub struct Failover {
    pub killed: String,
    pub moved_instance: String,
    /// Last good answer before the kill to the first good answer after it.
    pub gap: Duration,
    /// From the kill to answers again, only from the survivors.
    pub answering_again: Duration,
    /// From the kill to the moved instance answering on its new machine.
    pub instance_moved: Duration,
    pub machines_after: BTreeSet<String>,
    pub failed_requests: usize,
}

/// Prints a step with the seconds since `since`, as the demo shows its progress.
pub fn step(since: Instant, what: &str) {
    println!("[{:>6.1} s] {what}", since.elapsed().as_secs_f64());
}

fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .build()
}

/// GET `url`: (status, body); `None` when nothing answered.
pub fn get(url: &str) -> Option<(u16, String)> {
    match http_agent().get(url).call() {
        Ok(resp) => {
            let status = resp.status();
            Some((status, resp.into_string().unwrap_or_default()))
        }
        Err(ureq::Error::Status(status, resp)) => {
            Some((status, resp.into_string().unwrap_or_default()))
        }
        Err(_) => None,
    }
}

/// One `/api/whoami` through the load balancer; `None` unless it answered 200.
pub fn whoami(base: &str) -> Option<Answer> {
    let (status, body) = get(&format!("{base}/api/whoami"))?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some(Answer {
        machine: v["machine"].as_str()?.to_string(),
        container: v["container"].as_str()?.to_string(),
        instance: v["instance"].as_str()?.to_string(),
    })
}

/// Adds an item through the load balancer.
pub fn add_item(base: &str, text: &str) -> Result<(), String> {
    let body = serde_json::json!({ "text": text }).to_string();
    match http_agent()
        .post(&format!("{base}/api/items"))
        .set("Content-Type", "application/json")
        .send_string(&body)
    {
        Ok(resp) if resp.status() == 201 => Ok(()),
        Ok(resp) => Err(format!("answered {}", resp.status())),
        Err(e) => Err(e.to_string()),
    }
}

/// The items' texts, through the load balancer.
pub fn items(base: &str) -> Result<Vec<String>, String> {
    let (status, body) = get(&format!("{base}/api/items")).ok_or("no answer")?;
    if status != 200 {
        return Err(format!("answered {status}: {body}"));
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    Ok(v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["text"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// The database and the load balancer with their sidekicks: started first, so that the
/// application instances, which fleet places on the least loaded machines, go elsewhere.
pub const BACKEND_UNITS: &str = "db.service db-discovery.service lb.service lb-confd.service";

/// The application instances and their sidekicks: `app@1.service app-discovery@1.service ...`.
pub fn app_units() -> String {
    (1..=APP_INSTANCES)
        .map(|i| format!("app@{i}.service app-discovery@{i}.service"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the units' files into fleetctl's folder on `machine`.
pub fn put_units(machine: &Machine) -> Result<(), ClusterError> {
    let mut script = format!("mkdir -p {UNIT_DIR} && cd {UNIT_DIR}\n");
    for (name, text) in UNITS {
        script.push_str(&format!(
            "cat > '{name}' <<'KEEL_UNIT_EOF'\n{text}KEEL_UNIT_EOF\n"
        ));
    }
    machine.ssh_ok(&script)?;
    Ok(())
}

/// `fleetctl start --no-block UNITS` from the units' folder; what it printed, after the
/// command line.
pub fn fleetctl_start(machine: &Machine, units: &str) -> Result<String, ClusterError> {
    let out = machine.ssh_ok(&format!(
        "cd {UNIT_DIR} && {FLEETCTL} start --no-block {units}"
    ))?;
    Ok(format!("$ fleetctl start {units}\n{out}"))
}

/// Waits until fleet has placed `unit` on a machine; returns the machine's index.
pub fn wait_placed(
    cluster: &Cluster,
    unit: &str,
    deadline: Instant,
) -> Result<usize, ClusterError> {
    cluster.poll(&format!("fleet to place {unit}"), deadline, || {
        Ok(machine_of(cluster, unit)?
            .ok_or_else(|| list_units(cluster).unwrap_or_else(|e| e.to_string())))
    })
}

/// Everything, as `keel cluster up --demo` starts it: the backend, and once the database has
/// its machine (so that fleet counts it there), the application instances.
pub fn start_units(cluster: &Cluster, deadline: Instant) -> Result<String, ClusterError> {
    let machine = cluster.first_alive()?;
    put_units(machine)?;
    let mut out = fleetctl_start(machine, BACKEND_UNITS)?;
    wait_placed(cluster, "db.service", deadline)?;
    out.push_str(&fleetctl_start(machine, &app_units())?);
    Ok(out)
}

/// `fleetctl list-units`, as the demo prints it.
pub fn list_units(cluster: &Cluster) -> Result<String, ClusterError> {
    cluster
        .first_alive()?
        .ssh_ok(&format!("{FLEETCTL} list-units"))
}

/// Waits until the application answers through the load balancer at `base`, from every
/// instance (as many different containers as there are instances).
pub fn wait_answering(
    cluster: &Cluster,
    base: &str,
    deadline: Instant,
) -> Result<(), ClusterError> {
    let mut seen = BTreeSet::new();
    cluster.poll(
        "the application to answer from every instance through the load balancer",
        deadline,
        || {
            for _ in 0..6 {
                if let Some(answer) = whoami(base) {
                    seen.insert(answer.container);
                }
            }
            if seen.len() >= APP_INSTANCES {
                Ok(Ok(()))
            } else {
                let lb = get(&format!("{base}/lb/instances"))
                    .map(|(s, b)| format!("{s} {b}"))
                    .unwrap_or_else(|| "no answer".into());
                Ok(Err(format!(
                    "containers answering so far: {seen:?}; the load balancer's instances: {lb}"
                )))
            }
        },
    )
}

/// `count` answers through the load balancer (failed requests are `None`).
pub fn sample(base: &str, count: usize) -> Vec<Option<Answer>> {
    (0..count).map(|_| whoami(base)).collect()
}

/// The machine index running `unit`, from fleet's list.
pub fn machine_of(cluster: &Cluster, unit: &str) -> Result<Option<usize>, ClusterError> {
    let list = cluster.first_alive()?.ssh_ok(&format!(
        "{FLEETCTL} list-units --no-legend --full --fields unit,machine"
    ))?;
    let ip = list.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == unit).then(|| {
            words
                .next()
                .unwrap_or("")
                .rsplit('/')
                .next()
                .map(str::to_string)
        })?
    });
    Ok(ip.and_then(|ip| {
        cluster
            .machines()
            .iter()
            .position(|m| m.address.to_string() == ip)
    }))
}

/// When a request was made and what it got.
type Probe = (Instant, Option<Answer>);

/// The first application instance that runs off the first machine (whose port the host
/// reaches, and where the database is): the one the failover kills the machine of.
pub fn instance_off_first_machine(cluster: &Cluster) -> Option<usize> {
    (1..=APP_INSTANCES).find(|i| {
        machine_of(cluster, &format!("app@{i}.service"))
            .ok()
            .flatten()
            .is_some_and(|m| m != 0)
    })
}

/// Requests made all along the failover, from another thread.
struct Prober {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Probe>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(base: &str) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop2, log2, base) = (stop.clone(), log.clone(), base.to_string());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let answer = whoami(&base);
                log2.lock().unwrap().push((Instant::now(), answer));
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Prober {
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Probe> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Kills the machine that runs application instance `instance` (not the first machine, whose
/// port the host reaches), then waits until the application answers again only from the
/// survivors and the instance has moved to the free machine and answers from there.
pub fn fail_over(
    cluster: &mut Cluster,
    base: &str,
    instance: usize,
    deadline: Instant,
) -> Result<Failover, ClusterError> {
    let unit = format!("app@{instance}.service");
    let victim = machine_of(cluster, &unit)?
        .ok_or_else(|| ClusterError::NotRunning(format!("{unit} on any machine")))?;
    let killed = cluster.machines()[victim].name.clone();
    let prober = Prober::start(base);
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    cluster.kill(victim);

    let survivors: BTreeSet<String> = cluster.alive().map(|m| m.name.clone()).collect();
    let answering_again = {
        let survivors = survivors.clone();
        let prober = &prober;
        cluster.poll("answers again, only from the survivors", deadline, || {
            let log = prober.snapshot();
            let recent: Vec<_> = log
                .iter()
                .filter(|(at, _)| *at > killed_at)
                .rev()
                .take(4)
                .collect();
            let ok = recent.len() == 4
                && recent
                    .iter()
                    .all(|(_, a)| a.as_ref().is_some_and(|a| survivors.contains(&a.machine)));
            Ok(if ok {
                Ok(recent
                    .last()
                    .map_or(Duration::ZERO, |(at, _)| *at - killed_at))
            } else {
                Err(format!("last answers: {recent:?}"))
            })
        })?
    };
    let moved = cluster.poll(
        "the instance to answer from its new machine",
        deadline,
        || {
            let log = prober.snapshot();
            let found = log.iter().find(|(at, a)| {
                *at > killed_at
                    && a.as_ref()
                        .is_some_and(|a| a.instance == instance.to_string() && a.machine != killed)
            });
            Ok(match found {
                Some((at, _)) => Ok(*at - killed_at),
                None => Err(format!(
                    "no answer from app@{instance} yet; fleet: {}",
                    list_units(cluster).unwrap_or_default()
                )),
            })
        },
    )?;
    // A few more answers, so that both instances show.
    std::thread::sleep(Duration::from_secs(3));
    let log = prober.snapshot();
    drop(prober);
    let last_good_before = log
        .iter()
        .filter(|(at, a)| *at <= killed_at && a.is_some())
        .map(|(at, _)| *at)
        .next_back()
        .unwrap_or(killed_at);
    let first_good_after = log
        .iter()
        .filter(|(at, a)| *at > killed_at && a.is_some())
        .map(|(at, _)| *at)
        .next()
        .unwrap_or(killed_at);
    let machines_after = log
        .iter()
        .filter(|(at, _)| *at > killed_at + answering_again)
        .filter_map(|(_, a)| a.as_ref().map(|a| a.machine.clone()))
        .collect();
    Ok(Failover {
        killed,
        moved_instance: unit,
        gap: first_good_after - last_good_before,
        answering_again,
        instance_moved: moved,
        machines_after,
        failed_requests: log
            .iter()
            .filter(|(at, a)| *at > killed_at && a.is_none())
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_machine_differs_from_a_cluster_node_only_in_its_role() {
        let node = include_str!("../../../configs/cloud-config/cluster-node.yaml");
        let body = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        let expected: Vec<String> = body(node)
            .into_iter()
            .map(|l| l.replace("metadata: role=node,", "metadata: role=database,"))
            .collect();
        assert_eq!(body(DATABASE_MACHINE_CONFIG), expected);
        assert!(DATABASE_MACHINE_CONFIG.starts_with("#cloud-config\n"));
    }

    #[test]
    fn the_units_are_written_as_for_coreos() {
        let unit = |name: &str| UNITS.iter().find(|(n, _)| *n == name).unwrap().1;
        assert!(unit("app@.service").contains("Conflicts=app@*.service"));
        let sidekick = unit("app-discovery@.service");
        for line in [
            "BindsTo=app@%i.service",
            "After=app@%i.service",
            "MachineOf=app@%i.service",
            "--ttl 60",
            "ExecStop=/usr/bin/etcdctl rm /services/app/app-%i",
        ] {
            assert!(sidekick.contains(line), "{line}");
        }
        assert!(unit("db.service").contains("MachineMetadata=role=database"));
        assert_eq!(
            app_units(),
            "app@1.service app-discovery@1.service app@2.service app-discovery@2.service"
        );
    }
}
