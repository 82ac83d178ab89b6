//! The Kubernetes backend for hpc-host, as a WebAssembly component.
//!
//! `submit` creates a batch/v1 Job ([`job`]) named after the spec's
//! `job_name` ([`name`]); its name is the job id. `get-status`/`get-statuses`
//! list the Jobs and their pods by label, one call per kind for up to
//! [`IDS_PER_LIST`] ids, and map them with [`status`]. `cancel` deletes the
//! Job with `propagationPolicy: Background` (batch/v1 would otherwise orphan
//! its pods) and leaves a marker in the kv store so that the job reads as
//! cancelled rather than unknown afterwards. `get-logs` reads the newest
//! pod's container log (Kubernetes merges stdout and stderr: all of it is
//! `stdout`).
//!
//! The host makes the API calls (`ccat:hpc/kube`) with its own credentials,
//! in the namespaces and kinds the policy grants (by default `K8S_NAMESPACE`,
//! Job and Pod); this plugin sees JSON only.
//!
//! Settings (`wasi:config/store`):
//! - `K8S_NAMESPACE` (required): where Jobs are created.
//! - `K8S_TTL_SECONDS_AFTER_FINISHED` (default 86400): how long a finished
//!   Job and its pod (and so its status and logs) stay; `none` keeps them.

pub mod job;
pub mod name;
pub mod status;

use hpc_plugin_sdk::host::kube::{self, KubeError, Propagation};
use hpc_plugin_sdk::host::kv;
use hpc_plugin_sdk::{BackendError, Guest, HpcJobInfo, JobLogs, JobSpec, PluginInfo};
use job::{CONTAINER, ID_LABEL, POD_LABEL};
use k8s_openapi::List;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use std::collections::HashMap;

/// The namespace setting.
pub const SETTING_NAMESPACE: &str = "K8S_NAMESPACE";
/// The `ttlSecondsAfterFinished` setting.
pub const SETTING_TTL: &str = "K8S_TTL_SECONDS_AFTER_FINISHED";
/// A day: long enough for the workflow manager to read the end and the logs.
const DEFAULT_TTL: i32 = 86_400;
const BATCH_V1: &str = "batch/v1";
const CORE_V1: &str = "v1";
/// Ids per list call. A set-based selector of 100 names of 63 characters is
/// about 6.5 KB of URL, well within what API servers and proxies accept.
pub const IDS_PER_LIST: usize = 100;
/// Names tried before giving up: a 409 means a random suffix was taken.
const NAME_TRIES: usize = 3;
/// The last lines of a log that `get-logs` returns (the host caps the bytes).
const LOG_LINES: u32 = 100_000;

/// The Kubernetes backend.
pub struct Kubernetes;

/// A setting by its name, or by the lowercase name that an environment
/// override (`CCAT_WORKFLOW_MANAGER_PLUGINS__KUBERNETES__CONFIG__...`) gives it.
fn setting(key: &str) -> Option<String> {
    hpc_plugin_sdk::setting(key).or_else(|| hpc_plugin_sdk::setting(&key.to_ascii_lowercase()))
}

fn namespace() -> Result<String, BackendError> {
    let ns = setting(SETTING_NAMESPACE).map(|n| n.trim().to_owned());
    ns.filter(|n| !n.is_empty()).ok_or_else(|| {
        BackendError::InvalidRequest(format!(
            "`{SETTING_NAMESPACE}` is not set: the Kubernetes backend needs a namespace to run jobs in"
        ))
    })
}

