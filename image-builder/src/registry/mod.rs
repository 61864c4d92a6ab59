//! A real registry for the machines: Debian's `docker-registry` (the CNCF distribution
//! registry), started on a free loopback port with its storage in a folder of ours, filled
//! with the images `keel container build` made ([`push`]), and reached by every guest at
//! [`GUEST_NAME`]`:5000` through a QEMU guest forward (see [`Registry::guest_forward`]): the
//! registry never listens beyond loopback and no guest traffic leaves QEMU.

pub mod push;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::container::Image;
use crate::tools::{self, ToolError};
use crate::vm::GuestForward;

/// The name guests pull from (`docker pull registry.keel.internal:5000/http`): the image's
/// /etc/hosts maps it to [`GUEST_ADDR`], and Keel's docker.service drop-in marks it insecure
/// (plain HTTP: it is reached only through QEMU).
pub const GUEST_NAME: &str = "registry.keel.internal";
/// Where on QEMU's user network the guest forward listens.
pub const GUEST_ADDR: &str = "10.0.2.100:5000";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("docker-registry did not start (see {log}): {detail}")]
    NotStarted { log: PathBuf, detail: String },
    #[error(transparent)]
    Push(#[from] push::PushError),
}

/// A running docker-registry; stopped when dropped.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

fn free_loopback_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Registry {
    /// Starts docker-registry with its config, storage and log in `dir`, and waits until it
    /// answers.
    pub fn start(dir: &Path) -> Result<Registry, RegistryError> {
        let program = tools::require("docker-registry")?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegistryError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join("storage")).map_err(io(dir))?;
        let log = dir.join("registry.log");
        let mut last = String::new();
        // A port found free can be taken before the registry binds it: try a few.
        for _ in 0..3 {
            let port = free_loopback_port().map_err(io(dir))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = dir.join("config.yml");
            let text = format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            );
            tools::write_atomic_with(&config, |f| std::io::Write::write_all(f, text.as_bytes()))
                .map_err(io(&config))?;
            let log_file = std::fs::File::create(&log).map_err(io(&log))?;
            let child = Command::new(&program)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().map_err(io(&log))?)
                .stderr(log_file)
                .spawn()
                .map_err(io(&program))?;
            let mut registry = Registry {
                child,
                addr,
                dir: dir.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = registry.child.try_wait() {
                    last = format!("exited with {status}");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                    && push::ping(&registry.url()).is_ok()
                {
                    tracing::info!(%addr, dir = %dir.display(), "docker-registry up");
                    return Ok(registry);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if last.is_empty() {
                last = "no answer within 20 s".into();
            }
            let _ = registry.child.kill();
        }
        Err(RegistryError::NotStarted { log, detail: last })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, image: &Image) -> Result<String, RegistryError> {
        Ok(push::push(&self.url(), image)?)
    }

    /// Pushes every image laid out under `dir` (`keel container build`'s output folder:
    /// `NAME/index.json`); returns their references.
    pub fn push_all(&self, dir: &Path) -> Result<Vec<String>, RegistryError> {
        let mut pushed = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(pushed);
        };
        let mut layouts: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.join("index.json").is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        layouts.sort();
        for layout in layouts {
            let image = crate::container::read_layout(&layout).map_err(|e| RegistryError::Io {
                path: layout.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
            self.push(&image)?;
            pushed.push(image.reference.clone());
        }
        Ok(pushed)
    }

    /// The guest forward that makes this registry [`GUEST_ADDR`] on a machine's user network:
    /// QEMU runs `relay` (a program that joins its stdin and stdout to the TCP address it is
    /// given, such as `keel relay`) for each connection.
    pub fn guest_forward(&self, relay: &str) -> GuestForward {
        GuestForward {
            guest_addr: GUEST_ADDR.parse().expect("a valid address"),
            command: format!("{relay} {}", self.addr),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
