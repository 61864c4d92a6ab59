//! Keel's early boot: `keel-init`, the initramfs `/init`, and (later) the first-boot
//! provisioner. The binary is a thin wrapper around [`init::run_as_pid1`].

pub mod init;
