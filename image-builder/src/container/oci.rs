//! The OCI image around the layer: its config (what docker runs), the manifest naming config
//! and layer by digest, and two ways to hand them over from one set of blobs: an OCI image
//! layout folder, and a tar of that same layout with docker's `manifest.json` beside it, which
//! `docker load` reads (and any tool that reads an OCI layout archive).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::spec::{port_key, ContainerSpec};

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// Bytes named by their sha256.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob { media_type, bytes }
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(&self.bytes)))
    }

    fn hex(&self) -> String {
        hex::encode(Sha256::digest(&self.bytes))
    }

    fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type,
            digest: self.digest(),
            size: self.bytes.len() as u64,
            annotations: None,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: &'static str,
    digest: String,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<String, EmptyObject>,
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    working_dir: String,
}

#[derive(Serialize)]
struct ImageConfig {
    created: String,
    architecture: &'static str,
    os: &'static str,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct History {
    created: String,
    created_by: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    media_type: &'static str,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// An image ready to write or push: config, layer and manifest blobs.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: String,
    pub tag: String,
    pub config: Blob,
    pub layer: Blob,
    pub manifest: Blob,
}

/// RFC 3339 for `epoch` seconds (UTC), as image configs spell `created`.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

impl Image {
    /// Puts the image together from the spec and the layer tar (uncompressed).
    pub fn assemble(spec: &ContainerSpec, layer_tar: &[u8]) -> Image {
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(layer_tar)));
        // mtime 0 and no file name in the gzip header: the same tar gives the same blob.
        let mut gz = flate2::GzBuilder::new()
            .operating_system(3)
            .write(Vec::new(), flate2::Compression::default());
        gz.write_all(layer_tar).expect("writing to memory");
        let layer = Blob::new(LAYER_MEDIA_TYPE, gz.finish().expect("writing to memory"));
        let created = rfc3339(spec.source_date_epoch);
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let config = ImageConfig {
            created: created.clone(),
            architecture: "amd64",
            os: "linux",
            config: RunConfig {
                entrypoint: non_empty(&spec.entrypoint),
                cmd: non_empty(&spec.cmd),
                env: spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                exposed_ports: spec
                    .ports
                    .iter()
                    .filter_map(|p| port_key(p))
                    .map(|p| (p, EmptyObject {}))
                    .collect(),
                user: spec.user.clone(),
                working_dir: spec.workdir.clone(),
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: vec![diff_id],
            },
            history: vec![History {
                created,
                created_by: format!(
                    "keel container build: {} ({}) {}",
                    spec.suite,
                    spec.variant.as_str(),
                    spec.packages.join(" ")
                ),
            }],
        };
        let config = Blob::new(
            CONFIG_MEDIA_TYPE,
            serde_json::to_vec(&config).expect("serialising the config"),
        );
        let manifest = Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE,
            config: config.descriptor(),
            layers: vec![layer.descriptor()],
        };
        let manifest = Blob::new(
            MANIFEST_MEDIA_TYPE,
            serde_json::to_vec(&manifest).expect("serialising the manifest"),
        );
        Image {
            reference: spec.reference(),
            tag: spec.tag.clone(),
            config,
            layer,
            manifest,
        }
    }

    /// The layout's files, by path: `oci-layout`, `index.json`, the blobs, and docker's
    /// `manifest.json`.
    pub fn layout_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut annotations = BTreeMap::new();
        annotations.insert(
            "org.opencontainers.image.ref.name".to_string(),
            self.tag.clone(),
        );
        annotations.insert(
            "io.containerd.image.name".to_string(),
            self.reference.clone(),
        );
        let mut manifest = self.manifest.descriptor();
        manifest.annotations = Some(annotations);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [manifest],
        });
        let docker = serde_json::json!([{
            "Config": format!("blobs/sha256/{}", self.config.hex()),
            "RepoTags": [self.reference],
            "Layers": [format!("blobs/sha256/{}", self.layer.hex())],
        }]);
        let mut files = vec![
            (
                "oci-layout".to_string(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".to_string(), index.to_string().into_bytes()),
            ("manifest.json".to_string(), docker.to_string().into_bytes()),
        ];
        for blob in [&self.config, &self.layer, &self.manifest] {
            files.push((format!("blobs/sha256/{}", blob.hex()), blob.bytes.clone()));
        }
        files.sort();
        files
    }

    /// The layout as one tar (`docker load -i`), in a fixed form.
    pub fn archive(&self, epoch: u64) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = Vec::new();
        for (path, bytes) in self.layout_files() {
            let mut parent = Path::new(&path).parent();
            let mut missing = Vec::new();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                if !dirs.contains(&p.to_path_buf()) {
                    missing.push(p.to_path_buf());
                }
                parent = p.parent();
            }
            for dir in missing.into_iter().rev() {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_mtime(epoch);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{}/", dir.display()), std::io::empty())
                    .expect("writing to memory");
                dirs.push(dir);
            }
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_mtime(epoch);
            h.set_size(bytes.len() as u64);
            builder
                .append_data(&mut h, &path, bytes.as_slice())
                .expect("writing to memory");
        }
        builder.into_inner().expect("writing to memory")
    }

    /// Writes the layout folder `dir` (its files only; the caller renames it into place).
    pub fn write_layout(&self, dir: &Path) -> std::io::Result<()> {
        for (path, bytes) in self.layout_files() {
            let file: PathBuf = dir.join(path);
            std::fs::create_dir_all(file.parent().expect("a parent"))?;
            std::fs::write(&file, bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_same_layer_gives_the_same_digests_and_a_loadable_layout() {
        let spec = ContainerSpec::parse(
            "name: t\nsuite: bookworm\npackages: [x]\nentrypoint: [/bin/sh]\nports: [\"80\"]\nsource_date_epoch: 1700000000\n",
            Path::new("t.yaml"),
        )
        .unwrap();
        let a = Image::assemble(&spec, b"layer bytes");
        let b = Image::assemble(&spec, b"layer bytes");
        assert_eq!(a.manifest.digest(), b.manifest.digest());
        assert_eq!(a.archive(1), b.archive(1));
        let config: serde_json::Value = serde_json::from_slice(&a.config.bytes).unwrap();
        assert_eq!(config["config"]["Entrypoint"][0], "/bin/sh");
        assert!(config["config"]["ExposedPorts"]["80/tcp"].is_object());
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        let names: Vec<String> = a.layout_files().into_iter().map(|(p, _)| p).collect();
        assert!(names.contains(&"manifest.json".to_string()));
        assert!(names.contains(&"oci-layout".to_string()));
        assert_eq!(names.iter().filter(|n| n.starts_with("blobs/")).count(), 3);
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest.bytes).unwrap();
        assert_eq!(manifest["layers"][0]["digest"], a.layer.digest());
    }
}
