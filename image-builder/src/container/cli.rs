//! `keel container build SPEC...` and `keel container push`: the container image builder's
//! command line.

use std::path::PathBuf;

use anyhow::{Context, Result};

#[derive(Debug, Clone, clap::Args)]
pub struct ContainerArgs {
    #[command(subcommand)]
    pub command: ContainerCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ContainerCommand {
    /// Build container images from their specs (configs/containers/*.yaml).
    Build(BuildArgs),
    /// Push built images (their layout folders) to a registry.
    Push(PushArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BuildArgs {
    /// Image specs (YAML).
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    /// Where NAME/ (OCI layout) and NAME.tar (for `docker load`) go.
    #[arg(long, default_value = "out/containers")]
    pub out: PathBuf,
    /// Package-tree cache (kept outside the checkout).
    #[arg(long, env = "KEEL_CACHE_DIR", default_value = "/var/cache/keel")]
    pub cache_dir: PathBuf,
    /// Folder holding the overlays the specs name (default: the nearest `overlays/` above
    /// each spec).
    #[arg(long)]
    pub overlays: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// Image layout folders (out/containers/NAME).
    #[arg(required = true)]
    pub layouts: Vec<PathBuf>,
    /// The registry, as http://HOST:PORT.
    #[arg(long)]
    pub registry: String,
}

pub fn run(args: &ContainerArgs) -> Result<()> {
    match &args.command {
        ContainerCommand::Build(a) => {
            let mut steps = crate::progress::Steps::new(a.specs.len());
            for spec in &a.specs {
                let step = steps.start(&format!("container image {}", spec.display()));
                let built = super::build(spec, a.overlays.as_deref(), &a.out, &a.cache_dir)
                    .with_context(|| format!("building {}", spec.display()))?;
                steps.finish(step, "");
                println!(
                    "{:<14} {}  layer {:.1} MiB compressed ({} files, {:.1} MiB), {:.1} s{}  -> {}",
                    built.image.reference,
                    built.image.manifest.digest(),
                    built.image.layer.bytes.len() as f64 / (1 << 20) as f64,
                    built.files,
                    built.file_bytes as f64 / (1 << 20) as f64,
                    built.elapsed.as_secs_f64(),
                    if built.cached {
                        " (packages cached)"
                    } else {
                        ""
                    },
                    built.archive.display()
                );
            }
        }
        ContainerCommand::Push(a) => {
            for layout in &a.layouts {
                let image = super::read_layout(layout)?;
                let digest = crate::registry::push::push(a.registry.trim_end_matches('/'), &image)
                    .with_context(|| format!("pushing {}", image.reference))?;
                println!("{} {digest}", image.reference);
            }
        }
    }
    Ok(())
}
