//! A client of fleet's HTTP API v1, as fleetctl uses it: HTTP/1.1 over the Unix socket
//! (`unix:///var/run/fleet.sock`, fleetctl's default `--endpoint`), over TCP
//! (`http://host:port`), or over the standard input and output of a command (an SSH tunnel).
//! Every request has a timeout; lists follow `nextPageToken` to the end; error answers become
//! [`ClientError::Api`] with fleet's code and message.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Mutex;

use super::types::{ErrorBody, MachinePage, MetadataOp, UnitPage, UnitRequest, UnitStatePage};
use crate::model::{Machine, TargetState, Unit, UnitOption, UnitState};

/// fleetctl's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/fleet.sock";

/// fleetctl's default `--request-timeout`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error status (and usually fleet's error entity).
    #[error("{message} ({code})")]
    Api { code: u16, message: String },
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    /// Connecting, sending or receiving failed.
    #[error("{0}")]
    Transport(String),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The answer was not what the API sends.
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path` (or `file:///path`).
    Unix(PathBuf),
    /// `http://host[:port]`: the authority to connect to and send as `Host`.
    Http { authority: String },
}

impl Endpoint {
    /// Parses fleetctl's `--endpoint`. As fleetctl, only the first of a comma-separated list is
    /// used, and `unix://var/run/fleet.sock` (a missing slash, so "var" would be a host) is an
    /// error rather than a surprise.
    pub fn parse(text: &str) -> Result<Endpoint, ClientError> {
        let first = text.split(',').next().unwrap_or("").trim();
        let bad = |reason: &str| ClientError::Endpoint {
            endpoint: first.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = first.split_once("://") else {
            return Err(bad("URL scheme undefined"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "unix" | "file" => {
                let (host, path) = match rest.find('/') {
                    Some(i) => rest.split_at(i),
                    None => (rest, ""),
                };
                if !host.is_empty() {
                    return Err(bad(&format!(
                        "unable to connect to host {host:?} with scheme {scheme:?}"
                    )));
                }
                if path.is_empty() {
                    return Err(bad("no socket path"));
                }
                Ok(Endpoint::Unix(PathBuf::from(path)))
            }
            "http" => {
                let authority = rest.split('/').next().unwrap_or("");
                if authority.is_empty() {
                    return Err(bad("no host"));
                }
                let has_port = if authority.starts_with('[') {
                    authority.contains("]:")
                } else {
                    authority.contains(':')
                };
                let authority = if has_port {
                    authority.to_string()
                } else {
                    format!("{authority}:80")
                };
                Ok(Endpoint::Http { authority })
            }
            "https" => Err(bad("TLS is not supported; use http:// or unix://")),
            other => Err(bad(&format!("unsupported scheme {other:?}"))),
        }
    }

    fn host_header(&self) -> String {
        match self {
            // fleetctl sends this made-up host over the socket.
            Endpoint::Unix(_) => "domain-sock".to_string(),
            Endpoint::Http { authority } => authority.clone(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Http { authority } => write!(f, "http://{authority}"),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A byte stream over a child's stdin/stdout (the child is killed when it is dropped).
struct ChildStream {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::process::ChildStdout,
}

impl AsyncRead for ChildStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stdin).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}

const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'@')
    .remove(b':');

const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Upper bound on pages followed in one listing (a server handing out tokens forever).
const MAX_PAGES: usize = 1 << 16;

/// A client of one fleet API endpoint. Cheap to share by reference; it keeps one idle
/// connection for reuse.
pub struct Client {
    endpoint: Endpoint,
    tunnel: Option<Vec<String>>,
    timeout: Duration,
    idle: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("tunnel", &self.tunnel)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            tunnel: None,
            timeout: DEFAULT_REQUEST_TIMEOUT,
            idle: Mutex::new(None),
        }
    }

    /// A client of `endpoint` as fleetctl's `--endpoint` spells it.
    pub fn connect(endpoint: &str) -> Result<Client, ClientError> {
        Ok(Client::new(Endpoint::parse(endpoint)?))
    }

    /// The longest one request (connecting included) may take.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// Instead of connecting to the endpoint, runs `command` (program and arguments) for each
    /// connection and speaks HTTP over its standard input and output — an SSH tunnel such as
    /// `ssh core@host fleetctl fd-forward /var/run/fleet.sock`.
    pub fn with_tunnel(mut self, command: Vec<String>) -> Client {
        self.tunnel = Some(command).filter(|c| !c.is_empty());
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let transport = |e: io::Error, what: String| ClientError::Transport(format!("{what}: {e}"));
        let stream: Box<dyn Stream> = match (&self.tunnel, &self.endpoint) {
            (Some(command), _) => {
                let mut child = tokio::process::Command::new(&command[0])
                    .args(&command[1..])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| transport(e, format!("starting tunnel {:?}", command[0])))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err(ClientError::Transport("tunnel has no stdio".into()));
                };
                Box::new(ChildStream {
                    _child: child,
                    stdin,
                    stdout,
                })
            }
            (None, Endpoint::Unix(path)) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| transport(e, format!("connecting to {}", path.display())))?,
            ),
            (None, Endpoint::Http { authority }) => {
                let s = tokio::net::TcpStream::connect(authority.as_str())
                    .await
                    .map_err(|e| transport(e, format!("connecting to {authority}")))?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(format!("HTTP handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer, within the request timeout.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        match tokio::time::timeout(self.timeout, self.send_inner(method, path_and_query, body))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(self.timeout)),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let build = || {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(HOST, self.endpoint.host_header());
            if body.is_some() {
                b = b.header(CONTENT_TYPE, "application/json");
            }
            b.body(Full::new(Bytes::from(body.clone().unwrap_or_default())))
                .map_err(|e| ClientError::Transport(format!("building request: {e}")))
        };
        // A kept connection the server has since closed fails before any answer: then the
        // request goes once more on a fresh connection.
        let reused = self.idle.lock().await.take();
        let mut attempts: Vec<Option<SendRequest<Full<Bytes>>>> = Vec::new();
        if let Some(r) = reused {
            attempts.push(Some(r));
        }
        attempts.push(None);
        let last = attempts.len() - 1;
        for (i, cached) in attempts.into_iter().enumerate() {
            let mut sender = match cached {
                Some(mut s) => match s.ready().await {
                    Ok(()) => s,
                    Err(_) => continue,
                },
                None => self.open().await?,
            };
            let response = match sender.send_request(build()?).await {
                Ok(r) => r,
                Err(e)
                    if i < last
                        && (e.is_closed() || e.is_canceled() || e.is_incomplete_message()) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(ClientError::Transport(format!(
                        "{method} {path_and_query}: {e}"
                    )))
                }
            };
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| ClientError::Transport(format!("reading answer: {e}")))?
                .to_bytes();
            *self.idle.lock().await = Some(sender);
            return Ok((status, bytes));
        }
        Err(ClientError::Transport(format!(
            "{method} {path_and_query}: no connection"
        )))
    }

    /// A request whose success is `ok`; other answers become errors.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let (status, bytes) = self.send(method, path_and_query, body).await?;
        if status.is_success() {
            Ok((status, bytes))
        } else {
            Err(api_error(status, &bytes))
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, path_and_query: &str) -> Result<T, ClientError> {
        let (_, bytes) = self.call(Method::GET, path_and_query, None).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// One page of units (`token`: the previous page's `nextPageToken`).
    pub async fn unit_page(&self, token: Option<&str>) -> Result<UnitPage, ClientError> {
        self.get_json(&with_query("/fleet/v1/units", &[("nextPageToken", token)]))
            .await
    }

    /// Every unit, following the pages.
    pub async fn units(&self) -> Result<Vec<Unit>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.unit_page(token.as_deref()).await?;
            all.extend(page.units);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
        Err(ClientError::Decode("too many pages".into()))
    }

    /// One unit; None when the API says 404.
    pub async fn unit(&self, name: &str) -> Result<Option<Unit>, ClientError> {
        match self.get_json(&unit_path(name)).await {
            Ok(u) => Ok(Some(u)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// PUTs a unit document as is; returns the success status (201 created, 204 changed).
    pub async fn put_unit(
        &self,
        name: &str,
        request: &UnitRequest,
    ) -> Result<StatusCode, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let (status, _) = self.call(Method::PUT, &unit_path(name), Some(body)).await?;
        Ok(status)
    }

    /// Creates `name` (true), or — when it exists with the same options — sets its desired
    /// state (false). Other options on an existing unit are the API's 409.
    pub async fn create_unit(
        &self,
        name: &str,
        options: &[UnitOption],
        desired: TargetState,
    ) -> Result<bool, ClientError> {
        let status = self
            .put_unit(name, &UnitRequest::create(name, options, desired))
            .await?;
        Ok(status == StatusCode::CREATED)
    }

    pub async fn set_unit_target_state(
        &self,
        name: &str,
        desired: TargetState,
    ) -> Result<(), ClientError> {
        self.put_unit(name, &UnitRequest::desired(name, desired))
            .await
            .map(|_| ())
    }

    pub async fn destroy_unit(&self, name: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &unit_path(name), None)
            .await
            .map(|_| ())
    }

    /// One page of unit states, optionally only of one machine and/or one unit.
    pub async fn unit_state_page(
        &self,
        machine_id: Option<&str>,
        unit_name: Option<&str>,
        token: Option<&str>,
    ) -> Result<UnitStatePage, ClientError> {
        self.get_json(&with_query(
            "/fleet/v1/state",
            &[
                ("machineID", machine_id),
                ("unitName", unit_name),
                ("nextPageToken", token),
            ],
        ))
        .await
    }

    /// Every unit state (filtered as [`Client::unit_state_page`]), following the pages.
    pub async fn unit_states_filtered(
        &self,
        machine_id: Option<&str>,
        unit_name: Option<&str>,
    ) -> Result<Vec<UnitState>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self
                .unit_state_page(machine_id, unit_name, token.as_deref())
                .await?;
            all.extend(page.states);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
        Err(ClientError::Decode("too many pages".into()))
    }

    pub async fn unit_states(&self) -> Result<Vec<UnitState>, ClientError> {
        self.unit_states_filtered(None, None).await
    }

    pub async fn machine_page(&self, token: Option<&str>) -> Result<MachinePage, ClientError> {
        self.get_json(&with_query(
            "/fleet/v1/machines",
            &[("nextPageToken", token)],
        ))
        .await
    }

    /// Every live machine, following the pages.
    pub async fn machines(&self) -> Result<Vec<Machine>, ClientError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.machine_page(token.as_deref()).await?;
            all.extend(page.machines);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
        Err(ClientError::Decode("too many pages".into()))
    }

    /// Sends metadata operations (fleet's PATCH of `/machines`).
    pub async fn patch_machines(&self, ops: &[MetadataOp]) -> Result<(), ClientError> {
        let body = serde_json::to_vec(ops).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(Method::PATCH, "/fleet/v1/machines", Some(body))
            .await
            .map(|_| ())
    }

    pub async fn set_machine_metadata(
        &self,
        machine_id: &str,
        key: &str,
        value: &str,
    ) -> Result<(), ClientError> {
        self.patch_machines(&[MetadataOp::set(machine_id, key, value)])
            .await
    }

    pub async fn delete_machine_metadata(
        &self,
        machine_id: &str,
        key: &str,
    ) -> Result<(), ClientError> {
        self.patch_machines(&[MetadataOp::remove(machine_id, key)])
            .await
    }
}

