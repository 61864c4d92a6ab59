//! Keel's image builder: one declarative spec (`configs/image.yaml`) drives a reproducible build
//! of a read-only, dm-verity-protected disk image.

pub mod layout;
pub mod verity;
