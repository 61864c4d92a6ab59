//! `coreos.update` (→ /etc/coreos/update.conf) and `coreos.oem` (→ /etc/oem-release).

use std::collections::BTreeMap;

use super::model::{Oem, Update};
use super::walk::{child_path, truncate, Walker};
use super::yaml::Node;

const UPDATE_KEYS: &[&str] = &["reboot_strategy", "group", "server"];
const REBOOT_STRATEGIES: &[&str] = &["etcd-lock", "reboot", "off"];
const OEM_KEYS: &[&str] = &["id", "name", "version_id", "home_url", "bug_report_url"];

pub fn parse_update(walker: &mut Walker, node: &Node, path: &str) -> Option<Update> {
    let entries = walker.mapping(node, path)?;
    let mut update = Update {
        line: node.line,
        ..Update::default()
    };
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        match entry.key.as_str() {
            "reboot_strategy" => {
                let Some(strategy) = walker.string(entry.value, &key_path) else {
                    continue;
                };
                if strategy == "best-effort" {
                    walker.warning(
                        entry.value.line,
                        format!(
                            "\"{key_path}\" \"best-effort\" is deprecated; use \"etcd-lock\", \
                             \"reboot\" or \"off\""
                        ),
                    );
                } else if !REBOOT_STRATEGIES.contains(&strategy.as_str()) {
                    walker.error(
                        entry.value.line,
                        format!(
                            "\"{key_path}\" \"{}\" is not one of etcd-lock, reboot, off",
                            truncate(&strategy)
                        ),
                    );
                    continue;
                }
                update.reboot_strategy = Some(strategy);
            }
            "group" => update.group = walker.string(entry.value, &key_path),
            "server" => update.server = walker.string(entry.value, &key_path),
            _ => walker.unknown_key(entry, path, UPDATE_KEYS),
        }
    }
    Some(update)
}

pub fn parse_oem(walker: &mut Walker, node: &Node, path: &str) -> Option<Oem> {
    let entries = walker.mapping(node, path)?;
    let mut fields = BTreeMap::new();
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        if OEM_KEYS.contains(&entry.key.as_str()) {
            if let Some(value) = walker.string(entry.value, &key_path) {
                fields.insert(entry.key.clone(), value);
            }
        } else {
            walker.unknown_key(entry, path, OEM_KEYS);
        }
    }
    Some(Oem {
        line: node.line,
        fields,
    })
}
