//! `ccat:hpc/process`: run the programs a plugin's policy names, and supervise
//! long-running jobs (see [`crate::supervise::jobs`]).
//!
//! Programs are named logically (`sbatch`) and mapped to the policy's absolute
//! path; a name that is not granted, or that looks like a path, is denied.
//! Nothing goes through a shell. Each run has a timeout, a cap on the output
//! kept, and a slot among the policy's concurrent processes. Supervised jobs
//! count against `max_running_jobs` on the machine ([`crate::supervise::slots`]): one
//! that finds no free slot is accepted and waits, `running(NOT_STARTED)` to
//! `job-states` (see [`jobs::NOT_STARTED`]).

use super::Has;
use crate::runtime::bindings::process::{
    self, JobRequest, JobState, JobUsage, LogStream, ProcessError, RunOutput, RunRequest,
};
use crate::runtime::policy::Policy;
use crate::runtime::state::State;
use crate::supervise::jobs::{self, JobError, Jobs};
use crate::supervise::slots::MAX_SLOTS;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use wasmtime::component::{HasData, Linker};

/// The timeout of a run when the plugin asks for none.
const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// `ccat:hpc/process`: granted by named programs or by `supervise`.
pub struct Process;

/// The process keys of a policy table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    pub programs: Option<BTreeMap<String, PathBuf>>,
    pub env: Option<Vec<String>>,
    pub program_env: Option<Vec<String>>,
    pub supervise: Option<bool>,
    pub max_processes: Option<usize>,
    pub max_runs_per_call: Option<usize>,
    pub max_running_jobs: Option<usize>,
}

/// What a plugin may run.
#[derive(Debug, Clone)]
pub struct ProcessGrant {
    /// Logical program name -> absolute path.
    pub programs: BTreeMap<String, PathBuf>,
    /// Host environment variables passed through to programs the plugin runs.
    pub env: Vec<String>,
    /// Variables the plugin itself may set for a program it runs (names, or
    /// prefixes ending in `*`); anything else is refused.
    pub program_env: Vec<String>,
    /// May start supervised jobs (`process.spawn-job`).
    pub supervise: bool,
    /// Programs the plugin may have running at once.
    pub processes: usize,
    /// Programs the plugin may start in one call: a status query needs a
    /// handful, so a flood is cut off long before it costs the machine.
    pub runs_per_call: usize,
    /// Supervised jobs of the plugin that run at once on this machine; the
    /// rest wait for a slot, in the order they were submitted.
    pub running_jobs: NonZeroUsize,
}

/// The fewest jobs the default bound lets run at once, whatever the CPUs.
const MIN_DEFAULT_RUNNING_JOBS: NonZeroUsize = NonZeroUsize::new(8).expect("8 is not 0");

/// The default bound on running jobs: the CPUs this process may use
/// (affinity and cgroup quota included, GNU parallel's default), and at
/// least [`MIN_DEFAULT_RUNNING_JOBS`]. A batch of 500 local jobs does not
/// fork-bomb a login node, while as many jobs as there are cores still run
/// side by side — and on a small machine (a 2-core VM, a CI runner) a few
/// long-running jobs meant to run together (a Dask cluster's workers, a
/// Parsl block and its tasks) do not wait on each other forever. A site
/// that wants another bound sets `max_running_jobs`.
fn default_running_jobs() -> NonZeroUsize {
    static DEFAULT: std::sync::OnceLock<NonZeroUsize> = std::sync::OnceLock::new();
    *DEFAULT.get_or_init(|| {
        std::thread::available_parallelism()
            .unwrap_or(NonZeroUsize::MIN)
            .max(MIN_DEFAULT_RUNNING_JOBS)
    })
}

