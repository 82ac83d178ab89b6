//! The JSON the CLI reads and writes, with the workflow manager's names.
//!
//! A spec:
//!
//! ```json
//! {"execution_command": ["python", "reduce.py", "--night", "2026-11-24"],
//!  "job_name": "reduce", "workspace_dir": "/data/ws/42",
//!  "resource_requirements": {"cpu": 4, "memory_gb": 16, "time_hours": 2, "account": "ccat"},
//!  "environment_variables": {"OMP_NUM_THREADS": "4"}}
//! ```
//!
//! `execution_command` may also be one string, run as `/bin/sh -c <string>`.
//! Resource keys other than cpu, memory_gb, time_hours, gpus and nodes go to
//! the backend as `extra` (SLURM accepts a guarded list of them).

use crate::runtime::bindings::{
    BackendError, HpcJobInfo, JobSpec, JobStatus, ResourceRequirements,
};
use crate::runtime::error::HostError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A job spec as JSON: what `--spec` files, the daemon's `POST /v1/jobs`
/// and the Python package send. [`parse_spec`] reads one into a checked
/// [`JobSpec`]; `From<&JobSpec>` writes one back (the CLI sends the spec
/// its arguments made to the daemon this way), and the two round-trip.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpecJson {
    execution_command: Command,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sif_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_path: Option<String>,
    #[serde(default)]
    resource_requirements: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    environment_variables: BTreeMap<String, Scalar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_name: Option<String>,
    /// The caller's name for this submission: see [`crate::submit::ledger`].
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
}

impl From<&JobSpec> for SpecJson {
    fn from(s: &JobSpec) -> SpecJson {
        let r = &s.resource_requirements;
        let numbers = [
            ("cpu", r.cpu.map(serde_json::Value::from)),
            ("memory_gb", r.memory_gb.map(serde_json::Value::from)),
            ("time_hours", r.time_hours.map(serde_json::Value::from)),
            ("gpus", r.gpus.map(serde_json::Value::from)),
            ("nodes", r.nodes.map(serde_json::Value::from)),
        ];
        let resource_requirements = numbers
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .chain(r.extra.iter().map(|(k, v)| (k.clone(), v.clone().into())))
            .collect();
        SpecJson {
            execution_command: Command::Argv(s.execution_command.clone()),
            image_ref: s.image_ref.clone(),
            sif_path: s.sif_path.clone(),
            input_dir: s.input_dir.clone(),
            output_dir: s.output_dir.clone(),
            workspace_dir: s.workspace_dir.clone(),
            manifest_path: s.manifest_path.clone(),
            resource_requirements,
            environment_variables: s
                .environment_variables
                .iter()
                .map(|(k, v)| (k.clone(), Scalar::Text(v.clone())))
                .collect(),
            job_name: s.job_name.clone(),
            idempotency_key: s.idempotency_key.clone(),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum Command {
    Argv(Vec<String>),
    Shell(String),
}

/// Environment values may be written as numbers or booleans; they reach the job as text.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Number(serde_json::Number),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Number(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// The most specs one batch may hold (`submit --spec` with a JSON array,
/// `POST /v1/jobs` with an array); the host hands them to the plugin
/// [`crate::submit::ledger::SUBMIT_CHUNK`] at a time.
pub const MAX_BATCH: usize = 10_000;

/// A spec file: one spec (a JSON object) or a batch (an array of them).
pub enum Specs {
    One(Box<JobSpec>),
    Many(Batch),
}

/// A batch of specs as it was read and as it parsed. In-process the parsed
/// items are submitted; through the daemon the text is sent (the daemon
/// parses and checks it the same way: it trusts no client).
pub struct Batch {
    /// The JSON array as it was read.
    pub text: String,
    /// Per element, in order, its spec or why it is not one (the others
    /// are still submitted).
    pub items: Vec<Result<JobSpec, HostError>>,
}

/// Parse a spec file: an object is one spec, an array a batch. A batch
/// that is not an array of JSON values, is empty or holds more than
/// [`MAX_BATCH`] is refused whole; an element that is not a valid spec gets
/// its own error.
pub fn parse_specs(text: &str) -> Result<Specs, HostError> {
    if !text.trim_start().starts_with('[') {
        return parse_spec(text).map(|s| Specs::One(Box::new(s)));
    }
    let values: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| HostError::Input(format!("invalid batch of job specs: {e}")))?;
    if values.is_empty() || values.len() > MAX_BATCH {
        return Err(HostError::Input(format!(
            "invalid batch of job specs: it holds {} specs; a batch holds 1 to {MAX_BATCH}",
            values.len()
        )));
    }
    let items = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v)
                .map_err(|e| HostError::Input(format!("invalid job spec: {e}")))
                .and_then(spec_of)
                .map_err(|e| HostError::Input(format!("spec {i} of the batch: {e}")))
        })
        .collect();
    Ok(Specs::Many(Batch {
        text: text.to_owned(),
        items,
    }))
}

