//! flanneld's settings as flanneld takes them: command-line flags, then `FLANNELD_*`
//! environment variables (the flag's name in upper case, '-' as '_'), then
//! `/run/flannel/options.env` (the same variables, one `KEY=VALUE` a line, as the provisioner
//! writes it from `coreos.flannel`), each winning over the ones after it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_common::EtcdConfig;
use clap::CommandFactory;

/// Where the provisioner writes `coreos.flannel`'s options.
pub const DEFAULT_OPTIONS_ENV: &str = "/run/flannel/options.env";
/// etcd v3's client port (flannel's own default also named 4001, etcd v2's legacy port).
pub const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// The prefix that turns a flag into its environment variable.
pub const ENV_PREFIX: &str = "FLANNELD_";
/// flannel renews a lease this long before it expires, unless told otherwise.
pub const DEFAULT_RENEW_MARGIN_MINUTES: u32 = 60;
/// The shortest `--subnet-lease-ttl` taken: renewals come at half the TTL or earlier, and
/// below a few seconds one slow etcd round trip would let a live machine's lease lapse.
pub const MIN_SUBNET_LEASE_TTL: Duration = Duration::from_secs(5);
/// flanneld's `--iptables-resync` default, in seconds.
pub const DEFAULT_IPTABLES_RESYNC_SECONDS: u64 = 5;
/// The longest `--subnet-lease-ttl` taken, and the default: flannel's own 24 h.
pub const MAX_SUBNET_LEASE_TTL: Duration = crate::registry::SUBNET_LEASE_TTL;

/// The options this flanneld reads, by their flag names.
const OPTIONS: &[&str] = &[
    "etcd-endpoints",
    "etcd-prefix",
    "etcd-cafile",
    "etcd-certfile",
    "etcd-keyfile",
    "iface",
    "iface-regex",
    "public-ip",
    "ip-masq",
    "subnet-file",
    "healthz-ip",
    "healthz-port",
    "subnet-lease-renew-margin",
    "subnet-lease-ttl",
    "iptables-resync",
    "iptables-forward-rules",
];

/// Upstream flanneld's options that Keel's does not implement: set in the environment or
/// options.env, they earn a warning rather than stop the daemon.
const UPSTREAM_ONLY: &[&str] = &[
    "etcd-username",
    "etcd-password",
    "kube-subnet-mgr",
    "kube-api-url",
    "kubeconfig-file",
    "kube-annotation-prefix",
    "iface-can-reach",
    "public-ipv6",
    "net-config-path",
    "subnet-dir",
    "v",
];

/// The command line, as flanneld spells it. Every option is optional here so that an absent
/// flag falls through to the environment and options.env; values are checked by
/// [`FlannelConfig::resolve`], which names the flag in its errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Parser)]
#[command(
    name = "flanneld",
    version,
    about = "Leases this machine a subnet of the flannel network in etcd and routes to the others' subnets"
)]
pub struct FlannelArgs {
    /// Comma-separated etcd endpoints [default: http://127.0.0.1:2379]
    #[arg(long, value_name = "URLS")]
    pub etcd_endpoints: Option<String>,
    /// The etcd key prefix of the network [default: /coreos.com/network]
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// CA certificate for etcd's TLS
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<String>,
    /// Client certificate for etcd's TLS
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<String>,
    /// Client key for etcd's TLS
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<String>,
    /// Interface (name or IPv4 address) to reach the other machines over; may be repeated,
    /// the first that exists wins [default: the default route's]
    #[arg(long, value_name = "NAME|IP")]
    pub iface: Vec<String>,
    /// Regular expression matching the interface's name or address, tried after --iface;
    /// may be repeated
    #[arg(long, value_name = "REGEX")]
    pub iface_regex: Vec<String>,
    /// The address other machines reach this one at [default: the interface's]
    #[arg(long, value_name = "IP")]
    pub public_ip: Option<String>,
    /// Masquerade traffic leaving the flannel network
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub ip_masq: Option<String>,
    /// Where to write the subnet environment for container runtimes
    /// [default: /run/flannel/subnet.env]
    #[arg(long, value_name = "FILE")]
    pub subnet_file: Option<String>,
    /// Address the health server listens on [default: 0.0.0.0]
    #[arg(long, value_name = "IP")]
    pub healthz_ip: Option<String>,
    /// Port of the health server; 0 disables it [default: 0]
    #[arg(long, value_name = "PORT")]
    pub healthz_port: Option<String>,
    /// Renew the subnet lease this many minutes before it expires [default: 60]
    #[arg(long, value_name = "MINUTES")]
    pub subnet_lease_renew_margin: Option<String>,
    /// (Keel extension) How long a subnet lease lasts without renewal, as a duration with a
    /// unit: 30s, 10m, 24h; 5s to 24h. When a machine dies, the others drop their routes to
    /// it once its lease runs out [default: 24h, flannel's]
    #[arg(long, value_name = "DURATION")]
    pub subnet_lease_ttl: Option<String>,
    /// Seconds between checks that flannel's iptables rules are still in place (re-added if
    /// something, such as dockerd starting, removed them) [default: 5]
    #[arg(long, value_name = "SECONDS")]
    pub iptables_resync: Option<String>,
    /// Add FORWARD-accept rules for the flannel network (the FLANNEL-FWD chain), so that
    /// forwarded container traffic passes a FORWARD policy of DROP, such as docker sets
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub iptables_forward_rules: Option<String>,
}

