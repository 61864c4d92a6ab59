//! flanneld's HTTP endpoints (`--healthz-ip`, `--healthz-port`): `/healthz` answers 200 while
//! the daemon runs; `/ready` answers 200 only once this machine's subnet.env is written and
//! the routes to every other machine known so far are in place, and 503 before.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Shared between the daemon, which sets it, and the endpoint, which reports it.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The status line and body for a request line such as `GET /ready HTTP/1.1`.
fn answer(request_line: &str, readiness: &Readiness) -> (&'static str, &'static str) {
    let mut words = request_line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" && method != "HEAD" {
        return ("405 Method Not Allowed", "method not allowed\n");
    }
    match path {
        "/healthz" => ("200 OK", "ok\n"),
        "/ready" if readiness.is_ready() => ("200 OK", "ready\n"),
        "/ready" => ("503 Service Unavailable", "not ready\n"),
        _ => ("404 Not Found", "not found\n"),
    }
}

/// Binds `addr` and serves the endpoints until the task is dropped.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, readiness: Arc<Readiness>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let readiness = Arc::clone(&readiness);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let n = match tokio::time::timeout(
                std::time::Duration::from_secs(5),
                stream.read(&mut buf),
            )
            .await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = answer(text.lines().next().unwrap_or(""), &readiness);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_set() {
        let r = Readiness::default();
        assert_eq!(answer("GET /healthz HTTP/1.1", &r).0, "200 OK");
        assert_eq!(
            answer("GET /ready HTTP/1.1", &r).0,
            "503 Service Unavailable"
        );
        r.set_ready(true);
        assert_eq!(answer("GET /ready HTTP/1.1", &r).0, "200 OK");
        assert_eq!(answer("GET /other HTTP/1.1", &r).0, "404 Not Found");
        assert_eq!(
            answer("POST /ready HTTP/1.1", &r).0,
            "405 Method Not Allowed"
        );
    }
}
