//! A real etcd (Debian's etcd-server) for the agents' tests: one member on free ports (of
//! loopback, or of an address the test owns)
//! with its data in a temporary directory, stopped and removed on drop. It can be stopped and
//! started again on the same ports and data, for tests of how agents ride out an etcd restart.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::EtcdConfig;

pub struct TestEtcd {
    dir: tempfile::TempDir,
    /// The address etcd listens on: loopback, or a test bridge's address that network
    /// namespaces reach.
    ip: std::net::Ipv4Addr,
    client_port: u16,
    peer_port: u16,
    /// Serve the v2 keys API too (`--enable-v2`), as an etcd discovery service does.
    v2: bool,
    child: Option<Child>,
}

/// The etcd server binary; `KEEL_ETCD` overrides it.
fn etcd_binary() -> PathBuf {
    std::env::var_os("KEEL_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

fn free_port(ip: std::net::Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl TestEtcd {
    /// Starts etcd and waits until it answers. Panics with the package to install when the
    /// binary is missing (this is test support: a clear panic is the error report).
    pub fn start() -> TestEtcd {
        TestEtcd::start_on(std::net::Ipv4Addr::LOCALHOST)
    }

    /// Like [`TestEtcd::start`], listening on `ip` (an address of this host that the test
    /// owns, such as a test bridge's, so that its network namespaces reach etcd).
    pub fn start_on(ip: std::net::Ipv4Addr) -> TestEtcd {
        TestEtcd::start_with(ip, false)
    }

    /// Like [`TestEtcd::start`], also serving etcd's v2 keys API: a discovery service for
    /// etcd members that bootstrap with a discovery URL (`<endpoint>/v2/keys/<path>`).
    pub fn start_with_v2_api() -> TestEtcd {
        TestEtcd::start_with(std::net::Ipv4Addr::LOCALHOST, true)
    }

    fn start_with(ip: std::net::Ipv4Addr, v2: bool) -> TestEtcd {
        let binary = etcd_binary();
        assert!(
            binary.is_file(),
            "{} not found: install the Debian package etcd-server",
            binary.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("keel-etcd-")
            .tempdir()
            .expect("a temporary directory for etcd");
        let mut etcd = TestEtcd {
            dir,
            ip,
            client_port: free_port(ip),
            peer_port: free_port(ip),
            v2,
            child: None,
        };
        etcd.start_process();
        etcd
    }

    fn start_process(&mut self) {
        let client = format!("http://{}:{}", self.ip, self.client_port);
        let peer = format!("http://{}:{}", self.ip, self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new(etcd_binary())
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            // Small and quick: tests write little and want leases to expire on time.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .arg("--quota-backend-bytes")
            .arg("268435456")
            .arg(format!("--enable-v2={}", self.v2))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting etcd");
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30));
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let health = format!("{}:{}", self.ip, self.client_port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("etcd exited ({status}); log:\n{}", self.log());
                }
            }
            if Self::healthy(&health) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy in {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// GET /health over a plain socket: no HTTP client needed for one request.
    fn healthy(addr: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.contains("\"health\":\"true\"") || reply.contains("\"health\": \"true\"")
    }

    /// The client URL, e.g. `http://127.0.0.1:43127`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.client_port)
    }

    pub fn config(&self) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint()],
            ..EtcdConfig::default()
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd (SIGKILL: as abrupt as a crash); `start_again` brings it back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data after [`TestEtcd::stop`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd is still running");
        self.start_process();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_real_etcd_answers_and_survives_a_restart() {
        let mut etcd = TestEtcd::start();
        let mut client = etcd.config().connect().await.unwrap();
        client.put("/keel/test", "1", None).await.unwrap();
        etcd.stop();
        etcd.start_again();
        let mut client = etcd
            .config()
            .connect_retrying(Duration::from_secs(10))
            .await
            .unwrap();
        let got = client.get("/keel/test", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"1");
    }
}
