//! fleet's job on etcd v3: every machine runs `fleetd`; together they run a set of systemd units
//! across the cluster. The modules follow fleet's own split: configuration, the unit model,
//! the registry in etcd, the scheduling engine (one elected at a time), the per-machine agent
//! with its systemd backend, the HTTP API v1 and fleetctl.

pub mod model;
pub mod registry;
pub mod session;
pub mod store;
