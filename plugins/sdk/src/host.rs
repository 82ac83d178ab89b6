//! The seam between a plugin's logic and the host: every host import a
//! plugin uses goes through [`Host`], so the logic runs natively in unit
//! tests over [`crate::fake::FakeHost`] and in the component over [`SdkHost`].
//!
//! Write backend functions over `h: &mut impl Host` and call them from the
//! `Guest` impl with `&mut SdkHost`. Files are not behind this seam: read and
//! write them with `std::fs` at absolute paths, which the host preopens at the
//! same paths inside the guest.
//!
//! The capabilities only some plugins use (job supervision, Kubernetes) have
//! default methods that answer `denied`, as a host whose policy does not grant
//! them would; a test host implements only what its plugin calls.

/// The host interfaces as the component imports them (their types, and raw
/// calls that bypass [`Host`]: prefer the trait, which tests can fake).
pub use crate::ccat::hpc0_1_0::{kube, kv, process};
use kube::{KubeError, Propagation};
use kv::KvError;
use process::{JobRequest, JobState, LogStream, ProcessError, RunOutput, RunRequest};

/// The start time `job-states` answers, as `running(NOT_STARTED)`, for a job
/// the host has accepted but not started yet: it waits for a free slot of
/// its policy's `max_running_jobs` (jobs that run at once on the machine).
/// The 0.1.0 `job-state` has no case of its own for it and is frozen; a start
/// in the future reads right to a plugin that does not know this (running,
/// for no time yet). Report such a job `pending`: see [`not_started`].
pub const NOT_STARTED: f64 = f64::INFINITY;

/// Whether a job's state says it waits for a slot to start ([`NOT_STARTED`]).
pub fn not_started(state: &JobState) -> bool {
    matches!(state, JobState::Running(since) if *since == NOT_STARTED)
}

fn denied<T, E>(what: &str, make: fn(String) -> E) -> Result<T, E> {
    Err(make(format!("this host does not provide `{what}`")))
}

/// What a plugin needs from the host.
pub trait Host {
    /// A setting (`wasi:config/store`), e.g. `SLURM_PARTITION`.
    fn setting(&self, key: &str) -> Option<String>;
    /// Run a program the policy names, to completion.
    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError>;
    /// Read a key of the plugin's own key space.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Write a key, optionally expiring after `ttl_seconds`.
    fn kv_set(&mut self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError>;
    /// Delete a key; whether it existed.
    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError>;
    /// Log a warning through the host.
    fn warn(&mut self, msg: &str);

    /// Many keys in one round trip, in the order asked.
    fn kv_get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|k| self.kv_get(k)).collect()
    }
    /// Milliseconds since the Unix epoch.
    fn now_millis(&mut self) -> u64 {
        crate::time::now_millis()
    }
    /// A random number, for unique names.
    fn random(&mut self) -> u64 {
        // std seeds every `RandomState` from the platform's randomness
        // (`wasi:random` in a component), and no other crate is needed.
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }

    /// Start a supervised job.
    fn spawn_job(&mut self, _req: &JobRequest) -> Result<(), ProcessError> {
        denied("process.spawn-job", ProcessError::Denied)
    }
    /// The state of many supervised jobs, in the order asked.
    fn job_states(&mut self, ids: &[String]) -> Vec<Result<JobState, ProcessError>> {
        ids.iter()
            .map(|_| denied("process.job-states", ProcessError::Denied))
            .collect()
    }
    /// Stop a supervised job; false if it had already ended.
    fn kill_job(&mut self, _id: &str) -> Result<bool, ProcessError> {
        denied("process.kill-job", ProcessError::Denied)
    }
    /// The last `max_bytes` of a supervised job's output stream.
    fn read_job_log(
        &mut self,
        _id: &str,
        _which: LogStream,
        _max_bytes: u64,
    ) -> Result<String, ProcessError> {
        denied("process.read-job-log", ProcessError::Denied)
    }

    /// Create an object (JSON); the server's answer.
    fn kube_create(
        &mut self,
        _api: &str,
        _kind: &str,
        _ns: &str,
        _body: &str,
    ) -> Result<String, KubeError> {
        denied("kube.create", KubeError::Denied)
    }
    /// Read one object by name.
    fn kube_get(
        &mut self,
        _api: &str,
        _kind: &str,
        _ns: &str,
        _name: &str,
    ) -> Result<String, KubeError> {
        denied("kube.get", KubeError::Denied)
    }
    /// List objects by label selector.
    fn kube_list(
        &mut self,
        _api: &str,
        _kind: &str,
        _ns: &str,
        _selector: &str,
    ) -> Result<String, KubeError> {
        denied("kube.list-by-label", KubeError::Denied)
    }
    /// Delete one object by name.
    fn kube_delete(
        &mut self,
        _api: &str,
        _kind: &str,
        _ns: &str,
        _name: &str,
        _propagation: Propagation,
    ) -> Result<String, KubeError> {
        denied("kube.delete", KubeError::Denied)
    }
    /// A pod's container log.
    fn kube_pod_logs(
        &mut self,
        _ns: &str,
        _pod: &str,
        _container: Option<&str>,
        _tail_lines: Option<u32>,
    ) -> Result<String, KubeError> {
        denied("kube.pod-logs", KubeError::Denied)
    }
}

/// The host, through the component's imports. Natively (unit tests) its
/// import calls are unreachable: use [`crate::fake::FakeHost`] there.
pub struct SdkHost;

impl Host for SdkHost {
    fn setting(&self, key: &str) -> Option<String> {
        crate::setting(key)
    }
    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError> {
        process::run(req)
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        kv::get(key)
    }
    fn kv_set(&mut self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        kv::set(key, value, ttl_seconds)
    }
    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError> {
        kv::delete(key)
    }
    fn warn(&mut self, msg: &str) {
        crate::log::warn(msg);
    }
    fn kv_get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        kv::get_many(keys)
    }
    fn spawn_job(&mut self, req: &JobRequest) -> Result<(), ProcessError> {
        process::spawn_job(req)
    }
    fn job_states(&mut self, ids: &[String]) -> Vec<Result<JobState, ProcessError>> {
        process::job_states(ids)
    }
    fn kill_job(&mut self, id: &str) -> Result<bool, ProcessError> {
        process::kill_job(id)
    }
    fn read_job_log(
        &mut self,
        id: &str,
        which: LogStream,
        max_bytes: u64,
    ) -> Result<String, ProcessError> {
        process::read_job_log(id, which, max_bytes)
    }
    fn kube_create(
        &mut self,
        api: &str,
        kind: &str,
        ns: &str,
        body: &str,
    ) -> Result<String, KubeError> {
        kube::create(api, kind, ns, body)
    }
    fn kube_get(
        &mut self,
        api: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Result<String, KubeError> {
        kube::get(api, kind, ns, name)
    }
    fn kube_list(
        &mut self,
        api: &str,
        kind: &str,
        ns: &str,
        selector: &str,
    ) -> Result<String, KubeError> {
        kube::list_by_label(api, kind, ns, selector)
    }
    fn kube_delete(
        &mut self,
        api: &str,
        kind: &str,
        ns: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<String, KubeError> {
        kube::delete(api, kind, ns, name, propagation)
    }
    fn kube_pod_logs(
        &mut self,
        ns: &str,
        pod: &str,
        container: Option<&str>,
        tail_lines: Option<u32>,
    ) -> Result<String, KubeError> {
        kube::pod_logs(ns, pod, container, tail_lines)
    }
}
