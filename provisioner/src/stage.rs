//! A provisioning stage from end to end: find the datasource, parse its user-data, apply it to
//! the root, and record what happened in `/run/keel/provision.json` and one console line.
//!
//! The local stage runs in the initramfs on first boot (config drive, NoCloud, fw_cfg, the
//! kernel command line); the network stage runs as a systemd service once the network is up
//! (metadata services, URLs). Each stage remembers a digest of what it applied, so a later boot
//! with the same config changes nothing — users are not re-created, edited files are not
//! overwritten — while a changed config is applied again.

use crate::apply::{self, ApplyReport};
use crate::cloudconfig::{has_errors, CloudConfig, Coreos, Diagnostic, Metadata, UserData};
use crate::datasource::{self, Context, Fetched};
use crate::userdata::parse_user_data;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Local,
    Network,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Local => "local",
            Stage::Network => "network",
        }
    }
}

/// Where, under the root, the record of the last applied config per stage lives (on STATE).
pub const APPLIED_DIR: &str = "var/lib/keel/provision";
/// The machine-readable report of this boot's stages (on the /run tmpfs).
pub const REPORT_FILE: &str = "run/keel/provision.json";

/// What one stage did; one entry of provision.json.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: Stage,
    /// The datasource the user-data came from, e.g. "nocloud:/dev/vdb"; None when no source
    /// was present.
    pub source: Option<String>,
    /// The config was the same as the one this stage applied on an earlier boot.
    pub unchanged_since_last_boot: bool,
    /// Parser findings (errors keep their user-data line).
    pub diagnostics: Vec<Diagnostic>,
    pub applied: Option<ApplyReport>,
    /// Failures that are not about one user-data line: the datasource, the root, the record.
    pub errors: Vec<String>,
}

impl StageReport {
    fn new(stage: Stage) -> StageReport {
        StageReport {
            stage,
            source: None,
            unchanged_since_last_boot: false,
            diagnostics: Vec::new(),
            applied: None,
            errors: Vec::new(),
        }
    }

    /// The one line a stage prints on the console.
    pub fn summary(&self) -> String {
        let stage = self.stage.name();
        let Some(source) = &self.source else {
            return match self.errors.first() {
                Some(e) => format!("keel-provision: {stage} stage: datasource failed: {e}"),
                None => format!("keel-provision: {stage} stage: no datasource found"),
            };
        };
        if self.unchanged_since_last_boot {
            return format!("keel-provision: {stage} stage: config from {source} unchanged since it was applied; nothing to do");
        }
        let parse_errors = self
            .diagnostics
            .iter()
            .filter(|d| d.kind == crate::cloudconfig::Kind::Error)
            .count();
        let (changes, apply_errors) = self
            .applied
            .as_ref()
            .map_or((0, 0), |r| (r.changed.len(), r.errors.len()));
        format!(
            "keel-provision: {stage} stage: applied config from {source}: {changes} changes, {} errors (details in /{REPORT_FILE})",
            parse_errors + apply_errors + self.errors.len()
        )
    }
}

fn digest(fetched: &Fetched) -> String {
    let mut h = Sha256::new();
    h.update(fetched.source.as_bytes());
    h.update(b"\0");
    h.update(fetched.user_data.as_deref().unwrap_or_default());
    h.update(b"\0");
    // Metadata feeds $private_ipv4, keys, the hostname and the static network files: a change
    // there is a config change. Debug prints every field, so no field can be left out.
    h.update(format!("{:?}", fetched.metadata).as_bytes());
    hex::encode(h.finalize())
}

/// Writes a record of the stage atomically (apply's writer: temp file, sync, rename), making
/// its folder first.
fn write_record(path: &Path, data: &[u8]) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("writing {}: {e}", path.display());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| fail(&e))?;
    }
    apply::write_host(
        path,
        &path.display().to_string(),
        data,
        apply::Attrs::root(0o644),
    )
    .map(|_| ())
    .map_err(|e| fail(&e))
}

