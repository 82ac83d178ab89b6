//! The `T` of `Store<T>`: one per plugin call, holding WASI's context and
//! every capability's context ([`Contexts`]), all cut to the plugin's policy.

use crate::runtime::capabilities::Contexts;
use crate::runtime::policy::Policy;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::CallHook;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// What a plugin's stderr may hold (its panic message, mostly).
const STDERR_CAPTURE: usize = 64 << 10;

/// Time spent inside host calls during one plugin call, so the CPU limit
/// counts only the plugin's own code. Kept in ONE place: the store's call hook
/// ([`HostClock::hook`]) sees every entry to and return from the host, so no
/// host function has to account for itself.
#[derive(Default)]
pub struct HostClock {
    /// Host time of the calls that have returned.
    spent: Duration,
    /// When the outermost host call still running began.
    entered: Option<Instant>,
    /// Host calls in progress: a host function that hands a value back calls
    /// the plugin's `cabi_realloc`, which may itself call the host (a
    /// `memory.grow` libcall). Only the outermost call's entry and return
    /// count, or the inner return would end the outer call's clock.
    depth: u32,
}

impl HostClock {
    /// Host time so far, including a host call still running.
    pub fn host_time(&self) -> Duration {
        self.spent + self.entered.map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// The store's call hook: counts host time. (The tracing span of each
    /// host call comes from the bindings' `tracing` option.)
    pub fn hook(&mut self, hook: CallHook) {
        match hook {
            CallHook::CallingHost => {
                if self.depth == 0 {
                    self.entered = Some(Instant::now());
                }
                self.depth += 1;
            }
            CallHook::ReturningFromHost => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 0
                    && let Some(t) = self.entered.take()
                {
                    self.spent += t.elapsed();
                }
            }
            CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
        }
    }
}

pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: crate::runtime::limits::Limiter,
    /// Each capability's context (a capability reaches its own through
    /// [`crate::runtime::capabilities::Has`]).
    pub(crate) caps: Contexts,
    pub(crate) clock: HostClock,
    pub(crate) started: Instant,
    pub(crate) stderr: MemoryOutputPipe,
}

/// The shared, per-process parts a call's state is cut from.
pub struct Shared {
    pub policy: Arc<Policy>,
    /// Each capability's context as made at load (the Kubernetes client,
    /// the process slots); every call gets a clone.
    pub caps: Contexts,
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
        Ok(State {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: crate::runtime::limits::Limiter::new(policy.limits.memory_bytes),
            caps: shared.caps.clone(),
            clock: HostClock::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nested_host_call_does_not_end_the_outer_ones_clock() {
        let mut c = HostClock::default();
        c.hook(CallHook::CallingHost);
        std::thread::sleep(Duration::from_millis(30));
        // The host hands a value back through the plugin's allocator, which
        // grows its memory: a host call inside the host call.
        c.hook(CallHook::CallingWasm);
        c.hook(CallHook::CallingHost);
        c.hook(CallHook::ReturningFromHost);
        c.hook(CallHook::ReturningFromWasm);
        std::thread::sleep(Duration::from_millis(30));
        c.hook(CallHook::ReturningFromHost);
        assert!(
            c.host_time() >= Duration::from_millis(60),
            "{:?}",
            c.host_time()
        );
        assert!(c.entered.is_none() && c.depth == 0);
    }
}
