//! Where the image comes from: a local path or an http(s) URL, and where the files published
//! beside it (SHA256SUMS, manifest.json) are.

use std::fmt;
use std::path::PathBuf;

use reqwest::Url;

use crate::error::InstallError;

/// The image as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageLocation {
    Path(PathBuf),
    Url(Url),
}

impl ImageLocation {
    /// Reads `text` as an http(s) URL when it has that scheme, as a path otherwise. Any other
    /// `scheme://` is refused rather than taken as a relative path that would not exist.
    pub fn parse(text: &str) -> Result<ImageLocation, InstallError> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = Url::parse(text).map_err(|_| InstallError::BadLocation {
                location: text.to_owned(),
            })?;
            if url.path_segments().and_then(|mut s| s.next_back()) == Some("") {
                // A folder URL has no file name to look up in SHA256SUMS.
                return Err(InstallError::BadLocation {
                    location: text.to_owned(),
                });
            }
            return Ok(ImageLocation::Url(url));
        }
        if text.contains("://") || text.is_empty() {
            return Err(InstallError::BadLocation {
                location: text.to_owned(),
            });
        }
        Ok(ImageLocation::Path(PathBuf::from(text)))
    }

    /// The image's file name, as SHA256SUMS lists it.
    pub fn file_name(&self) -> String {
        match self {
            ImageLocation::Path(path) => path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            ImageLocation::Url(url) => url
                .path_segments()
                .and_then(|mut segments| segments.next_back())
                .unwrap_or_default()
                .to_owned(),
        }
    }

    /// The file called `name` in the same folder: the path's parent, or the URL with its last
    /// path segment replaced (query and fragment dropped, as a relative link would).
    pub fn sibling(&self, name: &str) -> ImageLocation {
        match self {
            ImageLocation::Path(path) => ImageLocation::Path(path.with_file_name(name)),
            ImageLocation::Url(url) => ImageLocation::Url(
                url.join(name)
                    .expect("a plain file name joins onto an http(s) URL"),
            ),
        }
    }
}

impl fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageLocation::Path(path) => write!(f, "{}", path.display()),
            ImageLocation::Url(url) => write!(f, "{url}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_siblings_replace_the_last_segment() {
        let image = ImageLocation::parse("https://example.org/keel/1.0/keel.raw.gz?x=1").unwrap();
        assert_eq!(image.file_name(), "keel.raw.gz");
        assert_eq!(
            image.sibling("SHA256SUMS").to_string(),
            "https://example.org/keel/1.0/SHA256SUMS"
        );
    }

    #[test]
    fn path_siblings_share_the_folder() {
        let image = ImageLocation::parse("/run/keel/live/keel/keel.raw.gz").unwrap();
        assert_eq!(image.file_name(), "keel.raw.gz");
        assert_eq!(
            image.sibling("manifest.json"),
            ImageLocation::Path("/run/keel/live/keel/manifest.json".into())
        );
        let relative = ImageLocation::parse("keel.raw").unwrap();
        assert_eq!(
            relative.sibling("SHA256SUMS"),
            ImageLocation::Path("SHA256SUMS".into())
        );
    }

    #[test]
    fn other_schemes_and_folder_urls_are_refused() {
        assert!(ImageLocation::parse("ftp://example.org/keel.raw").is_err());
        assert!(ImageLocation::parse("https://example.org/keel/").is_err());
        assert!(ImageLocation::parse("").is_err());
    }
}