impl FlannelArgs {
    /// Rewrites Go's single-dash long flags (`-etcd-prefix=/x`, as unit files written for
    /// upstream flanneld use them) into the double-dash form clap parses. The first argument
    /// (the program) and anything that is not one of flanneld's flags pass unchanged.
    pub fn normalize_go_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
        let command = FlannelArgs::command();
        let known: Vec<&str> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .chain(["help", "version"])
            .collect();
        args.into_iter()
            .enumerate()
            .map(|(index, arg)| {
                let Some(text) = arg.to_str() else {
                    return arg;
                };
                let single = text.strip_prefix('-').filter(|rest| !rest.starts_with('-'));
                match single {
                    Some(rest)
                        if index > 0 && known.contains(&rest.split('=').next().unwrap_or("")) =>
                    {
                        OsString::from(format!("--{rest}"))
                    }
                    _ => arg,
                }
            })
            .collect()
    }
}

/// What `--iface` names: an interface by name, or the interface holding an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSelector {
    Name(String),
    Address(Ipv4Addr),
}

impl fmt::Display for InterfaceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterfaceSelector::Name(name) => f.write_str(name),
            InterfaceSelector::Address(addr) => write!(f, "{addr}"),
        }
    }
}

/// flanneld's settings, checked, with flannel's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelConfig {
    pub etcd_endpoints: Vec<String>,
    /// The network's key prefix, without a trailing '/': keys are `<prefix>/config` and
    /// `<prefix>/subnets/<subnet>`.
    pub etcd_prefix: String,
    pub etcd_cafile: Option<PathBuf>,
    pub etcd_certfile: Option<PathBuf>,
    pub etcd_keyfile: Option<PathBuf>,
    /// Interfaces to try in order; empty means the default route's.
    pub iface: Vec<InterfaceSelector>,
    /// Regular expressions (checked to compile) tried after `iface`.
    pub iface_regex: Vec<String>,
    pub public_ip: Option<Ipv4Addr>,
    pub ip_masq: bool,
    pub subnet_file: PathBuf,
    pub healthz_ip: IpAddr,
    /// 0: no health server.
    pub healthz_port: u16,
    /// How long before its expiry the subnet lease is renewed (at half the TTL instead when
    /// this is not shorter than `subnet_lease_ttl`).
    pub subnet_lease_renew_margin: Duration,
    /// How long the subnet lease (an etcd lease) lasts without renewal: a dead machine's
    /// routes go from the others' once it runs out.
    pub subnet_lease_ttl: Duration,
    /// How often the iptables rules are checked and re-added.
    pub iptables_resync: Duration,
    /// Whether the FLANNEL-FWD forward-accept rules are installed.
    pub iptables_forward_rules: bool,
    /// Settings that were ignored (unknown names, upstream options Keel lacks), for the
    /// daemon to log.
    pub warnings: Vec<String>,
}

impl Default for FlannelConfig {
    fn default() -> Self {
        FlannelConfig {
            etcd_endpoints: vec![DEFAULT_ETCD_ENDPOINT.to_string()],
            etcd_prefix: DEFAULT_ETCD_PREFIX.to_string(),
            etcd_cafile: None,
            etcd_certfile: None,
            etcd_keyfile: None,
            iface: Vec::new(),
            iface_regex: Vec::new(),
            public_ip: None,
            ip_masq: false,
            subnet_file: PathBuf::from(DEFAULT_SUBNET_FILE),
            healthz_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            healthz_port: 0,
            subnet_lease_renew_margin: Duration::from_secs(
                u64::from(DEFAULT_RENEW_MARGIN_MINUTES) * 60,
            ),
            subnet_lease_ttl: crate::registry::SUBNET_LEASE_TTL,
            iptables_resync: Duration::from_secs(DEFAULT_IPTABLES_RESYNC_SECONDS),
            iptables_forward_rules: true,
            warnings: Vec::new(),
        }
    }
}

/// Where a setting came from, naming its key as written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingOrigin {
    Flag {
        flag: String,
    },
    Environment {
        variable: String,
    },
    File {
        path: PathBuf,
        line: usize,
        variable: String,
    },
}

impl fmt::Display for SettingOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingOrigin::Flag { flag } => write!(f, "flag --{flag}"),
            SettingOrigin::Environment { variable } => {
                write!(f, "environment variable {variable}")
            }
            SettingOrigin::File {
                path,
                line,
                variable,
            } => write!(f, "{}:{line}: {variable}", path.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected KEY=VALUE, found {text:?}")]
    Syntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{origin}: {message}")]
    InvalidValue {
        origin: SettingOrigin,
        /// The option's flag name (`healthz-port`), whatever the origin spelled.
        option: &'static str,
        message: String,
    },
}

/// A value read from the environment or options.env, before it is checked.
struct RawSetting {
    value: String,
    origin: SettingOrigin,
}

/// `FLANNELD_HEALTHZ_PORT` → `healthz-port`.
fn option_of_variable(variable: &str) -> Option<String> {
    variable
        .strip_prefix(ENV_PREFIX)
        .map(|rest| rest.to_ascii_lowercase().replace('_', "-"))
}

