//! The backend's operations over a [`Host`]: submit, status, cancel, logs.
//!
//! Costs per call, in scheduler commands: `submit` one `sbatch`;
//! `submit-many` one `sbatch` per shape ([`crate::batch`]);
//! `statuses` for any number of ids one `squeue` (one per
//! [`SQUEUE_CHUNK`] ids) and at most one `sacct` (one per [`SACCT_CHUNK`]),
//! and no `sacct` at all when every job is still pending or running;
//! `cancel` one `scancel`; `logs` none; `find-job` at most one `squeue`
//! and one `sacct`, none for an array element whose id the store holds.

use hpc_plugin_sdk::host::process::{RunOutput, RunRequest};
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec};
use std::collections::HashMap;

use crate::batch::{self, Known};
use crate::command::{self, is_job_id, not_a_job_id};
use crate::find;
use crate::host::Host;
use crate::push;
use crate::record::{self, JobRecord};
use crate::sacct::{self, AcctJob, QueueEntry};
use crate::script::{self, ScriptInputs};
use crate::status;

/// Setting: the partition every job goes to (required to submit).
pub const SETTING_PARTITION: &str = "SLURM_PARTITION";
/// Setting: the workspace folder for specs without `workspace-dir`.
pub const SETTING_WORKDIR: &str = "HPC_SLURM_WORKDIR";
/// Setting: the timeout of each scheduler command, in milliseconds.
pub const SETTING_TIMEOUT: &str = "SLURM_COMMAND_TIMEOUT_MS";

/// The default command timeout. slurmctld being down costs sbatch, squeue
/// and scancel ~9 s before they say so; this leaves room for that answer
/// (a clearer message than a timeout) on a busy controller.
pub const DEFAULT_TIMEOUT_MS: u32 = 20_000;

/// Ids per `sacct` call. Past a few hundred ids sacct gets slow or hangs on
/// some sites (Parsl #3814); one call for 200 ids takes ~0.1 s here.
pub const SACCT_CHUNK: usize = 500;

/// Ids per `squeue` call, to keep the comma-joined list well under Linux's
/// 128 KiB limit on one argument.
pub const SQUEUE_CHUNK: usize = 5000;

/// The most bytes of each log `get-logs` returns (the end of the file), so
/// a huge log cannot exhaust the plugin's memory.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

/// Attempts at a unique script file name before giving up.
pub(crate) const NAME_ATTEMPTS: usize = 3;

/// The command timeout from [`SETTING_TIMEOUT`].
pub fn timeout_ms(host: &impl Host) -> Result<u32, BackendError> {
    match host.setting(SETTING_TIMEOUT) {
        None => Ok(DEFAULT_TIMEOUT_MS),
        Some(v) => v.trim().parse::<u32>().ok().filter(|&ms| ms > 0).ok_or_else(|| {
            BackendError::InvalidRequest(format!(
                "the `{SETTING_TIMEOUT}` setting must be a positive number of milliseconds, not `{}`",
                v.escape_debug()
            ))
        }),
    }
}

/// The checked [`push::SETTING_PUSH`] address, if set (an empty value is unset).
pub fn push_address(host: &impl Host) -> Result<Option<std::net::SocketAddr>, BackendError> {
    match host.setting(push::SETTING_PUSH) {
        Some(v) if !v.trim().is_empty() => push::parse_address(v.trim())
            .map(Some)
            .map_err(BackendError::InvalidRequest),
        _ => Ok(None),
    }
}

/// Run a scheduler command with the configured timeout.
pub(crate) fn run(
    host: &mut impl Host,
    program: &str,
    args: Vec<String>,
) -> Result<RunOutput, BackendError> {
    let req = RunRequest {
        program: program.into(),
        args,
        env: vec![],
        stdin: None,
        timeout_ms: Some(timeout_ms(host)?),
    };
    host.run(&req)
        .map_err(|e| command::process_error(program, e))
}

