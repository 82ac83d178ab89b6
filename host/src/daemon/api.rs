//! The wire shapes of the socket API: errors with their HTTP status and CLI
//! exit code, job answers, and job specs, all as the CLI's `--output json`.

use crate::runtime::bindings::{BackendError, HpcJobInfo, JobStatus};
use crate::runtime::error::{ErrorKind, HostError};
use crate::submit::spec::JobInfoJson;
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
            ..ApiError::of_kind(ErrorKind::InvalidRequest, message.into())
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::of_kind(ErrorKind::Unavailable, message.into())
    }

    /// An error of a kind, with the kind's HTTP status and exit code.
    fn of_kind(kind: ErrorKind, message: String) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(kind.http_status())
                .expect("the table's statuses are valid"),
            kind: kind.as_str(),
            message,
            exit_code: kind.exit_status() as u8,
        }
    }

    /// A plugin's own error for one job or call.
    pub fn of_backend(e: &BackendError, message: String) -> ApiError {
        ApiError::of_kind(ErrorKind::of_backend(e), message)
    }

    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"error": {"kind": self.kind, "message": self.message, "exit_code": self.exit_code}})
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> ApiError {
        ApiError::of_kind(e.kind(), e.report())
    }
}

/// One element of a batch submit's answer, as the daemon sends it.
pub fn submitted_json(r: crate::submit::ledger::Submitted) -> crate::submit::spec::SubmittedJson {
    match r {
        Ok((id, _)) => crate::submit::spec::SubmittedJson {
            job_id: Some(id),
            error: None,
        },
        Err(e) => crate::submit::spec::SubmittedJson {
            job_id: None,
            error: Some(crate::submit::spec::ErrorJson::of(&e)),
        },
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
            let kind = ErrorKind::parse(&e.kind).unwrap_or(ErrorKind::Internal);
            return Err(kind.backend_error(e.message));
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
