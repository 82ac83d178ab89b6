//! The command line: parse ([`args`]), run each job command against one
//! [`Jobs`] implementation — in-process or the daemon's — and print every
//! answer through the one renderer ([`render`]).

pub mod args;
pub mod conformance;
pub mod jobs;
pub mod plugins;
pub mod remote;
pub mod render;
pub mod scaffold;

pub use args::{Cli, Command, Lang, Output, PluginsCommand, SubmitArgs, TestArgs};

use crate::runtime::error::{ExitStatus, HostError};
use crate::runtime::host::Host;
use crate::runtime::settings::{Overrides, Settings};
use crate::submit::spec::Specs;
use jobs::{InProcess, Jobs};
use remote::Remote;
use render::Render;
use std::time::Duration;

/// Run one command (all but `serve`); the `ExitStatus` is for the process.
/// A command that fails whole returns its error, for [`Render::error`].
pub async fn run(cli: Cli, r: &mut Render) -> Result<ExitStatus, HostError> {
    let settings = Settings::load(&overrides(&cli))?;
    let command = match cli.command {
        Command::Reload => {
            let done = remote::reload(&settings).await?;
            r.notice(&done);
            return Ok(ExitStatus::Success);
        }
        Command::Serve { .. } => {
            return Err(HostError::Input("`serve` does not run here".into()));
        }
        Command::Plugins(cmd) if !matches!(cmd, PluginsCommand::List) => {
            return plugins::run(&Host::new(&settings)?, cmd, r).await;
        }
        command => JobCommand::parse(command)?,
    };
    match Remote::connect(&settings).await? {
        Some(mut daemon) => command.run(&mut daemon, r).await,
        None => {
            command
                .run(&mut InProcess::new(Host::new(&settings)?), r)
                .await
        }
    }
}

/// The settings the global flags name.
pub fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        config: cli.config.clone(),
        env: cli.env.clone(),
        backend: cli.backend.clone(),
    }
}

/// A job command with its arguments read and checked: a bad spec or
/// timeout fails before anything (a daemon, a plugin) is asked.
enum JobCommand {
    Submit(Specs),
    Status(Vec<String>),
    Wait(Vec<String>, Option<Duration>),
    Cancel(Vec<String>),
    Find(String),
    Logs(String),
    Plugins,
}

impl JobCommand {
    fn parse(command: Command) -> Result<JobCommand, HostError> {
        Ok(match command {
            Command::Submit(args) => JobCommand::Submit(args.specs()?),
            Command::Status { job_ids } => JobCommand::Status(job_ids),
            Command::Wait { job_ids, timeout } => JobCommand::Wait(job_ids, wait_timeout(timeout)?),
            Command::Cancel { job_ids } => JobCommand::Cancel(job_ids),
            Command::Find { idempotency_key } => JobCommand::Find(idempotency_key),
            Command::Logs { job_id } => JobCommand::Logs(job_id),
            Command::Plugins(_) => JobCommand::Plugins,
            Command::Serve { .. } | Command::Reload => {
                unreachable!("not job commands: run handles them")
            }
        })
    }

    async fn run(self, jobs: &mut impl Jobs, r: &mut Render) -> Result<ExitStatus, HostError> {
        match self {
            JobCommand::Submit(Specs::One(spec)) => Ok(r.submitted(&jobs.submit(&spec).await?)),
            JobCommand::Submit(Specs::Many(batch)) => Ok(r.batch(&jobs.submit_batch(batch).await?)),
            JobCommand::Status(ids) => Ok(r.statuses(&ids, &jobs.statuses(&ids).await?)),
            JobCommand::Wait(ids, timeout) => {
                let total = ids.len();
                let show = r.shows_progress();
                let mut draw = |open, waited| r.progress(open, total, waited);
                let progress: Option<&mut dyn FnMut(usize, Duration)> =
                    if show { Some(&mut draw) } else { None };
                let waited = jobs::wait(jobs, &ids, timeout, progress).await;
                r.end_progress();
                let waited = waited?;
                if waited.all_ended {
                    Ok(r.statuses(&ids, &waited.results))
                } else {
                    r.wait_timed_out(&ids, &waited.results, waited.waited);
                    Ok(ExitStatus::WaitTimeout)
                }
            }
            JobCommand::Cancel(ids) => {
                let mut worst = ExitStatus::Success;
                for id in &ids {
                    match jobs.cancel(id).await {
                        Ok(()) => r.cancelled(id),
                        Err(e) => worst = worst.max(r.error(&e)),
                    }
                }
                Ok(worst)
            }
            JobCommand::Find(key) => Ok(r.submission(&key, &jobs.find(&key).await?)),
            JobCommand::Logs(id) => Ok(r.logs(&id, &jobs.logs(&id).await?)),
            JobCommand::Plugins => Ok(r.plugins(&jobs.plugins().await?)),
        }
    }
}

/// `wait --timeout`: a number of seconds from 0 to the longest the host allows.
fn wait_timeout(timeout: Option<f64>) -> Result<Option<Duration>, HostError> {
    let Some(t) = timeout else { return Ok(None) };
    Duration::try_from_secs_f64(t.max(0.0))
        .ok()
        .filter(|d| *d <= crate::runtime::policy::MAX_SECONDS)
        .map(Some)
        .ok_or_else(|| {
            HostError::Input(format!(
                "`--timeout {t}` must be a number of seconds from 0 to {}",
                crate::runtime::policy::MAX_SECONDS.as_secs()
            ))
        })
}

/// `hpc-host serve`: runs the daemon (on its own runtime), or with
/// `--identify` prints the socket and settings fingerprint a daemon for
/// these settings would have.
pub fn serve(cli: &Cli, r: &mut Render) -> Result<ExitStatus, HostError> {
    let Command::Serve {
        detach,
        identify,
        auto,
    } = cli.command
    else {
        unreachable!("serve is only called for `serve`")
    };
    if identify {
        let settings = Settings::load(&overrides(cli))?;
        r.json(&serde_json::json!({
            "socket": settings.daemon.socket,
            "fingerprint": crate::daemon::fingerprint(&settings),
        }));
        return Ok(ExitStatus::Success);
    }
    match crate::daemon::server::start(overrides(cli), detach, auto)? {
        crate::daemon::server::Served::Stopped => {}
        crate::daemon::server::Served::Detached(pid) => r.text(&pid.to_string()),
    }
    Ok(ExitStatus::Success)
}
