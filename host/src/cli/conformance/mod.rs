//! `hpc-host plugins test NAME|FILE.wasm`: the conformance kit. It runs the
//! contract's promises (`wit/backend.wit`) against any plugin, under the
//! plugin's real policy and settings, as PSI/J's executor test suite does
//! for its executors: real jobs through the real scheduler, short ones.
//!
//! Each check is one promise ([`checks::ALL`]); they run concurrently and
//! share the few jobs they can (one trivial job, one `exit 3`), so a run
//! takes about as long as its slowest check: the time-limit check, which
//! waits for the scheduler to kill a job (SLURM rounds a limit up to a
//! minute). A check passes, fails with what it saw, or is skipped, and only
//! where the plugin says it does not support something: a plugin built
//! against `ccat:hpc@0.1.0` has no `find-job`, so the keyed-submit check is
//! skipped for it and says so.
//!
//! ```text
//! $ hpc-host plugins test local
//! plugin `local` (ccat:hpc@0.3.0)
//!   pass  describe          0.00 s
//!   pass  completes         0.31 s
//!   ...
//! 12 checks: 12 passed, 0 failed, 0 skipped (3.1 s)
//! ```
//!
//! Every job the kit starts and leaves running (a check that failed) is
//! cancelled before it returns.

pub mod checks;
mod report;

use crate::runtime::bindings::{HpcJobInfo, JobSpec};
use crate::runtime::plugin::Plugin;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

pub use report::{junit, table, to_json};

/// How the kit runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The image every job runs in (`image-ref`; Kubernetes needs one).
    pub image_ref: Option<String>,
    /// The longest a job may take to reach the state a check waits for.
    pub timeout: Duration,
    /// The time limit the time-limit check gives its job.
    pub time_limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image_ref: None,
            timeout: Duration::from_secs(150),
            time_limit: Duration::from_secs(2),
        }
    }
}

/// The most a cancelled job may take to end (within [`Options::timeout`]):
/// SLURM sends SIGTERM, then SIGKILL after `KillWait` (30 s by default).
pub const CANCEL_BOUND: Duration = Duration::from_secs(45);

/// What became of one check.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// What the plugin did instead.
    Fail(String),
    /// Why it did not run (only what the plugin says it does not support).
    Skip(String),
}

impl Outcome {
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Skip(_) => "skip",
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            Outcome::Pass => None,
            Outcome::Fail(m) | Outcome::Skip(m) => Some(m),
        }
    }
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: &'static str,
    pub promise: &'static str,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// The kit's result for one plugin.
#[derive(Debug, Clone)]
pub struct Report {
    pub plugin: String,
    pub contract: String,
    pub results: Vec<CheckResult>,
    pub seconds: f64,
}

impl Report {
    pub fn count(&self, word: &str) -> usize {
        self.results
            .iter()
            .filter(|r| r.outcome.word() == word)
            .count()
    }

    pub fn passed(&self) -> bool {
        self.count("fail") == 0
    }
}

/// A job that has ended, shared by the checks that read it.
#[derive(Debug, Clone)]
pub struct Ended {
    pub id: String,
    pub info: HpcJobInfo,
}

/// What the checks share: the plugin, the options, the shared jobs and
/// every job started (to cancel what is left at the end).
pub struct Kit<'a> {
    pub plugin: &'a Plugin,
    pub opts: Options,
    started: Mutex<Vec<String>>,
    trivial: OnceCell<Result<Ended, String>>,
    exit3: OnceCell<Result<Ended, String>>,
}

/// Run every check (or those named in `only`) against `plugin`.
pub async fn run(plugin: &Plugin, opts: Options, only: &[String]) -> Report {
    let start = Instant::now();
    let kit = Kit {
        plugin,
        opts,
        started: Mutex::new(Vec::new()),
        trivial: OnceCell::new(),
        exit3: OnceCell::new(),
    };
    let selected: Vec<&checks::Check> = checks::ALL
        .iter()
        .filter(|c| only.is_empty() || only.iter().any(|o| o == c.name))
        .collect();
    let runs = selected.iter().map(|c| async {
        let t = Instant::now();
        let outcome = match (c.skip)(&kit) {
            Some(why) => Outcome::Skip(why),
            None => match (c.run)(&kit).await {
                Ok(()) => Outcome::Pass,
                Err(m) => Outcome::Fail(m),
            },
        };
        CheckResult {
            name: c.name,
            promise: c.promise,
            outcome,
            seconds: t.elapsed().as_secs_f64(),
        }
    });
    let results = futures_util::future::join_all(runs).await;
    kit.clean_up().await;
    Report {
        plugin: plugin.name().to_owned(),
        contract: format!(
            "{}@{}",
            crate::runtime::bindings::CONTRACT_PACKAGE,
            plugin.contract().version()
        ),
        results,
        seconds: start.elapsed().as_secs_f64(),
    }
}