impl super::Capability for Process {
    const INTERFACE: Option<&'static str> = Some("process");
    const GRANT_KEYS: &'static [&'static str] = &["programs", "supervise"];
    type Section = ProcessSection;
    type Grant = ProcessGrant;
    type Ctx = ProcessCtx;

    fn least_privilege(_plugin: &str) -> ProcessGrant {
        ProcessGrant {
            programs: BTreeMap::new(),
            env: Vec::new(),
            program_env: Vec::new(),
            supervise: false,
            processes: 8,
            runs_per_call: 64,
            running_jobs: default_running_jobs(),
        }
    }

    fn apply(g: &mut ProcessGrant, s: ProcessSection, plugin: &str) -> Result<(), String> {
        if let Some(programs) = s.programs {
            if let Some((logical, path)) = programs.iter().find(|(_, p)| !p.is_absolute()) {
                return Err(format!(
                    "`plugins.{plugin}.programs.{logical}` must be an absolute path, not `{}`",
                    path.display()
                ));
            }
            g.programs = programs;
        }
        macro_rules! set {
            ($($key:ident => $field:ident),* $(,)?) => {$( if let Some(v) = s.$key { g.$field = v; } )*};
        }
        set! {
            env => env,
            program_env => program_env,
            supervise => supervise,
            max_processes => processes,
            max_runs_per_call => runs_per_call,
        }
        if let Some(n) = s.max_running_jobs {
            g.running_jobs = NonZeroUsize::new(n)
                .filter(|n| n.get() <= MAX_SLOTS)
                .ok_or_else(|| {
                    format!(
                        "`plugins.{plugin}.max_running_jobs` must be between 1 and {MAX_SLOTS}, not `{n}`"
                    )
                })?;
        }
        Ok(())
    }

    fn granted(g: &ProcessGrant) -> bool {
        g.supervise || !g.programs.is_empty()
    }

    fn inspect(g: &ProcessGrant, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("programs".into(), serde_json::json!(g.programs));
        out.insert("env".into(), serde_json::json!(g.env));
        out.insert("program_env".into(), serde_json::json!(g.program_env));
        out.insert("supervise".into(), serde_json::json!(g.supervise));
    }

    fn limits(g: &ProcessGrant, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("max_processes".into(), g.processes.into());
        out.insert("max_runs_per_call".into(), g.runs_per_call.into());
        out.insert("max_running_jobs".into(), g.running_jobs.get().into());
    }

    fn context(policy: &Arc<Policy>, _: &ProcessGrant, setup: &super::Setup) -> ProcessCtx {
        ProcessCtx::new(
            policy.clone(),
            setup.jobs.clone(),
            setup.exe.clone(),
            setup.programs_die_with_host,
        )
    }

    fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
        process::add_to_linker::<State, HasProcess>(linker, <State as Has<Process>>::ctx)
            .map_err(anyhow::Error::from)
    }
}

#[derive(Clone)]
pub struct ProcessCtx {
    policy: Arc<Policy>,
    jobs: Jobs,
    /// This binary, which is also the job supervisor.
    exe: PathBuf,
    slots: Arc<Semaphore>,
    /// Programs started in this call (the context is cloned for every call).
    runs: usize,
    /// Programs get `SIGKILL` when the host dies (`PR_SET_PDEATHSIG`).
    die_with_host: bool,
}

impl ProcessCtx {
    pub fn new(policy: Arc<Policy>, jobs: Jobs, exe: PathBuf, die_with_host: bool) -> Self {
        let slots = Arc::new(Semaphore::new(policy.grants.process.processes.max(1)));
        ProcessCtx {
            policy,
            jobs,
            exe,
            slots,
            runs: 0,
            die_with_host,
        }
    }

    fn deny(&self, target: &str, message: String) -> ProcessError {
        ProcessError::Denied(super::denied(
            &self.policy.plugin,
            "process",
            target,
            message,
        ))
    }

    fn program(&self, name: &str) -> Result<PathBuf, ProcessError> {
        let plugin = &self.policy.plugin;
        match self.policy.grants.process.programs.get(name) {
            Some(path) if !name.contains('/') => Ok(path.clone()),
            _ => Err(self.deny(name, format!(
                "plugin `{plugin}` may not run `{name}`: programs are named by `plugins.{plugin}.programs` (granted: {})",
                self.policy.grants.process.programs.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    fn check_env(&self, env: &[(String, String)]) -> Result<(), ProcessError> {
        for (k, _) in env {
            if !crate::runtime::sanitize::is_env_name(k) {
                return Err(ProcessError::Invalid(format!(
                    "`{k}` is not a valid environment variable name"
                )));
            }
            // The dynamic loader's variables would run code the policy never granted.
            if k.starts_with("LD_") {
                return Err(self.deny(
                    k,
                    format!(
                        "plugin `{}` may not set `{k}` for a program",
                        self.policy.plugin
                    ),
                ));
            }
        }
        Ok(())
    }

    async fn run(&mut self, req: RunRequest) -> Result<RunOutput, ProcessError> {
        let path = self.program(&req.program)?;
        super::confine::check_program_env(&self.policy, &req.env)?;
        let budget = self.policy.grants.process.runs_per_call;
        if self.runs >= budget {
            let plugin = &self.policy.plugin;
            return Err(self.deny(&req.program, format!(
                "plugin `{plugin}` started {budget} programs in one call, its limit (`plugins.{plugin}.max_runs_per_call`)"
            )));
        }
        self.runs += 1;
        let _slot = self.slots.acquire().await.expect("never closed");
        let limit = self.policy.limits.wall_time;
        let timeout = req
            .timeout_ms
            .map_or(DEFAULT_RUN_TIMEOUT, |ms| Duration::from_millis(ms.into()))
            .min(limit);

        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(&req.args)
            .env_clear()
            .env("PATH", jobs::JOB_PATH)
            .envs(
                self.policy
                    .grants
                    .process
                    .env
                    .iter()
                    .filter_map(|k| std::env::var(k).ok().map(|v| (k, v))),
            )
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .stdin(if req.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // The program gets SIGKILL when the thread that started it ends: a
        // CLI killed mid-call (SIGKILL included) leaves no program behind
        // that could still, say, submit a job after its submitter is gone
        // (see the ledger, `submit::ledger`). Programs start on the runtime's worker
        // threads, which live as long as it. A `pre_exec` makes std `fork`
        // instead of `vfork`: cheap for the small CLI, ~1.4 ms per program
        // for the daemon, which turns it off (`HostOptions::daemon()`) and
        // whose claims the ledger honours until their deadline instead.
        if self.die_with_host {
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ProcessError::Failed(format!("cannot start `{}`: {e}", path.display())))?;
        // If this call is dropped before the program is reaped (the plugin
        // hit its `wall_seconds`), the whole group goes, not only the program.
        let mut group = GroupGuard(child.id());
        if let (Some(input), Some(mut stdin)) = (req.stdin, child.stdin.take()) {
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
            });
        }
        let cap = self.policy.limits.output_bytes;
        let pid = child.id();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        let work = async {
            let (out, err, status) =
                tokio::join!(read_capped(out, cap), read_capped(err, cap), child.wait());
            (out, err, status)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(((stdout, t1), (stderr, t2), status)) => {
                group.0 = None;
                let status = status.map_err(|e| {
                    ProcessError::Failed(format!("waiting for `{}`: {e}", req.program))
                })?;
                use std::os::unix::process::ExitStatusExt;
                Ok(RunOutput {
                    exit_code: status.code(),
                    signal: status.signal(),
                    stdout,
                    stderr,
                    truncated: t1 || t2,
                })
            }
            Err(_) => {
                // The whole tree, not only the program: its helpers share its group.
                super::confine::kill_group(group.0.take().or(pid));
                Err(ProcessError::TimedOut(format!(
                    "`{}` did not finish within {:.1} s and was killed",
                    req.program,
                    timeout.as_secs_f64()
                )))
            }
        }
    }
}

/// Kills a program's process group when dropped while it still holds one.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        super::confine::kill_group(self.0.take());
    }
}

/// Read a stream to its end, keeping at most `cap` bytes (and saying so).
async fn read_capped(mut r: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 << 10];
    let mut truncated = false;
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
        truncated |= n > room;
    }
    (kept, truncated)
}

