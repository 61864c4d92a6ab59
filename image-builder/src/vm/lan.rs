//! A private Ethernet segment between VMs that exists only on the host's loopback: each VM's
//! second NIC is a QEMU UDP socket netdev that sends its frames to a [`LanHub`] on 127.0.0.1,
//! and the hub passes them on to the other VMs' sockets. Nothing on the segment can reach any
//! real network: the only ends are QEMU processes on this machine.
//!
//! The hub learns which member each source MAC lives behind, as a switch does, so unicast
//! frames go to one VM and only broadcasts, multicasts and unknown destinations are flooded.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::VmError;

/// The largest frame QEMU sends (64 KiB with offloads); a datagram holds one frame.
const MAX_FRAME: usize = 65536;
/// How often the hub's loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);

/// One VM's port on a hub: what its second NIC needs on the QEMU command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanNic {
    /// The NIC's MAC address, `52:54:00:xx:xx:xx`.
    pub mac: String,
    /// The loopback UDP port QEMU binds for this NIC.
    pub local_port: u16,
    /// The hub's loopback UDP port.
    pub hub_port: u16,
}

/// Frames and bytes the hub has passed on, for benchmarks and debugging.
#[derive(Debug, Default)]
pub struct LanCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub flooded: AtomicU64,
}

/// A running hub. Dropping it stops the thread; the VMs' NICs then lose their link partner.
pub struct LanHub {
    port: u16,
    members: Arc<Mutex<Vec<SocketAddr>>>,
    counters: Arc<LanCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    next_mac: u8,
}

impl LanHub {
    /// Binds the hub on a free loopback port and starts passing frames.
    pub fn start() -> Result<LanHub, VmError> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| VmError::io("binding the LAN hub", e))?;
        socket
            .set_read_timeout(Some(POLL))
            .map_err(|e| VmError::io("setting the LAN hub's timeout", e))?;
        let port = socket
            .local_addr()
            .map_err(|e| VmError::io("reading the LAN hub's port", e))?
            .port();
        let members = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(LanCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (members, counters, stop) = (members.clone(), counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name("lan-hub".into())
                .spawn(move || relay(&socket, &members, &counters, &stop))
                .map_err(|e| VmError::io("starting the LAN hub", e))?
        };
        tracing::debug!(port, "LAN hub listening");
        Ok(LanHub {
            port,
            members,
            counters,
            stop,
            thread: Some(thread),
            next_mac: 1,
        })
    }

    /// The hub's loopback UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A port for one more VM: a fresh MAC and a free loopback UDP port for QEMU to bind.
    /// (The port is only free until QEMU binds it; nothing else on a test machine races for
    /// loopback UDP ports.)
    pub fn add_member(&mut self) -> Result<LanNic, VmError> {
        let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| VmError::io("finding a free UDP port", e))?;
        let local_port = probe
            .local_addr()
            .map_err(|e| VmError::io("reading a free UDP port", e))?
            .port();
        drop(probe);
        let index = self.next_mac;
        self.next_mac = self.next_mac.wrapping_add(1);
        // 52:54:00 is QEMU's prefix; 4b ("K") marks Keel's cluster segment.
        let mac = format!("52:54:00:4b:00:{index:02x}");
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::LOCALHOST,
                local_port,
            )));
        Ok(LanNic {
            mac,
            local_port,
            hub_port: self.port,
        })
    }

    pub fn counters(&self) -> &LanCounters {
        &self.counters
    }
}

impl Drop for LanHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The hub's loop: each datagram is one Ethernet frame from one member.
fn relay(
    socket: &UdpSocket,
    members: &Mutex<Vec<SocketAddr>>,
    counters: &LanCounters,
    stop: &AtomicBool,
) {
    let mut frame = vec![0u8; MAX_FRAME];
    let mut learned: HashMap<[u8; 6], SocketAddr> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let (len, from) = match socket.recv_from(&mut frame) {
            Ok(got) => got,
            // Timeouts let the loop see the stop flag; other errors (a member that went away
            // answering with ICMP) concern one datagram, not the hub.
            Err(_) => continue,
        };
        let frame = &frame[..len];
        let members = members.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if len < 14 || !members.contains(&from) {
            continue;
        }
        let destination: [u8; 6] = frame[0..6].try_into().expect("six bytes");
        let source: [u8; 6] = frame[6..12].try_into().expect("six bytes");
        if source[0] & 1 == 0 {
            learned.insert(source, from);
        }
        counters.frames.fetch_add(1, Ordering::Relaxed);
        counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
        let unicast_to = (destination[0] & 1 == 0)
            .then(|| learned.get(&destination).copied())
            .flatten();
        match unicast_to {
            Some(to) if to != from => {
                let _ = socket.send_to(frame, to);
            }
            Some(_) => {}
            None => {
                counters.flooded.fetch_add(1, Ordering::Relaxed);
                for to in members.iter().filter(|m| **m != from) {
                    let _ = socket.send_to(frame, to);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member_socket(nic: &LanNic) -> UdpSocket {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, nic.local_port)).unwrap();
        s.connect((Ipv4Addr::LOCALHOST, nic.hub_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s
    }

    fn frame(dst: [u8; 6], src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    fn recv(s: &UdpSocket) -> Option<Vec<u8>> {
        let mut buf = [0u8; 2048];
        s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    #[test]
    fn broadcasts_flood_and_learned_unicast_goes_to_one_member() {
        let mut hub = LanHub::start().unwrap();
        let nics: Vec<LanNic> = (0..3).map(|_| hub.add_member().unwrap()).collect();
        assert_ne!(nics[0].mac, nics[1].mac);
        let socks: Vec<UdpSocket> = nics.iter().map(member_socket).collect();
        let (a, b) = ([2, 0, 0, 0, 0, 0xa], [2, 0, 0, 0, 0, 0xb]);

        // A broadcast from a reaches b and c, not a.
        let hello = frame([0xff; 6], a, b"who has");
        socks[0].send(&hello).unwrap();
        assert_eq!(recv(&socks[1]).unwrap(), hello);
        assert_eq!(recv(&socks[2]).unwrap(), hello);

        // b answers a by unicast: the hub learned a's port, so c sees nothing.
        let answer = frame(a, b, b"is at");
        socks[1].send(&answer).unwrap();
        assert_eq!(recv(&socks[0]).unwrap(), answer);
        socks[2]
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        assert!(recv(&socks[2]).is_none());
        assert_eq!(hub.counters().flooded.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn strangers_are_ignored() {
        let mut hub = LanHub::start().unwrap();
        let nic = hub.add_member().unwrap();
        let member = member_socket(&nic);
        let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        stranger
            .send_to(
                &frame([0xff; 6], [2, 0, 0, 0, 0, 1], b"x"),
                (Ipv4Addr::LOCALHOST, hub.port()),
            )
            .unwrap();
        member
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        assert!(recv(&member).is_none());
        assert_eq!(hub.counters().frames.load(Ordering::Relaxed), 0);
    }
}
