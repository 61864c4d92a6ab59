//! systemd's readiness protocol (sd_notify(3)): a `Type=notify` unit is started once its
//! process sends `READY=1` to the datagram socket named by `$NOTIFY_SOCKET`. Units ordered
//! after flanneld (flannel-docker-opts, then docker) rely on it: flanneld is ready only once
//! subnet.env is written.

use std::os::unix::net::UnixDatagram;

/// Tells systemd the service is ready. Without `$NOTIFY_SOCKET` (not run by systemd, or not
/// `Type=notify`) this does nothing; a failure to send is returned for the caller to log.
pub fn ready() -> std::io::Result<()> {
    send("READY=1")
}

fn send(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    match bytes.strip_prefix(b"@") {
        // An abstract socket: '@' stands for the leading NUL byte.
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(state.as_bytes(), &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_reaches_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // The variable is read by this test alone in this process's test binary.
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::ready().unwrap();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
