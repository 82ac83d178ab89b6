//! The Kubernetes backend's operations over a [`Host`]: the component calls
//! them with the real host, unit tests with the SDK's fake.

use crate::Kubernetes;
use crate::job::{self, CONTAINER, ID_LABEL, KEY_LABEL, POD_LABEL};
use crate::{name, status};
use hpc_plugin_sdk::backend::Backend;
use hpc_plugin_sdk::host::Host;
use hpc_plugin_sdk::host::kube::{KubeError, Propagation};
use hpc_plugin_sdk::time::millis_to_seconds;
use hpc_plugin_sdk::{BackendError, HpcJobInfo, JobLogs, JobSpec, PluginInfo};
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

/// A setting by its name. The host keeps the case of `config` keys (an
/// override `CCAT_WORKFLOW_MANAGER_PLUGINS__KUBERNETES__CONFIG__K8S_TTL...`
/// arrives as `K8S_TTL...`), so there is one name to ask for.
fn setting(h: &impl Host, key: &str) -> Option<String> {
    h.setting(key)
}

fn namespace(h: &impl Host) -> Result<String, BackendError> {
    let ns = setting(h, SETTING_NAMESPACE).map(|n| n.trim().to_owned());
    ns.filter(|n| !n.is_empty()).ok_or_else(|| {
        BackendError::InvalidRequest(format!(
            "`{SETTING_NAMESPACE}` is not set: the Kubernetes backend needs a namespace to run jobs in"
        ))
    })
}

fn ttl(h: &impl Host) -> Result<Option<i32>, BackendError> {
    match setting(h, SETTING_TTL).as_deref().map(str::trim) {
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

fn list<T>(
    h: &mut impl Host,
    api_version: &str,
    kind: &str,
    ns: &str,
    sel: &str,
) -> Result<Vec<T>, BackendError>
where
    T: k8s_openapi::ListableResource + serde::de::DeserializeOwned,
{
    let text = h.kube_list(api_version, kind, ns, sel)?;
    Ok(parse::<List<T>>(&format!("{kind} list"), &text)?.items)
}

fn pods_of(h: &mut impl Host, ns: &str, id: &str) -> Result<Vec<Pod>, BackendError> {
    list(h, CORE_V1, "Pod", ns, &selector(POD_LABEL, &[id]))
}

fn get_job(h: &mut impl Host, ns: &str, id: &str) -> Result<Option<Job>, BackendError> {
    match h.kube_get(BATCH_V1, "Job", ns, id) {
        Ok(text) => Ok(Some(parse("Job", &text)?)),
        Err(KubeError::NotFound(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `cancel` deleted this job (best effort: a store error says no).
fn was_cancelled(h: &mut impl Host, id: &str) -> bool {
    matches!(h.kv_get(&cancelled_key(id)), Ok(Some(_)))
}

impl Backend for Kubernetes {
    /// Create a Job for `spec`; its name is the job id. A keyed spec's name
    /// comes from its key, so the API server itself refuses a second Job for
    /// it (409): that Job, if it carries the key, is the answer.
    fn submit(h: &mut impl Host, spec: &JobSpec) -> Result<String, BackendError> {
        let ns = namespace(h)?;
        let ttl = ttl(h)?;
        if let Some(key) = &spec.idempotency_key {
            let name = name::job_name(spec.job_name.as_deref(), &name::keyed_suffix(key));
            let body = serde_json::to_string(&job::build(spec, &name, ttl)?)
                .map_err(|e| BackendError::Internal(format!("cannot encode the Job: {e}")))?;
            return match h.kube_create(BATCH_V1, "Job", &ns, &body) {
                Ok(_) => Ok(name),
                Err(KubeError::Conflict(m)) => match get_job(h, &ns, &name)? {
                    Some(existing) if job::carries_key(&existing, key) => Ok(name),
                    _ => Err(BackendError::Internal(format!(
                        "Job `{name}` exists but was not made for this idempotency key: {m}"
                    ))),
                },
                Err(e) => Err(e.into()),
            };
        }
        let mut last = None;
        for _ in 0..NAME_TRIES {
            let name = name::job_name(spec.job_name.as_deref(), &name::suffix());
            let body = serde_json::to_string(&job::build(spec, &name, ttl)?)
                .map_err(|e| BackendError::Internal(format!("cannot encode the Job: {e}")))?;
            match h.kube_create(BATCH_V1, "Job", &ns, &body) {
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

    /// The Job labelled with the key's digest and annotated with the key.
    fn find_job(h: &mut impl Host, key: &str, _since: f64) -> Result<Option<String>, BackendError> {
        let ns = namespace(h)?;
        let jobs: Vec<Job> = list(
            h,
            BATCH_V1,
            "Job",
            &ns,
            &selector(KEY_LABEL, &[&job::key_label(key)]),
        )?;
        Ok(jobs
            .into_iter()
            .find(|j| job::carries_key(j, key))
            .and_then(|j| j.metadata.name))
    }

    /// The state of each job in `job_ids`, in order.
    fn statuses(
        h: &mut impl Host,
        job_ids: &[String],
    ) -> Result<Vec<Result<HpcJobInfo, BackendError>>, BackendError> {
        let ns = namespace(h)?;
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
            let found: Vec<Job> = list(h, BATCH_V1, "Job", &ns, &selector(ID_LABEL, chunk))?;
            if found.is_empty() {
                continue;
            }
            for pod in list::<Pod>(h, CORE_V1, "Pod", &ns, &selector(POD_LABEL, chunk))? {
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
            h.kv_get_many(&keys)
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
        let now = millis_to_seconds(h.now_millis());
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

    /// Delete a Job that has not ended, and remember that it was cancelled.
    fn cancel(h: &mut impl Host, job_id: &str) -> Result<(), BackendError> {
        let ns = namespace(h)?;
        if !name::is_valid(job_id) {
            return Err(not_found(job_id, &ns));
        }
        let Some(job) = get_job(h, &ns, job_id)? else {
            // Cancelling twice is not an error; cancelling what never was is.
            return if was_cancelled(h, job_id) {
                Ok(())
            } else {
                Err(not_found(job_id, &ns))
            };
        };
        if status::is_finished(&job) {
            // Ended already: keep the Job, its status and its logs until their TTL.
            return Ok(());
        }
        match h.kube_delete(BATCH_V1, "Job", &ns, job_id, Propagation::Background) {
            Ok(_) | Err(KubeError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // Best effort: without the marker a cancelled job reads as not-found.
        let ttl = ttl(h).ok().flatten().map(|t| t.max(60) as u32);
        if let Err(e) = h.kv_set(&cancelled_key(job_id), b"1", ttl) {
            h.warn(&format!(
                "cannot record that `{job_id}` was cancelled: {e:?}"
            ));
        }
        Ok(())
    }

    /// The container log of the Job's newest pod.
    fn logs(h: &mut impl Host, job_id: &str) -> Result<JobLogs, BackendError> {
        let ns = namespace(h)?;
        if !name::is_valid(job_id) {
            return Err(not_found(job_id, &ns));
        }
        let pods = pods_of(h, &ns, job_id)?;
        let Some(pod) = status::newest(&pods.iter().collect::<Vec<_>>()) else {
            return match get_job(h, &ns, job_id)? {
                None => Err(not_found(job_id, &ns)),
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
        match h.kube_pod_logs(&ns, &pod_name, Some(CONTAINER), Some(LOG_LINES)) {
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

#[cfg(test)]
#[path = "backend_tests.rs"]
mod backend_tests;

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
