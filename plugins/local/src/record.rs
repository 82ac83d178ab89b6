//! The job record kept in the kv store, and how a supervisor's word on a job
//! becomes the seed's `HPCJobInfo`.

use hpc_plugin_sdk::host::not_started;
use hpc_plugin_sdk::host::process::{JobState, JobUsage};
use hpc_plugin_sdk::resources::{bytes_to_gb, seconds_to_hours};
use hpc_plugin_sdk::spec::check_command;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobSpec, JobStatus};
use serde::{Deserialize, Serialize};

/// The setting that names this machine (the host sets it to its hostname).
pub const NODE_SETTING: &str = "HPC_NODE";

/// Longest job name kept; the name is metadata only, never run.
const MAX_NAME: usize = 255;

/// Why a job the host has accepted has not started.
pub const WAITING_REASON: &str =
    "waiting for a free slot: at most `max_running_jobs` local jobs run at once on this machine";

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
    /// From the supervisor, this call only: a job not ended yet.
    #[serde(skip)]
    pub live: Option<Live>,
    /// The host could not say how the job is, this call only.
    #[serde(skip)]
    pub host_error: Option<BackendError>,
}

/// A job that has not ended, as its supervisor says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Live {
    /// Accepted, waiting for a slot of the host's bound on running jobs.
    Waiting,
    /// Running since this Unix time.
    Running(f64),
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

/// Refuse a spec this backend cannot run as given.
pub fn validate_spec(spec: &JobSpec) -> Result<(), BackendError> {
    let invalid = |m: String| Err(BackendError::InvalidRequest(m));
    check_command(&spec.execution_command, "execution_command")
        .map_err(BackendError::InvalidRequest)?;
    if let Some(name) = &spec.job_name {
        if name.chars().count() > MAX_NAME {
            return invalid(format!("`job_name` is longer than {MAX_NAME} characters"));
        }
        if name.chars().any(char::is_control) {
            return invalid("`job_name` contains a control character".into());
        }
    }
    if let Some(dir) = &spec.workspace_dir
        && !dir.starts_with('/')
    {
        return invalid(format!(
            "`workspace_dir` must be an absolute path, not `{dir}`"
        ));
    }
    Ok(())
}

impl JobRecord {
    /// The record of a job submitted at `now` (Unix seconds) on `node`.
    pub fn new(job_id: &str, spec: &JobSpec, now: f64, node: Option<String>) -> Self {
        JobRecord {
            job_id: job_id.to_owned(),
            job_name: spec.job_name.clone(),
            argv: spec.execution_command.clone(),
            submitted_at: now,
            node,
            outcome: None,
            live: None,
            host_error: None,
        }
    }

    /// The record of a job the store lost, rebuilt from what its supervisor
    /// says on this machine (`node`): name and command are not kept there.
    pub fn recovered(job_id: &str, node: Option<String>, state: &JobState) -> Self {
        let started = match state {
            JobState::Running(since) if since.is_finite() => *since,
            _ => 0.0,
        };
        JobRecord {
            job_id: job_id.to_owned(),
            job_name: None,
            argv: Vec::new(),
            submitted_at: started,
            node,
            outcome: None,
            live: None,
            host_error: None,
        }
    }

    /// The host does not know the job here (`here`, the `HPC_NODE` setting):
    /// if it was started on another machine, say where, rather than "not found".
    pub fn locate(&self, e: BackendError, here: Option<String>) -> BackendError {
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

    /// JSON bytes for the store.
    pub fn encode(&self) -> Result<Vec<u8>, BackendError> {
        hpc_plugin_sdk::record::encode(self)
    }

    /// A record from the store.
    pub fn decode(bytes: &[u8]) -> Result<Self, BackendError> {
        hpc_plugin_sdk::record::decode(bytes).map_err(BackendError::Internal)
    }

    /// Record the end the supervisor reported; a job not ended is noted for
    /// this call only.
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
            JobState::Running(_) if not_started(&state) => {
                self.live = Some(Live::Waiting);
                return;
            }
            JobState::Running(since) => {
                self.live = Some(Live::Running(since));
                return;
            }
        });
    }

    /// The contract's view of the job, at Unix time `now`.
    pub fn info(self, now: f64) -> Result<HpcJobInfo, BackendError> {
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
        match self.live {
            Some(Live::Running(since)) => info.wall_time_seconds = Some((now - since).max(0.0)),
            Some(Live::Waiting) => {
                info.status = JobStatus::Pending;
                info.native_state = Some("PENDING".into());
                info.reason = Some(WAITING_REASON.into());
            }
            None => {}
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
        cpu_hours: Some(seconds_to_hours(u.cpu_seconds)),
        peak_memory_gb: Some(bytes_to_gb(u.peak_rss_bytes)),
        native_state: native.into(),
        reason,
    }
}
