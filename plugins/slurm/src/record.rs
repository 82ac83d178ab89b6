//! The record the backend keeps per job in the host's key-value store: where
//! the job's script and logs are, for `get-logs`.
//!
//! Keys (the host puts them under the plugin's own prefix):
//! - `submit/<unique>`: written before `sbatch`, deleted after; expires
//!   after [`PENDING_TTL_SECONDS`] if a submit died half-way.
//! - `job/<id>`: written once `sbatch` has answered; expires after
//!   [`JOB_TTL_SECONDS`].
//!
//! ```
//! use hpc_plugin_slurm::record::{JobRecord, job_key};
//!
//! assert_eq!(job_key("42"), "job/42");
//! let rec = JobRecord::from_bytes(br#"{"version":1,"job_id":"42","job_name":"x","workspace":"/w",
//!     "script":"/w/x.sbatch","stdout":"/w/x.out","stderr":"/w/x.err","submitted_at":0}"#).unwrap();
//! assert_eq!(rec.stdout, "/w/x.out");
//! ```

use hpc_plugin_sdk::BackendError;
use serde::{Deserialize, Serialize};

use crate::script::ScriptPlan;

/// A day: ample for a submit to finish or be given up.
pub const PENDING_TTL_SECONDS: u32 = 24 * 3600;

/// Thirty days: logs of older jobs are the workflow manager's to archive.
pub const JOB_TTL_SECONDS: u32 = 30 * 24 * 3600;

/// The record's layout version, for readers of older records.
pub const VERSION: u32 = 1;

/// `job/<id>`.
pub fn job_key(id: &str) -> String {
    format!("job/{id}")
}

/// `submit/<unique>`.
pub fn pending_key(unique: &str) -> String {
    format!("submit/{unique}")
}

/// Where a job's files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// [`VERSION`].
    pub version: u32,
    /// The SLURM job id; `None` in the pending record.
    pub job_id: Option<String>,
    /// The job name as sent to SLURM.
    pub job_name: String,
    /// The folder the job runs in.
    pub workspace: String,
    /// The sbatch script.
    pub script: String,
    /// The job's standard output file.
    pub stdout: String,
    /// The job's standard error file.
    pub stderr: String,
    /// Unix time of the submit, in seconds.
    pub submitted_at: u64,
}

impl JobRecord {
    /// The record for a script about to be submitted.
    pub fn new(plan: &ScriptPlan, submitted_at: u64) -> Self {
        JobRecord {
            version: VERSION,
            job_id: None,
            job_name: plan.job_name.clone(),
            workspace: plan.workspace.clone(),
            script: plan.script_path.clone(),
            stdout: plan.stdout_path.clone(),
            stderr: plan.stderr_path.clone(),
            submitted_at,
        }
    }

    /// JSON bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, BackendError> {
        hpc_plugin_sdk::record::encode(self)
    }

    /// Parse JSON bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        hpc_plugin_sdk::record::decode(bytes)
    }
}
