//! `flanneld`: leases this machine a subnet of the flannel network in etcd and routes to the
//! other machines' subnets. Settings: flags (Go's `-flag` spelling accepted), `FLANNELD_*`
//! variables, then /run/flannel/options.env (what the provisioner writes from coreos.flannel).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;

use flannel::config::{FlannelArgs, FlannelConfig};
use flannel::health::{self, Readiness};

const OPTIONS_ENV: &str = "/run/flannel/options.env";

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = FlannelArgs::parse_from(FlannelArgs::normalize_go_flags(std::env::args_os()));
    let config = FlannelConfig::resolve(args, std::env::vars(), Some(Path::new(OPTIONS_ENV)))?;
    let readiness = Arc::new(Readiness::default());
    if let Some(addr) = config.healthz_addr() {
        let listener = health::bind(addr)
            .await
            .with_context(|| format!("health server on {addr}"))?;
        tokio::spawn(health::serve(listener, Arc::clone(&readiness)));
    }
    let stopped = agent_common::shutdown::on_signals();
    flannel::daemon::run(config, readiness, stopped).await
}
