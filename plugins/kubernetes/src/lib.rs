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

pub use backend::{IDS_PER_LIST, SETTING_NAMESPACE, SETTING_TTL};

/// The Kubernetes backend.
pub struct Kubernetes;

hpc_plugin_sdk::export_backend!(Kubernetes);
