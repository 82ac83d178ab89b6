//! The Local backend's operations over a [`Host`]: submit, statuses, cancel,
//! logs. The component calls them with the real host, unit tests with the
//! SDK's fake.

use crate::Local;
use crate::record::{JobRecord, NODE_SETTING, validate_spec};
use hpc_plugin_sdk::apptainer::{self, Mount};
use hpc_plugin_sdk::backend::Backend;
use hpc_plugin_sdk::host::Host;
use hpc_plugin_sdk::host::process::{JobRequest, JobState, LogStream, ProcessError};
use hpc_plugin_sdk::idempotency;
use hpc_plugin_sdk::resources::hours_to_seconds;
use hpc_plugin_sdk::spec::check_no_nul;
use hpc_plugin_sdk::time::millis_to_seconds;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

/// The most of each log stream `get-logs` returns (the tail is kept).
pub const MAX_LOG_BYTES: u64 = 4 << 20;

fn key(job_id: &str) -> String {
    format!("job/{job_id}")
}

fn now(h: &mut impl Host) -> f64 {
    millis_to_seconds(h.now_millis())
}

/// Local ids are UUIDs; anything else cannot name a job of ours.
fn parse_id(job_id: &str) -> Result<String, BackendError> {
    uuid::Uuid::parse_str(job_id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| BackendError::NotFound(format!("no local job `{job_id}` (not a UUID)")))
}

fn load(h: &mut impl Host, job_id: &str) -> Result<JobRecord, BackendError> {
    let id = parse_id(job_id)?;
    match h.kv_get(&key(&id))? {
        Some(bytes) => JobRecord::decode(&bytes),
        None => recover(h, std::slice::from_ref(&id))
            .pop()
            .unwrap_or_else(|| Err(BackendError::Internal("no record recovered".into()))),
    }
}

/// The records of jobs the store does not hold, rebuilt from their
/// supervisors' folders on this machine and indexed again. The store is an
/// index: a store that came back empty (a Redis restarted without
/// persistence) loses no job that ran here.
fn recover(h: &mut impl Host, ids: &[String]) -> Vec<Result<JobRecord, BackendError>> {
    let here = h.setting(NODE_SETTING);
    let states = h.job_states(ids);
    ids.iter()
        .zip(states.into_iter().chain(std::iter::repeat_with(|| {
            Err(ProcessError::Failed(
                "the host returned no state for this job".into(),
            ))
        })))
        .map(|(id, state)| match state {
            Ok(state) => {
                let mut record = JobRecord::recovered(id, here.clone(), &state);
                record.finish(state);
                store_quietly(h, &record);
                Ok(record)
            }
            Err(ProcessError::NotFound(_)) => Err(BackendError::NotFound(format!(
                "no local job `{id}`: not in the job store, and no job folder on this machine{}",
                here.as_deref()
                    .map(|n| format!(" (`{n}`)"))
                    .unwrap_or_default()
            ))),
            Err(e) => Err(e.into()),
        })
        .collect()
}