fn ttl() -> Result<Option<i32>, BackendError> {
    match setting(SETTING_TTL).as_deref().map(str::trim) {
        None | Some("") => Ok(Some(DEFAULT_TTL)),
        Some("none") => Ok(None),
        Some(v) => v
            .parse::<i32>()
            .ok()
            .filter(|s| *s >= 0)
            .map(Some)
            .ok_or_else(|| {
                BackendError::InvalidRequest(format!(
                    "`{SETTING_TTL}` must be a whole number of seconds or `none`, not `{v}`"
                ))
            }),
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, BackendError> {
    serde_json::from_str(text)
        .map_err(|e| BackendError::Internal(format!("unexpected {what} from the API server: {e}")))
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn not_found(id: &str, ns: &str) -> BackendError {
    BackendError::NotFound(format!("no Kubernetes job `{id}` in namespace `{ns}`"))
}

/// The kv key that remembers a job `cancel` deleted.
fn cancelled_key(id: &str) -> String {
    format!("cancelled/{id}")
}

/// `key=value` for one value, `key in (a,b)` for more.
fn selector(key: &str, values: &[&str]) -> String {
    match values {
        [one] => format!("{key}={one}"),
        _ => format!("{key} in ({})", values.join(",")),
    }
}

fn list<T>(api_version: &str, kind: &str, ns: &str, sel: &str) -> Result<Vec<T>, BackendError>
where
    T: k8s_openapi::ListableResource + serde::de::DeserializeOwned,
{
    let text = kube::list_by_label(api_version, kind, ns, sel)?;
    Ok(parse::<List<T>>(&format!("{kind} list"), &text)?.items)
}

fn pods_of(ns: &str, id: &str) -> Result<Vec<Pod>, BackendError> {
    list(CORE_V1, "Pod", ns, &selector(POD_LABEL, &[id]))
}

fn get_job(ns: &str, id: &str) -> Result<Option<Job>, BackendError> {
    match kube::get(BATCH_V1, "Job", ns, id) {
        Ok(text) => Ok(Some(parse("Job", &text)?)),
        Err(KubeError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `cancel` deleted this job (best effort: a store error says no).
fn was_cancelled(id: &str) -> bool {
    matches!(kv::get(&cancelled_key(id)), Ok(Some(_)))
}

impl Guest for Kubernetes {
    fn submit(spec: JobSpec) -> Result<String, BackendError> {
        let ns = namespace()?;
        let ttl = ttl()?;
        let mut last = None;
        for _ in 0..NAME_TRIES {
            let name = name::job_name(spec.job_name.as_deref(), &name::suffix());
            let body = serde_json::to_string(&job::build(&spec, &name, ttl)?)
                .map_err(|e| BackendError::Internal(format!("cannot encode the Job: {e}")))?;
            match kube::create(BATCH_V1, "Job", &ns, &body) {
                Ok(_) => return Ok(name),
                Err(KubeError::Conflict(m)) => last = Some(m),
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackendError::Internal(format!(
            "no free Job name after {NAME_TRIES} tries: {}",
            last.unwrap_or_default()
        )))
    }

    fn get_status(job_id: String) -> Result<HpcJobInfo, BackendError> {
        hpc_plugin_sdk::single(Self::get_statuses(vec![job_id]))
    }

    fn get_statuses(
        job_ids: Vec<String>,
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        let ns = namespace()?;
        let mut valid: Vec<&str> = job_ids
            .iter()
            .map(String::as_str)
            .filter(|i| name::is_valid(i))
            .collect();
        valid.sort_unstable();
        valid.dedup();
        let mut jobs: HashMap<String, Job> = HashMap::new();
        let mut pods: HashMap<String, Vec<Pod>> = HashMap::new();
        for chunk in valid.chunks(IDS_PER_LIST) {
            let found: Vec<Job> = list(BATCH_V1, "Job", &ns, &selector(ID_LABEL, chunk))?;
            if found.is_empty() {
                continue;
            }
            for pod in list::<Pod>(CORE_V1, "Pod", &ns, &selector(POD_LABEL, chunk))? {
                let owner = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(POD_LABEL))
                    .cloned();
                pods.entry(owner.unwrap_or_default()).or_default().push(pod);
            }
            jobs.extend(
                found
                    .into_iter()
                    .filter_map(|j| Some((j.metadata.name.clone()?, j))),
            );
        }
        // Jobs not found may have been deleted by `cancel`: one store round trip for all.
        let missing: Vec<&str> = valid
            .iter()
            .copied()
            .filter(|i| !jobs.contains_key(*i))
            .collect();
        let keys: Vec<String> = missing.iter().map(|i| cancelled_key(i)).collect();
        let markers = if keys.is_empty() {
            Ok(vec![])
        } else {
            kv::get_many(&keys)
        };
        let cancelled: Vec<&str> = match markers {
            Ok(found) => missing
                .iter()
                .zip(found)
                .filter(|(_, m)| m.is_some())
                .map(|(i, _)| *i)
                .collect(),
            Err(_) => vec![],
        };
        let now = now();
        Ok(job_ids
            .iter()
            .map(|id| {
                if let Some(job) = jobs.get(id) {
                    let own: Vec<&Pod> =
                        pods.get(id).map(|p| p.iter().collect()).unwrap_or_default();
                    Ok(status::job_info(job, &own, now))
                } else if cancelled.contains(&id.as_str()) {
                    Ok(status::cancelled(id))
                } else if name::is_valid(id) {
                    Err(not_found(id, &ns))
                } else {
                    Err(BackendError::NotFound(format!(
                        "no Kubernetes job `{id}` (not a valid job name)"
                    )))
                }
            })
            .collect())
    }

    fn cancel(job_id: String) -> Result<(), BackendError> {
        let ns = namespace()?;
        if !name::is_valid(&job_id) {
            return Err(not_found(&job_id, &ns));
        }
        let Some(job) = get_job(&ns, &job_id)? else {
            // Cancelling twice is not an error; cancelling what never was is.
            return if was_cancelled(&job_id) {
                Ok(())
            } else {
                Err(not_found(&job_id, &ns))
            };
        };
        if status::is_finished(&job) {
            // Ended already: keep the Job, its status and its logs until their TTL.
            return Ok(());
        }
        match kube::delete(BATCH_V1, "Job", &ns, &job_id, Propagation::Background) {
            Ok(_) | Err(KubeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Best effort: without the marker a cancelled job reads as not-found.
        let ttl = ttl().ok().flatten().map(|t| t.max(60) as u32);
        if let Err(e) = kv::set(&cancelled_key(&job_id), b"1", ttl) {
            hpc_plugin_sdk::log::warn(&format!(
                "cannot record that `{job_id}` was cancelled: {e:?}"
            ));
        }
        Ok(())
    }

    fn get_logs(job_id: String) -> Result<JobLogs, BackendError> {
        let ns = namespace()?;
        if !name::is_valid(&job_id) {
            return Err(not_found(&job_id, &ns));
        }
        let pods = pods_of(&ns, &job_id)?;
        let Some(pod) = status::newest(&pods.iter().collect::<Vec<_>>()) else {
            return match get_job(&ns, &job_id)? {
                None => Err(not_found(&job_id, &ns)),
                Some(job) if status::is_finished(&job) => Err(BackendError::NotFound(format!(
                    "job `{job_id}` has ended and its pod is gone: Kubernetes keeps no logs without the pod"
                ))),
                Some(_) => Err(BackendError::Unavailable(format!(
                    "job `{job_id}` has no logs yet: its pod has not been created; try again"
                ))),
            };
        };
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        if let Some((why, _)) = status::waiting(pod) {
            return Err(BackendError::Unavailable(format!(
                "job `{job_id}` has no logs yet: its container is still being created ({why}); try again"
            )));
        }
        match kube::pod_logs(&ns, &pod_name, Some(CONTAINER), Some(LOG_LINES)) {
            Ok(text) => Ok(JobLogs {
                stdout: text,
                stderr: String::new(),
            }),
            // The container was still starting when the server looked (a race with the check above).
            Err(KubeError::Invalid(m)) => Err(BackendError::Unavailable(format!(
                "job `{job_id}` has no logs yet: {m}; try again"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    fn describe() -> PluginInfo {
        PluginInfo {
            name: "kubernetes".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "runs jobs as Kubernetes batch/v1 Jobs, through the host's API client"
                .into(),
            settings: vec![SETTING_NAMESPACE.into(), SETTING_TTL.into()],
        }
    }
}

// Exported only in the component: natively (`cargo test`) the rlib links
// without the component's export symbols.
#[cfg(target_arch = "wasm32")]
hpc_plugin_sdk::export!(Kubernetes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(selector(POD_LABEL, &["a"]), "job-name=a");
        assert_eq!(
            selector(ID_LABEL, &["a", "b-1"]),
            "hpc-host/job-id in (a,b-1)"
        );
    }
}
