//! Joins stdin and stdout to a TCP connection. QEMU starts this (`keel relay HOST:PORT`, or
//! the tests' `tcp-relay`) for each guest connection to a `guestfwd=...-cmd:` address, so a
//! guest on a `restrict=on` network reaches one service on the host's loopback (the registry,
//! the tests' discovery service) and nothing else.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

/// Relays until the service closes its side; errors only when it cannot connect.
pub fn run(target: &str) -> std::io::Result<()> {
    let stream = TcpStream::connect(target)
        .map_err(|e| std::io::Error::new(e.kind(), format!("connecting to {target}: {e}")))?;
    let upstream = stream.try_clone()?;
    // Guest to service; when the guest closes, tell the service there is no more to come.
    let to_service = std::thread::spawn(move || {
        let mut upstream = upstream;
        let _ = copy(&mut std::io::stdin().lock(), &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let mut stream = stream;
    let _ = copy(&mut stream, &mut std::io::stdout().lock());
    // The service is done: the guest's side may still be open, but nothing will answer it.
    drop(to_service);
    std::process::exit(0);
}

/// Like `std::io::copy`, flushing after each read so replies reach the guest at once.
fn copy(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16384];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}
