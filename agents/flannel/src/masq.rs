//! `--ip-masq`: traffic from the flannel network to anywhere outside it is masqueraded, as
//! flanneld's rules did, through the `iptables` command (Debian's iptables, nft backend):
//! flannel never owned a netlink nftables client and neither do we; a missing iptables is an
//! error naming the package.

use std::process::Command;

use ipnet::Ipv4Net;

#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("iptables not found: install the Debian package iptables")]
    NoIptables,
    #[error("iptables {args}: {stderr}")]
    Failed { args: String, stderr: String },
}

/// flannel's POSTROUTING rules for `network` with this machine's `subnet`, in order.
pub fn rules(network: Ipv4Net, subnet: Ipv4Net) -> Vec<Vec<String>> {
    let (n, s) = (network.to_string(), subnet.to_string());
    let rule = |parts: &[&str]| parts.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    vec![
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

fn iptables(args: &[String]) -> Result<bool, MasqError> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MasqError::NoIptables,
            _ => MasqError::Failed {
                args: args.join(" "),
                stderr: e.to_string(),
            },
        })?;
    Ok(out.status.success())
}

fn nat_postrouting(action: &str, rule: &[String]) -> Vec<String> {
    let mut args = vec![
        "-w".to_string(),
        "-t".into(),
        "nat".into(),
        action.into(),
        "POSTROUTING".into(),
    ];
    args.extend(rule.iter().cloned());
    args
}

/// Installs the rules that are missing (checked with `-C` first, so a restart adds nothing).
pub fn install(network: Ipv4Net, subnet: Ipv4Net) -> Result<(), MasqError> {
    for rule in rules(network, subnet) {
        if iptables(&nat_postrouting("-C", &rule))? {
            continue;
        }
        let args = nat_postrouting("-A", &rule);
        if !iptables(&args)? {
            let out = Command::new("iptables").args(&args).output().ok();
            return Err(MasqError::Failed {
                args: args.join(" "),
                stderr: out
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Removes the rules (flanneld leaving cleanly).
pub fn remove(network: Ipv4Net, subnet: Ipv4Net) {
    for rule in rules(network, subnet) {
        let _ = iptables(&nat_postrouting("-D", &rule));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rules_are_flannels() {
        let rules = super::rules(
            "10.1.0.0/16".parse().unwrap(),
            "10.1.5.0/24".parse().unwrap(),
        );
        let text: Vec<String> = rules.iter().map(|r| r.join(" ")).collect();
        assert_eq!(
            text,
            vec![
                "-s 10.1.0.0/16 -d 10.1.0.0/16 -j RETURN",
                "-s 10.1.0.0/16 ! -d 224.0.0.0/4 -j MASQUERADE --random-fully",
                "! -s 10.1.0.0/16 -d 10.1.5.0/24 -j RETURN",
                "! -s 10.1.0.0/16 -d 10.1.0.0/16 -j MASQUERADE --random-fully",
            ]
        );
    }
}
