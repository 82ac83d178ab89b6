//! The wire shapes of the socket API: errors with their HTTP status and CLI
//! exit code, job answers, and job specs, all as the CLI's `--output json`.

use crate::bindings::{BackendError, HpcJobInfo, JobSpec, JobStatus};
use crate::error::{ExitStatus, HostError, kind_and_message};
use crate::spec::JobInfoJson;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// A failed request: the kind the CLI prints, the HTTP status and the exit code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub exit_code: u8,
}

impl ApiError {
    /// Bad input: 400 (or the 4xx given).
    pub fn invalid(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind: "invalid-request",
            message: message.into(),
            exit_code: ExitStatus::Usage as u8,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "unavailable",
            message: message.into(),
            exit_code: ExitStatus::Backend as u8,
        }
    }

    /// A plugin's own error for one job or call.
    pub fn of_backend(e: &BackendError, message: String) -> ApiError {
        let (kind, _) = kind_and_message(e);
        let status = match e {
            BackendError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            BackendError::NotFound(_) => StatusCode::NOT_FOUND,
            BackendError::Denied(_) => StatusCode::FORBIDDEN,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackendError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            kind,
            message,
            exit_code: ExitStatus::of_backend_error(e) as u8,
        }
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"kind": self.kind, "message": self.message, "exit_code": self.exit_code}})
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> ApiError {
        let message = format!("{e:#}");
        let exit_code = e.exit_status() as u8;
        let (status, kind) = match &e {
            HostError::Backend { error, .. } => return ApiError::of_backend(error, message),
            HostError::Settings(_) | HostError::Input(_) | HostError::PluginNotFound { .. } => {
                (StatusCode::BAD_REQUEST, "invalid-request")
            }
            HostError::PluginDenied { .. } => (StatusCode::FORBIDDEN, "denied"),
            // A store that is down is worth a retry; a malformed store URL is a settings error.
            HostError::Store(_) if exit_code == ExitStatus::Usage as u8 => {
                (StatusCode::BAD_REQUEST, "invalid-request")
            }
            HostError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            HostError::PluginLoad { .. }
            | HostError::PluginTrap { .. }
            | HostError::PluginTimeout { .. } => (StatusCode::BAD_GATEWAY, "plugin-error"),
            HostError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            status,
            kind,
            message,
            exit_code,
        }
    }
}

/// One element of a batch submit's answer, as the CLI prints it and the
/// daemon sends it.
pub fn submitted_json(r: crate::ledger::Submitted) -> crate::spec::SubmittedJson {
    match r {
        Ok((id, _)) => crate::spec::SubmittedJson {
            job_id: Some(id),
            error: None,
        },
        Err(e) => {
            let e = ApiError::from(e);
            crate::spec::SubmittedJson {
                job_id: None,
                error: Some(crate::spec::ErrorJson {
                    kind: e.kind.to_owned(),
                    message: e.message,
                    exit_code: Some(e.exit_code),
                }),
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A job as the daemon answers it: the CLI's JobInfo plus when the backend
/// reported it and which backend.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireJob {
    #[serde(flatten)]
    pub info: JobInfoJson,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

impl WireJob {
    pub fn known(info: &HpcJobInfo, observed_at: f64, backend: &str) -> WireJob {
        WireJob {
            info: JobInfoJson::from(info),
            observed_at: Some(observed_at),
            backend: Some(backend.to_owned()),
        }
    }

    pub fn failed(job_id: &str, e: &BackendError, backend: &str) -> WireJob {
        WireJob {
            info: JobInfoJson::failed(job_id, e),
            observed_at: None,
            backend: Some(backend.to_owned()),
        }
    }

    /// Back to what a plugin answered, for the CLI's printing.
    pub fn into_result(self) -> Result<HpcJobInfo, BackendError> {
        let i = self.info;
        if let Some(e) = i.error {
            return Err(backend_error(&e.kind, e.message));
        }
        let status = match i.status.as_deref() {
            Some("pending") => JobStatus::Pending,
            Some("running") => JobStatus::Running,
            Some("completed") => JobStatus::Completed,
            Some("failed") => JobStatus::Failed,
            other => {
                return Err(BackendError::Internal(format!(
                    "the daemon answered status `{}`",
                    other.unwrap_or("null")
                )));
            }
        };
        Ok(HpcJobInfo {
            job_id: i.job_id,
            status,
            exit_code: i.exit_code,
            wall_time_seconds: i.wall_time_seconds,
            cpu_hours: i.cpu_hours,
            peak_memory_gb: i.peak_memory_gb,
            native_state: i.native_state,
            reason: i.reason,
        })
    }
}

/// A backend error from its kind's name (`plugin-error` is reported as internal).
pub fn backend_error(kind: &str, message: String) -> BackendError {
    match kind {
        "invalid-request" => BackendError::InvalidRequest(message),
        "not-found" => BackendError::NotFound(message),
        "denied" => BackendError::Denied(message),
        "unavailable" => BackendError::Unavailable(message),
        _ => BackendError::Internal(message),
    }
}

/// A job spec as the `--spec` JSON, for sending a CLI-built spec to the daemon.
pub fn spec_json(s: &JobSpec) -> serde_json::Value {
    let r = &s.resource_requirements;
    let mut res = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        if !v.is_null() {
            res.insert(k.to_owned(), v);
        }
    };
    put("cpu", serde_json::json!(r.cpu));
    put("memory_gb", serde_json::json!(r.memory_gb));
    put("time_hours", serde_json::json!(r.time_hours));
    put("gpus", serde_json::json!(r.gpus));
    put("nodes", serde_json::json!(r.nodes));
    for (k, v) in &r.extra {
        put(k, serde_json::json!(v));
    }
    let env: serde_json::Map<String, serde_json::Value> = s
        .environment_variables
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect();
    serde_json::json!({
        "execution_command": s.execution_command,
        "image_ref": s.image_ref, "sif_path": s.sif_path, "input_dir": s.input_dir,
        "output_dir": s.output_dir, "workspace_dir": s.workspace_dir,
        "manifest_path": s.manifest_path, "job_name": s.job_name,
        "resource_requirements": res, "environment_variables": env,
        "idempotency_key": s.idempotency_key,
    })
}

/// The exit status a daemon's `exit_code` stands for.
pub fn exit_status(code: u8) -> ExitStatus {
    match code {
        0 => ExitStatus::Success,
        1 => ExitStatus::WaitTimeout,
        2 => ExitStatus::Usage,
        4 => ExitStatus::Denied,
        _ => ExitStatus::Backend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_the_wire() {
        let text = r#"{"execution_command": ["echo", "a b"], "job_name": "x",
            "resource_requirements": {"cpu": 4, "memory_gb": 1.5, "account": "ccat"},
            "environment_variables": {"A": "1"}, "idempotency_key": "exec-42"}"#;
        let spec = crate::spec::parse_spec(text).unwrap();
        let again = crate::spec::parse_spec(&spec_json(&spec).to_string()).unwrap();
        assert_eq!(format!("{spec:?}"), format!("{again:?}"));
        assert_eq!(again.idempotency_key.as_deref(), Some("exec-42"));
    }
}
