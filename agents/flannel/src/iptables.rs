//! flanneld's iptables rules, laid out as upstream flanneld (v0.20) lays them, so that tools and
//! people who know upstream's rules find the same ones:
//!
//! - `--ip-masq`: a jump from nat `POSTROUTING` into the `FLANNEL-POSTRTG` chain, which
//!   masquerades traffic leaving the flannel network (and traffic from outside to another
//!   machine's subnet), all marked with the comment `flanneld masq`;
//! - `--iptables-forward-rules` (on by default): a jump from filter `FORWARD` into `FLANNEL-FWD`,
//!   which accepts everything from and to the network (`flanneld forward`), so forwarded
//!   container traffic passes a FORWARD policy of DROP, which dockerd sets when it starts.
//!
//! Rules are added through the `iptables` command (Debian's iptables, nft backend): flannel
//! never owned a netlink nftables client and neither do we. [`ensure`] runs at start and every
//! `--iptables-resync` seconds: when any rule of a set is missing (someone flushed a chain), the
//! whole set is taken down and put back in order, as upstream does.

use std::process::Command;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("iptables not found: install the Debian package iptables")]
    NoIptables,
    #[error("iptables {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

/// The chain `--ip-masq`'s rules live in (nat table).
pub const MASQ_CHAIN: &str = "FLANNEL-POSTRTG";
/// The chain the forward-accept rules live in (filter table).
pub const FORWARD_CHAIN: &str = "FLANNEL-FWD";
/// kube-proxy's masquerade mark: packets it marked are left alone (upstream's first rule).
const KUBE_MASQ_MARK: &str = "0x4000/0x4000";

/// Where a rule goes in its chain: jumps into flannel's chains go first in the built-in chain,
/// so other rules (docker's among them) do not shadow them; rules in flannel's own chains go in
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Insert,
    Append,
}

/// One rule: its table, chain and match/target arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: &'static str,
    pub chain: &'static str,
    pub position: Position,
    pub args: Vec<String>,
}

impl Rule {
    fn new(table: &'static str, chain: &'static str, position: Position, args: &[&str]) -> Rule {
        Rule {
            table,
            chain,
            position,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// The rule as `iptables -S` prints it (`-A CHAIN ...`).
    pub fn spec(&self) -> String {
        format!("-A {} {}", self.chain, self.args.join(" "))
    }

    fn command(&self, action: &str) -> Vec<String> {
        let mut args = vec![
            "-w".to_string(),
            "-t".into(),
            self.table.into(),
            action.into(),
            self.chain.into(),
        ];
        if action == "-I" {
            args.push("1".into());
        }
        args.extend(self.args.iter().cloned());
        args
    }
}

/// `--ip-masq`'s rules for `network` with this machine's `subnet`, in order.
pub fn masq_rules(network: Ipv4Net, subnet: Ipv4Net) -> Vec<Rule> {
    let (n, s) = (network.to_string(), subnet.to_string());
    let c = ["-m", "comment", "--comment", "flanneld masq"];
    let rule = |parts: &[&str]| {
        let mut args: Vec<&str> = parts.to_vec();
        // The comment goes before the target, where `iptables -S` prints it.
        let at = args.iter().position(|a| *a == "-j").unwrap_or(args.len());
        args.splice(at..at, c);
        Rule::new("nat", MASQ_CHAIN, Position::Append, &args)
    };
    vec![
        Rule::new(
            "nat",
            "POSTROUTING",
            Position::Insert,
            &[c[0], c[1], c[2], c[3], "-j", MASQ_CHAIN],
        ),
        rule(&["-m", "mark", "--mark", KUBE_MASQ_MARK, "-j", "RETURN"]),
        // Inside the flannel network: no NAT.
        rule(&["-s", &n, "-d", &n, "-j", "RETURN"]),
        // Out of the network (but not multicast): masquerade.
        rule(&[
            "-s",
            &n,
            "!",
            "-d",
            "224.0.0.0/4",
            "-j",
            "MASQUERADE",
            "--random-fully",
        ]),
        // From outside to this machine's subnet: no NAT.
        rule(&["!", "-s", &n, "-d", &s, "-j", "RETURN"]),
        // From outside to the rest of the network: masquerade.
        rule(&[
            "!",
            "-s",
            &n,
            "-d",
            &n,
            "-j",
            "MASQUERADE",
            "--random-fully",
        ]),
    ]
}

/// `--iptables-forward-rules`' rules for `network`, in order.
pub fn forward_rules(network: Ipv4Net) -> Vec<Rule> {
    let n = network.to_string();
    let c = ["-m", "comment", "--comment", "flanneld forward"];
    vec![
        Rule::new(
            "filter",
            "FORWARD",
            Position::Insert,
            &[c[0], c[1], c[2], c[3], "-j", FORWARD_CHAIN],
        ),
        Rule::new(
            "filter",
            FORWARD_CHAIN,
            Position::Append,
            &["-s", &n, c[0], c[1], c[2], c[3], "-j", "ACCEPT"],
        ),
        Rule::new(
            "filter",
            FORWARD_CHAIN,
            Position::Append,
            &["-d", &n, c[0], c[1], c[2], c[3], "-j", "ACCEPT"],
        ),
    ]
}

/// Runs iptables and returns how it ended and what it printed.
fn iptables(args: &[String]) -> Result<std::process::Output, IptablesError> {
    Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => IptablesError::NoIptables,
            _ => IptablesError::Failed {
                args: args.join(" "),
                stderr: e.to_string(),
            },
        })
}

