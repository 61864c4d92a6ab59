//! `keel-provision`: validate user-data, or apply it to a root tree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use provisioner::cloudconfig::{self, Metadata};
use provisioner::userdata::parse_user_data;

#[derive(Parser)]
#[command(name = "keel-provision", about = "Keel's cloud-config provisioner")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Check user-data (cloud-config, script, gzip or multipart MIME); exit 1 on any error.
    Validate {
        /// The user-data file.
        file: PathBuf,
        /// Print a JSON array of {"kind","line","message"} instead of text lines.
        #[arg(long)]
        json: bool,
    },
    /// Apply user-data to the directory tree at --root and print what was done as JSON.
    Apply {
        /// The root of the tree to provision (e.g. /sysroot, or a test directory).
        #[arg(long)]
        root: PathBuf,
        /// Datasource metadata as JSON: hostname, instance_id, private_ipv4, public_ipv4,
        /// private_ipv6, public_ipv6, ssh_public_keys.
        #[arg(long)]
        metadata_json: Option<PathBuf>,
        /// The user-data file.
        file: PathBuf,
    },
    /// The boot-time network stage (run by keel-provision-network.service): fetch user-data
    /// from the network datasources, apply it to /, then have systemd reload and run the
    /// units' commands. The local stage runs inside keel-init.
    Boot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Validate { file, json } => validate(&file, json),
        Commands::Apply {
            root,
            metadata_json,
            file,
        } => apply(&root, metadata_json.as_deref(), &file),
        Commands::Boot => {
            let ctx = provisioner::datasource::Context::from_system();
            for line in provisioner::stage::run_network_boot(&ctx) {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keel-provision: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(file: &Path, json: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let diagnostics = cloudconfig::validate(&bytes);
    if json {
        println!("{}", serde_json::to_string_pretty(&diagnostics)?);
    } else {
        for diagnostic in &diagnostics {
            println!("{diagnostic}");
        }
    }
    Ok(if cloudconfig::has_errors(&diagnostics) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn apply(root: &Path, metadata_json: Option<&Path>, file: &Path) -> Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let metadata = match metadata_json {
        Some(path) => read_metadata(path)?,
        None => Metadata::default(),
    };
    let (user_data, mut diagnostics) = parse_user_data(&bytes);
    diagnostics.sort_by_key(|diagnostic| diagnostic.line);
    for diagnostic in &diagnostics {
        eprintln!("{}: {diagnostic}", file.display());
    }
    let report = provisioner::apply::apply_to_root(root, &user_data, &metadata)
        .with_context(|| format!("applying {} to {}", file.display(), root.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(
        if report.errors.is_empty() && !cloudconfig::has_errors(&diagnostics) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn read_metadata(path: &Path) -> Result<Metadata> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let Some(object) = value.as_object() else {
        bail!("{} must hold a JSON object", path.display());
    };
    let text_field = |name: &str| -> Result<Option<String>> {
        match object.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => bail!("{}: \"{name}\" must be a string", path.display()),
        }
    };
    fn address<T: std::str::FromStr>(text: Option<String>, name: &str) -> Result<Option<T>> {
        text.map(|text| {
            text.parse()
                .map_err(|_| anyhow::anyhow!("\"{name}\" {text:?} is not an IP address"))
        })
        .transpose()
    }
    let ssh_public_keys = match object.get("ssh_public_keys") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(keys)) => keys
            .iter()
            .map(|key| {
                key.as_str()
                    .map(str::to_string)
                    .with_context(|| format!("{}: ssh_public_keys must be strings", path.display()))
            })
            .collect::<Result<_>>()?,
        Some(_) => bail!("{}: \"ssh_public_keys\" must be a list", path.display()),
    };
    Ok(Metadata {
        hostname: text_field("hostname")?,
        instance_id: text_field("instance_id")?,
        private_ipv4: address(text_field("private_ipv4")?, "private_ipv4")?,
        public_ipv4: address(text_field("public_ipv4")?, "public_ipv4")?,
        private_ipv6: address(text_field("private_ipv6")?, "private_ipv6")?,
        public_ipv6: address(text_field("public_ipv6")?, "public_ipv6")?,
        ssh_public_keys,
        interfaces: Vec::new(),
    })
}
