//! Confining the programs a plugin runs (`process.run`): which environment
//! variables a plugin may set for them, and ending a program's whole process
//! tree at its timeout.
//!
//! The environment is an allow-list: a plugin may set only the variables its
//! policy names in `program_env` (exact names, or a prefix ending in `*`).
//! Variables that change what a program loads or runs (`BASH_ENV`, `ENV`,
//! `PATH`, `IFS`, `LD_*`, `PYTHONPATH`, `SLURM_CONF`, `KUBECONFIG`, `HOME`
//! ...) are therefore refused unless a site names them on purpose, and the
//! refusal says which key grants them.
//!
//! A plugin cannot create symbolic links (`symlink-at` answers
//! `not-permitted`): wasmtime-wasi never follows a link out of a preopened
//! folder, but the workflow manager and the jobs that read those folders
//! would. wasmtime-wasi 48's `DirPerms`/`FilePerms` have no separate
//! permission for links (`MUTATE` allows creating files and links alike),
//! so the host shadows that one function in the linker.

use crate::runtime::bindings::process::ProcessError;
use crate::runtime::policy::Policy;
use crate::runtime::state::State;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;

/// Most ids in one `job-states` call: each costs file reads on the call's
/// thread, and the answer is allocated by the host.
pub const MAX_JOB_STATES: usize = 10_000;

/// Whether `policy.program_env` lets a plugin set `name` for a program.
pub fn env_allowed(policy: &Policy, name: &str) -> bool {
    policy
        .grants
        .process
        .program_env
        .iter()
        .any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
}

/// Check a program's environment against the allow-list; the first variable
/// not granted is refused with the setting that would grant it.
pub fn check_program_env(policy: &Policy, env: &[(String, String)]) -> Result<(), ProcessError> {
    let plugin = &policy.plugin;
    for (k, _) in env {
        if !crate::runtime::sanitize::is_env_name(k) {
            return Err(ProcessError::Invalid(format!(
                "`{k}` is not a valid environment variable name"
            )));
        }
        if !env_allowed(policy, k) {
            return Err(ProcessError::Denied(super::denied(
                plugin,
                "process",
                k,
                format!(
                    "plugin `{plugin}` may not set `{k}` for a program; `plugins.{plugin}.program_env` grants: {:?}",
                    policy.grants.process.program_env
                ),
            )));
        }
    }
    Ok(())
}

/// SIGKILL a program's process group (it was started as its leader), so
/// nothing it started in its group outlives its timeout.
pub fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 1) {
        // SAFETY: plain syscall; the group is the child's own, and the child
        // is not reaped yet, so its id cannot have been reused.
        unsafe { libc::killpg(pid, libc::SIGKILL) };
    }
}

/// The WASI filesystem interface wasmtime-wasi 48 links (later minor
/// versions a component imports resolve to it by semver).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Make `symlink-at` answer `not-permitted` for every plugin.
pub fn deny_symlinks(linker: &mut Linker<State>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let r = linker
        .instance(WASI_FILESYSTEM_TYPES)
        .and_then(|mut i| {
            // Typed, so the borrowed descriptor is released by wasmtime (an
            // untyped `Val` borrow would have to be dropped by hand).
            i.func_wrap_async(
                "[method]descriptor.symlink-at",
                |_store,
                 (_dir, _old, _new): (
                    Resource<wasmtime_wasi::filesystem::Descriptor>,
                    String,
                    String,
                )| {
                    Box::new(async move { Ok((Err::<(), _>(ErrorCode::NotPermitted),)) })
                },
            )
        })
        .map_err(anyhow::Error::from);
    linker.allow_shadowing(false);
    r
}