fn job_error(e: JobError) -> ProcessError {
    match e {
        JobError::NotFound(m) => ProcessError::NotFound(m),
        JobError::Invalid(m) => ProcessError::Invalid(m),
        JobError::Failed(m) => ProcessError::Failed(m),
    }
}

type R<T> = wasmtime::Result<Result<T, ProcessError>>;

impl process::Host for ProcessCtx {
    async fn run(&mut self, req: RunRequest) -> R<RunOutput> {
        Ok(ProcessCtx::run(self, req).await)
    }

    async fn spawn_job(&mut self, req: JobRequest) -> R<()> {
        let plugin = &self.policy.plugin;
        if !self.policy.grants.process.supervise {
            return Ok(Err(self.deny(
                "spawn-job",
                format!(
                    "plugin `{plugin}` may not start supervised jobs (`plugins.{plugin}.supervise`)"
                ),
            )));
        }
        if let Err(e) = self.check_env(&req.env) {
            return Ok(Err(e));
        }
        let mut env = jobs::base_environment(&req.id);
        env.extend(req.env);
        let request = jobs::Request {
            argv: req.argv,
            env,
            working_dir: req.working_dir.map(PathBuf::from),
            time_limit_seconds: req.time_limit_seconds,
            slots: Some(self.jobs.slots(self.policy.grants.process.running_jobs)),
        };
        Ok(self
            .jobs
            .spawn(&req.id, &request, &self.exe)
            .await
            .map_err(job_error))
    }

    async fn job_states(
        &mut self,
        ids: Vec<String>,
    ) -> wasmtime::Result<Vec<Result<JobState, ProcessError>>> {
        // Each id costs a few file reads on this thread: bound the count.
        if ids.len() > super::confine::MAX_JOB_STATES {
            return Err(wasmtime::format_err!(
                "asked for {} job states in one call (at most {})",
                ids.len(),
                super::confine::MAX_JOB_STATES
            ));
        }
        Ok(ids
            .iter()
            .map(|id| {
                self.jobs.state(id).map_err(job_error).map(|s| match s {
                    jobs::State::Waiting => JobState::Running(jobs::NOT_STARTED),
                    jobs::State::Running { since } => JobState::Running(since),
                    jobs::State::Lost(why) => JobState::Lost(why),
                    jobs::State::Exited(u) => JobState::Exited(JobUsage {
                        exit_code: u.exit_code,
                        signal: u.signal,
                        wall_time_seconds: u.wall_time_seconds,
                        cpu_seconds: u.cpu_seconds,
                        peak_rss_bytes: u.peak_rss_bytes,
                        cancelled: u.cancelled,
                        timed_out: u.timed_out,
                    }),
                })
            })
            .collect())
    }

    async fn kill_job(&mut self, id: String) -> R<bool> {
        Ok(self.jobs.kill(&id).await.map_err(job_error))
    }

    async fn read_job_log(&mut self, id: String, which: LogStream, max_bytes: u64) -> R<String> {
        let max = max_bytes.min(self.policy.limits.output_bytes as u64);
        Ok(self
            .jobs
            .read_log(&id, matches!(which, LogStream::Stderr), max)
            .map_err(job_error))
    }
}

struct HasProcess;
impl HasData for HasProcess {
    type Data<'a> = &'a mut ProcessCtx;
}
