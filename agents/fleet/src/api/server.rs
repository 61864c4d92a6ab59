//! The HTTP API v1 server: fleet's routes, status codes and error entity, over HTTP/1.1 on a
//! Unix socket (`/var/run/fleet.sock`) or a TCP address.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, SERVER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use tokio::net::{TcpListener, ToSocketAddrs, UnixListener};

use super::names;
use super::types::{
    ErrorBody, MachinePage, MetadataOp, PageToken, UnitPage, UnitRequest, UnitStatePage,
    DEFAULT_TOKEN_LIMIT,
};
use crate::model::{TargetState, UnitOption};
use crate::store::{FleetStore, MetadataChange, StoreError};
use crate::unit::{Requirements, UnitFile, UnitName};

/// fleet's default API socket.
pub const DEFAULT_SOCKET: &str = "/var/run/fleet.sock";

/// Where the API listens: a Unix socket (fleet's default) or a TCP address (fleet's `--listen`).
#[derive(Debug)]
pub enum Listener {
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
    Tcp(TcpListener),
}

impl Listener {
    /// Binds a Unix socket at `path`, replacing a stale socket left by an earlier fleetd (a
    /// regular file or folder there is an error, never removed), and gives it mode 0660 so the
    /// owner and its group may use the API. Must be called inside a tokio runtime.
    pub fn unix(path: impl AsRef<Path>) -> io::Result<Listener> {
        let path = path.as_ref();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Binds a TCP address (`127.0.0.1:0` picks a free port; see [`Listener::local_addr`]).
    pub async fn tcp(addr: impl ToSocketAddrs) -> io::Result<Listener> {
        Ok(Listener::Tcp(TcpListener::bind(addr).await?))
    }

    /// The bound TCP address (None for a Unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix { .. } => None,
        }
    }

    /// The socket path (None for TCP).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Listener::Unix { path, .. } => Some(path),
            Listener::Tcp(_) => None,
        }
    }

    /// The endpoint a client passes to reach this listener (`unix:///…` or `http://…`).
    pub fn endpoint(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix://{}", path.display()),
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("http://{a}"),
                Err(_) => String::new(),
            },
        }
    }
}

/// Settings of the API beyond the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Entities per page (fleet's `token_limit`, default 100). Tokens carry it, and a token
    /// minted for another limit is refused.
    pub token_limit: u16,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            token_limit: DEFAULT_TOKEN_LIMIT,
        }
    }
}

/// Serves the API from `store` on `listener` until the task is dropped, with fleet's defaults.
pub async fn serve<S: FleetStore>(store: Arc<S>, listener: Listener) -> io::Result<()> {
    serve_until(
        store,
        listener,
        ApiConfig::default(),
        std::future::pending(),
    )
    .await
}

/// Serves until `shutdown` completes; then stops accepting and removes the Unix socket file.
/// Connections already open finish on their own.
pub async fn serve_until<S: FleetStore>(
    store: Arc<S>,
    listener: Listener,
    config: ApiConfig,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let config = Arc::new(config);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => match accepted {
                Ok(io) => {
                    let store = store.clone();
                    let config = config.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<Incoming>| {
                            let store = store.clone();
                            let config = config.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    handle_request(&*store, &config, req).await,
                                )
                            }
                        });
                        if let Err(e) = http1::Builder::new().serve_connection(io, service).await {
                            tracing::debug!("fleet API connection: {e}");
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: say so and keep serving.
                    tracing::warn!("fleet API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    if let Listener::Unix { path, .. } = &listener {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Conn::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
        }
    }
}

async fn accept(listener: &Listener) -> io::Result<TokioIo<Conn>> {
    let conn = match listener {
        Listener::Unix { listener, .. } => Conn::Unix(listener.accept().await?.0),
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Conn::Tcp(s)
        }
    };
    Ok(TokioIo::new(conn))
}

/// Largest request body read (a unit file of several megabytes is already absurd).
const MAX_BODY: usize = 8 << 20;