/// The id of the job a keyed submit makes: derived from the key, so that
/// every submit with the key names the same job folder.
fn keyed_id(idempotency_key: &str) -> String {
    uuid::Builder::from_random_bytes(idempotency::digest_bytes(idempotency_key))
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// Caching the end is an optimisation: if the store is down now, the
/// supervisor's record is still there.
fn store_quietly(h: &mut impl Host, record: &JobRecord) {
    if let Ok(bytes) = record.encode() {
        let _ = h.kv_set(&key(&record.job_id), &bytes, None);
    }
}

/// The program that runs a job with a `sif-path`: the
/// [`apptainer::SETTING_PROGRAM`] setting, else `apptainer` in the job's `PATH`.
fn apptainer_program(h: &impl Host) -> Result<String, BackendError> {
    let setting = apptainer::SETTING_PROGRAM;
    match h.setting(setting) {
        None => Ok(apptainer::DEFAULT_PROGRAM.into()),
        Some(p) if p.trim().is_empty() => Err(BackendError::InvalidRequest(format!(
            "the `{setting}` setting is empty\n\nhint: name the apptainer program, e.g. `/usr/bin/apptainer`"
        ))),
        Some(p) => {
            check_no_nul(&format!("the `{setting}` setting"), &p)
                .map_err(BackendError::InvalidRequest)?;
            Ok(p)
        }
    }
}

/// What the supervisor runs.
pub struct Command {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The spec's command, or Apptainer running it in `sif-path` with the input,
/// output and workspace folders bound (and the environment also as
/// `APPTAINERENV_*`).
pub fn command(h: &impl Host, spec: &JobSpec) -> Result<Command, BackendError> {
    let Some(sif) = &spec.sif_path else {
        return Ok(Command {
            argv: spec.execution_command.clone(),
            env: spec.environment_variables.clone(),
        });
    };
    let mounts = [
        Mount::new("`input_dir`", spec.input_dir.as_deref()),
        Mount::new("`output_dir`", spec.output_dir.as_deref()),
        Mount::new("`workspace_dir`", spec.workspace_dir.as_deref()),
    ];
    let argv = apptainer::wrap(
        &apptainer_program(h)?,
        sif,
        &mounts,
        &spec.execution_command,
    )
    .map_err(BackendError::InvalidRequest)?;
    let env = apptainer::container_env(&spec.environment_variables);
    Ok(Command { argv, env })
}

impl Backend for Local {
    /// Start the spec's command under the host's supervisor; the new job's id.
    fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> {
        validate_spec(spec)?;
        let time_limit = spec
            .resource_requirements
            .time_hours
            .map(|hours| hours_to_seconds(hours, "resource_requirements.time_hours"))
            .transpose()
            .map_err(BackendError::InvalidRequest)?;
        let Command { argv, env } = command(h, spec)?;
        let id = match &spec.idempotency_key {
            // The host holds the key's claim: no other submit with it is at
            // work. A job made by an earlier one (whose store entry was lost)
            // is this one.
            Some(k) => {
                let id = keyed_id(k);
                if let Some(found) = Self::find_job(h, k, 0.0)? {
                    return Ok(found);
                }
                id
            }
            None => uuid::Uuid::new_v4().hyphenated().to_string(),
        };
        let (submitted, node) = (now(h), h.setting(NODE_SETTING));
        let record = JobRecord::new(&id, spec, submitted, node);
        // The record goes first: if the store is down nothing starts, and a
        // job that runs always has a record to find it by.
        h.kv_set(&key(&id), &record.encode()?, None)?;
        let request = JobRequest {
            id: id.clone(),
            argv,
            env,
            working_dir: spec.workspace_dir.clone(),
            time_limit_seconds: time_limit,
        };
        if let Err(e) = h.spawn_job(&request) {
            // Best effort: a record of a job that never started would only mislead.
            let _ = h.kv_delete(&key(&id));
            return Err(e.into());
        }
        Ok(id)
    }

    /// The job a keyed submit made: its record names another machine, or
    /// its folder is on this one. A record whose job never started here (its
    /// submitter died between the two) is dropped: that job was never made.
    fn find_job(
        h: &mut impl Host,
        idempotency_key: &str,
        _since: f64,
    ) -> Result<Option<String>, BackendError> {
        let id = keyed_id(idempotency_key);
        let here = h.setting(NODE_SETTING);
        if let Some(bytes) = h.kv_get(&key(&id))? {
            let record = JobRecord::decode(&bytes)?;
            if record.node.is_some() && record.node != here {
                return Ok(Some(id));
            }
        }
        match h.job_states(std::slice::from_ref(&id)).pop() {
            Some(Ok(_)) => Ok(Some(id)),
            Some(Err(ProcessError::NotFound(_))) => {
                let _ = h.kv_delete(&key(&id));
                Ok(None)
            }
            Some(Err(e)) => Err(e.into()),
            None => Err(BackendError::Internal("the host returned no state".into())),
        }
    }

    /// The state of each job in `job_ids`, in order: one store round trip and one
    /// supervisor query for all jobs whose end is not recorded yet. A job the
    /// store does not hold is looked for on this machine ([`recover`]).
    fn statuses(
        h: &mut impl Host,
        job_ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        let ids: Vec<Result<String, BackendError>> = job_ids.iter().map(|j| parse_id(j)).collect();
        let keys: Vec<String> = ids.iter().flatten().map(|id| key(id)).collect();
        let mut stored = h.kv_get_many(&keys)?.into_iter();
        // Ids the store does not hold: `Err(Ok(id))` until recovered.
        let found: Vec<Result<JobRecord, Result<String, BackendError>>> = ids
            .into_iter()
            .map(|id| {
                let id = id.map_err(Err)?;
                match stored.next().flatten() {
                    Some(bytes) => JobRecord::decode(&bytes).map_err(Err),
                    None => Err(Ok(id)),
                }
            })
            .collect();
        let missing: Vec<String> = found
            .iter()
            .filter_map(|r| r.as_ref().err()?.as_ref().ok().cloned())
            .collect();
        let mut recovered = if missing.is_empty() {
            Vec::new()
        } else {
            recover(h, &missing)
        }
        .into_iter();
        let mut records: Vec<Result<JobRecord, BackendError>> = found
            .into_iter()
            .map(|r| match r {
                Ok(record) => Ok(record),
                Err(Err(e)) => Err(e),
                Err(Ok(_)) => recovered
                    .next()
                    .unwrap_or_else(|| Err(BackendError::Internal("no record recovered".into()))),
            })
            .collect();

        // Jobs whose end is not recorded and whose state this call has not read yet.
        let live: Vec<String> = records
            .iter()
            .flatten()
            .filter(|r| r.outcome.is_none() && r.live.is_none())
            .map(|r| r.job_id.clone())
            .collect();
        if !live.is_empty() {
            let here = h.setting(NODE_SETTING);
            let mut states = h.job_states(&live).into_iter();
            for record in records
                .iter_mut()
                .flatten()
                .filter(|r| r.outcome.is_none() && r.live.is_none())
            {
                let state = states.next().unwrap_or_else(|| {
                    Err(ProcessError::Failed(
                        "the host returned no state for this job".into(),
                    ))
                });
                match state {
                    Ok(state @ JobState::Running(_)) => record.finish(state),
                    Ok(state) => {
                        record.finish(state);
                        store_quietly(h, record);
                    }
                    Err(e) => record.host_error = Some(record.locate(e.into(), here.clone())),
                }
            }
        }
        let now = now(h);
        Ok(records.into_iter().map(|r| r?.info(now)).collect())
    }

    /// Stop a job that has not ended, and record its end at once, so every node
    /// sharing the store sees it.
    fn cancel(h: &mut impl Host, job_id: &str) -> Result<(), BackendError> {
        let mut record = load(h, job_id)?;
        if record.outcome.is_none() {
            if let Err(e) = h.kill_job(&record.job_id) {
                return Err(record.locate(e.into(), h.setting(NODE_SETTING)));
            }
            if let Some(Ok(state @ (JobState::Exited(_) | JobState::Lost(_)))) =
                h.job_states(std::slice::from_ref(&record.job_id)).pop()
            {
                record.finish(state);
                store_quietly(h, &record);
            }
        }
        Ok(())
    }

    /// The last [`MAX_LOG_BYTES`] of the job's stdout and stderr.
    fn logs(h: &mut impl Host, job_id: &str) -> Result<JobLogs, BackendError> {
        let record = load(h, job_id)?;
        Ok(JobLogs {
            stdout: read_log(h, &record, LogStream::Stdout)?,
            stderr: read_log(h, &record, LogStream::Stderr)?,
        })
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "local".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "runs jobs as supervised processes on this machine".into(),
            settings: vec![NODE_SETTING.into(), apptainer::SETTING_PROGRAM.into()],
        }
    }
}

fn read_log(
    h: &mut impl Host,
    record: &JobRecord,
    which: LogStream,
) -> Result<String, BackendError> {
    h.read_job_log(&record.job_id, which, MAX_LOG_BYTES)
        .map_err(|e| record.locate(e.into(), h.setting(NODE_SETTING)))
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
