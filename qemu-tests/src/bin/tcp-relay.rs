//! `tcp-relay HOST:PORT`: joins its stdin and stdout to a TCP connection. QEMU starts it for
//! each guest connection to a `guestfwd=...-cmd:` address, so a guest on a `restrict=on`
//! network reaches one service on the host's loopback (the tests' etcd discovery service)
//! and nothing else.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

fn main() {
    let Some(target) = std::env::args().nth(1) else {
        eprintln!("usage: tcp-relay HOST:PORT");
        std::process::exit(2);
    };
    let stream = match TcpStream::connect(&target) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("tcp-relay: connecting to {target}: {e}");
            std::process::exit(1);
        }
    };
    let upstream = stream.try_clone().expect("a second handle on the socket");
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
