//! Container images from Debian packages, without the internet: `keel container build SPEC`
//! makes an OCI image (one layer) from a small declarative spec (see [`spec`]), with the OS
//! image's rules: mmdebstrap from the host's own apt sources, the package tree cached under
//! the cache folder by a key of everything that shapes it, and the same spec and package
//! versions giving the same image digest. Output, in the output folder: `NAME/` (an OCI image
//! layout) and `NAME.tar` (the same layout as a tar that `docker load` reads); both appear
//! whole or not at all.

pub mod cli;
pub mod layer;
pub mod oci;
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::tools::{self, ToolError};
pub use oci::Image;
pub use spec::{ContainerSpec, ContainerSpecError, Variant};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Spec(#[from] ContainerSpecError),
    #[error("{file}:{line}: package {package:?} is not in the apt sources (apt-cache policy {package} shows none)")]
    UnknownPackage {
        file: PathBuf,
        line: usize,
        package: String,
    },
    #[error("{file}: overlay {name:?} is not a folder: {path}")]
    MissingOverlay {
        file: PathBuf,
        name: String,
        path: PathBuf,
    },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    PackageTree(#[from] crate::basetree::BaseTreeError),
    #[error(transparent)]
    Layer(#[from] layer::LayerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + '_ {
    move |source| ContainerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What `build` made, for the report and the benchmark.
#[derive(Debug, Clone)]
pub struct Built {
    pub image: Image,
    pub layout: PathBuf,
    pub archive: PathBuf,
    /// Whether the package tree came from the cache.
    pub cached: bool,
    pub files: usize,
    pub file_bytes: u64,
    pub elapsed: Duration,
}

/// Where the overlays of a spec live: `overlays/` in the nearest folder above the spec that
/// has one (the repository's).
pub fn default_overlays_dir(spec_file: &Path) -> PathBuf {
    let start = spec_file
        .canonicalize()
        .unwrap_or_else(|_| spec_file.to_path_buf());
    start
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("overlays"))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("overlays"))
}

/// The package tree's cache key: suite, variant, packages, epoch and the apt sources.
fn cache_key(spec: &ContainerSpec) -> String {
    let mut h = Sha256::new();
    h.update(b"keel-container-v1\0amd64\0");
    h.update(spec.suite.as_bytes());
    h.update(b"\0");
    h.update(spec.variant.as_str().as_bytes());
    let mut packages = spec.packages.clone();
    packages.sort();
    for p in packages {
        h.update(b"\0");
        h.update(p.as_bytes());
    }
    h.update(spec.source_date_epoch.to_le_bytes());
    for f in crate::basetree::apt_source_files() {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).unwrap_or_default());
    }
    hex::encode(&h.finalize()[..12])
}

/// The package tree as mmdebstrap's tarball, from the cache or made now (through a temporary
/// file and a rename). A package the sources lack is named with its line in the spec.
fn package_tree(
    spec: &ContainerSpec,
    spec_file: &Path,
    spec_text: &str,
    cache_dir: &Path,
) -> Result<(PathBuf, bool), ContainerError> {
    let dir = cache_dir.join("containers");
    let tarball = dir.join(format!("{}-{}.tar", spec.name, cache_key(spec)));
    if tarball.is_file() {
        return Ok((tarball, true));
    }
    let made = crate::basetree::mmdebstrap(
        spec.variant.as_str(),
        &spec.suite,
        &spec.packages,
        spec.source_date_epoch,
        &tarball,
    );
    if let Err(e) = made {
        if let crate::basetree::BaseTreeError::Tool(ToolError::Failed { stderr, .. }) = &e {
            let missing = unknown_package(stderr, &spec.packages)
                .or_else(|| missing_from_sources(&spec.packages));
            if let Some(package) = missing {
                return Err(ContainerError::UnknownPackage {
                    file: spec_file.to_path_buf(),
                    line: ContainerSpec::package_line(spec_text, &package),
                    package,
                });
            }
        }
        return Err(e.into());
    }
    Ok((tarball, false))
}

/// The spec's package apt could not find, from mmdebstrap's output ("Unable to locate package
/// X", or "Package X has no installation candidate").
fn unknown_package(stderr: &str, packages: &[String]) -> Option<String> {
    stderr.lines().find_map(|line| {
        let name = line
            .split("Unable to locate package ")
            .nth(1)
            .or_else(|| {
                line.split("Package ")
                    .nth(1)
                    .filter(|rest| rest.contains("has no installation candidate"))
            })?
            .split_whitespace()
            .next()?
            .trim_matches(|c| c == '\'' || c == '"');
        packages.iter().find(|p| p.as_str() == name).cloned()
    })
}

