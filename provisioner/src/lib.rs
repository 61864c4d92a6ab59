//! Keel's early boot and first-boot provisioning: `keel-init`, the initramfs `/init`
//! ([`init::run_as_pid1`]), and `keel-provision`, which reads CoreOS cloud-config user-data
//! from a datasource and applies it to a root tree.

pub mod apply;
pub mod cloudconfig;
pub mod datasource;
pub mod init;
pub mod stage;
pub mod systemd;
pub mod userdata;
