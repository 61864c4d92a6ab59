//! The cloud-config given with `-c`: read and checked before anything touches the disk, with
//! the validator `keel-provision validate` uses, so a config the first boot would reject is
//! refused here, where the operator can still fix it.

use std::path::Path;

use provisioner::cloudconfig::{self, Kind};

use crate::error::InstallError;

/// The file's bytes, once known to be non-empty and free of errors. Warnings are logged.
pub(crate) fn load(path: &Path, device: &Path) -> Result<Vec<u8>, InstallError> {
    let bytes = std::fs::read(path).map_err(InstallError::io(format!(
        "cannot read cloud-config {}",
        path.display()
    )))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(InstallError::EmptyCloudConfig {
            path: path.to_owned(),
        });
    }
    let diagnostics = cloudconfig::validate(&bytes);
    let mut errors = Vec::new();
    for diagnostic in &diagnostics {
        let line = format!(
            "{}:{}: {}: {}",
            path.display(),
            diagnostic.line,
            diagnostic.kind,
            diagnostic.message
        );
        match diagnostic.kind {
            Kind::Error => errors.push(format!("  {line}")),
            Kind::Warning => tracing::warn!("{line}"),
            Kind::Info => tracing::info!("{line}"),
        }
    }
    if !errors.is_empty() {
        return Err(InstallError::InvalidCloudConfig {
            path: path.to_owned(),
            device: device.to_owned(),
            listing: errors.join("\n"),
        });
    }
    Ok(bytes)
}
