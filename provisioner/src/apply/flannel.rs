//! coreos.flannel: /run/flannel/options.env, FLANNELD_* variables, one per line, as
//! coreos-cloudinit writes it for flanneld's EnvironmentFile.

use super::fsutil::Attrs;
use super::Applier;
use crate::cloudconfig::model::EnvOption;

pub const OPTIONS_ENV: &str = "/run/flannel/options.env";

/// coreos-cloudinit's variable names for flannel that are not FLANNELD_ + KEY.
const EXCEPTIONS: &[(&str, &str)] = &[
    ("interface", "FLANNELD_IFACE"),
    ("kube_subnet_mgr", "FLANNEL_KUBE_SUBNET_MGR"),
];

pub fn variable(key: &str) -> String {
    let key = key.replace('-', "_");
    match EXCEPTIONS.iter().find(|(k, _)| *k == key) {
        Some((_, name)) => name.to_string(),
        None => format!("FLANNELD_{}", key.to_ascii_uppercase()),
    }
}

pub fn apply(applier: &mut Applier, options: &[EnvOption]) {
    if options.is_empty() {
        return;
    }
    let mut content = String::new();
    for option in options {
        let value = applier.substitute(&option.value);
        content.push_str(&format!("{}={value}\n", variable(&option.key)));
    }
    match applier
        .fs
        .write(OPTIONS_ENV, content.as_bytes(), Attrs::root(0o644))
    {
        Ok(changed) => applier.outcome(changed, || format!("wrote {OPTIONS_ENV}")),
        Err(err) => applier.issue(options[0].line, format!("coreos.flannel: {err}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::variable("etcd_endpoints"), "FLANNELD_ETCD_ENDPOINTS");
        assert_eq!(super::variable("interface"), "FLANNELD_IFACE");
    }
}
