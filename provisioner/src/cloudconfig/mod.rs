//! CoreOS cloud-config: the typed model, the parser and the validator.
//!
//! [`parse_cloud_config`] reads a `#cloud-config` document into [`model::CloudConfig`] and
//! reports what it could not take as [`Diagnostic`]s with their lines; [`validate`] does the
//! same for a whole user-data blob (scripts, gzip and multipart MIME included).

mod diagnostics;
mod env_sections;
pub mod model;
mod parse;
mod units;
mod update;
mod users;
mod validate;
mod walk;
pub mod write_files;
mod yaml;

pub use diagnostics::{has_errors, Diagnostic, Kind};
pub use model::*;
pub use parse::parse_cloud_config;
pub(crate) use parse::parse_cloud_config_at;
pub use validate::validate;
pub use write_files::DecodeError;

pub(crate) use walk::truncate;
