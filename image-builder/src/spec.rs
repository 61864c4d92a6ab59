//! The image spec (`configs/image.yaml`): one declarative file drives the whole build.
//!
//! Unknown keys and wrong types are errors that name the file and the line, because a typo in
//! a spec must never silently build a different image.

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        message: String,
    },
}

/// A size in bytes, written in the spec as `2GiB`, `768M`, `64MiB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Option<Size> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().ok()?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KiB" => 1 << 10,
            "M" | "MiB" => 1 << 20,
            "G" | "GiB" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult).map(Size)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(Size(n)),
            Raw::Text(s) => Size::parse(&s).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "invalid size `{s}`: use a number of bytes or a number with K, M or G (KiB, MiB, GiB)"
                ))
            }),
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % (1 << 30) == 0 {
            write!(f, "{}GiB", self.0 >> 30)
        } else if self.0 % (1 << 20) == 0 {
            write!(f, "{}MiB", self.0 >> 20)
        } else {
            write!(f, "{}B", self.0)
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Image name, used for output file names (`<name>.raw`, `<name>.qcow2`).
    pub name: String,
    /// Debian suite the base tree is built from, with the host's own apt sources.
    pub suite: String,
    /// Debian packages installed on top of the minbase variant.
    #[serde(default)]
    pub packages: Vec<String>,
    pub kernel: KernelSpec,
    /// Folders of `overlays/`, layered over the base tree in this order.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// systemd units enabled in the image (by their [Install] sections).
    #[serde(default)]
    pub enable_units: Vec<String>,
    /// systemd units the packages enable that the image keeps disabled (started on demand,
    /// e.g. by a cloud-config's `command: start`, as Container Linux started etcd).
    #[serde(default)]
    pub disable_units: Vec<String>,
    /// Paths (relative to the root) the packages install that the image leaves out, beyond
    /// the builder's own list (documentation, package state): e.g. test programs of a package.
    #[serde(default)]
    pub prune: Vec<String>,
    /// Accounts the image carries from the start, made with the image's own useradd (Container
    /// Linux's `core`, whose files, keys and `docker` commands cloud-configs take for granted).
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Who provisions the machine from its user-data: Keel's own provisioner (the default), or
    /// nobody Keel knows of (`none`: another agent in the image, such as cloud-init, does it).
    #[serde(default)]
    pub provisioner: Provisioner,
    pub disk: DiskSpec,
    /// Seconds since the epoch written into every timestamp of the image.
    pub source_date_epoch: u64,
}

/// The `provisioner:` key of the spec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provisioner {
    /// keel-init runs the local stage on every boot and `keel-provision-network.service` may
    /// be enabled for the network stage.
    #[default]
    Keel,
    /// keel-init only boots the verified root: no local stage, and the network stage's unit
    /// may not be enabled. `keel-provision` stays in the image as a tool (`validate`).
    None,
}

impl Provisioner {
    /// The word written to [`crate::layout::PROVISIONER_FILE`] in the image, which keel-init
    /// reads before its local stage.
    pub fn word(self) -> &'static str {
        match self {
            Provisioner::Keel => "keel",
            Provisioner::None => "none",
        }
    }

    /// Parses what [`Provisioner::word`] wrote (surrounding whitespace ignored).
    pub fn from_word(text: &str) -> Option<Provisioner> {
        match text.trim() {
            "keel" => Some(Provisioner::Keel),
            "none" => Some(Provisioner::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// The kernel package, e.g. `linux-image-cloud-amd64`.
    pub package: String,
    /// Modules kept in the root (with their dependencies); all others are pruned. When absent,
    /// every module is kept.
    #[serde(default)]
    pub modules: Option<Vec<String>>,
    /// Modules `keel-init` loads from the initramfs, in this order (dependencies are added).
    pub initramfs_modules: Vec<String>,
    /// Extra kernel command-line arguments.
    #[serde(default)]
    pub cmdline: Vec<String>,
}

/// One entry of `users:`: a user with a group of the same name and id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    /// The user's id, also its own group's.
    pub uid: u32,
    #[serde(default)]
    pub gecos: String,
    /// Supplementary groups; each must exist in the tree (from its packages).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Defaults to /home/NAME (which lives on STATE, under /var/home).
    #[serde(default)]
    pub home: Option<String>,
    #[serde(default = "default_shell")]
    pub shell: String,
}

fn default_shell() -> String {
    "/bin/bash".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpec {
    /// Size of the whole raw disk; STATE takes what the other partitions leave.
    pub size: Size,
    pub esp_size: Size,
    /// Size of each root slot (ROOT-A, ROOT-B); the root filesystem is made this size.
    pub root_size: Size,
}

/// A YAML or type error's line and message, for `FILE:LINE: message` (serde_yaml appends
/// " at line N column M"; the line goes in front instead). Shared by every spec Keel reads.
pub(crate) fn yaml_error(e: &serde_yaml::Error) -> (usize, String) {
    let line = e.location().map(|l| l.line()).unwrap_or(1);
    let message = e.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_string();
    (line, message)
}

/// The first line (1-based) where `key:` starts, or 1.
pub(crate) fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| l.trim_start().starts_with(&format!("{key}:")))
        .map_or(1, |i| i + 1)
}