/// Parse a JSON spec.
pub fn parse_spec(text: &str) -> Result<JobSpec, HostError> {
    serde_json::from_str(text)
        .map_err(|e| HostError::Input(format!("invalid job spec: {e}")))
        .and_then(spec_of)
}

fn spec_of(s: SpecJson) -> Result<JobSpec, HostError> {
    let argv = match s.execution_command {
        Command::Argv(v) => v,
        Command::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line],
    };
    let mut r = ResourceRequirements {
        cpu: None,
        memory_gb: None,
        time_hours: None,
        gpus: None,
        nodes: None,
        extra: Vec::new(),
    };
    for (key, value) in s.resource_requirements {
        let bad = |what: &str| {
            HostError::Input(format!(
                "invalid job spec: `resource_requirements.{key}` must be {what}"
            ))
        };
        let count = |v: &serde_json::Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("a whole number"))
        };
        let amount = |v: &serde_json::Value| {
            v.as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| bad("a non-negative number"))
        };
        match key.as_str() {
            _ if value.is_null() => {}
            "cpu" => r.cpu = Some(count(&value)?),
            "gpus" => r.gpus = Some(count(&value)?),
            "nodes" => r.nodes = Some(count(&value)?),
            "memory_gb" => r.memory_gb = Some(amount(&value)?),
            "time_hours" => r.time_hours = Some(amount(&value)?),
            _ => {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_)) => {
                        v.to_string()
                    }
                    _ => return Err(bad("a string, number or boolean")),
                };
                r.extra.push((key, text));
            }
        }
    }
    let spec = JobSpec {
        execution_command: argv,
        image_ref: s.image_ref,
        sif_path: s.sif_path,
        input_dir: s.input_dir,
        output_dir: s.output_dir,
        workspace_dir: s.workspace_dir,
        manifest_path: s.manifest_path,
        resource_requirements: r,
        environment_variables: s
            .environment_variables
            .into_iter()
            .map(|(k, v)| (k, v.into_string()))
            .collect(),
        job_name: s.job_name,
        idempotency_key: s.idempotency_key,
    };
    validate(&spec)?;
    Ok(spec)
}

/// Checks every backend needs: a command, no NUL bytes (they cannot reach an
/// argv or an environment), environment names a shell could set.
pub fn validate(spec: &JobSpec) -> Result<(), HostError> {
    let bad = |m: String| Err(HostError::Input(format!("invalid job spec: {m}")));
    if spec.execution_command.is_empty() || spec.execution_command[0].is_empty() {
        return bad("`execution_command` is empty".into());
    }
    let texts = spec
        .execution_command
        .iter()
        .chain(spec.environment_variables.iter().flat_map(|(k, v)| [k, v]))
        .chain(spec.job_name.iter());
    if texts.into_iter().any(|t| t.contains('\0')) {
        return bad("a command argument, environment value or job name contains a NUL byte".into());
    }
    if let Some(key) = &spec.idempotency_key {
        crate::submit::ledger::check_key(key)
            .map_err(|m| HostError::Input(format!("invalid job spec: {m}")))?;
    }
    for (k, _) in &spec.environment_variables {
        if !crate::runtime::sanitize::is_env_name(k) {
            return bad(format!("`{k}` is not a valid environment variable name"));
        }
    }
    if let Some(r) = [
        spec.resource_requirements.memory_gb,
        spec.resource_requirements.time_hours,
    ]
    .into_iter()
    .flatten()
    .find(|x| !x.is_finite() || *x < 0.0)
    {
        return bad(format!("`{r}` is not a valid amount"));
    }
    Ok(())
}

/// `status --output json`: the seed's `HPCJobInfo` plus native state and reason.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JobInfoJson {
    pub job_id: String,
    pub status: Option<String>,
    pub exit_code: Option<i32>,
    pub wall_time_seconds: Option<f64>,
    pub cpu_hours: Option<f64>,
    pub peak_memory_gb: Option<f64>,
    pub native_state: Option<String>,
    pub reason: Option<String>,
    /// Set instead of a status when this id could not be answered.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorJson>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ErrorJson {
    pub kind: String,
    pub message: String,
    /// The CLI's exit status for it (in a batch submit's answer).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<u8>,
}

