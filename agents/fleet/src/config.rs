//! fleetd's configuration as fleet had it: `/etc/fleet/fleet.conf` (`key=value` lines), then
//! `FLEET_*` environment variables (the drop-in the provisioner writes from `coreos.fleet`),
//! then command-line flags, each overriding the one before.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_common::EtcdConfig;

/// Where fleetd looks for its config file when none is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleet/fleet.conf";

/// The prefix of the environment variables that set options: `FLEET_` + the option's name in
/// upper case (`FLEET_ETCD_SERVERS`), as fleet and coreos-cloudinit spell them.
pub const ENV_PREFIX: &str = "FLEET_";

/// fleet's default key space in etcd.
pub const DEFAULT_KEY_PREFIX: &str = "/_coreos.com/fleet/";

/// etcd v3's client port. fleet's own default also listed 4001, etcd v2's legacy port, which
/// a v3 server does not open.
pub const DEFAULT_ETCD_SERVER: &str = "http://127.0.0.1:2379";

/// Options fleet still accepted but ignored; setting them earns a warning, not an error.
const IGNORED_OPTIONS: &[&str] = &["verify_units", "authorized_keys_file", "enable_grpc"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Log verbosity: 0 (default), 1 or 2; more is more verbose.
    pub verbosity: u32,
    /// etcd endpoints (`etcd_servers`, a comma-separated list).
    pub etcd_servers: Vec<String>,
    /// The key space fleet uses in etcd; always ends in '/'.
    pub etcd_key_prefix: String,
    pub etcd_cafile: Option<PathBuf>,
    pub etcd_certfile: Option<PathBuf>,
    pub etcd_keyfile: Option<PathBuf>,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    /// How long connecting to etcd, or its answer to a keep-alive ping, may take
    /// (`etcd_request_timeout`, seconds).
    pub etcd_request_timeout: Duration,
    /// The address published for this machine; None lets fleetd pick one.
    pub public_ip: Option<IpAddr>,
    /// This machine's metadata (`metadata`, "k=v,k2=v2").
    pub metadata: BTreeMap<String, String>,
    /// How long a machine stays registered without a heartbeat (`agent_ttl`, a duration such
    /// as "30s").
    pub agent_ttl: Duration,
    /// How often the engine reconciles (`engine_reconcile_interval`, seconds).
    pub engine_reconcile_interval: Duration,
    /// Never take part in the engine election.
    pub disable_engine: bool,
    /// Poll instead of watching etcd.
    pub disable_watches: bool,
    /// Page size of the HTTP API's lists.
    pub token_limit: u32,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            verbosity: 0,
            etcd_servers: vec![DEFAULT_ETCD_SERVER.to_string()],
            etcd_key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            etcd_username: None,
            etcd_password: None,
            etcd_request_timeout: Duration::from_secs(1),
            public_ip: None,
            metadata: BTreeMap::new(),
            agent_ttl: Duration::from_secs(30),
            engine_reconcile_interval: Duration::from_secs(2),
            disable_engine: false,
            disable_watches: false,
            token_limit: 100,
        }
    }
}

/// Where a setting came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingOrigin {
    File { path: PathBuf, line: usize },
    Environment { variable: String },
    Flag { name: String },
}

impl fmt::Display for SettingOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingOrigin::File { path, line } => write!(f, "{}:{line}", path.display()),
            SettingOrigin::Environment { variable } => write!(f, "environment {variable}"),
            SettingOrigin::Flag { name } => write!(f, "flag --{name}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is a directory")]
    IsDirectory { path: PathBuf },
    #[error("{path}:{line}: expected key=value, found {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{origin}: {key}: {message}")]
    InvalidValue {
        origin: SettingOrigin,
        key: String,
        message: String,
    },
    #[error("unknown option --{0}")]
    UnknownFlag(String),
}

/// What setting one option did.
enum Outcome {
    Set,
    /// A retired fleet option: accepted and ignored.
    Ignored,
    Unknown,
}