/// `healthz-port` → `FLANNELD_HEALTHZ_PORT`.
pub fn variable_of_option(option: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        option.to_ascii_uppercase().replace('-', "_")
    )
}

impl FlannelConfig {
    /// The settings flanneld runs with: `args` over the `FLANNELD_*` variables of `env` over
    /// the file `options_env` (missing is fine: the provisioner writes it only when the
    /// cloud-config has `coreos.flannel`). As in flanneld, an empty variable counts as unset.
    pub fn resolve(
        args: FlannelArgs,
        env: impl IntoIterator<Item = (String, String)>,
        options_env: Option<&Path>,
    ) -> Result<FlannelConfig, ConfigError> {
        let mut warnings = Vec::new();
        let mut raw: BTreeMap<&'static str, RawSetting> = BTreeMap::new();
        if let Some(path) = options_env {
            for (line, variable, value) in read_options_env(path)? {
                let origin = SettingOrigin::File {
                    path: path.to_path_buf(),
                    line,
                    variable: variable.clone(),
                };
                take_setting(&mut raw, &mut warnings, &variable, value, origin);
            }
        }
        // Sorted, so that warnings come out in the same order every time.
        let mut env: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) || name == "FLANNEL_KUBE_SUBNET_MGR")
            .collect();
        env.sort();
        for (variable, value) in env {
            let origin = SettingOrigin::Environment {
                variable: variable.clone(),
            };
            take_setting(&mut raw, &mut warnings, &variable, value, origin);
        }

        let mut config = FlannelConfig::default();
        let mut resolver = Resolver { args, raw };
        if let Some((value, origin)) = resolver.single("etcd-endpoints") {
            config.etcd_endpoints = check("etcd-endpoints", &origin, parse_endpoints(&value))?;
        }
        if let Some((value, origin)) = resolver.single("etcd-prefix") {
            config.etcd_prefix = check("etcd-prefix", &origin, parse_prefix(&value))?;
        }
        if let Some((value, _)) = resolver.single("etcd-cafile") {
            config.etcd_cafile = optional_path(&value);
        }
        if let Some((value, _)) = resolver.single("etcd-certfile") {
            config.etcd_certfile = optional_path(&value);
        }
        if let Some((value, _)) = resolver.single("etcd-keyfile") {
            config.etcd_keyfile = optional_path(&value);
        }
        for (value, origin) in resolver.repeated("iface") {
            // A list in one value is read too: neither a name nor an address holds a comma.
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                config
                    .iface
                    .push(check("iface", &origin, parse_interface(item))?);
            }
        }
        for (value, origin) in resolver.repeated("iface-regex") {
            if !value.trim().is_empty() {
                check("iface-regex", &origin, parse_regex(value.trim()))?;
                config.iface_regex.push(value.trim().to_string());
            }
        }
        if let Some((value, origin)) = resolver.single("public-ip") {
            config.public_ip = check("public-ip", &origin, parse_public_ip(&value))?;
        }
        if let Some((value, origin)) = resolver.single("ip-masq") {
            config.ip_masq = check("ip-masq", &origin, parse_bool(&value))?;
        }
        if let Some((value, origin)) = resolver.single("subnet-file") {
            config.subnet_file = check("subnet-file", &origin, parse_subnet_file(&value))?;
        }
        if let Some((value, origin)) = resolver.single("healthz-ip") {
            config.healthz_ip = check("healthz-ip", &origin, parse_healthz_ip(&value))?;
        }
        if let Some((value, origin)) = resolver.single("healthz-port") {
            config.healthz_port = check("healthz-port", &origin, parse_port(&value))?;
        }
        if let Some((value, origin)) = resolver.single("subnet-lease-renew-margin") {
            config.subnet_lease_renew_margin = check(
                "subnet-lease-renew-margin",
                &origin,
                parse_renew_margin(&value),
            )?;
        }
        if let Some((value, origin)) = resolver.single("subnet-lease-ttl") {
            config.subnet_lease_ttl = check("subnet-lease-ttl", &origin, parse_lease_ttl(&value))?;
        }
        if let Some((value, origin)) = resolver.single("iptables-resync") {
            config.iptables_resync =
                check("iptables-resync", &origin, parse_iptables_resync(&value))?;
        }
        if let Some((value, origin)) = resolver.single("iptables-forward-rules") {
            config.iptables_forward_rules =
                check("iptables-forward-rules", &origin, parse_bool(&value))?;
        }
        config.warnings = warnings;
        Ok(config)
    }

    /// The etcd connection these settings describe.
    pub fn etcd(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: self.etcd_endpoints.clone(),
            ca_file: self.etcd_cafile.clone(),
            cert_file: self.etcd_certfile.clone(),
            key_file: self.etcd_keyfile.clone(),
            ..EtcdConfig::default()
        }
    }

    /// Where the health server listens; None when `--healthz-port` is 0.
    pub fn healthz_addr(&self) -> Option<SocketAddr> {
        (self.healthz_port != 0).then(|| SocketAddr::new(self.healthz_ip, self.healthz_port))
    }
}

