//! The etcd connection both agents make: endpoints and TLS files as fleet and flannel spell
//! them, and one place that decides how long to keep trying.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// Where etcd is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// URLs such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// How long connecting, and answering a keep-alive ping, may take.
    pub request_timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_string()],
            ca_file: None,
            cert_file: None,
            key_file: None,
            request_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("no etcd endpoints configured")]
    NoEndpoints,
    #[error("reading etcd TLS file {path}: {source}")]
    TlsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("etcd TLS: both a certificate and a key file are needed, got only the {0}")]
    HalfIdentity(&'static str),
    #[error("etcd at {endpoints}: {source}")]
    Client {
        endpoints: String,
        #[source]
        source: Box<etcd_client::Error>,
    },
}

impl EtcdConfig {
    /// Parses a comma-separated endpoint list as `--etcd-endpoints` and `etcd_servers` take it.
    pub fn endpoints_from_list(list: &str) -> Vec<String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn options(&self) -> Result<ConnectOptions, EtcdError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| EtcdError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        // No per-call timeout on the channel: it would also cut off the calls that are meant
        // to wait (an election campaign, watches). A dead connection is found by gRPC
        // keep-alive pings instead, within 10 s plus the request timeout.
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(10), self.request_timeout)
            .with_keep_alive_while_idle(true);
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(read(cert)?, read(key)?)),
            (Some(_), None) => return Err(EtcdError::HalfIdentity("certificate")),
            (None, Some(_)) => return Err(EtcdError::HalfIdentity("key")),
            (None, None) => None,
        };
        if self.ca_file.is_some() || identity.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some(identity) = identity {
                tls = tls.identity(identity);
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    /// Connects once; callers that must wait for etcd use [`EtcdConfig::connect_retrying`].
    pub async fn connect(&self) -> Result<Client, EtcdError> {
        if self.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        Client::connect(&self.endpoints, Some(self.options()?))
            .await
            .map_err(|source| EtcdError::Client {
                endpoints: self.endpoints.join(","),
                source: Box::new(source),
            })
    }

    /// Connects, retrying with backoff (0.5 s doubling to 5 s) until `give_up_after` has
    /// passed. Configuration errors (TLS files) are not retried.
    pub async fn connect_retrying(&self, give_up_after: Duration) -> Result<Client, EtcdError> {
        let deadline = tokio::time::Instant::now() + give_up_after;
        let mut delay = Duration::from_millis(500);
        loop {
            match self.connect().await {
                Ok(client) => return Ok(client),
                Err(e @ EtcdError::Client { .. }) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "etcd not reachable yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
