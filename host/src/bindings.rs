//! The one `bindgen!` of the host: Rust types and traits for the
//! `ccat:hpc@0.1.0` `hpc-plugin` world.
//!
//! Imports are async (kv and processes wait on I/O) and trappable: an outer
//! `Err` traps the guest and is kept for host bugs and guest misuse; domain
//! errors travel in the WIT `result`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "hpc-plugin",
    // `tracing`: every host call gets a span naming its interface and function.
    imports: { default: async | trappable | tracing },
    exports: { default: async },
    // kv host functions return `Result<T, KvFault>` and use `?`; the fault
    // becomes the WIT `kv-error` in `kv::Host::convert_kv_error`.
    trappable_error_type: {
        "ccat:hpc/kv.kv-error" => crate::capabilities::kv::KvFault,
    },
});

pub use ccat::hpc::types::{
    BackendError, HpcJobInfo, JobLogs, JobSpec, JobStatus, PluginInfo, ResourceRequirements,
};

/// The contract this host speaks: plugins built against `ccat:hpc@0.1.x` load.
pub const CONTRACT_PACKAGE: &str = "ccat:hpc";
pub const CONTRACT_VERSION: &str = "0.1.0";

impl JobStatus {
    /// Whether the job has ended (completed or failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}