impl ErrorJson {
    /// An error as JSON answers name it: kind, message (its
    /// [report](HostError::report)), the CLI's exit status.
    pub fn of(e: &HostError) -> ErrorJson {
        ErrorJson {
            kind: e.kind().as_str().to_owned(),
            message: e.report(),
            exit_code: Some(e.exit_status() as u8),
        }
    }
}

/// One element of a batch submit's answer (`submit --spec` with a JSON
/// array, `POST /v1/jobs` with an array): its job's id, or why it has none.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SubmittedJson {
    pub job_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<ErrorJson>,
}

pub fn status_name(s: JobStatus) -> &'static str {
    match s {
        JobStatus::Pending => "pending",
        JobStatus::Running => "running",
        JobStatus::Completed => "completed",
        JobStatus::Failed => "failed",
    }
}

impl JobInfoJson {
    /// The answer for an id that could not be answered: only its error.
    pub fn failed(job_id: &str, e: &BackendError) -> JobInfoJson {
        let (kind, message) = crate::runtime::error::kind_and_message(e);
        JobInfoJson {
            job_id: job_id.to_owned(),
            status: None,
            exit_code: None,
            wall_time_seconds: None,
            cpu_hours: None,
            peak_memory_gb: None,
            native_state: None,
            reason: None,
            error: Some(ErrorJson {
                kind: kind.into(),
                message: message.into(),
                exit_code: None,
            }),
        }
    }
}

impl From<&HpcJobInfo> for JobInfoJson {
    fn from(i: &HpcJobInfo) -> Self {
        JobInfoJson {
            job_id: i.job_id.clone(),
            status: Some(status_name(i.status).to_owned()),
            exit_code: i.exit_code,
            wall_time_seconds: i.wall_time_seconds,
            cpu_hours: i.cpu_hours,
            peak_memory_gb: i.peak_memory_gb,
            native_state: i.native_state.clone(),
            reason: i.reason.clone(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_spec() {
        let s = parse_spec(
            r#"{"execution_command": ["echo", "a b"], "job_name": "x",
                "resource_requirements": {"cpu": 4, "memory_gb": 16, "time_hours": 2, "account": "ccat", "exclusive": true},
                "environment_variables": {"A": "1", "N": 3}}"#,
        )
        .unwrap();
        assert_eq!(s.execution_command, ["echo", "a b"]);
        assert_eq!(s.resource_requirements.cpu, Some(4));
        assert_eq!(s.resource_requirements.memory_gb, Some(16.0));
        assert_eq!(
            s.resource_requirements.extra,
            [
                ("account".into(), "ccat".into()),
                ("exclusive".into(), "true".into())
            ]
        );
        assert_eq!(
            s.environment_variables,
            [("A".into(), "1".into()), ("N".into(), "3".into())]
        );
    }

    #[test]
    fn a_spec_survives_the_wire() {
        let text = r#"{"execution_command": ["echo", "a b"], "job_name": "x",
            "resource_requirements": {"cpu": 4, "memory_gb": 1.5, "account": "ccat"},
            "environment_variables": {"A": "1"}, "idempotency_key": "exec-42"}"#;
        let spec = parse_spec(text).unwrap();
        let again = serde_json::to_string(&SpecJson::from(&spec)).unwrap();
        let again = parse_spec(&again).unwrap();
        assert_eq!(format!("{spec:?}"), format!("{again:?}"));
        assert_eq!(again.idempotency_key.as_deref(), Some("exec-42"));
    }

    #[test]
    fn a_string_command_runs_under_sh() {
        let s = parse_spec(r#"{"execution_command": "echo $HOME"}"#).unwrap();
        assert_eq!(s.execution_command, ["/bin/sh", "-c", "echo $HOME"]);
    }

    #[test]
    fn malformed_specs_are_refused_with_the_field_named() {
        for (text, needle) in [
            (r#"{"execution_command": []}"#, "empty"),
            (
                r#"{"execution_command": ["x"], "cpu": 3}"#,
                "unknown field `cpu`",
            ),
            (
                r#"{"execution_command": ["x"], "resource_requirements": {"cpu": -1}}"#,
                "resource_requirements.cpu",
            ),
            (
                r#"{"execution_command": ["x"], "resource_requirements": {"memory_gb": "lots"}}"#,
                "memory_gb",
            ),
            (
                r#"{"execution_command": ["x"], "environment_variables": {"A B": "1"}}"#,
                "`A B`",
            ),
            (r#"{"execution_command": ["x\u0000"]}"#, "NUL"),
            (r#"{"execution_command": 7}"#, "invalid job spec"),
            ("not json", "invalid job spec"),
        ] {
            let e = parse_spec(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
