//! The CLI's side of the socket: when a daemon with the same settings answers
//! (and `HPC_DAEMON` allows), a command goes to it and prints exactly what the
//! in-process command would, with the same exit code.

use super::DaemonMode;
use super::api::{WireJob, exit_status, spec_json};
use crate::cli::{Cli, Command, Output, PluginsCommand};
use crate::error::{ExitStatus, HostError};
use crate::settings::Settings;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::path::Path;

/// One connection to the daemon, reused for every request of a command.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
}

/// A failed exchange with the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the daemon: {0}")]
    Io(#[from] std::io::Error),
    #[error("the daemon's connection failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the daemon answered something that is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The socket or the process behind it is not this user's: nothing was sent.
    #[error("refusing the daemon's socket: {0}")]
    Untrusted(String),
}

impl Client {
    /// Connect, and make sure this user serves the socket before anything
    /// is sent: the socket file is this user's, and so is the process that
    /// accepted the connection (`SO_PEERCRED`), so another user who bound
    /// the path first never sees a request (job specs carry tokens).
    pub async fn connect(socket: &Path) -> Result<Client, ClientError> {
        if !crate::fsperm::check_own_socket(socket).map_err(ClientError::Untrusted)? {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no socket at `{}`", socket.display()),
            )));
        }
        let stream = tokio::net::UnixStream::connect(socket).await?;
        // SAFETY: plain syscall.
        let uid = unsafe { libc::geteuid() };
        let peer = stream.peer_cred()?;
        if peer.uid() != uid {
            return Err(ClientError::Untrusted(format!(
                "`{}` is served by uid {} (pid {}), not by this user ({uid})",
                socket.display(),
                peer.uid(),
                peer.pid()
                    .map_or_else(|| "unknown".into(), |p| p.to_string())
            )));
        }
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("daemon connection ended: {e}");
            }
        });
        Ok(Client { sender })
    }

    /// One request; the status and the JSON answer.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.call_raw(method, path, bytes).await
    }

    /// [`Client::call`] with a body that is JSON text already.
    pub async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let bytes = Bytes::from(body);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hpc-host")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .expect("a valid request");
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body)?))
    }

    pub async fn health(&mut self) -> Result<serde_json::Value, ClientError> {
        Ok(self.call(Method::GET, "/v1/health", None).await?.1)
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

/// Run `cli` through the daemon if one serves these settings; otherwise hand
/// the command back to run in-process.
pub async fn try_run(cli: Cli, settings: &Settings) -> Result<Result<ExitStatus, Cli>, HostError> {
    let mode = settings.daemon.mode;
    let usable = matches!(
        cli.command,
        Command::Submit(_)
            | Command::Status { .. }
            | Command::Wait { .. }
            | Command::Cancel { .. }
            | Command::Logs { .. }
            | Command::Find { .. }
            | Command::Plugins(PluginsCommand::List)
    );
    if mode == DaemonMode::Never || !usable {
        return Ok(Err(cli));
    }
    let socket = &settings.daemon.socket;
    let refuse = |why: String| -> Result<Result<ExitStatus, Cli>, HostError> {
        Err(HostError::Internal(anyhow::anyhow!(
            "{why}\nhint: `HPC_DAEMON = \"require\"` needs `hpc-host serve` running with these settings"
        )))
    };
    let mut client = match Client::connect(socket).await {
        Ok(c) => c,
        Err(e) if mode == DaemonMode::Require => {
            return refuse(format!("no daemon answers on `{}`: {e}", socket.display()));
        }
        Err(ClientError::Untrusted(why)) => {
            tracing::warn!("{why}; nothing was sent, running in-process");
            return Ok(Err(cli));
        }
        Err(_) => return Ok(Err(cli)),
    };
    let health = match client.health().await {
        Ok(h) => h,
        Err(e) if mode == DaemonMode::Require => {
            return refuse(format!(
                "the daemon on `{}` did not answer: {e}",
                socket.display()
            ));
        }
        Err(_) => return Ok(Err(cli)),
    };
    if health["fingerprint"].as_str() != Some(super::fingerprint(settings).as_str()) {
        if mode == DaemonMode::Require {
            return refuse(format!(
                "the daemon on `{}` serves other settings (file {}, env `{}`)",
                socket.display(),
                health["settings_file"],
                health["env"].as_str().unwrap_or("")
            ));
        }
        tracing::info!("the daemon serves other settings; running in-process");
        return Ok(Err(cli));
    }
    run(&mut client, cli, settings)
        .await
        .map_err(|e| HostError::Internal(anyhow::anyhow!("{e}")))
        .map(Ok)
}

/// Print a whole-request error as the CLI does, and give its exit status.
fn failed(v: &serde_json::Value) -> ExitStatus {
    let e = &v["error"];
    eprintln!(
        "error: {}",
        crate::sanitize::escape_block(e["message"].as_str().unwrap_or("the daemon failed"))
    );
    exit_status(e["exit_code"].as_u64().unwrap_or(3) as u8)
}

async fn run(c: &mut Client, cli: Cli, settings: &Settings) -> Result<ExitStatus, ClientError> {
    let out = cli.output;
    let q = format!("?backend={}", enc(&settings.backend));
    match cli.command {
        Command::Submit(args) => {
            let specs = match crate::commands::submit_specs(*args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(e.exit_status());
                }
            };
            let path = format!("/v1/jobs{q}");
            let spec = match specs {
                crate::spec::Specs::One(spec) => spec,
                crate::spec::Specs::Many { text, .. } => {
                    // The batch as it was read: the daemon parses it the same
                    // way, and answers each element.
                    let (status, v) = c.call_raw(Method::POST, &path, text.into_bytes()).await?;
                    if !status.is_success() {
                        return Ok(failed(&v));
                    }
                    let results: Vec<crate::spec::SubmittedJson> = serde_json::from_value(v)?;
                    return Ok(crate::commands::print_batch(&results, out));
                }
            };
            let (status, v) = c.call(Method::POST, &path, Some(&spec_json(&spec))).await?;
            if !status.is_success() {
                return Ok(failed(&v));
            }
            let id = v["job_id"].as_str().unwrap_or_default();
            match out {
                Output::Text => crate::commands::print(id),
                Output::Json => {
                    crate::commands::print(&serde_json::json!({ "job_id": id }).to_string())
                }
            }
            Ok(ExitStatus::Success)
        }
        Command::Status { job_ids } => {
            let body = serde_json::json!({ "job_ids": job_ids });
            let (status, v) = c
                .call(Method::POST, &format!("/v1/jobs/status{q}"), Some(&body))
                .await?;
            if !status.is_success() {
                return Ok(failed(&v));
            }
            let jobs: Vec<WireJob> = serde_json::from_value(v)?;
            let results: Vec<_> = jobs.into_iter().map(WireJob::into_result).collect();
            Ok(crate::commands::print_statuses(&job_ids, &results, out))
        }
        Command::Wait { job_ids, timeout } => {
            let started = std::time::Instant::now();
            let body = serde_json::json!({ "job_ids": job_ids, "timeout": timeout });
            let (status, v) = c
                .call(Method::POST, &format!("/v1/jobs/wait{q}"), Some(&body))
                .await?;
            if !status.is_success() {
                return Ok(failed(&v));
            }
            let complete = v["complete"].as_bool().unwrap_or(false);
            let jobs: Vec<WireJob> = serde_json::from_value(v["jobs"].clone())?;
            let results: Vec<_> = jobs.into_iter().map(WireJob::into_result).collect();
            let worst = crate::commands::print_statuses(&job_ids, &results, out);
            if complete {
                return Ok(worst);
            }
            let open = results
                .iter()
                .filter(|r| matches!(r, Ok(i) if !i.status.is_terminal()))
                .count();
            eprintln!(
                "error: {open} of {} jobs still running after {:.0} s",
                job_ids.len(),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitStatus::WaitTimeout)
        }
        Command::Cancel { job_ids } => {
            let mut worst = ExitStatus::Success;
            for id in &job_ids {
                let (status, v) = c
                    .call(
                        Method::POST,
                        &format!("/v1/jobs/{}/cancel{q}", enc(id)),
                        None,
                    )
                    .await?;
                if status.is_success() {
                    if out == Output::Json {
                        crate::commands::print(&v.to_string());
                    }
                } else {
                    worst = worst.max(failed(&v));
                }
            }
            Ok(worst)
        }
        Command::Find { idempotency_key } => {
            let (status, v) = c
                .call(
                    Method::GET,
                    &format!("/v1/submissions/{}{q}", enc(&idempotency_key)),
                    None,
                )
                .await?;
            if !status.is_success() {
                return Ok(failed(&v));
            }
            use crate::ledger::Submission;
            let found = match (v["state"].as_str(), v["job_id"].as_str()) {
                (Some("made"), Some(id)) => Submission::Made(id.to_owned()),
                (Some("in-progress"), _) => Submission::InProgress,
                _ => Submission::NeverMade,
            };
            Ok(crate::commands::print_submission(
                &idempotency_key,
                &found,
                out,
            ))
        }
        Command::Logs { job_id } => {
            let (status, v) = c
                .call(
                    Method::GET,
                    &format!("/v1/jobs/{}/logs{q}", enc(&job_id)),
                    None,
                )
                .await?;
            if !status.is_success() {
                return Ok(failed(&v));
            }
            match out {
                Output::Text => {
                    use std::io::Write;
                    // What a job printed reaches the terminal escaped, as
                    // in-process (a job's ESC ] 52 must not write the clipboard).
                    use crate::sanitize::escape_block;
                    let _ = std::io::stdout()
                        .lock()
                        .write_all(escape_block(v["stdout"].as_str().unwrap_or("")).as_bytes());
                    let _ = std::io::stderr()
                        .write_all(escape_block(v["stderr"].as_str().unwrap_or("")).as_bytes());
                }
                Output::Json => crate::commands::print(&v.to_string()),
            }
            Ok(ExitStatus::Success)
        }
        Command::Plugins(_) => {
            let (status, v) = c.call(Method::GET, "/v1/plugins", None).await?;
            if !status.is_success() {
                return Ok(failed(&v));
            }
            let rows = v.as_array().cloned().unwrap_or_default();
            crate::commands::print_plugin_rows(rows, out);
            Ok(ExitStatus::Success)
        }
        Command::Serve { .. } | Command::Reload => unreachable!("not sent to the daemon"),
    }
}

/// `hpc-host reload`: ask the daemon on the socket to re-read its settings.
pub async fn reload(settings: &Settings) -> Result<ExitStatus, HostError> {
    let socket = &settings.daemon.socket;
    let mut c = Client::connect(socket).await.map_err(|e| {
        HostError::Internal(anyhow::anyhow!(
            "no daemon answers on `{}`: {e}",
            socket.display()
        ))
    })?;
    let (status, v) = c
        .call(Method::POST, "/v1/reload", None)
        .await
        .map_err(|e| HostError::Internal(anyhow::anyhow!("{e}")))?;
    if status.is_success() {
        eprintln!(
            "reloaded the settings of the daemon on {}",
            socket.display()
        );
        Ok(ExitStatus::Success)
    } else {
        Ok(failed(&v))
    }
}