/// The first of `packages` the host's apt lists do not have (mmdebstrap --quiet hides apt's own
/// words; its sources are the host's, so the host's lists answer the same).
fn missing_from_sources(packages: &[String]) -> Option<String> {
    packages
        .iter()
        .find(|p| {
            std::process::Command::new("apt-cache")
                .args(["show", "--no-all-versions", p.as_str()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| !s.success())
        })
        .cloned()
}

/// Builds the image `spec_file` describes into `out_dir`.
pub fn build(
    spec_file: &Path,
    overlays_dir: Option<&Path>,
    out_dir: &Path,
    cache_dir: &Path,
) -> Result<Built, ContainerError> {
    let started = Instant::now();
    let text = std::fs::read_to_string(spec_file).map_err(|source| ContainerSpecError::Read {
        file: spec_file.to_path_buf(),
        source,
    })?;
    let spec = ContainerSpec::parse(&text, spec_file)?;
    let overlays_dir = overlays_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_overlays_dir(spec_file));
    for name in &spec.overlays {
        let path = overlays_dir.join(name);
        if !path.is_dir() {
            return Err(ContainerError::MissingOverlay {
                file: spec_file.to_path_buf(),
                name: name.clone(),
                path,
            });
        }
    }
    tools::require("mmdebstrap")?;
    let (tarball, cached) = package_tree(&spec, spec_file, &text, cache_dir)?;
    let (mut tree, _pruned) = layer::Tree::from_tarball(&tarball, &spec.prune)?;
    for name in &spec.overlays {
        tree.apply_overlay(&overlays_dir.join(name))?;
    }
    let (files, file_bytes) = tree.stats();
    let layer_tar = tree.to_tar(spec.source_date_epoch)?;
    let image = Image::assemble(&spec, &layer_tar);

    std::fs::create_dir_all(out_dir).map_err(io_at(out_dir))?;
    let layout = out_dir.join(&spec.name);
    let archive = out_dir.join(format!("{}.tar", spec.name));
    // Both outputs are written beside their places and renamed in: a failed or interrupted
    // build leaves the previous image (or none), never half of one.
    let layout_tmp = out_dir.join(format!(".{}.tmp", spec.name));
    let archive_tmp = out_dir.join(format!(".{}.tar.tmp", spec.name));
    let _ = std::fs::remove_dir_all(&layout_tmp);
    image
        .write_layout(&layout_tmp)
        .map_err(io_at(&layout_tmp))?;
    std::fs::write(&archive_tmp, image.archive(spec.source_date_epoch))
        .map_err(io_at(&archive_tmp))?;
    let old = out_dir.join(format!(".{}.old", spec.name));
    let _ = std::fs::remove_dir_all(&old);
    if layout.exists() {
        std::fs::rename(&layout, &old).map_err(io_at(&layout))?;
    }
    std::fs::rename(&layout_tmp, &layout).map_err(io_at(&layout))?;
    let _ = std::fs::remove_dir_all(&old);
    std::fs::rename(&archive_tmp, &archive).map_err(io_at(&archive))?;
    Ok(Built {
        image,
        layout,
        archive,
        cached,
        files,
        file_bytes,
        elapsed: started.elapsed(),
    })
}

/// Reads an image back from its layout folder (for `keel container push`).
pub fn read_layout(layout: &Path) -> Result<Image, ContainerError> {
    let read = |rel: &str| {
        let path = layout.join(rel);
        std::fs::read(&path).map_err(io_at(&path))
    };
    let bad = |what: &str| ContainerError::Io {
        path: layout.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()),
    };
    let index: serde_json::Value =
        serde_json::from_slice(&read("index.json")?).map_err(|_| bad("index.json is not JSON"))?;
    let entry = &index["manifests"][0];
    let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let manifest_digest = entry["digest"]
        .as_str()
        .ok_or_else(|| bad("index.json has no manifest"))?;
    let manifest_bytes = read(&blob_path(manifest_digest))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(|_| bad("the manifest is not JSON"))?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("no config"))?;
    let layer_digest = manifest["layers"][0]["digest"]
        .as_str()
        .ok_or_else(|| bad("no layer"))?;
    let reference = entry["annotations"]["io.containerd.image.name"]
        .as_str()
        .ok_or_else(|| bad("index.json names no image"))?
        .to_string();
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t.to_string())
        .unwrap_or_else(|| "latest".into());
    Ok(Image {
        reference,
        tag,
        config: oci::Blob::new(oci::CONFIG_MEDIA_TYPE, read(&blob_path(config_digest))?),
        layer: oci::Blob::new(oci::LAYER_MEDIA_TYPE, read(&blob_path(layer_digest))?),
        manifest: oci::Blob::new(oci::MANIFEST_MEDIA_TYPE, manifest_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_s_complaint_names_the_spec_s_package() {
        let packages = vec!["busybox-static".to_string(), "no-such-pkg".to_string()];
        let stderr = "E: Unable to locate package no-such-pkg\nE: mmdebstrap failed";
        assert_eq!(
            unknown_package(stderr, &packages).as_deref(),
            Some("no-such-pkg")
        );
        let stderr = "E: Package 'no-such-pkg' has no installation candidate";
        assert_eq!(
            unknown_package(stderr, &packages).as_deref(),
            Some("no-such-pkg")
        );
        assert_eq!(unknown_package("E: other trouble", &packages), None);
    }
}
