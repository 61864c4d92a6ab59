//! Test support (feature `test-support`): a small network of "hosts" on this machine. A
//! bridge in the root namespace holds `10.213.<k>.1/24`; each host is a network namespace
//! with a veth (`eth0` inside) on that bridge, the address `10.213.<k>.<10+i>/24`, loopback
//! up and a default route via the bridge's address (so flanneld's default-route interface
//! detection finds `eth0`). `<k>` is unique per test network among all processes on the
//! machine. Dropping the network (also while unwinding from a panic) deletes the namespaces,
//! veths and the bridge.
//!
//! Nothing here can reach another machine: the bridge does not forward (its
//! `net.ipv4.conf.<bridge>.forwarding` is 0), so packets that the hosts send to addresses off
//! the test network stop at the root namespace.
//!
//! Setting the network up runs `ip`, like any test tool would; the library itself never does.

use std::future::Future;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::Ipv4Net;

use crate::netlink::Netlink;

/// The network holding every test network's /24.
pub const TEST_RANGE: &str = "10.213.0.0/16";
/// The interface name of each host's veth inside its namespace.
pub const HOST_IFACE: &str = "eth0";
/// The bridge [`TestNetwork::add_test_address`] creates inside a host to hold addresses.
pub const TEST_BRIDGE: &str = "fltest0";
/// The docker-like bridge [`TestNetwork::add_container`] makes in a host.
pub const CONTAINER_BRIDGE: &str = "fldocker0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One host: a network namespace on the test bridge.
#[derive(Debug)]
pub struct TestHost {
    netns: String,
    /// The root-namespace end of its veth.
    veth: String,
    addr: Ipv4Addr,
    removed: bool,
}

impl TestHost {
    /// The network namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.netns
    }

    /// Its address on the test bridge's segment (`eth0`'s).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `/run/netns/<name>`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// The root-namespace end of its veth (a port of the test bridge).
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// Whether [`TestNetwork::remove_host`] took it away.
    pub fn is_removed(&self) -> bool {
        self.removed
    }
}

/// A bridge and namespaces joined to it; see the module documentation.
#[derive(Debug)]
pub struct TestNetwork {
    k: u8,
    bridge: String,
    bridge_created: bool,
    hosts: Vec<TestHost>,
    /// Namespaces made by [`TestNetwork::add_container`], removed with the network.
    containers: Vec<String>,
    /// Held for the network's life: the claim on `10.213.<k>.0/24` among processes.
    _claim: UnixListener,
}

