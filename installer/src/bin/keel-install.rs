//! `keel-install -d DEVICE [-c CLOUD_CONFIG] [-i IMAGE]`: writes the Keel disk image onto
//! DEVICE and places the cloud-config for its first boot. Exit status 0 on success, 1 on any
//! error (the message says which device or file, and what to do).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use keel_installer::{install, InstallOptions, DEFAULT_IMAGE, DEFAULT_TMP_DIR};

#[derive(Parser)]
#[command(
    name = "keel-install",
    version,
    about = "Write the Keel disk image onto a disk and prepare its first boot"
)]
struct Cli {
    /// The target disk, e.g. /dev/sdb or /dev/nvme0n1 (everything on it is overwritten).
    #[arg(short = 'd', long = "device", value_name = "DEVICE")]
    device: PathBuf,
    /// A cloud-config placed on the disk for the first boot (/keel/user-data on the ESP).
    #[arg(short = 'c', long = "cloud-config", value_name = "CLOUD_CONFIG")]
    cloud_config: Option<PathBuf>,
    /// The disk image (keel.raw or keel.raw.gz): a local path or an http(s) URL.
    #[arg(short = 'i', long = "image", value_name = "IMAGE", default_value = DEFAULT_IMAGE)]
    image: String,
    /// Install even when the image cannot be checked against SHA256SUMS.
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Where a downloaded image is kept until it is verified and written.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_TMP_DIR)]
    tmp_dir: PathBuf,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The library's messages already carry their causes; `{:#}` would repeat them.
            eprintln!("keel-install: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let options = InstallOptions {
        device: cli.device,
        image: cli.image,
        cloud_config: cli.cloud_config,
        insecure_skip_verify: cli.insecure_skip_verify,
        tmp_dir: cli.tmp_dir,
    };
    install(&options, &mut std::io::stdout().lock())?;
    Ok(())
}
