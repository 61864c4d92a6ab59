//! /etc/hostname: the first label of the configured name, at most 63 characters, as
//! coreos-cloudinit sets it (a kernel hostname is one DNS label).

use super::fsutil::Attrs;
use super::Applier;

/// The longest hostname Linux accepts (HOST_NAME_MAX).
const MAX_HOSTNAME: usize = 63;

pub fn short_hostname(name: &str) -> String {
    let label = name.trim().split('.').next().unwrap_or_default();
    label.chars().take(MAX_HOSTNAME).collect()
}

pub fn apply(applier: &mut Applier, name: &str, line: usize) {
    let short = short_hostname(name);
    if short.is_empty() {
        applier.issue(line, format!("hostname {name:?}: has no first label"));
        return;
    }
    let content = format!("{short}\n");
    match applier
        .fs
        .write("/etc/hostname", content.as_bytes(), Attrs::root(0o644))
    {
        Ok(changed) => applier.outcome(changed, || format!("wrote /etc/hostname ({short})")),
        Err(err) => applier.issue(line, format!("hostname: {err}")),
    }
}

/// The hostname the machine will have: what /etc/hostname holds now, or "localhost".
pub fn current(applier: &Applier) -> String {
    applier
        .fs
        .read_string("/etc/hostname")
        .ok()
        .flatten()
        .map(|text| text.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::short_hostname;

    #[test]
    fn first_label_at_most_63() {
        assert_eq!(short_hostname("node1.example.com"), "node1");
        assert_eq!(short_hostname(&"a".repeat(70)), "a".repeat(63));
    }
}
