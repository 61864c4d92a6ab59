//! The image's one layer: the files of mmdebstrap's tarball, less what an image does not carry
//! (package manager state, documentation, device nodes), with the overlays laid over them,
//! written as a tar in a fixed form so the same inputs give the same bytes: entries sorted by
//! path, every time set to the spec's epoch, no user or group names, hard links pointing at the
//! first path of their group.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Unsupported { path: String, what: String },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Left out of every image: the package manager's state and caches (a container image is
/// rebuilt, never upgraded in place), documentation, logs, and /dev (docker mounts its own).
const PRUNED: &[&str] = &[
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/log",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/common-licenses",
    "dev",
    "etc/machine-id",
];

/// Folders kept (empty) though their contents go.
const KEPT_EMPTY: &[&str] = &["var/log", "dev"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A hard link to another path of the tree.
    Link(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// The tree being assembled, by path (no leading `./` or `/`; folders without a trailing `/`).
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

fn pruned(path: &str, extra: &[String]) -> bool {
    let under = |p: &str| {
        let p = p.trim_matches('/');
        path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    PRUNED.iter().any(|p| under(p)) || extra.iter().any(|p| under(p))
}

fn clean(path: &Path) -> String {
    let s = path.to_string_lossy();
    s.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Tree {
    /// Reads mmdebstrap's tarball, leaving out [`PRUNED`] and the spec's `prune` paths;
    /// returns the tree and how many entries were pruned.
    pub fn from_tarball(tarball: &Path, prune: &[String]) -> Result<(Tree, usize), LayerError> {
        let file = std::fs::File::open(tarball).map_err(io_at(tarball))?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        let mut tree = Tree::default();
        let mut dropped = 0;
        for entry in archive.entries().map_err(io_at(tarball))? {
            let mut entry = entry.map_err(io_at(tarball))?;
            let path = clean(&entry.path().map_err(io_at(tarball))?);
            if path.is_empty() || path == "." {
                continue;
            }
            if pruned(&path, prune) {
                dropped += 1;
                continue;
            }
            let header = entry.header();
            let mode = header.mode().map_err(io_at(tarball))? & 0o7777;
            let uid = header.uid().map_err(io_at(tarball))?;
            let gid = header.gid().map_err(io_at(tarball))?;
            let link = || -> Result<String, LayerError> {
                Ok(entry
                    .link_name()
                    .map_err(io_at(tarball))?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default())
            };
            let kind = match header.entry_type() {
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink(link()?),
                tar::EntryType::Link => Kind::Link(clean(Path::new(&link()?))),
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::with_capacity(header.size().unwrap_or(0) as usize);
                    entry.read_to_end(&mut data).map_err(io_at(tarball))?;
                    Kind::File(data)
                }
                // Device nodes and fifos: docker provides /dev; nothing else carries them.
                _ => {
                    dropped += 1;
                    continue;
                }
            };
            tree.entries.insert(
                path,
                Entry {
                    kind,
                    mode,
                    uid,
                    gid,
                },
            );
        }
        for dir in KEPT_EMPTY {
            tree.entries.entry(dir.to_string()).or_insert(Entry {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
            });
        }
        Ok((tree, dropped))
    }

    /// Lays the folder `overlay` over the tree (files owned by root, modes as in the
    /// checkout); returns how many entries it added or replaced.
    pub fn apply_overlay(&mut self, overlay: &Path) -> Result<usize, LayerError> {
        let mut count = 0;
        let mut stack = vec![overlay.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(io_at(&dir))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(io_at(&dir))?;
            children.sort();
            for child in children {
                let rel = clean(child.strip_prefix(overlay).expect("under the overlay"));
                let meta = std::fs::symlink_metadata(&child).map_err(io_at(&child))?;
                let mode = meta.permissions().mode() & 0o7777;
                let kind = if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&child).map_err(io_at(&child))?;
                    Kind::Symlink(target.to_string_lossy().into_owned())
                } else if meta.is_dir() {
                    stack.push(child.clone());
                    Kind::Dir
                } else if meta.is_file() {
                    Kind::File(std::fs::read(&child).map_err(io_at(&child))?)
                } else {
                    return Err(LayerError::Unsupported {
                        path: child.display().to_string(),
                        what: format!("not a file, folder or link (mode {:o})", meta.mode()),
                    });
                };
                // A folder that is already there keeps its owner and mode.
                if kind == Kind::Dir && self.entries.get(&rel).is_some_and(|e| e.kind == Kind::Dir)
                {
                    continue;
                }
                let mode = match kind {
                    // git keeps only the executable bit; folders and files get the usual modes.
                    Kind::Dir => 0o755,
                    Kind::File(_) if mode & 0o111 != 0 => 0o755,
                    Kind::File(_) => 0o644,
                    _ => 0o777,
                };
                self.entries.insert(
                    rel,
                    Entry {
                        kind,
                        mode,
                        uid: 0,
                        gid: 0,
                    },
                );
                count += 1;
            }
        }
        Ok(count)
    }

    /// How many entries, and the bytes of their regular files.
    pub fn stats(&self) -> (usize, u64) {
        let bytes = self
            .entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(data) => data.len() as u64,
                _ => 0,
            })
            .sum();
        (self.entries.len(), bytes)
    }

    /// Writes the layer tar (uncompressed): see the module documentation for its fixed form.
    pub fn to_tar(&self, epoch: u64) -> Result<Vec<u8>, LayerError> {
        // Hard links: each group's first path (in sorted order) carries the data, so a reader
        // never meets a link before its target.
        let mut first_of: BTreeMap<&str, &str> = BTreeMap::new();
        for (path, entry) in &self.entries {
            if let Kind::Link(target) = &entry.kind {
                if !matches!(
                    self.entries.get(target).map(|e| &e.kind),
                    Some(Kind::File(_))
                ) {
                    return Err(LayerError::Unsupported {
                        path: path.clone(),
                        what: format!("a hard link to {target}, which is not a file in the image"),
                    });
                }
                let target = target.as_str();
                let slot = first_of.entry(target).or_insert(target);
                if path.as_str() < *slot {
                    *slot = path.as_str();
                }
            }
        }
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            header.set_uid(entry.uid);
            header.set_gid(entry.gid);
            header.set_mtime(epoch);
            let io = |source| LayerError::Io {
                path: PathBuf::from(path),
                source,
            };
            // Where this path's data comes from, for a file or a hard link's group.
            let (data_owner, data) = match &entry.kind {
                Kind::File(data) => (path.as_str(), Some(data)),
                Kind::Link(target) => {
                    let data = match self.entries.get(target).map(|e| &e.kind) {
                        Some(Kind::File(data)) => Some(data),
                        _ => None,
                    };
                    (first_of[target.as_str()], data)
                }
                _ => (path.as_str(), None),
            };
            match &entry.kind {
                Kind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder
                        .append_data(&mut header, format!("{path}/"), std::io::empty())
                        .map_err(io)?;
                }
                Kind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target).map_err(io)?;
                }
                Kind::File(_) | Kind::Link(_) => {
                    let leader = first_of.get(path.as_str()).copied();
                    let is_group_member = leader.is_some() || matches!(entry.kind, Kind::Link(_));
                    let owner = if is_group_member {
                        leader.unwrap_or(data_owner)
                    } else {
                        path.as_str()
                    };
                    if owner != path.as_str() {
                        header.set_entry_type(tar::EntryType::Link);
                        header.set_size(0);
                        builder.append_link(&mut header, path, owner).map_err(io)?;
                    } else {
                        let Some(data) = data else {
                            return Err(LayerError::Unsupported {
                                path: path.clone(),
                                what: "a hard link to something that is not a file".into(),
                            });
                        };
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_size(data.len() as u64);
                        builder
                            .append_data(&mut header, path, data.as_slice())
                            .map_err(io)?;
                    }
                }
            }
        }
        builder.into_inner().map_err(|source| LayerError::Io {
            path: PathBuf::from("layer.tar"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(dir: &Path, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let path = dir.join("base.tar");
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        path
    }

    fn add(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: tar::EntryType,
        data: &[u8],
        link: &str,
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_mtime(12345);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        if link.is_empty() {
            b.append_data(&mut h, path, data).unwrap();
        } else {
            b.append_link(&mut h, path, link).unwrap();
        }
    }

    fn paths(tar_bytes: &[u8]) -> Vec<(String, String, u64)> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.display().to_string())
                    .unwrap_or_default();
                (
                    e.path().unwrap().display().to_string(),
                    link,
                    e.header().mtime().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn prunes_sorts_normalises_and_keeps_hard_links_whole() {
        let dir = tempfile::tempdir().unwrap();
        let base = tarball(dir.path(), |b| {
            add(b, "./", tar::EntryType::Directory, b"", "");
            add(b, "./usr/", tar::EntryType::Directory, b"", "");
            add(b, "./usr/bin/", tar::EntryType::Directory, b"", "");
            // The target sorts after its link: the link's path must carry the data.
            add(b, "./usr/bin/zz", tar::EntryType::Regular, b"program", "");
            add(b, "./usr/bin/aa", tar::EntryType::Link, b"", "./usr/bin/zz");
            add(
                b,
                "./var/lib/dpkg/status",
                tar::EntryType::Regular,
                b"state",
                "",
            );
            add(
                b,
                "./usr/share/doc/x/copyright",
                tar::EntryType::Regular,
                b"c",
                "",
            );
            add(b, "./dev/null", tar::EntryType::Char, b"", "");
        });
        let (mut tree, dropped) = Tree::from_tarball(&base, &[]).unwrap();
        assert_eq!(dropped, 3);
        let overlay = dir.path().join("overlay");
        std::fs::create_dir_all(overlay.join("bin")).unwrap();
        std::os::unix::fs::symlink("../usr/bin/zz", overlay.join("bin/sh")).unwrap();
        assert_eq!(tree.apply_overlay(&overlay).unwrap(), 2);
        let bytes = tree.to_tar(1_700_000_000).unwrap();
        assert_eq!(bytes, tree.to_tar(1_700_000_000).unwrap());
        let listed = paths(&bytes);
        let names: Vec<&str> = listed.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin/",
                "bin/sh",
                "dev/",
                "usr/",
                "usr/bin/",
                "usr/bin/aa",
                "usr/bin/zz",
                "var/log/"
            ]
        );
        assert!(listed.iter().all(|(_, _, t)| *t == 1_700_000_000));
        assert_eq!(
            listed[6].1, "usr/bin/aa",
            "zz links to the group's first path"
        );
        let mut a = tar::Archive::new(bytes.as_slice());
        let mut aa = a.entries().unwrap().nth(5).unwrap().unwrap();
        let mut data = String::new();
        aa.read_to_string(&mut data).unwrap();
        assert_eq!(data, "program");
    }
}
