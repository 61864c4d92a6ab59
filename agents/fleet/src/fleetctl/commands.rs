//! The commands: each as fleetctl did it, through the API client.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::ssh::{expand_home, shell_quote, SshOptions};
use super::table::{self, effective_state, is_global};
use super::{Cli, Command, GlobalFlags};
use crate::api::names;
use crate::api::{Client, Endpoint};
use crate::model::{Machine, TargetState, Unit};
use crate::unit::UnitFile;

/// fleetctl's pause between two looks at a unit it waits for.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How long to wait for units to reach a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// `--no-block`: report "Triggered unit ..." and return.
    No,
    /// `--block-attempts=0`, the default: until it happens.
    Forever,
    Attempts(u32),
}

impl Wait {
    fn from_attempts(attempts: u32) -> Wait {
        if attempts == 0 {
            Wait::Forever
        } else {
            Wait::Attempts(attempts)
        }
    }
}

struct Ctx<'a> {
    client: Client,
    flags: &'a GlobalFlags,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// Machines by ID, fetched once per run (fleetctl's `cachedMachineState`).
    machines: Option<BTreeMap<String, Machine>>,
    /// submit, load or start: what `--replace` may do depends on it.
    command: &'static str,
}

macro_rules! say {
    ($w:expr, $($arg:tt)*) => {{
        let _ = writeln!($w, $($arg)*);
    }};
}

/// Runs one parsed command line; returns the exit code.
pub async fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let flags = &cli.global;
    match &cli.command {
        Command::Version => {
            say!(out, "fleetctl version {}", env!("CARGO_PKG_VERSION"));
            return 0;
        }
        Command::FdForward { path } => return fd_forward(path, err).await,
        _ => {}
    }
    let client = match client_for(flags) {
        Ok(c) => c,
        Err(e) => {
            say!(err, "Unable to initialize client: {e}");
            return 1;
        }
    };
    let mut ctx = Ctx {
        client,
        flags,
        out,
        err,
        machines: None,
        command: "",
    };
    let code = match &cli.command {
        Command::ListMachines { fields } => ctx.list_machines(fields).await,
        Command::ListUnits { fields } => ctx.list_units(fields).await,
        Command::ListUnitFiles {
            fields,
            max_print_units,
        } => ctx.list_unit_files(fields, *max_print_units).await,
        Command::Submit { units } => {
            ctx.command = "submit";
            ctx.submit(units).await
        }
        Command::Load { units } => {
            ctx.command = "load";
            ctx.load_or_start(units, TargetState::Loaded).await
        }
        Command::Start { units } => {
            ctx.command = "start";
            ctx.load_or_start(units, TargetState::Launched).await
        }
        Command::Stop { units } => ctx.stop(units).await,
        Command::Unload { units } => ctx.unload(units).await,
        Command::Destroy { units } => ctx.destroy(units).await,
        Command::Restart { units } => ctx.restart(units).await,
        Command::Cat { units } => ctx.cat(units).await,
        Command::Status { units } => ctx.status(units).await,
        Command::Journal {
            lines,
            follow,
            sudo,
            output,
            units,
        } => ctx.journal(units, *lines, *follow, *sudo, output).await,
        Command::Ssh {
            forward_agent,
            machine,
            unit,
            args,
        } => {
            ctx.ssh(*forward_agent, machine.as_deref(), unit.as_deref(), args)
                .await
        }
        Command::Version | Command::FdForward { .. } => 0,
    };
    let _ = ctx.out.flush();
    code
}

fn ssh_options(flags: &GlobalFlags, forward_agent: bool) -> SshOptions {
    SshOptions {
        user: flags.ssh_username.clone(),
        port: flags.ssh_port,
        tunnel: flags.tunnel.clone().filter(|t| !t.is_empty()),
        strict_host_key_checking: flags.strict_host_key_checking,
        known_hosts_file: expand_home(&flags.known_hosts_file),
        connect_timeout: flags.ssh_timeout,
        forward_agent,
    }
}

fn client_for(flags: &GlobalFlags) -> Result<Client, String> {
    if !flags.driver.eq_ignore_ascii_case("API") {
        return Err(format!(
            "unrecognized driver {:?}: this fleetctl only talks to fleetd's API",
            flags.driver
        ));
    }
    let endpoint = Endpoint::parse(&flags.endpoint).map_err(|e| e.to_string())?;
    let timeout = if flags.request_timeout.is_finite() && flags.request_timeout > 0.0 {
        Duration::from_secs_f64(flags.request_timeout)
    } else {
        crate::api::client::DEFAULT_REQUEST_TIMEOUT
    };
    let mut client = Client::new(endpoint.clone()).with_request_timeout(timeout);
    if let Some(tunnel) = flags.tunnel.as_deref().filter(|t| !t.is_empty()) {
        let ssh = ssh_options(flags, false);
        let argv = match &endpoint {
            Endpoint::Unix(path) => ssh.tunnel_argv(tunnel, Some(&path.to_string_lossy()), None),
            Endpoint::Http { authority } => ssh.tunnel_argv(tunnel, None, Some(authority)),
        };
        client = client.with_tunnel(argv);
    }
    Ok(client)
}

