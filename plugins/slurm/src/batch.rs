//! `submit-many`: specs of one shape ([`crate::array`]) as one
//! `sbatch --array`, and what finds, describes and logs its elements.
//!
//! Per batch, in scheduler commands: one `sbatch` per shape (per
//! [`SETTING_ARRAY_MAX_SIZE`] tasks, and per [`array::MAX_TABLE_BYTES`] of
//! script); a shape with one spec goes the
//! single-job way ([`crate::backend::submit`]). A spec the checks refuse gets
//! its own `invalid-request` and is left out; the scheduler refusing an
//! array (a bad account for that shape) fails that array's elements only.
//!
//! Records in the plugin's store, written in this order:
//! 1. `key/<sha256(key)>` per keyed element: its batch tag and task index
//!    ([`KeyRecord`], [`KEY_TTL_SECONDS`]);
//! 2. `batch/<tag>`: the array ([`ArrayRecord`], its id still unknown);
//! 3. `sbatch --array`, the array's comment ending `hpc-host-batch=<tag>`;
//! 4. `array/<id>` and `batch/<tag>` again, with the id.
//!
//! So for `find-job(key)` after a kill at any point: no key record, or one
//! whose batch record is missing, means `sbatch` never ran for it (a
//! single-job submit of a key deletes its key record first, so a key record
//! is always the key's latest attempt); a batch record with the id answers
//! at once; one without is settled by looking for the tag with `squeue` and
//! `sacct` as [`crate::find`] does for single jobs, and the id found is
//! written back so the array's other keys need no query.
//!
//! These records live in the same store as the host's ledger: a store that
//! lost the ledger lost them too, and an array element's key is then not
//! found (a single job's key is in its comment and still is).

use hpc_plugin_sdk::idempotency::digest;
use hpc_plugin_sdk::{BackendError, JobLogs, JobSpec};
use serde::{Deserialize, Serialize};

use crate::array::{self, ArrayPlan};
use crate::backend::{self, SETTING_PARTITION, SETTING_WORKDIR};
use crate::command;
use crate::find;
use crate::host::Host;
use crate::record::{JOB_TTL_SECONDS, VERSION};
use crate::script::{self, Checked, ScriptInputs};

/// Setting: at most this many tasks of one array run at once (`%max` in
/// `--array`); unset, SLURM's own limits apply.
pub const SETTING_ARRAY_MAX_RUNNING: &str = "SLURM_ARRAY_MAX_RUNNING";
/// Setting: the most tasks in one array; a larger group of one shape is
/// split. Must fit the site's `MaxArraySize` (SLURM's default 1001 allows
/// 1000 tasks, 0-999).
pub const SETTING_ARRAY_MAX_SIZE: &str = "SLURM_ARRAY_MAX_SIZE";
/// [`SETTING_ARRAY_MAX_SIZE`]'s default: the host's chunk, in one array.
pub const DEFAULT_ARRAY_MAX_SIZE: u32 = 1000;

/// Seven days: the host asks `find-job` for a key only while its claim has
/// no id, which a retry or `lookup` settles long before.
pub const KEY_TTL_SECONDS: u32 = 7 * 24 * 3600;

/// `key/<sha256(key)>`.
pub fn key_key(key: &str) -> String {
    format!("key/{}", digest(key))
}

/// `batch/<tag>`.
pub fn batch_key(tag: &str) -> String {
    format!("batch/{tag}")
}

/// `array/<id>`.
pub fn array_key(id: &str) -> String {
    format!("array/{id}")
}

/// Which array task a key was given to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The batch tag.
    pub batch: String,
    /// The task index.
    pub index: u32,
}

/// An array: where its tasks' files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayRecord {
    /// [`VERSION`].
    pub version: u32,
    /// The array's job id, once `sbatch` has answered.
    pub array_id: Option<String>,
    /// The batch tag in the array's comment.
    pub batch: String,
    /// The array's job name.
    pub job_name: String,
    /// The folder the tasks run in.
    pub workspace: String,
    /// The script.
    pub script: String,
    /// The tasks' file prefix ([`array::log_path`]).
    pub base: String,
    /// How many tasks.
    pub tasks: u32,
    /// Unix time of the submit, in seconds.
    pub submitted_at: u64,
}

/// The array settings, checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArraySettings {
    /// [`SETTING_ARRAY_MAX_RUNNING`].
    pub max_running: Option<u32>,
    /// [`SETTING_ARRAY_MAX_SIZE`].
    pub max_size: u32,
}

/// A positive whole number setting, or `None` when unset or empty.
fn positive(host: &impl Host, name: &str) -> Result<Option<u32>, BackendError> {
    let Some(v) = host.setting(name).filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|&n| n > 0 && n <= command::MAX_TASK_INDEX)
        .map(Some)
        .ok_or_else(|| {
            BackendError::InvalidRequest(format!(
                "the `{name}` setting must be a whole number from 1 to {}, not `{}`",
                command::MAX_TASK_INDEX,
                v.escape_debug()
            ))
        })
}

