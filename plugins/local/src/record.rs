//! The job record kept in the kv store, and how a supervisor's word on a job
//! becomes the seed's `HPCJobInfo`.

use hpc_plugin_sdk::host::process::{JobState, JobUsage};
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobSpec, JobStatus, bytes_to_gb};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// The setting that names this machine (the host sets it to its hostname).
pub const NODE_SETTING: &str = "HPC_NODE";

/// Longest job name kept; the name is metadata only, never run.
const MAX_NAME: usize = 255;

/// What the store holds for one job. The end of a job is filled in once known.
#[derive(Serialize, Deserialize)]
pub struct JobRecord {
    pub job_id: String,
    pub job_name: Option<String>,
    pub argv: Vec<String>,
    pub submitted_at: f64,
    /// The machine whose supervisor runs the job (`HPC_NODE`): with a Redis
    /// shared by several login nodes, only that one can see the process.
    #[serde(default)]
    pub node: Option<String>,
    pub outcome: Option<Outcome>,
    /// From the supervisor, this call only.
    #[serde(skip)]
    pub running_since: Option<f64>,
    /// The host could not say how the job is, this call only.
    #[serde(skip)]
    pub host_error: Option<BackendError>,
}

/// How a job ended.
#[derive(Serialize, Deserialize)]
pub struct Outcome {
    pub completed: bool,
    pub exit_code: Option<i32>,
    pub wall_time_seconds: Option<f64>,
    pub cpu_hours: Option<f64>,
    pub peak_memory_gb: Option<f64>,
    pub native_state: String,
    pub reason: Option<String>,
}

pub fn validate_spec(spec: &JobSpec) -> Result<(), BackendError> {
    let invalid = |m: String| Err(BackendError::InvalidRequest(m));
    if spec.execution_command.is_empty() {
        return invalid("`execution_command` is empty".into());
    }
    if let Some(name) = &spec.job_name {
        if name.chars().count() > MAX_NAME {
            return invalid(format!("`job_name` is longer than {MAX_NAME} characters"));
        }
        if name.chars().any(char::is_control) {
            return invalid("`job_name` contains a control character".into());
        }
    }
    if let Some(dir) = &spec.workspace_dir {
        if !dir.starts_with('/') {
            return invalid(format!(
                "`workspace_dir` must be an absolute path, not `{dir}`"
            ));
        }
    }
    Ok(())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl JobRecord {
    pub fn new(job_id: &str, spec: &JobSpec) -> Self {
        JobRecord {
            job_id: job_id.to_owned(),
            job_name: spec.job_name.clone(),
            argv: spec.execution_command.clone(),
            submitted_at: now(),
            node: hpc_plugin_sdk::setting(NODE_SETTING),
            outcome: None,
            running_since: None,
            host_error: None,
        }
    }

    /// The host does not know the job here: if it was started on another
    /// machine, say where, rather than "not found".
    pub fn locate(&self, e: BackendError) -> BackendError {
        let here = hpc_plugin_sdk::setting(NODE_SETTING);
        match (&e, &self.node) {
            (BackendError::NotFound(_), Some(node)) if here.as_ref() != Some(node) => {
                BackendError::Unavailable(format!(
                    "local job `{}` runs on `{node}`; only hpc-host there can see it (this is `{}`)",
                    self.job_id,
                    here.as_deref().unwrap_or("an unnamed machine")
                ))
            }
            _ => e,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job record always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BackendError> {
        serde_json::from_slice(bytes)
            .map_err(|e| BackendError::Internal(format!("unreadable job record: {e}")))
    }

    /// Record the end the supervisor reported.
    pub fn finish(&mut self, state: JobState) {
        self.outcome = Some(match state {
            JobState::Exited(usage) => outcome(&usage),
            JobState::Lost(why) => Outcome {
                completed: false,
                exit_code: None,
                wall_time_seconds: None,
                cpu_hours: None,
                peak_memory_gb: None,
                native_state: "LOST".into(),
                reason: Some(why),
            },
            JobState::Running(_) => unreachable!("a running job has not finished"),
        });
    }

    pub fn info(self) -> Result<HpcJobInfo, BackendError> {
        if let Some(e) = self.host_error {
            return Err(e);
        }
        let mut info = HpcJobInfo {
            job_id: self.job_id,
            status: JobStatus::Running,
            exit_code: None,
            wall_time_seconds: None,
            cpu_hours: None,
            peak_memory_gb: None,
            native_state: Some("RUNNING".into()),
            reason: None,
        };
        if let Some(since) = self.running_since {
            info.wall_time_seconds = Some((now() - since).max(0.0));
        }
        if let Some(o) = self.outcome {
            info.status = if o.completed {
                JobStatus::Completed
            } else {
                JobStatus::Failed
            };
            info.exit_code = o.exit_code;
            info.wall_time_seconds = o.wall_time_seconds;
            info.cpu_hours = o.cpu_hours;
            info.peak_memory_gb = o.peak_memory_gb;
            info.native_state = Some(o.native_state);
            info.reason = o.reason;
        }
        Ok(info)
    }
}

fn outcome(u: &JobUsage) -> Outcome {
    let (completed, native, reason) = if u.cancelled {
        (
            false,
            "CANCELLED",
            Some("cancelled by `hpc-host cancel`".to_owned()),
        )
    } else if u.timed_out {
        (false, "TIMEOUT", Some("time limit reached".to_owned()))
    } else if let Some(sig) = u.signal {
        (false, "SIGNALED", Some(format!("killed by signal {sig}")))
    } else if u.exit_code == Some(0) {
        (true, "COMPLETED", None)
    } else {
        (
            false,
            "FAILED",
            Some(format!("exit code {}", u.exit_code.unwrap_or(-1))),
        )
    };
    Outcome {
        completed,
        exit_code: u.exit_code,
        wall_time_seconds: Some(u.wall_time_seconds),
        cpu_hours: Some(u.cpu_seconds / 3600.0),
        peak_memory_gb: Some(bytes_to_gb(u.peak_rss_bytes)),
        native_state: native.into(),
        reason,
    }
}
