//! `etcdctl`: etcd's v2 command line on the v3 store, and Debian's etcdctl for the rest
//! (see the keel-etcdctl crate).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use etcdctl_v2::{exit, route, Route};

/// Where the image keeps Debian's etcdctl once this one took its place.
const PACKAGED: &str = "/usr/lib/keel/packaged/etcdctl";

/// Debian's etcdctl: `KEEL_ETCDCTL_V3`, the image's packaged copy, or another `etcdctl` on
/// PATH than this program.
fn packaged_etcdctl() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KEEL_ETCDCTL_V3") {
        return Some(PathBuf::from(path));
    }
    if std::path::Path::new(PACKAGED).exists() {
        return Some(PACKAGED.into());
    }
    let me = std::env::current_exe().ok()?.canonicalize().ok()?;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("etcdctl"))
        .find(|p| p.is_file() && p.canonicalize().ok().as_ref() != Some(&me))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |name: &str| std::env::var(name).ok();
    match route(&args, &env) {
        Ok(Route::V3) => {
            let Some(real) = packaged_etcdctl() else {
                eprintln!(
                    "Error:  etcd's v3 etcdctl is not installed (Debian package etcd-client)"
                );
                return ExitCode::from(exit::BAD_ARGS as u8);
            };
            let err = std::process::Command::new(&real).args(&args).exec();
            eprintln!("Error:  running {}: {err}", real.display());
            ExitCode::from(exit::BAD_ARGS as u8)
        }
        Ok(Route::V2(invocation)) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("Error:  {e}");
                    return ExitCode::from(exit::SERVER_ERROR as u8);
                }
            };
            ExitCode::from(runtime.block_on(etcdctl_v2::run(*invocation)) as u8)
        }
        Err(message) => {
            eprintln!("Error:  {message}");
            ExitCode::from(exit::BAD_ARGS as u8)
        }
    }
}
