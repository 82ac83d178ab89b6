//! [`FakeHost`], an in-memory [`Host`] for plugins' native unit tests:
//! settings and kv in maps, scripted answers per program and per Kubernetes
//! call, supervised jobs whose states a test sets, and a record of every call.
//!
//! Enable with the `fake` feature from `[dev-dependencies]`:
//!
//! ```toml
//! [dev-dependencies]
//! hpc-plugin-sdk = { path = "../sdk", features = ["fake"] }
//! ```
//!
//! A call nothing was scripted for panics with the call in the message: in a
//! test, an unexpected host call is a failure to see, not an answer to guess.

use crate::ccat::hpc0_1_0::{kube, kv, process};
use crate::host::Host;
use kube::{KubeError, Propagation};
use kv::KvError;
use process::{JobRequest, JobState, LogStream, ProcessError, RunOutput, RunRequest};
use std::collections::{HashMap, VecDeque};

/// One Kubernetes call: the operation (`create`, `get`, `list`, `delete`,
/// `pod-logs`), the kind (`Pod` for logs), the namespace and the name, body
/// or selector.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeCall {
    pub op: String,
    pub kind: String,
    pub namespace: String,
    pub arg: String,
}

/// The fake host. Fields are public: tests set them up and read them back.
#[derive(Default)]
pub struct FakeHost {
    pub settings: HashMap<String, String>,
    /// Answers per program, popped in order.
    pub answers: HashMap<String, VecDeque<Result<RunOutput, ProcessError>>>,
    /// Every `run`, in order.
    pub calls: Vec<RunRequest>,
    pub kv: HashMap<String, Vec<u8>>,
    /// kv writes fail from this many successful ones on.
    pub kv_fail_after: Option<usize>,
    pub kv_writes: usize,
    /// kv reads fail (the store is down).
    pub kv_down: bool,
    pub warnings: Vec<String>,
    pub clock: u64,
    /// Every `spawn-job` request that succeeded; its state becomes running.
    pub spawned: Vec<JobRequest>,
    /// The next `spawn-job` fails with this.
    pub spawn_error: Option<ProcessError>,
    /// Supervised jobs' states; an id not here is not found.
    pub jobs: HashMap<String, JobState>,
    /// Every `kill-job` id.
    pub killed: Vec<String>,
    /// Per job: (stdout, stderr).
    pub job_logs: HashMap<String, (String, String)>,
    /// Answers per Kubernetes operation (see [`KubeCall`]), popped in order.
    pub kube_answers: HashMap<String, VecDeque<Result<String, KubeError>>>,
    /// Every Kubernetes call, in order.
    pub kube_calls: Vec<KubeCall>,
}

/// The usage of a job that ended with `exit_code` after a second.
pub fn exited(exit_code: i32) -> JobState {
    JobState::Exited(process::JobUsage {
        exit_code: Some(exit_code),
        signal: None,
        wall_time_seconds: 1.0,
        cpu_seconds: 0.5,
        peak_rss_bytes: 1 << 20,
        cancelled: false,
        timed_out: false,
    })
}

/// The state of a job `kill-job` stopped (SIGTERM, cancelled).
pub fn cancelled() -> JobState {
    JobState::Exited(process::JobUsage {
        exit_code: None,
        signal: Some(15),
        wall_time_seconds: 1.0,
        cpu_seconds: 0.0,
        peak_rss_bytes: 1 << 20,
        cancelled: true,
        timed_out: false,
    })
}

impl FakeHost {
    /// An empty host: no settings, no keys, no answers.
    pub fn new() -> Self {
        FakeHost::default()
    }
    /// With one more setting.
    pub fn with_setting(mut self, key: &str, value: &str) -> Self {
        self.settings.insert(key.into(), value.into());
        self
    }
    /// Script the next answer of `program`.
    pub fn answer(&mut self, program: &str, answer: Result<RunOutput, ProcessError>) -> &mut Self {
        self.answers
            .entry(program.into())
            .or_default()
            .push_back(answer);
        self
    }
    /// Script the next answer of a Kubernetes operation (see [`KubeCall`]).
    pub fn kube_answer(&mut self, op: &str, answer: Result<String, KubeError>) -> &mut Self {
        self.kube_answers
            .entry(op.into())
            .or_default()
            .push_back(answer);
        self
    }
    /// The `run` calls of one program.
    pub fn calls_to(&self, program: &str) -> Vec<&RunRequest> {
        self.calls.iter().filter(|c| c.program == program).collect()
    }
    /// The Kubernetes calls of one operation.
    pub fn kube_calls_to(&self, op: &str) -> Vec<&KubeCall> {
        self.kube_calls.iter().filter(|c| c.op == op).collect()
    }

    fn kube(&mut self, op: &str, kind: &str, ns: &str, arg: &str) -> Result<String, KubeError> {
        self.kube_calls.push(KubeCall {
            op: op.into(),
            kind: kind.into(),
            namespace: ns.into(),
            arg: arg.into(),
        });
        self.kube_answers
            .get_mut(op)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("unexpected kube `{op}` of {kind} `{arg}` in `{ns}`"))
    }

    fn kv_check(&self) -> Result<(), KvError> {
        if self.kv_down {
            return Err(KvError::Unavailable("redis is down".into()));
        }
        Ok(())
    }
}

