//! The v2 command line, as etcd's v2 etcdctl (urfave/cli, Go's flag syntax) takes it: global
//! flags before the command, the command's flags before or after its arguments (`set KEY VALUE
//! --ttl 60`), `-flag` and `--flag`, `--flag value` and `--flag=value`, and `--` before the
//! command `exec-watch` runs.

use std::time::Duration;

/// Where a command line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A v2 command, served here on the v3 store.
    V2(Box<Invocation>),
    /// Everything else: Debian's etcdctl, with the same arguments.
    V3,
}

/// Output formats of v2 etcdctl's `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Simple,
    Extended,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalOptions {
    pub endpoints: Vec<String>,
    pub output: Output,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// `--username user[:password]`; v3 authentication is not wired up yet, so a value is
    /// refused rather than ignored.
    pub username: Option<String>,
    /// Connection timeout (`--timeout`).
    pub timeout: Duration,
    /// Timeout of each request (`--total-timeout`). Longer than upstream's 5 s by default:
    /// an etcd write on emulated machines that share two cores can take that long.
    pub total_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub global: GlobalOptions,
    pub command: V2Command,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Command {
    Set {
        key: String,
        value: String,
        ttl: Option<i64>,
        swap_with_value: Option<String>,
        swap_with_index: Option<i64>,
    },
    Mk {
        key: String,
        value: String,
        ttl: Option<i64>,
    },
    /// `mkdir` and `setdir`: v3 has no directories; see [`crate::store`].
    Mkdir {
        key: String,
        /// `setdir` succeeds on an existing directory; `mkdir` does not.
        existing_ok: bool,
    },
    Update {
        key: String,
        value: String,
        ttl: Option<i64>,
    },
    Get {
        key: String,
    },
    Ls {
        key: String,
        recursive: bool,
        /// `-p`: a slash after each directory.
        slash_dirs: bool,
    },
    Rm {
        key: String,
        dir: bool,
        recursive: bool,
        with_value: Option<String>,
        with_index: Option<i64>,
    },
    Rmdir {
        key: String,
    },
    Watch {
        key: String,
        recursive: bool,
        forever: bool,
        after_index: Option<i64>,
    },
    ExecWatch {
        key: String,
        recursive: bool,
        after_index: Option<i64>,
        command: Vec<String>,
    },
}

/// Commands only the v2 command line has.
const V2_ONLY: &[&str] = &[
    "set",
    "mk",
    "mkdir",
    "setdir",
    "update",
    "updatedir",
    "rm",
    "rmdir",
    "ls",
    "exec-watch",
];

/// Flags of v3 etcdctl's `get` and `watch` (and its global `-w`) that v2 etcdctl does not
/// have: with one of them, `get` and `watch` are the v3 commands.
const V3_GET_WATCH_FLAGS: &[&str] = &[
    "prefix",
    "from-key",
    "keys-only",
    "print-value-only",
    "rev",
    "limit",
    "sort-by",
    "order",
    "consistency",
    "interactive",
    "i",
    "prev-kv",
    "progress-notify",
    "count-only",
    "w",
    "write-out",
    "hex",
];

/// Global flags of both command lines that take a value, for finding the command word.
const VALUE_GLOBALS: &[&str] = &[
    "endpoints",
    "endpoint",
    "peers",
    "C",
    "output",
    "o",
    "discovery-srv",
    "D",
    "cert-file",
    "key-file",
    "ca-file",
    "username",
    "u",
    "password",
    "timeout",
    "total-timeout",
    "dial-timeout",
    "command-timeout",
    "keepalive-time",
    "keepalive-timeout",
    "write-out",
    "w",
    "user",
    "cacert",
    "cert",
    "key",
    "discovery-srv-name",
];

fn flag_name(token: &str) -> Option<&str> {
    if token == "-" || token == "--" || !token.starts_with('-') {
        return None;
    }
    let name = token.trim_start_matches('-');
    Some(name.split_once('=').map_or(name, |(n, _)| n))
}

/// Decides who serves a command line (`args` without the program name). `ETCDCTL_API=3`
/// always means Debian's etcdctl and `ETCDCTL_API=2` always this one; unset, the v2-only
/// commands are served here, and so are `get` and `watch` unless a v3 flag marks them as the
/// v3 commands — Container Linux's etcdctl spoke v2 unless told otherwise.
pub fn route(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Route, String> {
    let api = env("ETCDCTL_API").filter(|v| !v.is_empty());
    match api.as_deref() {
        Some("3") => return Ok(Route::V3),
        Some("2") => return parse(args, env).map(|inv| Route::V2(Box::new(inv))),
        _ => {}
    }
    let mut i = 0;
    while i < args.len() {
        let token = &args[i];
        match flag_name(token) {
            Some(name) => {
                if !token.contains('=') && VALUE_GLOBALS.contains(&name) {
                    i += 1;
                }
            }
            None => break,
        }
        i += 1;
    }
    let Some(command) = args.get(i) else {
        return Ok(Route::V3);
    };
    let rest = &args[i + 1..];
    let v2 = if V2_ONLY.contains(&command.as_str()) {
        true
    } else if command == "get" || command == "watch" {
        let v3_flag = args
            .iter()
            .filter_map(|a| flag_name(a))
            .any(|n| V3_GET_WATCH_FLAGS.contains(&n));
        let positionals = rest.iter().filter(|a| flag_name(a).is_none()).count();
        // `get FROM TO` is a v3 range.
        !v3_flag && (command != "get" || positionals <= 1)
    } else {
        false
    };
    if v2 {
        parse(args, env).map(|inv| Route::V2(Box::new(inv)))
    } else {
        Ok(Route::V3)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Value,
}

/// A command's flags: (names, kind).
fn command_flags(command: &str) -> Option<&'static [(&'static [&'static str], Kind)]> {
    use Kind::*;
    Some(match command {
        "set" => &[
            (&["ttl"], Value),
            (&["swap-with-value"], Value),
            (&["swap-with-index"], Value),
        ],
        "mk" => &[(&["ttl"], Value), (&["in-order"], Bool)],
        "mkdir" | "setdir" | "updatedir" => &[(&["ttl"], Value)],
        "update" => &[(&["ttl"], Value)],
        "get" => &[(&["sort"], Bool), (&["quorum", "q"], Bool)],
        "ls" => &[
            (&["sort"], Bool),
            (&["recursive", "r"], Bool),
            (&["p"], Bool),
            (&["quorum", "q"], Bool),
        ],
        "rm" => &[
            (&["dir"], Bool),
            (&["recursive", "r"], Bool),
            (&["with-value"], Value),
            (&["with-index"], Value),
        ],
        "rmdir" => &[],
        "watch" => &[
            (&["forever", "f"], Bool),
            (&["after-index"], Value),
            (&["recursive", "r"], Bool),
        ],
        "exec-watch" => &[(&["after-index"], Value), (&["recursive", "r"], Bool)],
        _ => return None,
    })
}

const GLOBAL_FLAGS: &[(&[&str], Kind)] = &[
    (&["debug"], Kind::Bool),
    (&["no-sync"], Kind::Bool),
    (&["insecure-discovery"], Kind::Bool),
    (&["insecure-skip-tls-verify"], Kind::Bool),
    (&["output", "o"], Kind::Value),
    (&["discovery-srv", "D"], Kind::Value),
    (&["peers", "C"], Kind::Value),
    (&["endpoint"], Kind::Value),
    (&["endpoints"], Kind::Value),
    (&["cert-file"], Kind::Value),
    (&["key-file"], Kind::Value),
    (&["ca-file"], Kind::Value),
    (&["username", "u"], Kind::Value),
    (&["password"], Kind::Value),
    (&["timeout"], Kind::Value),
    (&["total-timeout"], Kind::Value),
];

/// Flags seen, by their first name.
struct Flags(Vec<(&'static str, Option<String>)>);

impl Flags {
    fn value(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    fn set(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|(n, v)| *n == name && v.as_deref() != Some("false"))
    }
}

/// Reads flags from `tokens`: returns them and the positional arguments. Stops taking flags
/// at `--` (and, when `stop_at_positional`, at the first positional: the command word).
fn take_flags(
    tokens: &[String],
    table: &[(&'static [&'static str], Kind)],
    stop_at_positional: bool,
) -> Result<(Flags, Vec<String>, usize), String> {
    let mut flags = Vec::new();
    let mut positionals = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if token == "--" {
            positionals.extend(tokens[i + 1..].iter().cloned());
            return Ok((Flags(flags), positionals, tokens.len()));
        }
        match flag_name(token) {
            Some(name) => {
                let Some((names, kind)) = table.iter().find(|(names, _)| names.contains(&name))
                else {
                    return Err(format!("flag provided but not defined: -{name}"));
                };
                let inline = token.split_once('=').map(|(_, v)| v.to_string());
                let value = match (kind, inline) {
                    (_, Some(v)) => Some(v),
                    (Kind::Bool, None) => None,
                    (Kind::Value, None) => {
                        i += 1;
                        Some(
                            tokens
                                .get(i)
                                .cloned()
                                .ok_or_else(|| format!("flag needs an argument: -{name}"))?,
                        )
                    }
                };
                flags.push((names[0], value));
            }
            None if stop_at_positional => return Ok((Flags(flags), positionals, i)),
            None => positionals.push(token.clone()),
        }
        i += 1;
    }
    Ok((Flags(flags), positionals, i))
}

fn number(flags: &Flags, name: &str) -> Result<Option<i64>, String> {
    flags
        .value(name)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| format!("invalid value {v:?} for flag -{name}: parse error"))
        })
        .transpose()
}

