//! Datasources: where user-data and machine metadata come from.
//!
//! Every source implements [`Datasource`]. The initramfs local stage tries [`local_sources`]
//! (nothing that needs a network), the network stage tries [`network_sources`]; both take the
//! first source that says it is [`Datasource::available`]. `available()` never waits, so a
//! machine without a given source boots without delay; only `fetch()` may wait, and network
//! fetches are bounded by the one [`RetryPolicy`] every network source uses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::cloudconfig::model::Metadata;

pub mod cmdline;
pub mod config_drive;
pub mod ec2;
pub mod file;
pub mod fw_cfg;
pub mod http;
pub mod labels;
pub mod network_data;
pub mod nocloud;

/// What a datasource delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Which source and where, e.g. "nocloud:/dev/vdb" or "ec2:http://127.0.0.1:8080".
    pub source: String,
    /// `None` when the source exists but holds no user-data (EC2 answering 404).
    pub user_data: Option<Vec<u8>>,
    pub metadata: Metadata,
}

pub trait Datasource {
    /// Short name for logs: "config-drive", "nocloud", "ec2", ...
    fn name(&self) -> &str;
    /// Whether this source is present. Cheap and never waits on a network or a timeout.
    fn available(&self) -> bool;
    /// Reads user-data and metadata. Network sources retry according to the context's policy.
    fn fetch(&self) -> Result<Fetched, DatasourceError>;
}

/// Why an HTTP request failed, without the retry bookkeeping.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("server answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(#[from] ureq::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    #[error("{datasource}: cannot read {}: {error}", path.display())]
    Read {
        datasource: String,
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{datasource}: {} is not valid JSON: {error}", path.display())]
    Json {
        datasource: String,
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("{datasource}: cannot mount {} ({fstype}) read-only at {}: {error}", device.display(), target.display())]
    Mount {
        datasource: String,
        device: PathBuf,
        target: PathBuf,
        fstype: &'static str,
        #[source]
        error: std::io::Error,
    },
    #[error("{datasource}: no filesystem labelled {labels} found")]
    NoFilesystem { datasource: String, labels: String },
    #[error("{datasource}: {method} {url} failed: {error}")]
    Http {
        datasource: String,
        method: &'static str,
        url: String,
        #[source]
        error: HttpError,
    },
    #[error("{datasource}: gave up on {method} {url} after {attempts} attempts in {:.1}s: {last}", elapsed.as_secs_f64())]
    GaveUp {
        datasource: String,
        method: &'static str,
        url: String,
        attempts: u32,
        elapsed: Duration,
        #[source]
        last: HttpError,
    },
    #[error("{datasource}: {what}")]
    Invalid { datasource: String, what: String },
}

/// Bounded exponential backoff for network sources: the delay starts at `initial`, doubles up
/// to `max_delay`, and no new attempt starts once `total` has run out. Each request is cut off
/// after `request_timeout` (or whatever remains of `total`, if less).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_delay: Duration,
    pub total: Duration,
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// The network stage runs after network-online.target, but a metadata service may still take
    /// a few seconds to answer on a fresh instance; a minute is generous without stalling a boot
    /// for long on a machine where the service never comes.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            total: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// What one attempt of a retried operation concluded.
#[derive(Debug)]
pub enum Attempt<E> {
    /// Worth trying again (connection refused, timeout, HTTP 5xx).
    Transient(E),
    /// Trying again cannot help (HTTP 404, a malformed URL).
    Final(E),
}

/// How a retried operation ended without success.
#[derive(Debug)]
pub enum RetryFailure<E> {
    Final(E),
    GaveUp {
        attempts: u32,
        elapsed: Duration,
        last: E,
    },
}

/// The shortest per-request timeout handed to an attempt, so that the last attempt before the
/// deadline still has a chance to complete.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails finally, or the policy's total time runs out.
    /// `attempt` receives the timeout to apply to its request. This is the only retry loop in the
    /// datasources: every network request goes through it.
    pub fn run<T, E>(
        &self,
        mut attempt: impl FnMut(Duration) -> Result<T, Attempt<E>>,
    ) -> Result<T, RetryFailure<E>> {
        let start = Instant::now();
        let deadline = start + self.total;
        let mut delay = self.initial;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let timeout = self.request_timeout.min(remaining).max(MIN_REQUEST_TIMEOUT);
            match attempt(timeout) {
                Ok(value) => return Ok(value),
                Err(Attempt::Final(error)) => return Err(RetryFailure::Final(error)),
                Err(Attempt::Transient(error)) => {
                    let now = Instant::now();
                    if now + delay >= deadline {
                        return Err(RetryFailure::GaveUp {
                            attempts,
                            elapsed: now - start,
                            last: error,
                        });
                    }
                    tracing::debug!(attempt = attempts, ?delay, "transient failure, retrying");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(self.max_delay);
                }
            }
        }
    }
}

