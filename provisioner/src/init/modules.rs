//! Loading the kernel modules the image builder listed in `/etc/keel/modules`.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the image builder puts the module list inside the initramfs.
pub const MODULE_LIST: &str = "/etc/keel/modules";

/// finit_module flag: the kernel decompresses the file itself.
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {source}")]
    ReadList { path: PathBuf, source: io::Error },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("finit_module {path}: {source}")]
    Load { path: PathBuf, source: io::Error },
}

/// What loading the list did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadSummary {
    pub loaded: usize,
    /// Modules the kernel already had (built in or loaded before): EEXIST.
    pub already_present: usize,
}

/// The module paths in a list: one per line, in dependency order; blank lines and `#`
/// comments (whole-line or trailing) are ignored.
pub fn parse_module_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Loads one module file with finit_module; EEXIST counts as success. Returns whether the
/// module was newly loaded.
pub fn load_module(path: &Path) -> Result<bool, ModuleError> {
    let file = File::open(path).map_err(|source| ModuleError::Open {
        path: path.to_owned(),
        source,
    })?;
    let compressed = path
        .extension()
        .is_some_and(|ext| ext == "xz" || ext == "zst" || ext == "gz");
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: finit_module reads the open fd and the empty, NUL-terminated parameter string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    };
    if ret == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        Ok(false)
    } else {
        Err(ModuleError::Load {
            path: path.to_owned(),
            source: err,
        })
    }
}

/// Loads every module of the list at `list_path`, in order. A missing list means the
/// initramfs needs no modules.
pub fn load_listed_modules(list_path: &Path) -> Result<LoadSummary, ModuleError> {
    let text = match std::fs::read_to_string(list_path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadSummary::default()),
        Err(source) => {
            return Err(ModuleError::ReadList {
                path: list_path.to_owned(),
                source,
            })
        }
    };
    let mut summary = LoadSummary::default();
    for module in parse_module_list(&text) {
        if load_module(&module)? {
            summary.loaded += 1;
        } else {
            summary.already_present += 1;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_skips_blanks_and_comments_and_keeps_order() {
        let text = "# deps first\n\
                    /lib/modules/6.1/kernel/drivers/md/dm-mod.ko\n\
                    \n   \n\
                    /lib/modules/6.1/kernel/drivers/md/dm-bufio.ko  # needed by verity\n\
                    \t/lib/modules/6.1/kernel/drivers/md/dm-verity.ko.xz\n";
        assert_eq!(
            parse_module_list(text),
            vec![
                PathBuf::from("/lib/modules/6.1/kernel/drivers/md/dm-mod.ko"),
                PathBuf::from("/lib/modules/6.1/kernel/drivers/md/dm-bufio.ko"),
                PathBuf::from("/lib/modules/6.1/kernel/drivers/md/dm-verity.ko.xz"),
            ]
        );
    }

    #[test]
    fn empty_list_has_no_modules() {
        assert!(parse_module_list("").is_empty());
        assert!(parse_module_list("# nothing\n\n").is_empty());
    }

    #[test]
    fn missing_list_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let summary = load_listed_modules(&dir.path().join("modules")).unwrap();
        assert_eq!(summary, LoadSummary::default());
    }

    #[test]
    fn missing_module_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("modules");
        std::fs::write(&list, "/nonexistent/keel-test.ko\n").unwrap();
        let err = load_listed_modules(&list).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/keel-test.ko"),
            "{err}"
        );
    }
}
