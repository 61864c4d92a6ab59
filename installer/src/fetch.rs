//! Reading the image and the files beside it, from the local filesystem or over http(s).
//!
//! A download goes to a temporary file in the chosen folder (`--tmp-dir`) and is hashed on
//! the way, so the image is verified before a single byte reaches the target; the file is
//! removed when dropped, so nothing is left behind however the run ends.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::error::InstallError;
use crate::location::ImageLocation;
use crate::progress;

/// SHA256SUMS and manifest.json are a few lines; anything far larger is not what we asked for.
const SMALL_FILE_LIMIT: u64 = 1 << 20;
/// How long to wait for a server to accept the connection. There is no overall time limit:
/// a multi-GiB image on a slow link may take long, and that is fine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const COPY_CHUNK: usize = 1 << 20;

/// Makes HTTP requests; built only when the image is a URL.
pub(crate) struct Fetcher {
    client: Client,
}

/// A file read or downloaded whole, with its sha256 (of the bytes as stored).
pub(crate) struct Fetched {
    pub file: File,
    pub len: u64,
    pub sha256: String,
    /// The download's temporary file, removed when this is dropped; `None` for a local file.
    pub _download: Option<NamedTempFile>,
}

impl Fetcher {
    pub fn new() -> Result<Fetcher, InstallError> {
        let client = Client::builder()
            .user_agent(concat!("keel-install/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(None)
            .build()
            .map_err(|err| InstallError::Fetch {
                url: "(client setup)".into(),
                detail: error_chain(&err),
            })?;
        Ok(Fetcher { client })
    }

    fn get(&self, url: &Url) -> Result<Response, InstallError> {
        self.client
            .get(url.clone())
            .send()
            .map_err(|err| InstallError::Fetch {
                url: url.to_string(),
                detail: error_chain(&err),
            })
    }
}

/// Reads a small file beside the image. `Ok(None)` when it does not exist (no such file, or
/// HTTP 404/410); any other failure is an error, since it would hide a broken mirror.
pub(crate) fn read_small(
    location: &ImageLocation,
    fetcher: Option<&Fetcher>,
) -> Result<Option<Vec<u8>>, InstallError> {
    match location {
        ImageLocation::Path(path) => match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(InstallError::io(format!("cannot read {}", path.display()))(
                err,
            )),
        },
        ImageLocation::Url(url) => {
            let fetcher = fetcher.expect("a fetcher is built for URL images");
            let response = fetcher.get(url)?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Ok(None);
            }
            let response = check_status(url, response)?;
            let mut bytes = Vec::new();
            response
                .take(SMALL_FILE_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(|err| InstallError::Fetch {
                    url: url.to_string(),
                    detail: err.to_string(),
                })?;
            if bytes.len() as u64 > SMALL_FILE_LIMIT {
                return Err(InstallError::Fetch {
                    url: url.to_string(),
                    detail: format!("larger than {SMALL_FILE_LIMIT} bytes; not a checksum list"),
                });
            }
            Ok(Some(bytes))
        }
    }
}

/// Describes why a small file could not be had, for the "SHA256SUMS is missing" message.
pub(crate) fn not_found_detail(location: &ImageLocation) -> &'static str {
    match location {
        ImageLocation::Path(_) => "no such file",
        ImageLocation::Url(_) => "HTTP 404 Not Found",
    }
}

/// Opens a local image and hashes it, or downloads a URL into `tmp_dir` while hashing.
pub(crate) fn fetch_image(
    location: &ImageLocation,
    fetcher: Option<&Fetcher>,
    tmp_dir: &Path,
) -> Result<Fetched, InstallError> {
    match location {
        ImageLocation::Path(path) => {
            let mut file = File::open(path).map_err(InstallError::io(format!(
                "cannot open image {}",
                path.display()
            )))?;
            let len = file
                .metadata()
                .map_err(InstallError::io(format!("cannot stat {}", path.display())))?
                .len();
            let bar = progress::bytes_bar(len, "hashing");
            let sha256 = hash_into(&mut file, &mut io::sink(), &bar)
                .map_err(InstallError::io(format!("cannot read {}", path.display())))?;
            bar.finish_and_clear();
            Ok(Fetched {
                file,
                len,
                sha256,
                _download: None,
            })
        }
        ImageLocation::Url(url) => {
            let fetcher = fetcher.expect("a fetcher is built for URL images");
            let response = check_status(url, fetcher.get(url)?)?;
            let mut download = tempfile::Builder::new()
                .prefix(".keel-install-")
                .suffix(".download")
                .tempfile_in(tmp_dir)
                .map_err(InstallError::io(format!(
                    "cannot create a temporary file in {} (choose another with --tmp-dir)",
                    tmp_dir.display()
                )))?;
            let bar = progress::bytes_bar(response.content_length().unwrap_or(0), "downloading");
            let mut response = response;
            let sha256 = hash_into(&mut response, download.as_file_mut(), &bar).map_err(|err| {
                InstallError::Fetch {
                    url: url.to_string(),
                    detail: format!("download into {} failed: {err}", tmp_dir.display()),
                }
            })?;
            bar.finish_and_clear();
            let file = download
                .reopen()
                .map_err(InstallError::io("cannot reopen the downloaded image"))?;
            let len = file
                .metadata()
                .map_err(InstallError::io("cannot stat the downloaded image"))?
                .len();
            tracing::debug!(
                "downloaded {url} ({len} bytes) to {}",
                download.path().display()
            );
            Ok(Fetched {
                file,
                len,
                sha256,
                _download: Some(download),
            })
        }
    }
}

fn check_status(url: &Url, response: Response) -> Result<Response, InstallError> {
    let status = response.status();
    if status.is_success() {
        Ok(response)
    } else {
        Err(InstallError::Fetch {
            url: url.to_string(),
            detail: format!("HTTP {status}"),
        })
    }
}

/// Copies `reader` into `writer` in 1 MiB chunks and returns the sha256 of what passed.
fn hash_into(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    bar: &indicatif::ProgressBar,
) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    writer.flush()?;
    Ok(hex::encode(hasher.finalize()))
}

/// reqwest's top-level message is often just "error sending request"; the cause (refused,
/// DNS, TLS) is further down the chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
