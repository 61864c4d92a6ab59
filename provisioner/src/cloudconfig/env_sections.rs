//! `coreos.etcd`, `etcd2`, `fleet`, `flannel`, `locksmith`: flat option maps that become
//! environment variables of their services. Option names are coreos-cloudinit's.

use super::model::EnvOption;
use super::walk::{child_path, truncate, Walker};
use super::yaml::{Node, Value};

/// etcd 0.4 (`coreos.etcd`, deprecated).
const ETCD_OPTIONS: &[&str] = &[
    "addr",
    "bind_addr",
    "ca_file",
    "cert_file",
    "cluster_active_size",
    "cluster_remove_delay",
    "cluster_sync_interval",
    "cors",
    "data_dir",
    "discovery",
    "graphite_host",
    "http_read_timeout",
    "http_write_timeout",
    "key_file",
    "max_result_buffer",
    "max_retry_attempts",
    "name",
    "peer_addr",
    "peer_bind_addr",
    "peer_ca_file",
    "peer_cert_file",
    "peer_election_timeout",
    "peer_heartbeat_interval",
    "peer_key_file",
    "peers",
    "peers_file",
    "retry_interval",
    "snapshot",
    "snapshot_count",
    "trace",
    "verbose",
    "very_verbose",
    "very_very_verbose",
];

const ETCD2_OPTIONS: &[&str] = &[
    "advertise_client_urls",
    "auto_tls",
    "ca_file",
    "cert_file",
    "client_cert_auth",
    "cors",
    "data_dir",
    "debug",
    "discovery",
    "discovery_fallback",
    "discovery_proxy",
    "discovery_srv",
    "election_timeout",
    "enable_pprof",
    "force_new_cluster",
    "heartbeat_interval",
    "initial_advertise_peer_urls",
    "initial_cluster",
    "initial_cluster_state",
    "initial_cluster_token",
    "key_file",
    "listen_client_urls",
    "listen_peer_urls",
    "log_package_levels",
    "max_snapshots",
    "max_wals",
    "name",
    "peer_auto_tls",
    "peer_ca_file",
    "peer_cert_file",
    "peer_client_cert_auth",
    "peer_key_file",
    "peer_trusted_ca_file",
    "proxy",
    "proxy_dial_timeout",
    "proxy_failure_wait",
    "proxy_read_timeout",
    "proxy_refresh_interval",
    "proxy_write_timeout",
    "snapshot_count",
    "strict_reconfig_check",
    "trusted_ca_file",
    "wal_dir",
];

/// etcd2 options coreos-cloudinit marks deprecated, with what replaced them.
const ETCD2_DEPRECATED: &[(&str, &str)] = &[
    ("ca_file", "use trusted_ca_file and client_cert_auth"),
    (
        "peer_ca_file",
        "use peer_trusted_ca_file and peer_client_cert_auth",
    ),
];

const FLEET_OPTIONS: &[&str] = &[
    "agent_ttl",
    "disable_engine",
    "disable_watches",
    "engine_reconcile_interval",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_key_prefix",
    "etcd_keyfile",
    "etcd_password",
    "etcd_request_timeout",
    "etcd_servers",
    "etcd_username",
    "metadata",
    "public_ip",
    "token_limit",
    "verbosity",
];

const FLANNEL_OPTIONS: &[&str] = &[
    "etcd_cafile",
    "etcd_certfile",
    "etcd_endpoints",
    "etcd_keyfile",
    "etcd_password",
    "etcd_prefix",
    "etcd_username",
    "interface",
    "ip_masq",
    "public_ip",
    "subnet_file",
];

/// Spellings from early coreos-cloudinit releases, still found in old configs.
const FLANNEL_RENAMED: &[(&str, &str)] =
    &[("etcd_endpoint", "etcd_endpoints"), ("iface", "interface")];

const LOCKSMITH_OPTIONS: &[&str] = &[
    "endpoint",
    "etcd_cafile",
    "etcd_certfile",
    "etcd_keyfile",
    "etcd_password",
    "etcd_username",
    "group",
    "window_length",
    "window_start",
];

/// Which option map is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Etcd,
    Etcd2,
    Fleet,
    Flannel,
    Locksmith,
}

impl Section {
    fn options(self) -> &'static [&'static str] {
        match self {
            Section::Etcd => ETCD_OPTIONS,
            Section::Etcd2 => ETCD2_OPTIONS,
            Section::Fleet => FLEET_OPTIONS,
            Section::Flannel => FLANNEL_OPTIONS,
            Section::Locksmith => LOCKSMITH_OPTIONS,
        }
    }
}

