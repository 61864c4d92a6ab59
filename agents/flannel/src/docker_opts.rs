//! What upstream's `mk-docker-opts.sh` does: turn flanneld's subnet.env into dockerd options,
//! so docker's bridge takes this machine's flannel subnet and MTU and leaves masquerading to
//! flanneld when `--ip-masq` is on. Container Linux ran it from flannel-docker-opts.service
//! (`-d /run/flannel/flannel_docker_opts.env -i`) and its docker.service read the variables.
//!
//! Variables, in the order upstream's script writes them (sorted by name):
//! `DOCKER_OPT_BIP="--bip=$FLANNEL_SUBNET"`, `DOCKER_OPT_IPMASQ="--ip-masq=false"` (when
//! flannel masquerades; `true` when `FLANNEL_IPMASQ=false`), `DOCKER_OPT_MTU="--mtu=$FLANNEL_MTU"`,
//! and with `-c` the combined `DOCKER_OPTS="--bip=... --ip-masq=... --mtu=... "`.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DockerOptsError {
    #[error("cannot read {path}: {source} (is flanneld running and has it a lease?)")]
    Read { path: String, source: io::Error },
    #[error("{path}: FLANNEL_IPMASQ={value:?} is neither true nor false")]
    BadIpMasq { path: String, value: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
}

/// Which lines to write (`-i`, `-c`, `-m`, `-k`); neither `-i` nor `-c` means both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub individual: bool,
    pub combined: bool,
    pub ip_masq: bool,
    pub combined_key: String,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            individual: true,
            combined: true,
            ip_masq: true,
            combined_key: "DOCKER_OPTS".into(),
        }
    }
}

/// `KEY=VALUE` lines of a shell environment file (as flanneld writes subnet.env); quotes
/// around a value are dropped, comments and blank lines skipped.
pub fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// The docker options file for subnet.env's `text` (`path` names it in errors).
pub fn render(text: &str, path: &str, output: &Output) -> Result<String, DockerOptsError> {
    let env = parse_env(text);
    let get = |key: &str| env.get(key).filter(|v| !v.is_empty());
    let mut opts: Vec<(&str, String)> = Vec::new();
    if let Some(subnet) = get("FLANNEL_SUBNET") {
        opts.push(("DOCKER_OPT_BIP", format!("--bip={subnet}")));
    }
    if output.ip_masq {
        match get("FLANNEL_IPMASQ").map(String::as_str) {
            Some("true") => opts.push(("DOCKER_OPT_IPMASQ", "--ip-masq=false".into())),
            Some("false") => opts.push(("DOCKER_OPT_IPMASQ", "--ip-masq=true".into())),
            Some(other) => {
                return Err(DockerOptsError::BadIpMasq {
                    path: path.into(),
                    value: other.into(),
                })
            }
            None => {}
        }
    }
    if let Some(mtu) = get("FLANNEL_MTU") {
        opts.push(("DOCKER_OPT_MTU", format!("--mtu={mtu}")));
    }
    let mut out = String::new();
    if output.individual {
        for (name, value) in &opts {
            out.push_str(&format!("{name}=\"{value}\"\n"));
        }
    }
    if output.combined {
        let combined: String = opts.iter().map(|(_, v)| format!("{v} ")).collect();
        out.push_str(&format!("{}=\"{combined}\"\n", output.combined_key));
    }
    Ok(out)
}

/// Reads `subnet_env`, writes `docker_env` (through a temporary file and a rename: docker
/// never reads half of it).
pub fn write(subnet_env: &Path, docker_env: &Path, output: &Output) -> Result<(), DockerOptsError> {
    let text = std::fs::read_to_string(subnet_env).map_err(|source| DockerOptsError::Read {
        path: subnet_env.display().to_string(),
        source,
    })?;
    let rendered = render(&text, &subnet_env.display().to_string(), output)?;
    let write_err = |source| DockerOptsError::Write {
        path: docker_env.display().to_string(),
        source,
    };
    if let Some(dir) = docker_env.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = docker_env.with_extension("tmp");
    std::fs::write(&tmp, rendered).map_err(write_err)?;
    std::fs::rename(&tmp, docker_env).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBNET_ENV: &str =
        "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

    #[test]
    fn individual_lines_as_container_linux_used_them() {
        let output = Output {
            combined: false,
            ..Output::default()
        };
        assert_eq!(
            render(SUBNET_ENV, "subnet.env", &output).unwrap(),
            "DOCKER_OPT_BIP=\"--bip=10.1.17.1/24\"\nDOCKER_OPT_IPMASQ=\"--ip-masq=false\"\nDOCKER_OPT_MTU=\"--mtu=1450\"\n"
        );
    }

    #[test]
    fn both_by_default_and_combined_as_upstream_spells_it() {
        let text = render(SUBNET_ENV, "subnet.env", &Output::default()).unwrap();
        assert!(text.ends_with("DOCKER_OPTS=\"--bip=10.1.17.1/24 --ip-masq=false --mtu=1450 \"\n"));
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn no_masq_line_with_m_and_docker_masquerades_without_flannel_masq() {
        let output = Output {
            individual: false,
            ip_masq: false,
            combined_key: "OPTS".into(),
            ..Output::default()
        };
        assert_eq!(
            render(SUBNET_ENV, "s", &output).unwrap(),
            "OPTS=\"--bip=10.1.17.1/24 --mtu=1450 \"\n"
        );
        let text = render(
            &SUBNET_ENV.replace("IPMASQ=true", "IPMASQ=false"),
            "s",
            &Output::default(),
        )
        .unwrap();
        assert!(text.contains("DOCKER_OPT_IPMASQ=\"--ip-masq=true\""));
        let err = render(
            &SUBNET_ENV.replace("IPMASQ=true", "IPMASQ=yes"),
            "s",
            &Output::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("FLANNEL_IPMASQ=\"yes\""), "{err}");
    }

    #[test]
    fn a_missing_subnet_env_says_what_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(
            &dir.path().join("subnet.env"),
            &dir.path().join("out.env"),
            &Output::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("is flanneld running"), "{err}");
        assert!(!dir.path().join("out.env").exists());
    }

    #[test]
    fn writes_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let subnet = dir.path().join("subnet.env");
        std::fs::write(&subnet, SUBNET_ENV).unwrap();
        let out = dir.path().join("flannel/docker_opts.env");
        write(&subnet, &out, &Output::default()).unwrap();
        assert!(std::fs::read_to_string(&out)
            .unwrap()
            .contains("--mtu=1450"));
        assert_eq!(std::fs::read_dir(out.parent().unwrap()).unwrap().count(), 1);
    }
}
