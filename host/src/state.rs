//! The `T` of `Store<T>`: one per plugin call, holding WASI's context and one
//! context per capability, all cut to the plugin's policy.

use crate::capabilities::{kube::KubeCtx, kv::KvCtx, logging::LoggingCtx, process::ProcessCtx};
use crate::policy::Policy;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;

/// What a plugin's stderr may hold (its panic message, mostly).
const STDERR_CAPTURE: usize = 64 << 10;

/// Time spent inside host calls during one plugin call, so the CPU limit
/// counts only the plugin's own code.
#[derive(Clone, Default)]
pub struct HostClock(Arc<AtomicU64>);

impl HostClock {
    /// Count the time until the guard drops as host time.
    pub fn enter(&self) -> HostClockGuard<'_> {
        HostClockGuard {
            clock: self,
            start: Instant::now(),
        }
    }
    pub fn host_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

pub struct HostClockGuard<'a> {
    clock: &'a HostClock,
    start: Instant,
}

impl Drop for HostClockGuard<'_> {
    fn drop(&mut self) {
        self.clock
            .0
            .fetch_add(self.start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: crate::limits::Limiter,
    pub(crate) process: ProcessCtx,
    pub(crate) kv: KvCtx,
    pub(crate) kube: KubeCtx,
    pub(crate) config: WasiConfigVariables,
    pub(crate) logging: LoggingCtx,
    pub(crate) clock: HostClock,
    pub(crate) started: Instant,
    pub(crate) stderr: MemoryOutputPipe,
}

/// The shared, per-process parts a call's state is cut from.
pub struct Shared {
    pub policy: Arc<Policy>,
    pub process: ProcessCtx,
    pub kv: KvCtx,
    /// Holds the Kubernetes client, built on the plugin's first kube call.
    pub kube: KubeCtx,
}

impl State {
    pub fn new(shared: &Shared) -> anyhow::Result<State> {
        let policy = &shared.policy;
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut wasi = WasiCtx::builder();
        // Deny by default: no environment, no arguments, no network, and only
        // the folders the policy names, at their own paths.
        wasi.stderr(stderr.clone());
        for dir in &policy.dirs {
            if dir.is_dir() {
                let p = dir.display().to_string();
                wasi.preopened_dir(dir, &p, FsPerms::ReadWrite)
                    .map_err(|e| {
                        anyhow::anyhow!("cannot open `{p}` for plugin `{}`: {e}", policy.plugin)
                    })?;
            }
        }
        let clock = HostClock::default();
        let mut process = shared.process.clone();
        process.clock = clock.clone();
        let mut kv = shared.kv.clone();
        kv.clock = clock.clone();
        let mut kube = shared.kube.clone();
        kube.clock = clock.clone();
        Ok(State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: crate::limits::Limiter::new(policy.limits.memory_bytes),
            process,
            kv,
            kube,
            config: WasiConfigVariables::from_iter(
                policy.config.iter().map(|(k, v)| (k.clone(), v.clone())),
            ),
            logging: LoggingCtx::new(policy.plugin.clone().into()),
            clock,
            started: Instant::now(),
            stderr,
        })
    }

    /// What the plugin wrote to stderr during this call (a panic message).
    pub fn captured_stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents())
            .trim()
            .to_owned()
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
