//! NoCloud: a vfat or iso9660 filesystem labelled `cidata` (or `CIDATA`) holding `user-data` and
//! `meta-data` (`network-config` is not read), or the same files under a seed given on the
//! kernel command line: `ds=nocloud;s=/path/` (local) or `ds=nocloud-net;s=http://host/path/`
//! (network). `h=` and `i=` in the `ds=` argument set the hostname and instance id.

use std::path::{Path, PathBuf};

use super::cmdline::{Location, NocloudSeed};
use super::http::{join_url, HttpClient};
use super::labels::{read_optional, DriveLocation};
use super::{Context, Datasource, DatasourceError, Fetched, Metadata, RetryPolicy};

pub const LABELS: &[&str] = &["cidata", "CIDATA"];
const NAME: &str = "nocloud";
const NET_NAME: &str = "nocloud-net";

pub struct NoCloud {
    location: DriveLocation,
    seed: Option<NocloudSeed>,
}

impl NoCloud {
    /// A local seed directory from `ds=nocloud;s=<path>`, else the drive found by label.
    pub fn new(ctx: &Context) -> NoCloud {
        let seed = ctx.kernel_args().nocloud;
        let seed_dir = seed
            .as_ref()
            .and_then(|seed| seed.seed.as_deref())
            .and_then(|seed| match Location::parse(seed) {
                Location::Path(path) => Some(path),
                Location::Url(_) => None,
            });
        let location = match seed_dir {
            Some(dir) => DriveLocation::Directory(dir),
            None => DriveLocation::Label {
                root: ctx.root.clone(),
                mount_dir: ctx.mount_dir.clone(),
            },
        };
        NoCloud { location, seed }
    }

    /// A directory holding `user-data` and `meta-data`.
    pub fn from_dir(dir: impl Into<PathBuf>) -> NoCloud {
        NoCloud {
            location: DriveLocation::Directory(dir.into()),
            seed: None,
        }
    }
}

impl Datasource for NoCloud {
    fn name(&self) -> &str {
        NAME
    }

    fn available(&self) -> bool {
        self.location.available(LABELS)
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        let (from, (user_data, mut metadata)) = self.location.read(NAME, LABELS, read_seed_dir)?;
        if let Some(seed) = &self.seed {
            apply_seed_overrides(&mut metadata, seed);
        }
        Ok(Fetched {
            source: format!("{NAME}:{}", from.display()),
            user_data,
            metadata,
        })
    }
}

/// Reads `user-data` and `meta-data` from a mounted drive or seed directory.
pub fn read_seed_dir(dir: &Path) -> Result<(Option<Vec<u8>>, Metadata), DatasourceError> {
    let user_data = read_optional(NAME, dir, "user-data")?;
    let metadata = match read_optional(NAME, dir, "meta-data")? {
        Some(bytes) => parse_meta_data(&String::from_utf8_lossy(&bytes)),
        None => Metadata::default(),
    };
    Ok((user_data, metadata))
}

/// `ds=nocloud-net;s=http://host/path/`: `<seed>user-data` and `<seed>meta-data` over HTTP.
pub struct NoCloudNet {
    seed: Option<NocloudSeed>,
    base_url: Option<String>,
    retry: RetryPolicy,
}

impl NoCloudNet {
    pub fn new(ctx: &Context) -> NoCloudNet {
        let seed = ctx.kernel_args().nocloud;
        let base_url = seed
            .as_ref()
            .and_then(|seed| seed.seed.as_deref())
            .and_then(|seed| match Location::parse(seed) {
                Location::Url(url) => Some(url),
                Location::Path(_) => None,
            });
        NoCloudNet {
            seed,
            base_url,
            retry: ctx.retry,
        }
    }
}

impl Datasource for NoCloudNet {
    fn name(&self) -> &str {
        NET_NAME
    }

    fn available(&self) -> bool {
        self.base_url.is_some()
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        let base = self
            .base_url
            .as_deref()
            .ok_or_else(|| DatasourceError::Invalid {
                datasource: NET_NAME.to_string(),
                what: "no ds=nocloud-net;s=<url> on the kernel command line".to_string(),
            })?;
        let client = HttpClient::new(NET_NAME, self.retry);
        // cloud-init appends the file names to the seed as written; a seed without its trailing
        // '/' is a common mistake that would otherwise ask for ".../seeduser-data".
        let user_data = client.get_optional(&join_url(base, "user-data"), &[])?;
        let mut metadata = match client.get_optional(&join_url(base, "meta-data"), &[])? {
            Some(bytes) => parse_meta_data(&String::from_utf8_lossy(&bytes)),
            None => Metadata::default(),
        };
        if let Some(seed) = &self.seed {
            apply_seed_overrides(&mut metadata, seed);
        }
        Ok(Fetched {
            source: format!("{NET_NAME}:{base}"),
            user_data,
            metadata,
        })
    }
}

