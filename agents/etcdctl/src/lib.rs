//! `etcdctl` as Container Linux shipped it, on one etcd v3 store.
//!
//! The units of CoreOS's guides talk to etcd with the v2 command line: a sidekick announces its
//! service with `etcdctl set /services/web/host1 '...' --ttl 60` in a loop and removes it with
//! `etcdctl rm`; a load balancer follows them with `etcdctl exec-watch --recursive` or
//! `etcdctl ls`. Container Linux's etcdctl spoke etcd's v2 API, with its own store. Keel's agents
//! and every current client use the v3 API, and the two stores of one etcd server never see
//! each other's keys.
//!
//! What the real etcd offers was tried first (etcd 3.4, Debian bookworm's): its v2-on-v3
//! emulation (`--enable-v2 --experimental-enable-v2v3=PREFIX`) serves the v2 API from the v3
//! store, but answers every write with a TTL `{"errorCode":300,"cause":"TTLs are
//! unsupported"}` — the one thing the sidekick pattern needs — and keeps its keys under a
//! mangled layout (`PREFIX/004/k//1/services/web/host1`) that v3 clients would have to
//! decode. etcd's plain `--enable-v2` keeps a second store, invisible to v3 clients.
//!
//! So this program keeps etcd's v2 *command line* and maps each v2 command onto v3 calls, at
//! the same key: `set K V --ttl N` is a lease of N seconds and a put of K under it, `rm` a
//! delete, a v2 directory the keys under `K/`, `watch` and `exec-watch` a v3 watch. What v2
//! clients and v3 clients see is one store. Every other command (`put`, `get --prefix`,
//! `member list`, `endpoint health`, ...) and any call with `ETCDCTL_API=3` runs Debian's own
//! etcdctl, unchanged (see [`route`]). Limits are listed in the README ("etcd's v2 command
//! line").

pub mod args;
pub mod output;
pub mod store;

pub use args::{route, GlobalOptions, Invocation, Route, V2Command};
pub use store::{Node, Response, V2Error, V2Store};

/// Exit statuses of etcd's v2 etcdctl (its `error.go`).
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const BAD_ARGS: i32 = 1;
    pub const BAD_CONNECTION: i32 = 2;
    pub const SERVER_ERROR: i32 = 4;
}

use store::StoreError;

fn report(e: &StoreError) -> i32 {
    match e {
        StoreError::Unavailable(detail) => {
            eprintln!("Error:  {e}\n\nerror #0: {detail}\n");
            exit::SERVER_ERROR
        }
        StoreError::Config(_) => {
            eprintln!("Error:  {e}");
            exit::BAD_ARGS
        }
        StoreError::V2(_) => {
            eprintln!("Error:  {e}");
            exit::SERVER_ERROR
        }
    }
}

/// Runs one v2 command; returns etcdctl's exit status.
pub async fn run(invocation: Invocation) -> i32 {
    match execute(&invocation).await {
        Ok(status) => status,
        Err(e) => report(&e),
    }
}

async fn execute(invocation: &Invocation) -> Result<i32, StoreError> {
    let format = invocation.global.output;
    let store = V2Store::connect(&invocation.global).await?;
    let print = |resp: &Response| println!("{}", output::response(resp, format));
    match &invocation.command {
        V2Command::Set {
            key,
            value,
            ttl,
            swap_with_value,
            swap_with_index,
        } => print(
            &store
                .set(
                    key,
                    value,
                    *ttl,
                    swap_with_value.as_deref(),
                    *swap_with_index,
                )
                .await?,
        ),
        V2Command::Mk { key, value, ttl } => print(&store.mk(key, value, *ttl).await?),
        V2Command::Update { key, value, ttl } => print(&store.update(key, value, *ttl).await?),
        V2Command::Mkdir { key, existing_ok } => store.mkdir(key, *existing_ok).await?,
        V2Command::Get { key } => {
            let resp = store.get(key).await?;
            if resp.node.dir {
                eprintln!("{}: is a directory", resp.node.key);
                return Ok(exit::BAD_ARGS);
            }
            print(&resp);
        }
        V2Command::Ls {
            key,
            recursive,
            slash_dirs,
        } => {
            for node in store.ls(key, *recursive).await? {
                println!("{}", output::ls_line(&node, *slash_dirs));
            }
        }
        V2Command::Rm {
            key,
            dir,
            recursive,
            with_value,
            with_index,
        } => print(
            &store
                .rm(key, *dir, *recursive, with_value.as_deref(), *with_index)
                .await?,
        ),
        V2Command::Rmdir { key } => store.rmdir(key).await?,
        V2Command::Watch {
            key,
            recursive,
            forever,
            after_index,
        } => {
            use std::io::Write;
            store
                .watch(key, *recursive, *after_index, |resp| {
                    if *recursive {
                        println!("[{}] {}", resp.action, resp.node.key);
                    }
                    print(&resp);
                    let _ = std::io::stdout().flush();
                    *forever
                })
                .await?;
        }
        V2Command::ExecWatch {
            key,
            recursive,
            after_index,
            command,
        } => {
            // Runs the command for each change, one at a time, as v2 etcdctl's exec-watch
            // does, with the change in ETCD_WATCH_* variables.
            store
                .watch(key, *recursive, *after_index, |resp| {
                    let status = std::process::Command::new(&command[0])
                        .args(&command[1..])
                        .env("ETCD_WATCH_ACTION", resp.action)
                        .env("ETCD_WATCH_KEY", &resp.node.key)
                        .env("ETCD_WATCH_VALUE", &resp.node.value)
                        .env(
                            "ETCD_WATCH_MODIFIED_INDEX",
                            resp.node.modified_index.to_string(),
                        )
                        .status();
                    if let Err(e) = status {
                        eprintln!("Error:  running {}: {e}", command[0]);
                    }
                    true
                })
                .await?;
        }
    }
    Ok(exit::SUCCESS)
}
