//! How fleetctl reaches machines: the OpenSSH client (`ssh`), with fleetctl's user, port,
//! timeout, host key policy and tunnel turned into `ssh` options. fleet linked an SSH library;
//! Keel runs the `ssh` command, so agents, config files and keys work as they do for `ssh`.

use std::path::PathBuf;

/// The SSH settings of one fleetctl run.
#[derive(Debug, Clone, PartialEq)]
pub struct SshOptions {
    pub user: String,
    pub port: u16,
    /// `--tunnel host[:port]`: jump through this host first.
    pub tunnel: Option<String>,
    /// fleet's `--strict-host-key-checking`: when on, unknown hosts are asked about and
    /// remembered in `known_hosts_file`; when off, nothing is checked or stored.
    pub strict_host_key_checking: bool,
    pub known_hosts_file: PathBuf,
    /// Seconds allowed to set up the connection (`--ssh-timeout`).
    pub connect_timeout: f64,
    pub forward_agent: bool,
}

impl SshOptions {
    fn common(&self) -> Vec<String> {
        let mut argv = vec!["ssh".to_string()];
        let mut opt = |o: String| {
            argv.push("-o".into());
            argv.push(o);
        };
        if self.strict_host_key_checking {
            opt("StrictHostKeyChecking=ask".into());
            opt(format!(
                "UserKnownHostsFile={}",
                self.known_hosts_file.display()
            ));
        } else {
            opt("StrictHostKeyChecking=no".into());
            opt("UserKnownHostsFile=/dev/null".into());
            opt("LogLevel=ERROR".into());
        }
        let timeout = self.connect_timeout.ceil().max(1.0) as u64;
        opt(format!("ConnectTimeout={timeout}"));
        argv
    }

    /// `ssh` arguments that run `command` (or, when empty, a login shell) on `host`.
    /// `tty` asks for a terminal (shells and `journal -f`).
    pub fn command_argv(&self, host: &str, tty: bool, command: &[String]) -> Vec<String> {
        let mut argv = self.common();
        argv.extend(["-p".to_string(), self.port.to_string()]);
        if self.forward_agent {
            argv.push("-A".into());
        }
        if tty {
            argv.push("-t".into());
        }
        if let Some(tunnel) = &self.tunnel {
            argv.extend([
                "-J".to_string(),
                format!("{}@{}", self.user, tunnel_host(tunnel)),
            ]);
        }
        argv.push(format!("{}@{}", self.user, host));
        if !command.is_empty() {
            argv.push("--".into());
            argv.extend(command.iter().cloned());
        }
        argv
    }

    /// The command that carries fleetctl's API connection through `--tunnel`: to a Unix socket
    /// via `fleetctl fd-forward` on the tunnel host (as fleet did), to a TCP endpoint via
    /// `ssh -W`.
    pub fn tunnel_argv(
        &self,
        tunnel: &str,
        unix_socket: Option<&str>,
        tcp: Option<&str>,
    ) -> Vec<String> {
        let (host, port) = split_host_port(tunnel);
        let mut argv = self.common();
        argv.extend(["-p".to_string(), port.to_string(), "-T".to_string()]);
        if let Some(tcp) = tcp {
            argv.extend(["-W".to_string(), tcp.to_string()]);
        }
        argv.push(format!("{}@{}", self.user, host));
        if let Some(socket) = unix_socket {
            argv.extend([
                "--".to_string(),
                "fleetctl".to_string(),
                "fd-forward".to_string(),
                shell_quote(socket),
            ]);
        }
        argv
    }
}

/// `host:port` for `-J` (fleet's default port 22 when none is given).
fn tunnel_host(tunnel: &str) -> String {
    let (host, port) = split_host_port(tunnel);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// fleet's `--tunnel` parsing: `host`, `host:port`, `[v6]:port`; the port defaults to 22.
pub fn split_host_port(address: &str) -> (String, u16) {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(22);
            return (host.to_string(), port);
        }
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host.to_string(), p),
            Err(_) => (address.to_string(), 22),
        },
        _ => (address.to_string(), 22),
    }
}

/// Quotes one word for the remote shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// fleetctl's known hosts file, `~/.fleetctl/known_hosts`.
pub fn default_known_hosts_file() -> String {
    "~/.fleetctl/known_hosts".to_string()
}

/// Expands a leading `~/` with `$HOME`.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(strict: bool) -> SshOptions {
        SshOptions {
            user: "core".into(),
            port: 22,
            tunnel: None,
            strict_host_key_checking: strict,
            known_hosts_file: "/home/u/.fleetctl/known_hosts".into(),
            connect_timeout: 10.0,
            forward_agent: false,
        }
    }

    #[test]
    fn command_lines() {
        let argv = options(false).command_argv(
            "172.17.8.103",
            false,
            &[
                "systemctl".into(),
                "status".into(),
                "-l".into(),
                "hello.service".into(),
            ],
        );
        assert_eq!(
            argv.join(" "),
            "ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
             -o ConnectTimeout=10 -p 22 core@172.17.8.103 -- systemctl status -l hello.service"
        );
        let mut o = options(true);
        o.port = 2222;
        o.forward_agent = true;
        o.tunnel = Some("10.0.0.1".into());
        o.user = "elroy".into();
        o.connect_timeout = 2.5;
        let argv = o.command_argv("10.0.0.9", true, &[]);
        assert_eq!(
            argv.join(" "),
            "ssh -o StrictHostKeyChecking=ask -o UserKnownHostsFile=/home/u/.fleetctl/known_hosts \
             -o ConnectTimeout=3 -p 2222 -A -t -J elroy@10.0.0.1:22 elroy@10.0.0.9"
        );
    }

    #[test]
    fn tunnels() {
        let o = options(false);
        let argv = o.tunnel_argv("192.0.2.14:2222", Some("/var/run/fleet.sock"), None);
        assert!(argv
            .join(" ")
            .ends_with("-p 2222 -T core@192.0.2.14 -- fleetctl fd-forward /var/run/fleet.sock"));
        let argv = o.tunnel_argv("192.0.2.14", None, Some("127.0.0.1:49153"));
        assert!(argv
            .join(" ")
            .ends_with("-p 22 -T -W 127.0.0.1:49153 core@192.0.2.14"));
        assert_eq!(split_host_port("[::1]:2200"), ("::1".into(), 2200));
        assert_eq!(split_host_port("::1"), ("::1".into(), 22));
        assert_eq!(split_host_port("host"), ("host".into(), 22));
        assert_eq!(tunnel_host("::1"), "[::1]:22");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("hello@1.service"), "hello@1.service");
        assert_eq!(shell_quote("a\\x2db.service"), "'a\\x2db.service'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
