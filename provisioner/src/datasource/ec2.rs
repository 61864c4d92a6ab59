//! EC2-style instance metadata service (also served by OpenStack and most clones): IMDSv2 with a
//! session token, falling back to IMDSv1 plain GETs when the token request is refused.

use super::http::{join_url, HttpClient, Method};
use super::{Context, Datasource, DatasourceError, Fetched, HttpError, Metadata, RetryPolicy};

/// The production default; tests always override it (`Context::metadata_url` or
/// `keel.metadata_url=`).
pub const DEFAULT_BASE_URL: &str = "http://169.254.169.254";
const NAME: &str = "ec2";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, the value AWS's own tools ask for; the provisioner needs seconds.
const TOKEN_TTL_SECONDS: &str = "21600";

pub struct Ec2 {
    base_url: String,
    /// Why we believe a metadata service is there; `None` when nothing says so.
    detected_by: Option<String>,
    retry: RetryPolicy,
}

/// DMI strings that identify a machine with an EC2-style metadata service, checked without any
/// network access so that `available()` stays instant elsewhere.
fn platform_from_dmi(ctx: &Context) -> Option<String> {
    let read = |name: &str| {
        std::fs::read_to_string(ctx.root.join("sys/class/dmi/id").join(name))
            .map(|text| text.trim().to_string())
            .unwrap_or_default()
    };
    let sys_vendor = read("sys_vendor");
    let bios_version = read("bios_version");
    let product_name = read("product_name");
    let product_uuid = read("product_uuid");
    if sys_vendor.contains("Amazon")
        || bios_version.to_ascii_lowercase().contains("amazon")
        || product_uuid.to_ascii_lowercase().starts_with("ec2")
    {
        Some("DMI: Amazon EC2".to_string())
    } else if product_name.starts_with("OpenStack") {
        Some(format!("DMI: {product_name}"))
    } else {
        None
    }
}

impl Ec2 {
    /// The service is considered present when a base URL was given (context or
    /// `keel.metadata_url=`), `keel.datasource=ec2` is on the command line, or DMI says EC2 or
    /// OpenStack.
    pub fn new(ctx: &Context) -> Ec2 {
        let args = ctx.kernel_args();
        let (base_url, detected_by) = if let Some(url) = &ctx.metadata_url {
            (url.clone(), Some("configured metadata URL".to_string()))
        } else if let Some(url) = args.metadata_url {
            (url, Some("keel.metadata_url=".to_string()))
        } else {
            let forced = args.datasource.as_deref() == Some(NAME);
            let detected = if forced {
                Some("keel.datasource=ec2".to_string())
            } else {
                platform_from_dmi(ctx)
            };
            (DEFAULT_BASE_URL.to_string(), detected)
        };
        Ec2 {
            base_url: base_url.trim_end_matches('/').to_string(),
            detected_by,
            retry: ctx.retry,
        }
    }

    /// A service at `base_url`, available regardless of the platform.
    pub fn with_base_url(base_url: &str, retry: RetryPolicy) -> Ec2 {
        Ec2 {
            base_url: base_url.trim_end_matches('/').to_string(),
            detected_by: Some("explicit base URL".to_string()),
            retry,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Asks for an IMDSv2 token; `None` when the service refuses (IMDSv1 only).
    fn session_token(&self, client: &HttpClient) -> Result<Option<String>, DatasourceError> {
        let url = join_url(&self.base_url, "latest/api/token");
        let reply = client.send(Method::Put, &url, &[(TOKEN_TTL_HEADER, TOKEN_TTL_SECONDS)])?;
        match reply.status {
            200..=299 => {
                let token = String::from_utf8_lossy(&reply.body).trim().to_string();
                Ok(Some(token).filter(|token| !token.is_empty()))
            }
            // 403/405: IMDSv2 disabled or not implemented; 404/400: an older or partial clone.
            400 | 403 | 404 | 405 => {
                tracing::info!(status = reply.status, "no IMDSv2 token; using IMDSv1");
                Ok(None)
            }
            status => Err(DatasourceError::Http {
                datasource: NAME.to_string(),
                method: "PUT",
                url,
                error: HttpError::Status(status),
            }),
        }
    }
}

struct Session<'a> {
    client: &'a HttpClient,
    base_url: &'a str,
    token: Option<String>,
}

impl Session<'_> {
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, DatasourceError> {
        let url = join_url(self.base_url, path);
        match &self.token {
            Some(token) => self.client.get_optional(&url, &[(TOKEN_HEADER, token)]),
            None => self.client.get_optional(&url, &[]),
        }
    }

    fn get_text(&self, path: &str) -> Result<Option<String>, DatasourceError> {
        Ok(self
            .get(path)?
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .filter(|text| !text.is_empty()))
    }

    fn get_parsed<T: std::str::FromStr>(&self, path: &str) -> Result<Option<T>, DatasourceError> {
        let Some(text) = self.get_text(path)? else {
            return Ok(None);
        };
        let parsed = text.parse().ok();
        if parsed.is_none() {
            tracing::warn!(path, value = %text, "metadata value does not parse; ignored");
        }
        Ok(parsed)
    }

    /// `public-keys/` lists `0=name` lines; each key is at `public-keys/<index>/openssh-key`.
    fn public_keys(&self) -> Result<Vec<String>, DatasourceError> {
        let Some(listing) = self.get_text("latest/meta-data/public-keys/")? else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        for line in listing.lines() {
            let index = line.split_once('=').map_or(line, |(index, _)| index).trim();
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let path = format!("latest/meta-data/public-keys/{index}/openssh-key");
            if let Some(key) = self.get_text(&path)? {
                keys.extend(key.lines().map(str::to_string));
            }
        }
        Ok(keys)
    }
}

impl Datasource for Ec2 {
    fn name(&self) -> &str {
        NAME
    }

    fn available(&self) -> bool {
        self.detected_by.is_some()
    }

    fn fetch(&self) -> Result<Fetched, DatasourceError> {
        if let Some(reason) = &self.detected_by {
            tracing::info!(base_url = %self.base_url, reason, "reading EC2-style metadata");
        }
        let client = HttpClient::new(NAME, self.retry);
        let session = Session {
            client: &client,
            base_url: &self.base_url,
            token: self.session_token(&client)?,
        };
        let user_data = session.get("latest/user-data")?;
        let metadata = Metadata {
            hostname: session.get_text("latest/meta-data/hostname")?,
            instance_id: session.get_text("latest/meta-data/instance-id")?,
            private_ipv4: session.get_parsed("latest/meta-data/local-ipv4")?,
            public_ipv4: session.get_parsed("latest/meta-data/public-ipv4")?,
            private_ipv6: session.get_parsed("latest/meta-data/ipv6")?,
            public_ipv6: None,
            ssh_public_keys: session.public_keys()?,
            interfaces: Vec::new(),
        };
        Ok(Fetched {
            source: format!("{NAME}:{}", self.base_url),
            user_data,
            metadata,
        })
    }
}
