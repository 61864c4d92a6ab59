//! fleet's job on etcd v3: every machine runs `fleetd`; together they run a set of systemd units
//! across the cluster. The modules follow fleet's own split: configuration, the unit model,
//! the registry in etcd, the scheduling engine (one elected at a time), the per-machine agent
//! with its systemd backend, the HTTP API v1 and fleetctl.

pub mod agent;
pub mod api;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fleetctl;
pub mod jobs;
pub mod model;
pub mod registry;
pub mod registry_store;
pub mod schedule;
pub mod session;
pub mod store;
pub mod unit;
