//! coreos.update → /etc/coreos/update.conf and coreos.oem → /etc/oem-release, as
//! coreos-cloudinit writes them. update.conf is merged: the lines of the existing file (or of
//! the image default /usr/share/coreos/update.conf) are kept, the given keys replace their
//! lines, and keys not yet present are appended in name order.

use super::fsutil::Attrs;
use super::Applier;
use crate::cloudconfig::model::{Oem, Update};

pub const UPDATE_CONF: &str = "/etc/coreos/update.conf";
const DEFAULT_UPDATE_CONF: &str = "/usr/share/coreos/update.conf";
pub const OEM_RELEASE: &str = "/etc/oem-release";

pub fn apply(applier: &mut Applier, update: &Update) {
    // Sorted by name, which is the order coreos-cloudinit appends missing keys in.
    let mut settings: Vec<(&str, String)> = [
        ("GROUP", &update.group),
        ("REBOOT_STRATEGY", &update.reboot_strategy),
        ("SERVER", &update.server),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.as_ref().map(|v| (name, applier.substitute(v))))
    .collect();
    if settings.is_empty() {
        return;
    }
    let base = match applier.fs.read_string(UPDATE_CONF) {
        Ok(Some(text)) => text,
        Ok(None) => applier
            .fs
            .read_string(DEFAULT_UPDATE_CONF)
            .ok()
            .flatten()
            .unwrap_or_default(),
        Err(err) => {
            applier.issue(update.line, format!("coreos.update: {err}"));
            return;
        }
    };
    let mut content = String::new();
    for line in base.lines() {
        let key = line.split('=').next().unwrap_or_default().trim();
        match settings.iter().position(|(name, _)| *name == key) {
            Some(index) => {
                let (name, value) = settings.remove(index);
                content.push_str(&format!("{name}={value}\n"));
            }
            None => {
                content.push_str(line);
                content.push('\n');
            }
        }
    }
    for (name, value) in settings {
        content.push_str(&format!("{name}={value}\n"));
    }
    match applier
        .fs
        .write(UPDATE_CONF, content.as_bytes(), Attrs::root(0o644))
    {
        Ok(changed) => applier.outcome(changed, || format!("wrote {UPDATE_CONF}")),
        Err(err) => applier.issue(update.line, format!("coreos.update: {err}")),
    }
}

pub fn apply_oem(applier: &mut Applier, oem: &Oem) {
    let field = |key: &str| oem.fields.get(key).cloned().unwrap_or_default();
    let id = field("id");
    // coreos-cloudinit writes nothing without an id.
    if id.is_empty() {
        return;
    }
    let content = format!(
        "ID={id}\nVERSION_ID={}\nNAME={:?}\nHOME_URL={:?}\nBUG_REPORT_URL={:?}\n",
        field("version_id"),
        field("name"),
        field("home_url"),
        field("bug_report_url"),
    );
    match applier
        .fs
        .write(OEM_RELEASE, content.as_bytes(), Attrs::root(0o644))
    {
        Ok(changed) => applier.outcome(changed, || format!("wrote {OEM_RELEASE}")),
        Err(err) => applier.issue(oem.line, format!("coreos.oem: {err}")),
    }
}
