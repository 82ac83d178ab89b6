//! What a Job and its pod say about a job, in the contract's terms.
//!
//! - completed: the Job's `Complete` condition; failed: its `Failed`
//!   condition. The native state says how: `DeadlineExceeded`, else the
//!   container's end (`Error`, `OOMKilled`, `StartError`), else the
//!   condition's reason (`BackoffLimitExceeded`); the reason has both.
//! - Otherwise the newest pod decides: none yet, or `Pending` -> pending
//!   (with the waiting reason: `ContainerCreating`, `ImagePullBackOff`,
//!   `Unschedulable`); running -> running. A pod that has ended while the
//!   Job has no condition yet stays running: the Job controller has the last
//!   word, and the next poll will have it.
//! - The exit code and the wall time come from the container's terminated
//!   state (`startedAt`, `finishedAt`; to the second), or from the Job's
//!   `startTime` and end when its pod is gone. CPU hours are wall time
//!   x requested CPUs: the allocation, which the reason says, since the API
//!   measures neither CPU time nor peak memory (always null here).

use crate::job::{CONTAINER, requested_cpus};
use hpc_plugin_sdk::resources::seconds_to_hours;
use hpc_plugin_sdk::{HpcJobInfo, JobStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Seconds since the Unix epoch.
fn seconds(t: &Time) -> f64 {
    t.0.as_second() as f64 + f64::from(t.0.subsec_nanosecond()) * 1e-9
}

/// The `True` condition of type `kind`, if the Job has it.
fn condition<'a>(
    job: &'a Job,
    kind: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Whether the Job has ended (its controller says so).
pub fn is_finished(job: &Job) -> bool {
    condition(job, "Complete").is_some() || condition(job, "Failed").is_some()
}

/// The newest of a Job's pods (with `backoffLimit: 0` there is one).
pub fn newest<'a>(pods: &[&'a Pod]) -> Option<&'a Pod> {
    pods.iter()
        .max_by(|a, b| {
            let key = |p: &Pod| {
                (
                    p.metadata.creation_timestamp.as_ref().map(seconds),
                    p.metadata.name.clone(),
                )
            };
            key(a)
                .partial_cmp(&key(b))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .copied()
}

/// The status of the Job's container in `pod`.
pub fn container(pod: &Pod) -> Option<&ContainerStatus> {
    let all = pod.status.as_ref()?.container_statuses.as_ref()?;
    all.iter().find(|c| c.name == CONTAINER).or(all.first())
}

/// Why a container has not started (`ContainerCreating`, `ImagePullBackOff`), if it is waiting.
pub fn waiting(pod: &Pod) -> Option<(String, Option<String>)> {
    let w = container(pod)?.state.as_ref()?.waiting.as_ref()?;
    Some((
        w.reason.clone().unwrap_or_else(|| "Waiting".into()),
        w.message.clone(),
    ))
}

/// When a finished Job started and ended, from its status (Unix seconds).
fn job_times(job: &Job) -> Option<(f64, f64)> {
    let status = job.status.as_ref()?;
    let start = seconds(status.start_time.as_ref()?);
    let end = status
        .completion_time
        .as_ref()
        .or_else(|| condition(job, "Failed")?.last_transition_time.as_ref())?;
    Some((start, seconds(end)))
}

fn terminated(c: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
    now.or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()))
}

