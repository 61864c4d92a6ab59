//! coreos.units: unit files, drop-ins, masking and enabling, done on the tree as
//! coreos-cloudinit does them through systemd, and the `command`s handed to the network stage.
//! Enabling reads the unit's [Install] section and makes the links `systemctl enable` makes.

use std::collections::BTreeSet;

use super::fsutil::{Attrs, FsError};
use super::Applier;
use crate::cloudconfig::model::Unit;

/// Where `systemctl enable` looks for unit files, in its order of precedence.
const UNIT_SEARCH_PATH: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("unit {unit}: {source}")]
    Fs {
        unit: String,
        #[source]
        source: FsError,
    },
    #[error("unit {unit}: not a valid unit name")]
    BadName { unit: String },
    #[error("unit {unit}: drop-in {drop_in:?} is not a valid file name")]
    BadDropInName { unit: String, drop_in: String },
    #[error("unit {unit}: cannot enable it: no unit file in {}", UNIT_SEARCH_PATH.join(", "))]
    NotFound { unit: String },
    #[error("unit {unit}: cannot enable it: {path} is masked")]
    Masked { unit: String, path: String },
}

/// coreos-cloudinit's unit groups: network units belong to systemd-networkd.
fn is_network_unit(name: &str) -> bool {
    [".network", ".netdev", ".link"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

fn unit_dir(unit: &Unit) -> &'static str {
    match (is_network_unit(&unit.name), unit.runtime) {
        (true, false) => "/etc/systemd/network",
        (true, true) => "/run/systemd/network",
        (false, false) => "/etc/systemd/system",
        (false, true) => "/run/systemd/system",
    }
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

pub fn apply(applier: &mut Applier, units: &[Unit]) {
    let mut restart_networkd = false;
    for unit in units {
        if let Err(err) = apply_unit(applier, unit) {
            applier.issue(unit.line, err);
        }
        if is_network_unit(&unit.name) {
            restart_networkd = true;
        } else if let Some(command) = unit.command {
            applier
                .report
                .units_to_run
                .push((unit.name.clone(), command.word().to_string()));
        }
    }
    // coreos-cloudinit restarts networkd instead of running commands on network units.
    if restart_networkd {
        applier
            .report
            .units_to_run
            .push(("systemd-networkd.service".into(), "restart".into()));
    }
}

fn apply_unit(applier: &mut Applier, unit: &Unit) -> Result<(), UnitError> {
    let name = &unit.name;
    if !valid_file_name(name) || !name.contains('.') {
        return Err(UnitError::BadName { unit: name.clone() });
    }
    let fs_error = |source| UnitError::Fs {
        unit: name.clone(),
        source,
    };
    let dir = unit_dir(unit);
    let path = format!("{dir}/{name}");
    // Masking replaces the unit file with a link to /dev/null, so content written first
    // would only be replaced again on every run.
    if let (Some(content), false) = (&unit.content, unit.mask) {
        let content = applier.substitute(content);
        let changed = applier
            .fs
            .write(&path, content.as_bytes(), Attrs::root(0o644))
            .map_err(fs_error)?;
        applier.outcome(changed, || format!("wrote {path}"));
    }
    for drop_in in &unit.drop_ins {
        if !valid_file_name(&drop_in.name) {
            applier.issue(
                drop_in.line,
                UnitError::BadDropInName {
                    unit: name.clone(),
                    drop_in: drop_in.name.clone(),
                },
            );
            continue;
        }
        let drop_in_path = format!("{dir}/{name}.d/{}", drop_in.name);
        let content = applier.substitute(&drop_in.content);
        match applier
            .fs
            .write(&drop_in_path, content.as_bytes(), Attrs::root(0o644))
        {
            Ok(changed) => applier.outcome(changed, || format!("wrote {drop_in_path}")),
            Err(source) => applier.issue(
                drop_in.line,
                UnitError::Fs {
                    unit: name.clone(),
                    source,
                },
            ),
        }
    }
    if unit.mask {
        let changed = applier
            .fs
            .ensure_symlink(&path, "/dev/null")
            .map_err(fs_error)?;
        applier.outcome(changed, || format!("masked {name} ({path} -> /dev/null)"));
    } else if unit.runtime {
        // As coreos-cloudinit: a runtime unit that is not to be masked is unmasked.
        let changed = applier
            .fs
            .remove_symlink_to(&path, "/dev/null")
            .map_err(fs_error)?;
        if changed {
            applier.changed(format!("unmasked {name} (removed {path})"));
        }
    }
    if unit.enable && !is_network_unit(name) {
        let links_dir = if unit.runtime {
            "/run/systemd/system"
        } else {
            "/etc/systemd/system"
        };
        let mut visited = BTreeSet::new();
        enable(applier, name, links_dir, &mut visited)?;
    }
    Ok(())
}

/// What enabling a unit needs from its file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstallSection {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

/// Reads [Install] the way systemd does: space-separated lists that accumulate over repeated
/// keys, an empty assignment clearing the list, comments and line continuations honoured.
pub fn parse_install(text: &str) -> InstallSection {
    let mut install = InstallSection::default();
    let mut in_install = false;
    let mut logical = String::new();
    let mut lines = Vec::new();
    for raw in text.lines() {
        if let Some(start) = raw.strip_suffix('\\') {
            logical.push_str(start);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        lines.push(std::mem::take(&mut logical));
    }
    if !logical.is_empty() {
        lines.push(logical);
    }
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let list = match key.trim() {
            "WantedBy" => &mut install.wanted_by,
            "RequiredBy" => &mut install.required_by,
            "Alias" => &mut install.alias,
            "Also" => &mut install.also,
            "DefaultInstance" => {
                install.default_instance = Some(value.to_string()).filter(|v| !v.is_empty());
                continue;
            }
            _ => continue,
        };
        if value.is_empty() {
            list.clear();
        } else {
            list.extend(value.split_whitespace().map(str::to_string));
        }
    }
    install
}

/// "foo@bar.service" → Some(("foo", "bar", ".service")); "foo@.service" → instance "".
fn split_template(name: &str) -> Option<(&str, &str, &str)> {
    let (prefix, rest) = name.split_once('@')?;
    let dot = rest.rfind('.')?;
    Some((prefix, &rest[..dot], &rest[dot..]))
}

/// The in-root path of the unit file `systemctl enable` would use for `name`: the first in
/// the search path, then, for an instance, its template's.
fn find_unit_file(applier: &Applier, name: &str) -> Result<Option<String>, FsError> {
    let mut candidates = vec![name.to_string()];
    if let Some((prefix, instance, suffix)) = split_template(name) {
        if !instance.is_empty() {
            candidates.push(format!("{prefix}@{suffix}"));
        }
    }
    for candidate in candidates {
        for dir in UNIT_SEARCH_PATH {
            let path = format!("{dir}/{candidate}");
            if let Some(host) = applier.fs.locate(&path)? {
                if std::fs::symlink_metadata(host).is_ok() {
                    return Ok(Some(path));
                }
            }
        }
    }
    Ok(None)
}

fn enable(
    applier: &mut Applier,
    name: &str,
    links_dir: &str,
    visited: &mut BTreeSet<String>,
) -> Result<(), UnitError> {
    if !visited.insert(name.to_string()) {
        return Ok(());
    }
    let fs_error = |source| UnitError::Fs {
        unit: name.to_string(),
        source,
    };
    let Some(unit_path) = find_unit_file(applier, name).map_err(fs_error)? else {
        return Err(UnitError::NotFound {
            unit: name.to_string(),
        });
    };
    if let Some(host) = applier.fs.locate(&unit_path).map_err(fs_error)? {
        if std::fs::read_link(host).is_ok_and(|target| target == std::path::Path::new("/dev/null"))
        {
            return Err(UnitError::Masked {
                unit: name.to_string(),
                path: unit_path,
            });
        }
    }
    let text = applier
        .fs
        .read_string(&unit_path)
        .map_err(fs_error)?
        .unwrap_or_default();
    let install = parse_install(&text);
    // The name the links carry: an instance as asked, a template's default instance, or, for
    // a template without one, none (systemctl enables nothing for it either).
    let link_name = match split_template(name) {
        Some((prefix, "", suffix)) => install
            .default_instance
            .as_ref()
            .map(|instance| format!("{prefix}@{instance}{suffix}")),
        _ => Some(name.to_string()),
    };
    if let Some(link_name) = link_name {
        let targets = install
            .wanted_by
            .iter()
            .map(|target| (target, "wants"))
            .chain(
                install
                    .required_by
                    .iter()
                    .map(|target| (target, "requires")),
            );
        for (target, kind) in targets {
            let link = format!("{links_dir}/{target}.{kind}/{link_name}");
            link_unit(applier, &link, &unit_path).map_err(fs_error)?;
        }
    }
    for alias in &install.alias {
        let link = format!("{links_dir}/{alias}");
        link_unit(applier, &link, &unit_path).map_err(fs_error)?;
    }
    for also in &install.also {
        if let Err(err) = enable(applier, also, links_dir, visited) {
            applier.issue(0, err);
        }
    }
    Ok(())
}

fn link_unit(applier: &mut Applier, link: &str, unit_path: &str) -> Result<(), FsError> {
    let changed = applier.fs.ensure_symlink(link, unit_path)?;
    applier.outcome(changed, || format!("linked {link} -> {unit_path}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_section_lists() {
        let install = parse_install(
            "[Unit]\nWantedBy=nope.target\n[Install]\nWantedBy=a.target \\\n b.target\n\
             # WantedBy=c.target\nRequiredBy=x.target\nRequiredBy=\nRequiredBy=y.target\n\
             Alias=z.service\nAlso=w.service\nDefaultInstance=tty1\n",
        );
        assert_eq!(install.wanted_by, vec!["a.target", "b.target"]);
        assert_eq!(install.required_by, vec!["y.target"]);
        assert_eq!(install.alias, vec!["z.service"]);
        assert_eq!(install.also, vec!["w.service"]);
        assert_eq!(install.default_instance.as_deref(), Some("tty1"));
    }

    #[test]
    fn templates_split() {
        assert_eq!(
            split_template("getty@tty1.service"),
            Some(("getty", "tty1", ".service"))
        );
        assert_eq!(
            split_template("getty@.service"),
            Some(("getty", "", ".service"))
        );
        assert_eq!(split_template("x.service"), None);
    }
}
