//! fleetctl: fleet's command-line client, driving fleetd through the HTTP API v1. Commands,
//! flags, `FLEETCTL_*` environment variables, messages and output columns are fleetctl's.
//!
//! The library entry is [`run`] (a parsed [`Cli`], output to the given writers, the exit code
//! back) or [`run_args`] (arguments as on a command line); the `fleetctl` binary calls
//! [`main`].

mod commands;
pub mod ssh;
pub mod table;

use std::ffi::OsString;
use std::io::Write;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};

pub use commands::run;

/// fleetctl's command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "fleetctl",
    version,
    about = "fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalFlags,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command name, each also read from
/// `FLEETCTL_<FLAG>` (`--ssh-username` from `FLEETCTL_SSH_USERNAME`) when not given. Boolean
/// flags take fleet's `--flag=false` form too.
#[derive(Debug, Clone, Args)]
pub struct GlobalFlags {
    /// Location of the fleet API: unix:///path or http://host:port.
    #[arg(long, global = true, env = "FLEETCTL_ENDPOINT", default_value = crate::api::client::DEFAULT_ENDPOINT)]
    pub endpoint: String,

    /// Adapter used to execute fleetctl commands (only "API" here: fleetctl talks to fleetd).
    #[arg(long, global = true, env = "FLEETCTL_DRIVER", default_value = "API")]
    pub driver: String,

