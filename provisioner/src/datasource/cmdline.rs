//! The kernel command line as a datasource: `cloud-config-url=` (a URL fetched by the network
//! stage, or a `file://` URL or plain path read by the local stage), plus the arguments other
//! sources read: `ds=nocloud-net;s=<url>`, `keel.metadata_url=<base>`, `keel.datasource=<name>`.

use std::path::PathBuf;

use super::http::HttpClient;
use super::{Context, Datasource, DatasourceError, Fetched, Metadata, RetryPolicy};

/// Splits a command line into `(key, value)` words the way systemd reads /proc/cmdline: words
/// are separated by whitespace outside quotes, and single or double quotes group text and are
/// removed (`ds="nocloud-net;s=http://x/"` and `"ds=nocloud-net;s=http://x/"` are the same).
/// A word without '=' has no value.
pub fn split_args(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in cmdline.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some((key, value)) => (key.to_string(), Some(value.to_string())),
            None => (word, None),
        })
        .collect()
}

/// `ds=nocloud-net;s=<url>;h=<hostname>;i=<instance-id>` (cloud-init's spelling; `seedfrom`,
/// `local-hostname` and `instance-id` are accepted as the long forms).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NocloudSeed {
    /// "nocloud-net" or "nocloud".
    pub kind: String,
    pub seed: Option<String>,
    pub hostname: Option<String>,
    pub instance_id: Option<String>,
}

impl NocloudSeed {
    /// Parses the value of `ds=`; `None` when it names another datasource.
    pub fn parse(value: &str) -> Option<NocloudSeed> {
        let mut parts = value.split(';');
        let kind = parts.next()?.trim().to_ascii_lowercase();
        if kind != "nocloud" && kind != "nocloud-net" && kind != "nocloud_net" {
            return None;
        }
        let mut seed = NocloudSeed {
            kind: kind.replace('_', "-"),
            ..NocloudSeed::default()
        };
        for part in parts {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let value = Some(value.to_string()).filter(|value| !value.is_empty());
            match key {
                "s" | "seedfrom" => seed.seed = value,
                "h" | "local-hostname" => seed.hostname = value,
                "i" | "instance-id" => seed.instance_id = value,
                _ => {}
            }
        }
        Some(seed)
    }
}

/// The arguments the datasources read. Later occurrences win, as in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelArgs {
    pub cloud_config_url: Option<String>,
    pub nocloud: Option<NocloudSeed>,
    pub metadata_url: Option<String>,
    /// `keel.datasource=ec2`: use that source even where the platform cannot be detected.
    pub datasource: Option<String>,
}

impl KernelArgs {
    pub fn parse(cmdline: &str) -> KernelArgs {
        let mut args = KernelArgs::default();
        for (key, value) in split_args(cmdline) {
            let Some(value) = value else { continue };
            match key.as_str() {
                "cloud-config-url" => args.cloud_config_url = Some(value),
                "ds" => {
                    if let Some(seed) = NocloudSeed::parse(&value) {
                        args.nocloud = Some(seed);
                    }
                }
                "keel.metadata_url" => args.metadata_url = Some(value),
                "keel.datasource" => args.datasource = Some(value),
                _ => {}
            }
        }
        args
    }
}

/// Where a `cloud-config-url=` or seed points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Fetched over the network by the network stage.
    Url(String),
    /// A path on the running system, read by the local stage.
    Path(PathBuf),
}

impl Location {
    pub fn parse(text: &str) -> Location {
        if let Some(path) = text.strip_prefix("file://") {
            Location::Path(PathBuf::from(path))
        } else if text.contains("://") {
            Location::Url(text.to_string())
        } else {
            Location::Path(PathBuf::from(text))
        }
    }
}

fn read_local(datasource: &str, path: &PathBuf) -> Result<Vec<u8>, DatasourceError> {
    std::fs::read(path).map_err(|error| DatasourceError::Read {
        datasource: datasource.to_string(),
        path: path.clone(),
        error,
    })
}

/// `cloud-config-url=file:///path` or `cloud-config-url=/path`: a file the local stage reads.
pub struct CmdlineFile {
    path: Option<PathBuf>,
}

impl CmdlineFile {
    pub fn new(ctx: &Context) -> CmdlineFile {
        let path = match ctx
            .kernel_args()
            .cloud_config_url
            .map(|url| Location::parse(&url))
        {
            Some(Location::Path(path)) => Some(path),
            _ => None,
        };
        CmdlineFile { path }
    }
}

impl Datasource for CmdlineFile {
    fn name(&self) -> &str {
        "cmdline-file"
    }

    fn available(&self) -> bool {
        self.path.is_some()
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        let path = self.path.as_ref().ok_or_else(|| DatasourceError::Invalid {
            datasource: self.name().to_string(),
            what: "no cloud-config-url= path on the kernel command line".to_string(),
        })?;
        Ok(Fetched {
            source: format!("cmdline:{}", path.display()),
            user_data: Some(read_local(self.name(), path)?),
            metadata: Metadata::default(),
        })
    }
}

/// `cloud-config-url=http://...`: fetched by the network stage. The document must exist (a 404 is
/// an error: the command line asked for it).
pub struct CmdlineUrl {
    url: Option<String>,
    retry: RetryPolicy,
}

impl CmdlineUrl {
    pub fn new(ctx: &Context) -> CmdlineUrl {
        let url = match ctx
            .kernel_args()
            .cloud_config_url
            .map(|url| Location::parse(&url))
        {
            Some(Location::Url(url)) => Some(url),
            _ => None,
        };
        CmdlineUrl {
            url,
            retry: ctx.retry,
        }
    }
}

impl Datasource for CmdlineUrl {
    fn name(&self) -> &str {
        "cloud-config-url"
    }

    fn available(&self) -> bool {
        self.url.is_some()
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        let url = self.url.as_ref().ok_or_else(|| DatasourceError::Invalid {
            datasource: self.name().to_string(),
            what: "no cloud-config-url= URL on the kernel command line".to_string(),
        })?;
        let client = HttpClient::new(self.name(), self.retry);
        Ok(Fetched {
            source: format!("cmdline:{url}"),
            user_data: Some(client.get_required(url, &[])?),
            metadata: Metadata::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_group_and_are_removed() {
        let args = split_args(r#"a=1  b="x y" "c=z w" d='q "r"' flag"#);
        let expected = [
            ("a", Some("1")),
            ("b", Some("x y")),
            ("c", Some("z w")),
            ("d", Some("q \"r\"")),
            ("flag", None),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        assert_eq!(args, expected);
    }

    #[test]
    fn location_kinds() {
        assert_eq!(
            Location::parse("file:///a/b"),
            Location::Path(PathBuf::from("/a/b"))
        );
        assert_eq!(
            Location::parse("/a/b"),
            Location::Path(PathBuf::from("/a/b"))
        );
        assert_eq!(
            Location::parse("http://h/x"),
            Location::Url("http://h/x".to_string())
        );
    }
}