/// The contract's view of a Job and its pods, at Unix time `now`.
pub fn job_info(job: &Job, pods: &[&Pod], now: f64) -> HpcJobInfo {
    let id = job.metadata.name.clone().unwrap_or_default();
    let pod = newest(pods);
    let status = pod.and_then(container);
    let ended = status.and_then(terminated);
    let started = ended.and_then(|t| t.started_at.as_ref()).or_else(|| {
        status?
            .state
            .as_ref()?
            .running
            .as_ref()?
            .started_at
            .as_ref()
    });
    let wall = match (started, ended.and_then(|t| t.finished_at.as_ref())) {
        (Some(s), Some(f)) => Some(seconds(f) - seconds(s)),
        (Some(s), None) => Some(now - seconds(s)),
        // The pod is gone (a deadline deletes it): the Job's own times.
        _ => job_times(job).map(|(s, f)| f - s),
    }
    .map(|w| w.max(0.0));
    let cpus = requested_cpus(job);
    let mut info = HpcJobInfo {
        job_id: id,
        status: JobStatus::Pending,
        exit_code: ended.map(|t| t.exit_code),
        wall_time_seconds: wall,
        cpu_hours: wall.zip(cpus).map(|(w, c)| seconds_to_hours(w * c)),
        peak_memory_gb: None,
        native_state: None,
        reason: None,
    };
    let mut reasons: Vec<String> = Vec::new();
    if let Some(t) = ended {
        let why = t.reason.as_deref().unwrap_or("Terminated");
        reasons.push(match t.reason.as_deref() {
            Some("OOMKilled") => format!(
                "the container was killed for exceeding its memory limit (OOMKilled, exit code {})",
                t.exit_code
            ),
            _ if t.exit_code != 0 => {
                format!("the container exited with code {} ({why})", t.exit_code)
            }
            _ => String::new(),
        });
    }
    let (status, native) = if condition(job, "Complete").is_some() {
        (JobStatus::Completed, "Complete".to_owned())
    } else if let Some(c) = condition(job, "Failed") {
        let cond = c.reason.clone().unwrap_or_else(|| "Failed".into());
        reasons.push(match &c.message {
            Some(m) => format!("{cond}: {m}"),
            None => cond.clone(),
        });
        // With `backoffLimit: 0`, BackoffLimitExceeded says only that the pod
        // failed; its container says how (`Error`, `OOMKilled`, `StartError`).
        // A deadline is the Job's own cause, whatever the container then did.
        let how = ended
            .and_then(|t| t.reason.clone())
            .filter(|r| r != "Completed");
        let native = match how {
            Some(how) if cond != "DeadlineExceeded" => how,
            _ => cond,
        };
        (JobStatus::Failed, native)
    } else if job.metadata.deletion_timestamp.is_some() {
        reasons.push("the Job is being deleted".into());
        (JobStatus::Failed, "CANCELLED".into())
    } else {
        live(job, pod, &mut reasons)
    };
    info.status = status;
    info.native_state = Some(native);
    if let Some(c) = cpus.filter(|_| info.cpu_hours.is_some()) {
        reasons.push(format!(
            "cpu_hours is the allocation (wall time x {c} requested CPUs), not a measurement; Kubernetes reports neither CPU time nor peak memory"
        ));
    }
    reasons.retain(|r| !r.is_empty());
    info.reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    info
}

/// A Job without a final condition: pending or running, by its newest pod.
fn live(job: &Job, pod: Option<&Pod>, reasons: &mut Vec<String>) -> (JobStatus, String) {
    let Some(pod) = pod else {
        if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
            reasons.push("the Job is suspended".into());
            return (JobStatus::Pending, "Suspended".into());
        }
        reasons.push("no pod yet".into());
        return (JobStatus::Pending, "Pending".into());
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    if let Some((why, message)) = waiting(pod) {
        reasons.push(message.map_or(why.clone(), |m| format!("{why}: {m}")));
        return (JobStatus::Pending, why);
    }
    let unschedulable = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        });
    if let Some(c) = unschedulable {
        let why = c.reason.clone().unwrap_or_else(|| "Unschedulable".into());
        reasons.push(
            c.message
                .clone()
                .map_or(why.clone(), |m| format!("{why}: {m}")),
        );
        return (JobStatus::Pending, why);
    }
    match phase.as_str() {
        "Pending" => (JobStatus::Pending, phase),
        "Running" => (JobStatus::Running, phase),
        _ => {
            reasons.push(format!(
                "the pod has ended ({phase}); the Job controller has not recorded it yet"
            ));
            (JobStatus::Running, phase)
        }
    }
}

/// A job that `cancel` deleted, as long as its marker lasts.
pub fn cancelled(job_id: &str) -> HpcJobInfo {
    HpcJobInfo {
        job_id: job_id.to_owned(),
        status: JobStatus::Failed,
        exit_code: None,
        wall_time_seconds: None,
        cpu_hours: None,
        peak_memory_gb: None,
        native_state: Some("CANCELLED".into()),
        reason: Some("cancelled: the Job and its pods were deleted".into()),
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
