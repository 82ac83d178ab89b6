//! A loaded plugin and its calls. Every call runs in a fresh `Store` with
//! the policy's limits; a trap ends that store only.

use crate::runtime::bindings::{
    BackendError, HpcJobInfo, HpcPlugin, HpcPluginPre, JobLogs, JobSpec, PluginInfo, v0_1, v0_2,
};
use crate::runtime::contract::Contract;
use crate::runtime::error::HostError;
use crate::runtime::policy::Policy;
use crate::runtime::state::{Shared, State};
use crate::store::Store;
use std::path::PathBuf;
use std::time::Duration;
use wasmtime::UpdateDeadline;

/// Check the CPU limit every this many epoch ticks (`engine::EPOCH_TICK` each).
const CPU_CHECK_TICKS: u64 = 5;

/// The most ids one `get-statuses` call gets (see [`Plugin::get_statuses`]).
pub const STATUS_CHUNK: usize = 5_000;

/// A compiled plugin, ready to instantiate, by the contract it speaks.
pub(super) enum Pre {
    V0_3(HpcPluginPre<State>),
    V0_2(v0_2::HpcPluginPre<State>),
    V0_1(v0_1::HpcPluginPre<State>),
}

/// An instance of a plugin, by the contract it speaks.
enum Exports {
    V0_3(HpcPlugin),
    V0_2(v0_2::HpcPlugin),
    V0_1(v0_1::HpcPlugin),
}

/// Call a function that every contract exports with the same signature.
macro_rules! either {
    ($exports:expr, |$backend:ident| $call:expr) => {
        match $exports {
            Exports::V0_3(p) => {
                let $backend = p.ccat_hpc0_3_0_hpc_backend();
                $call
            }
            Exports::V0_2(p) => {
                let $backend = p.ccat_hpc0_2_0_hpc_backend();
                $call
            }
            Exports::V0_1(p) => {
                let $backend = p.ccat_hpc0_1_0_hpc_backend();
                $call
            }
        }
    };
}

/// The most specs one `submit-many` call gets: SLURM's default
/// `MaxArraySize` (1001) makes arrays of 0..=1000. A keyed submit's claim
/// lasts one call's time limit, so no more keys are claimed at once either.
pub const SUBMIT_CHUNK: usize = 1_000;

/// A loaded plugin, ready to be called any number of times. Each method is
/// one call of the plugin (two for a batch over [`SUBMIT_CHUNK`]), nothing
/// more: exactly-once submission by key is `submit::Submit`'s.
pub struct Plugin {
    pub(super) name: String,
    pub(super) pre: Pre,
    pub(super) shared: Shared,
    pub(super) records: Records,
}

/// Where the host that loaded a plugin keeps its own records: its store,
/// its state folder, and whether the programs this process starts die with
/// it. The layer above that records a plugin's submits (the ledger) keeps
/// them there.
#[derive(Clone)]
pub struct Records {
    pub store: Store,
    pub state_dir: PathBuf,
    /// `HPC_REDIS_URL`: which store this is (`None`: the embedded one).
    pub redis_url: Option<String>,
    /// See [`HostOptions::programs_die_with_host`](crate::runtime::host::HostOptions::programs_die_with_host).
    pub programs_die_with_host: bool,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The contract the plugin speaks.
    pub fn contract(&self) -> Contract {
        match self.pre {
            Pre::V0_3(_) => Contract::V0_3,
            Pre::V0_2(_) => Contract::V0_2,
            Pre::V0_1(_) => Contract::V0_1,
        }
    }

    /// Where the host that loaded it keeps its records.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The longest one call may take (the policy's `wall_seconds`).
    pub fn wall_time(&self) -> Duration {
        self.shared.policy.limits.wall_time
    }

