//! `mk-docker-opts`: upstream flannel's `mk-docker-opts.sh`, with its flags, for
//! flannel-docker-opts.service (see flannel::docker_opts).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use flannel::docker_opts::{self, Output};

#[derive(Debug, Parser)]
#[command(
    name = "mk-docker-opts",
    version,
    about = "Generate Docker daemon options based on flannel env file"
)]
struct Args {
    /// Path to flannel env file
    #[arg(short = 'f', default_value = "/run/flannel/subnet.env")]
    flannel_env: PathBuf,
    /// Path to Docker env file to write to
    #[arg(short = 'd', default_value = "/run/docker_opts.env")]
    docker_env: PathBuf,
    /// Output each Docker option as individual var, e.g. DOCKER_OPT_MTU=1500
    #[arg(short = 'i')]
    individual: bool,
    /// Output combined Docker options into DOCKER_OPTS var
    #[arg(short = 'c')]
    combined: bool,
    /// Set the combined options key to this value
    #[arg(short = 'k', default_value = "DOCKER_OPTS")]
    combined_key: String,
    /// Do not output --ip-masq
    #[arg(short = 'm')]
    no_ip_masq: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // As upstream: neither -i nor -c means both.
    let both = !args.individual && !args.combined;
    let output = Output {
        individual: args.individual || both,
        combined: args.combined || both,
        ip_masq: !args.no_ip_masq,
        combined_key: args.combined_key,
    };
    docker_opts::write(&args.flannel_env, &args.docker_env, &output)?;
    Ok(())
}