pub fn parse_env_section(
    walker: &mut Walker,
    node: &Node,
    path: &str,
    section: Section,
) -> Vec<EnvOption> {
    let Some(entries) = walker.mapping(node, path) else {
        return Vec::new();
    };
    let known = section.options();
    let mut options = Vec::with_capacity(entries.len());
    for entry in &entries {
        let mut key = entry.key.clone();
        let key_path = child_path(path, &key);
        if section == Section::Flannel {
            if let Some((_, new)) = FLANNEL_RENAMED.iter().find(|(old, _)| *old == key) {
                walker.warning(
                    entry.key_line,
                    format!("\"{key_path}\" is an old spelling; use \"{new}\""),
                );
                key = (*new).to_string();
            }
        }
        if !known.contains(&key.as_str()) {
            walker.unknown_key(entry, path, known);
            continue;
        }
        if section == Section::Etcd2 {
            if let Some((_, instead)) = ETCD2_DEPRECATED.iter().find(|(old, _)| *old == key) {
                walker.warning(
                    entry.key_line,
                    format!("\"{key_path}\" is deprecated; {instead}"),
                );
            }
        }
        let value = match &entry.value.value {
            Value::Scalar(scalar) if scalar.is_null() => continue,
            Value::Scalar(scalar) => scalar.text.clone(),
            _ => {
                walker.wrong_type(entry.value, &key_path, "a string, number or boolean");
                continue;
            }
        };
        check_value(walker, section, &key, &key_path, &value, entry.value.line);
        options.push(EnvOption {
            line: entry.key_line,
            key,
            value,
        });
    }
    options
}

/// The value rules coreos-cloudinit's validator enforces, plus a URL sanity check.
fn check_value(
    walker: &mut Walker,
    section: Section,
    key: &str,
    key_path: &str,
    value: &str,
    line: usize,
) {
    match (section, key) {
        (Section::Etcd2, "proxy") if !matches!(value, "on" | "off" | "readonly") => walker.error(
            line,
            format!("\"{key_path}\" \"{}\" is not one of on, off, readonly", truncate(value)),
        ),
        (Section::Etcd | Section::Etcd2, "discovery") if !looks_like_url(value) => walker.warning(
            line,
            format!("\"{key_path}\" \"{}\" is not a valid URL", truncate(value)),
        ),
        (Section::Locksmith, "window_start") if !valid_window_start(value) => walker.error(
            line,
            format!(
                "\"{key_path}\" \"{}\" is not a reboot window start like \"Thu 04:00\" or \"04:00\"",
                truncate(value)
            ),
        ),
        (Section::Locksmith, "window_length") if !valid_duration(value) => walker.error(
            line,
            format!(
                "\"{key_path}\" \"{}\" is not a duration like \"1h30m\"",
                truncate(value)
            ),
        ),
        _ => {}
    }
}

fn looks_like_url(value: &str) -> bool {
    // Substitution variables are filled in later, so they count as host text here.
    match value.split_once("://") {
        Some((scheme, rest)) => {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !rest.is_empty()
                && !rest.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// `[weekday ]HH:MM`, as locksmith reads it.
fn valid_window_start(value: &str) -> bool {
    let time = match value.split_once(' ') {
        Some((day, time)) => {
            let day = day.to_ascii_lowercase();
            if !["sun", "mon", "tue", "wed", "thu", "fri", "sat"].contains(&day.as_str()) {
                return false;
            }
            time
        }
        None => value,
    };
    let Some((hours, minutes)) = time.split_once(':') else {
        return false;
    };
    let number = |text: &str, max: u32| {
        !text.is_empty()
            && text.len() <= 8
            && text.bytes().all(|b| b.is_ascii_digit())
            && text.parse::<u32>().is_ok_and(|n| n <= max)
    };
    number(hours, 23) && number(minutes, 59)
}

/// A Go duration: an optional sign, then one or more number+unit pairs ("1h30m", "90s").
fn valid_duration(value: &str) -> bool {
    let body = value.strip_prefix(['-', '+']).unwrap_or(value);
    if body.is_empty() {
        return false;
    }
    let bytes = body.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let start = index;
        while index < bytes.len() && (bytes[index].is_ascii_digit() || bytes[index] == b'.') {
            index += 1;
        }
        let number = &body[start..index];
        if number.is_empty() || number.matches('.').count() > 1 {
            return false;
        }
        let unit_start = index;
        while index < bytes.len() && bytes[index].is_ascii_lowercase() {
            index += 1;
        }
        if !matches!(
            &body[unit_start..index],
            "ns" | "us" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reboot_windows() {
        assert!(valid_window_start("Thu 04:00"));
        assert!(valid_window_start("04:00"));
        assert!(valid_window_start("sun 23:59"));
        assert!(!valid_window_start("Someday 04:00"));
        assert!(!valid_window_start("24:00"));
        assert!(valid_duration("1h30m"));
        assert!(valid_duration("90s"));
        assert!(!valid_duration("1 hour"));
        assert!(!valid_duration(""));
    }
}
