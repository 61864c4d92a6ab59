//! write_files: decoded, substituted, written atomically with their mode and owner.

use super::fsutil::{write_host, Attrs, FsError};
use super::users::Accounts;
use super::Applier;
use crate::cloudconfig::model::WriteFile;
use crate::cloudconfig::write_files::DecodeError;

/// coreos-cloudinit's default permissions for write_files.
const DEFAULT_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("write_files {path}: {source}")]
    Decode {
        path: String,
        #[source]
        source: DecodeError,
    },
    #[error("write_files {path}: owner {owner:?}: no such {kind} in the root's /etc/{table}")]
    UnknownOwner {
        path: String,
        owner: String,
        kind: &'static str,
        table: &'static str,
    },
    #[error("write_files {path}: permissions {mode:o} are more than 07777")]
    BadMode { path: String, mode: u32 },
    #[error("write_files {0}")]
    Fs(#[from] FsError),
}

pub fn apply(applier: &mut Applier, file: &WriteFile) {
    match write(applier, file) {
        Ok(changed) => applier.outcome(changed, || {
            let verb = if file.append { "appended to" } else { "wrote" };
            format!("{verb} {}", file.path)
        }),
        Err(err) => applier.issue(file.line, err),
    }
}

fn write(applier: &mut Applier, file: &WriteFile) -> Result<bool, FileError> {
    let mode = file.permissions.unwrap_or(DEFAULT_MODE);
    if mode > 0o7777 {
        return Err(FileError::BadMode {
            path: file.path.clone(),
            mode,
        });
    }
    let content = match file.encoding {
        // coreos-cloudinit substitutes the raw user-data before decoding anything, which in
        // effect reaches only plain content: '$' is not in the base64 alphabet.
        None => applier.substitute(&file.content).into_bytes(),
        Some(_) => file.decoded_content().map_err(|source| FileError::Decode {
            path: file.path.clone(),
            source,
        })?,
    };
    let (uid, gid) = owner(applier, file)?;
    let attrs = Attrs { mode, uid, gid };
    if !file.append {
        return Ok(applier.fs.write(&file.path, &content, attrs)?);
    }
    // Appending goes through a final symlink, like a shell's `>>`, but only inside the root.
    let host = applier.fs.resolve_creating(&file.path)?;
    let existing = match std::fs::read(&host) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(FileError::Fs(FsError::Io {
                path: file.path.clone(),
                source,
            }))
        }
    };
    // A second run of the same config must not append again: content already at the end of
    // the file counts as appended.
    if !content.is_empty() && existing.ends_with(&content) {
        return Ok(false);
    }
    let mut joined = existing;
    joined.extend_from_slice(&content);
    Ok(write_host(&host, &file.path, &joined, attrs)?)
}

/// The file's owner as chown(1) reads it, which is what coreos-cloudinit runs: "user",
/// "user:group", "user:" (the user's login group), ":group", or "user.group"; numbers allowed.
/// No owner, or no group part, means root (0), as for a file root creates.
fn owner(applier: &Applier, file: &WriteFile) -> Result<(u32, u32), FileError> {
    let Some(owner) = file
        .owner
        .as_deref()
        .map(str::trim)
        .filter(|o| !o.is_empty())
    else {
        return Ok((0, 0));
    };
    let accounts = Accounts::load(applier)?;
    let (user, group) = match owner.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => match owner.split_once('.') {
            Some((user, group)) if accounts.uid(owner).is_none() => (user, Some(group)),
            _ => (owner, None),
        },
    };
    let unknown = |name: &str, kind, table| FileError::UnknownOwner {
        path: file.path.clone(),
        owner: name.to_string(),
        kind,
        table,
    };
    let uid = if user.is_empty() {
        0
    } else {
        accounts
            .uid(user)
            .ok_or_else(|| unknown(user, "user", "passwd"))?
    };
    let gid = match group {
        None => 0,
        Some("") if user.is_empty() => 0,
        Some("") => accounts
            .user(user)
            .map(|account| account.gid)
            .ok_or_else(|| unknown(user, "user", "passwd"))?,
        Some(group) => accounts
            .gid(group)
            .ok_or_else(|| unknown(group, "group", "group"))?,
    };
    Ok((uid, gid))
}