async fn handle_request<S: FleetStore>(
    store: &S,
    config: &ApiConfig,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let content_types: Vec<String> = parts
        .headers
        .get_all(CONTENT_TYPE)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return if too_big {
                error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                error(StatusCode::BAD_REQUEST, format!("unable to read body: {e}"))
            };
        }
    };
    let request = ApiRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        content_types,
        body,
    };
    tracing::debug!("HTTP {} {}", request.method, parts.uri);
    respond(store, config, request).await
}

/// One request, as the router sees it (exposed so the API can be driven without sockets).
#[derive(Debug, Clone)]
pub struct ApiRequest {
    pub method: Method,
    /// The raw (still percent-encoded) path.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    /// Every `Content-Type` header value sent.
    pub content_types: Vec<String>,
    pub body: Bytes,
}

const PREFIX: &str = "/fleet/v1";

/// Routes one request and builds its answer.
pub async fn respond<S: FleetStore>(
    store: &S,
    config: &ApiConfig,
    req: ApiRequest,
) -> Response<Full<Bytes>> {
    let Ok(path) = percent_decode_str(&req.path).decode_utf8() else {
        return error(StatusCode::BAD_REQUEST, "path is not valid UTF-8");
    };
    let path = path.into_owned();
    let query = parse_query(&req.query);

    if path == "/" || path == PREFIX {
        return error(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let Some(rest) = path.strip_prefix(PREFIX).and_then(|r| r.strip_prefix('/')) else {
        return error(StatusCode::NOT_FOUND, "");
    };
    match rest {
        "units" => match req.method {
            Method::GET => list_units(store, config, &query).await,
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET supported against this resource",
            ),
        },
        "state" => match req.method {
            Method::GET => list_states(store, config, &query).await,
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET supported against this resource",
            ),
        },
        "machines" => match req.method {
            Method::GET => list_machines(store, config, &query).await,
            Method::PATCH => patch_machines(store, &req.body).await,
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and PATCH supported against this resource",
            ),
        },
        "discovery.json" => match req.method {
            Method::GET => {
                let mut r = Response::new(Full::new(Bytes::from_static(DISCOVERY.as_bytes())));
                r.headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                stamp(r)
            }
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only HTTP GET supported against this resource",
            ),
        },
        _ => match rest.strip_prefix("units/") {
            Some(item) if !item.is_empty() && !item.contains('/') => match req.method {
                Method::GET => get_unit(store, item).await,
                Method::DELETE => destroy_unit(store, item).await,
                Method::PUT => put_unit(store, item, &req.content_types, &req.body).await,
                _ => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET, PUT and DELETE supported against this resource",
                ),
            },
            _ => error(StatusCode::NOT_FOUND, ""),
        },
    }
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

fn first<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// fleet's `nextPageToken` handling: none → first page; one → decoded and checked; more → 400.
fn page_token(config: &ApiConfig, query: &[(String, String)]) -> Result<PageToken, String> {
    let values: Vec<&str> = query
        .iter()
        .filter(|(k, _)| k == "nextPageToken")
        .map(|(_, v)| v.as_str())
        .collect();
    match values.as_slice() {
        [] => Ok(PageToken::first(config.token_limit)),
        [one] => {
            let token = PageToken::decode(one)
                .ok_or_else(|| "invalid value of nextPageToken query parameter".to_string())?;
            if token.limit != config.token_limit {
                return Err(format!("token limit must be {}", config.token_limit));
            }
            if token.page == 0 {
                return Err("token page must be greater than zero".into());
            }
            Ok(token)
        }
        _ => Err("too many values for page token".into()),
    }
}

/// The page `token` asks for of what the store `listed`, wrapped by `page` into the answer.
fn paged<T: Clone, P: Serialize>(
    token: PageToken,
    listed: Result<Vec<T>, StoreError>,
    page: impl FnOnce(Vec<T>, Option<String>) -> P,
) -> Response<Full<Bytes>> {
    match listed {
        Ok(all) => {
            let (items, next) = token.slice(&all);
            json(StatusCode::OK, &page(items, next.map(PageToken::encode)))
        }
        Err(e) => store_error(e),
    }
}

async fn list_units<S: FleetStore>(
    store: &S,
    config: &ApiConfig,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    let token = match page_token(config, query) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    paged(token, store.units().await, |units, next_page_token| {
        UnitPage {
            units,
            next_page_token,
        }
    })
}