impl Kit<'_> {
    /// A spec running `argv` in the kit's image, named for the kit.
    pub fn spec(&self, argv: &[&str]) -> JobSpec {
        JobSpec {
            image_ref: self.opts.image_ref.clone(),
            job_name: Some("hpc-kit".into()),
            ..JobSpec::command(argv.iter().copied())
        }
    }

    /// Submit (without the ledger: one plugin call) and remember the id.
    pub async fn submit(&self, spec: &JobSpec) -> Result<String, String> {
        let id = self
            .plugin
            .submit_once(spec)
            .await
            .map_err(|e| format!("submit failed: {e}"))?;
        self.started(&id);
        Ok(id)
    }

    /// Remember a job to cancel at the end if it still runs.
    pub fn started(&self, id: &str) {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_owned());
    }

    /// Poll `id` until `pred` holds, for at most `bound`; every status seen
    /// goes to `seen`.
    pub async fn until(
        &self,
        id: &str,
        bound: Duration,
        what: &str,
        seen: &mut Vec<HpcJobInfo>,
        pred: impl Fn(&HpcJobInfo) -> bool,
    ) -> Result<HpcJobInfo, String> {
        let deadline = Instant::now() + bound;
        let mut pause = Duration::from_millis(100);
        loop {
            let info = self
                .plugin
                .get_status(id)
                .await
                .map_err(|e| format!("get-status of `{id}` failed: {e}"))?;
            seen.push(info.clone());
            if pred(&info) {
                return Ok(info);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "job `{id}` was not {what} within {:.0} s; last: {}",
                    bound.as_secs_f64(),
                    show(&info)
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 3 / 2).min(Duration::from_secs(1));
        }
    }

    /// Wait until `id` ends, within the kit's timeout.
    pub async fn ended(&self, id: &str) -> Result<HpcJobInfo, String> {
        self.until(id, self.opts.timeout, "ended", &mut Vec::new(), |i| {
            i.status.is_terminal()
        })
        .await
    }

    async fn shared(&self, argv: &[&str]) -> Result<Ended, String> {
        let id = self.submit(&self.spec(argv)).await?;
        let info = self.ended(&id).await?;
        Ok(Ended { id, info })
    }

    /// The trivial job (prints a line on each stream), ended.
    pub async fn trivial(&self) -> Result<Ended, String> {
        self.trivial
            .get_or_init(|| {
                self.shared(&[
                    "/bin/sh",
                    "-c",
                    concat!("echo ", "hpc-kit-out; echo ", "hpc-kit-err >&2"),
                ])
            })
            .await
            .clone()
            .map_err(|e| format!("the trivial job: {e}"))
    }

    /// The `exit 3` job, ended.
    pub async fn exit3(&self) -> Result<Ended, String> {
        self.exit3
            .get_or_init(|| self.shared(&["/bin/sh", "-c", "exit 3"]))
            .await
            .clone()
            .map_err(|e| format!("the `exit 3` job: {e}"))
    }

    /// Cancel every job the kit started that has not ended.
    async fn clean_up(&self) {
        let ids = std::mem::take(&mut *self.started.lock().unwrap_or_else(|p| p.into_inner()));
        if ids.is_empty() {
            return;
        }
        let Ok(statuses) = self.plugin.get_statuses(&ids).await else {
            return;
        };
        for (id, s) in ids.iter().zip(statuses) {
            if !matches!(s, Ok(i) if i.status.is_terminal())
                && let Err(e) = self.plugin.cancel(id).await
            {
                tracing::warn!(job.id = %id, "the kit could not cancel its job: {e}");
            }
        }
    }
}

/// A status in one line, for messages.
pub fn show(i: &HpcJobInfo) -> String {
    format!(
        "{} exit={:?} wall={:?} native={:?} reason={:?}",
        crate::submit::spec::status_name(i.status),
        i.exit_code,
        i.wall_time_seconds,
        i.native_state,
        i.reason
    )
}

/// `plugins test`: load the plugin, run the kit, print the report.
pub async fn command(
    host: &crate::runtime::host::Host,
    args: crate::cli::TestArgs,
    r: &mut crate::cli::render::Render,
) -> Result<crate::runtime::error::ExitStatus, crate::HostError> {
    use crate::HostError;
    let seconds = |what: &str, s: f64| {
        Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero() && *d <= crate::runtime::policy::MAX_SECONDS)
            .ok_or_else(|| {
                HostError::Input(format!(
                    "`--{what} {s}` must be a positive number of seconds"
                ))
            })
    };
    let opts = Options {
        image_ref: args.image_ref,
        timeout: seconds("timeout", args.timeout)?,
        time_limit: seconds("time-limit", args.time_limit)?,
    };
    if let Some(bad) = args
        .checks
        .iter()
        .find(|c| !checks::ALL.iter().any(|k| k.name == *c))
    {
        let names: Vec<&str> = checks::ALL.iter().map(|c| c.name).collect();
        return Err(HostError::Input(format!(
            "no check `{bad}`; hint: the checks are {}",
            names.join(", ")
        )));
    }
    let plugin = if args.plugin.ends_with(".wasm") || args.plugin.contains('/') {
        let path = std::path::PathBuf::from(&args.plugin);
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_owned();
        crate::sys::fsperm::check_plugin_file(&path).map_err(|message| {
            HostError::PluginDenied {
                plugin: name.clone(),
                message,
            }
        })?;
        host.load_source(crate::runtime::host::Source::from_file(&name, &path)?)?
    } else {
        host.load(&args.plugin)?
    };
    let report = run(&plugin, opts, &args.checks).await;
    if let Some(file) = &args.junit {
        std::fs::write(file, junit(&report))
            .map_err(|e| HostError::Input(format!("cannot write `{}`: {e}", file.display())))?;
    }
    match r.output() {
        crate::cli::Output::Json => r.json(&to_json(&report)),
        crate::cli::Output::Text => r.text(&table(&report)),
    }
    Ok(if report.passed() {
        crate::runtime::error::ExitStatus::Success
    } else {
        crate::runtime::error::ExitStatus::WaitTimeout
    })
}