impl FleetConfig {
    /// The configuration fleetd runs with: defaults, overridden by the config file, overridden
    /// by `FLEET_*` variables in `env`. With `path` None the file is `/etc/fleet/fleet.conf`
    /// and may be missing; a `path` given explicitly must exist. Returns warnings for unknown
    /// and retired options (and sections, which fleet never read).
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(FleetConfig, Vec<String>), ConfigError> {
        let mut config = FleetConfig::default();
        let mut warnings = Vec::new();
        let (path, required) = match path {
            Some(path) => (path, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => warnings.extend(config.apply_file_text(path, &text)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
            Err(_) if path.is_dir() => {
                return Err(ConfigError::IsDirectory {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
        warnings.extend(config.apply_environment(env)?);
        Ok((config, warnings))
    }

    /// Applies a config file's text (`path` only names it in messages): `key=value` lines,
    /// the value optionally in double quotes, `#` and `;` comment lines. Options belong at
    /// the top level, as in fleet: a `[section]` and what follows it are ignored with a
    /// warning.
    pub fn apply_file_text(&mut self, path: &Path, text: &str) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();
        let mut in_section = false;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if trimmed.starts_with('[') && trimmed.ends_with(']') {
                in_section = true;
                warnings.push(format!(
                    "{}:{line}: section {trimmed} ignored: fleet reads options only at the top level",
                    path.display()
                ));
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(ConfigError::Syntax {
                    path: path.to_path_buf(),
                    line,
                    text: trimmed.to_string(),
                });
            };
            if in_section {
                continue;
            }
            let key = normalize_key(key);
            let value = unquote(value.trim());
            let origin = SettingOrigin::File {
                path: path.to_path_buf(),
                line,
            };
            if let Some(warning) = self.apply_setting(&key, value, origin)? {
                warnings.push(warning);
            }
        }
        Ok(warnings)
    }

    /// Applies every `FLEET_*` variable of `env` (others are skipped), in name order so that
    /// warnings come out the same every time.
    pub fn apply_environment(
        &mut self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<String>, ConfigError> {
        let mut ours: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        ours.sort();
        let mut warnings = Vec::new();
        for (variable, value) in ours {
            let key = normalize_key(&variable[ENV_PREFIX.len()..]);
            let origin = SettingOrigin::Environment {
                variable: variable.clone(),
            };
            if let Some(warning) = self.apply_setting(&key, &value, origin)? {
                warnings.push(warning);
            }
        }
        Ok(warnings)
    }

    /// Applies one command-line flag (`key` without its dashes, `etcd_servers` or
    /// `etcd-servers`). An unknown flag is an error, unlike an unknown file key.
    pub fn apply_override(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let key = normalize_key(key.trim_start_matches('-'));
        let origin = SettingOrigin::Flag { name: key.clone() };
        match self.set(&key, value) {
            Ok(Outcome::Set | Outcome::Ignored) => Ok(()),
            Ok(Outcome::Unknown) => Err(ConfigError::UnknownFlag(key)),
            Err(message) => Err(ConfigError::InvalidValue {
                origin,
                key,
                message,
            }),
        }
    }

    /// The etcd connection these settings describe. etcd_username and etcd_password are not
    /// part of it: the shared connection has no authentication yet.
    pub fn etcd(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.etcd_servers.clone(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            request_timeout: self.etcd_request_timeout,
        }
    }

    /// Sets one option from a file or the environment; returns a warning for unknown and
    /// retired options.
    fn apply_setting(
        &mut self,
        key: &str,
        value: &str,
        origin: SettingOrigin,
    ) -> Result<Option<String>, ConfigError> {
        match self.set(key, value) {
            Ok(Outcome::Set) => Ok(None),
            Ok(Outcome::Ignored) => Ok(Some(format!(
                "{origin}: {key} is no longer supported by fleet; ignored"
            ))),
            Ok(Outcome::Unknown) => Ok(Some(format!("{origin}: unknown option {key:?} ignored"))),
            Err(message) => Err(ConfigError::InvalidValue {
                origin,
                key: key.to_string(),
                message,
            }),
        }
    }

    /// Sets option `key` from its text; the error is the message that follows the key.
    fn set(&mut self, key: &str, value: &str) -> Result<Outcome, String> {
        match key {
            "verbosity" => self.verbosity = parse_number(value, "a verbosity level")?,
            "etcd_servers" => self.etcd_servers = parse_servers(value)?,
            "etcd_key_prefix" => self.etcd_key_prefix = parse_key_prefix(value)?,
            "etcd_cafile" => self.etcd_cafile = optional_path(value),
            "etcd_certfile" => self.etcd_certfile = optional_path(value),
            "etcd_keyfile" => self.etcd_keyfile = optional_path(value),
            "etcd_username" => self.etcd_username = optional_text(value),
            "etcd_password" => self.etcd_password = optional_text(value),
            "etcd_request_timeout" => self.etcd_request_timeout = parse_seconds(value)?,
            "engine_reconcile_interval" => self.engine_reconcile_interval = parse_seconds(value)?,
            "public_ip" => self.public_ip = parse_public_ip(value)?,
            "metadata" => self.metadata = parse_metadata(value)?,
            "agent_ttl" => self.agent_ttl = parse_positive_duration(value)?,
            "disable_engine" => self.disable_engine = parse_bool(value)?,
            "disable_watches" => self.disable_watches = parse_bool(value)?,
            "token_limit" => {
                self.token_limit = parse_number(value, "a page size")?;
                if self.token_limit == 0 {
                    return Err("must be at least 1".to_string());
                }
            }
            key if IGNORED_OPTIONS.contains(&key) => return Ok(Outcome::Ignored),
            _ => return Ok(Outcome::Unknown),
        }
        Ok(Outcome::Set)
    }
}

/// Option names are fleet's snake_case; '-' is taken for '_' (as coreos-cloudinit does) and
/// upper case (environment variables) for lower case.
fn normalize_key(key: &str) -> String {
    key.trim().replace('-', "_").to_ascii_lowercase()
}

/// Strips one pair of surrounding double quotes.
fn unquote(value: &str) -> &str {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner,
        None => value,
    }
}

fn optional_text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_string())
}

fn optional_path(value: &str) -> Option<PathBuf> {
    optional_text(value).map(PathBuf::from)
}

fn parse_number(value: &str, what: &str) -> Result<u32, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not {what} (a whole number)"))
}

/// fleet's booleans (Go's `strconv.ParseBool`), plus yes/no/on/off.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (true or false)")),
    }
}