fn must(args: Vec<String>) -> Result<(), IptablesError> {
    let out = iptables(&args)?;
    if out.status.success() {
        return Ok(());
    }
    Err(IptablesError::Failed {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn exists(rule: &Rule) -> Result<bool, IptablesError> {
    Ok(iptables(&rule.command("-C"))?.status.success())
}

/// Puts `rules` in place; returns whether anything had to be (re)added. When every rule is
/// there nothing is touched; otherwise the set is removed and added again in order.
pub fn ensure(rules: &[Rule]) -> Result<bool, IptablesError> {
    let mut all_there = true;
    for rule in rules {
        if !exists(rule)? {
            all_there = false;
            break;
        }
    }
    if all_there {
        return Ok(false);
    }
    remove(rules);
    // flannel's chains first: a jump into a chain that does not exist is refused.
    for rule in rules.iter().filter(|r| r.position == Position::Append) {
        // Creating a chain that exists fails; the appends below report real problems.
        let _ = iptables(&[
            "-w".to_string(),
            "-t".into(),
            rule.table.into(),
            "-N".into(),
            rule.chain.into(),
        ]);
    }
    for rule in rules {
        let action = match rule.position {
            Position::Insert => "-I",
            Position::Append => "-A",
        };
        must(rule.command(action))?;
    }
    Ok(true)
}

/// Removes `rules` (every copy of each), leaving flannel's then empty chains: flanneld leaving
/// cleanly, or [`ensure`] before it adds the set again.
pub fn remove(rules: &[Rule]) {
    for rule in rules {
        while matches!(iptables(&rule.command("-D")), Ok(out) if out.status.success()) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masq_rules_are_upstream_flannels() {
        let rules = masq_rules(
            "10.1.0.0/16".parse().unwrap(),
            "10.1.5.0/24".parse().unwrap(),
        );
        let text: Vec<String> = rules.iter().map(Rule::spec).collect();
        assert_eq!(
            text,
            vec![
                "-A POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG",
                "-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment flanneld masq -j RETURN",
                "-A FLANNEL-POSTRTG -s 10.1.0.0/16 -d 10.1.0.0/16 -m comment --comment flanneld masq -j RETURN",
                "-A FLANNEL-POSTRTG -s 10.1.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld masq -j MASQUERADE --random-fully",
                "-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.5.0/24 -m comment --comment flanneld masq -j RETURN",
                "-A FLANNEL-POSTRTG ! -s 10.1.0.0/16 -d 10.1.0.0/16 -m comment --comment flanneld masq -j MASQUERADE --random-fully",
            ]
        );
        assert_eq!(rules[0].position, Position::Insert);
    }

    #[test]
    fn forward_rules_are_upstream_flannels() {
        let text: Vec<String> = forward_rules("10.1.0.0/16".parse().unwrap())
            .iter()
            .map(Rule::spec)
            .collect();
        assert_eq!(
            text,
            vec![
                "-A FORWARD -m comment --comment flanneld forward -j FLANNEL-FWD",
                "-A FLANNEL-FWD -s 10.1.0.0/16 -m comment --comment flanneld forward -j ACCEPT",
                "-A FLANNEL-FWD -d 10.1.0.0/16 -m comment --comment flanneld forward -j ACCEPT",
            ]
        );
    }

    #[test]
    fn inserts_go_first() {
        let jump = &forward_rules("10.1.0.0/16".parse().unwrap())[0];
        assert_eq!(
            jump.command("-I")[..6],
            ["-w", "-t", "filter", "-I", "FORWARD", "1"].map(String::from)
        );
    }
}
