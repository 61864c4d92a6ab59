//! `keel cluster up N` / `keel cluster down`: a cluster that outlives the command that
//! started it.
//!
//! `up` starts a supervisor, `keel cluster supervise`, in its own session. The supervisor owns
//! the LAN hub and the VMs (which die with it), waits for the cluster to form and records its
//! progress in `<dir>/state.json`; `up` shows the supervisor's log as it goes and returns once
//! the cluster has formed, printing what it looks like. `down` sends the supervisor SIGTERM,
//! and it stops every VM on its way out.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterSpec};

/// Where `keel cluster up` keeps the machines' folders, the log and the state.
pub const DEFAULT_DIR: &str = "/var/tmp/keel-cluster";
const STATE: &str = "state.json";
const LOG: &str = "supervisor.log";

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// Boot N machines that form a cluster; return once etcd, fleet and flannel span them all.
    Up(UpArgs),
    /// Stop the cluster `up` started.
    Down(DirArg),
    /// Runs the cluster for `up` (started by it, in the background).
    #[command(hide = true)]
    Supervise(UpArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct DirArg {
    /// The cluster's folder: machines' overlays and consoles, supervisor.log, state.json.
    #[arg(long, default_value = DEFAULT_DIR)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// How many machines.
    #[arg(default_value_t = 3)]
    pub machines: usize,
    /// The cloud-config every machine gets.
    #[arg(long, default_value = "configs/cloud-config/cluster-node.yaml")]
    pub config: PathBuf,
    /// Image to boot (qcow2 or raw); never modified. Default: $KEEL_OUT/keel.qcow2 or
    /// out/keel.qcow2.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Private SSH key for root. Default: $KEEL_TEST_KEY or the key `make image` created.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// Guest memory in MiB, per machine.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Seconds to wait for the cluster to form.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Built container images to serve from the cluster's registry (on the host's loopback;
    /// registry.keel.internal:5000 in every machine). Default: $KEEL_OUT/containers or
    /// out/containers.
    #[arg(long)]
    pub containers: Option<PathBuf>,
    /// Then run the demo: a highly available multi-tier application (PostgreSQL, the
    /// application on two machines, nginx on every machine) from demo/units, started with
    /// fleetctl; return once it answers on --demo-port. The first machine is the database's
    /// (fleet metadata role=database).
    #[arg(long)]
    pub demo: bool,
    /// With --demo: then kill the machine of one application instance and show the
    /// application answering on, the instance moved and the items kept.
    #[arg(long, requires = "demo")]
    pub demo_failover: bool,
    /// With --demo: the host port (on 127.0.0.1 only) of the load balancer.
    #[arg(long, default_value_t = 8080)]
    pub demo_port: u16,
    #[command(flatten)]
    pub dir: DirArg,
}

/// What the supervisor tells `up` and `down`, in `<dir>/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    pid: u32,
    /// starting, formed or failed.
    status: String,
    #[serde(default)]
    report: String,
    #[serde(default)]
    error: String,
}

pub fn run(args: &ClusterArgs) -> Result<()> {
    match &args.command {
        ClusterCommand::Up(up) => run_up(up),
        ClusterCommand::Down(dir) => run_down(&dir.dir),
        ClusterCommand::Supervise(up) => supervise(up),
    }
}

