//! The SLURM backend for hpc-host, as a WebAssembly component.
//!
//! `submit` writes an sbatch script into the job's workspace folder and
//! submits it with `sbatch --parsable`; `submit-many` makes specs of one
//! shape one job array (`sbatch --array`, elements `12345_7`, see
//! [`array`] and [`batch`]); `get-status`/`get-statuses` ask
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
//! - `HPC_PUSH_ADDRESS` (`IP:PORT`): the batch script tells the daemon
//!   listening there when the job's command has ended ([`push`]).
//! - `SLURM_ARRAY_MAX_RUNNING`: at most this many tasks of one array run
//!   at once (`--array=0-N%max`); unset, no such bound.
//! - `SLURM_ARRAY_MAX_SIZE` (default 1000): the most tasks in one array;
//!   must fit the site's `MaxArraySize`.
//!
//! Host policy: programs `sbatch`, `squeue`, `sacct`, `scancel`; the `kv`
//! interface; read-write access to the workspace folders.
//!
//! Modules: [`script`] (the sbatch script, with [`quote`] and
//! [`resources`]), [`array`] (specs of one shape as one job array: the shape
//! key and the array script's per-task table), [`batch`] (`submit-many`,
//! and the records that find, describe and log array elements), [`sacct`]
//! and [`status`] (queries and their meaning), [`command`] (errors and job
//! ids, `12345` and `12345_7`), [`find`] (idempotency keys and batch tags in
//! comments), [`record`] (the per-job record), [`backend`] (the operations,
//! over the [`host::Host`] seam).

pub mod array;
pub mod backend;
pub mod batch;
pub mod command;
pub mod find;
pub mod host;
pub mod push;
pub mod quote;
pub mod record;
pub mod resources;
pub mod sacct;
pub mod script;
pub mod status;

use hpc_plugin_sdk::backend::Backend;
use hpc_plugin_sdk::host::Host;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

/// The SLURM backend.
pub struct Slurm;

impl Backend for Slurm {
    fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> {
        backend::submit(h, spec)
    }

    fn submit_many(h: &mut impl Host, specs: &[JobSpec]) -> Vec<Result<String, BackendError>> {
        batch::submit_many(h, specs)
    }

    fn find_job(h: &mut impl Host, key: &str, since: f64) -> Result<Option<String>, BackendError> {
        backend::find_job(h, key, since)
    }

    fn statuses(
        h: &mut impl Host,
        ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        backend::statuses(h, ids)
    }

    fn cancel(h: &mut impl Host, id: &str) -> Result<(), BackendError> {
        backend::cancel(h, id)
    }

    fn logs(h: &mut impl Host, id: &str) -> Result<JobLogs, BackendError> {
        backend::logs(h, id)
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
                push::SETTING_PUSH.into(),
                batch::SETTING_ARRAY_MAX_RUNNING.into(),
                batch::SETTING_ARRAY_MAX_SIZE.into(),
            ],
        }
    }
}

hpc_plugin_sdk::export_backend!(Slurm);