/// Submit `spec`: write its script into the workspace and `sbatch` it.
///
/// The job record (log paths, for `get-logs`) is written in two steps: a
/// pending record under `submit/<unique>` before `sbatch`, so that a store
/// outage fails the submit before any job exists; then `job/<id>` after.
/// If the store fails in between, the job has been submitted and its id is
/// returned anyway (a caller told "failed" would submit it twice), only
/// `get-logs` will not find it.
pub fn submit(host: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> {
    let partition = host.setting(SETTING_PARTITION).ok_or_else(|| {
        BackendError::InvalidRequest(format!(
            "the `{SETTING_PARTITION}` setting is not set\n\nhint: name the slurm partition for jobs in `settings.toml`"
        ))
    })?;
    let default_workspace = host.setting(SETTING_WORKDIR);
    timeout_ms(host)?;
    let push = push_address(host)?;

    let (plan, unique) = write_script(host, spec, &partition, default_workspace.as_deref(), push)?;
    // A key's record from an earlier array attempt would send `find-job` to
    // that array: this attempt is a single job (see [`crate::batch`]).
    if let Some(key) = &spec.idempotency_key
        && let Err(e) = host.kv_delete(&batch::key_key(key))
    {
        remove_quietly(&plan.script_path);
        return Err(e.into());
    }
    let mut rec = JobRecord::new(&plan, host.now_millis() / 1000);
    let pending_key = record::pending_key(&unique);
    let bytes = match rec.to_bytes() {
        Ok(b) => b,
        Err(e) => {
            remove_quietly(&plan.script_path);
            return Err(e);
        }
    };
    if let Err(e) = host.kv_set(&pending_key, &bytes, Some(record::PENDING_TTL_SECONDS)) {
        remove_quietly(&plan.script_path);
        return Err(e.into());
    }

    // On a timeout the job may exist: the script and the pending record stay,
    // and say what was being submitted.
    let out = run(
        host,
        "sbatch",
        vec!["--parsable".into(), plan.script_path.clone()],
    )?;
    if !command::succeeded(&out) {
        remove_quietly(&plan.script_path);
        let _ = host.kv_delete(&pending_key);
        return Err(command::sbatch_failure(&out));
    }
    let job_id = command::parse_sbatch_id(&String::from_utf8_lossy(&out.stdout))?;

    rec.job_id = Some(job_id.clone());
    let stored = rec.to_bytes().and_then(|bytes| {
        host.kv_set(
            &record::job_key(&job_id),
            &bytes,
            Some(record::JOB_TTL_SECONDS),
        )
        .map_err(BackendError::from)
    });
    match stored {
        Ok(()) => {
            let _ = host.kv_delete(&pending_key);
        }
        Err(e) => host.warn(&format!(
            "job {job_id} was submitted but its record could not be stored ({e:?}); get-logs will not find it"
        )),
    }
    Ok(job_id)
}

/// Build the script and create its file, retrying on a name collision.
fn write_script(
    host: &mut impl Host,
    spec: &JobSpec,
    partition: &str,
    default_workspace: Option<&str>,
    push: Option<std::net::SocketAddr>,
) -> Result<(script::ScriptPlan, String), BackendError> {
    for _ in 0..NAME_ATTEMPTS {
        let unique = format!("{:x}-{:08x}", host.now_millis(), host.random() as u32);
        let inputs = ScriptInputs {
            partition,
            default_workspace,
            unique: &unique,
            push,
        };
        let plan = script::build(spec, &inputs).map_err(BackendError::InvalidRequest)?;
        match create_new(&plan.script_path, plan.text.as_bytes()) {
            Ok(()) => return Ok((plan, unique)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(file_error(
                    "write the job script",
                    &plan.script_path,
                    &plan.workspace,
                    &e,
                ));
            }
        }
    }
    Err(BackendError::Internal(
        "could not find an unused job script name".into(),
    ))
}

/// Write a new file. Not synced to disk: sbatch reads it at once and sends
/// its text to slurmctld, which keeps the job's own copy; ours is for people.
pub(crate) fn create_new(path: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)
}

fn remove_quietly(path: &str) {
    let _ = std::fs::remove_file(path);
}

/// A file error as the caller can act on it.
pub(crate) fn file_error(
    action: &str,
    path: &str,
    folder: &str,
    e: &std::io::Error,
) -> BackendError {
    use std::io::ErrorKind;
    let msg = format!("could not {action} `{path}`: {e}");
    match e.kind() {
        ErrorKind::PermissionDenied => BackendError::Denied(format!(
            "{msg}\n\nhint: the plugin's policy must grant the folder `{folder}`"
        )),
        ErrorKind::NotFound => BackendError::InvalidRequest(format!(
            "{msg}\n\nhint: the folder `{folder}` must exist and the plugin's policy must grant it"
        )),
        _ => BackendError::Internal(msg),
    }
}

