//! A container image spec: one small YAML file per image, as declarative as the OS image's
//! (`configs/image.yaml`): the Debian packages it is made of, overlay folders laid over them,
//! and the image config docker reads (entrypoint, command, environment, ports, user, working
//! directory). Unknown keys and wrong types are errors naming the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ContainerSpecError {
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// How mmdebstrap makes the tree (its `--variant`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Only the listed packages (and what they depend on), unpacked: no maintainer scripts, no
    /// package manager. For a static program such as busybox-static.
    Extract,
    /// Debian's Essential:yes set plus the packages, installed with their maintainer scripts.
    #[default]
    Essential,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Extract => "extract",
            Variant::Essential => "essential",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The image's repository name (`registry.keel.internal:5000/NAME`), also the output's.
    pub name: String,
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Debian suite, from the host's own apt sources.
    pub suite: String,
    #[serde(default)]
    pub variant: Variant,
    #[serde(default)]
    pub packages: Vec<String>,
    /// Folders of `overlays/`, laid over the packages' files in this order.
    #[serde(default)]
    pub overlays: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Environment variables of the image's processes.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Exposed ports, as docker spells them: `80/tcp`, `5201` (tcp).
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub workdir: String,
    /// More paths the image leaves out, beside what no image carries (package state, docs):
    /// what the packages' maintainer scripts made at build time that must not be baked in,
    /// such as a database cluster or a generated key (`var/lib/postgresql/15/main`).
    #[serde(default)]
    pub prune: Vec<String>,
    /// Seconds since the epoch: every file's time and the image's `created`.
    pub source_date_epoch: u64,
}

fn default_tag() -> String {
    "latest".into()
}

impl ContainerSpec {
    pub fn load(file: &Path) -> Result<ContainerSpec, ContainerSpecError> {
        let text = std::fs::read_to_string(file).map_err(|source| ContainerSpecError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        ContainerSpec::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<ContainerSpec, ContainerSpecError> {
        let invalid = |line: usize, message: String| ContainerSpecError::Invalid {
            file: file.to_path_buf(),
            line,
            message,
        };
        let spec: ContainerSpec = serde_yaml::from_str(text).map_err(|e| {
            let (line, message) = crate::spec::yaml_error(&e);
            invalid(line, message)
        })?;
        let line_of = |key: &str| crate::spec::key_line(text, key);
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        };
        if !name_ok(&spec.name) {
            return Err(invalid(
                line_of("name"),
                format!(
                    "name {:?}: lower-case letters, digits, '.', '_' and '-' only (a registry repository name)",
                    spec.name
                ),
            ));
        }
        if spec.tag.is_empty()
            || spec.tag.len() > 128
            || !spec
                .tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid(
                line_of("tag"),
                format!("tag {:?} is not a valid docker tag", spec.tag),
            ));
        }
        if spec.packages.is_empty() {
            return Err(invalid(
                line_of("packages"),
                "packages: at least one Debian package".into(),
            ));
        }
        for port in &spec.ports {
            if port_key(port).is_none() {
                let line = text
                    .lines()
                    .position(|l| l.contains(port.as_str()) && !l.trim_start().starts_with('#'))
                    .map_or_else(|| line_of("ports"), |i| i + 1);
                return Err(invalid(
                    line,
                    format!("ports: {port:?} is not PORT or PORT/tcp or PORT/udp"),
                ));
            }
        }
        Ok(spec)
    }

    /// The spec's line that names `package` (for errors about it), or 1.
    pub fn package_line(text: &str, package: &str) -> usize {
        text.lines()
            .position(|l| {
                let l = l.split('#').next().unwrap_or("");
                l.split(|c: char| c.is_whitespace() || "[],".contains(c))
                    .any(|word| word == package)
            })
            .map_or(1, |i| i + 1)
    }

    /// `name:tag`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.name, self.tag)
    }
}

/// `80` → `80/tcp`; `53/udp` stays; anything else is None.
pub fn port_key(port: &str) -> Option<String> {
    let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
    let ok = number.parse::<u16>().is_ok_and(|n| n > 0) && matches!(proto, "tcp" | "udp" | "sctp");
    ok.then(|| format!("{number}/{proto}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: http\nsuite: bookworm\nvariant: extract\npackages: [busybox-static]\nentrypoint: [/bin/busybox, httpd, -f]\nports: [\"80\"]\nenv:\n  PATH: /bin\nsource_date_epoch: 1700000000\n";

    #[test]
    fn parses_a_good_spec() {
        let spec = ContainerSpec::parse(GOOD, Path::new("http.yaml")).unwrap();
        assert_eq!(spec.reference(), "http:latest");
        assert_eq!(spec.variant, Variant::Extract);
        assert_eq!(spec.env["PATH"], "/bin");
        assert_eq!(port_key(&spec.ports[0]).unwrap(), "80/tcp");
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_file_and_line() {
        let text = GOOD.replace("ports:", "expose:");
        let err = ContainerSpec::parse(&text, Path::new("c/http.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("c/http.yaml:6: unknown field `expose`"),
            "{err}"
        );
        let text = GOOD.replace("packages: [busybox-static]", "packages: busybox-static");
        let err = ContainerSpec::parse(&text, Path::new("http.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("http.yaml:4:"), "{err}");
        let text = GOOD.replace("[\"80\"]", "[\"80/icmp\"]");
        let err = ContainerSpec::parse(&text, Path::new("http.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("http.yaml:6:") && err.contains("80/icmp"),
            "{err}"
        );
    }

    #[test]
    fn a_package_is_found_on_its_line() {
        let text = "name: x\npackages:\n  - busybox-static\n  - no-such-thing # here\n";
        assert_eq!(ContainerSpec::package_line(text, "no-such-thing"), 4);
        assert_eq!(ContainerSpec::package_line(GOOD, "busybox-static"), 4);
    }
}