    /// The plugin's `submit-many` calls for `specs` (one `submit` each for a
    /// plugin older than 0.3.0), nothing more: per spec, its id or error (a
    /// call that failed whole, a trap or a timeout, fails each of its specs).
    pub async fn submit_many_once(&self, specs: &[JobSpec]) -> Vec<Result<String, HostError>> {
        let mut all = Vec::with_capacity(specs.len());
        if self.contract() != Contract::V0_3 {
            for spec in specs {
                all.push(self.submit_once(spec).await);
            }
            return all;
        }
        for chunk in specs.chunks(SUBMIT_CHUNK) {
            let r = self
                .call("submit-many", async |s, p| match p {
                    Exports::V0_3(p) => {
                        p.ccat_hpc0_3_0_hpc_backend()
                            .call_submit_many(s, chunk)
                            .await
                    }
                    _ => unreachable!("only a 0.3.0 plugin gets submit-many"),
                })
                .await
                .and_then(|r| {
                    if r.len() == chunk.len() {
                        Ok(r)
                    } else {
                        Err(HostError::PluginTrap {
                            plugin: self.name.clone(),
                            function: "submit-many",
                            message: format!(
                                "answered {} results for {} specs",
                                r.len(),
                                chunk.len()
                            ),
                        })
                    }
                });
            match r {
                Ok(r) => all.extend(r.into_iter().map(|r| {
                    let id = self.backend("submit-many", r)?;
                    crate::runtime::sanitize::job_id(&id).map_err(|message| {
                        HostError::PluginTrap {
                            plugin: self.name.clone(),
                            function: "submit-many",
                            message,
                        }
                    })?;
                    Ok(id)
                })),
                Err(e) => all.extend(chunk.iter().map(|_| Err(e.duplicate()))),
            }
        }
        all
    }

    /// One `submit` call of the plugin, nothing more.
    pub async fn submit_once(&self, spec: &JobSpec) -> Result<String, HostError> {
        let r = self
            .call("submit", async |s, p| match p {
                Exports::V0_3(p) => p.ccat_hpc0_3_0_hpc_backend().call_submit(s, spec).await,
                Exports::V0_2(p) => p.ccat_hpc0_2_0_hpc_backend().call_submit(s, spec).await,
                Exports::V0_1(p) => {
                    let spec = spec.to_v0_1();
                    p.ccat_hpc0_1_0_hpc_backend().call_submit(s, &spec).await
                }
            })
            .await?;
        let id = self.backend("submit", r)?;
        crate::runtime::sanitize::job_id(&id).map_err(|message| HostError::PluginTrap {
            plugin: self.name.clone(),
            function: "submit",
            message,
        })?;
        Ok(id)
    }

    /// The job a keyed submit made, if the scheduler knows one; `Ok(None)`
    /// from a 0.1.0 plugin, which cannot tell.
    pub async fn find_job(&self, key: &str, since: f64) -> Result<Option<String>, HostError> {
        let r = self
            .call("find-job", async |s, p| match p {
                Exports::V0_3(p) => {
                    p.ccat_hpc0_3_0_hpc_backend()
                        .call_find_job(s, key, since)
                        .await
                }
                Exports::V0_2(p) => {
                    p.ccat_hpc0_2_0_hpc_backend()
                        .call_find_job(s, key, since)
                        .await
                }
                Exports::V0_1(_) => Ok(Ok(None)),
            })
            .await?;
        let id = self.backend("find-job", r)?;
        if let Some(id) = &id {
            crate::runtime::sanitize::job_id(id).map_err(|message| HostError::PluginTrap {
                plugin: self.name.clone(),
                function: "find-job",
                message,
            })?;
        }
        Ok(id)
    }

    pub async fn get_status(&self, job_id: &str) -> Result<HpcJobInfo, HostError> {
        let r = self
            .call("get-status", async |s, p| {
                either!(p, |b| b.call_get_status(s, job_id).await)
            })
            .await?;
        self.backend("get-status", r)
            .map(crate::runtime::sanitize::job_info)
    }