impl Spec {
    pub fn parse(text: &str, file: &Path) -> Result<Spec, SpecError> {
        let invalid = |line: usize, message: String| SpecError::Invalid {
            file: file.to_path_buf(),
            line,
            message,
        };
        let spec: Spec = serde_yaml::from_str(text).map_err(|e| {
            let (line, message) = yaml_error(&e);
            invalid(line, message)
        })?;
        let line_of = |key: &str| key_line(text, key);
        let d = &spec.disk;
        let fixed = d.esp_size.0 + 2 * d.root_size.0;
        if d.size.0 < fixed + (64 << 20) {
            return Err(invalid(
                line_of("size"),
                format!(
                    "disk.size {} leaves no room for STATE (ESP {} + 2 root slots of {} + their verity need more)",
                    d.size, d.esp_size, d.root_size
                ),
            ));
        }
        if d.root_size.0 % (1 << 20) != 0 || d.esp_size.0 % (1 << 20) != 0 {
            return Err(invalid(
                line_of("root_size"),
                "disk.root_size and disk.esp_size must be whole MiB".into(),
            ));
        }
        if spec.provisioner == Provisioner::None {
            if let Some(unit) = spec
                .enable_units
                .iter()
                .find(|u| u.as_str() == crate::layout::PROVISION_NETWORK_UNIT)
            {
                let line = text
                    .lines()
                    .position(|l| !l.trim_start().starts_with('#') && l.contains(unit.as_str()))
                    .map_or_else(|| line_of("enable_units"), |i| i + 1);
                return Err(invalid(
                    line,
                    format!(
                        "{unit} is Keel's provisioner (its network stage); it cannot be enabled with `provisioner: none`"
                    ),
                ));
            }
        }
        if spec.name.is_empty() || spec.name.contains('/') {
            return Err(invalid(
                line_of("name"),
                format!("invalid image name `{}`", spec.name),
            ));
        }
        Ok(spec)
    }

    /// Every package the base tree installs: the spec's list plus the kernel, sorted.
    pub fn all_packages(&self) -> Vec<String> {
        let mut all = self.packages.clone();
        all.push(self.kernel.package.clone());
        all.sort();
        all.dedup();
        all
    }
}

/// Derives the fixed identifiers of a build (UUIDs, salts, volume ids) from the spec text, so
/// that the same spec gives the same bytes while two different specs never share them.
#[derive(Debug, Clone)]
pub struct Seed([u8; 32]);

impl Seed {
    pub fn from_spec_text(text: &str) -> Seed {
        Seed(Sha256::digest(text.as_bytes()).into())
    }

