//! The seam between the backend's logic and the host: the SDK's
//! [`Host`](hpc_plugin_sdk::host::Host) trait (settings, programs, the
//! key-value store, logging, the clock), with [`SdkHost`] the real one.
//! Tests use the SDK's fake host with a partition set ([`fake::Fake`]).
//!
//! Files are not behind this seam: the backend reads and writes them with
//! `std::fs` at absolute paths, which the host preopens at the same paths
//! inside the guest, and which native tests point at a temporary folder.

pub use hpc_plugin_sdk::host::{Host, SdkHost};

#[cfg(test)]
#[path = "fake_host.rs"]
pub(crate) mod fake;
