//! Keel's image builder: one declarative spec (`configs/image.yaml`) drives a reproducible build
//! of a read-only, dm-verity-protected disk image.

pub mod basetree;
pub mod build;
pub mod cluster;
pub mod container;
pub mod disk;
pub mod esp;
pub mod initramfs;
pub mod inspect;
pub mod layout;
pub mod live;
pub mod progress;
pub mod registry;
pub mod rootfs;
pub mod spec;
pub mod stage;
pub mod tools;
pub mod verity;
pub mod vm;
