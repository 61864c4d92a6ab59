//! The machine's identity: systemd's machine ID, as fleet used it.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum MachineIdError {
    #[error("reading the machine ID from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds {found:?}, not a 32-digit hex machine ID")]
    Invalid { path: String, found: String },
}

/// The machine ID in `path` (normally /etc/machine-id): 32 lowercase hex digits.
pub fn read_machine_id(path: &Path) -> Result<String, MachineIdError> {
    let text = std::fs::read_to_string(path).map_err(|source| MachineIdError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let id = text.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(MachineIdError::Invalid {
            path: path.display().to_string(),
            found: text.trim().to_string(),
        });
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_checks_the_machine_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("machine-id");
        std::fs::write(&path, "0123456789ABCDEF0123456789abcdef\n").unwrap();
        assert_eq!(
            read_machine_id(&path).unwrap(),
            "0123456789abcdef0123456789abcdef"
        );
        std::fs::write(&path, "uninitialized\n").unwrap();
        let err = read_machine_id(&path).unwrap_err().to_string();
        assert!(err.contains("uninitialized"), "{err}");
        assert!(read_machine_id(&dir.path().join("none")).is_err());
    }
}