    /// Amount of time in seconds to allow a single request before considering it failed.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_REQUEST_TIMEOUT",
        default_value_t = 3.0
    )]
    pub request_timeout: f64,

    /// Establish an SSH tunnel through the provided address for communication with fleet.
    #[arg(long, global = true, env = "FLEETCTL_TUNNEL")]
    pub tunnel: Option<String>,

    /// Username to use when connecting to CoreOS instance.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_SSH_USERNAME",
        default_value = "core"
    )]
    pub ssh_username: String,

    /// Amount of time in seconds to allow for SSH connection initialization before failing.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_SSH_TIMEOUT",
        default_value_t = 10.0
    )]
    pub ssh_timeout: f64,

    /// Verify host keys presented by remote machines before initiating SSH connections.
    #[arg(long, global = true, env = "FLEETCTL_STRICT_HOST_KEY_CHECKING", default_value = "true",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub strict_host_key_checking: bool,

    /// File used to store remote machine fingerprints. Ignored if strict host key checking is disabled.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_KNOWN_HOSTS_FILE",
        default_value = "~/.fleetctl/known_hosts"
    )]
    pub known_hosts_file: String,

    /// Connect to remote hosts over SSH using this TCP port.
    #[arg(long, global = true, env = "FLEETCTL_SSH_PORT", default_value_t = 22)]
    pub ssh_port: u16,

    /// Print out more debug information to stderr.
    #[arg(long, global = true, env = "FLEETCTL_DEBUG", default_value = "false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub debug: bool,

    /// submit/load/start: replace units whose file changed (destroyed and submitted again).
    #[arg(long, global = true, env = "FLEETCTL_REPLACE", default_value = "false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub replace: bool,

    /// load/start/stop/unload/destroy: do not wait until the units reach their state.
    #[arg(long, global = true, env = "FLEETCTL_NO_BLOCK", default_value = "false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub no_block: bool,

    /// Wait until the units reach their state, performing up to N attempts before giving up.
    /// A value of 0 indicates no limit. Does not apply to global units.
    #[arg(
        long,
        global = true,
        env = "FLEETCTL_BLOCK_ATTEMPTS",
        default_value_t = 0
    )]
    pub block_attempts: u32,

    /// Do not ellipsize fields on output.
    #[arg(short = 'l', long, global = true, env = "FLEETCTL_FULL", default_value = "false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub full: bool,

    /// Do not print a legend (column headers).
    #[arg(long, global = true, env = "FLEETCTL_NO_LEGEND", default_value = "false",
          num_args = 0..=1, require_equals = true, default_missing_value = "true",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set)]
    pub no_legend: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Output the contents of a submitted unit
    Cat { units: Vec<String> },
    /// Destroy one or more units in the cluster
    Destroy { units: Vec<String> },
    /// Print the journal of a unit in the cluster to stdout
    Journal {
        /// Number of recent log lines to return
        #[arg(long, default_value_t = 10)]
        lines: u32,
        /// Continuously print new entries as they are appended to the journal.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Execute journal command with sudo
        #[arg(long)]
        sudo: bool,
        /// Output mode, passed unaltered to journalctl on the remote host.
        #[arg(long, default_value = "short")]
        output: String,
        units: Vec<String>,
    },
    /// Enumerate the current hosts in the cluster
    #[command(name = "list-machines")]
    ListMachines {
        /// Columns to print for each Machine. Valid fields are "ip,machine,metadata"
        #[arg(long, default_value = table::DEFAULT_LIST_MACHINES_FIELDS)]
        fields: String,
    },
    /// List the units that exist in the cluster.
    #[command(name = "list-unit-files")]
    ListUnitFiles {
        /// Columns to print for each Unit file. Valid fields are "desc,dstate,global,hash,state,target,tmachine,unit"
        #[arg(long, default_value = table::DEFAULT_LIST_UNIT_FILES_FIELDS)]
        fields: String,
        /// Set maximum number of units to be printed
        #[arg(long, default_value_t = 0)]
        max_print_units: usize,
    },
    /// List the current state of units in the cluster
    #[command(name = "list-units")]
    ListUnits {
        /// Columns to print for each Unit. Valid fields are "active,hash,load,machine,sub,unit"
        #[arg(long, default_value = table::DEFAULT_LIST_UNITS_FIELDS)]
        fields: String,
    },
    /// Schedule one or more units in the cluster, first submitting them if necessary.
    Load { units: Vec<String> },
    /// Instruct systemd to rolling restart one or more units in the cluster.
    Restart { units: Vec<String> },
    /// Open interactive shell on a machine in the cluster
    Ssh {
        /// Forward local ssh-agent to target machine.
        #[arg(short = 'A', long)]
        forward_agent: bool,
        /// Open SSH connection to a specific machine.
        #[arg(short = 'm', long)]
        machine: Option<String>,
        /// Open SSH connection to machine running provided unit.
        #[arg(short = 'u', long)]
        unit: Option<String>,
        /// MACHINE|UNIT, then the command to run (none: a shell).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Instruct systemd to start one or more units in the cluster, first submitting and loading if necessary.
    Start { units: Vec<String> },
    /// Output the status of one or more units in the cluster
    Status { units: Vec<String> },
    /// Instruct systemd to stop one or more units in the cluster.
    Stop { units: Vec<String> },
    /// Upload one or more units to the cluster without starting them
    Submit { units: Vec<String> },
    /// Unschedule one or more units in the cluster.
    Unload { units: Vec<String> },
    /// Print the version and exit
    Version,
    /// Copies standard input and output to a Unix socket (the far end of `--tunnel`).
    #[command(name = "fd-forward", hide = true)]
    FdForward { path: String },
}

/// Runs fleetctl on `args` (the first being the program name), writing to `out` and `err`;
/// returns the exit code. A command-line error is clap's message and code 2.
pub async fn run_args<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli, out, err).await,
        Err(e) => {
            let text = e.render().to_string();
            if e.use_stderr() {
                let _ = err.write_all(text.as_bytes());
            } else {
                let _ = out.write_all(text.as_bytes());
            }
            e.exit_code()
        }
    }
}

/// The `fleetctl` program: parses the process's arguments and environment, runs, and returns
/// the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if cli.global.debug {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter("debug")
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fleetctl: cannot start: {e}");
            return 1;
        }
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    runtime.block_on(run(cli, &mut out, &mut err))
}
