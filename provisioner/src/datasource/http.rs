//! The HTTP client every network datasource uses: plain HTTP, no proxy, retried through
//! [`RetryPolicy::run`].

use std::time::Instant;

use super::{Attempt, DatasourceError, HttpError, RetryFailure, RetryPolicy};

/// User-data on EC2 is at most 16 KiB and cloud-config files are small; the cap only protects
/// the boot from a misbehaving server.
const MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
        }
    }
}

/// A response the caller has to interpret: any status except the transient ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One datasource's HTTP session. All its requests share one deadline (`retry.total` from
/// creation), so a fetch of many documents is bounded as a whole, not per document.
pub struct HttpClient {
    agent: ureq::Agent,
    retry: RetryPolicy,
    deadline: Instant,
    datasource: String,
}

/// Statuses worth asking again: the server exists but is not ready.
fn status_is_transient(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// Network-level failures that may go away: the service not up yet, the network still
/// configuring, a timeout, a connection cut mid-response.
fn transport_is_transient(error: &ureq::Error) -> bool {
    matches!(
        error,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

impl HttpClient {
    pub fn new(datasource: impl Into<String>, retry: RetryPolicy) -> HttpClient {
        let config = ureq::Agent::config_builder()
            // Metadata services are link-local or on the host; a proxy from the environment
            // would only get in the way.
            .proxy(None)
            // Statuses are interpreted here (404 = absent, 5xx = retry), not as errors.
            .http_status_as_error(false)
            .max_redirects(5)
            .build();
        HttpClient {
            agent: config.into(),
            retry,
            deadline: Instant::now() + retry.total,
            datasource: datasource.into(),
        }
    }

    /// Sends a request, retrying transport failures and transient statuses until the session's
    /// deadline. Any other status is returned for the caller to judge.
    pub fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, DatasourceError> {
        let remaining = RetryPolicy {
            total: self.deadline.saturating_duration_since(Instant::now()),
            ..self.retry
        };
        let outcome = remaining.run(|timeout| self.send_once(method, url, headers, timeout));
        outcome.map_err(|failure| match failure {
            RetryFailure::Final(error) => DatasourceError::Http {
                datasource: self.datasource.clone(),
                method: method.as_str(),
                url: url.to_string(),
                error,
            },
            RetryFailure::GaveUp {
                attempts,
                elapsed,
                last,
            } => DatasourceError::GaveUp {
                datasource: self.datasource.clone(),
                method: method.as_str(),
                url: url.to_string(),
                attempts,
                elapsed,
                last,
            },
        })
    }

    /// GET that treats 404 as "not there" (`None`) and any other non-200 status as an error.
    pub fn get_optional(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Option<Vec<u8>>, DatasourceError> {
        let reply = self.send(Method::Get, url, headers)?;
        match reply.status {
            200..=299 => Ok(Some(reply.body)),
            404 => Ok(None),
            status => Err(DatasourceError::Http {
                datasource: self.datasource.clone(),
                method: "GET",
                url: url.to_string(),
                error: HttpError::Status(status),
            }),
        }
    }

    /// GET that requires the document to exist.
    pub fn get_required(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Vec<u8>, DatasourceError> {
        self.get_optional(url, headers)?
            .ok_or_else(|| DatasourceError::Http {
                datasource: self.datasource.clone(),
                method: "GET",
                url: url.to_string(),
                error: HttpError::Status(404),
            })
    }

    fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        timeout: std::time::Duration,
    ) -> Result<Reply, Attempt<HttpError>> {
        let classify = |error: ureq::Error| {
            if transport_is_transient(&error) {
                Attempt::Transient(HttpError::Transport(error))
            } else {
                Attempt::Final(HttpError::Transport(error))
            }
        };
        let result = match method {
            Method::Get => {
                let mut request = self.agent.get(url);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                request
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .call()
            }
            Method::Put => {
                let mut request = self.agent.put(url);
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                request
                    .config()
                    .timeout_global(Some(timeout))
                    .build()
                    .send_empty()
            }
        };
        let mut response = result.map_err(classify)?;
        let status = response.status().as_u16();
        if status_is_transient(status) {
            return Err(Attempt::Transient(HttpError::Status(status)));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Reply { status, body })
    }
}

/// Joins a base URL and a path with exactly one '/' between them.
pub fn join_url(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_url_has_one_slash() {
        assert_eq!(join_url("http://a/", "/latest"), "http://a/latest");
        assert_eq!(join_url("http://a", "latest/x"), "http://a/latest/x");
    }

    #[test]
    fn transient_statuses() {
        assert!(status_is_transient(503));
        assert!(status_is_transient(429));
        assert!(!status_is_transient(404));
        assert!(!status_is_transient(403));
    }
}