fn unit_path(name: &str) -> String {
    format!("/fleet/v1/units/{}", utf8_percent_encode(name, SEGMENT))
}

fn with_query(path: &str, params: &[(&str, Option<&str>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k, v)))
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY)))
        .collect();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.error.message.is_empty() => e.error.message,
        _ => {
            let text = String::from_utf8_lossy(body).trim().to_string();
            if text.is_empty() || text.starts_with('{') {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text
            }
        }
    };
    ClientError::Api {
        code: status.as_u16(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/fleet.sock").unwrap(),
            Endpoint::Unix("/var/run/fleet.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://10.0.0.1:49153,http://10.0.0.2:49153").unwrap(),
            Endpoint::Http {
                authority: "10.0.0.1:49153".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://example.com/").unwrap(),
            Endpoint::Http {
                authority: "example.com:80".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://[::1]").unwrap(),
            Endpoint::Http {
                authority: "[::1]:80".into()
            }
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:8080").unwrap(),
            Endpoint::Http {
                authority: "[::1]:8080".into()
            }
        );
        let e = Endpoint::parse("unix://var/run/fleet.sock").unwrap_err();
        assert!(
            e.to_string().contains("unable to connect to host \"var\""),
            "{e}"
        );
        assert!(Endpoint::parse("/var/run/fleet.sock").is_err());
        assert!(Endpoint::parse("https://a:1").is_err());
    }

    #[test]
    fn paths_and_queries() {
        assert_eq!(unit_path("foo@1.service"), "/fleet/v1/units/foo@1.service");
        assert_eq!(
            unit_path("a\\x2d.service"),
            "/fleet/v1/units/a%5Cx2d.service"
        );
        assert_eq!(
            with_query(
                "/fleet/v1/state",
                &[
                    ("machineID", None),
                    ("unitName", Some("a b")),
                    ("nextPageToken", Some("ZAACAA=="))
                ]
            ),
            "/fleet/v1/state?unitName=a%20b&nextPageToken=ZAACAA%3D%3D"
        );
    }

    #[test]
    fn errors() {
        let e = api_error(
            StatusCode::CONFLICT,
            br#"{"error":{"code":409,"message":"unit does not exist and options field empty"}}"#,
        );
        assert_eq!(e.code(), Some(409));
        assert_eq!(
            e.to_string(),
            "unit does not exist and options field empty (409)"
        );
        let e = api_error(StatusCode::NOT_FOUND, b"");
        assert_eq!(e.to_string(), "Not Found (404)");
    }
}
