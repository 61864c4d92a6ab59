//! coreos.etcd, etcd2, fleet and locksmith: each becomes a drop-in of `Environment=` lines for
//! its service, /run/systemd/system/<service>.d/20-cloudinit.conf, exactly where
//! coreos-cloudinit puts it (a runtime drop-in: it is regenerated from the config each boot).

use super::fsutil::Attrs;
use super::Applier;
use crate::cloudconfig::model::{Coreos, EnvOption};

pub const DROP_IN_NAME: &str = "20-cloudinit.conf";

/// A section of `coreos:` that configures a service through its environment.
pub struct EnvSection {
    pub key: &'static str,
    pub service: &'static str,
    pub prefix: &'static str,
    /// coreos-cloudinit's variable names that do not follow PREFIX + KEY.
    pub exceptions: &'static [(&'static str, &'static str)],
}

pub const ETCD: EnvSection = EnvSection {
    key: "etcd",
    service: "etcd.service",
    prefix: "ETCD_",
    exceptions: &[("snapshot_count", "ETCD_SNAPSHOTCOUNT")],
};
pub const ETCD2: EnvSection = EnvSection {
    key: "etcd2",
    service: "etcd2.service",
    prefix: "ETCD_",
    exceptions: &[],
};
pub const FLEET: EnvSection = EnvSection {
    key: "fleet",
    service: "fleet.service",
    prefix: "FLEET_",
    exceptions: &[],
};
pub const LOCKSMITH: EnvSection = EnvSection {
    key: "locksmith",
    service: "locksmithd.service",
    prefix: "LOCKSMITHD_",
    exceptions: &[
        ("window_start", "REBOOT_WINDOW_START"),
        ("window_length", "REBOOT_WINDOW_LENGTH"),
    ],
};

impl EnvSection {
    /// The environment variable for an option key: PREFIX + KEY in upper case, '-' as '_'.
    pub fn variable(&self, key: &str) -> String {
        let key = key.replace('-', "_");
        if let Some((_, name)) = self.exceptions.iter().find(|(k, _)| *k == key) {
            return name.to_string();
        }
        format!("{}{}", self.prefix, key.to_ascii_uppercase())
    }
}

/// `Environment="NAME=value"`, with the quoting systemd undoes: inside double quotes a
/// backslash escapes the next character.
fn environment_line(name: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("Environment=\"{name}={escaped}\"\n")
}

pub fn apply(applier: &mut Applier, coreos: &Coreos) {
    for (section, options) in [
        (ETCD, &coreos.etcd),
        (ETCD2, &coreos.etcd2),
        (FLEET, &coreos.fleet),
        (LOCKSMITH, &coreos.locksmith),
    ] {
        apply_section(applier, &section, options);
    }
}

fn apply_section(applier: &mut Applier, section: &EnvSection, options: &[EnvOption]) {
    if options.is_empty() {
        return;
    }
    let mut content = String::from("[Service]\n");
    for option in options {
        let value = applier.substitute(&option.value);
        content.push_str(&environment_line(&section.variable(&option.key), &value));
    }
    let path = format!("/run/systemd/system/{}.d/{DROP_IN_NAME}", section.service);
    match applier
        .fs
        .write(&path, content.as_bytes(), Attrs::root(0o644))
    {
        Ok(changed) => applier.outcome(changed, || format!("wrote {path}")),
        Err(err) => applier.issue(options[0].line, format!("coreos.{}: {err}", section.key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_follow_coreos_cloudinit() {
        assert_eq!(
            ETCD2.variable("advertise_client_urls"),
            "ETCD_ADVERTISE_CLIENT_URLS"
        );
        assert_eq!(ETCD2.variable("initial-cluster"), "ETCD_INITIAL_CLUSTER");
        assert_eq!(ETCD.variable("snapshot_count"), "ETCD_SNAPSHOTCOUNT");
        assert_eq!(FLEET.variable("public_ip"), "FLEET_PUBLIC_IP");
        assert_eq!(LOCKSMITH.variable("window_start"), "REBOOT_WINDOW_START");
        assert_eq!(LOCKSMITH.variable("group"), "LOCKSMITHD_GROUP");
    }

    #[test]
    fn values_are_quoted_for_systemd() {
        assert_eq!(
            environment_line("A", r#"x "y" \z"#),
            "Environment=\"A=x \\\"y\\\" \\\\z\"\n"
        );
    }
}