/// Where the sources look. Tests point `root` at a fake tree and `metadata_url` at a local server.
#[derive(Debug, Clone)]
pub struct Context {
    /// The kernel command line (contents of /proc/cmdline).
    pub cmdline: String,
    /// Where the running system's /dev, /sys and /proc are: "/" normally.
    pub root: PathBuf,
    /// Scratch directory where config drives are mounted while being read.
    pub mount_dir: PathBuf,
    pub retry: RetryPolicy,
    /// EC2-style metadata service base URL; when `None`, `keel.metadata_url=` from the command
    /// line, else [`ec2::DEFAULT_BASE_URL`].
    pub metadata_url: Option<String>,
    /// The local user-data file the `file` source reads (for the initramfs:
    /// /sysroot/var/lib/keel/user-data).
    pub user_data_file: PathBuf,
}

impl Context {
    /// A context for the running system with the given command line and default paths.
    pub fn new(cmdline: impl Into<String>) -> Context {
        Context {
            cmdline: cmdline.into(),
            root: PathBuf::from("/"),
            mount_dir: PathBuf::from("/run/keel/datasource"),
            retry: RetryPolicy::default(),
            metadata_url: None,
            user_data_file: PathBuf::from(file::DEFAULT_USER_DATA_FILE),
        }
    }

    /// A context for the running system, with the command line from /proc/cmdline (empty when it
    /// cannot be read, which only loses the command-line sources).
    pub fn from_system() -> Context {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        Context::new(cmdline.trim_end())
    }

    pub(crate) fn kernel_args(&self) -> cmdline::KernelArgs {
        cmdline::KernelArgs::parse(&self.cmdline)
    }

    /// `path` (absolute, as on the running system) under `root`.
    pub(crate) fn system_path(&self, path: &str) -> PathBuf {
        self.root.join(Path::new(path.trim_start_matches('/')))
    }
}

/// A source whose whole answer is one file of user-data (fw_cfg, a local file).
fn fetch_user_data_file(
    datasource: &str,
    path: &Path,
    source: String,
) -> Result<Fetched, DatasourceError> {
    let user_data = std::fs::read(path).map_err(|error| DatasourceError::Read {
        datasource: datasource.to_string(),
        path: path.to_path_buf(),
        error,
    })?;
    Ok(Fetched {
        source,
        user_data: Some(user_data),
        metadata: Metadata::default(),
    })
}

/// The local stage's sources, in the order they are tried: a config file named on the kernel
/// command line (when it is not a URL), config drive, NoCloud, QEMU fw_cfg, the local file.
pub fn local_sources(ctx: &Context) -> Vec<Box<dyn Datasource>> {
    vec![
        Box::new(cmdline::CmdlineFile::new(ctx)),
        Box::new(config_drive::ConfigDrive::new(ctx)),
        Box::new(nocloud::NoCloud::new(ctx)),
        Box::new(fw_cfg::FwCfg::new(ctx)),
        Box::new(file::LocalFile::new(&ctx.user_data_file)),
    ]
}

/// The network stage's sources, in order: `cloud-config-url=` (http), `ds=nocloud-net;s=`, the
/// EC2-style metadata service.
pub fn network_sources(ctx: &Context) -> Vec<Box<dyn Datasource>> {
    vec![
        Box::new(cmdline::CmdlineUrl::new(ctx)),
        Box::new(nocloud::NoCloudNet::new(ctx)),
        Box::new(ec2::Ec2::new(ctx)),
    ]
}

/// Fetches from the first available source. `None` when no source is available; an error when
/// the first available source fails — later sources are not tried then, so a broken config drive
/// is reported rather than silently replaced by another source's config.
pub fn first_available(
    sources: &[Box<dyn Datasource>],
) -> Option<Result<Fetched, DatasourceError>> {
    let source = sources.iter().find(|source| {
        let available = source.available();
        tracing::debug!(source = source.name(), available, "datasource probed");
        available
    })?;
    tracing::info!(source = source.name(), "fetching user-data");
    Some(source.fetch())
}

impl fmt::Display for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.user_data {
            Some(data) => write!(f, "{}: {} bytes of user-data", self.source, data.len()),
            None => write!(f, "{}: no user-data", self.source),
        }
    }
}