async fn list_states<S: FleetStore>(
    store: &S,
    config: &ApiConfig,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    let token = match page_token(config, query) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let machine = first(query, "machineID").filter(|m| !m.is_empty());
    let unit = first(query, "unitName").filter(|u| !u.is_empty());
    let listed = store.unit_states().await.map(|all| {
        all.into_iter()
            .filter(|s| machine.is_none_or(|m| s.machine_id == m))
            .filter(|s| unit.is_none_or(|u| s.name == u))
            .collect()
    });
    paged(token, listed, |states, next_page_token| UnitStatePage {
        states,
        next_page_token,
    })
}

async fn list_machines<S: FleetStore>(
    store: &S,
    config: &ApiConfig,
    query: &[(String, String)],
) -> Response<Full<Bytes>> {
    let token = match page_token(config, query) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    paged(
        token,
        store.machines().await,
        |machines, next_page_token| MachinePage {
            machines,
            next_page_token,
        },
    )
}

async fn get_unit<S: FleetStore>(store: &S, name: &str) -> Response<Full<Bytes>> {
    match store.unit(name).await {
        Ok(Some(unit)) => json(StatusCode::OK, &unit),
        Ok(None) => error(StatusCode::NOT_FOUND, "unit does not exist"),
        Err(e) => store_error(e),
    }
}

async fn destroy_unit<S: FleetStore>(store: &S, name: &str) -> Response<Full<Bytes>> {
    match store.destroy_unit(name).await {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(StoreError::UnitNotFound(_)) => error(StatusCode::NOT_FOUND, "unit does not exist"),
        Err(e) => store_error(e),
    }
}

fn check_content_type(content_types: &[String]) -> Result<(), String> {
    if content_types.len() != 1 {
        return Err(format!(
            "expected 1 Content-Type, got {}",
            content_types.len()
        ));
    }
    let media = content_types[0].split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return Err("only acceptable Content-Type is application/json".into());
    }
    Ok(())
}

/// fleet's PUT: create a unit (201), or set the desired state of an existing one (204).
async fn put_unit<S: FleetStore>(
    store: &S,
    item: &str,
    content_types: &[String],
    body: &[u8],
) -> Response<Full<Bytes>> {
    if let Err(m) = check_content_type(content_types) {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, m);
    }
    let req: UnitRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unable to decode body: {e}"),
            )
        }
    };
    let name = match req.name.as_deref() {
        None | Some("") => item,
        Some(n) if n == item => item,
        Some(n) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("name in URL {item:?} differs from unit name in request body {n:?}"),
            )
        }
    };
    if let Err(m) = names::validate_name(name) {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let desired = match req.desired_state.as_deref() {
        None | Some("") => None,
        Some(word) => match TargetState::parse(word) {
            Some(s) => Some(s),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid desiredState {word:?}: expect inactive, loaded or launched"),
                )
            }
        },
    };
    if names::is_template(name) && desired.is_some_and(|d| d != TargetState::Inactive) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("cannot activate template {name:?}"),
        );
    }
    let options: Vec<UnitOption> = req.options.into_iter().map(UnitOption::from).collect();

    let existing = match store.unit(name).await {
        Ok(u) => u,
        Err(e) => return store_error(e),
    };
    match existing {
        None => {
            if options.is_empty() {
                return error(
                    StatusCode::CONFLICT,
                    "unit does not exist and options field empty",
                );
            }
            if let Err(m) = validate_options(name, &options) {
                return error(StatusCode::BAD_REQUEST, m);
            }
            // As fleet: a new unit without a desired state is created inactive.
            let desired = desired.unwrap_or(TargetState::Inactive);
            match store.create_unit(name, options, desired).await {
                Ok(true) => empty(StatusCode::CREATED),
                Ok(false) => empty(StatusCode::NO_CONTENT),
                Err(e) => store_error(e),
            }
        }
        Some(unit) => {
            let Some(desired) = desired else {
                return error(
                    StatusCode::CONFLICT,
                    "must provide DesiredState to update existing unit",
                );
            };
            if !options.is_empty() && options != unit.options {
                return error(
                    StatusCode::CONFLICT,
                    format!("unit {name} already exists with different options"),
                );
            }
            match store.set_desired_state(name, desired).await {
                Ok(()) => empty(StatusCode::NO_CONTENT),
                Err(e) => store_error(e),
            }
        }
    }
}

