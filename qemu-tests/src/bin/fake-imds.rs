//! A stand-in EC2 instance metadata service for the VM tests. QEMU starts it for each guest
//! connection to the forwarded address (`guestfwd=...-cmd:`), with the connection on stdin and
//! stdout; it answers one request and exits. Responses are files under the directory given as
//! the only argument (`latest/user-data`, `latest/meta-data/local-ipv4`, ...; a folder answers
//! with its entries' names), and every request is appended to `requests.log` there so the test
//! can check the IMDSv2 handshake.
//!
//! Nothing may go to stderr: QEMU hands the program the guest connection on all three.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

/// The session token it hands out and then requires on every GET, as IMDSv2 does.
const TOKEN: &str = "keel-test-imds-token";

fn main() {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        std::process::exit(2);
    };
    let mut reader = BufReader::new(std::io::stdin().lock());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    // Drain a body so the client is not cut off mid-write.
    let length: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _ = std::io::copy(&mut (&mut reader).take(length), &mut std::io::sink());

    let mut words = request_line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let token = match header("x-aws-ec2-metadata-token") {
        None => "absent",
        Some(TOKEN) => "valid",
        Some(_) => "wrong",
    };
    let (status, body) = answer(&dir, &method, &path, token, &header);
    log(
        &dir,
        &format!("{method} {path} token={token} status={status}"),
    );
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = out.write_all(&body);
    let _ = out.flush();
}

fn answer<'a>(
    dir: &Path,
    method: &str,
    path: &str,
    token: &str,
    header: &impl Fn(&str) -> Option<&'a str>,
) -> (u16, Vec<u8>) {
    match method {
        "PUT" if path == "/latest/api/token" => {
            if header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                return (400, b"missing TTL header".to_vec());
            }
            (200, TOKEN.as_bytes().to_vec())
        }
        "GET" if token != "valid" => (401, Vec::new()),
        "GET" => match file_for(dir, path) {
            Some(file) if file.is_dir() => {
                let mut names: Vec<String> = std::fs::read_dir(&file)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                (200, names.join("\n").into_bytes())
            }
            Some(file) => match std::fs::read(&file) {
                Ok(body) => (200, body),
                Err(_) => (404, Vec::new()),
            },
            None => (404, Vec::new()),
        },
        _ => (405, Vec::new()),
    }
}

/// The file under `dir` for a request path; None for paths that would leave it.
fn file_for(dir: &Path, path: &str) -> Option<PathBuf> {
    let relative = Path::new(path.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return None;
    }
    let file = dir.join(relative);
    (file.file_name() != Some("requests.log".as_ref())).then_some(file)
}

fn log(dir: &Path, line: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("requests.log"))
    {
        let _ = writeln!(file, "{line}");
    }
}
