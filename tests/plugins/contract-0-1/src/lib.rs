//! A backend built against `ccat:hpc@0.1.0` (the frozen WIT in
//! `wit/deps/ccat-hpc-0.1.0`), as a site plugin written before 0.2.0 is:
//! no idempotency key in its spec, no `find-job`. Its "jobs" are kv records
//! that complete at once; every `submit` makes a new one, so a test can count
//! how many jobs the host made.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "ccat:hpc/hpc-plugin@0.1.0",
    generate_all,
});

#[macro_use]
#[path = "../../common/exports.rs"]
mod common_exports;

use ccat::hpc0_1_0::kv;
use ccat::hpc0_1_0::types::{BackendError, HpcJobInfo, JobLogs, JobSpec, JobStatus, PluginInfo};

struct ContractV01;

fn store(e: kv::KvError) -> BackendError {
    BackendError::Unavailable(format!("kv: {e:?}"))
}

impl exports::ccat::hpc0_1_0::hpc_backend::Guest for ContractV01 {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        let n = kv::increment("made", 1).map_err(store)?;
        let id = format!("v01-{n}");
        let name = spec.job_name.unwrap_or_default();
        kv::set(&format!("job/{id}"), name.as_bytes(), None).map_err(store)?;
        Ok(id)
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        match kv::get(&format!("job/{job_id}")).map_err(store)? {
            Some(_) => Ok(HpcJobInfo {
                job_id,
                status: JobStatus::Completed,
                exit_code: Some(0),
                wall_time_seconds: Some(0.0),
                cpu_hours: None,
                peak_memory_gb: None,
                native_state: Some("DONE".into()),
                reason: None,
            }),
            None => Err(BackendError::NotFound(format!("no job `{job_id}`"))),
        }
    }

    plain_exports!(
        name: "contract-0-1",
        description: "built against ccat:hpc@0.1.0 (tests only)",
        logs: none,
    );
}

export!(ContractV01);
