//! The local backend with one promise of the contract broken, for the
//! conformance kit's own tests (`hpc-host plugins test` must fail exactly
//! the check of the promise broken). The `BREAK` setting (the policy's
//! `[config]`) chooses the breakage; unset, the plugin is `local` unchanged
//! and passes the kit.
//!
//! | `BREAK`               | promise broken                                   |
//! |-----------------------|--------------------------------------------------|
//! | `no-metrics`          | an ended job reports no wall time                |
//! | `exit-code-lost`      | a failed job is reported `completed`, exit 0     |
//! | `no-stderr`           | `get-logs` drops stderr                          |
//! | `cancel-noop`         | `cancel` answers ok and stops nothing            |
//! | `cancel-ended-errors` | cancelling an ended job is an error              |
//! | `unknown-traps`       | an unknown id panics instead of `not-found`      |
//! | `statuses-reversed`   | `get-statuses` answers in reverse order          |
//! | `no-time-limit`       | the spec's time limit is ignored                 |
//! | `find-none`           | `find-job` never finds the keyed job             |
//! | `backwards`           | an ended job is now and then `running` again     |
//! | `invalid-internal`    | an empty command is `internal`, not `invalid-request` |
//! | `describe-lies`       | `describe` names no version, and no name         |
//! | `many-reversed`       | `submit-many` answers its specs in reverse order |

use hpc_plugin_local::Local;
use hpc_plugin_sdk::backend::Backend;
use hpc_plugin_sdk::host::Host;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, JobStatus, PluginInfo};

/// The local backend, broken as `BREAK` says.
pub struct Broken;

fn mode(h: &impl Host) -> String {
    h.setting("BREAK").unwrap_or_default()
}

fn ended(h: &mut impl Host, id: &str) -> bool {
    matches!(
        <Local as Backend>::statuses(h, &[id.to_owned()]).map(|mut v| v.pop()),
        Ok(Some(Ok(HpcJobInfo { status, .. }))) if status.is_terminal()
    )
}

impl Backend for Broken {
    fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> {
        let mut spec = spec.clone();
        match mode(h).as_str() {
            "no-time-limit" => spec.resource_requirements.time_hours = None,
            "invalid-internal" if spec.execution_command.is_empty() => {
                return Err(BackendError::Internal("something went wrong".into()));
            }
            _ => {}
        }
        <Local as Backend>::submit(h, &spec)
    }

    fn submit_many(h: &mut impl Host, specs: &[JobSpec]) -> Vec<Result<String, BackendError>> {
        let mut all: Vec<_> = specs.iter().map(|spec| Self::submit(h, spec)).collect();
        if mode(h) == "many-reversed" {
            all.reverse();
        }
        all
    }

    fn find_job(h: &mut impl Host, key: &str, since: f64) -> Result<Option<String>, BackendError> {
        if mode(h) == "find-none" {
            return Ok(None);
        }
        <Local as Backend>::find_job(h, key, since)
    }

    fn statuses(
        h: &mut impl Host,
        ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        let mode = mode(h);
        let mut all = <Local as Backend>::statuses(h, ids)?;
        // Windows of 300 ms: a poller every 100 ms sees both kinds.
        let even_window = (h.now_millis() / 300).is_multiple_of(2);
        for r in &mut all {
            match (mode.as_str(), r) {
                ("unknown-traps", Err(BackendError::NotFound(m))) => panic!("no such job: {m}"),
                ("no-metrics", Ok(i)) => {
                    i.wall_time_seconds = None;
                    i.cpu_hours = None;
                    i.peak_memory_gb = None;
                }
                ("exit-code-lost", Ok(i)) if i.status == JobStatus::Failed => {
                    i.status = JobStatus::Completed;
                    i.exit_code = Some(0);
                }
                ("backwards", Ok(i)) if i.status.is_terminal() && even_window => {
                    i.status = JobStatus::Running;
                }
                _ => {}
            }
        }
        if mode == "statuses-reversed" {
            all.reverse();
        }
        Ok(all)
    }

    fn cancel(h: &mut impl Host, id: &str) -> Result<(), BackendError> {
        match mode(h).as_str() {
            "cancel-noop" => Ok(()),
            "cancel-ended-errors" if ended(h, id) => Err(BackendError::InvalidRequest(format!(
                "job `{id}` has already ended"
            ))),
            "unknown-traps" => match <Local as Backend>::cancel(h, id) {
                Err(BackendError::NotFound(m)) => panic!("no such job: {m}"),
                other => other,
            },
            _ => <Local as Backend>::cancel(h, id),
        }
    }

    fn logs(h: &mut impl Host, id: &str) -> Result<JobLogs, BackendError> {
        let mode = mode(h);
        let mut logs = <Local as Backend>::logs(h, id);
        match (mode.as_str(), &mut logs) {
            ("no-stderr", Ok(l)) => l.stderr.clear(),
            ("unknown-traps", Err(BackendError::NotFound(m))) => panic!("no such job: {m}"),
            _ => {}
        }
        logs
    }

    fn describe() -> PluginInfo {
        let mut info = <Local as Backend>::describe();
        info.name = "broken".into();
        if hpc_plugin_sdk::setting("BREAK").as_deref() == Some("describe-lies") {
            info.name.clear();
            info.version.clear();
        }
        info
    }
}

hpc_plugin_sdk::export_backend!(Broken);
