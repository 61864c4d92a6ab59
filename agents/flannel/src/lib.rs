//! flannel's job: every machine leases a subnet of the cluster network in etcd (flannel's own
//! key layout and JSON, so Keel and upstream flanneld can share a network), routes to the
//! others over VXLAN or direct routes, and writes /run/flannel/subnet.env for container
//! runtimes.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod docker_opts;
pub mod health;
pub mod iptables;
pub mod netlink;
pub mod network;
pub mod registry;
pub mod subnet;
pub mod subnet_env;
#[cfg(feature = "test-support")]
pub mod testing;
