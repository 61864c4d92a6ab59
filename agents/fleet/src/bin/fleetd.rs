//! `fleetd`: registers this machine, runs the agent and (unless disabled) the engine, and
//! serves fleet's HTTP API v1 on /var/run/fleet.sock. Settings come from /etc/fleet/fleet.conf,
//! then `FLEET_*` variables (what the provisioner's `coreos.fleet` drop-in sets), then flags.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use agent_common::machine::read_machine_id;
use fleet::agent::dbus::DbusSystemd;
use fleet::agent::DEFAULT_UNIT_DIR;
use fleet::api::server::{serve_until, ApiConfig, Listener};
use fleet::config::FleetConfig;
use fleet::daemon::{run_daemon, DaemonConfig};
use fleet::model::Machine;
use fleet::registry::Registry;

#[derive(Parser)]
#[command(
    name = "fleetd",
    about = "fleet's daemon: schedules systemd units across the cluster"
)]
struct Cli {
    /// fleet's configuration file (a missing default file is fine).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the machine ID is read from.
    #[arg(long, default_value = "/etc/machine-id")]
    machine_id_file: PathBuf,
    /// Where unit files are written before systemd loads them.
    #[arg(long, default_value = DEFAULT_UNIT_DIR)]
    unit_dir: PathBuf,
    /// The API's Unix socket.
    #[arg(long, default_value = "/var/run/fleet.sock")]
    api_socket: PathBuf,
    /// Also serve the API on this TCP address (e.g. 127.0.0.1:49153).
    #[arg(long)]
    api_listen: Option<String>,
    #[arg(long = "etcd_servers")]
    etcd_servers: Option<String>,
    #[arg(long = "etcd_key_prefix")]
    etcd_key_prefix: Option<String>,
    #[arg(long = "etcd_cafile")]
    etcd_cafile: Option<String>,
    #[arg(long = "etcd_certfile")]
    etcd_certfile: Option<String>,
    #[arg(long = "etcd_keyfile")]
    etcd_keyfile: Option<String>,
    #[arg(long = "public_ip")]
    public_ip: Option<String>,
    #[arg(long = "metadata")]
    metadata: Option<String>,
    #[arg(long = "agent_ttl")]
    agent_ttl: Option<String>,
    #[arg(long = "engine_reconcile_interval")]
    engine_reconcile_interval: Option<String>,
    #[arg(long = "disable_engine")]
    disable_engine: Option<String>,
    #[arg(long = "token_limit")]
    token_limit: Option<String>,
    #[arg(long = "verbosity")]
    verbosity: Option<String>,
}

impl Cli {
    fn overrides(&self) -> Vec<(&'static str, &str)> {
        [
            ("etcd_servers", &self.etcd_servers),
            ("etcd_key_prefix", &self.etcd_key_prefix),
            ("etcd_cafile", &self.etcd_cafile),
            ("etcd_certfile", &self.etcd_certfile),
            ("etcd_keyfile", &self.etcd_keyfile),
            ("public_ip", &self.public_ip),
            ("metadata", &self.metadata),
            ("agent_ttl", &self.agent_ttl),
            ("engine_reconcile_interval", &self.engine_reconcile_interval),
            ("disable_engine", &self.disable_engine),
            ("token_limit", &self.token_limit),
            ("verbosity", &self.verbosity),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_deref().map(|v| (key, v)))
        .collect()
    }
}

/// The first non-loopback IPv4 address, as fleet picked one when public_ip was not set.
fn first_ipv4() -> Option<IpAddr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below; we only read it meanwhile.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned, which stays valid until freed.
        let entry = unsafe { &*cursor };
        if !entry.ifa_addr.is_null()
            && unsafe { (*entry.ifa_addr).sa_family } as i32 == libc::AF_INET
        {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            if !ip.is_loopback() {
                found = Some(IpAddr::V4(ip));
                break;
            }
        }
        cursor = entry.ifa_next;
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let (mut config, warnings) = FleetConfig::load(cli.config.as_deref(), std::env::vars())?;
    for (key, value) in cli.overrides() {
        config.apply_override(key, value)?;
    }
    let filter = match config.verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .init();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let machine_id = read_machine_id(&cli.machine_id_file)?;
    let public_ip = config
        .public_ip
        .or_else(first_ipv4)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let machine = Machine {
        id: machine_id,
        public_ip,
        metadata: config.metadata.clone(),
    };
    tracing::info!(machine = %machine.id, ip = %machine.public_ip, "starting fleetd");

    // fleetd waits for etcd however long it takes: it is started with the machine and etcd
    // may come up later.
    let client = config
        .etcd()
        .connect_retrying(Duration::from_secs(10 * 365 * 24 * 3600))
        .await?;
    let registry = Registry::new(client, &config.etcd_key_prefix);
    let backend = Arc::new(DbusSystemd::connect().context("connecting to systemd")?);

    let stopped = agent_common::shutdown::on_signals();
    let api_config = || ApiConfig {
        token_limit: u16::try_from(config.token_limit).unwrap_or(u16::MAX),
    };
    let store = Arc::new(registry.clone());
    let mut servers = Vec::new();
    let socket = Listener::unix(&cli.api_socket)
        .with_context(|| format!("listening on {}", cli.api_socket.display()))?;
    servers.push(socket);
    if let Some(addr) = &cli.api_listen {
        servers.push(
            Listener::tcp(addr.as_str())
                .await
                .with_context(|| format!("listening on {addr}"))?,
        );
    }
    for listener in servers {
        let store = Arc::clone(&store);
        let mut stopped = stopped.clone();
        let api_config = api_config();
        tokio::spawn(async move {
            let shutdown = async move {
                agent_common::shutdown::requested(&mut stopped).await;
            };
            if let Err(e) = serve_until(store, listener, api_config, shutdown).await {
                tracing::error!(error = %e, "API server failed");
            }
        });
    }
    run_daemon(
        registry,
        DaemonConfig {
            machine,
            agent_ttl: config.agent_ttl,
            reconcile_interval: config.engine_reconcile_interval,
            disable_engine: config.disable_engine,
            unit_dir: cli.unit_dir,
        },
        backend,
        stopped,
    )
    .await?;
    Ok(())
}
