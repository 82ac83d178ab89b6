//! Guest-side bindings and helpers shared by hpc-host backend plugins.
//!
//! A plugin implements [`backend::Backend`] (its operations over a
//! [`host::Host`]) and exports it with [`export_backend!`]:
//!
//! ```ignore
//! use hpc_plugin_sdk::backend::Backend;
//! use hpc_plugin_sdk::host::Host;
//! use hpc_plugin_sdk::{BackendError, JobSpec};
//!
//! struct MySite;
//! impl Backend for MySite {
//!     fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> { /* ... */ }
//!     // statuses, cancel, logs, describe
//! }
//! hpc_plugin_sdk::export_backend!(MySite);
//! ```
//!
//! (Implementing [`Guest`] directly and exporting with `export!` works too.)
//!
//! The host interfaces (`process`, `kv`, `kube`, settings, logging) are
//! behind the [`host::Host`] trait: write the backend over `&mut impl Host`,
//! call it with [`host::SdkHost`] in the `Guest` impl and with
//! `fake::FakeHost` (feature `fake`) in native unit tests. The raw imports
//! are re-exported in [`host`] for their types.
//!
//! Helpers every backend shares: [`time`], [`resources`] (guarded
//! conversions), [`spec`] (checks), [`record`] (kv records as JSON),
//! [`apptainer`] (running a command in a SIF image).
//!
//! `plugins/template` is a minimal plugin built on all of this, to copy.

wit_bindgen::generate!({
    path: "../../wit",
    world: "hpc-plugin",
    pub_export_macro: true,
    default_bindings_module: "hpc_plugin_sdk",
    generate_all,
});

pub use ccat::hpc0_1_0::types::{
    BackendError, HpcJobInfo, JobLogs, JobStatus, PluginInfo, ResourceRequirements,
};
pub use ccat::hpc0_2_0::types::JobSpec;
pub use exports::ccat::hpc0_3_0::hpc_backend::Guest;

pub mod apptainer;
pub mod backend;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod host;
pub mod idempotency;
pub mod record;
pub mod resources;
pub mod spec;
pub mod time;

pub use backend::single;
pub use resources::bytes_to_gb;

/// The version of the contract this SDK was built against.
pub const CONTRACT_VERSION: &str = "0.3.0";

/// A setting from the host (`wasi:config/store`): the seed's keys such as
/// `SLURM_PARTITION`, plus the plugin's own `config` table.
pub fn setting(key: &str) -> Option<String> {
    wasi::config::store::get(key).ok().flatten()
}

/// Log through the host, which tags each event with the plugin's name.
pub mod log {
    use crate::wasi::logging::logging::{Level, log};

    pub fn debug(msg: &str) {
        log(Level::Debug, "", msg);
    }
    pub fn info(msg: &str) {
        log(Level::Info, "", msg);
    }
    pub fn warn(msg: &str) {
        log(Level::Warn, "", msg);
    }
}

impl From<host::kv::KvError> for BackendError {
    fn from(e: host::kv::KvError) -> Self {
        use host::kv::KvError;
        match e {
            KvError::Unavailable(m) => BackendError::Unavailable(format!("job store: {m}")),
            KvError::Denied(m) => BackendError::Denied(m),
            KvError::Invalid(m) => BackendError::InvalidRequest(m),
            KvError::Other(m) => BackendError::Internal(format!("job store: {m}")),
        }
    }
}

impl From<host::process::ProcessError> for BackendError {
    fn from(e: host::process::ProcessError) -> Self {
        use host::process::ProcessError;
        match e {
            ProcessError::Denied(m) => BackendError::Denied(m),
            ProcessError::NotFound(m) => BackendError::NotFound(m),
            ProcessError::TimedOut(m) => BackendError::Unavailable(m),
            ProcessError::Invalid(m) => BackendError::InvalidRequest(m),
            ProcessError::Failed(m) => BackendError::Internal(m),
        }
    }
}

impl From<host::kube::KubeError> for BackendError {
    fn from(e: host::kube::KubeError) -> Self {
        use host::kube::KubeError;
        match e {
            KubeError::Denied(m) | KubeError::Unauthorized(m) => BackendError::Denied(m),
            KubeError::NotFound(m) => BackendError::NotFound(m),
            KubeError::Conflict(m) | KubeError::Invalid(m) => BackendError::InvalidRequest(m),
            KubeError::Unavailable(m) => BackendError::Unavailable(m),
            KubeError::Other(m) => BackendError::Internal(m),
        }
    }
}

impl JobStatus {
    /// Whether the job has ended (completed or failed).
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed)
    }
}