/// fleet's `ValidateOptions`: the `[X-Fleet]` requirements must make sense together
/// (checked by [`Requirements`], as the engine reads them).
fn validate_options(name: &str, options: &[UnitOption]) -> Result<(), String> {
    let name = UnitName::parse(name).map_err(|e| e.to_string())?;
    Requirements::from_unit(&name, &UnitFile::from_options(options))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// fleet's metadata PATCH: every operation is checked before any is applied; then they run in
/// order (consecutive operations on one machine go to the store together).
async fn patch_machines<S: FleetStore>(store: &S, body: &[u8]) -> Response<Full<Bytes>> {
    let ops: Vec<MetadataOp> = match serde_json::from_slice(body) {
        Ok(ops) => ops,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut batches: Vec<(String, Vec<MetadataChange>)> = Vec::new();
    for op in &ops {
        if !matches!(op.op.as_str(), "add" | "remove" | "replace") {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid op: expect add, remove, or replace",
            );
        }
        let Some((machine, key)) = op.target() else {
            return error(StatusCode::BAD_REQUEST, "machine metadata path invalid");
        };
        if op.op != "remove" && op.value.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid value: add and replace require a value",
            );
        }
        let change = if op.op == "remove" {
            MetadataChange::Remove {
                key: key.to_string(),
            }
        } else {
            MetadataChange::Set {
                key: key.to_string(),
                value: op.value.clone(),
            }
        };
        match batches.last_mut() {
            Some((m, changes)) if m == machine => changes.push(change),
            _ => batches.push((machine.to_string(), vec![change])),
        }
    }
    for (machine, changes) in batches {
        if let Err(e) = store.change_machine_metadata(&machine, changes).await {
            return store_error(e);
        }
    }
    empty(StatusCode::NO_CONTENT)
}

