//! manage_etc_hosts: "localhost" makes /etc/hosts map the machine's hostname to 127.0.0.1,
//! the line coreos-cloudinit writes. Container Linux resolved "localhost" itself through
//! nss-myhostname; Keel's Debian base does not necessarily have it, so the localhost entries
//! a Debian /etc/hosts carries follow.

use super::fsutil::Attrs;
use super::{hostname, Applier};
use crate::cloudconfig::model::Located;

pub fn apply(applier: &mut Applier, option: &Located<String>) {
    if option.value != "localhost" {
        applier.issue(
            option.line,
            format!(
                "manage_etc_hosts: {:?} is not supported; the only value is \"localhost\"",
                option.value
            ),
        );
        return;
    }
    // The hostname section ran first, so /etc/hostname already holds the new name.
    let name = hostname::current(applier);
    let content = format!(
        "127.0.0.1 {name}\n127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
    );
    match applier
        .fs
        .write("/etc/hosts", content.as_bytes(), Attrs::root(0o644))
    {
        Ok(changed) => applier.outcome(changed, || "wrote /etc/hosts".to_string()),
        Err(err) => applier.issue(option.line, format!("manage_etc_hosts: {err}")),
    }
}
