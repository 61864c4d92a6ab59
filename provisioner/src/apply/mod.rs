//! Applying user-data to a root directory tree, as coreos-cloudinit applies it to a Container
//! Linux machine. The local boot stage calls this on /sysroot, the network stage on "/", and
//! `keel-provision apply --root DIR` on any tree (which is how the tests use it).
//!
//! Each section lives in its own module. A failing item becomes an [`ApplyIssue`] carrying its
//! user-data line and the rest still applies: a broken file must not cost the machine its users
//! and SSH keys. Nothing is rewritten when it already holds what the config asks for, so a
//! second run of the same config changes nothing and leaves every mtime alone.

mod env_dropins;
mod etc_hosts;
mod files;
mod flannel;
mod fsutil;
mod hostname;
mod network;
mod scripts;
mod ssh_keys;
mod substitute;
mod units;
mod update;
mod users;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cloudconfig::model::{CloudConfig, Metadata, UserData};

pub use fsutil::{write_host, Attrs, FsError};

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// One human line per change: "wrote /etc/hostname", "created user core".
    pub changed: Vec<String>,
    /// How many items were already as the config asks.
    pub unchanged: usize,
    /// (unit, command) pairs, in config order, for the network stage to run over D-Bus after a
    /// daemon-reload; "command" is the cloud-config word ("start", "try-restart", ...).
    pub units_to_run: Vec<(String, String)>,
    /// In-root paths of the scripts written from `#!` user-data and runcmd, to run once.
    pub scripts: Vec<String>,
    /// In-root paths of the scripts written from bootcmd, to run on every boot.
    pub boot_scripts: Vec<String>,
    pub errors: Vec<ApplyIssue>,
}

/// One item that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyIssue {
    /// 1-based user-data line of the item; 0 when the item has no line (metadata).
    pub line: usize,
    pub message: String,
}

/// A failure of the whole run; everything item-specific is an [`ApplyIssue`] instead.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("root {}: {source}", root.display())]
    Root {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Applies `user_data` to the tree at `root`, using `metadata` for the hostname, the SSH keys,
/// static network configuration and `$private_ipv4` and friends.
pub fn apply_to_root(
    root: &Path,
    user_data: &UserData,
    metadata: &Metadata,
) -> Result<ApplyReport, ApplyError> {
    let rootfs = fsutil::RootFs::new(root).map_err(|source| ApplyError::Root {
        root: root.to_path_buf(),
        source,
    })?;
    let mut applier = Applier {
        fs: rootfs,
        metadata,
        report: ApplyReport::default(),
        keys: ssh_keys::PendingKeys::default(),
    };
    // Metadata fills in what the user-data left out, as coreos-cloudinit merges it; first,
    // so that manage_etc_hosts sees the name.
    if !names_hostname(user_data) {
        if let Some(name) = &metadata.hostname {
            hostname::apply(&mut applier, name, 0);
        }
    }
    network::apply(&mut applier, &metadata.interfaces);
    applier.apply_user_data(user_data);
    if !metadata.ssh_public_keys.is_empty() {
        applier.keys.add(
            ssh_keys::DEFAULT_USER,
            ssh_keys::METADATA_SOURCE,
            0,
            &metadata.ssh_public_keys,
        );
    }
    // Keys go last: every part has had its chance to create the users they belong to, and
    // keys for one user from several parts land in one file instead of overwriting each other.
    ssh_keys::apply(&mut applier);
    Ok(applier.report)
}

/// State shared by the section modules during one run.
pub(crate) struct Applier<'a> {
    pub fs: fsutil::RootFs,
    pub metadata: &'a Metadata,
    pub report: ApplyReport,
    pub keys: ssh_keys::PendingKeys,
}

/// Whether any cloud-config in `user_data` sets a hostname (metadata's is then ignored).
fn names_hostname(user_data: &UserData) -> bool {
    match user_data {
        UserData::CloudConfig(config) => config.hostname.is_some(),
        UserData::Multipart(parts) => parts.iter().any(names_hostname),
        UserData::Script(_) | UserData::Empty => false,
    }
}

impl Applier<'_> {
    fn apply_user_data(&mut self, user_data: &UserData) {
        match user_data {
            UserData::CloudConfig(config) => self.apply_cloud_config(config),
            UserData::Script(body) => scripts::apply_script(self, body),
            UserData::Multipart(parts) => {
                for part in parts {
                    self.apply_user_data(part);
                }
            }
            UserData::Empty => {}
        }
    }

    /// coreos-cloudinit's order: hostname, users, keys, files, then the coreos sections and
    /// units (so units can use files written just before).
    fn apply_cloud_config(&mut self, config: &CloudConfig) {
        if let Some(name) = &config.hostname {
            let value = self.substitute(&name.value);
            hostname::apply(self, &value, name.line);
        }
        users::apply(self, config);
        if !config.ssh_authorized_keys.is_empty() {
            self.keys.add(
                ssh_keys::DEFAULT_USER,
                ssh_keys::CLOUDINIT_SOURCE,
                0,
                &config.ssh_authorized_keys,
            );
        }
        for file in &config.write_files {
            files::apply(self, file);
        }
        if let Some(option) = &config.manage_etc_hosts {
            etc_hosts::apply(self, option);
        }
        env_dropins::apply(self, &config.coreos);
        flannel::apply(self, &config.coreos.flannel);
        if let Some(update) = &config.coreos.update {
            update::apply(self, update);
        }
        if let Some(oem) = &config.coreos.oem {
            update::apply_oem(self, oem);
        }
        units::apply(self, &config.coreos.units);
        scripts::apply_commands(self, config);
    }

    pub fn substitute(&self, text: &str) -> String {
        substitute::substitute(text, self.metadata)
    }

    pub fn changed(&mut self, line: String) {
        self.report.changed.push(line);
    }

    pub fn unchanged(&mut self) {
        self.report.unchanged += 1;
    }

    /// Records the outcome of one write: a change line or one more unchanged item.
    pub fn outcome(&mut self, changed: bool, what: impl FnOnce() -> String) {
        if changed {
            let line = what();
            self.changed(line);
        } else {
            self.unchanged();
        }
    }

    pub fn issue(&mut self, line: usize, message: impl std::fmt::Display) {
        self.report.errors.push(ApplyIssue {
            line,
            message: message.to_string(),
        });
    }
}