/// The job of idempotency key `key`: a single job whose comment carries
/// the key ([`crate::find`]), or an array element the store maps the key to
/// ([`crate::batch`]). At most one `squeue`, and one `sacct` when the
/// controller no longer holds the job; none when the store already knows.
pub fn find_job(
    host: &mut impl Host,
    key: &str,
    since: f64,
) -> Result<Option<String>, BackendError> {
    let array = match batch::known(host, key)? {
        Known::Found(id) => return Ok(Some(id)),
        Known::NeverSubmitted => return Ok(None),
        Known::NotAnArray => None,
        Known::Search(kr, rec) => Some((kr, rec)),
    };
    // In each listing: the array by its batch tag, else a single job by the key.
    let pick = |text: &str| -> Option<(String, bool)> {
        if let Some((kr, rec)) = &array
            && let Some(id) = find::array_in(text, &rec.batch)
        {
            return Some((format!("{id}_{}", kr.index), true));
        }
        find::find_in(text, key).map(|id| (id, false))
    };
    let out = run(host, "squeue", find::squeue_args())?;
    if !command::succeeded(&out) {
        return Err(command::query_failure("squeue", &out));
    }
    check_complete("squeue", &out)?;
    let mut hit = pick(&String::from_utf8_lossy(&out.stdout));
    if hit.is_none() {
        let now = host.now_millis() as f64 / 1000.0;
        let back = (now - since).max(0.0).ceil() as u64 + find::SLACK_SECONDS;
        let out = run(host, "sacct", find::sacct_args(back))?;
        if !command::succeeded(&out) {
            return Err(command::query_failure("sacct", &out));
        }
        check_complete("sacct", &out)?;
        hit = pick(&String::from_utf8_lossy(&out.stdout));
    }
    if let (Some((id, true)), Some((_, rec))) = (&hit, array) {
        let array_id = id.split_once('_').map_or(id.as_str(), |(a, _)| a);
        batch::remember(host, rec, array_id);
    }
    Ok(hit.map(|(id, _)| id))
}

/// The state of each job in `ids`, in order.
///
/// An id squeue lists and that has not ended is answered from squeue alone.
/// The others are looked up in sacct: an ended job for its metrics, an
/// unlisted one because the controller forgets finished jobs after
/// `MinJobAge`. A job neither knows is not-found, never "completed".
pub fn statuses(
    host: &mut impl Host,
    ids: &[String],
) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
    let mut valid: Vec<&str> = Vec::new();
    for id in ids.iter().map(String::as_str).filter(|id| is_job_id(id)) {
        if !valid.contains(&id) {
            valid.push(id);
        }
    }
    let mut queue: HashMap<String, QueueEntry> = HashMap::new();
    for chunk in valid.chunks(SQUEUE_CHUNK) {
        queue.extend(squeue(host, chunk)?);
    }
    let wanted: Vec<&str> = valid
        .iter()
        .copied()
        .filter(|id| status::needs_accounting(queue.get(*id)))
        .collect();
    let mut acct: Result<HashMap<String, AcctJob>, BackendError> = Ok(HashMap::new());
    for chunk in wanted.chunks(SACCT_CHUNK) {
        match (sacct(host, chunk), &mut acct) {
            (Ok(more), Ok(all)) => all.extend(more),
            (Err(e), _) => {
                acct = Err(e);
                break;
            }
            _ => {}
        }
    }

    Ok(ids
        .iter()
        .map(|id| {
            if !is_job_id(id) {
                return Err(not_a_job_id(id));
            }
            let queued = queue.get(id);
            match (&acct, queued) {
                (Ok(jobs), _) if jobs.contains_key(id) => {
                    Ok(status::from_acct(id, &jobs[id], queued))
                }
                (_, Some(q)) if !status::needs_accounting(Some(q)) => Ok(status::from_queue(id, q)),
                // Ended in squeue, not (yet) in the accounting database:
                // not final until sacct has the exit code and metrics.
                (Ok(_), Some(q)) => Ok(status::ending(id, q)),
                (Ok(_), None) => Err(BackendError::NotFound(format!(
                    "slurm does not know job `{id}` (neither `squeue` nor `sacct` lists it)"
                ))),
                // sacct is down: retry later rather than report an ended
                // job without its metrics, or an unknown one as missing.
                (Err(e), _) => Err(e.clone()),
            }
        })
        .collect())
}

