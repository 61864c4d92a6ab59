//! Network datasources against a real HTTP server that each test starts on 127.0.0.1.
//! Nothing here contacts any other address: every context names the test server explicitly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisioner::datasource::ec2::Ec2;
use provisioner::datasource::{
    first_available, network_sources, Context, Datasource, DatasourceError, HttpError, RetryPolicy,
};

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

fn reply(status: u16, body: impl Into<Vec<u8>>) -> Response {
    Response {
        status,
        body: body.into(),
    }
}

/// A one-thread HTTP/1.1 server answering from a handler, recording every request. The thread
/// lives until the test process ends.
struct TestServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl TestServer {
    fn start(handler: impl Fn(&Request, usize) -> Response + Send + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let count = {
                    let mut recorded = recorded.lock().unwrap();
                    recorded.push(request.clone());
                    recorded.len()
                };
                let response = handler(&request, count);
                write_response(stream, &response);
            }
        });
        TestServer { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let request = Request {
        method,
        path,
        headers,
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(request)
}

fn write_response(mut stream: TcpStream, response: &Response) {
    let head = format!(
        "HTTP/1.1 {} Canned\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&response.body);
}

/// Fast enough for tests, still exercising several attempts.
fn quick_retry(total: Duration) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        total,
        request_timeout: Duration::from_secs(2),
    }
}

fn context(cmdline: &str, root: &std::path::Path) -> Context {
    Context {
        cmdline: cmdline.to_string(),
        root: root.to_path_buf(),
        mount_dir: root.join("mnt"),
        retry: quick_retry(Duration::from_secs(10)),
        metadata_url: None,
        user_data_file: root.join("user-data"),
    }
}

const TOKEN: &str = "AQAEAtesttoken==";

#[derive(Clone, Copy)]
struct Imds {
    /// Answer the token PUT (IMDSv2) or refuse it with this status.
    token_refusal: Option<u16>,
    /// GETs must carry the token.
    require_token: bool,
    user_data: Option<&'static str>,
    /// Answer the first N requests with 503.
    fail_first: usize,
}

fn imds(config: Imds) -> TestServer {
    TestServer::start(move |request, count| {
        if count <= config.fail_first {
            return reply(503, "warming up");
        }
        if request.method == "PUT" {
            if request.path != "/latest/api/token" {
                return reply(404, "");
            }
            if let Some(status) = config.token_refusal {
                return reply(status, "");
            }
            if request.header("X-aws-ec2-metadata-token-ttl-seconds") != Some("21600") {
                return reply(400, "missing ttl");
            }
            return reply(200, TOKEN);
        }
        if config.require_token && request.header("X-aws-ec2-metadata-token") != Some(TOKEN) {
            return reply(401, "");
        }
        match request.path.as_str() {
            "/latest/user-data" => match config.user_data {
                Some(data) => reply(200, data),
                None => reply(404, ""),
            },
            "/latest/meta-data/local-ipv4" => reply(200, "10.0.0.5"),
            "/latest/meta-data/public-ipv4" => reply(200, "203.0.113.7"),
            "/latest/meta-data/hostname" => reply(200, "ip-10-0-0-5.ec2.internal"),
            "/latest/meta-data/instance-id" => reply(200, "i-0123456789abcdef0"),
            "/latest/meta-data/public-keys/" => reply(200, "0=first\n1=second"),
            "/latest/meta-data/public-keys/0/openssh-key" => reply(200, "ssh-ed25519 AAAA first\n"),
            "/latest/meta-data/public-keys/1/openssh-key" => reply(200, "ssh-rsa BBBB second\n"),
            _ => reply(404, "not here"),
        }
    })
}

const CLOUD_CONFIG: &str = "#cloud-config\nhostname: test\n";

