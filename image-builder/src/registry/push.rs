//! Pushing an image to a registry with the distribution API (v2): each blob that is not there
//! yet goes up in one monolithic upload (POST, then PUT with its digest), then the manifest
//! under its tag. Plain HTTP: Keel's registry listens on loopback only.

use crate::container::Image;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("no registry answers at {url} ({detail}): `keel vm` and `keel cluster up` start one, or start docker-registry yourself")]
    NotUp { url: String, detail: String },
    #[error("{method} {url}: the registry answered {status}: {body}")]
    Refused {
        method: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: the registry's answer has no Location header")]
    NoLocation { url: String },
}

fn classify(method: &'static str, url: &str, registry: &str, e: ureq::Error) -> PushError {
    match e {
        ureq::Error::Status(status, response) => PushError::Refused {
            method,
            url: url.to_string(),
            status,
            body: response
                .into_string()
                .unwrap_or_default()
                .trim()
                .to_string(),
        },
        ureq::Error::Transport(t) => PushError::NotUp {
            url: registry.to_string(),
            detail: t.to_string(),
        },
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(300))
        .build()
}

/// Whether a registry answers `GET /v2/` at `registry` (`http://HOST:PORT`).
pub fn ping(registry: &str) -> Result<(), PushError> {
    let url = format!("{registry}/v2/");
    agent()
        .get(&url)
        .call()
        .map(|_| ())
        .map_err(|e| classify("GET", &url, registry, e))
}

/// Pushes `image` to `registry` under its reference; returns the manifest's digest.
pub fn push(registry: &str, image: &Image) -> Result<String, PushError> {
    ping(registry)?;
    let agent = agent();
    let (name, tag) = image
        .reference
        .rsplit_once(':')
        .unwrap_or((image.reference.as_str(), "latest"));
    for blob in [&image.layer, &image.config] {
        let digest = blob.digest();
        let url = format!("{registry}/v2/{name}/blobs/{digest}");
        if agent.head(&url).call().is_ok() {
            continue;
        }
        let start = format!("{registry}/v2/{name}/blobs/uploads/");
        let response = agent
            .post(&start)
            .send_bytes(&[])
            .map_err(|e| classify("POST", &start, registry, e))?;
        let location = response
            .header("Location")
            .ok_or_else(|| PushError::NoLocation { url: start.clone() })?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{registry}{location}")
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let upload = format!("{location}{separator}digest={digest}");
        agent
            .put(&upload)
            .set("Content-Type", "application/octet-stream")
            .send_bytes(&blob.bytes)
            .map_err(|e| classify("PUT", &upload, registry, e))?;
    }
    let url = format!("{registry}/v2/{name}/manifests/{tag}");
    agent
        .put(&url)
        .set("Content-Type", image.manifest.media_type)
        .send_bytes(&image.manifest.bytes)
        .map_err(|e| classify("PUT", &url, registry, e))?;
    Ok(image.manifest.digest())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_registry_that_is_not_up_says_so() {
        // A port nothing listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = super::ping(&format!("http://127.0.0.1:{port}")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("no registry answers at http://127.0.0.1:{port}")),
            "{text}"
        );
    }
}
