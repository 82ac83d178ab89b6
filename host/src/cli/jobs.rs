//! What the CLI asks of jobs, answered in-process ([`InProcess`]) or by the
//! daemon ([`super::remote::Remote`]) with the same typed results, so one
//! renderer prints both and the CLI cannot tell them apart.

use super::render::Status;
use crate::runtime::bindings::{JobLogs, JobSpec};
use crate::runtime::error::HostError;
use crate::runtime::host::{Host, PluginRow};
use crate::runtime::plugin::Plugin;
use crate::submit::Submit;
use crate::submit::ledger::Submission;
use crate::submit::spec::Batch;
use std::time::{Duration, Instant};

/// The job commands of the CLI, one call each. Statically dispatched (the
/// CLI runs one implementation on a current-thread runtime), hence `async fn`.
#[allow(async_fn_in_trait)]
pub trait Jobs {
    /// Submit one spec; its job's id.
    async fn submit(&mut self, spec: &JobSpec) -> Result<String, HostError>;

    /// Submit a batch: per spec, in order, its job's id or why it has none.
    async fn submit_batch(
        &mut self,
        batch: Batch,
    ) -> Result<Vec<Result<String, HostError>>, HostError>;

    /// The status of each job, in order.
    async fn statuses(&mut self, ids: &[String]) -> Result<Vec<Status>, HostError>;

    /// The status of each job as soon as every one has ended, or once
    /// `within` has passed.
    async fn statuses_once_ended(
        &mut self,
        ids: &[String],
        within: Duration,
    ) -> Result<Vec<Status>, HostError>;

    async fn cancel(&mut self, id: &str) -> Result<(), HostError>;

    async fn logs(&mut self, id: &str) -> Result<JobLogs, HostError>;

    /// What became of the submit with an idempotency key.
    async fn find(&mut self, key: &str) -> Result<Submission, HostError>;

    /// The plugins available.
    async fn plugins(&mut self) -> Result<Vec<PluginRow>, HostError>;
}

/// How many of these statuses are of jobs not ended yet.
pub fn open(results: &[Status]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r, Ok(i) if !i.status.is_terminal()))
        .count()
}

/// How often `wait` redraws its progress line.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// How `wait` ended: every job ended, or the deadline came first.
pub struct Waited {
    pub results: Vec<Status>,
    pub all_ended: bool,
    pub waited: Duration,
}

/// Wait until every job has ended or `timeout` has passed; `progress` is
/// called with (jobs open, time waited) between answers.
pub async fn wait(
    jobs: &mut impl Jobs,
    ids: &[String],
    timeout: Option<Duration>,
    mut progress: Option<&mut dyn FnMut(usize, Duration)>,
) -> Result<Waited, HostError> {
    let start = Instant::now();
    loop {
        let waited = start.elapsed();
        let left = timeout.map(|t| t.saturating_sub(waited));
        // With a progress line, answer often enough to redraw it.
        let within = match (&progress, left) {
            (Some(_), Some(l)) => l.min(PROGRESS_EVERY),
            (Some(_), None) => PROGRESS_EVERY,
            (None, Some(l)) => l,
            (None, None) => crate::runtime::policy::MAX_SECONDS,
        };
        let results = jobs.statuses_once_ended(ids, within).await?;
        let open = open(&results);
        let waited = start.elapsed();
        let timed_out = timeout.is_some_and(|t| waited >= t);
        if open == 0 || timed_out {
            return Ok(Waited {
                results,
                all_ended: open == 0,
                waited,
            });
        }
        if let Some(p) = progress.as_mut() {
            p(open, waited);
        }
    }
}

/// The jobs of the backend plugin, answered in this process.
pub struct InProcess {
    host: Host,
    plugin: Option<Plugin>,
    /// The next pause between two status calls of a wait: it grows over
    /// the whole wait, not per call of [`Jobs::statuses_once_ended`].
    pause: Duration,
}

impl InProcess {
    pub fn new(host: Host) -> InProcess {
        InProcess {
            host,
            plugin: None,
            pause: POLL_FIRST,
        }
    }

    /// The backend, loaded on first use (`plugins list` needs none).
    fn backend(&mut self) -> Result<&Plugin, HostError> {
        if self.plugin.is_none() {
            self.plugin = Some(self.host.backend()?);
        }
        Ok(self.plugin.as_ref().expect("loaded above"))
    }
}

/// The first pause of an in-process wait between two status calls; each
/// next is half again as long, up to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(200);
const POLL_MAX: Duration = Duration::from_secs(2);

impl Jobs for InProcess {
    async fn submit(&mut self, spec: &JobSpec) -> Result<String, HostError> {
        self.backend()?.submit(spec).await
    }

    async fn submit_batch(
        &mut self,
        batch: Batch,
    ) -> Result<Vec<Result<String, HostError>>, HostError> {
        let results = self.backend()?.submit_parsed(batch.items).await?;
        Ok(results.into_iter().map(|r| r.map(|(id, _)| id)).collect())
    }

    async fn statuses(&mut self, ids: &[String]) -> Result<Vec<Status>, HostError> {
        self.backend()?.get_statuses(ids).await
    }

    async fn statuses_once_ended(
        &mut self,
        ids: &[String],
        within: Duration,
    ) -> Result<Vec<Status>, HostError> {
        let deadline = Instant::now() + within;
        loop {
            let results = self.statuses(ids).await?;
            let now = Instant::now();
            if open(&results) == 0 || now >= deadline {
                return Ok(results);
            }
            tokio::time::sleep(self.pause.min(deadline - now)).await;
            self.pause = (self.pause * 3 / 2).min(POLL_MAX);
        }
    }

    async fn cancel(&mut self, id: &str) -> Result<(), HostError> {
        self.backend()?.cancel(id).await
    }

    async fn logs(&mut self, id: &str) -> Result<JobLogs, HostError> {
        self.backend()?.get_logs(id).await
    }

    async fn find(&mut self, key: &str) -> Result<Submission, HostError> {
        self.backend()?.lookup(key).await
    }

    async fn plugins(&mut self) -> Result<Vec<PluginRow>, HostError> {
        self.host.plugin_rows()
    }
}