/// fleetctl's `unitNameMangle`: the file name of a path, `.service` added when it has no
/// known unit type.
pub(crate) fn unit_name_mangle(arg: &str) -> String {
    let base = Path::new(arg)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| arg.to_string());
    maybe_append_default_unit_type(&base)
}

fn maybe_append_default_unit_type(arg: &str) -> String {
    if names::recognized_unit_type(arg) {
        arg.to_string()
    } else {
        format!("{arg}.service")
    }
}

fn read_unit_file(path: &Path) -> Result<UnitFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    UnitFile::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A unit file's path next to `file`, with another file name.
fn sibling(file: &str, name: &str) -> PathBuf {
    match Path::new(file).parent() {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

impl Ctx<'_> {
    async fn machines(&mut self) -> &BTreeMap<String, Machine> {
        if self.machines.is_none() {
            // Best effort, as fleetctl: without the list, legends show IDs only.
            let list = self.client.machines().await.unwrap_or_default();
            self.machines = Some(list.into_iter().map(|m| (m.id.clone(), m)).collect());
        }
        self.machines.get_or_insert_with(BTreeMap::new)
    }

    fn wait_mode(&self) -> Wait {
        if self.flags.no_block {
            Wait::No
        } else {
            Wait::from_attempts(self.flags.block_attempts)
        }
    }

    // ----- listings -------------------------------------------------------------------

    async fn list_machines(&mut self, fields: &str) -> i32 {
        let fields = match table::parse_fields(fields, table::LIST_MACHINES_FIELDS) {
            Ok(f) => f,
            Err(m) => {
                say!(self.err, "{m}");
                return 1;
            }
        };
        let machines = match self.client.machines().await {
            Ok(m) => m,
            Err(e) => {
                say!(
                    self.err,
                    "Error retrieving list of active machines from fleet API ({e})"
                );
                say!(self.err, "Possible issues:");
                say!(self.err, "  etcd is unhealthy and/or lost quorum");
                say!(
                    self.err,
                    "  connection cannot be established to any etcd servers"
                );
                return 1;
            }
        };
        let full = self.flags.full;
        let rows = machines
            .iter()
            .map(|m| {
                fields
                    .iter()
                    .map(|f| table::machine_field(f, m, full))
                    .collect()
            })
            .collect();
        let _ = self
            .out
            .write_all(table::table(&fields, !self.flags.no_legend, rows).as_bytes());
        0
    }

    async fn list_units(&mut self, fields: &str) -> i32 {
        let fields = match table::parse_fields(fields, table::LIST_UNITS_FIELDS) {
            Ok(f) => f,
            Err(m) => {
                say!(self.err, "{m}");
                return 1;
            }
        };
        let states = match self.client.unit_states().await {
            Ok(s) => s,
            Err(e) => {
                say!(
                    self.err,
                    "Error retrieving list of units from repository: {e}"
                );
                return 1;
            }
        };
        let full = self.flags.full;
        let machines = if fields.contains(&"machine") {
            self.machines().await.clone()
        } else {
            BTreeMap::new()
        };
        let rows = states
            .iter()
            .map(|s| {
                fields
                    .iter()
                    .map(|f| table::unit_state_field(f, s, &machines, full))
                    .collect()
            })
            .collect();
        let _ = self
            .out
            .write_all(table::table(&fields, !self.flags.no_legend, rows).as_bytes());
        0
    }

    async fn list_unit_files(&mut self, fields: &str, max_print_units: usize) -> i32 {
        let fields = match table::parse_fields(fields, table::LIST_UNIT_FILES_FIELDS) {
            Ok(f) => f,
            Err(m) => {
                say!(self.err, "{m}");
                return 1;
            }
        };
        if fields.contains(&"tmachine") {
            say!(
                self.err,
                "WARNING: The \"tmachine\" field is deprecated. Use \"target\" instead"
            );
        }
        let units = match self.client.units().await {
            Ok(u) => u,
            Err(e) => {
                say!(
                    self.err,
                    "Error retrieving list of units from repository: {e}"
                );
                return 1;
            }
        };
        let full = self.flags.full;
        let machines = if fields.iter().any(|f| *f == "target" || *f == "tmachine") {
            self.machines().await.clone()
        } else {
            BTreeMap::new()
        };
        let mut rows = Vec::new();
        for (i, u) in units.iter().enumerate() {
            if max_print_units > 0 && i >= max_print_units {
                say!(
                    self.err,
                    "Further units after {max_print_units}-th are omitted"
                );
                break;
            }
            rows.push(
                fields
                    .iter()
                    .map(|f| table::unit_file_field(f, u, &machines, full))
                    .collect(),
            );
        }
        let _ = self
            .out
            .write_all(table::table(&fields, !self.flags.no_legend, rows).as_bytes());
        0
    }

    // ----- creating units -------------------------------------------------------------

    /// fleetctl's `getUnitFile`: the local file, or for an instance `foo@1.service` without
    /// a file of its own, the template `foo@.service` from the cluster or else from disk.
    async fn get_unit_file(&mut self, file: &str) -> Result<UnitFile, String> {
        let name = unit_name_mangle(file);
        if Path::new(file).exists() {
            return read_unit_file(Path::new(file))
                .map_err(|e| format!("failed getting Unit({file}) from file: {e}"));
        }
        let Some(template) = names::template_of(&name) else {
            return Err(format!(
                "unable to find Unit({name}) in Registry or on filesystem"
            ));
        };
        let registered = self.client.unit(&template).await.map_err(|e| {
            format!(
                "failed getting Unit({file}) from template: error retrieving template Unit({template}) from Registry: {e}"
            )
        })?;
        if let Some(t) = registered {
            let _ = self.is_local_unit_different(file, &t);
            return Ok(UnitFile::from_options(&t.options));
        }
        let path = sibling(file, &template);
        if !path.exists() {
            return Err(format!(
                "failed getting Unit({file}) from template: unable to find template Unit({template}) in Registry or on filesystem"
            ));
        }
        read_unit_file(&path).map_err(|e| {
            format!(
                "failed getting Unit({file}) from template: unable to load template Unit({template}) from file: {e}"
            )
        })
    }

    /// fleetctl's `isLocalUnitDifferent`: compares the registered unit with the local file,
    /// or, when there is none and the name is an instance, with the local template. Warns
    /// when they differ and `--replace` is not given.
    fn is_local_unit_different(&mut self, file: &str, unit: &Unit) -> Result<bool, String> {
        let registered = UnitFile::from_options(&unit.options).hash();
        let replace = self.flags.replace;
        if Path::new(file).exists() {
            let local = read_unit_file(Path::new(file))?;
            let different = local.hash() != registered;
            if different && !replace {
                say!(
                    self.err,
                    "WARNING: Unit {} in registry differs from local unit file {file}. Add --replace to override.",
                    unit.name
                );
            }
            return Ok(different);
        }
        let base = unit_name_mangle(file);
        let Some(template) = names::template_of(&base) else {
            return Err(format!(
                "error Unit {file} does not seem to be a template unit"
            ));
        };
        let path = sibling(file, &template);
        if !path.exists() {
            return Err(format!(
                "stat {}: no such file or directory",
                path.display()
            ));
        }
        let local = read_unit_file(&path)?;
        let different = local.hash() != registered;
        if different && !replace {
            say!(
                self.err,
                "WARNING: Unit {} in registry differs from local template unit file {file}. Add --replace to override.",
                unit.name
            );
        }
        Ok(different)
    }

    /// fleetctl's `checkReplaceUnitState`: which desired states each command may replace.
    fn may_replace(&mut self, unit: &Unit) -> bool {
        let allowed: &[TargetState] = match self.command {
            "submit" => &[TargetState::Inactive],
            "load" => &[TargetState::Inactive, TargetState::Loaded],
            _ => &[
                TargetState::Inactive,
                TargetState::Loaded,
                TargetState::Launched,
            ],
        };
        if allowed.contains(&unit.desired_state) {
            return true;
        }
        say!(
            self.err,
            "Warning: can not replace Unit({}) in state '{}', use the appropriate command",
            unit.name,
            unit.desired_state
        );
        false
    }

    /// fleetctl's `lazyCreateUnits`: makes sure each unit exists in the cluster, submitting
    /// local files (or template instances); with `--replace`, a unit whose file changed is
    /// destroyed and submitted again. Waits for the new units to be known (inactive).
    async fn lazy_create_units(&mut self, args: &[String]) -> Result<(), String> {
        let mut created = Vec::new();
        for arg in args {
            let arg = maybe_append_default_unit_type(arg);
            let name = unit_name_mangle(&arg);
            let existing = self
                .client
                .unit(&name)
                .await
                .map_err(|e| format!("error retrieving Unit({name}) from Registry: {e}"))?;
            if let Some(unit) = existing {
                let different = self.is_local_unit_different(&arg, &unit);
                if !self.flags.replace {
                    continue;
                }
                match different {
                    Err(e) => return Err(e),
                    Ok(false) => {
                        say!(
                            self.out,
                            "Found same Unit({}) in Registry, nothing to do",
                            unit.name
                        );
                        continue;
                    }
                    Ok(true) => {
                        if !self.may_replace(&unit) {
                            continue;
                        }
                        self.client
                            .destroy_unit(&name)
                            .await
                            .map_err(|e| format!("failed replacing unit {name}: {e}"))?;
                    }
                }
            }
            let file = self.get_unit_file(&arg).await?;
            names::validate_name(&name)?;
            self.client
                .create_unit(&name, &file.options(), TargetState::Inactive)
                .await
                .map_err(|e| format!("failed creating unit {name}: {e}"))?;
            created.push(name);
        }
        // As fleetctl: creation waits by --block-attempts even with --no-block.
        let wait = Wait::from_attempts(self.flags.block_attempts);
        let errors = self
            .wait_for_unit_states(&created, TargetState::Inactive, wait)
            .await;
        for e in &errors {
            say!(self.err, "Error waiting on unit creation: {e}");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err("One or more errors creating units".into())
        }
    }

    /// fleetctl's `setTargetStateOfUnits`: the units whose desired state changed.
    async fn set_target_state_of_units(
        &mut self,
        names: &[String],
        state: TargetState,
    ) -> Result<Vec<Unit>, String> {
        let mut triggered = Vec::new();
        for name in names {
            let unit = match self.client.unit(name).await {
                Ok(Some(u)) => u,
                Ok(None) => return Err(format!("unable to find unit {name}")),
                Err(e) => return Err(format!("error retrieving unit {name} from registry: {e}")),
            };
            if unit.desired_state == state {
                continue;
            }
            self.client
                .set_unit_target_state(name, state)
                .await
                .map_err(|e| e.to_string())?;
            triggered.push(unit);
        }
        Ok(triggered)
    }

    // ----- waiting --------------------------------------------------------------------

    /// Polls the units until each reports `state` (printing "Unit NAME STATE on MACHINE" as
    /// it does), or until the attempts run out; returns the errors.
    async fn wait_for_unit_states(
        &mut self,
        names: &[String],
        state: TargetState,
        wait: Wait,
    ) -> Vec<String> {
        let mut pending: Vec<String> = names.to_vec();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let mut still = Vec::new();
            for name in pending {
                if !self.assert_unit_state(&name, state).await {
                    still.push(name);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            attempt += 1;
            if let Wait::Attempts(max) = wait {
                if attempt >= max {
                    return pending
                        .iter()
                        .map(|n| format!("timed out waiting for unit {n} to report state {state}"))
                        .collect();
                }
            }
            let _ = self.out.flush();
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Vec::new()
    }

    async fn assert_unit_state(&mut self, name: &str, state: TargetState) -> bool {
        let unit = match self.client.unit(name).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                tracing::warn!("Unit {name} not found");
                return false;
            }
            Err(e) => {
                tracing::warn!("Error retrieving Unit({name}) from Registry: {e}");
                return false;
            }
        };
        if effective_state(&unit) != state {
            return false;
        }
        let current = unit.current_state.unwrap_or(TargetState::Inactive);
        let mut message = format!("Unit {name} {current}");
        if let Some(id) = unit.machine_id.as_deref().filter(|m| !m.is_empty()) {
            let full = self.flags.full;
            let legend = self
                .machines()
                .await
                .get(id)
                .map(|m| table::machine_full_legend(&m.id, &m.public_ip, full));
            if let Some(legend) = legend {
                message = format!("{message} on {legend}");
            }
        }
        say!(self.out, "{message}");
        true
    }

    /// fleetctl's `tryWaitForUnitStates`: with `--no-block` only "Triggered unit NAME VERB".
    async fn try_wait_for_unit_states(
        &mut self,
        names: &[String],
        verb: &str,
        state: TargetState,
        wait: Wait,
    ) -> i32 {
        if wait == Wait::No {
            for name in names {
                say!(self.out, "Triggered unit {name} {verb}");
            }
            return 0;
        }
        let errors = self.wait_for_unit_states(names, state, wait).await;
        for e in &errors {
            say!(self.err, "Error waiting for units: {e}");
        }
        i32::from(!errors.is_empty())
    }

    // ----- state changes --------------------------------------------------------------

    async fn submit(&mut self, units: &[String]) -> i32 {
        if units.is_empty() {
            say!(self.err, "No units given");
            return 0;
        }
        if let Err(e) = self.lazy_create_units(units).await {
            say!(self.err, "Error creating units: {e}");
            return 1;
        }
        0
    }

    async fn load_or_start(&mut self, units: &[String], state: TargetState) -> i32 {
        let (verb, error_verb) = match state {
            TargetState::Loaded => ("load", "loading"),
            _ => ("start", "starting"),
        };
        if units.is_empty() {
            say!(self.err, "No units given");
            return 0;
        }
        if let Err(e) = self.lazy_create_units(units).await {
            say!(self.err, "Error creating units: {e}");
            return 1;
        }
        let names: Vec<String> = units.iter().map(|u| unit_name_mangle(u)).collect();
        let triggered = match self.set_target_state_of_units(&names, state).await {
            Ok(t) => t,
            Err(e) => {
                say!(self.err, "Error {error_verb} units: {e}");
                return 1;
            }
        };
        let mut waiting = Vec::new();
        for u in &triggered {
            if is_global(u) {
                say!(self.out, "Triggered global unit {} {verb}", u.name);
            } else {
                waiting.push(u.name.clone());
            }
        }
        let wait = self.wait_mode();
        if self
            .try_wait_for_unit_states(&waiting, verb, state, wait)
            .await
            != 0
        {
            say!(self.err, "Error waiting for unit states, exit status: 1");
            return 1;
        }
        0
    }

    /// fleetctl's `findUnits`: the named units that exist (others are skipped silently).
    async fn find_units(&mut self, args: &[String]) -> Result<Vec<Unit>, String> {
        let all = self.client.units().await.map_err(|e| e.to_string())?;
        let by_name: BTreeMap<&str, &Unit> = all.iter().map(|u| (u.name.as_str(), u)).collect();
        Ok(args
            .iter()
            .filter_map(|a| {
                by_name
                    .get(unit_name_mangle(a).as_str())
                    .map(|u| (*u).clone())
            })
            .collect())
    }

    async fn stop(&mut self, args: &[String]) -> i32 {
        let units = match self.find_units(args).await {
            Ok(u) => u,
            Err(e) => {
                say!(self.err, "{e}");
                return 1;
            }
        };
        let mut stopping = Vec::new();
        for u in &units {
            if !is_global(u) {
                match u.current_state.unwrap_or(TargetState::Inactive) {
                    TargetState::Inactive => {
                        say!(self.err, "Unable to stop unit {} in state inactive", u.name);
                        return 1;
                    }
                    TargetState::Loaded => continue,
                    TargetState::Launched => {}
                }
            }
            if !self
                .trigger(u, TargetState::Loaded, ("stop", "stopping"), &mut stopping)
                .await
            {
                return 1;
            }
        }
        let wait = self.wait_mode();
        self.try_wait_for_unit_states(&stopping, "stop", TargetState::Loaded, wait)
            .await
    }

    /// Sets `u`'s desired state to `state`: a global unit is only announced ("Triggered
    /// global unit ..."), any other is added to `waiting`. `verbs` are the command's word and
    /// its -ing form for messages. False (with the error printed) when the API refused.
    async fn trigger(
        &mut self,
        u: &Unit,
        state: TargetState,
        (verb, doing): (&str, &str),
        waiting: &mut Vec<String>,
    ) -> bool {
        if let Err(e) = self.client.set_unit_target_state(&u.name, state).await {
            say!(self.err, "Error {doing} unit {}: {e}", u.name);
            return false;
        }
        if is_global(u) {
            say!(self.out, "Triggered global unit {} {verb}", u.name);
        } else {
            waiting.push(u.name.clone());
        }
        true
    }

    async fn unload(&mut self, args: &[String]) -> i32 {
        let units = match self.find_units(args).await {
            Ok(u) => u,
            Err(e) => {
                say!(self.err, "{e}");
                return 1;
            }
        };
        let mut waiting = Vec::new();
        for u in &units {
            if !is_global(u)
                && u.current_state.unwrap_or(TargetState::Inactive) == TargetState::Inactive
            {
                continue;
            }
            if !self
                .trigger(
                    u,
                    TargetState::Inactive,
                    ("unload", "unloading"),
                    &mut waiting,
                )
                .await
            {
                return 1;
            }
        }
        let wait = self.wait_mode();
        self.try_wait_for_unit_states(&waiting, "unload", TargetState::Inactive, wait)
            .await
    }

    async fn destroy(&mut self, args: &[String]) -> i32 {
        let units = match self.find_units(args).await {
            Ok(u) => u,
            Err(e) => {
                say!(self.err, "{e}");
                return 1;
            }
        };
        let mut exit = 0;
        for u in &units {
            if let Err(e) = self.client.destroy_unit(&u.name).await {
                say!(self.err, "Error destroying units: {e}");
                exit = 1;
                continue;
            }
            if !self.flags.no_block {
                // Until the unit is gone; with --block-attempts=N, at most N-1 looks, as fleetctl.
                let mut left = self.flags.block_attempts;
                loop {
                    if self.flags.block_attempts >= 1 {
                        left -= 1;
                        if left == 0 {
                            break;
                        }
                    }
                    match self.client.unit(&u.name).await {
                        Ok(None) => break,
                        Ok(Some(_)) => tokio::time::sleep(POLL_INTERVAL).await,
                        Err(e) => {
                            say!(self.err, "Error destroying units: {e}");
                            exit = 1;
                            break;
                        }
                    }
                }
            }
            say!(self.out, "Destroyed {}", u.name);
        }
        exit
    }

    async fn restart(&mut self, args: &[String]) -> i32 {
        let units = match self.find_units(args).await {
            Ok(u) => u,
            Err(e) => {
                say!(self.err, "{e}");
                return 1;
            }
        };
        if units.is_empty() {
            say!(self.err, "No units were found");
            return 1;
        }
        let wait = Wait::from_attempts(self.flags.block_attempts);
        for u in &units {
            let current = u.current_state.unwrap_or(TargetState::Inactive);
            if current == TargetState::Inactive && !is_global(u) {
                say!(
                    self.err,
                    "Unable to restart unit {} in state inactive",
                    u.name
                );
                return 1;
            }
            if current == TargetState::Loaded {
                if self
                    .set_unit_state_and_wait(u, TargetState::Launched, wait)
                    .await
                    != 0
                {
                    return 1;
                }
                continue;
            }
            if self
                .set_unit_state_and_wait(u, TargetState::Loaded, wait)
                .await
                != 0
                || self
                    .set_unit_state_and_wait(u, TargetState::Launched, wait)
                    .await
                    != 0
            {
                return 1;
            }
            say!(self.out, "Unit({}) was restarted.", u.name);
        }
        0
    }

    async fn set_unit_state_and_wait(&mut self, u: &Unit, state: TargetState, wait: Wait) -> i32 {
        if let Err(e) = self.client.set_unit_target_state(&u.name, state).await {
            say!(
                self.err,
                "Error waiting for unit {} to change states: {e}",
                u.name
            );
            return 1;
        }
        if is_global(u) {
            return 0;
        }
        let errors = self
            .wait_for_unit_states(std::slice::from_ref(&u.name), state, wait)
            .await;
        if let Some(e) = errors.first() {
            say!(
                self.err,
                "Error waiting for unit {} to change states: {e}",
                u.name
            );
            return 1;
        }
        0
    }

    async fn cat(&mut self, args: &[String]) -> i32 {
        if args.len() != 1 {
            say!(self.err, "One unit file must be provided");
            return 1;
        }
        let name = unit_name_mangle(&args[0]);
        match self.client.unit(&name).await {
            Ok(Some(u)) => {
                // The text as the cluster has it, unchanged (no newline added).
                let _ = self
                    .out
                    .write_all(UnitFile::from_options(&u.options).to_text().as_bytes());
                0
            }
            Ok(None) => {
                say!(self.err, "Unit {name} not found");
                1
            }
            Err(e) => {
                say!(self.err, "Error retrieving Unit {name}: {e}");
                1
            }
        }
    }

    // ----- on the machines ------------------------------------------------------------

    async fn status(&mut self, args: &[String]) -> i32 {
        let mut globals = Vec::new();
        let mut exit = 0;
        for (i, arg) in args.iter().enumerate() {
            let name = unit_name_mangle(arg);
            let unit = match self.client.unit(&name).await {
                Ok(Some(u)) => u,
                Ok(None) => {
                    say!(self.err, "Unit {name} does not exist.");
                    return 1;
                }
                Err(e) => {
                    say!(self.err, "Error retrieving unit: {e}");
                    return 1;
                }
            };
            if is_global(&unit) {
                globals.push(unit);
                continue;
            }
            if unit.current_state.unwrap_or(TargetState::Inactive) == TargetState::Inactive {
                say!(self.err, "Unit {} does not appear to be loaded.", unit.name);
                return 1;
            }
            // The blank line systemctl status puts between units.
            if i != 0 {
                say!(self.out, "");
            }
            let machine = unit.machine_id.clone().unwrap_or_default();
            let command = ["systemctl", "status", "-l", unit.name.as_str()].map(String::from);
            let code = self.run_command(&machine, &command, false).await;
            if code != 0 {
                exit = code;
                break;
            }
        }
        for unit in globals {
            let states = match self
                .client
                .unit_states_filtered(None, Some(&unit.name))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    say!(
                        self.err,
                        "Error retrieving machine state for global units: {e}"
                    );
                    return 1;
                }
            };
            for s in states {
                let command = ["systemctl", "status", "-l", unit.name.as_str()].map(String::from);
                let code = self.run_command(&s.machine_id, &command, false).await;
                if code != 0 {
                    exit = code;
                }
            }
        }
        exit
    }

    async fn journal(
        &mut self,
        args: &[String],
        lines: u32,
        follow: bool,
        sudo: bool,
        output: &str,
    ) -> i32 {
        if args.len() != 1 {
            say!(self.err, "One unit file must be provided.");
            return 1;
        }
        let name = unit_name_mangle(&args[0]);
        let unit = match self.client.unit(&name).await {
            Ok(Some(u)) => u,
            Ok(None) => {
                say!(self.err, "Unit {name} does not exist.");
                return 1;
            }
            Err(e) => {
                say!(self.err, "Error retrieving unit {name}: {e}");
                return 1;
            }
        };
        if is_global(&unit) {
            say!(
                self.err,
                "Unable to retrieve journal of global unit {name}."
            );
            return 1;
        }
        if unit.current_state.unwrap_or(TargetState::Inactive) == TargetState::Inactive {
            say!(self.err, "Unit {name} does not appear to be running.");
            return 1;
        }
        let mut command: Vec<String> = Vec::new();
        if sudo {
            command.push("sudo".into());
        }
        command.extend(
            [
                "journalctl",
                "--unit",
                name.as_str(),
                "--no-pager",
                "-n",
                &lines.to_string(),
                "--output",
                output,
            ]
            .map(String::from),
        );
        if follow {
            command.push("-f".into());
        }
        let machine = unit.machine_id.clone().unwrap_or_default();
        self.run_command(&machine, &command, follow).await
    }

    async fn ssh(
        &mut self,
        forward_agent: bool,
        machine: Option<&str>,
        unit: Option<&str>,
        args: &[String],
    ) -> i32 {
        if machine.is_some() && unit.is_some() {
            say!(
                self.err,
                "Both machine and unit flags provided, please specify only one."
            );
            return 1;
        }
        let mut args: Vec<String> = args.to_vec();
        let found = match (machine, unit) {
            (Some(m), _) => self.find_address_in_machine_list(m).await.map(|(a, _)| a),
            (_, Some(u)) => self.find_address_in_running_units(u).await.map(|(a, _)| a),
            _ => {
                let r = self.global_machine_lookup(&args).await;
                if !args.is_empty() {
                    args.remove(0);
                }
                r
            }
        };
        let address = match found {
            Ok(a) => a,
            Err(e) => {
                say!(self.err, "Unable to proceed: {e}");
                return 1;
            }
        };
        if address.is_empty() {
            say!(self.err, "Could not determine address of machine.");
            return 1;
        }
        if args.first().map(String::as_str) == Some("--") {
            args.remove(0);
        }
        let ssh = ssh_options(self.flags, forward_agent);
        // A command is passed as the words were given, for the remote shell, as fleetctl did.
        let argv = ssh.command_argv(&address, args.is_empty(), &args);
        self.spawn(&argv).await
    }

    async fn global_machine_lookup(&mut self, args: &[String]) -> Result<String, String> {
        let Some(lookup) = args.first() else {
            return Err("one machine or unit must be provided".into());
        };
        let machine = self.find_address_in_machine_list(lookup).await;
        let unit = self.find_address_in_running_units(lookup).await;
        match (machine, unit) {
            (Ok((_, true)), Ok((_, true))) => Err(format!(
                "ambiguous argument, both machine and unit found for `{lookup}`.\nPlease use flag `-m` or `-u` to refine the search"
            )),
            (Ok((a, true)), _) => Ok(a),
            (_, Ok((a, true))) => Ok(a),
            _ => Err("could not find matching unit or machine".into()),
        }
    }

    /// The IP of the one machine whose ID starts with `lookup`.
    async fn find_address_in_machine_list(
        &mut self,
        lookup: &str,
    ) -> Result<(String, bool), String> {
        let machines = self.client.machines().await.map_err(|e| e.to_string())?;
        let mut matches = machines.iter().filter(|m| m.id.starts_with(lookup));
        match (matches.next(), matches.next()) {
            (Some(m), None) => Ok((m.public_ip.clone(), true)),
            (Some(_), Some(_)) => Err("found more than one machine".into()),
            (None, _) => Err("machine does not exist".into()),
        }
    }

    /// The IP of the machine a (non-global) unit is scheduled to.
    async fn find_address_in_running_units(
        &mut self,
        name: &str,
    ) -> Result<(String, bool), String> {
        let name = unit_name_mangle(name);
        let unit = match self.client.unit(&name).await.map_err(|e| e.to_string())? {
            Some(u) => u,
            None => return Err("unit does not exist".into()),
        };
        if is_global(&unit) {
            return Err("global units unsupported".into());
        }
        let Some(id) = unit.machine_id.filter(|m| !m.is_empty()) else {
            return Ok((String::new(), false));
        };
        match self.machines().await.get(&id) {
            Some(m) if !m.public_ip.is_empty() => Ok((m.public_ip.clone(), true)),
            _ => Ok((String::new(), false)),
        }
    }

    /// fleetctl's `runCommand`: on this machine directly, on another over SSH.
    async fn run_command(&mut self, machine_id: &str, command: &[String], tty: bool) -> i32 {
        if !machine_id.is_empty() && local_machine_id().as_deref() == Some(machine_id) {
            return self.spawn(command).await;
        }
        let ip = self
            .machines()
            .await
            .get(machine_id)
            .map(|m| m.public_ip.clone())
            .filter(|ip| !ip.is_empty());
        let Some(ip) = ip else {
            say!(
                self.err,
                "Error getting machine IP: machine {machine_id} not found"
            );
            return 1;
        };
        let quoted: Vec<String> = command.iter().map(|w| shell_quote(w)).collect();
        let argv = ssh_options(self.flags, false).command_argv(&ip, tty, &quoted);
        self.spawn(&argv).await
    }

    /// Runs a program on this terminal; its exit code (or 1 when it could not run).
    async fn spawn(&mut self, argv: &[String]) -> i32 {
        let _ = self.out.flush();
        let _ = self.err.flush();
        if self.flags.strict_host_key_checking && argv.first().map(String::as_str) == Some("ssh") {
            let file = expand_home(&self.flags.known_hosts_file);
            if let Some(dir) = file.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        tracing::debug!("running {argv:?}");
        let status = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .await;
        match status {
            Ok(s) => s.code().unwrap_or(1),
            Err(e) => {
                say!(self.err, "Error running {}: {e}", argv[0]);
                1
            }
        }
    }
}