    /// The statuses of `ids`, in order, per-id errors per id: one plugin call per
    /// [`STATUS_CHUNK`] ids, so that any number of ids stays within what one
    /// call may ask of the host (`process.job-states` takes 10,000) and
    /// within one call's time limit.
    pub async fn get_statuses(
        &self,
        ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, HostError> {
        let mut all = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(STATUS_CHUNK) {
            all.extend(self.get_statuses_once(chunk).await?);
        }
        Ok(all)
    }

    async fn get_statuses_once(
        &self,
        ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, HostError> {
        let r = self
            .call("get-statuses", async |s, p| {
                either!(p, |b| b.call_get_statuses(s, ids).await)
            })
            .await?;
        let list: Vec<_> = self
            .backend("get-statuses", r)?
            .into_iter()
            .map(|r| {
                r.map(crate::runtime::sanitize::job_info)
                    .map_err(crate::runtime::sanitize::backend_error)
            })
            .collect();
        if list.len() != ids.len() {
            return Err(HostError::PluginTrap {
                plugin: self.name.clone(),
                function: "get-statuses",
                message: format!("answered {} results for {} ids", list.len(), ids.len()),
            });
        }
        Ok(list)
    }

    pub async fn cancel(&self, job_id: &str) -> Result<(), HostError> {
        let r = self
            .call("cancel", async |s, p| {
                either!(p, |b| b.call_cancel(s, job_id).await)
            })
            .await?;
        self.backend("cancel", r)
    }

    pub async fn get_logs(&self, job_id: &str) -> Result<JobLogs, HostError> {
        let r = self
            .call("get-logs", async |s, p| {
                either!(p, |b| b.call_get_logs(s, job_id).await)
            })
            .await?;
        let logs = self.backend("get-logs", r)?;
        Ok(crate::runtime::sanitize::logs(
            logs,
            self.shared.policy.limits.output_bytes,
        ))
    }

    pub async fn describe(&self) -> Result<PluginInfo, HostError> {
        self.call("describe", async |s, p| {
            either!(p, |b| b.call_describe(s).await)
        })
        .await
        .map(crate::runtime::sanitize::plugin_info)
    }

    fn backend<T>(
        &self,
        function: &'static str,
        r: Result<T, BackendError>,
    ) -> Result<T, HostError> {
        r.map_err(|error| HostError::Backend {
            plugin: self.name.clone(),
            function,
            error: crate::runtime::sanitize::backend_error(error),
        })
    }

    /// One call in a fresh store, under the policy's memory, CPU and wall-clock limits.
    async fn call<R>(
        &self,
        function: &'static str,
        f: impl AsyncFnOnce(&mut wasmtime::Store<State>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, HostError> {
        let limits = &self.shared.policy.limits;
        let state = State::new(&self.shared)?;
        let engine = match &self.pre {
            Pre::V0_3(pre) => pre.engine(),
            Pre::V0_2(pre) => pre.engine(),
            Pre::V0_1(pre) => pre.engine(),
        };
        let mut store = wasmtime::Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        // Host time is accounted here, once, for every host function.
        store.call_hook(|mut cx, hook| {
            cx.data_mut().clock.hook(hook);
            Ok(())
        });
        let cpu = limits.cpu_time;
        store.set_epoch_deadline(CPU_CHECK_TICKS);
        store.epoch_deadline_callback(move |cx| {
            let s = cx.data();
            let guest = s.started.elapsed().saturating_sub(s.clock.host_time());
            if guest > cpu {
                Err(wasmtime::format_err!(
                    "used more than {:.1} s of CPU time (the policy's `cpu_seconds`)",
                    cpu.as_secs_f64()
                ))
            } else {
                // Yield, so the wall-clock timeout below can fire even while
                // the plugin computes without calling the host.
                Ok(UpdateDeadline::Yield(CPU_CHECK_TICKS))
            }
        });
        let work = async {
            let exports = match &self.pre {
                Pre::V0_3(pre) => Exports::V0_3(pre.instantiate_async(&mut store).await?),
                Pre::V0_2(pre) => Exports::V0_2(pre.instantiate_async(&mut store).await?),
                Pre::V0_1(pre) => Exports::V0_1(pre.instantiate_async(&mut store).await?),
            };
            f(&mut store, &exports).await
        };
        let trap = |message: String| HostError::PluginTrap {
            plugin: self.name.clone(),
            function,
            message,
        };
        match tokio::time::timeout(limits.wall_time, work).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                // The cause, not wasmtime's backtrace: the log has the rest.
                tracing::debug!(plugin = %self.name, function, "plugin call failed: {e:?}");
                let mut message = match e.downcast_ref::<wasmtime::Trap>() {
                    Some(t) => t.to_string(),
                    None => e.root_cause().to_string(),
                };
                let stderr = store.data().captured_stderr();
                if !stderr.is_empty() {
                    message.push_str(&format!("; plugin stderr: {stderr}"));
                }
                tracing::warn!(plugin = %self.name, function, "plugin call failed: {message}");
                Err(trap(message))
            }
            Err(_) => Err(HostError::PluginTimeout {
                plugin: self.name.clone(),
                function,
                seconds: limits.wall_time.as_secs(),
            }),
        }
    }
}
