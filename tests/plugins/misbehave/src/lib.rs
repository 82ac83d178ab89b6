//! A plugin that misbehaves on request: `get-status` of the job id `trap`
//! panics, `loop` spins forever, `alloc` allocates without bound; any other id
//! answers normally. Tests use it to show that the host contains each failure
//! and keeps answering.

#[macro_use]
#[path = "../../common/exports.rs"]
mod common_exports;
#[path = "../../common/runaway.rs"]
mod runaway;

use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, JobStatus, PluginInfo};

struct Misbehave;

fn info(job_id: String) -> HpcJobInfo {
    HpcJobInfo {
        job_id,
        status: JobStatus::Completed,
        exit_code: Some(0),
        wall_time_seconds: None,
        cpu_hours: None,
        peak_memory_gb: None,
        native_state: Some("FINE".into()),
        reason: None,
    }
}

impl hpc_plugin_sdk::Guest for Misbehave {
    fn submit(_spec: JobSpec) -> Result<String, BackendError> {
        Ok("fine".into())
    }

    fn submit_many(specs: Vec<JobSpec>) -> Vec<Result<String, BackendError>> {
        if specs.iter().any(|s| s.job_name.as_deref() == Some("trap")) {
            panic!("deliberate panic for the test");
        }
        specs.into_iter().map(Self::submit).collect()
    }

    fn find_job(key: String, _since: f64) -> Result<Option<String>, BackendError> {
        match key.as_str() {
            "trap" => panic!("deliberate panic for the test"),
            _ => Ok(None),
        }
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        match job_id.as_str() {
            "trap" => panic!("deliberate panic for the test"),
            "loop" => runaway::spin(),
            "alloc" => runaway::hoard(),
            _ => Ok(info(job_id)),
        }
    }

    plain_exports!(
        name: "misbehave",
        description: "misbehaves on request (tests only)",
        logs: none,
    );
}

hpc_plugin_sdk::export!(Misbehave);
