//! The Kubernetes backend for hpc-host, as a WebAssembly component.
//!
//! `submit` creates a batch/v1 Job ([`job`]) named after the spec's
//! `job_name` ([`name`]); its name is the job id. `get-status`/`get-statuses`
//! list the Jobs and their pods by label, one call per kind for up to
//! [`IDS_PER_LIST`] ids, and map them with [`status`]. `cancel` deletes the
//! Job with `propagationPolicy: Background` (batch/v1 would otherwise orphan
//! its pods) and leaves a marker in the kv store so that the job reads as
//! cancelled rather than unknown afterwards. `get-logs` reads the newest
//! pod's container log (Kubernetes merges stdout and stderr: all of it is
//! `stdout`).
//!
//! The host makes the API calls (`ccat:hpc/kube`) with its own credentials,
//! in the namespaces and kinds the policy grants (by default `K8S_NAMESPACE`,
//! Job and Pod); this plugin sees JSON only.
//!
//! Settings (`wasi:config/store`):
//! - `K8S_NAMESPACE` (required): where Jobs are created.
//! - `K8S_TTL_SECONDS_AFTER_FINISHED` (default 86400): how long a finished
//!   Job and its pod (and so its status and logs) stay; `none` keeps them.

pub mod backend;
pub mod job;
pub mod name;
pub mod status;

use hpc_plugin_sdk::host::SdkHost;
use hpc_plugin_sdk::{BackendError, Guest, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

pub use backend::{IDS_PER_LIST, SETTING_NAMESPACE, SETTING_TTL};

/// The Kubernetes backend.
pub struct Kubernetes;

impl Guest for Kubernetes {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        backend::submit(&mut SdkHost, &spec)
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        hpc_plugin_sdk::single(backend::statuses(&mut SdkHost, &[job_id]))
    }

    fn get_statuses(
        job_ids: Vec<String>,
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        backend::statuses(&mut SdkHost, &job_ids)
    }

    fn cancel(job_id: String) -> Result<(), BackendError> {
        backend::cancel(&mut SdkHost, &job_id)
    }

    fn get_logs(job_id: String) -> Result<JobLogs, BackendError> {
        backend::logs(&mut SdkHost, &job_id)
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "kubernetes".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "runs jobs as Kubernetes batch/v1 Jobs, through the host's API client"
                .into(),
            settings: vec![SETTING_NAMESPACE.into(), SETTING_TTL.into()],
        }
    }
}

// Exported only in the component: natively (`cargo test`) the rlib links
// without the component's export symbols.
#[cfg(target_arch = "wasm32")]
hpc_plugin_sdk::export!(Kubernetes);
