//! A minimal hpc-host backend to copy: it drives a site scheduler through
//! four command-line tools the site's policy maps to real programs.
//!
//! | logical program | called as                                          | prints            |
//! |-----------------|----------------------------------------------------|-------------------|
//! | `submit`        | `submit [--time SECONDS] [--mem-mib MIB] -- argv…` | the new job's id  |
//! | `status`        | `status ID…`                                       | `ID STATE [EXIT]` per line |
//! | `cancel`        | `cancel ID`                                        | nothing           |
//! | `logs`          | `logs ID`                                          | the job's output  |
//!
//! `STATE` is one of `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`. Replace the
//! tools and the parsing with your scheduler's. The logic is in [`backend`],
//! written over the SDK's `Host` trait so that `cargo test` runs it natively
//! against the SDK's fake host; this file only connects it to the component.

pub mod backend;

use hpc_plugin_sdk::host::SdkHost;
use hpc_plugin_sdk::{BackendError, Guest, HpcJobInfo, JobLogs, JobSpec, PluginInfo};

/// The backend.
pub struct Template;

impl Guest for Template {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        backend::submit(&mut SdkHost, &spec)
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        hpc_plugin_sdk::single(backend::statuses(&mut SdkHost, &[job_id]))
    }

    fn get_statuses(
        job_ids: Vec<String>,
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        backend::statuses(&mut SdkHost, &job_ids)
    }

    fn cancel(job_id: String) -> Result<(), BackendError> {
        backend::cancel(&mut SdkHost, &job_id)
    }

    fn get_logs(job_id: String) -> Result<JobLogs, BackendError> {
        backend::logs(&mut SdkHost, &job_id)
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "template".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "a site scheduler driven through its command-line tools".into(),
            settings: vec![backend::SETTING_TIMEOUT.into()],
        }
    }
}

// Exported only in the component: natively (`cargo test`) the rlib links
// without the component's export symbols.
#[cfg(target_arch = "wasm32")]
hpc_plugin_sdk::export!(Template);
