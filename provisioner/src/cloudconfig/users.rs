//! `users:` — accounts to create or update.

use super::model::User;
use super::walk::{child_path, index_path, truncate, Walker};
use super::yaml::Node;

const USER_KEYS: &[&str] = &[
    "name",
    "passwd",
    "groups",
    "primary_group",
    "gecos",
    "homedir",
    "no_create_home",
    "no_user_group",
    "system",
    "no_log_init",
    "shell",
    "ssh_authorized_keys",
];

/// Keys coreos-cloudinit once had and dropped: they fetched keys over the network at boot.
const DEPRECATED_USER_KEYS: &[&str] = &[
    "coreos_ssh_import_github",
    "coreos_ssh_import_github_users",
    "coreos_ssh_import_url",
];

/// cloud-init user keys that coreos-cloudinit documents as "not yet implemented".
const UNSUPPORTED_USER_KEYS: &[&str] = &[
    "inactive",
    "lock_passwd",
    "sudo",
    "selinux_user",
    "ssh_import_id",
];

pub fn parse_users(walker: &mut Walker, node: &Node, path: &str) -> Vec<User> {
    let items = walker.sequence(node, path, "a list of users");
    let mut users = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        if let Some(user) = parse_user(walker, item, &index_path(path, index)) {
            users.push(user);
        }
    }
    users
}

fn parse_user(walker: &mut Walker, node: &Node, path: &str) -> Option<User> {
    let entries = walker.mapping(node, path)?;
    let mut user = User {
        line: node.line,
        ..User::default()
    };
    let mut name = None;
    for entry in &entries {
        let key_path = child_path(path, &entry.key);
        let value = entry.value;
        match entry.key.as_str() {
            "name" => name = walker.string(value, &key_path),
            "passwd" => user.passwd = walker.string(value, &key_path),
            "groups" => user.groups = walker.string_list(value, &key_path).unwrap_or_default(),
            "primary_group" => user.primary_group = walker.string(value, &key_path),
            "gecos" => user.gecos = walker.string(value, &key_path),
            "homedir" => user.homedir = walker.string(value, &key_path),
            "no_create_home" => {
                user.no_create_home = walker.boolean(value, &key_path).unwrap_or(false)
            }
            "no_user_group" => user.no_user_group = walker.boolean(value, &key_path).unwrap_or(false),
            "system" => user.system = walker.boolean(value, &key_path).unwrap_or(false),
            "no_log_init" => user.no_log_init = walker.boolean(value, &key_path).unwrap_or(false),
            "shell" => user.shell = walker.string(value, &key_path),
            "ssh_authorized_keys" => {
                user.ssh_authorized_keys = walker.string_list(value, &key_path).unwrap_or_default()
            }
            key if DEPRECATED_USER_KEYS.contains(&key) => walker.warning(
                entry.key_line,
                format!(
                    "\"{key_path}\" is deprecated and not supported (it fetched keys over the \
                     network); list the keys in ssh_authorized_keys instead; ignored"
                ),
            ),
            key if UNSUPPORTED_USER_KEYS.contains(&key) => walker.warning(
                entry.key_line,
                format!("\"{key_path}\" is a cloud-init key that cloud-config on Keel does not support; ignored"),
            ),
            _ => walker.unknown_key(entry, path, USER_KEYS),
        }
    }
    match name {
        Some(name) if !name.trim().is_empty() => {
            if !valid_user_name(&name) {
                walker.error(
                    node.line,
                    format!(
                        "\"{path}.name\" \"{}\" is not a valid user name",
                        truncate(&name)
                    ),
                );
                return None;
            }
            user.name = name;
            Some(user)
        }
        _ => {
            walker.error(node.line, format!("\"{path}\" has no name"));
            None
        }
    }
}

/// What useradd accepts, loosely: no separators of passwd/group lines, no path characters,
/// nothing that reads as an option.
fn valid_user_name(name: &str) -> bool {
    name.len() <= 256
        && !name.starts_with('-')
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == ':' || c == '/' || c == ',' || c.is_whitespace() || c.is_control())
}