/// Values given on the command line win over the seed's meta-data, as in cloud-init.
fn apply_seed_overrides(metadata: &mut Metadata, seed: &NocloudSeed) {
    if let Some(hostname) = &seed.hostname {
        metadata.hostname = Some(hostname.clone());
    }
    if let Some(instance_id) = &seed.instance_id {
        metadata.instance_id = Some(instance_id.clone());
    }
}

fn unquote(text: &str) -> &str {
    let text = text.trim();
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            return &text[1..text.len() - 1];
        }
    }
    text
}

fn set_key(metadata: &mut Metadata, key: &str, value: &str) {
    let value = unquote(value);
    if value.is_empty() {
        return;
    }
    match key {
        "instance-id" | "instance_id" => metadata.instance_id = Some(value.to_string()),
        "local-hostname" | "local_hostname" => metadata.hostname = Some(value.to_string()),
        // local-hostname is the one NoCloud documents; `hostname` only fills in for it.
        "hostname" if metadata.hostname.is_none() => metadata.hostname = Some(value.to_string()),
        "public-keys" | "public_keys" => metadata.ssh_public_keys.push(value.to_string()),
        _ => {}
    }
}

/// Parses NoCloud meta-data: the flat `key: value` lines it uses in practice (`instance-id`,
/// `local-hostname`, `hostname`) and `public-keys` as a single value, a `- key` list or a
/// `name: key` map. Other nested blocks (network-interfaces) are skipped. A document that
/// starts with '{' is JSON, which is also valid meta-data.
pub fn parse_meta_data(text: &str) -> Metadata {
    let mut metadata = Metadata::default();
    if text.trim_start().starts_with('{') {
        if let Ok(serde_json::Value::Object(object)) = serde_json::from_str(text) {
            for (key, value) in &object {
                match value {
                    serde_json::Value::String(text) => set_key(&mut metadata, key, text),
                    serde_json::Value::Array(items) => {
                        for text in items.iter().filter_map(|item| item.as_str()) {
                            set_key(&mut metadata, key, text);
                        }
                    }
                    serde_json::Value::Object(map) => {
                        for text in map.values().filter_map(|item| item.as_str()) {
                            set_key(&mut metadata, key, text);
                        }
                    }
                    _ => {}
                }
            }
        }
        return metadata;
    }
    // The top-level key whose indented block is being read.
    let mut block: Option<&str> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if indented || trimmed.starts_with("- ") {
            let Some(key) = block else { continue };
            if let Some(item) = trimmed.strip_prefix("- ").or(trimmed.strip_prefix('-')) {
                set_key(&mut metadata, key, item);
            } else if let Some((_name, value)) = trimmed.split_once(": ") {
                set_key(&mut metadata, key, value);
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            block = None;
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        if value.is_empty() || value == "|" || value == ">" {
            block = Some(key);
        } else {
            block = None;
            set_key(&mut metadata, key, value);
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keys_and_key_list() {
        let meta = parse_meta_data(
            "instance-id: iid-local01\nlocal-hostname: 'node1'\npublic-keys:\n  - ssh-ed25519 AAAA a@b\n  - \"ssh-rsa BBBB c@d\"\n",
        );
        assert_eq!(meta.instance_id.as_deref(), Some("iid-local01"));
        assert_eq!(meta.hostname.as_deref(), Some("node1"));
        assert_eq!(
            meta.ssh_public_keys,
            vec!["ssh-ed25519 AAAA a@b", "ssh-rsa BBBB c@d"]
        );
    }

    #[test]
    fn key_map_and_skipped_blocks() {
        let meta = parse_meta_data(
            "network-interfaces: |\n  iface eth0 inet static\n  address: 10.0.0.2\npublic-keys:\n  mine: ssh-ed25519 AAAA\nhostname: other\nlocal-hostname: wins\n",
        );
        assert_eq!(meta.ssh_public_keys, vec!["ssh-ed25519 AAAA"]);
        assert_eq!(meta.hostname.as_deref(), Some("wins"));
        assert_eq!(meta.instance_id, None);
    }

    #[test]
    fn json_meta_data() {
        let meta = parse_meta_data(r#"{"instance-id": "i-1", "public-keys": ["k1"]}"#);
        assert_eq!(meta.instance_id.as_deref(), Some("i-1"));
        assert_eq!(meta.ssh_public_keys, vec!["k1"]);
    }
}