/// Files a variable from the environment or options.env under its option, or warns about it.
/// Later calls win (the environment is read after the file, a later line after an earlier).
fn take_setting(
    raw: &mut BTreeMap<&'static str, RawSetting>,
    warnings: &mut Vec<String>,
    variable: &str,
    value: String,
    origin: SettingOrigin,
) {
    // coreos-cloudinit writes kube_subnet_mgr without the D.
    let option = if variable == "FLANNEL_KUBE_SUBNET_MGR" {
        "kube-subnet-mgr".to_string()
    } else {
        match option_of_variable(variable) {
            Some(option) => option,
            None => return,
        }
    };
    if let Some(known) = OPTIONS.iter().find(|known| **known == option) {
        // flanneld skips empty variables: they leave the default (or the file's value).
        if !value.trim().is_empty() {
            raw.insert(known, RawSetting { value, origin });
        }
    } else if UPSTREAM_ONLY.contains(&option.as_str()) {
        warnings.push(format!(
            "{origin}: upstream flanneld's --{option} is not supported by Keel's flanneld; ignored"
        ));
    } else {
        warnings.push(format!("{origin}: unknown flanneld option; ignored"));
    }
}

/// Picks each option's value by precedence: the flag, else the environment or file.
struct Resolver {
    args: FlannelArgs,
    raw: BTreeMap<&'static str, RawSetting>,
}

impl Resolver {
    fn flag(option: &str) -> SettingOrigin {
        SettingOrigin::Flag {
            flag: option.to_string(),
        }
    }

    fn single(&mut self, option: &'static str) -> Option<(String, SettingOrigin)> {
        let flag = match option {
            "etcd-endpoints" => self.args.etcd_endpoints.take(),
            "etcd-prefix" => self.args.etcd_prefix.take(),
            "etcd-cafile" => self.args.etcd_cafile.take(),
            "etcd-certfile" => self.args.etcd_certfile.take(),
            "etcd-keyfile" => self.args.etcd_keyfile.take(),
            "public-ip" => self.args.public_ip.take(),
            "ip-masq" => self.args.ip_masq.take(),
            "subnet-file" => self.args.subnet_file.take(),
            "healthz-ip" => self.args.healthz_ip.take(),
            "healthz-port" => self.args.healthz_port.take(),
            "subnet-lease-renew-margin" => self.args.subnet_lease_renew_margin.take(),
            "subnet-lease-ttl" => self.args.subnet_lease_ttl.take(),
            "iptables-resync" => self.args.iptables_resync.take(),
            "iptables-forward-rules" => self.args.iptables_forward_rules.take(),
            other => unreachable!("{other} is not a single-valued option"),
        };
        match flag {
            Some(value) => Some((value, Self::flag(option))),
            None => self
                .raw
                .remove(option)
                .map(|setting| (setting.value, setting.origin)),
        }
    }

    /// A repeatable option: all its flags, or else the one variable.
    fn repeated(&mut self, option: &'static str) -> Vec<(String, SettingOrigin)> {
        let flags = match option {
            "iface" => std::mem::take(&mut self.args.iface),
            "iface-regex" => std::mem::take(&mut self.args.iface_regex),
            other => unreachable!("{other} is not a repeatable option"),
        };
        if flags.is_empty() {
            self.raw
                .remove(option)
                .map(|setting| vec![(setting.value, setting.origin)])
                .unwrap_or_default()
        } else {
            flags
                .into_iter()
                .map(|value| (value, Self::flag(option)))
                .collect()
        }
    }
}

fn check<T>(
    option: &'static str,
    origin: &SettingOrigin,
    parsed: Result<T, String>,
) -> Result<T, ConfigError> {
    parsed.map_err(|message| ConfigError::InvalidValue {
        origin: origin.clone(),
        option,
        message,
    })
}

/// options.env as systemd's EnvironmentFile reads it: `KEY=VALUE` lines, blank lines and
/// `#`/`;` comments skipped, one pair of surrounding quotes removed from the value.
fn read_options_env(path: &Path) -> Result<Vec<(usize, String, String)>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut settings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                text: trimmed.to_string(),
            });
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(ConfigError::Syntax {
                path: path.to_path_buf(),
                line,
                text: trimmed.to_string(),
            });
        }
        settings.push((line, key.to_string(), unquote(value.trim()).to_string()));
    }
    Ok(settings)
}

fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return inner;
        }
    }
    value
}

fn optional_path(value: &str) -> Option<PathBuf> {
    let value = value.trim();
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// A comma-separated list of etcd URLs.
fn parse_endpoints(value: &str) -> Result<Vec<String>, String> {
    let endpoints = EtcdConfig::endpoints_from_list(value);
    if endpoints.is_empty() {
        return Err("no etcd endpoints given".to_string());
    }
    for endpoint in &endpoints {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() => {}
            _ => {
                return Err(format!(
                    "{endpoint:?} is not an etcd endpoint URL (such as http://127.0.0.1:2379)"
                ))
            }
        }
    }
    Ok(endpoints)
}

/// The key prefix, cleaned as flannel's `path.Join` cleans it: no trailing or doubled '/'.
fn parse_prefix(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("the etcd prefix cannot be empty".to_string());
    }
    Ok(crate::registry::normalize_prefix(value))
}