/// Runs a command, panicking with its output when it fails (test support: the panic is the
/// report).
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (is iproute2 installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// Runs `ip`, ignoring failure (cleanup of what may already be gone).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Claims a /24 of the test range for this process: an abstract unix socket named after it
/// (released by the kernel when the process ends, however it ends), and only for a /24 that
/// no interface of the root namespace has an address in (what a killed test may have left).
fn claim_subnet() -> (u8, UnixListener) {
    let in_use = String::from_utf8_lossy(&ip(&["-4", "-o", "addr", "show"]).stdout).into_owned();
    let start =
        (std::process::id() as usize).wrapping_mul(7) + COUNTER.load(Ordering::Relaxed) as usize;
    for step in 0..254 {
        let k = ((start + step) % 254 + 1) as u8;
        if in_use.contains(&format!(" 10.213.{k}.")) {
            continue;
        }
        let name = format!("keel-flannel-test-10.213.{k}");
        let Ok(addr) = SocketAddr::from_abstract_name(name.as_bytes()) else {
            continue;
        };
        if let Ok(listener) = UnixListener::bind_addr(&addr) {
            return (k, listener);
        }
    }
    panic!("no free /24 left in {TEST_RANGE} for a test network");
}

impl TestNetwork {
    /// Creates the bridge and `hosts` namespaces. Panics (after cleaning up what it made) if
    /// the kernel refuses any of it; needs root.
    pub fn new(hosts: usize) -> TestNetwork {
        assert!(hosts <= 200, "at most 200 hosts on a test network");
        let (k, claim) = claim_subnet();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 characters: "flb" + pid and counter in hex.
        let bridge = format!("flb{pid:x}x{n:x}");
        let mut net = TestNetwork {
            k,
            bridge,
            bridge_created: false,
            hosts: Vec::new(),
            containers: Vec::new(),
            _claim: claim,
        };
        let br = net.bridge.clone();
        ip(&["link", "add", &br, "type", "bridge", "forward_delay", "0"]);
        net.bridge_created = true;
        // Never route the hosts' packets anywhere else (see the module documentation), and
        // no IPv6 chatter on the bridge.
        net.guard();
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1");
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.bridge_addr()),
            "dev",
            &br,
        ]);
        ip(&["link", "set", &br, "up"]);
        for i in 0..hosts {
            net.add_host(pid, n, i);
        }
        net
    }

    fn add_host(&mut self, pid: u32, n: u32, i: usize) {
        let netns = format!("flannel-test-{pid}-{n}-{i}");
        let veth = format!("flv{pid:x}x{n:x}x{i:x}");
        assert!(veth.len() <= 15, "veth name {veth} too long");
        let addr = Ipv4Addr::new(10, 213, self.k, 10 + i as u8);
        ip(&["netns", "add", &netns]);
        self.hosts.push(TestHost {
            netns: netns.clone(),
            veth: veth.clone(),
            addr,
            removed: false,
        });
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", HOST_IFACE, "netns", &netns,
        ]);
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1");
        ip(&["link", "set", &veth, "master", &self.bridge, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            HOST_IFACE,
        ]);
        ip(&["-n", &netns, "link", "set", HOST_IFACE, "up"]);
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &self.bridge_addr().to_string(),
        ]);
    }

    /// Re-asserts that the bridge does not forward: writing the global
    /// `net.ipv4.ip_forward` resets every interface's setting, so this runs again before
    /// anything makes the hosts send packets.
    fn guard(&self) {
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/forwarding", self.bridge),
            "0",
        )
        .expect("turning forwarding off on the test bridge");
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &TestHost {
        &self.hosts[i]
    }

    /// How many hosts the network was made with (removed ones included).
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The bridge's address, `10.213.<k>.1` (where a test's etcd can listen).
    pub fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.k, 1)
    }

    /// The segment's subnet, `10.213.<k>.0/24`.
    pub fn subnet(&self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 213, self.k, 0), 24).expect("a /24")
    }

    /// The bridge's name in the root namespace.
    pub fn bridge_name(&self) -> &str {
        &self.bridge
    }

    /// Runs `f` on a new thread inside host `i`'s namespace, on a current-thread tokio
    /// runtime of its own (netlink sockets opened there belong to the host), and returns its
    /// result. A panic in `f` is resumed here.
    pub fn run_in<F, Fut, T>(&self, i: usize, f: F) -> T
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = T>,
        T: Send,
    {
        self.guard();
        let path = self.hosts[i].netns_path();
        std::thread::scope(|scope| {
            let worker = scope.spawn(move || {
                enter_netns(&path);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(f())
            });
            match worker.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// A netlink connection to host `i`'s namespace, driven by the calling tokio runtime
    /// (call it from inside one): the socket is opened on a helper thread that entered the
    /// namespace, and stays bound to it.
    pub fn netlink(&self, i: usize) -> Netlink {
        self.guard();
        let path = self.hosts[i].netns_path();
        let runtime = tokio::runtime::Handle::current();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter_netns(&path);
                    let _entered = runtime.enter();
                    Netlink::connect().expect("a netlink socket in the test namespace")
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A command to run `program` inside host `i`'s namespace (`ip netns exec`); add the
    /// arguments and run it.
    pub fn exec(&self, i: usize, program: &str) -> Command {
        self.guard();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].netns, program]);
        cmd
    }

    /// Puts `addr` on the bridge `fltest0` inside host `i` (created and set up if missing):
    /// an address for the host to own, such as one in its flannel subnet.
    pub fn add_test_address(&self, i: usize, addr: Ipv4Net) {
        let netns = &self.hosts[i].netns;
        let exists = Command::new("ip")
            .args(["-n", netns, "link", "show", TEST_BRIDGE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !exists {
            ip(&["-n", netns, "link", "add", TEST_BRIDGE, "type", "bridge"]);
            ip(&["-n", netns, "link", "set", TEST_BRIDGE, "up"]);
        }
        ip(&[
            "-n",
            netns,
            "addr",
            "replace",
            &addr.to_string(),
            "dev",
            TEST_BRIDGE,
        ]);
    }

    /// `ping -c1 -W2 -I src dst` from host `i`: whether it got an answer. Both addresses must
    /// be on the test network or in the test's flannel network (the caller's promise).
    pub fn ping(&self, i: usize, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.exec(i, "ping")
            .args([
                "-c1",
                "-W2",
                "-n",
                "-q",
                "-I",
                &src.to_string(),
                &dst.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running ping (Debian package iputils-ping)")
            .success()
    }

    /// Puts a "container" in host `i` the way dockerd does from `--bip` and `--mtu`: a bridge
    /// ([`CONTAINER_BRIDGE`]) holding `bip` (the gateway), a veth into a namespace of its own
    /// with the next address and a default route through the bridge, and forwarding on in the
    /// host. Returns the container's address; [`TestNetwork::exec_container`] runs in it.
    pub fn add_container(&mut self, i: usize, bip: Ipv4Net, mtu: u32) -> Ipv4Addr {
        let host = self.hosts[i].netns.clone();
        let netns = format!("{host}-c");
        let addr = Ipv4Addr::from(u32::from(bip.addr()) + 1);
        let mtu = mtu.to_string();
        ip(&["netns", "add", &netns]);
        self.containers.push(netns.clone());
        ip(&[
            "-n",
            &host,
            "link",
            "add",
            CONTAINER_BRIDGE,
            "type",
            "bridge",
        ]);
        ip(&["-n", &host, "link", "set", CONTAINER_BRIDGE, "mtu", &mtu]);
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &bip.to_string(),
            "dev",
            CONTAINER_BRIDGE,
        ]);
        ip(&["-n", &host, "link", "set", CONTAINER_BRIDGE, "up"]);
        ip(&[
            "-n", &host, "link", "add", "flcveth", "mtu", &mtu, "type", "veth", "peer", "name",
            HOST_IFACE, "netns", &netns,
        ]);
        ip(&[
            "-n",
            &host,
            "link",
            "set",
            "flcveth",
            "master",
            CONTAINER_BRIDGE,
            "up",
        ]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr}/{}", bip.prefix_len()),
            "dev",
            HOST_IFACE,
        ]);
        ip(&["-n", &netns, "link", "set", HOST_IFACE, "up"]);
        ip(&[
            "-n",
            &netns,
            "route",
            "add",
            "default",
            "via",
            &bip.addr().to_string(),
        ]);
        // Per namespace: the host's own setting, not the machine's.
        run(self
            .exec(i, "sh")
            .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]));
        addr
    }

    /// A command to run `program` in host `i`'s container (see [`TestNetwork::add_container`]).
    pub fn exec_container(&self, i: usize, program: &str) -> Command {
        self.guard();
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &format!("{}-c", self.hosts[i].netns),
            program,
        ]);
        cmd
    }

    /// Takes host `i` off the network: deletes its namespace and its veth ("a host leaves").
    pub fn remove_host(&mut self, i: usize) {
        let host = &mut self.hosts[i];
        if host.removed {
            return;
        }
        host.removed = true;
        ip_quiet(&["netns", "del", &host.netns]);
        // A socket still open in the namespace keeps it alive: take the veth out for sure.
        ip_quiet(&["link", "del", &host.veth]);
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter_netns(path: &std::path::Path) {
    let file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", path.display()));
    // SAFETY: setns on a valid namespace fd; it changes only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for netns in &self.containers {
            ip_quiet(&["netns", "del", netns]);
        }
        for i in 0..self.hosts.len() {
            self.remove_host(i);
        }
        if self.bridge_created {
            ip_quiet(&["link", "del", &self.bridge]);
        }
    }
}

