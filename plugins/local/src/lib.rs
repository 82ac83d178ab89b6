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

mod record;

use hpc_plugin_sdk::host::kv;
use hpc_plugin_sdk::host::process::{self, JobRequest, JobState, LogStream};
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, PluginInfo};
use record::{JobRecord, validate_spec};

/// The most of each log stream `get-logs` returns (the tail is kept).
const MAX_LOG_BYTES: u64 = 4 << 20;

struct Local;

fn key(job_id: &str) -> String {
    format!("job/{job_id}")
}

/// Local ids are UUIDs; anything else cannot name a job of ours.
fn parse_id(job_id: &str) -> Result<String, BackendError> {
    uuid::Uuid::parse_str(job_id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| BackendError::NotFound(format!("no local job `{job_id}` (not a UUID)")))
}

fn load(job_id: &str) -> Result<JobRecord, BackendError> {
    let id = parse_id(job_id)?;
    let bytes = kv::get(&key(&id))?
        .ok_or_else(|| BackendError::NotFound(format!("no local job `{job_id}`")))?;
    JobRecord::decode(&bytes)
}

impl hpc_plugin_sdk::Guest for Local {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        validate_spec(&spec)?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let record = JobRecord::new(&id, &spec);
        // The record goes first: if the store is down nothing starts, and a
        // job that runs always has a record to find it by.
        kv::set(&key(&id), &record.encode(), None)?;
        let time_limit = spec
            .resource_requirements
            .time_hours
            .map(|h| (h * 3600.0).ceil() as u64);
        let request = JobRequest {
            id: id.clone(),
            argv: spec.execution_command,
            env: spec.environment_variables,
            working_dir: spec.workspace_dir,
            time_limit_seconds: time_limit,
        };
        if let Err(e) = process::spawn_job(&request) {
            // Best effort: a record of a job that never started would only mislead.
            let _ = kv::delete(&key(&id));
            return Err(e.into());
        }
        Ok(id)
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        hpc_plugin_sdk::single(Self::get_statuses(vec![job_id]))
    }

    fn get_statuses(
        job_ids: Vec<String>,
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        let ids: Vec<Result<String, BackendError>> = job_ids.iter().map(|j| parse_id(j)).collect();
        let keys: Vec<String> = ids.iter().flatten().map(|id| key(id)).collect();
        let mut stored = kv::get_many(&keys)?.into_iter();
        let mut records: Vec<Result<JobRecord, BackendError>> = ids
            .into_iter()
            .map(|id| {
                let id = id?;
                let bytes = stored
                    .next()
                    .flatten()
                    .ok_or_else(|| BackendError::NotFound(format!("no local job `{id}`")))?;
                JobRecord::decode(&bytes)
            })
            .collect();

        // One host call for every job whose end we do not know yet.
        let live: Vec<String> = records
            .iter()
            .flatten()
            .filter(|r| r.outcome.is_none())
            .map(|r| r.job_id.clone())
            .collect();
        if !live.is_empty() {
            let mut states = process::job_states(&live).into_iter();
            for record in records.iter_mut().flatten().filter(|r| r.outcome.is_none()) {
                match states.next().expect("one state per id") {
                    Ok(JobState::Running(since)) => record.running_since = Some(since),
                    Ok(state) => {
                        record.finish(state);
                        // Caching the end is an optimisation: if the store is
                        // down now, the supervisor's record is still there.
                        let _ = kv::set(&key(&record.job_id), &record.encode(), None);
                    }
                    Err(e) => record.host_error = Some(record.locate(e.into())),
                }
            }
        }
        Ok(records.into_iter().map(|r| r?.info()).collect())
    }

    fn cancel(job_id: String) -> Result<(), BackendError> {
        let mut record = load(&job_id)?;
        if record.outcome.is_none() {
            process::kill_job(&record.job_id).map_err(|e| record.locate(e.into()))?;
            // Record the end now, so every node sharing the store sees it.
            if let Some(Ok(state @ (JobState::Exited(_) | JobState::Lost(_)))) =
                process::job_states(std::slice::from_ref(&record.job_id)).pop()
            {
                record.finish(state);
                let _ = kv::set(&key(&record.job_id), &record.encode(), None);
            }
        }
        Ok(())
    }

    fn get_logs(job_id: String) -> Result<JobLogs, BackendError> {
        let record = load(&job_id)?;
        let read = |which| {
            process::read_job_log(&record.job_id, which, MAX_LOG_BYTES)
                .map_err(|e| record.locate(e.into()))
        };
        Ok(JobLogs {
            stdout: read(LogStream::Stdout)?,
            stderr: read(LogStream::Stderr)?,
        })
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "runs jobs as supervised processes on this machine".into(),
            settings: vec![],
        }
    }
}

hpc_plugin_sdk::export!(Local);
