//! fleet's HTTP API v1 (`/fleet/v1/units`, `/fleet/v1/state`, `/fleet/v1/machines`), served by
//! fleetd from any [`crate::store::FleetStore`] on `/var/run/fleet.sock` and, when configured,
//! a TCP address; and the client fleetctl drives it with. The JSON is fleet's, so tools written
//! against fleet's API work against Keel's.

pub mod client;
pub mod memory;
pub(crate) mod names;
pub mod server;
pub mod types;

pub use client::{Client, ClientError, Endpoint};
pub use server::{respond, serve, serve_until, ApiConfig, ApiRequest, Listener, DEFAULT_SOCKET};
pub use types::{
    ErrorBody, ErrorEntity, MachinePage, MetadataOp, PageToken, UnitPage, UnitRequest,
    UnitStatePage,
};
