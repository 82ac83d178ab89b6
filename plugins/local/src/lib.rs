//! The Local backend: runs the execution command on this machine as a
//! supervised process, as the workflow manager's `LocalBackend` does.
//!
//! - Job ids are UUIDs. A job record (`job/<id>`) lives in the host's kv store
//!   (Redis, or the embedded store); the host keeps it under this plugin's prefix.
//! - The host's `process.spawn-job` starts the command under a supervisor that
//!   outlives the submitting process and records the exit status and rusage.
//! - Status reads the record and, for jobs not yet known to be over, asks the
//!   host for the supervisor's word: running, exited (with metrics) or lost;
//!   or not started, waiting for a slot of the host's `max_running_jobs`
//!   bound (`pending`, with the reason).
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

/// The Local backend.
pub struct Local;

#[cfg(not(feature = "library"))]
hpc_plugin_sdk::export_backend!(Local);