/// Go duration syntax as etcdctl's `--timeout` takes it: `1s`, `500ms`, `2m`, `1m30s`.
fn duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}");
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let amount: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(amount * scale);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn need<'a>(positionals: &'a [String], index: usize, what: &str) -> Result<&'a str, String> {
    positionals
        .get(index)
        .map(String::as_str)
        .ok_or_else(|| format!("{what} required"))
}

/// Parses a v2 command line.
pub fn parse(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> Result<Invocation, String> {
    let (globals, _, used) = take_flags(args, GLOBAL_FLAGS, true)?;
    let Some(command) = args.get(used) else {
        return Err("no command given".into());
    };
    let table = command_flags(command).ok_or_else(|| {
        format!("{command}: not a v2 command of this etcdctl (with ETCDCTL_API=3 it is etcd's v3 etcdctl)")
    })?;
    let (flags, positionals, _) = take_flags(&args[used + 1..], table, false)?;

    let endpoints = globals
        .value("endpoints")
        .or(globals.value("endpoint"))
        .or(globals.value("peers"))
        .map(str::to_string)
        .or_else(|| env("ETCDCTL_ENDPOINTS"))
        .or_else(|| env("ETCDCTL_ENDPOINT"))
        .or_else(|| env("ETCDCTL_PEERS"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    let endpoints = endpoints
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect();
    let output = match globals.value("output").unwrap_or("simple") {
        "simple" => Output::Simple,
        "extended" => Output::Extended,
        "json" => Output::Json,
        other => return Err(format!("unknown output format {other:?}")),
    };
    let from_env = |flag: &str, var: &str| {
        globals
            .value(flag)
            .map(str::to_string)
            .or_else(|| env(var))
            .filter(|s| !s.is_empty())
    };
    let global = GlobalOptions {
        endpoints,
        output,
        ca_file: from_env("ca-file", "ETCDCTL_CA_FILE"),
        cert_file: from_env("cert-file", "ETCDCTL_CERT_FILE"),
        key_file: from_env("key-file", "ETCDCTL_KEY_FILE"),
        username: from_env("username", "ETCDCTL_USERNAME"),
        timeout: globals
            .value("timeout")
            .map(duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(5)),
        total_timeout: globals
            .value("total-timeout")
            .map(duration)
            .transpose()?
            .unwrap_or(Duration::from_secs(30)),
    };

    let key = |what: &str| need(&positionals, 0, what).map(str::to_string);
    let value = || need(&positionals, 1, "value").map(str::to_string);
    let ttl = number(&flags, "ttl")?;
    let command = match command.as_str() {
        "set" => V2Command::Set {
            key: key("key")?,
            value: value()?,
            ttl,
            swap_with_value: flags.value("swap-with-value").map(str::to_string),
            swap_with_index: number(&flags, "swap-with-index")?,
        },
        "mk" => V2Command::Mk {
            key: key("key")?,
            value: value()?,
            ttl,
        },
        "mkdir" | "setdir" | "updatedir" => V2Command::Mkdir {
            key: key("key")?,
            existing_ok: command != "mkdir",
        },
        "update" => V2Command::Update {
            key: key("key")?,
            value: value()?,
            ttl,
        },
        "get" => V2Command::Get { key: key("key")? },
        "ls" => V2Command::Ls {
            key: positionals.first().cloned().unwrap_or_else(|| "/".into()),
            recursive: flags.set("recursive"),
            slash_dirs: flags.set("p"),
        },
        "rm" => V2Command::Rm {
            key: key("key")?,
            dir: flags.set("dir"),
            recursive: flags.set("recursive"),
            with_value: flags.value("with-value").map(str::to_string),
            with_index: number(&flags, "with-index")?,
        },
        "rmdir" => V2Command::Rmdir { key: key("key")? },
        "watch" => V2Command::Watch {
            key: key("key")?,
            recursive: flags.set("recursive"),
            forever: flags.set("forever"),
            after_index: number(&flags, "after-index")?,
        },
        "exec-watch" => {
            let key = key("key")?;
            let command = positionals[1..].to_vec();
            if command.is_empty() {
                return Err("key and command to exec required".into());
            }
            V2Command::ExecWatch {
                key,
                recursive: flags.set("recursive"),
                after_index: number(&flags, "after-index")?,
                command,
            }
        }
        _ => unreachable!("command_flags knows only the commands above"),
    };
    Ok(Invocation { global, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }
    fn no_env(_: &str) -> Option<String> {
        None
    }
    fn v2(line: &str) -> Invocation {
        match route(&args(line), &no_env).unwrap() {
            Route::V2(inv) => *inv,
            Route::V3 => panic!("{line}: routed to v3"),
        }
    }

    #[test]
    fn the_sidekick_line_of_coreos_guides_parses_with_the_ttl_after_the_value() {
        let inv = v2("set /announce/services/apache1 host1:80 --ttl 60");
        assert_eq!(
            inv.command,
            V2Command::Set {
                key: "/announce/services/apache1".into(),
                value: "host1:80".into(),
                ttl: Some(60),
                swap_with_value: None,
                swap_with_index: None
            }
        );
        assert_eq!(inv.global.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(
            v2("set -ttl=5 /k v").command,
            v2("set /k v --ttl 5").command
        );
    }

    #[test]
    fn v3_commands_and_etcdctl_api_3_go_to_debians_etcdctl() {
        for line in [
            "put /k v",
            "member list",
            "endpoint health --cluster",
            "get /k --prefix",
            "get /a /b",
            "-w json get /k",
            "watch /k --prefix",
            "--endpoints http://10.0.0.1:2379 del /k",
            "--version",
            "",
        ] {
            assert_eq!(route(&args(line), &no_env).unwrap(), Route::V3, "{line}");
        }
        let api3 = |name: &str| (name == "ETCDCTL_API").then(|| "3".to_string());
        assert_eq!(route(&args("set /k v"), &api3).unwrap(), Route::V3);
    }

    #[test]
    fn v2_commands_take_endpoints_from_flags_and_the_environment() {
        let inv = v2("--peers 10.0.0.1:2379,http://10.0.0.2:2379 get /k");
        assert_eq!(
            inv.global.endpoints,
            vec!["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        let env = |name: &str| (name == "ETCDCTL_ENDPOINT").then(|| "http://e:2379".to_string());
        let Route::V2(inv) = route(&args("ls / --recursive -p"), &env).unwrap() else {
            panic!()
        };
        assert_eq!(inv.global.endpoints, vec!["http://e:2379"]);
        assert_eq!(
            inv.command,
            V2Command::Ls {
                key: "/".into(),
                recursive: true,
                slash_dirs: true
            }
        );
    }

    #[test]
    fn exec_watch_takes_the_command_after_the_double_dash() {
        let inv = v2("exec-watch --recursive /services/web -- sh -c reload");
        assert_eq!(
            inv.command,
            V2Command::ExecWatch {
                key: "/services/web".into(),
                recursive: true,
                after_index: None,
                command: args("sh -c reload"),
            }
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert_eq!(
            route(&args("set /k"), &no_env).unwrap_err(),
            "value required"
        );
        assert!(route(&args("set /k v --tll 5"), &no_env)
            .unwrap_err()
            .contains("flag provided but not defined: -tll"));
        assert!(route(&args("set /k v --ttl soon"), &no_env)
            .unwrap_err()
            .contains("-ttl"));
        assert!(route(&args("--timeout 3x ls"), &no_env)
            .unwrap_err()
            .contains("invalid duration"));
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(duration("5").is_err());
    }
}
