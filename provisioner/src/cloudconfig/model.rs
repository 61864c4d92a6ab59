//! The typed cloud-config: what the parser produces from user-data and what `apply` consumes.
//! Key names follow coreos-cloudinit (keys may be written with '-' or '_'); the few keys from
//! cloud-init that Container Linux users ask for (runcmd, bootcmd, write_files `append`) are
//! here too. Every item keeps the line it came from, so apply-time errors can name it.

use std::collections::BTreeMap;

/// A whole cloud-config document.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudConfig {
    pub ssh_authorized_keys: Vec<String>,
    pub hostname: Option<Located<String>>,
    pub users: Vec<User>,
    pub write_files: Vec<WriteFile>,
    /// coreos-cloudinit accepts only "localhost".
    pub manage_etc_hosts: Option<Located<String>>,
    /// cloud-init's runcmd and bootcmd: each a shell string or an argv list.
    pub runcmd: Vec<Located<Command>>,
    pub bootcmd: Vec<Located<Command>>,
    pub coreos: Coreos,
}

/// A value and the 1-based line of the user-data it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub line: usize,
    pub name: String,
    /// A crypt(3) hash; the password stays locked when absent.
    pub passwd: Option<String>,
    pub groups: Vec<String>,
    pub primary_group: Option<String>,
    pub gecos: Option<String>,
    pub homedir: Option<String>,
    pub no_create_home: bool,
    pub no_user_group: bool,
    pub system: bool,
    pub no_log_init: bool,
    pub shell: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// b64, base64
    Base64,
    /// gz, gzip
    Gzip,
    /// gz+b64, gz+base64, gzip+b64, gzip+base64
    GzipBase64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    pub line: usize,
    pub path: String,
    /// As written in the document; decoded by `WriteFile::decoded_content`.
    pub content: String,
    pub encoding: Option<Encoding>,
    /// Octal mode; coreos-cloudinit's default is 0644.
    pub permissions: Option<u32>,
    /// "user", "user:group", numeric ids allowed; default root:root.
    pub owner: Option<String>,
    /// cloud-init's append: add to the end of an existing file.
    pub append: bool,
}

/// `coreos:` — every section coreos-cloudinit knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Coreos {
    /// etcd (v1), etcd2, fleet, locksmith, flannel: key/value options in document order. Keys
    /// are normalised to '_' ("advertise_client_urls"); values are strings as YAML gave them
    /// (numbers and booleans in their YAML text). They become environment variables:
    /// ETCD_*, ETCD_* (etcd2), FLEET_*, LOCKSMITHD_*, FLANNELD_*.
    pub etcd: Vec<EnvOption>,
    pub etcd2: Vec<EnvOption>,
    pub fleet: Vec<EnvOption>,
    pub flannel: Vec<EnvOption>,
    pub locksmith: Vec<EnvOption>,
    pub update: Option<Update>,
    pub oem: Option<Oem>,
    pub units: Vec<Unit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvOption {
    pub line: usize,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub line: usize,
    /// "etcd-lock", "reboot", "off" (and "best-effort", deprecated).
    pub reboot_strategy: Option<String>,
    pub group: Option<String>,
    pub server: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Oem {
    pub line: usize,
    /// key → value: id, name, version_id, home_url, bug_report_url.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitCommand {
    Start,
    Stop,
    Restart,
    Reload,
    TryRestart,
    ReloadOrRestart,
    ReloadOrTryRestart,
}

impl UnitCommand {
    pub fn parse(text: &str) -> Option<UnitCommand> {
        Some(match text {
            "start" => UnitCommand::Start,
            "stop" => UnitCommand::Stop,
            "restart" => UnitCommand::Restart,
            "reload" => UnitCommand::Reload,
            "try-restart" => UnitCommand::TryRestart,
            "reload-or-restart" => UnitCommand::ReloadOrRestart,
            "reload-or-try-restart" => UnitCommand::ReloadOrTryRestart,
            _ => return None,
        })
    }

    /// The word as cloud-config and `systemctl` spell it.
    pub fn word(self) -> &'static str {
        match self {
            UnitCommand::Start => "start",
            UnitCommand::Stop => "stop",
            UnitCommand::Restart => "restart",
            UnitCommand::Reload => "reload",
            UnitCommand::TryRestart => "try-restart",
            UnitCommand::ReloadOrRestart => "reload-or-restart",
            UnitCommand::ReloadOrTryRestart => "reload-or-try-restart",
        }
    }

    /// The systemd D-Bus Manager method that carries it out.
    pub fn dbus_method(self) -> &'static str {
        match self {
            UnitCommand::Start => "StartUnit",
            UnitCommand::Stop => "StopUnit",
            UnitCommand::Restart => "RestartUnit",
            UnitCommand::Reload => "ReloadUnit",
            UnitCommand::TryRestart => "TryRestartUnit",
            UnitCommand::ReloadOrRestart => "ReloadOrRestartUnit",
            UnitCommand::ReloadOrTryRestart => "ReloadOrTryRestartUnit",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    pub line: usize,
    pub name: String,
    /// Written under /run/systemd/system instead of /etc/systemd/system.
    pub runtime: bool,
    pub enable: bool,
    pub mask: bool,
    pub content: Option<String>,
    pub command: Option<UnitCommand>,
    pub drop_ins: Vec<DropIn>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropIn {
    pub line: usize,
    pub name: String,
    pub content: String,
}

/// What a user-data blob turned out to be.
// One value per boot: the size of the cloud-config variant costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum UserData {
    CloudConfig(CloudConfig),
    /// A `#!` script, run once as a transient unit.
    Script(Vec<u8>),
    /// Multipart MIME: the parts, in order.
    Multipart(Vec<UserData>),
    /// Nothing to do (empty user-data).
    Empty,
}

/// What a datasource knows about the machine besides the user-data; fills `$private_ipv4`
/// and friends and the metadata's SSH keys and hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub hostname: Option<String>,
    pub instance_id: Option<String>,
    pub private_ipv4: Option<std::net::Ipv4Addr>,
    pub public_ipv4: Option<std::net::Ipv4Addr>,
    pub private_ipv6: Option<std::net::Ipv6Addr>,
    pub public_ipv6: Option<std::net::Ipv6Addr>,
    pub ssh_public_keys: Vec<String>,
    /// Static addressing for links the datasource's network has no DHCP for (OpenStack's
    /// network_data.json), one entry per MAC address; written as systemd-networkd files.
    pub interfaces: Vec<StaticInterface>,
}

/// One link's static configuration, matched by MAC address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaticInterface {
    /// Lower-case, colon-separated: "fa:16:3e:00:00:01".
    pub mac: String,
    pub addresses: Vec<IpPrefix>,
    /// Default gateways: at most one per address family in practice (an IPv4 and an IPv6 one
    /// on a dual-stack link), each its own `Gateway=` line.
    pub gateways: Vec<std::net::IpAddr>,
    pub dns: Vec<std::net::IpAddr>,
}

/// An address and the length of its network prefix, written as systemd-networkd's `Address=`
/// takes it: "10.77.0.11/24", "2001:db8::5/64".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
}

impl std::fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}