impl ArraySettings {
    /// Read and check the settings.
    pub fn read(host: &impl Host) -> Result<Self, BackendError> {
        Ok(ArraySettings {
            max_running: positive(host, SETTING_ARRAY_MAX_RUNNING)?,
            max_size: positive(host, SETTING_ARRAY_MAX_SIZE)?.unwrap_or(DEFAULT_ARRAY_MAX_SIZE),
        })
    }
}

/// Submit `specs`: per spec, in order, its job id or its error.
pub fn submit_many(host: &mut impl Host, specs: &[JobSpec]) -> Vec<Result<String, BackendError>> {
    let all = |e: BackendError| specs.iter().map(|_| Err(e.clone())).collect();
    let Some(partition) = host.setting(SETTING_PARTITION) else {
        // The single-job path says what is missing, once per spec.
        return specs.iter().map(|s| backend::submit(host, s)).collect();
    };
    let default_workspace = host.setting(SETTING_WORKDIR);
    let settings = match backend::timeout_ms(host).and_then(|_| ArraySettings::read(host)) {
        Ok(s) => s,
        Err(e) => return all(e),
    };
    // The end of every task is pushed as a single job's is (`SLURM_ARRAY_*`
    // make its id `<array>_<task>`).
    let push = match backend::push_address(host) {
        Ok(p) => p,
        Err(e) => return all(e),
    };
    let inputs = ScriptInputs {
        partition: &partition,
        default_workspace: default_workspace.as_deref(),
        unique: "",
        push,
    };
    let checked: Vec<Result<Checked, String>> =
        specs.iter().map(|s| script::check(s, &inputs)).collect();
    let mut results: Vec<Result<String, BackendError>> = checked
        .iter()
        .map(|c| match c {
            Ok(_) => Err(BackendError::Internal("not submitted".into())),
            Err(m) => Err(BackendError::InvalidRequest(m.clone())),
        })
        .collect();
    let items: Vec<Option<&Checked>> = checked.iter().map(|c| c.as_ref().ok()).collect();
    for group in array::group(&items) {
        let entry_bytes = |i: usize| items[i].map_or(0, |c| array::entry(99_999, c, push).len());
        let runs = array::chunks(
            &group,
            settings.max_size as usize,
            array::MAX_TABLE_BYTES,
            entry_bytes,
        );
        for chunk in &runs {
            if let [i] = chunk[..] {
                results[i] = backend::submit(host, &specs[i]);
                continue;
            }
            let tasks: Vec<&Checked> = chunk.iter().filter_map(|&i| items[i]).collect();
            let keys: Vec<Option<&str>> = chunk
                .iter()
                .map(|&i| specs[i].idempotency_key.as_deref())
                .collect();
            let requirements = &specs[chunk[0]].resource_requirements;
            match submit_array(
                host,
                &settings,
                push,
                &partition,
                &tasks,
                &keys,
                requirements,
            ) {
                Ok(id) => {
                    for (n, &i) in chunk.iter().enumerate() {
                        results[i] = Ok(format!("{id}_{n}"));
                    }
                }
                Err(e) => {
                    for &i in chunk.iter() {
                        results[i] = Err(e.clone());
                    }
                }
            }
        }
    }
    results
}

/// Write one array's script and records, `sbatch` it; the array's id.
fn submit_array(
    host: &mut impl Host,
    settings: &ArraySettings,
    push: Option<std::net::SocketAddr>,
    partition: &str,
    tasks: &[&Checked],
    keys: &[Option<&str>],
    requirements: &hpc_plugin_sdk::ResourceRequirements,
) -> Result<String, BackendError> {
    let (plan, tag) = write_script(host, tasks, requirements, partition, push)?;
    let mut rec = ArrayRecord {
        version: VERSION,
        array_id: None,
        batch: tag.clone(),
        job_name: plan.job_name.clone(),
        workspace: plan.workspace.clone(),
        script: plan.script_path.clone(),
        base: plan.base.clone(),
        tasks: plan.tasks as u32,
        submitted_at: host.now_millis() / 1000,
    };
    let before = write_before(host, &rec, keys);
    if let Err(e) = before {
        let _ = std::fs::remove_file(&plan.script_path);
        return Err(e);
    }
    let args = vec![
        "--parsable".into(),
        array::array_option(plan.tasks, settings.max_running),
        plan.script_path.clone(),
    ];
    // On a timeout the array may exist: the script and records stay.
    let out = backend::run(host, "sbatch", args)?;
    if !command::succeeded(&out) {
        let _ = std::fs::remove_file(&plan.script_path);
        let _ = host.kv_delete(&batch_key(&tag));
        return Err(command::sbatch_failure(&out));
    }
    let id = command::parse_sbatch_id(&String::from_utf8_lossy(&out.stdout))?;
    rec.array_id = Some(id.clone());
    if let Err(e) = write_found(host, &rec) {
        host.warn(&format!(
            "array {id} was submitted but its record could not be stored ({e:?}); get-logs will not find its tasks"
        ));
    }
    Ok(id)
}