fn store_error(e: StoreError) -> Response<Full<Bytes>> {
    let status = match &e {
        StoreError::UnitNotFound(_) | StoreError::MachineNotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Conflict(_) => StatusCode::CONFLICT,
        StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        StoreError::Backend(_) => {
            tracing::error!("fleet API: {e}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e.to_string())
}

fn stamp(mut r: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    r.headers_mut().insert(
        SERVER,
        HeaderValue::from_static(concat!("fleetd/", env!("CARGO_PKG_VERSION"))),
    );
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            stamp(r)
        }
        Err(e) => {
            tracing::error!("fleet API: encoding a response: {e}");
            empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &ErrorBody::new(status.as_u16(), message))
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    stamp(r)
}

/// A Google API discovery document for fleet v1 (served at `/fleet/v1/discovery.json` as fleet
/// did), describing the three resources, so client generators can work from it. As fleet's, its
/// `rootUrl` is a placeholder the client must replace.
const DISCOVERY: &str = r#"{
  "kind": "discovery#restDescription",
  "discoveryVersion": "v1",
  "id": "fleet:v1",
  "name": "schema",
  "version": "v1",
  "title": "fleet API",
  "description": "",
  "documentationLink": "http://github.com/coreos/fleet",
  "protocol": "rest",
  "icons": {"x16": "", "x32": ""},
  "labels": [],
  "baseUrl": "$ENDPOINT/fleet/v1/",
  "basePath": "/fleet/v1/",
  "rootUrl": "$ENDPOINT/",
  "servicePath": "fleet/v1/",
  "batchPath": "batch",
  "parameters": {},
  "auth": {},
  "schemas": {
    "Machine": {"id": "Machine", "type": "object", "properties": {
      "id": {"type": "string"},
      "primaryIP": {"type": "string"},
      "metadata": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}}},
    "MachinePage": {"id": "MachinePage", "type": "object", "properties": {
      "machines": {"type": "array", "items": {"$ref": "Machine"}},
      "nextPageToken": {"type": "string"}}},
    "UnitOption": {"id": "UnitOption", "type": "object", "properties": {
      "section": {"type": "string"}, "name": {"type": "string"}, "value": {"type": "string"}}},
    "Unit": {"id": "Unit", "type": "object", "properties": {
      "name": {"type": "string"},
      "options": {"type": "array", "items": {"$ref": "UnitOption"}},
      "desiredState": {"type": "string", "enum": ["inactive", "loaded", "launched"]},
      "currentState": {"type": "string", "enum": ["inactive", "loaded", "launched"]},
      "machineID": {"type": "string"}}},
    "UnitPage": {"id": "UnitPage", "type": "object", "properties": {
      "units": {"type": "array", "items": {"$ref": "Unit"}},
      "nextPageToken": {"type": "string"}}},
    "UnitState": {"id": "UnitState", "type": "object", "properties": {
      "name": {"type": "string"},
      "hash": {"type": "string"},
      "machineID": {"type": "string"},
      "systemdLoadState": {"type": "string"},
      "systemdActiveState": {"type": "string"},
      "systemdSubState": {"type": "string"}}},
    "UnitStatePage": {"id": "UnitStatePage", "type": "object", "properties": {
      "states": {"type": "array", "items": {"$ref": "UnitState"}},
      "nextPageToken": {"type": "string"}}}
  },
  "resources": {
    "Machines": {"methods": {
      "List": {"id": "fleet.Machine.List", "path": "machines", "httpMethod": "GET",
        "parameters": {"nextPageToken": {"type": "string", "location": "query"}},
        "response": {"$ref": "MachinePage"}}}},
    "Units": {"methods": {
      "List": {"id": "fleet.Unit.List", "path": "units", "httpMethod": "GET",
        "parameters": {"nextPageToken": {"type": "string", "location": "query"}},
        "response": {"$ref": "UnitPage"}},
      "Get": {"id": "fleet.Unit.Get", "path": "units/{unitName}", "httpMethod": "GET",
        "parameters": {"unitName": {"type": "string", "required": true, "location": "path"}},
        "parameterOrder": ["unitName"],
        "response": {"$ref": "Unit"}},
      "Delete": {"id": "fleet.Unit.Delete", "path": "units/{unitName}", "httpMethod": "DELETE",
        "parameters": {"unitName": {"type": "string", "required": true, "location": "path"}},
        "parameterOrder": ["unitName"]},
      "Set": {"id": "fleet.Unit.Set", "path": "units/{unitName}", "httpMethod": "PUT",
        "parameters": {"unitName": {"type": "string", "required": true, "location": "path"}},
        "parameterOrder": ["unitName"],
        "request": {"$ref": "Unit"}}}},
    "UnitState": {"methods": {
      "List": {"id": "fleet.UnitState.List", "path": "state", "httpMethod": "GET",
        "parameters": {
          "nextPageToken": {"type": "string", "location": "query"},
          "unitName": {"type": "string", "location": "query"},
          "machineID": {"type": "string", "location": "query"}},
        "response": {"$ref": "UnitStatePage"}}}}
  }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(section: &str, name: &str, value: &str) -> UnitOption {
        UnitOption {
            section: section.into(),
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn option_requirements() {
        let check = |options: &[UnitOption]| validate_options("a.service", options);
        assert!(check(&[opt("Service", "ExecStart", "/bin/true")]).is_ok());
        assert!(check(&[
            opt("X-Fleet", "MachineOf", "db.service"),
            opt("X-Fleet", "Conflicts", "d*.service"),
        ])
        .unwrap_err()
        .contains("unresolvable"));
        assert!(check(&[
            opt("X-Fleet", "MachineID", "abc"),
            opt("X-Fleet", "Global", "true")
        ])
        .is_err());
        assert!(check(&[opt("X-Fleet", "Bogus", "1")]).is_err());
    }

    #[test]
    fn discovery_is_json() {
        let v: serde_json::Value = serde_json::from_str(DISCOVERY).unwrap();
        assert_eq!(v["id"], "fleet:v1");
    }

    #[test]
    fn queries() {
        let q = parse_query("nextPageToken=ZAACAA%3D%3D&unitName=a%40b.service&x");
        assert_eq!(first(&q, "nextPageToken"), Some("ZAACAA=="));
        assert_eq!(first(&q, "unitName"), Some("a@b.service"));
        assert_eq!(first(&q, "x"), Some(""));
    }
}
