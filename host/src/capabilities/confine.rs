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

use crate::bindings::process::ProcessError;
use crate::policy::Policy;

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
        if !crate::spec::is_env_name(k) {
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