fn read_state(dir: &Path) -> Option<State> {
    let text = std::fs::read_to_string(dir.join(STATE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Written whole, then renamed: `up` and `down` never read half a state.
fn write_state(dir: &Path, state: &State) -> Result<()> {
    let partial = dir.join(format!("{STATE}.partial"));
    std::fs::write(&partial, serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, dir.join(STATE))
        .with_context(|| format!("writing {}", dir.join(STATE).display()))
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn run_up(args: &UpArgs) -> Result<()> {
    let dir = &args.dir.dir;
    if let Some(state) = read_state(dir).filter(|s| process_alive(s.pid)) {
        bail!(
            "a cluster is already running from {} (supervisor pid {}): `keel cluster down{}` first",
            dir.display(),
            state.pid,
            dir_flag(dir)
        );
    }
    // Checked here so that a typo is reported at once, not in the supervisor's log.
    std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading the cloud-config {}", args.config.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _ = std::fs::remove_file(dir.join(STATE));
    let log_path = dir.join(LOG);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;

    let mut supervisor = Command::new(std::env::current_exe().context("finding keel itself")?);
    supervisor
        .args(["cluster", "supervise"])
        .arg(args.machines.to_string())
        .arg("--config")
        .arg(std::path::absolute(&args.config)?)
        .args(["--memory", &args.memory.to_string()])
        .args(["--timeout", &args.timeout.to_string()])
        .args(["--demo-port", &args.demo_port.to_string()])
        .arg("--dir")
        .arg(std::path::absolute(dir)?);
    if let Some(image) = args
        .image
        .clone()
        .or_else(|| Some(crate::vm::default_image()))
    {
        supervisor.arg("--image").arg(std::path::absolute(image)?);
    }
    if args.demo {
        supervisor.arg("--demo");
        if args.demo_failover {
            supervisor.arg("--demo-failover");
        }
        // Checked here, where the user sees it at once.
        std::net::TcpListener::bind(("127.0.0.1", args.demo_port)).with_context(|| {
            format!(
                "the demo's port 127.0.0.1:{} is taken: choose another with --demo-port",
                args.demo_port
            )
        })?;
    }
    if let Some(containers) = &args.containers {
        supervisor
            .arg("--containers")
            .arg(std::path::absolute(containers)?);
    }
    if let Some(key) = args.ssh_key.clone().or_else(crate::vm::default_key) {
        supervisor.arg("--ssh-key").arg(std::path::absolute(key)?);
    }
    supervisor
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent. Its own
        // session keeps the cluster out of reach of the terminal's Ctrl-C once `up` returns.
        unsafe {
            supervisor.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = supervisor
        .spawn()
        .context("starting the cluster's supervisor")?;
    println!(
        "starting {} machines (log: {}; stop with `keel cluster down{}`)",
        args.machines,
        log_path.display(),
        dir_flag(dir)
    );

    let mut shown = 0u64;
    loop {
        shown = show_new_log(&log_path, shown);
        if let Some(state) = read_state(dir) {
            match state.status.as_str() {
                "formed" => {
                    show_new_log(&log_path, shown);
                    println!("\n{}", state.report);
                    println!(
                        "the cluster runs on; stop it with `keel cluster down{}`",
                        dir_flag(dir)
                    );
                    return Ok(());
                }
                "failed" => {
                    let _ = child.wait();
                    show_new_log(&log_path, shown);
                    bail!("the cluster did not form: {}", state.error);
                }
                _ => {}
            }
        }
        if let Some(status) = child.try_wait()? {
            show_new_log(&log_path, shown);
            bail!("the cluster's supervisor exited ({status}) before the cluster formed");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn dir_flag(dir: &Path) -> String {
    if dir == Path::new(DEFAULT_DIR) {
        String::new()
    } else {
        format!(" --dir {}", dir.display())
    }
}

/// Prints what the log gained since byte `from`; returns the new end.
fn show_new_log(path: &Path, from: u64) -> u64 {
    let Ok(mut file) = std::fs::File::open(path) else {
        return from;
    };
    let mut text = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut text).is_err() {
        return from;
    }
    let _ = std::io::stdout().write_all(&text);
    from + text.len() as u64
}

fn run_down(dir: &Path) -> Result<()> {
    let Some(state) = read_state(dir) else {
        bail!("no cluster is running from {} (no {STATE})", dir.display());
    };
    if process_alive(state.pid) {
        // SAFETY: sending a signal has no memory effects here.
        unsafe { libc::kill(state.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while process_alive(state.pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        if process_alive(state.pid) {
            // SAFETY: as above; the VMs die with the supervisor (parent-death signal).
            unsafe { libc::kill(state.pid as libc::pid_t, libc::SIGKILL) };
        }
    }
    let _ = std::fs::remove_file(dir.join(STATE));
    println!("the cluster from {} is stopped", dir.display());
    Ok(())
}

fn supervise(args: &UpArgs) -> Result<()> {
    crate::vm::catch_interrupts();
    let dir = &args.dir.dir;
    let pid = std::process::id();
    let mut state = State {
        pid,
        status: "starting".into(),
        report: String::new(),
        error: String::new(),
    };
    write_state(dir, &state)?;
    let outcome = (|| -> Result<(Cluster, crate::registry::Registry, String)> {
        let mut spec = ClusterSpec::new(
            args.image.clone().unwrap_or_else(crate::vm::default_image),
            dir,
            args.machines,
        );
        spec.user_data = std::fs::read_to_string(&args.config)
            .with_context(|| format!("reading {}", args.config.display()))?;
        spec.ssh_key = args.ssh_key.clone();
        spec.memory_mib = args.memory;
        let containers = args
            .containers
            .clone()
            .unwrap_or_else(crate::vm::default_containers);
        let (registry, forward) = crate::vm::start_registry(&dir.join("registry"), &containers)?;
        spec.guest_forwards.push(forward);
        if args.demo {
            spec.machine_user_data
                .insert(0, super::demo::DATABASE_MACHINE_CONFIG.to_string());
            spec.host_forwards.push((0, args.demo_port, 80));
        }
        let mut cluster = Cluster::start(&spec)?;
        let formed = cluster.wait_formed(Duration::from_secs(args.timeout))?;
        let report = format!(
            "formed in {:.0} s ({}): booted {:.0} s, etcd healthy {:.0} s, fleet lists all {:.0} s, flannel routed {:.0} s\n\n{}",
            formed.flannel_routed.as_secs_f64(),
            cluster
                .first_alive()?
                .vm()
                .map(|vm| vm.accel().to_string())
                .unwrap_or_default(),
            formed.booted.as_secs_f64(),
            formed.etcd_healthy.as_secs_f64(),
            formed.fleet_listed.as_secs_f64(),
            formed.flannel_routed.as_secs_f64(),
            cluster.report()?
        );
        let report = if args.demo {
            let demo = run_demo(&mut cluster, args)?;
            format!("{report}\n{demo}")
        } else {
            report
        };
        Ok((cluster, registry, report))
    })();
    // The registry lives as long as the machines.
    let (cluster, _registry) = match outcome {
        Ok((cluster, registry, report)) => {
            state.status = "formed".into();
            state.report = report;
            write_state(dir, &state)?;
            (cluster, registry)
        }
        Err(e) => {
            state.status = "failed".into();
            state.error = format!("{e:#}");
            write_state(dir, &state)?;
            return Err(e);
        }
    };
    let running = |c: &Cluster| c.alive().any(|m| m.vm().is_some_and(|vm| vm.is_running()));
    while !crate::vm::interrupted() && running(&cluster) {
        std::thread::sleep(Duration::from_millis(500));
    }
    tracing::info!("stopping the cluster");
    drop(cluster);
    Ok(())
}

/// The demo's steps on a formed cluster (see [`super::demo`]); returns what `up` prints at
/// the end. Each step is printed as it ends, with the seconds since the cluster started.
fn run_demo(cluster: &mut Cluster, args: &UpArgs) -> Result<String> {
    use super::demo;
    let since = cluster.started();
    let base = format!("http://127.0.0.1:{}", args.demo_port);
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout);
    demo::step(
        since,
        "cluster formed; starting the demo's units with fleetctl",
    );
    let started = demo::start_units(cluster, deadline)?;
    print!("{started}");
    demo::wait_answering(cluster, &base, deadline)?;
    demo::step(
        since,
        &format!("the application answers through the load balancer at {base}"),
    );
    for text in ["first item", "second item", "third item"] {
        demo::add_item(&base, text).map_err(|e| anyhow::anyhow!("adding an item: {e}"))?;
    }
    let mut report = format!("$ fleetctl list-units\n{}\n", demo::list_units(cluster)?);
    report.push_str(&format!("open {base}/ in a browser\n\na few requests:\n"));
    for answer in demo::sample(&base, 6) {
        report.push_str(&match answer {
            Some(a) => format!(
                "  served by machine {} container {} (app@{})\n",
                a.machine, a.container, a.instance
            ),
            None => "  (no answer)\n".into(),
        });
    }
    println!("{report}");
    if args.demo_failover {
        let instance = demo::instance_off_first_machine(cluster)
            .ok_or_else(|| anyhow::anyhow!("no application instance runs off the first machine"))?;
        demo::step(since, &format!("killing the machine of app@{instance}"));
        let f = demo::fail_over(cluster, &base, instance, deadline)?;
        let items = demo::items(&base).map_err(|e| anyhow::anyhow!("listing the items: {e}"))?;
        let failover = format!(
            "killed {}: the application answered again {:.1} s later (gap between good answers {:.1} s, {} requests failed), only from {:?}; {} answered from its new machine after {:.1} s; items still listed: {:?}\n\n$ fleetctl list-units\n{}",
            f.killed,
            f.answering_again.as_secs_f64(),
            f.gap.as_secs_f64(),
            f.failed_requests,
            f.machines_after,
            f.moved_instance,
            f.instance_moved.as_secs_f64(),
            items,
            demo::list_units(cluster)?
        );
        demo::step(since, "failover done");
        println!("{failover}");
        report.push_str(&format!("\n{failover}"));
    }
    Ok(report)
}