/// A positive number of seconds, fractions allowed ("1.5").
fn parse_seconds(value: &str) -> Result<Duration, String> {
    let seconds: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 1e9 {
        return Err(format!("{value:?} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A comma-separated endpoint list; the bracketed, quoted form of fleet's old sample config
/// (`["http://a:2379", "http://b:2379"]`) is read too.
fn parse_servers(value: &str) -> Result<Vec<String>, String> {
    let inner = value.trim();
    let inner = inner
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(inner);
    let servers: Vec<String> = inner
        .split(',')
        .map(|s| s.trim().trim_matches('"').trim())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if servers.is_empty() {
        return Err("no etcd endpoints given".to_string());
    }
    if let Some(bad) = servers.iter().find(|s| !s.contains("://")) {
        return Err(format!(
            "{bad:?} is not an endpoint URL (such as http://127.0.0.1:2379)"
        ));
    }
    Ok(servers)
}

/// The key space; a missing trailing '/' is added so that fleet's keys never run into a
/// neighbouring prefix in etcd v3's flat key space.
fn parse_key_prefix(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the key prefix cannot be empty".to_string());
    }
    let mut prefix = value.to_string();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    Ok(prefix)
}

fn parse_public_ip(value: &str) -> Result<Option<IpAddr>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|_| format!("{value:?} is not an IP address"))
}

/// Machine metadata as fleet wrote it: `key=value` pairs separated by commas, blanks around
/// keys and values trimmed, empty entries (a trailing comma) skipped. A later key wins.
pub fn parse_metadata(value: &str) -> Result<BTreeMap<String, String>, String> {
    let mut metadata = BTreeMap::new();
    for pair in value.split(',') {
        let pair = pair.trim();
        if pair.is_empty() {
            continue;
        }
        match pair.split_once('=') {
            Some((key, val)) if !key.trim().is_empty() => {
                metadata.insert(key.trim().to_string(), val.trim().to_string());
            }
            _ => return Err(format!("{pair:?} is not a key=value pair")),
        }
    }
    Ok(metadata)
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    match parse_duration(value) {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => Err(format!("{value:?} must be longer than zero")),
        None => Err(format!("{value:?} is not a duration")),
    }
}

/// A duration as Go's `time.ParseDuration` reads it ("30s", "1m30s", "1.5h", "500ms"), and,
/// because fleet described agent_ttl as seconds, a bare number of seconds. Negative
/// durations are refused.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let text = value.trim();
    let text = text.strip_prefix('+').unwrap_or(text);
    if text.is_empty() || text.starts_with('-') {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds <= 1e12).then(|| Duration::from_secs_f64(seconds));
    }
    let mut nanos: f64 = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let amount: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        nanos += amount * unit_nanos;
    }
    (nanos.is_finite() && nanos < u64::MAX as f64).then(|| Duration::from_nanos(nanos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_text(text: &str) -> Result<(FleetConfig, Vec<String>), ConfigError> {
        let mut config = FleetConfig::default();
        let warnings = config.apply_file_text(Path::new("/etc/fleet/fleet.conf"), text)?;
        Ok((config, warnings))
    }

    #[test]
    fn defaults_are_fleets() {
        let config = FleetConfig::default();
        assert_eq!(config.etcd_servers, vec!["http://127.0.0.1:2379"]);
        assert_eq!(config.etcd_key_prefix, "/_coreos.com/fleet/");
        assert_eq!(config.etcd_request_timeout, Duration::from_secs(1));
        assert_eq!(config.agent_ttl, Duration::from_secs(30));
        assert_eq!(config.engine_reconcile_interval, Duration::from_secs(2));
        assert_eq!(config.token_limit, 100);
        assert_eq!(config.verbosity, 0);
        assert!(!config.disable_engine);
        assert!(!config.disable_watches);
        assert!(config.metadata.is_empty());
        assert_eq!(config.public_ip, None);
        assert_eq!(config.etcd_cafile, None);
    }

    #[test]
    fn reads_every_option_from_the_file() {
        let text = r#"
# fleet.conf
verbosity=2
etcd_servers="http://10.0.0.1:2379,http://10.0.0.2:2379"
etcd_key_prefix=/custom/fleet
etcd_cafile=/etc/ssl/etcd/ca.pem
etcd_certfile = /etc/ssl/etcd/client.pem
etcd_keyfile=/etc/ssl/etcd/client-key.pem
etcd_username=fleet
etcd_password="s3cret"
etcd_request_timeout=2.5
public_ip="192.0.2.7"
metadata="region=us-west,az=us-west-1"
agent_ttl="45s"
engine_reconcile_interval=5
disable_engine=true
disable_watches=1
token_limit=50
"#;
        let (config, warnings) = from_text(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.verbosity, 2);
        assert_eq!(
            config.etcd_servers,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(config.etcd_key_prefix, "/custom/fleet/");
        assert_eq!(
            config.etcd_cafile,
            Some(PathBuf::from("/etc/ssl/etcd/ca.pem"))
        );
        assert_eq!(
            config.etcd_certfile,
            Some(PathBuf::from("/etc/ssl/etcd/client.pem"))
        );
        assert_eq!(
            config.etcd_keyfile,
            Some(PathBuf::from("/etc/ssl/etcd/client-key.pem"))
        );
        assert_eq!(config.etcd_username.as_deref(), Some("fleet"));
        assert_eq!(config.etcd_password.as_deref(), Some("s3cret"));
        assert_eq!(config.etcd_request_timeout, Duration::from_millis(2500));
        assert_eq!(config.public_ip, Some("192.0.2.7".parse().unwrap()));
        assert_eq!(
            config.metadata,
            BTreeMap::from([
                ("region".to_string(), "us-west".to_string()),
                ("az".to_string(), "us-west-1".to_string())
            ])
        );
        assert_eq!(config.agent_ttl, Duration::from_secs(45));
        assert_eq!(config.engine_reconcile_interval, Duration::from_secs(5));
        assert!(config.disable_engine);
        assert!(config.disable_watches);
        assert_eq!(config.token_limit, 50);
    }

    #[test]
    fn the_old_bracketed_server_list_is_read() {
        let (config, _) =
            from_text("etcd_servers=[\"http://127.0.0.1:4001\", \"http://127.0.0.1:2379\"]\n")
                .unwrap();
        assert_eq!(
            config.etcd_servers,
            vec!["http://127.0.0.1:4001", "http://127.0.0.1:2379"]
        );
    }

    #[test]
    fn bad_values_name_file_line_and_key() {
        let error = from_text("verbosity=1\n\nagent_ttl=abc\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/fleet/fleet.conf:3: agent_ttl: \"abc\" is not a duration"
        );
        let cases = [
            ("verbosity=loud", "verbosity"),
            ("etcd_servers=", "etcd_servers"),
            ("etcd_servers=127.0.0.1:2379", "etcd_servers"),
            ("etcd_key_prefix=", "etcd_key_prefix"),
            ("etcd_request_timeout=0", "etcd_request_timeout"),
            ("etcd_request_timeout=-1", "etcd_request_timeout"),
            (
                "engine_reconcile_interval=soon",
                "engine_reconcile_interval",
            ),
            ("public_ip=not-an-ip", "public_ip"),
            ("metadata=region", "metadata"),
            ("metadata==x", "metadata"),
            ("agent_ttl=0s", "agent_ttl"),
            ("agent_ttl=-5s", "agent_ttl"),
            ("disable_engine=perhaps", "disable_engine"),
            ("token_limit=0", "token_limit"),
            ("token_limit=-3", "token_limit"),
        ];
        for (line, key) in cases {
            match from_text(line) {
                Err(ConfigError::InvalidValue {
                    origin,
                    key: bad_key,
                    ..
                }) => {
                    assert_eq!(bad_key, key, "{line}");
                    assert_eq!(
                        origin,
                        SettingOrigin::File {
                            path: PathBuf::from("/etc/fleet/fleet.conf"),
                            line: 1
                        }
                    );
                }
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn lines_without_equals_are_syntax_errors() {
        let error = from_text("# ok\nagent_ttl 30s\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/etc/fleet/fleet.conf:2: expected key=value, found \"agent_ttl 30s\""
        );
    }

    #[test]
    fn unknown_retired_and_sectioned_keys_warn() {
        let (config, warnings) = from_text(
            "frobnicate=1\nverify_units=true\nauthorized_keys_file=/x\n; comment\n[agent]\nagent_ttl=1s\n",
        )
        .unwrap();
        assert_eq!(config, FleetConfig::default());
        assert_eq!(
            warnings,
            vec![
                "/etc/fleet/fleet.conf:1: unknown option \"frobnicate\" ignored",
                "/etc/fleet/fleet.conf:2: verify_units is no longer supported by fleet; ignored",
                "/etc/fleet/fleet.conf:3: authorized_keys_file is no longer supported by fleet; ignored",
                "/etc/fleet/fleet.conf:5: section [agent] ignored: fleet reads options only at the top level",
            ]
        );
    }

    #[test]
    fn empty_values_clear_optional_settings() {
        let (config, _) =
            from_text("public_ip=1.2.3.4\npublic_ip=\"\"\netcd_cafile=\nmetadata=\"\"\n").unwrap();
        assert_eq!(config.public_ip, None);
        assert_eq!(config.etcd_cafile, None);
        assert!(config.metadata.is_empty());
    }

    #[test]
    fn metadata_parsing() {
        assert_eq!(
            parse_metadata(" a = 1 , b=2,, c=x=y ,").unwrap(),
            BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
                ("c".to_string(), "x=y".to_string()),
            ])
        );
        assert_eq!(parse_metadata("").unwrap(), BTreeMap::new());
        assert_eq!(parse_metadata("k=").unwrap()["k"], "");
        assert!(parse_metadata("a=1,b").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2us"), Some(Duration::from_micros(2)));
        assert_eq!(parse_duration("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        assert_eq!(parse_duration("+10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration(".5m"), Some(Duration::from_secs(30)));
        for bad in ["", "abc", "-5s", "1x", "s", "1..5s", "1s2", "5 s"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.conf");
        std::fs::write(
            &path,
            "agent_ttl=10s\nmetadata=\"role=db\"\npublic_ip=10.0.0.1\n",
        )
        .unwrap();
        let (config, warnings) = FleetConfig::load(
            Some(&path),
            env(&[
                ("FLEET_METADATA", "role=web,zone=a"),
                ("FLEET_PUBLIC_IP", "10.0.0.2"),
                ("HOME", "/root"),
                ("FLEETCTL_ENDPOINT", "unix:///var/run/fleet.sock"),
            ]),
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.agent_ttl, Duration::from_secs(10));
        assert_eq!(config.metadata["role"], "web");
        assert_eq!(config.metadata["zone"], "a");
        assert_eq!(config.public_ip, Some("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn flags_override_environment() {
        let (mut config, _) = FleetConfig::load(
            Some(Path::new("/dev/null")),
            env(&[("FLEET_ETCD_SERVERS", "http://10.0.0.1:2379")]),
        )
        .unwrap();
        assert_eq!(config.etcd_servers, vec!["http://10.0.0.1:2379"]);
        config
            .apply_override("etcd_servers", "http://10.0.0.9:2379")
            .unwrap();
        config.apply_override("--agent-ttl", "1m").unwrap();
        config.apply_override("verify_units", "true").unwrap();
        assert_eq!(config.etcd_servers, vec!["http://10.0.0.9:2379"]);
        assert_eq!(config.agent_ttl, Duration::from_secs(60));
        assert!(matches!(
            config.apply_override("bogus", "1"),
            Err(ConfigError::UnknownFlag(name)) if name == "bogus"
        ));
        assert_eq!(
            config
                .apply_override("agent_ttl", "abc")
                .unwrap_err()
                .to_string(),
            "flag --agent_ttl: agent_ttl: \"abc\" is not a duration"
        );
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        let error = FleetConfig::load(
            Some(Path::new("/dev/null")),
            env(&[("FLEET_AGENT_TTL", "soon")]),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment FLEET_AGENT_TTL: agent_ttl: \"soon\" is not a duration"
        );
    }

    #[test]
    fn unknown_environment_variables_warn() {
        let (_, warnings) =
            FleetConfig::load(Some(Path::new("/dev/null")), env(&[("FLEET_NOPE", "1")])).unwrap();
        assert_eq!(
            warnings,
            vec!["environment FLEET_NOPE: unknown option \"nope\" ignored"]
        );
    }

    /// Every option the provisioner may write from `coreos.fleet` (its variable names are
    /// FLEET_ + the key in upper case) is understood.
    #[test]
    fn every_provisioner_variable_is_understood() {
        let written = [
            ("FLEET_AGENT_TTL", "20s"),
            ("FLEET_DISABLE_ENGINE", "true"),
            ("FLEET_DISABLE_WATCHES", "false"),
            ("FLEET_ENGINE_RECONCILE_INTERVAL", "3"),
            ("FLEET_ETCD_CAFILE", "/etc/ssl/ca.pem"),
            ("FLEET_ETCD_CERTFILE", "/etc/ssl/cert.pem"),
            ("FLEET_ETCD_KEY_PREFIX", "/fleet/"),
            ("FLEET_ETCD_KEYFILE", "/etc/ssl/key.pem"),
            ("FLEET_ETCD_PASSWORD", "pw"),
            ("FLEET_ETCD_REQUEST_TIMEOUT", "3.0"),
            (
                "FLEET_ETCD_SERVERS",
                "http://10.0.0.1:2379,http://10.0.0.2:2379",
            ),
            ("FLEET_ETCD_USERNAME", "user"),
            ("FLEET_METADATA", "region=eu,disk=ssd"),
            ("FLEET_PUBLIC_IP", "203.0.113.4"),
            ("FLEET_TOKEN_LIMIT", "25"),
            ("FLEET_VERBOSITY", "1"),
        ];
        let (config, warnings) =
            FleetConfig::load(Some(Path::new("/dev/null")), env(&written)).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.agent_ttl, Duration::from_secs(20));
        assert!(config.disable_engine);
        assert_eq!(config.engine_reconcile_interval, Duration::from_secs(3));
        assert_eq!(config.etcd_key_prefix, "/fleet/");
        assert_eq!(config.etcd_username.as_deref(), Some("user"));
        assert_eq!(config.etcd_password.as_deref(), Some("pw"));
        assert_eq!(config.etcd_request_timeout, Duration::from_secs(3));
        assert_eq!(config.metadata.len(), 2);
        assert_eq!(config.token_limit, 25);
        assert_eq!(config.verbosity, 1);
        let etcd = config.etcd();
        assert_eq!(
            etcd.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(etcd.ca_file, Some(PathBuf::from("/etc/ssl/ca.pem")));
        assert_eq!(etcd.cert_file, Some(PathBuf::from("/etc/ssl/cert.pem")));
        assert_eq!(etcd.key_file, Some(PathBuf::from("/etc/ssl/key.pem")));
        assert_eq!(etcd.request_timeout, Duration::from_secs(3));
    }

    #[test]
    fn missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.conf");
        let error = FleetConfig::load(Some(&missing), env(&[])).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }), "{error}");
        assert!(error.to_string().contains("nope.conf"));
        let error = FleetConfig::load(Some(dir.path()), env(&[])).unwrap_err();
        assert!(matches!(error, ConfigError::IsDirectory { .. }), "{error}");
    }

    #[test]
    fn the_default_path_may_be_missing() {
        // Whatever this machine has at /etc/fleet/fleet.conf, a missing one is no error;
        // only run the check where there is none.
        if Path::new(DEFAULT_CONFIG_PATH).exists() {
            return;
        }
        let (config, warnings) = FleetConfig::load(None, env(&[])).unwrap();
        assert_eq!(config, FleetConfig::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn etcd_settings_carry_over() {
        let config = FleetConfig::default();
        let etcd = config.etcd();
        assert_eq!(etcd.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(etcd.request_timeout, Duration::from_secs(1));
        assert_eq!(etcd.ca_file, None);
    }
}
