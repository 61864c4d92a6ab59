//! What Keel's cluster agents (fleetd, flanneld) share: how they reach etcd (endpoints, TLS
//! files, retries), who this machine is (/etc/machine-id), and, for their tests, a real etcd
//! server started on free loopback ports.

pub mod etcd;
pub mod machine;
pub mod sd_notify;
pub mod shutdown;
#[cfg(feature = "test-support")]
pub mod testing;

pub use etcd::{EtcdConfig, EtcdError};
