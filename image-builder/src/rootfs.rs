//! The root filesystem: a read-only ext4 without a journal, made by `mkfs.ext4 -d` from the
//! staged tree, with every time-dependent field pinned so that two builds give the same bytes.
//!
//! mke2fs 1.47.0 takes the superblock times from E2FSPROGS_FAKE_TIME and the inode mtimes from
//! the tree, but copies the host's ctime and (relatime-updated) atime into every inode; those
//! are rewritten afterwards with debugfs.

use crate::tools::{self, ToolError};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the staged root ({tree_mib} MiB of files) does not fit in disk.root_size ({size_mib} MiB): raise root_size in the spec or prune more")]
    TooSmall { tree_mib: u64, size_mib: u64 },
    #[error("cannot read `{field}` from dumpe2fs output")]
    Dumpe2fs { field: &'static str },
}

pub struct RootfsParams<'a> {
    pub tree: &'a Path,
    pub size_bytes: u64,
    pub uuid: Uuid,
    pub hash_seed: Uuid,
    pub epoch: u64,
}

/// Figures the manifest and the benchmarks report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RootfsStats {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

fn superblock_field(dump: &str, field: &'static str) -> Result<u64, RootfsError> {
    dump.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim_start()
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or(RootfsError::Dumpe2fs { field })
}

pub fn stats(image: &Path) -> Result<RootfsStats, RootfsError> {
    let dump = tools::run(tools::command("dumpe2fs", ["-h"]).arg(image))?;
    let block = superblock_field(&dump, "Block size")?;
    let blocks = superblock_field(&dump, "Block count")?;
    let free = superblock_field(&dump, "Free blocks")?;
    let inodes = superblock_field(&dump, "Inode count")?;
    let free_inodes = superblock_field(&dump, "Free inodes")?;
    Ok(RootfsStats {
        size_bytes: blocks * block,
        used_bytes: (blocks - free) * block,
        inodes_used: inodes - free_inodes,
    })
}

/// Makes the filesystem image at `out` (created here, exactly `size_bytes` long).
pub fn make(p: &RootfsParams, tree_bytes: u64, out: &Path) -> Result<RootfsStats, RootfsError> {
    let io = |source| RootfsError::Io {
        path: out.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(out);
    let file = fs::File::create(out).map_err(io)?;
    file.set_len(p.size_bytes).map_err(io)?;
    drop(file);
    let epoch = p.epoch.to_string();
    let mut cmd = tools::command(
        "mkfs.ext4",
        [
            "-q".to_string(),
            "-F".to_string(),
            "-b".to_string(),
            "4096".to_string(),
            // Read-only root: a journal would never be used.
            "-O".to_string(),
            "^has_journal".to_string(),
            "-L".to_string(),
            "ROOT".to_string(),
            "-U".to_string(),
            p.uuid.to_string(),
            "-E".to_string(),
            format!(
                "hash_seed={},root_owner=0:0,nodiscard,lazy_itable_init=0",
                p.hash_seed
            ),
            "-m".to_string(),
            "0".to_string(),
            "-d".to_string(),
        ],
    );
    cmd.arg(p.tree).arg(out).env("E2FSPROGS_FAKE_TIME", &epoch);
    if let Err(e) = tools::run(&mut cmd) {
        let size_mib = p.size_bytes >> 20;
        let tree_mib = tree_bytes >> 20;
        // mke2fs says "Could not allocate block" when the tree is larger than the filesystem.
        if let ToolError::Failed { stderr, .. } = &e {
            if stderr.contains("allocate") || stderr.contains("No space") {
                return Err(RootfsError::TooSmall { tree_mib, size_mib });
            }
        }
        return Err(e.into());
    }

    let st = stats(out)?;
    // Inodes of a freshly populated filesystem are allocated from 1 upwards without gaps.
    let script_path = out.with_extension("debugfs");
    let mut script = Vec::new();
    for ino in 1..=st.inodes_used {
        writeln!(
            script,
            "sif <{ino}> ctime @{epoch}\nsif <{ino}> atime @{epoch}"
        )
        .expect("vec write");
    }
    fs::write(&script_path, script).map_err(|source| RootfsError::Io {
        path: script_path.clone(),
        source,
    })?;
    let mut cmd = tools::command("debugfs", ["-w", "-f"]);
    cmd.arg(&script_path)
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", &epoch);
    tools::run(&mut cmd)?;
    let _ = fs::remove_file(&script_path);
    tools::run(tools::command("e2fsck", ["-fn"]).arg(out))?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(tree: &Path, out: &Path) -> RootfsStats {
        let p = RootfsParams {
            tree,
            size_bytes: 32 << 20,
            uuid: Uuid::from_u128(1),
            hash_seed: Uuid::from_u128(2),
            epoch: 1_700_000_000,
        };
        make(&p, 0, out).unwrap()
    }

    #[test]
    fn same_tree_gives_the_same_bytes_even_after_it_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc/sub")).unwrap();
        fs::write(tree.join("etc/sub/file"), "contents").unwrap();
        std::os::unix::fs::symlink("sub/file", tree.join("etc/link")).unwrap();
        crate::stage::normalise_times(&tree, 1_700_000_000).unwrap();
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        let st = build(&tree, &a);
        // Reading the tree moved its atimes and a second later the ctimes differ as well.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        fs::read(tree.join("etc/sub/file")).unwrap();
        build(&tree, &b);
        assert!(
            fs::read(&a).unwrap() == fs::read(&b).unwrap(),
            "two builds differ"
        );
        assert_eq!(st.size_bytes, 32 << 20);
        assert!(st.inodes_used >= 14);
    }

    #[test]
    fn a_tree_too_large_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        fs::write(tree.join("big"), vec![1u8; 40 << 20]).unwrap();
        let p = RootfsParams {
            tree: &tree,
            size_bytes: 16 << 20,
            uuid: Uuid::from_u128(1),
            hash_seed: Uuid::from_u128(2),
            epoch: 1,
        };
        let err = make(&p, 40 << 20, &dir.path().join("x.img")).unwrap_err();
        assert!(matches!(err, RootfsError::TooSmall { .. }), "{err}");
    }
}
