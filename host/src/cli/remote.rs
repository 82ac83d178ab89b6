//! The CLI's jobs answered by the daemon: when one serves these settings on
//! the socket (and `HPC_DAEMON` allows), each [`Jobs`] call is one request,
//! and its answer is turned back into the typed result the in-process call
//! gives, error kinds and messages included.

use super::jobs::Jobs;
use super::render::Status;
use crate::daemon::DaemonMode;
use crate::daemon::api::WireJob;
use crate::daemon::client::{Client, ClientError};
use crate::runtime::bindings::{JobLogs, JobSpec};
use crate::runtime::error::{ErrorKind, HostError};
use crate::runtime::host::PluginRow;
use crate::runtime::settings::Settings;
use crate::submit::ledger::Submission;
use crate::submit::spec::Batch;
use axum::http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::time::Duration;

/// A connection to the daemon that serves these settings.
pub struct Remote {
    client: Client,
    socket: PathBuf,
    /// `?backend=…`, on every job request.
    query: String,
}

impl Remote {
    /// The daemon for these settings, if one answers and `HPC_DAEMON`
    /// allows it; `None`: run in-process. With `HPC_DAEMON = "require"`, no
    /// usable daemon is an error.
    pub async fn connect(settings: &Settings) -> Result<Option<Remote>, HostError> {
        let mode = settings.daemon.mode;
        if mode == DaemonMode::Never {
            return Ok(None);
        }
        let socket = settings.daemon.socket.clone();
        let require = |why: String| {
            if mode == DaemonMode::Require {
                Err(HostError::Remote {
                    kind: ErrorKind::Unavailable,
                    message: format!(
                        "{why}\nhint: `HPC_DAEMON = \"require\"` needs `hpc-host serve` running with these settings"
                    ),
                })
            } else {
                Ok(None)
            }
        };
        let mut client = match Client::connect(&socket).await {
            Ok(c) => c,
            Err(ClientError::Untrusted(why)) if mode != DaemonMode::Require => {
                tracing::warn!("{why}; nothing was sent, running in-process");
                return Ok(None);
            }
            Err(e) => return require(format!("no daemon answers on `{}`: {e}", socket.display())),
        };
        let health = match client.health().await {
            Ok(h) => h,
            Err(e) => {
                return require(format!(
                    "the daemon on `{}` did not answer: {e}",
                    socket.display()
                ));
            }
        };
        if health["fingerprint"].as_str() != Some(crate::daemon::fingerprint(settings).as_str()) {
            tracing::info!("the daemon serves other settings; running in-process");
            return require(format!(
                "the daemon on `{}` serves other settings (file {}, env `{}`)",
                socket.display(),
                health["settings_file"],
                health["env"].as_str().unwrap_or("")
            ));
        }
        Ok(Some(Remote {
            client,
            socket,
            query: format!("?backend={}", enc(&settings.backend)),
        }))
    }

    /// One request; the answer's JSON as `T`, or the daemon's error as the
    /// host error it stands for.
    async fn call<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T, HostError> {
        let (status, v) = self
            .client
            .call_raw(method, path, body)
            .await
            .map_err(|e| self.lost(e))?;
        if !status.is_success() {
            return Err(answered_error(status, &v));
        }
        serde_json::from_value(v).map_err(|e| self.lost(ClientError::Json(e)))
    }

    async fn call_json<T: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, HostError> {
        let bytes = serde_json::to_vec(body).expect("requests serialize");
        self.call(method, path, bytes).await
    }

    /// A failed exchange: the daemon went away or answered nonsense.
    fn lost(&self, e: ClientError) -> HostError {
        let kind = match e {
            ClientError::Json(_) => ErrorKind::Internal,
            _ => ErrorKind::Unavailable,
        };
        HostError::Remote {
            kind,
            message: format!("the daemon on `{}`: {e}", self.socket.display()),
        }
    }
}

/// The host error a daemon's error answer stands for (`{"error": {kind, message}}`).
fn answered_error(status: StatusCode, v: &serde_json::Value) -> HostError {
    let e = &v["error"];
    let kind = e["kind"]
        .as_str()
        .and_then(ErrorKind::parse)
        .unwrap_or(ErrorKind::Internal);
    let message = e["message"]
        .as_str()
        .map_or_else(|| format!("the daemon answered {status}"), str::to_owned);
    HostError::Remote { kind, message }
}

fn statuses_of(jobs: Vec<WireJob>) -> Vec<Status> {
    jobs.into_iter().map(WireJob::into_result).collect()
}