/// A flanneld process running in one test host's namespace; killed on drop.
pub struct FlanneldProcess {
    child: std::process::Child,
    subnet_file: PathBuf,
}

impl FlanneldProcess {
    /// Starts `binary` in host `i` against `etcd_endpoint` under `prefix`, with its subnet.env
    /// and log in `dir`, its health server on the host's address at `healthz_port`, and any
    /// `extra` flags.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        tn: &TestNetwork,
        i: usize,
        binary: &std::path::Path,
        etcd_endpoint: &str,
        dir: &std::path::Path,
        prefix: &str,
        healthz_port: u16,
        extra: &[&str],
    ) -> FlanneldProcess {
        let tag = prefix.trim_start_matches('/').replace('/', "_");
        let subnet_file = dir.join(format!("subnet-{i}-{tag}.env"));
        let log = std::fs::File::create(dir.join(format!("flanneld-{i}-{tag}.log")))
            .expect("flanneld log file");
        let child = tn
            .exec(i, &binary.display().to_string())
            .arg(format!("--etcd-endpoints={etcd_endpoint}"))
            .arg(format!("--etcd-prefix={prefix}"))
            .arg(format!("--subnet-file={}", subnet_file.display()))
            .arg(format!("--healthz-port={healthz_port}"))
            .arg(format!("--healthz-ip={}", tn.host(i).addr()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting flanneld");
        FlanneldProcess { child, subnet_file }
    }

    pub fn subnet_file(&self) -> &std::path::Path {
        &self.subnet_file
    }

    /// The subnet its subnet.env names, once written.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        crate::subnet_env::previous_subnet(&self.subnet_file)
    }
}

impl Drop for FlanneldProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the flanneld in host `i` answers 200 on `/ready` (asked from inside the host).
pub fn is_ready(tn: &TestNetwork, i: usize, healthz_port: u16) -> bool {
    let out = tn
        .exec(i, "bash")
        .arg("-c")
        .arg(format!(
            "exec 3<>/dev/tcp/{}/{healthz_port} && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && head -c 12 <&3",
            tn.host(i).addr()
        ))
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("200"))
}
