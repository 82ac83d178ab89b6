//! The SLURM backend for hpc-host, as a WebAssembly component.
//!
//! `submit` writes an sbatch script into the job's workspace folder and
//! submits it with `sbatch --parsable`; `get-status`/`get-statuses` ask
//! `squeue` (live jobs) and `sacct` (finished jobs, metrics) once for any
//! number of jobs; `cancel` runs `scancel`; `get-logs` reads the job's output
//! files. Programs run through the host's `process` interface by logical
//! name; files are read and written with `std::fs` in folders the host
//! preopens at their real paths.
//!
//! Settings (`wasi:config/store`):
//! - `SLURM_PARTITION` (required to submit): the partition for every job.
//! - `HPC_SLURM_WORKDIR`: the workspace for specs without `workspace-dir`.
//! - `SLURM_COMMAND_TIMEOUT_MS` (default 20000): the timeout of each
//!   scheduler command; a command that times out is `unavailable`.
//!
//! Host policy: programs `sbatch`, `squeue`, `sacct`, `scancel`; the `kv`
//! interface; read-write access to the workspace folders.
//!
//! Modules: [`script`] (the sbatch script, with [`quote`] and
//! [`resources`]), [`sacct`] and [`status`] (queries and their meaning),
//! [`command`] (errors), [`record`] (the per-job record), [`backend`]
//! (the operations, over the [`host::Host`] seam).

pub mod backend;
pub mod command;
pub mod host;
pub mod quote;
pub mod record;
pub mod resources;
pub mod sacct;
pub mod script;
pub mod status;

use hpc_plugin_sdk::{BackendError, Guest, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

use crate::host::SdkHost;

/// The SLURM backend.
pub struct Slurm;

impl Guest for Slurm {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        backend::submit(&mut SdkHost, &spec)
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        hpc_plugin_sdk::single(backend::statuses(
            &mut SdkHost,
            std::slice::from_ref(&job_id),
        ))
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
            name: "slurm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Runs jobs on a SLURM cluster with sbatch, squeue, sacct and scancel"
                .into(),
            settings: vec![
                backend::SETTING_PARTITION.into(),
                backend::SETTING_WORKDIR.into(),
                backend::SETTING_TIMEOUT.into(),
            ],
        }
    }
}

// Exported only in the component: natively (`cargo test`) the rlib links
// without the component's export symbols.
#[cfg(target_arch = "wasm32")]
hpc_plugin_sdk::export!(Slurm);