impl Jobs for Remote {
    async fn submit(&mut self, spec: &JobSpec) -> Result<String, HostError> {
        #[derive(serde::Deserialize)]
        struct Made {
            job_id: String,
        }
        let path = format!("/v1/jobs{}", self.query);
        let made: Made = self
            .call_json(
                Method::POST,
                &path,
                &crate::submit::spec::SpecJson::from(spec),
            )
            .await?;
        Ok(made.job_id)
    }

    async fn submit_batch(
        &mut self,
        batch: Batch,
    ) -> Result<Vec<Result<String, HostError>>, HostError> {
        // The batch as it was read: the daemon parses it the same way and
        // answers each element.
        let path = format!("/v1/jobs{}", self.query);
        let answers: Vec<crate::submit::spec::SubmittedJson> = self
            .call(Method::POST, &path, batch.text.into_bytes())
            .await?;
        Ok(answers
            .into_iter()
            .map(|a| match (a.job_id, a.error) {
                (Some(id), None) => Ok(id),
                (_, e) => Err(HostError::Remote {
                    kind: e
                        .as_ref()
                        .and_then(|e| ErrorKind::parse(&e.kind))
                        .unwrap_or(ErrorKind::Internal),
                    message: e.map_or_else(
                        || "the daemon answered no id and no error".into(),
                        |e| e.message,
                    ),
                }),
            })
            .collect())
    }

    async fn statuses(&mut self, ids: &[String]) -> Result<Vec<Status>, HostError> {
        let path = format!("/v1/jobs/status{}", self.query);
        let jobs: Vec<WireJob> = self
            .call_json(Method::POST, &path, &serde_json::json!({ "job_ids": ids }))
            .await?;
        Ok(statuses_of(jobs))
    }

    async fn statuses_once_ended(
        &mut self,
        ids: &[String],
        within: Duration,
    ) -> Result<Vec<Status>, HostError> {
        #[derive(serde::Deserialize)]
        struct Waited {
            jobs: Vec<WireJob>,
        }
        let path = format!("/v1/jobs/wait{}", self.query);
        let body = serde_json::json!({ "job_ids": ids, "timeout": within.as_secs_f64() });
        let waited: Waited = self.call_json(Method::POST, &path, &body).await?;
        Ok(statuses_of(waited.jobs))
    }

    async fn cancel(&mut self, id: &str) -> Result<(), HostError> {
        let path = format!("/v1/jobs/{}/cancel{}", enc(id), self.query);
        let _: serde_json::Value = self.call(Method::POST, &path, Vec::new()).await?;
        Ok(())
    }

    async fn logs(&mut self, id: &str) -> Result<JobLogs, HostError> {
        #[derive(serde::Deserialize)]
        struct Logs {
            stdout: String,
            stderr: String,
        }
        let path = format!("/v1/jobs/{}/logs{}", enc(id), self.query);
        let l: Logs = self.call(Method::GET, &path, Vec::new()).await?;
        Ok(JobLogs {
            stdout: l.stdout,
            stderr: l.stderr,
        })
    }

    async fn find(&mut self, key: &str) -> Result<Submission, HostError> {
        #[derive(serde::Deserialize)]
        struct Found {
            state: String,
            job_id: Option<String>,
        }
        let path = format!("/v1/submissions/{}{}", enc(key), self.query);
        let found: Found = self.call(Method::GET, &path, Vec::new()).await?;
        Ok(match (found.state.as_str(), found.job_id) {
            ("made", Some(id)) => Submission::Made(id),
            ("in-progress", _) => Submission::InProgress,
            _ => Submission::NeverMade,
        })
    }

    async fn plugins(&mut self) -> Result<Vec<PluginRow>, HostError> {
        self.call(Method::GET, "/v1/plugins", Vec::new()).await
    }
}

/// Percent-encode a path segment or query value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `hpc-host reload`: ask the daemon on the socket to re-read its settings.
pub async fn reload(settings: &Settings) -> Result<String, HostError> {
    let socket = &settings.daemon.socket;
    let client = Client::connect(socket)
        .await
        .map_err(|e| HostError::Remote {
            kind: ErrorKind::Unavailable,
            message: format!("no daemon answers on `{}`: {e}", socket.display()),
        })?;
    let mut remote = Remote {
        client,
        socket: socket.clone(),
        query: String::new(),
    };
    let _: serde_json::Value = remote.call(Method::POST, "/v1/reload", Vec::new()).await?;
    Ok(format!(
        "reloaded the settings of the daemon on {}",
        socket.display()
    ))
}