    pub fn bytes(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.0);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    /// A version-4-shaped UUID for `purpose`.
    pub fn uuid(&self, purpose: &str) -> Uuid {
        let b = self.bytes(purpose);
        let mut u = [0u8; 16];
        u.copy_from_slice(&b[..16]);
        uuid::Builder::from_random_bytes(u).into_uuid()
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: keel
suite: bookworm
packages: [systemd]
kernel:
  package: linux-image-cloud-amd64
  initramfs_modules: [dm-verity]
disk:
  size: 2GiB
  esp_size: 64MiB
  root_size: 768MiB
source_date_epoch: 1700000000
";

    #[test]
    fn parses_a_good_spec() {
        let s = Spec::parse(GOOD, Path::new("image.yaml")).unwrap();
        assert_eq!(s.disk.size, Size(2 << 30));
        assert_eq!(s.all_packages(), vec!["linux-image-cloud-amd64", "systemd"]);
        assert!(s.kernel.modules.is_none());
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let text = GOOD.replace("  esp_size: 64MiB\n", "  esp_size: 64MiB\n  esp_sise: 1\n");
        let err = Spec::parse(&text, Path::new("configs/image.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("configs/image.yaml:10:"), "{err}");
        assert!(err.contains("unknown field `esp_sise`"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let text = GOOD.replace("packages: [systemd]", "packages: systemd");
        let err = Spec::parse(&text, Path::new("s.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:3:"), "{err}");
        let text = GOOD.replace("size: 2GiB", "size: lots");
        let err = Spec::parse(&text, Path::new("s.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("s.yaml:8:") && err.contains("invalid size `lots`"),
            "{err}"
        );
    }

    #[test]
    fn too_small_disk_is_refused() {
        let text = GOOD.replace("size: 2GiB", "size: 1GiB");
        let err = Spec::parse(&text, Path::new("s.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves no room for STATE"), "{err}");
    }

    #[test]
    fn users_take_container_linux_s_core() {
        let text = GOOD.replace(
            "disk:\n",
            "users:\n  - name: core\n    uid: 500\n    groups: [sudo, docker]\ndisk:\n",
        );
        let spec = Spec::parse(&text, Path::new("image.yaml")).unwrap();
        assert_eq!(spec.users.len(), 1);
        assert_eq!(spec.users[0].name, "core");
        assert_eq!(spec.users[0].uid, 500);
        assert_eq!(spec.users[0].shell, "/bin/bash");
        assert_eq!(spec.users[0].groups, ["sudo", "docker"]);
        let text = GOOD.replace(
            "disk:\n",
            "users:\n  - name: core\n    uid: 500\n    sudo: true\ndisk:\n",
        );
        let err = Spec::parse(&text, Path::new("image.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sudo"), "{err}");
    }

    #[test]
    fn disable_units_is_a_list_of_units() {
        assert!(Spec::parse(GOOD, Path::new("s.yaml"))
            .unwrap()
            .disable_units
            .is_empty());
        let text = GOOD.replace("disk:\n", "disable_units: [etcd.service]\ndisk:\n");
        let spec = Spec::parse(&text, Path::new("s.yaml")).unwrap();
        assert_eq!(spec.disable_units, vec!["etcd.service"]);
        let text = GOOD.replace("disk:\n", "disable_units: etcd.service\ndisk:\n");
        let err = Spec::parse(&text, Path::new("s.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("disable_units"), "{err}");
    }

    #[test]
    fn provisioner_defaults_to_keel_and_may_be_none() {
        let s = Spec::parse(GOOD, Path::new("s.yaml")).unwrap();
        assert_eq!(s.provisioner, Provisioner::Keel);
        let text = GOOD.replace("disk:\n", "provisioner: none\ndisk:\n");
        let s = Spec::parse(&text, Path::new("s.yaml")).unwrap();
        assert_eq!(s.provisioner, Provisioner::None);
        for p in [Provisioner::Keel, Provisioner::None] {
            assert_eq!(Provisioner::from_word(&format!("{}\n", p.word())), Some(p));
        }
        assert_eq!(Provisioner::from_word("cloud-init"), None);
    }

    #[test]
    fn unknown_provisioner_names_the_line() {
        let text = GOOD.replace("disk:\n", "provisioner: cloud-init\ndisk:\n");
        let err = Spec::parse(&text, Path::new("s.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:7:"), "{err}");
        assert!(err.contains("unknown variant `cloud-init`"), "{err}");
    }

    #[test]
    fn provisioner_none_refuses_the_network_stage_unit() {
        let text = GOOD.replace(
            "disk:\n",
            "provisioner: none\nenable_units:\n  - ssh.service\n  - keel-provision-network.service\ndisk:\n",
        );
        let err = Spec::parse(&text, Path::new("s.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("s.yaml:10:"), "{err}");
        assert!(err.contains("`provisioner: none`"), "{err}");
        // The same unit is fine with Keel's provisioner.
        let text = text.replace("provisioner: none\n", "");
        Spec::parse(&text, Path::new("s.yaml")).unwrap();
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(Size::parse("64M"), Some(Size(64 << 20)));
        assert_eq!(Size::parse("1G"), Some(Size(1 << 30)));
        assert_eq!(Size::parse("4096"), Some(Size(4096)));
        assert_eq!(Size::parse("3X"), None);
    }

    #[test]
    fn seeds_are_stable_and_distinct() {
        let a = Seed::from_spec_text("a");
        assert_eq!(a.uuid("disk"), Seed::from_spec_text("a").uuid("disk"));
        assert_ne!(a.uuid("disk"), a.uuid("esp"));
        assert_ne!(a.uuid("disk"), Seed::from_spec_text("b").uuid("disk"));
    }
}