/// One `squeue` call.
fn squeue(host: &mut impl Host, ids: &[&str]) -> Result<HashMap<String, QueueEntry>, BackendError> {
    let out = run(host, "squeue", sacct::squeue_args(ids))?;
    if !command::succeeded(&out) {
        // A single unknown id (or a list of only unknown ones, on some
        // versions) is an error to squeue; for us it is an empty answer.
        if String::from_utf8_lossy(&out.stderr).contains("Invalid job id specified") {
            return Ok(HashMap::new());
        }
        return Err(command::query_failure("squeue", &out));
    }
    check_complete("squeue", &out)?;
    sacct::parse_squeue(&String::from_utf8_lossy(&out.stdout)).map_err(BackendError::Internal)
}

/// One `sacct` call.
fn sacct(host: &mut impl Host, ids: &[&str]) -> Result<HashMap<String, AcctJob>, BackendError> {
    let out = run(host, "sacct", sacct::sacct_args(ids))?;
    if !command::succeeded(&out) {
        return Err(command::query_failure("sacct", &out));
    }
    check_complete("sacct", &out)?;
    sacct::parse_sacct(&String::from_utf8_lossy(&out.stdout)).map_err(BackendError::Internal)
}

/// Output cut at the host's cap would silently drop jobs: refuse it.
fn check_complete(program: &str, out: &RunOutput) -> Result<(), BackendError> {
    if out.truncated {
        return Err(BackendError::Internal(format!(
            "`{program}` printed more than the host's output cap; ask for fewer jobs at once"
        )));
    }
    Ok(())
}

/// Cancel a job with `scancel`.
///
/// scancel exits 0 for a job that has already ended and, in 22.05, for an
/// id it does not know at all, so a valid id that SLURM never had is also
/// "cancelled": telling the two apart would cost a squeue and a sacct call
/// on every cancel, for an answer no caller acts on.
pub fn cancel(host: &mut impl Host, id: &str) -> Result<(), BackendError> {
    if !is_job_id(id) {
        return Err(not_a_job_id(id));
    }
    let out = run(host, "scancel", vec![id.to_string()])?;
    let msg = command::message(&out);
    if command::succeeded(&out) || msg.contains("already completing or completed") {
        return Ok(());
    }
    if msg.contains("Invalid job id specified") {
        return Err(BackendError::NotFound(format!(
            "slurm does not know job `{id}`"
        )));
    }
    if msg.to_lowercase().contains("permission denied") {
        return Err(BackendError::Denied(format!(
            "`scancel` refused to cancel job `{id}`: {msg}"
        )));
    }
    Err(command::query_failure("scancel", &out))
}

/// What the job wrote, from the files named in its record: the last
/// [`MAX_LOG_BYTES`] of each. A file that does not exist yet (the job has
/// not started) reads as empty.
pub fn logs(host: &mut impl Host, id: &str) -> Result<JobLogs, BackendError> {
    if !is_job_id(id) {
        return Err(not_a_job_id(id));
    }
    if let Some((array_id, index)) = command::split_element(id) {
        return batch::logs(host, id, array_id, index);
    }
    let bytes = host.kv_get(&record::job_key(id))?.ok_or_else(|| {
        BackendError::NotFound(format!(
            "no record of job `{id}`: only jobs submitted through this backend have logs"
        ))
    })?;
    let rec = JobRecord::from_bytes(&bytes)
        .map_err(|e| BackendError::Internal(format!("record of job `{id}`: {e}")))?;
    Ok(JobLogs {
        stdout: read_tail(&rec.stdout, &rec.workspace)?,
        stderr: read_tail(&rec.stderr, &rec.workspace)?,
    })
}

/// The last [`MAX_LOG_BYTES`] of a file, as text.
pub(crate) fn read_tail(path: &str, folder: &str) -> Result<String, BackendError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(file_error("read the log", path, folder, &e)),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    let mut text = String::new();
    if len > MAX_LOG_BYTES {
        f.seek(SeekFrom::Start(len - MAX_LOG_BYTES))
            .map_err(|e| file_error("read the log", path, folder, &e))?;
        text = format!("[hpc-host: showing the last {MAX_LOG_BYTES} of {len} bytes]\n");
    }
    f.take(MAX_LOG_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| file_error("read the log", path, folder, &e))?;
    text.push_str(&String::from_utf8_lossy(&buf));
    Ok(text)
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