#[test]
fn ec2_imdsv2_happy_path() {
    let server = imds(Imds {
        token_refusal: None,
        require_token: true,
        user_data: Some(CLOUD_CONFIG),
        fail_first: 0,
    });
    let ec2 = Ec2::with_base_url(&server.url(), quick_retry(Duration::from_secs(10)));
    assert!(ec2.available());
    let fetched = ec2.fetch().unwrap();
    assert_eq!(fetched.source, format!("ec2:{}", server.url()));
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    let meta = &fetched.metadata;
    assert_eq!(meta.private_ipv4, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(meta.public_ipv4, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(meta.hostname.as_deref(), Some("ip-10-0-0-5.ec2.internal"));
    assert_eq!(meta.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(
        meta.ssh_public_keys,
        vec!["ssh-ed25519 AAAA first", "ssh-rsa BBBB second"]
    );
    assert_eq!(server.count("PUT", "/latest/api/token"), 1);
    // Every GET carried the token (the server answers 401 otherwise, which would have failed).
    assert!(server
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .all(|r| r.header("X-aws-ec2-metadata-token") == Some(TOKEN)));
}

#[test]
fn ec2_falls_back_to_imdsv1_when_token_refused() {
    for refusal in [403, 405] {
        let server = imds(Imds {
            token_refusal: Some(refusal),
            require_token: false,
            user_data: Some(CLOUD_CONFIG),
            fail_first: 0,
        });
        let ec2 = Ec2::with_base_url(&server.url(), quick_retry(Duration::from_secs(10)));
        let fetched = ec2.fetch().unwrap();
        assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
        assert_eq!(
            fetched.metadata.private_ipv4,
            Some("10.0.0.5".parse().unwrap())
        );
        assert!(server
            .requests()
            .iter()
            .filter(|r| r.method == "GET")
            .all(|r| r.header("X-aws-ec2-metadata-token").is_none()));
    }
}

#[test]
fn ec2_missing_user_data_is_not_an_error() {
    let server = imds(Imds {
        token_refusal: None,
        require_token: true,
        user_data: None,
        fail_first: 0,
    });
    let ec2 = Ec2::with_base_url(&server.url(), quick_retry(Duration::from_secs(10)));
    let fetched = ec2.fetch().unwrap();
    assert_eq!(fetched.user_data, None);
    assert_eq!(
        fetched.metadata.private_ipv4,
        Some("10.0.0.5".parse().unwrap())
    );
    // A 404 is final: asked once.
    assert_eq!(server.count("GET", "/latest/user-data"), 1);
}

#[test]
fn ec2_retries_503_then_succeeds() {
    let server = imds(Imds {
        token_refusal: None,
        require_token: true,
        user_data: Some(CLOUD_CONFIG),
        fail_first: 3,
    });
    let ec2 = Ec2::with_base_url(&server.url(), quick_retry(Duration::from_secs(10)));
    let fetched = ec2.fetch().unwrap();
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    // The three 503s all hit the token request, then it succeeded once.
    assert_eq!(server.count("PUT", "/latest/api/token"), 4);
}

#[test]
fn ec2_base_url_from_kernel_command_line() {
    let server = imds(Imds {
        token_refusal: None,
        require_token: true,
        user_data: Some(CLOUD_CONFIG),
        fail_first: 0,
    });
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        &format!(
            "console=ttyS0 keel.metadata_url=\"{}/\" quiet",
            server.url()
        ),
        root.path(),
    );
    let sources = network_sources(&ctx);
    let fetched = first_available(&sources).unwrap().unwrap();
    assert_eq!(fetched.source, format!("ec2:{}", server.url()));
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
}

#[test]
fn no_network_source_available_without_configuration() {
    // An empty root (no DMI) and no command-line arguments: nothing to try, and no waiting.
    let root = tempfile::tempdir().unwrap();
    let ctx = context("console=ttyS0 root=/dev/vda", root.path());
    let start = Instant::now();
    let sources = network_sources(&ctx);
    assert!(sources.iter().all(|source| !source.available()));
    assert!(first_available(&sources).is_none());
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn ec2_detected_from_dmi() {
    let root = tempfile::tempdir().unwrap();
    let dmi = root.path().join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").unwrap();
    let ctx = context("", root.path());
    // Only `available()` is called: the default address must never be contacted by a test.
    assert!(Ec2::new(&ctx).available());
    assert_eq!(
        Ec2::new(&ctx).base_url(),
        provisioner::datasource::ec2::DEFAULT_BASE_URL
    );
}

#[test]
fn gives_up_on_refused_connections_within_total() {
    // A port that was just free: connecting is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let total = Duration::from_secs(1);
    let ec2 = Ec2::with_base_url(&format!("http://127.0.0.1:{port}"), quick_retry(total));
    let start = Instant::now();
    let error = ec2.fetch().unwrap_err();
    let elapsed = start.elapsed();
    match &error {
        DatasourceError::GaveUp { attempts, .. } => assert!(*attempts >= 3, "{error}"),
        other => panic!("expected GaveUp, got {other}"),
    }
    assert!(elapsed >= Duration::from_millis(500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert!(error.to_string().contains("ec2: gave up on PUT"), "{error}");
}

#[test]
fn gives_up_on_persistent_503_within_total() {
    let server = imds(Imds {
        token_refusal: None,
        require_token: true,
        user_data: Some(CLOUD_CONFIG),
        fail_first: usize::MAX,
    });
    let ec2 = Ec2::with_base_url(&server.url(), quick_retry(Duration::from_secs(1)));
    let start = Instant::now();
    let error = ec2.fetch().unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    match error {
        DatasourceError::GaveUp {
            last: HttpError::Status(503),
            attempts,
            ..
        } => assert_eq!(attempts as usize, server.requests().len()),
        other => panic!("expected GaveUp after 503s, got {other}"),
    }
}

#[test]
fn silent_server_is_cut_off_by_request_timeout() {
    // Accepts connections (the kernel's backlog does) but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let policy = RetryPolicy {
        request_timeout: Duration::from_millis(300),
        ..quick_retry(Duration::from_secs(1))
    };
    let ec2 = Ec2::with_base_url(&url, policy);
    let start = Instant::now();
    let error = ec2.fetch().unwrap_err();
    assert!(matches!(error, DatasourceError::GaveUp { .. }), "{error}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(listener);
}

fn seed_server() -> TestServer {
    TestServer::start(|request, _| {
        match request.path.as_str() {
        "/seed/user-data" => reply(200, CLOUD_CONFIG),
        "/seed/meta-data" => reply(
            200,
            "instance-id: iid-seed\nlocal-hostname: seeded\npublic-keys:\n  - ssh-ed25519 AAAA seed\n",
        ),
        "/config.yml" => reply(200, CLOUD_CONFIG),
        _ => reply(404, ""),
    }
    })
}

#[test]
fn nocloud_net_from_kernel_command_line() {
    let server = seed_server();
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        &format!("quiet ds=nocloud-net;s={}/seed/", server.url()),
        root.path(),
    );
    let sources = network_sources(&ctx);
    let fetched = first_available(&sources).unwrap().unwrap();
    assert_eq!(
        fetched.source,
        format!("nocloud-net:{}/seed/", server.url())
    );
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    assert_eq!(fetched.metadata.instance_id.as_deref(), Some("iid-seed"));
    assert_eq!(fetched.metadata.hostname.as_deref(), Some("seeded"));
    assert_eq!(
        fetched.metadata.ssh_public_keys,
        vec!["ssh-ed25519 AAAA seed"]
    );
}

#[test]
fn nocloud_net_quoted_with_hostname_override() {
    let server = seed_server();
    let root = tempfile::tempdir().unwrap();
    // Quoted, without the trailing '/', with h= overriding the seed's local-hostname.
    let ctx = context(
        &format!("ds=\"nocloud-net;s={}/seed;h=from-cmdline\"", server.url()),
        root.path(),
    );
    let fetched = first_available(&network_sources(&ctx)).unwrap().unwrap();
    assert_eq!(fetched.metadata.hostname.as_deref(), Some("from-cmdline"));
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
    assert_eq!(server.count("GET", "/seed/user-data"), 1);
}

#[test]
fn cloud_config_url_over_http() {
    let server = seed_server();
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        &format!("cloud-config-url={}/config.yml", server.url()),
        root.path(),
    );
    let fetched = first_available(&network_sources(&ctx)).unwrap().unwrap();
    assert_eq!(
        fetched.source,
        format!("cmdline:{}/config.yml", server.url())
    );
    assert_eq!(fetched.user_data.as_deref(), Some(CLOUD_CONFIG.as_bytes()));
}

#[test]
fn cloud_config_url_404_is_final() {
    let server = seed_server();
    let root = tempfile::tempdir().unwrap();
    let ctx = context(
        &format!("cloud-config-url={}/missing.yml", server.url()),
        root.path(),
    );
    let start = Instant::now();
    let error = first_available(&network_sources(&ctx))
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            DatasourceError::Http {
                error: HttpError::Status(404),
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(server.requests().len(), 1);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn one_deadline_bounds_the_whole_fetch() {
    // Every document answers 503 three times before succeeding: each alone would make it
    // within the total, all of them together do not.
    let per_path = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    let server = TestServer::start(move |request, _| {
        let mut per_path = per_path.lock().unwrap();
        let seen = per_path.entry(request.path.clone()).or_default();
        *seen += 1;
        if *seen <= 3 {
            return reply(503, "");
        }
        match request.path.as_str() {
            "/latest/api/token" => reply(200, TOKEN),
            "/latest/user-data" => reply(200, CLOUD_CONFIG),
            _ => reply(404, ""),
        }
    });
    let policy = RetryPolicy {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        total: Duration::from_millis(600),
        request_timeout: Duration::from_secs(1),
    };
    let start = Instant::now();
    let error = Ec2::with_base_url(&server.url(), policy)
        .fetch()
        .unwrap_err();
    assert!(matches!(error, DatasourceError::GaveUp { .. }), "{error}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
