//! OpenStack config drive: a vfat or iso9660 filesystem labelled `config-2` holding
//! `openstack/latest/user_data` and `openstack/latest/meta_data.json`. The drive's EC2-style
//! `ec2/latest/meta-data.json`, when present, supplies the IPv4 addresses, and
//! `openstack/latest/network_data.json` the static addresses of networks without DHCP.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::labels::{read_optional, DriveLocation};
use super::network_data;
use super::{Context, Datasource, DatasourceError, Fetched, Metadata};

pub const LABELS: &[&str] = &["config-2"];
const NAME: &str = "config-drive";

pub struct ConfigDrive {
    location: DriveLocation,
}

impl ConfigDrive {
    /// The drive found by label on the context's system.
    pub fn new(ctx: &Context) -> ConfigDrive {
        ConfigDrive {
            location: DriveLocation::Label {
                root: ctx.root.clone(),
                mount_dir: ctx.mount_dir.clone(),
            },
        }
    }

    /// A directory holding the drive's contents (`openstack/latest/...`).
    pub fn from_dir(dir: impl Into<PathBuf>) -> ConfigDrive {
        ConfigDrive {
            location: DriveLocation::Directory(dir.into()),
        }
    }
}

impl Datasource for ConfigDrive {
    fn name(&self) -> &str {
        NAME
    }

    fn available(&self) -> bool {
        self.location.available(LABELS)
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        let (from, (user_data, metadata)) = self.location.read(NAME, LABELS, read_drive)?;
        Ok(Fetched {
            source: format!("{NAME}:{}", from.display()),
            user_data,
            metadata,
        })
    }
}

fn read_json(dir: &Path, name: &str) -> Result<Option<Value>, DatasourceError> {
    let Some(bytes) = read_optional(NAME, dir, name)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| DatasourceError::Json {
            datasource: NAME.to_string(),
            path: dir.join(name),
            error,
        })
}

fn string_field(object: &Value, key: &str) -> Option<String> {
    object
        .get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_string)
}

/// Reads a mounted (or unpacked) config drive.
pub fn read_drive(dir: &Path) -> Result<(Option<Vec<u8>>, Metadata), DatasourceError> {
    let user_data = read_optional(NAME, dir, "openstack/latest/user_data")?;
    let mut metadata = Metadata::default();
    if let Some(meta) = read_json(dir, "openstack/latest/meta_data.json")? {
        metadata.hostname = string_field(&meta, "hostname");
        metadata.instance_id = string_field(&meta, "uuid");
        // A map of key name → key; sorted by name (serde_json's map) so the order is stable.
        if let Some(keys) = meta.get("public_keys").and_then(Value::as_object) {
            metadata.ssh_public_keys = keys
                .values()
                .filter_map(Value::as_str)
                .map(|key| key.trim().to_string())
                .filter(|key| !key.is_empty())
                .collect();
        }
    }
    if let Some(ec2) = read_json(dir, "ec2/latest/meta-data.json")? {
        metadata.private_ipv4 = string_field(&ec2, "local-ipv4").and_then(|ip| ip.parse().ok());
        metadata.public_ipv4 = string_field(&ec2, "public-ipv4").and_then(|ip| ip.parse().ok());
    }
    if let Some(network) = read_json(dir, "openstack/latest/network_data.json")? {
        metadata.interfaces = network_data::parse(&network);
    }
    Ok((user_data, metadata))
}
