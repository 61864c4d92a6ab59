//! `keel`: build a Keel image, read files out of one, boot one under QEMU.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use keel_image::build::{self, BuildOptions};
use keel_image::inspect;
use std::io::Write;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "keel", version, about = "Build, inspect and boot Keel images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the image a spec describes into the output folder.
    Build(BuildArgs),
    /// Print a file from a built image's root filesystem, or list a folder with --ls.
    Inspect(InspectArgs),
    /// Boot an image under QEMU.
    Vm(keel_image::vm::VmArgs),
    /// Boot several machines that form a cluster (`up N`), or stop them (`down`).
    Cluster(keel_image::cluster::cli::ClusterArgs),
    /// Build container images from Debian packages (`build`), push them to a registry (`push`).
    Container(keel_image::container::cli::ContainerArgs),
    /// Joins stdin and stdout to a TCP address: QEMU runs it for each guest connection to a
    /// guest forward (the registry's).
    #[command(hide = true)]
    Relay { target: String },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The image spec (YAML).
    #[arg(default_value = "configs/image.yaml")]
    spec: PathBuf,
    /// Where keel.raw, keel.qcow2, SHA256SUMS and manifest.json go.
    #[arg(long, default_value = "out")]
    out: PathBuf,
    /// Base-tree cache and scratch space (kept outside the checkout).
    #[arg(long, env = "KEEL_CACHE_DIR", default_value = "/var/cache/keel")]
    cache_dir: PathBuf,
    /// Folder holding the overlays the spec names (default: `overlays/` beside the spec's folder).
    #[arg(long)]
    overlays: Option<PathBuf>,
    /// The static keel-init binary to use as the initramfs's /init.
    #[arg(long, env = "KEEL_INIT")]
    init: PathBuf,
    /// The keel-provision binary (the boot-time network stage).
    #[arg(long, env = "KEEL_PROVISION")]
    provision: PathBuf,
    /// Another program for the image's /usr/bin, under its own file name (may be repeated:
    /// fleetd, fleetctl).
    #[arg(long = "bin", value_name = "PATH")]
    extra_binaries: Vec<PathBuf>,
    /// A public key allowed to log in as root over SSH (may be repeated).
    #[arg(long = "authorized-key")]
    authorized_keys: Vec<PathBuf>,
    /// Skip the compressed qcow2 (faster; for tests that only need the raw image).
    #[arg(long)]
    no_qcow2: bool,
    /// Skip the live and installer artifacts (keel.iso, keel.raw.gz, pxe/).
    #[arg(long)]
    no_live: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// A raw image (out/keel.raw).
    image: PathBuf,
    /// A file path inside the image's root.
    path: Option<String>,
    /// List this folder instead of printing a file.
    #[arg(long, value_name = "DIR", conflicts_with = "path")]
    ls: Option<String>,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Build(a) => {
            let overlays = a.overlays.unwrap_or_else(|| {
                let spec_dir = a.spec.parent().filter(|p| !p.as_os_str().is_empty());
                spec_dir
                    .map_or_else(|| PathBuf::from("."), PathBuf::from)
                    .join("..")
                    .join("overlays")
            });
            let manifest = build::build(&BuildOptions {
                spec_path: a.spec.clone(),
                out_dir: a.out.clone(),
                cache_dir: a.cache_dir,
                overlays_dir: overlays,
                init_binary: a.init,
                provision_binary: a.provision,
                extra_binaries: a.extra_binaries,
                authorized_keys: a.authorized_keys,
                qcow2: !a.no_qcow2,
                live: !a.no_live,
            })
            .with_context(|| format!("building {}", a.spec.display()))?;
            println!("root hash  {}", manifest.root_hash);
            println!(
                "raw        {} ({} MiB)",
                a.out.join(format!("{}.raw", manifest.name)).display(),
                manifest.sizes.raw_bytes >> 20
            );
            if let Some(q) = manifest.sizes.qcow2_bytes {
                println!(
                    "qcow2      {} ({} MiB)",
                    a.out.join(format!("{}.qcow2", manifest.name)).display(),
                    q >> 20
                );
            }
            if let Some(iso) = manifest.sizes.iso_bytes {
                println!(
                    "iso        {} ({} MiB), PXE files in {}",
                    a.out.join(format!("{}.iso", manifest.name)).display(),
                    iso >> 20,
                    a.out.join("pxe").display()
                );
            }
            println!("built in   {:.1}s", manifest.build.seconds);
        }
        Command::Inspect(a) => match (a.path, a.ls) {
            (_, Some(dir)) => {
                let entries = inspect::list_dir(&a.image, &dir)?;
                print!("{}", inspect::format_listing(&entries));
            }
            (Some(path), None) => {
                let data = inspect::read_file(&a.image, &path)?;
                std::io::stdout().write_all(&data)?;
            }
            (None, None) => anyhow::bail!("give a PATH to print or --ls DIR to list"),
        },
        Command::Vm(a) => keel_image::vm::run_cli(&a)?,
        Command::Cluster(a) => keel_image::cluster::cli::run(&a)?,
        Command::Container(a) => keel_image::container::cli::run(&a)?,
        Command::Relay { target } => keel_image::vm::relay::run(&target)?,
    }
    Ok(())
}