fn parse_interface(value: &str) -> Result<InterfaceSelector, String> {
    if let Ok(addr) = value.parse::<Ipv4Addr>() {
        return Ok(InterfaceSelector::Address(addr));
    }
    if value.parse::<Ipv6Addr>().is_ok() {
        return Err(format!(
            "{value:?}: IPv6 addresses are not supported; name an interface or its IPv4 address"
        ));
    }
    // Linux's rules for interface names (IFNAMSIZ, dev_valid_name).
    if value.len() > 15
        || value == "."
        || value == ".."
        || value.contains(|c: char| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(format!(
            "{value:?} is neither an IPv4 address nor a valid interface name"
        ));
    }
    Ok(InterfaceSelector::Name(value.to_string()))
}

fn parse_regex(value: &str) -> Result<(), String> {
    regex::Regex::new(value)
        .map(|_| ())
        .map_err(|e| format!("{value:?} is not a valid regular expression: {e}"))
}

fn parse_public_ip(value: &str) -> Result<Option<Ipv4Addr>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(addr)) if !addr.is_unspecified() => Ok(Some(addr)),
        Ok(IpAddr::V4(_)) => Err("0.0.0.0 cannot be a public address".to_string()),
        Ok(IpAddr::V6(_)) => Err(format!(
            "{value:?}: IPv6 public addresses are not supported"
        )),
        Err(_) => Err(format!("{value:?} is not an IPv4 address")),
    }
}

/// Go's `strconv.ParseBool`, which flanneld's flags use, ignoring case.
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean (true or false)")),
    }
}

fn parse_subnet_file(value: &str) -> Result<PathBuf, String> {
    optional_path(value).ok_or_else(|| "the subnet file path cannot be empty".to_string())
}

fn parse_healthz_ip(value: &str) -> Result<IpAddr, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    value
        .parse()
        .map_err(|_| format!("{value:?} is not an IP address"))
}

fn parse_port(value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a port number (0 to 65535; 0 disables)"))
}

/// Minutes, more than 0 and less than the longest lease (24 hours), as flanneld checks.
/// Checked apart from `--subnet-lease-ttl`: a margin not shorter than a shorter TTL is
/// allowed, and renewal then comes at half the TTL.
fn parse_renew_margin(value: &str) -> Result<Duration, String> {
    let minutes: u32 = value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a number of minutes"))?;
    if minutes == 0 || minutes >= 24 * 60 {
        return Err(format!(
            "{minutes} minutes is out of range: the margin must be 1 to 1439 minutes (less than the longest lease, 24 hours)"
        ));
    }
    Ok(Duration::from_secs(u64::from(minutes) * 60))
}

/// A whole number of seconds, minutes or hours in Go's duration syntax (`30s`, `10m`, `24h`),
/// from [`MIN_SUBNET_LEASE_TTL`] to [`MAX_SUBNET_LEASE_TTL`].
/// Whole seconds, as flanneld's int flag; at least 1 (0 would spin).
fn parse_iptables_resync(value: &str) -> Result<Duration, String> {
    match value.trim().parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(format!(
            "{value:?} is not a whole number of seconds of at least 1"
        )),
    }
}

