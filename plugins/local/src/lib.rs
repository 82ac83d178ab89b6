//! The Local backend: runs the execution command on this machine as a
//! supervised process, as the workflow manager's `LocalBackend` does.
//!
//! - Job ids are UUIDs. A job record (`job/<id>`) lives in the host's kv store
//!   (Redis, or the embedded store); the host keeps it under this plugin's prefix.
//! - The host's `process.spawn-job` starts the command under a supervisor that
//!   outlives the submitting process and records the exit status and rusage.
//! - Status reads the record and, for jobs not yet known to be over, asks the
//!   host for the supervisor's word: running, exited (with metrics) or lost.
//!   The final state is written back so later calls need no process look-up.
//! - With `sif_path` the command runs as `apptainer exec --bind <input_dir>
//!   --bind <output_dir> --bind <workspace_dir> <sif_path> argv...` (argv,
//!   never a shell), as the seed's Local backend does.
//!
//! Settings (`wasi:config/store`):
//! - `HPC_NODE`: this machine's name (the host sets it), recorded per job.
//! - `HPC_APPTAINER` (default `apptainer`, looked up in the job's `PATH`):
//!   the Apptainer program for jobs with a `sif_path`.
//!
//! The operations are in [`backend`], over the SDK's host trait, so they run
//! natively in unit tests over the SDK's fake host.

pub mod backend;
pub mod record;

use hpc_plugin_sdk::host::SdkHost;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

/// The Local backend.
pub struct Local;

impl hpc_plugin_sdk::Guest for Local {
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
            name: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "runs jobs as supervised processes on this machine".into(),
            settings: vec![
                record::NODE_SETTING.into(),
                hpc_plugin_sdk::apptainer::SETTING_PROGRAM.into(),
            ],
        }
    }
}

// Exported only in the component: natively (`cargo test`) the rlib links
// without the component's export symbols.
#[cfg(target_arch = "wasm32")]
hpc_plugin_sdk::export!(Local);