/// Runs `stage` with `sources` against `root`: the pieces the boot and the tests share.
pub fn run_with_sources(
    stage: Stage,
    root: &Path,
    sources: &[Box<dyn datasource::Datasource>],
) -> StageReport {
    let mut report = StageReport::new(stage);
    let fetched = match datasource::first_available(sources) {
        None => return record(root, report),
        Some(Err(e)) => {
            report.errors.push(e.to_string());
            return record(root, report);
        }
        Some(Ok(f)) => f,
    };
    report.source = Some(fetched.source.clone());

    let applied_record = root
        .join(APPLIED_DIR)
        .join(format!("{}.sha256", stage.name()));
    let digest = digest(&fetched);
    let (user_data, diagnostics) =
        parse_user_data(fetched.user_data.as_deref().unwrap_or_default());
    if fs::read_to_string(&applied_record).is_ok_and(|d| d.trim() == digest) {
        // Same config as last time: what lives on STATE stays as the operator left it, but
        // /run is new every boot, so its part of the config is written again.
        report.unchanged_since_last_boot = true;
        let metadata = Metadata {
            hostname: None,
            ssh_public_keys: Vec::new(),
            // /etc/systemd/network is on STATE too.
            interfaces: Vec::new(),
            ..fetched.metadata.clone()
        };
        match apply::apply_to_root(root, &runtime_part(&user_data), &metadata) {
            Ok(mut applied) => {
                // Unit commands run every boot, as on Container Linux ("command: start" is
                // how etcd2 comes up); the runtime units' ones are already in the report.
                applied
                    .units_to_run
                    .extend(persistent_unit_commands(&user_data));
                report.applied = Some(applied);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
        return record(root, report);
    }
    let parse_failed = has_errors(&diagnostics);
    report.diagnostics = diagnostics;
    // Errors in one item (a bad encoding, a wrong unit command) are reported by line and the
    // rest is still applied; only a document that did not parse at all applies nothing beyond
    // what the metadata gives (hostname, keys).
    match apply::apply_to_root(root, &user_data, &fetched.metadata) {
        Ok(applied) => report.applied = Some(applied),
        Err(e) => report.errors.push(e.to_string()),
    }
    if !parse_failed && report.errors.is_empty() {
        if let Err(e) = write_record(&applied_record, format!("{digest}\n").as_bytes()) {
            report.errors.push(e);
        }
    }
    record(root, report)
}

/// The part of a config whose output lives under /run: the etcd, etcd2, fleet, locksmith
/// drop-ins, flannel's options, runtime units and bootcmd.
fn runtime_part(user_data: &UserData) -> UserData {
    match user_data {
        UserData::CloudConfig(c) => UserData::CloudConfig(CloudConfig {
            coreos: Coreos {
                etcd: c.coreos.etcd.clone(),
                etcd2: c.coreos.etcd2.clone(),
                fleet: c.coreos.fleet.clone(),
                flannel: c.coreos.flannel.clone(),
                locksmith: c.coreos.locksmith.clone(),
                units: c
                    .coreos
                    .units
                    .iter()
                    .filter(|u| u.runtime)
                    .cloned()
                    .collect(),
                ..Coreos::default()
            },
            // bootcmd's script lives in /run and runs every boot.
            bootcmd: c.bootcmd.clone(),
            ..CloudConfig::default()
        }),
        UserData::Multipart(parts) => UserData::Multipart(parts.iter().map(runtime_part).collect()),
        UserData::Script(_) | UserData::Empty => UserData::Empty,
    }
}

/// (unit, command word) of the units that are not runtime units, in config order.
fn persistent_unit_commands(user_data: &UserData) -> Vec<(String, String)> {
    match user_data {
        UserData::CloudConfig(c) => c
            .coreos
            .units
            .iter()
            .filter(|u| !u.runtime)
            .filter_map(|u| Some((u.name.clone(), u.command?.word().to_string())))
            .collect(),
        UserData::Multipart(parts) => parts.iter().flat_map(persistent_unit_commands).collect(),
        UserData::Script(_) | UserData::Empty => Vec::new(),
    }
}

/// This boot's provision.json: both stages' reports (the local stage ran before systemd did).
fn boot_report(root: &Path) -> serde_json::Value {
    fs::read(root.join(REPORT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One list of both stages' apply reports, in stage order.
fn applied_items(report: &serde_json::Value, field: &str) -> Vec<serde_json::Value> {
    [Stage::Local, Stage::Network]
        .iter()
        .flat_map(|stage| {
            report[stage.name()]["applied"][field]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

/// The unit commands this boot's stages collected, from provision.json, in stage order.
pub fn pending_unit_commands(root: &Path) -> Vec<(String, String)> {
    applied_items(&boot_report(root), "units_to_run")
        .iter()
        .filter_map(|pair| Some((pair[0].as_str()?.to_string(), pair[1].as_str()?.to_string())))
        .collect()
}

/// A script the network stage starts as a transient unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingScript {
    /// Path on the running system, e.g. /var/lib/keel/scripts/0123abcd.sh.
    pub path: String,
    /// `keel-script-<hash>.service`.
    pub unit: String,
    /// Where to record that a run-once script ran; None for bootcmd, which runs every boot.
    pub ran_marker: Option<String>,
}

/// Scripts to start this boot, in order: bootcmd first (cloud-init runs it early), then runcmd
/// and `#!` scripts that have not run on this machine yet.
pub fn pending_scripts(root: &Path) -> Vec<PendingScript> {
    let report = boot_report(root);
    let paths = |field| {
        applied_items(&report, field)
            .into_iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect::<Vec<_>>()
    };
    let mut pending: Vec<PendingScript> = Vec::new();
    let boot = paths("boot_scripts").into_iter().map(|p| (p, false));
    let once = paths("scripts").into_iter().map(|p| (p, true));
    for (path, run_once) in boot.chain(once) {
        if pending.iter().any(|s| s.path == path) {
            continue;
        }
        let stem = Path::new(&path)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ran_marker = run_once.then(|| format!("{}.ran", path.trim_end_matches(".sh")));
        if let Some(marker) = &ran_marker {
            if root.join(marker.trim_start_matches('/')).exists() {
                continue;
            }
        }
        pending.push(PendingScript {
            unit: format!("keel-script-{stem}.service"),
            path,
            ran_marker,
        });
    }
    pending
}

/// The network stage as the boot runs it: fetch and apply, then have systemd reload and
/// carry out both stages' unit commands. Returns the console lines to print.
pub fn run_network_boot(ctx: &Context) -> Vec<String> {
    let root = Path::new("/");
    let report = run(Stage::Network, root, ctx);
    let mut lines = vec![report.summary()];
    // systemd read /etc/hostname long before this stage could write it.
    if let Err(e) = adopt_static_hostname(root) {
        lines.push(format!("keel-provision: setting the hostname: {e}"));
    }
    let commands = pending_unit_commands(root);
    let systemd = match crate::systemd::Systemd::connect() {
        Ok(s) => s,
        Err(e) => {
            lines.push(format!("keel-provision: cannot reach systemd: {e}"));
            return lines;
        }
    };
    if let Err(e) = systemd.reload() {
        lines.push(format!("keel-provision: {e}"));
    }
    for (unit, word) in commands {
        match systemd.run_command(&unit, &word) {
            Ok(()) => lines.push(format!("keel-provision: {word} {unit}")),
            Err(e) => lines.push(format!("keel-provision: {e}")),
        }
    }
    let mut previous: Option<String> = None;
    for script in pending_scripts(root) {
        match systemd.start_script(&script.unit, &script.path, previous.as_deref()) {
            Ok(()) => {
                lines.push(format!(
                    "keel-provision: started {} as {}",
                    script.path, script.unit
                ));
                // Recorded once the job is queued: a script runs at most once, even if the
                // machine goes down while it runs.
                if let Some(marker) = &script.ran_marker {
                    if let Err(e) = write_record(&root.join(&marker[1..]), b"") {
                        lines.push(format!("keel-provision: {e}"));
                    }
                }
                previous = Some(script.unit);
            }
            Err(e) => lines.push(format!("keel-provision: {e}")),
        }
    }
    lines
}

/// Makes the running system's hostname the one in `root`'s /etc/hostname, if that differs.
fn adopt_static_hostname(root: &Path) -> std::io::Result<()> {
    let Ok(text) = fs::read_to_string(root.join("etc/hostname")) else {
        return Ok(());
    };
    let name = text.trim();
    let current = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if name.is_empty() || name == current.trim() {
        return Ok(());
    }
    // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call.
    let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Runs `stage` with the sources the context names.
pub fn run(stage: Stage, root: &Path, ctx: &Context) -> StageReport {
    let sources = match stage {
        Stage::Local => datasource::local_sources(ctx),
        Stage::Network => datasource::network_sources(ctx),
    };
    run_with_sources(stage, root, &sources)
}

/// Adds `report` to provision.json (keeping the other stage's entry) and returns it.
fn record(root: &Path, mut report: StageReport) -> StageReport {
    let path: PathBuf = root.join(REPORT_FILE);
    let mut all: serde_json::Map<String, serde_json::Value> = fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    all.insert(
        report.stage.name().to_string(),
        serde_json::to_value(&report).expect("report serialises"),
    );
    let json = serde_json::to_vec_pretty(&all).expect("map serialises");
    if let Err(e) = write_record(&path, &json) {
        report.errors.push(e);
    }
    report
}
