//! The whole cloud-config document: top-level keys and the `coreos:` map.

use super::diagnostics::Diagnostic;
use super::env_sections::{parse_env_section, Section};
use super::model::{CloudConfig, Command, Coreos, Located};
use super::units::parse_units;
use super::update::{parse_oem, parse_update};
use super::users::parse_users;
use super::walk::{child_path, index_path, truncate, Walker};
use super::write_files::parse_write_files;
use super::yaml::{self, Node, Value};

const TOP_LEVEL_KEYS: &[&str] = &[
    "ssh_authorized_keys",
    "hostname",
    "users",
    "write_files",
    "manage_etc_hosts",
    "coreos",
    "runcmd",
    "bootcmd",
];

const COREOS_KEYS: &[&str] = &[
    "etcd",
    "etcd2",
    "fleet",
    "flannel",
    "locksmith",
    "update",
    "oem",
    "units",
];

/// Parses cloud-config text (the `#cloud-config` line included, so lines match the file).
/// Never fails: problems are diagnostics, and whatever could be read is in the model.
pub fn parse_cloud_config(text: &str) -> (CloudConfig, Vec<Diagnostic>) {
    parse_cloud_config_at(text, 0)
}

/// [`parse_cloud_config`] for text that starts after `line_offset` lines of a larger document
/// (a MIME part): every line, in the model and in the diagnostics, is a line of that document.
pub(crate) fn parse_cloud_config_at(
    text: &str,
    line_offset: usize,
) -> (CloudConfig, Vec<Diagnostic>) {
    let (root, mut diagnostics) = yaml::parse(text, line_offset);
    let mut walker = Walker::default();
    let config = match root {
        Some(root) => read_document(&mut walker, &root),
        None => CloudConfig::default(),
    };
    diagnostics.append(&mut walker.diagnostics);
    (config, diagnostics)
}

fn read_document(walker: &mut Walker, root: &Node) -> CloudConfig {
    let mut config = CloudConfig::default();
    let entries = match &root.value {
        Value::Mapping(_) => walker.mapping(root, "").unwrap_or_default(),
        _ if root.is_null() => return config,
        _ => {
            walker.error(
                root.line,
                format!(
                    "a cloud-config must be a map of keys, not {}",
                    root.describe()
                ),
            );
            return config;
        }
    };
    for entry in &entries {
        let key = entry.key.as_str();
        let value = entry.value;
        match key {
            "ssh_authorized_keys" => {
                config.ssh_authorized_keys = walker.string_list(value, key).unwrap_or_default()
            }
            "hostname" => config.hostname = read_hostname(walker, value),
            "users" => config.users = parse_users(walker, value, key),
            "write_files" => config.write_files = parse_write_files(walker, value, key),
            "manage_etc_hosts" => config.manage_etc_hosts = read_manage_etc_hosts(walker, value),
            "coreos" => config.coreos = read_coreos(walker, value, key),
            "runcmd" => config.runcmd = read_commands(walker, value, key),
            "bootcmd" => config.bootcmd = read_commands(walker, value, key),
            _ => walker.unknown_key(entry, "", TOP_LEVEL_KEYS),
        }
    }
    config
}

/// A hostname goes into /etc/hostname as one line: a control character inside it (a line
/// break, or a NUL from a `"\0"` escape) would corrupt it. White space around it is trimmed
/// when it is applied, so a block scalar's final line break is fine.
fn read_hostname(walker: &mut Walker, node: &Node) -> Option<Located<String>> {
    let hostname = walker.string(node, "hostname")?;
    if hostname.trim().chars().any(char::is_control) {
        walker.error(
            node.line,
            format!(
                "\"hostname\" \"{}\" contains a control character; ignored",
                truncate(&hostname).escape_debug()
            ),
        );
        return None;
    }
    Some(Located {
        value: hostname,
        line: node.line,
    })
}

/// coreos-cloudinit knows one value, "localhost"; `false` means "leave /etc/hosts alone".
fn read_manage_etc_hosts(walker: &mut Walker, node: &Node) -> Option<Located<String>> {
    if node.as_scalar().and_then(|s| s.as_bool()) == Some(false) {
        return None;
    }
    let value = walker.string(node, "manage_etc_hosts")?;
    if value != "localhost" {
        walker.error(
            node.line,
            format!(
                "\"manage_etc_hosts\" \"{}\" is not supported; the only value is \"localhost\"",
                truncate(&value)
            ),
        );
        return None;
    }
    Some(Located {
        value,
        line: node.line,
    })
}

/// runcmd/bootcmd: each item a shell string or an argv list.
fn read_commands(walker: &mut Walker, node: &Node, path: &str) -> Vec<Located<Command>> {
    let items = walker.sequence(node, path, "a list of commands");
    let mut commands = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = index_path(path, index);
        let command = match &item.value {
            Value::Scalar(scalar) if scalar.is_null() => continue,
            Value::Scalar(scalar) => Command::Shell(scalar.text.clone()),
            Value::Sequence(_) => match walker.string_list(item, &item_path) {
                Some(argv) if !argv.is_empty() => Command::Argv(argv),
                _ => continue,
            },
            Value::Mapping(_) => {
                walker.wrong_type(item, &item_path, "a command string or an argument list");
                continue;
            }
        };
        commands.push(Located {
            value: command,
            line: item.line,
        });
    }
    commands
}

fn read_coreos(walker: &mut Walker, node: &Node, path: &str) -> Coreos {
    let mut coreos = Coreos::default();
    let Some(entries) = walker.mapping(node, path) else {
        return coreos;
    };
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        let value = entry.value;
        match entry.key.as_str() {
            "etcd" => {
                walker.warning(
                    entry.key_line,
                    "coreos.etcd is deprecated; use coreos.etcd2",
                );
                coreos.etcd = parse_env_section(walker, value, &key_path, Section::Etcd);
            }
            "etcd2" => coreos.etcd2 = parse_env_section(walker, value, &key_path, Section::Etcd2),
            "fleet" => coreos.fleet = parse_env_section(walker, value, &key_path, Section::Fleet),
            "flannel" => {
                coreos.flannel = parse_env_section(walker, value, &key_path, Section::Flannel)
            }
            "locksmith" => {
                coreos.locksmith = parse_env_section(walker, value, &key_path, Section::Locksmith)
            }
            "update" => coreos.update = parse_update(walker, value, &key_path),
            "oem" => coreos.oem = parse_oem(walker, value, &key_path),
            "units" => coreos.units = parse_units(walker, value, &key_path),
            "write_files" => walker.warning(
                entry.key_line,
                "\"coreos.write_files\" is ignored: write_files belongs at the top level",
            ),
            _ => walker.unknown_key(entry, path, COREOS_KEYS),
        }
    }
    coreos
}