/// The key records, then the batch record (see the module docs).
fn write_before(
    host: &mut impl Host,
    rec: &ArrayRecord,
    keys: &[Option<&str>],
) -> Result<(), BackendError> {
    for (index, key) in keys.iter().enumerate() {
        let Some(key) = key else { continue };
        let value = hpc_plugin_sdk::record::encode(&KeyRecord {
            batch: rec.batch.clone(),
            index: index as u32,
        })?;
        host.kv_set(&key_key(key), &value, Some(KEY_TTL_SECONDS))?;
    }
    let value = hpc_plugin_sdk::record::encode(rec)?;
    host.kv_set(&batch_key(&rec.batch), &value, Some(JOB_TTL_SECONDS))?;
    Ok(())
}

/// `array/<id>` and `batch/<tag>`, with the id.
fn write_found(host: &mut impl Host, rec: &ArrayRecord) -> Result<(), BackendError> {
    let id = rec.array_id.as_deref().unwrap_or_default();
    let value = hpc_plugin_sdk::record::encode(rec)?;
    host.kv_set(&array_key(id), &value, Some(JOB_TTL_SECONDS))?;
    host.kv_set(&batch_key(&rec.batch), &value, Some(JOB_TTL_SECONDS))?;
    Ok(())
}

/// Build the array's script and create its file, retrying on a name
/// collision; the plan and the batch tag (its unique part).
fn write_script(
    host: &mut impl Host,
    tasks: &[&Checked],
    requirements: &hpc_plugin_sdk::ResourceRequirements,
    partition: &str,
    push: Option<std::net::SocketAddr>,
) -> Result<(ArrayPlan, String), BackendError> {
    for _ in 0..backend::NAME_ATTEMPTS {
        let tag = format!("{:x}-{:016x}", host.now_millis(), host.random());
        let plan = array::build(
            tasks,
            requirements,
            partition,
            &tag,
            &find::batch_tag(&tag),
            push,
        )
        .map_err(BackendError::InvalidRequest)?;
        match backend::create_new(&plan.script_path, plan.text.as_bytes()) {
            Ok(()) => return Ok((plan, tag)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(backend::file_error(
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

/// What `find-job` learns from the store about `key`.
pub enum Known {
    /// The key's latest attempt was no array: look for the key's own tag.
    NotAnArray,
    /// The key's array was never submitted.
    NeverSubmitted,
    /// The key's job.
    Found(String),
    /// The key's array may exist: look for its tag.
    Search(KeyRecord, ArrayRecord),
}

/// Read the key's records.
pub fn known(host: &mut impl Host, key: &str) -> Result<Known, BackendError> {
    let Some(bytes) = host.kv_get(&key_key(key))? else {
        return Ok(Known::NotAnArray);
    };
    let kr: KeyRecord = hpc_plugin_sdk::record::decode(&bytes)
        .map_err(|e| BackendError::Internal(format!("record of key `{key}`: {e}")))?;
    let Some(bytes) = host.kv_get(&batch_key(&kr.batch))? else {
        return Ok(Known::NeverSubmitted);
    };
    let rec: ArrayRecord = hpc_plugin_sdk::record::decode(&bytes)
        .map_err(|e| BackendError::Internal(format!("record of batch `{}`: {e}", kr.batch)))?;
    Ok(match &rec.array_id {
        Some(id) => Known::Found(format!("{id}_{}", kr.index)),
        None => Known::Search(kr, rec),
    })
}

/// The array of `rec` was found with id `id`: remember it for the other
/// keys and for `get-logs` (best effort: the answer stands either way).
pub fn remember(host: &mut impl Host, mut rec: ArrayRecord, id: &str) {
    rec.array_id = Some(id.to_string());
    if let Err(e) = write_found(host, &rec) {
        host.warn(&format!("cannot store the record of array {id}: {e:?}"));
    }
}

/// The logs of array element `array_id`_`index`.
pub fn logs(
    host: &mut impl Host,
    id: &str,
    array_id: &str,
    index: u32,
) -> Result<JobLogs, BackendError> {
    let missing = || {
        BackendError::NotFound(format!(
            "no record of job `{id}`: only jobs submitted through this backend have logs"
        ))
    };
    let bytes = host.kv_get(&array_key(array_id))?.ok_or_else(missing)?;
    let rec: ArrayRecord = hpc_plugin_sdk::record::decode(&bytes)
        .map_err(|e| BackendError::Internal(format!("record of array `{array_id}`: {e}")))?;
    if index >= rec.tasks {
        return Err(missing());
    }
    Ok(JobLogs {
        stdout: backend::read_tail(
            &array::log_path(&rec.base, array_id, index, "out"),
            &rec.workspace,
        )?,
        stderr: backend::read_tail(
            &array::log_path(&rec.base, array_id, index, "err"),
            &rec.workspace,
        )?,
    })
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