fn parse_lease_ttl(value: &str) -> Result<Duration, String> {
    let text = value.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit_seconds = match unit {
        _ if number.is_empty() => None,
        "s" => Some(1),
        "m" => Some(60),
        "h" => Some(3600),
        "" => {
            return Err(format!(
                "{value:?} needs a unit: seconds, minutes or hours, such as {number}s, {number}m or {number}h"
            ))
        }
        _ => None,
    };
    let Some(unit_seconds) = unit_seconds else {
        return Err(format!(
            "{value:?} is not a duration (a whole number with a unit s, m or h, such as 30s, 10m or 24h)"
        ));
    };
    // `number` is all digits: only a number too large for u64 fails to parse.
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit_seconds))
        .map(Duration::from_secs)
    {
        Some(ttl) if (MIN_SUBNET_LEASE_TTL..=MAX_SUBNET_LEASE_TTL).contains(&ttl) => Ok(ttl),
        _ => Err(format!(
            "{text} is out of range: the lease TTL must be 5s to 24h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn args(argv: &[&str]) -> FlannelArgs {
        FlannelArgs::try_parse_from(std::iter::once("flanneld").chain(argv.iter().copied()))
            .unwrap()
    }

    fn options_file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_are_flanneds() {
        let config = FlannelConfig::resolve(FlannelArgs::default(), env(&[]), None).unwrap();
        assert_eq!(config, FlannelConfig::default());
        assert_eq!(config.etcd_endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(config.etcd_prefix, "/coreos.com/network");
        assert_eq!(config.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!(config.healthz_addr(), None);
        assert_eq!(config.subnet_lease_renew_margin, Duration::from_secs(3600));
        assert_eq!(config.subnet_lease_ttl, Duration::from_secs(24 * 3600));
        assert!(!config.ip_masq);
        assert_eq!(config.etcd(), EtcdConfig::default());
    }

    #[test]
    fn every_flag_is_read() {
        let config = FlannelConfig::resolve(
            args(&[
                "--etcd-endpoints=http://10.0.0.1:2379,https://10.0.0.2:2379",
                "--etcd-prefix",
                "/example.com/network/",
                "--etcd-cafile=/etc/ca.pem",
                "--etcd-certfile=/etc/cert.pem",
                "--etcd-keyfile=/etc/key.pem",
                "--iface=eth1",
                "--iface",
                "192.0.2.7",
                "--iface-regex=^en",
                "--public-ip=198.51.100.3",
                "--ip-masq",
                "--subnet-file=/tmp/subnet.env",
                "--healthz-ip=127.0.0.1",
                "--healthz-port=8471",
                "--subnet-lease-renew-margin=30",
                "--subnet-lease-ttl=10m",
            ]),
            env(&[]),
            None,
        )
        .unwrap();
        assert_eq!(
            config.etcd_endpoints,
            vec!["http://10.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        assert_eq!(config.etcd_prefix, "/example.com/network");
        assert_eq!(
            config.iface,
            vec![
                InterfaceSelector::Name("eth1".into()),
                InterfaceSelector::Address("192.0.2.7".parse().unwrap())
            ]
        );
        assert_eq!(config.iface_regex, vec!["^en"]);
        assert_eq!(config.public_ip, Some("198.51.100.3".parse().unwrap()));
        assert!(config.ip_masq);
        assert_eq!(config.subnet_file, PathBuf::from("/tmp/subnet.env"));
        assert_eq!(
            config.healthz_addr(),
            Some("127.0.0.1:8471".parse().unwrap())
        );
        assert_eq!(config.subnet_lease_renew_margin, Duration::from_secs(1800));
        assert_eq!(config.subnet_lease_ttl, Duration::from_secs(600));
        let etcd = config.etcd();
        assert_eq!(etcd.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(etcd.cert_file, Some(PathBuf::from("/etc/cert.pem")));
        assert_eq!(etcd.key_file, Some(PathBuf::from("/etc/key.pem")));
        assert_eq!(etcd.endpoints.len(), 2);
    }

    #[test]
    fn ip_masq_takes_go_booleans_only_after_an_equals_sign() {
        let masq = |argv: &[&str]| {
            FlannelConfig::resolve(args(argv), env(&[]), None)
                .unwrap()
                .ip_masq
        };
        assert!(masq(&["--ip-masq"]));
        assert!(masq(&["--ip-masq=T"]));
        assert!(!masq(&["--ip-masq=false"]));
        assert!(!masq(&["--ip-masq=0"]));
        // As with Go's flags, a bare word after a boolean flag is not its value.
        assert!(FlannelArgs::try_parse_from(["flanneld", "--ip-masq", "false"]).is_err());
    }

    #[test]
    fn flags_beat_the_environment_which_beats_options_env() {
        let file = options_file(
            "# written by keel-provision\n\
             FLANNELD_ETCD_ENDPOINTS=http://file:2379\n\
             FLANNELD_ETCD_PREFIX=/file/network\n\
             FLANNELD_IFACE=eth9\n\
             FLANNELD_IP_MASQ=true\n\
             FLANNELD_PUBLIC_IP=\"192.0.2.1\"\n",
        );
        let config = FlannelConfig::resolve(
            args(&["--etcd-endpoints=http://flag:2379"]),
            env(&[
                ("FLANNELD_ETCD_ENDPOINTS", "http://env:2379"),
                ("FLANNELD_ETCD_PREFIX", "/env/network"),
                ("FLANNELD_PUBLIC_IP", ""),
                ("PATH", "/usr/bin"),
            ]),
            Some(file.path()),
        )
        .unwrap();
        assert_eq!(config.etcd_endpoints, vec!["http://flag:2379"]);
        assert_eq!(config.etcd_prefix, "/env/network");
        assert_eq!(config.iface, vec![InterfaceSelector::Name("eth9".into())]);
        assert!(config.ip_masq);
        // An empty variable is unset, so the file's value stands.
        assert_eq!(config.public_ip, Some("192.0.2.1".parse().unwrap()));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);

        // Repeated --iface flags replace the variable's list as a whole.
        let config = FlannelConfig::resolve(
            args(&["--iface=eth1", "--iface=eth2"]),
            env(&[("FLANNELD_IFACE", "eth3")]),
            Some(file.path()),
        )
        .unwrap();
        assert_eq!(
            config.iface,
            vec![
                InterfaceSelector::Name("eth1".into()),
                InterfaceSelector::Name("eth2".into())
            ]
        );
        // A list in one variable is read as one.
        let config = FlannelConfig::resolve(
            FlannelArgs::default(),
            env(&[("FLANNELD_IFACE", "eth3, 10.0.0.4")]),
            None,
        )
        .unwrap();
        assert_eq!(
            config.iface,
            vec![
                InterfaceSelector::Name("eth3".into()),
                InterfaceSelector::Address("10.0.0.4".parse().unwrap())
            ]
        );
    }

    #[test]
    fn the_provisioners_names_are_understood() {
        // What keel-provision writes for coreos.flannel's etcd_endpoints, interface,
        // ip_masq, subnet_file, public_ip, etcd_prefix and the TLS files.
        let file = options_file(
            "FLANNELD_ETCD_ENDPOINTS=http://10.0.0.1:2379,http://10.0.0.2:2379\n\
             FLANNELD_IFACE=10.0.0.9\n\
             FLANNELD_IP_MASQ=true\n\
             FLANNELD_SUBNET_FILE=/run/flannel/other.env\n\
             FLANNELD_PUBLIC_IP=10.0.0.9\n\
             FLANNELD_ETCD_PREFIX=/coreos.com/network2\n\
             FLANNELD_ETCD_CAFILE=/etc/ssl/etcd/ca.pem\n\
             FLANNELD_ETCD_CERTFILE=/etc/ssl/etcd/client.pem\n\
             FLANNELD_ETCD_KEYFILE=/etc/ssl/etcd/client-key.pem\n\
             FLANNELD_ETCD_USERNAME=someone\n\
             FLANNEL_KUBE_SUBNET_MGR=false\n",
        );
        let config =
            FlannelConfig::resolve(FlannelArgs::default(), env(&[]), Some(file.path())).unwrap();
        assert_eq!(config.etcd_endpoints.len(), 2);
        assert_eq!(
            config.iface,
            vec![InterfaceSelector::Address("10.0.0.9".parse().unwrap())]
        );
        assert!(config.ip_masq);
        assert_eq!(config.subnet_file, PathBuf::from("/run/flannel/other.env"));
        assert_eq!(config.etcd_prefix, "/coreos.com/network2");
        assert_eq!(
            config.etcd_keyfile,
            Some(PathBuf::from("/etc/ssl/etcd/client-key.pem"))
        );
        assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
        assert!(config.warnings[0].contains(":10: FLANNELD_ETCD_USERNAME"));
        assert!(config.warnings[0].contains("not supported"));
        assert!(config.warnings[1].contains("FLANNEL_KUBE_SUBNET_MGR"));
    }

    #[test]
    fn bad_values_name_their_origin_and_key() {
        let message = |argv: &[&str], vars: &[(&str, &str)], file: Option<&Path>| {
            FlannelConfig::resolve(args(argv), env(vars), file)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(&["--healthz-port=http"], &[], None),
            "flag --healthz-port: \"http\" is not a port number (0 to 65535; 0 disables)"
        );
        assert_eq!(
            message(&[], &[("FLANNELD_IP_MASQ", "yes please")], None),
            "environment variable FLANNELD_IP_MASQ: \"yes please\" is not a boolean (true or false)"
        );
        let file = options_file("\nFLANNELD_PUBLIC_IP=fe80::1\n");
        let text = message(&[], &[], Some(file.path()));
        assert!(
            text.starts_with(&format!(
                "{}:2: FLANNELD_PUBLIC_IP: ",
                file.path().display()
            )),
            "{text}"
        );
        assert!(text.contains("IPv6"), "{text}");
        let margin = message(&["--subnet-lease-renew-margin=1440"], &[], None);
        assert!(margin.contains("1 to 1439 minutes"), "{margin}");
        assert!(!margin.contains("leases last 24 hours"), "{margin}");
        assert!(message(&["--subnet-lease-renew-margin=0"], &[], None).contains("out of range"));
        assert!(
            message(&[], &[("FLANNELD_ETCD_ENDPOINTS", "htp://x:2379")], None)
                .contains("FLANNELD_ETCD_ENDPOINTS: \"htp://x:2379\" is not an etcd endpoint URL")
        );
        assert!(message(&["--etcd-endpoints=,"], &[], None).contains("no etcd endpoints"));
        assert!(message(&["--etcd-prefix="], &[], None).contains("cannot be empty"));
        assert!(message(&["--iface=a/b"], &[], None).contains("flag --iface: \"a/b\""));
        assert!(message(&["--iface=averyveryverylongname"], &[], None).contains("interface name"));
        assert!(message(&["--iface-regex=(eth"], &[], None).contains("regular expression"));
        assert!(message(&["--healthz-ip=localhost"], &[], None).contains("not an IP address"));
        assert!(message(&["--public-ip=0.0.0.0"], &[], None).contains("0.0.0.0"));

        let file = options_file("FLANNELD_IFACE eth0\n");
        let err = FlannelConfig::resolve(FlannelArgs::default(), env(&[]), Some(file.path()))
            .unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { line: 1, .. }), "{err}");
    }

    #[test]
    fn the_subnet_lease_ttl_comes_from_flag_environment_or_options_env() {
        let ttl = |argv: &[&str], vars: &[(&str, &str)], file: Option<&Path>| {
            FlannelConfig::resolve(args(argv), env(vars), file)
                .unwrap()
                .subnet_lease_ttl
        };
        let file = options_file("FLANNELD_SUBNET_LEASE_TTL=\"2h\"\n");
        assert_eq!(ttl(&[], &[], Some(file.path())), Duration::from_secs(7200));
        assert_eq!(
            ttl(
                &[],
                &[("FLANNELD_SUBNET_LEASE_TTL", "10m")],
                Some(file.path())
            ),
            Duration::from_secs(600)
        );
        assert_eq!(
            ttl(
                &["--subnet-lease-ttl", "30s"],
                &[("FLANNELD_SUBNET_LEASE_TTL", "10m")],
                Some(file.path())
            ),
            Duration::from_secs(30)
        );
        // The bounds, and Go's single-dash spelling.
        assert_eq!(
            ttl(&["--subnet-lease-ttl=5s"], &[], None),
            Duration::from_secs(5)
        );
        assert_eq!(
            ttl(&["--subnet-lease-ttl=24h"], &[], None),
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(
            ttl(&["--subnet-lease-ttl=1440m"], &[], None),
            Duration::from_secs(24 * 3600)
        );
        let parsed = FlannelArgs::try_parse_from(FlannelArgs::normalize_go_flags(
            ["flanneld", "-subnet-lease-ttl=45s"].map(OsString::from),
        ))
        .unwrap();
        assert_eq!(parsed.subnet_lease_ttl.as_deref(), Some("45s"));

        // A TTL shorter than the renew margin is fine: renewal then comes at half the TTL.
        let config = FlannelConfig::resolve(
            args(&["--subnet-lease-ttl=30s", "--subnet-lease-renew-margin=60"]),
            env(&[]),
            None,
        )
        .unwrap();
        assert_eq!(config.subnet_lease_ttl, Duration::from_secs(30));
        assert_eq!(config.subnet_lease_renew_margin, Duration::from_secs(3600));
        let config =
            FlannelConfig::resolve(args(&["--subnet-lease-ttl=30s"]), env(&[]), None).unwrap();
        assert_eq!(config.subnet_lease_renew_margin, Duration::from_secs(3600));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn bad_subnet_lease_ttls_say_what_is_wrong_and_where() {
        let message = |argv: &[&str], vars: &[(&str, &str)], file: Option<&Path>| {
            FlannelConfig::resolve(args(argv), env(vars), file)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(&["--subnet-lease-ttl=30"], &[], None),
            "flag --subnet-lease-ttl: \"30\" needs a unit: seconds, minutes or hours, such as 30s, 30m or 30h"
        );
        assert_eq!(
            message(&["--subnet-lease-ttl=2s"], &[], None),
            "flag --subnet-lease-ttl: 2s is out of range: the lease TTL must be 5s to 24h"
        );
        assert_eq!(
            message(&[], &[("FLANNELD_SUBNET_LEASE_TTL", "25h")], None),
            "environment variable FLANNELD_SUBNET_LEASE_TTL: 25h is out of range: the lease TTL must be 5s to 24h"
        );
        let file = options_file("FLANNELD_IFACE=eth0\nFLANNELD_SUBNET_LEASE_TTL=abc\n");
        assert_eq!(
            message(&[], &[], Some(file.path())),
            format!(
                "{}:2: FLANNELD_SUBNET_LEASE_TTL: \"abc\" is not a duration (a whole number with a unit s, m or h, such as 30s, 10m or 24h)",
                file.path().display()
            )
        );
        for bad in [
            "0s",
            "1441m",
            "99999999999999999999h",
            "18446744073709551615h",
        ] {
            assert!(
                message(&[&format!("--subnet-lease-ttl={bad}")], &[], None)
                    .contains("out of range"),
                "{bad}"
            );
        }
        for bad in ["s", "1.5h", "10 m", "1d", "-5s", "5S", "1h30m", "5ms"] {
            assert!(
                message(&[&format!("--subnet-lease-ttl={bad}")], &[], None)
                    .contains("is not a duration"),
                "{bad}"
            );
        }
        let err =
            FlannelConfig::resolve(args(&["--subnet-lease-ttl=1s"]), env(&[]), None).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    option: "subnet-lease-ttl",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_missing_options_env_is_no_error_and_unknown_variables_are_warned_about() {
        let config = FlannelConfig::resolve(
            FlannelArgs::default(),
            env(&[("FLANNELD_IFACES", "eth0"), ("FLANNELD_V", "2")]),
            Some(Path::new("/nonexistent/options.env")),
        )
        .unwrap();
        assert_eq!(config.warnings.len(), 2);
        assert!(config.warnings[0].contains("FLANNELD_IFACES: unknown flanneld option"));
        assert!(config.warnings[1].contains("--v is not supported"));
    }

    #[test]
    fn go_style_single_dash_flags_are_accepted() {
        let argv = FlannelArgs::normalize_go_flags(
            [
                "flanneld",
                "-etcd-prefix=/x",
                "-iface",
                "eth0",
                "--ip-masq",
                "-z",
                "-",
            ]
            .map(OsString::from),
        );
        assert_eq!(
            argv,
            [
                "flanneld",
                "--etcd-prefix=/x",
                "--iface",
                "eth0",
                "--ip-masq",
                "-z",
                "-"
            ]
            .map(OsString::from)
        );
        let parsed = FlannelArgs::try_parse_from(FlannelArgs::normalize_go_flags(
            ["flanneld", "-etcd-prefix=/x", "-ip-masq"].map(OsString::from),
        ))
        .unwrap();
        assert_eq!(parsed.etcd_prefix.as_deref(), Some("/x"));
        assert_eq!(parsed.ip_masq.as_deref(), Some("true"));
    }

    #[test]
    fn variable_names_follow_flanneds_rule() {
        assert_eq!(
            variable_of_option("etcd-endpoints"),
            "FLANNELD_ETCD_ENDPOINTS"
        );
        assert_eq!(
            variable_of_option("subnet-lease-renew-margin"),
            "FLANNELD_SUBNET_LEASE_RENEW_MARGIN"
        );
        assert_eq!(
            variable_of_option("subnet-lease-ttl"),
            "FLANNELD_SUBNET_LEASE_TTL"
        );
        for option in OPTIONS {
            assert_eq!(
                option_of_variable(&variable_of_option(option)).as_deref(),
                Some(*option)
            );
        }
    }
}