/// This machine's ID (`/etc/machine-id`), to run commands for local units without SSH.
fn local_machine_id() -> Option<String> {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `fleetctl fd-forward PATH`: joins standard input and output to a Unix socket, the far end
/// of `--tunnel` (run there by SSH).
async fn fd_forward(path: &str, err: &mut dyn Write) -> i32 {
    let stream = match tokio::net::UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) => {
            say!(err, "Unable to connect to {path}: {e}");
            return 1;
        }
    };
    let (mut from_socket, mut to_socket) = stream.into_split();
    let upstream = async {
        let mut stdin = tokio::io::stdin();
        let _ = tokio::io::copy(&mut stdin, &mut to_socket).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_socket).await;
        // Input ended; the answers may still be coming.
        std::future::pending::<()>().await
    };
    let downstream = async {
        let mut stdout = tokio::io::stdout();
        let r = tokio::io::copy(&mut from_socket, &mut stdout).await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
        r
    };
    // The socket side ends the session: when the server closes, we are done.
    tokio::select! {
        r = downstream => match r {
            Ok(_) => 0,
            Err(e) => {
                say!(err, "fd-forward: {e}");
                1
            }
        },
        () = upstream => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_mangling() {
        assert_eq!(unit_name_mangle("examples/hello.service"), "hello.service");
        assert_eq!(unit_name_mangle("hello"), "hello.service");
        assert_eq!(unit_name_mangle("/a/b/web@1.service"), "web@1.service");
        assert_eq!(unit_name_mangle("x.timer"), "x.timer");
        assert_eq!(unit_name_mangle("foo.conf"), "foo.conf.service");
    }

    #[test]
    fn wait_modes() {
        assert_eq!(Wait::from_attempts(0), Wait::Forever);
        assert_eq!(Wait::from_attempts(3), Wait::Attempts(3));
    }
}
