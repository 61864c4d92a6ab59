//! The base tree: Debian's minbase plus the spec's packages, made by `mmdebstrap` with the
//! host's own apt sources and cached as a tarball keyed by a hash of everything that shapes it.

use crate::spec::Spec;
use crate::tools::{self, ToolError};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BaseTreeError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("base tree cache {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the cached base tree of `spec` lives, and whether it is already there.
pub struct BaseTree {
    pub tarball: PathBuf,
    pub key: String,
}

/// The files that decide what apt installs: the host's sources and their keyrings.
pub fn apt_source_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files.into_iter().filter(|p| p.is_file()).collect()
}

/// The cache key: suite, packages, the epoch and the apt sources. A package update on the
/// mirror does not change it; `make clean-cache` (or a new snapshot in the sources) does.
pub fn cache_key(spec: &Spec) -> String {
    let mut h = Sha256::new();
    h.update(b"keel-base-v1\0minbase\0amd64\0");
    h.update(spec.suite.as_bytes());
    for p in spec.all_packages() {
        h.update(b"\0");
        h.update(p.as_bytes());
    }
    h.update(spec.source_date_epoch.to_le_bytes());
    for f in apt_source_files() {
        h.update(f.to_string_lossy().as_bytes());
        h.update(fs::read(&f).unwrap_or_default());
    }
    hex::encode(&h.finalize()[..12])
}

/// Runs mmdebstrap (`variant`, `packages`, no recommends, the host's own apt sources: no mirror
/// argument) into a temporary tarball beside `tarball` and renames it into place, so an
/// interrupted build never leaves a half-written cache entry. Shared by the OS image's base
/// tree and the container images' package trees.
pub fn mmdebstrap(
    variant: &str,
    suite: &str,
    packages: &[String],
    epoch: u64,
    tarball: &Path,
) -> Result<(), BaseTreeError> {
    let dir = tarball.parent().expect("cache path has a parent");
    fs::create_dir_all(dir).map_err(|source| BaseTreeError::Io {
        path: dir.into(),
        source,
    })?;
    let tmp = tarball.with_extension("tmp.tar");
    let _ = fs::remove_file(&tmp);
    let mut cmd = tools::command(
        "mmdebstrap",
        [
            "--quiet".to_string(),
            format!("--variant={variant}"),
            "--architectures=amd64".to_string(),
            format!("--include={}", packages.join(",")),
            // No recommends: the spec names everything the tree holds.
            "--aptopt=APT::Install-Recommends \"false\"".to_string(),
            suite.to_string(),
        ],
    );
    cmd.arg(&tmp).env("SOURCE_DATE_EPOCH", epoch.to_string());
    if let Err(e) = tools::run(&mut cmd) {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    fs::rename(&tmp, tarball).map_err(|source| BaseTreeError::Io {
        path: tarball.to_path_buf(),
        source,
    })
}

impl BaseTree {
    pub fn locate(spec: &Spec, cache_dir: &Path) -> BaseTree {
        let key = cache_key(spec);
        let tarball = cache_dir
            .join("base")
            .join(format!("{}-{key}.tar", spec.suite));
        BaseTree { tarball, key }
    }

    pub fn is_cached(&self) -> bool {
        self.tarball.is_file()
    }

    /// Runs mmdebstrap into the cache (see [`mmdebstrap`]).
    pub fn create(&self, spec: &Spec) -> Result<(), BaseTreeError> {
        mmdebstrap(
            "minbase",
            &spec.suite,
            &spec.all_packages(),
            spec.source_date_epoch,
            &self.tarball,
        )
    }

    /// Unpacks the cached tree into `dest` (which must exist and be empty).
    pub fn extract(&self, dest: &Path) -> Result<(), BaseTreeError> {
        tools::run(
            tools::command("tar", ["--numeric-owner", "--xattrs", "-xpf"])
                .arg(&self.tarball)
                .arg("-C")
                .arg(dest),
        )?;
        Ok(())
    }
}