impl Host for FakeHost {
    fn setting(&self, key: &str) -> Option<String> {
        self.settings.get(key).cloned()
    }
    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError> {
        self.calls.push(req.clone());
        self.answers
            .get_mut(&req.program)
            .and_then(VecDeque::pop_front)
            .unwrap_or_else(|| panic!("unexpected call to `{}` {:?}", req.program, req.args))
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.kv_check()?;
        Ok(self.kv.get(key).cloned())
    }
    fn kv_set(&mut self, key: &str, value: &[u8], _ttl: Option<u32>) -> Result<(), KvError> {
        if self.kv_down || self.kv_fail_after.is_some_and(|n| self.kv_writes >= n) {
            return Err(KvError::Unavailable("redis is down".into()));
        }
        self.kv_writes += 1;
        self.kv.insert(key.into(), value.to_vec());
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError> {
        self.kv_check()?;
        Ok(self.kv.remove(key).is_some())
    }
    fn warn(&mut self, msg: &str) {
        self.warnings.push(msg.into());
    }
    fn now_millis(&mut self) -> u64 {
        self.clock += 1;
        1_700_000_000_000 + self.clock
    }
    fn random(&mut self) -> u64 {
        0xabcdef
    }
    fn spawn_job(&mut self, req: &JobRequest) -> Result<(), ProcessError> {
        if let Some(e) = self.spawn_error.take() {
            return Err(e);
        }
        self.spawned.push(req.clone());
        let since = self.now_millis() as f64 / 1000.0;
        self.jobs.insert(req.id.clone(), JobState::Running(since));
        Ok(())
    }
    fn job_states(&mut self, ids: &[String]) -> Vec<Result<JobState, ProcessError>> {
        ids.iter()
            .map(|id| {
                self.jobs
                    .get(id)
                    .cloned()
                    .ok_or_else(|| ProcessError::NotFound(format!("no job `{id}`")))
            })
            .collect()
    }
    fn kill_job(&mut self, id: &str) -> Result<bool, ProcessError> {
        self.killed.push(id.into());
        match self.jobs.get(id) {
            None => Err(ProcessError::NotFound(format!("no job `{id}`"))),
            Some(JobState::Running(_)) => {
                self.jobs.insert(id.into(), cancelled());
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }
    fn read_job_log(
        &mut self,
        id: &str,
        which: LogStream,
        max_bytes: u64,
    ) -> Result<String, ProcessError> {
        let (out, err) = self
            .job_logs
            .get(id)
            .ok_or_else(|| ProcessError::NotFound(format!("no job `{id}`")))?;
        let text = match which {
            LogStream::Stdout => out,
            LogStream::Stderr => err,
        };
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let start = text.len().saturating_sub(max);
        Ok(text.get(start..).unwrap_or_default().to_owned())
    }
    fn kube_create(
        &mut self,
        _api: &str,
        kind: &str,
        ns: &str,
        body: &str,
    ) -> Result<String, KubeError> {
        self.kube("create", kind, ns, body)
    }
    fn kube_get(
        &mut self,
        _api: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<String, KubeError> {
        self.kube("get", kind, ns, name)
    }
    fn kube_list(
        &mut self,
        _api: &str,
        kind: &str,
        ns: &str,
        selector: &str,
    ) -> Result<String, KubeError> {
        self.kube("list", kind, ns, selector)
    }
    fn kube_delete(
        &mut self,
        _api: &str,
        kind: &str,
        ns: &str,
        name: &str,
        _propagation: Propagation,
    ) -> Result<String, KubeError> {
        self.kube("delete", kind, ns, name)
    }
    fn kube_pod_logs(
        &mut self,
        ns: &str,
        pod: &str,
        _container: Option<&str>,
        _tail_lines: Option<u32>,
    ) -> Result<String, KubeError> {
        self.kube("pod-logs", "Pod", ns, pod)
    }
}

/// A spec of just `argv`: no image, folders, resources, environment or name.
/// Tests set the fields they are about on top.
pub fn spec(argv: &[&str]) -> crate::JobSpec {
    crate::JobSpec {
        execution_command: argv.iter().map(|w| w.to_string()).collect(),
        image_ref: None,
        sif_path: None,
        input_dir: None,
        output_dir: None,
        workspace_dir: None,
        manifest_path: None,
        resource_requirements: crate::ResourceRequirements {
            cpu: None,
            memory_gb: None,
            time_hours: None,
            gpus: None,
            nodes: None,
            extra: vec![],
        },
        environment_variables: vec![],
        job_name: None,
        idempotency_key: None,
    }
}

/// A program's answer: exit 0 with `stdout`.
pub fn ok(stdout: &str) -> Result<RunOutput, ProcessError> {
    Ok(RunOutput {
        exit_code: Some(0),
        signal: None,
        stdout: stdout.into(),
        stderr: vec![],
        truncated: false,
    })
}

/// A program's answer: exit 1 with `stderr`.
pub fn fail(stderr: &str) -> Result<RunOutput, ProcessError> {
    Ok(RunOutput {
        exit_code: Some(1),
        signal: None,
        stdout: vec![],
        stderr: stderr.into(),
        truncated: false,
    })
}
