//! The mapping from Job and pod JSON, as the API server sends them, to job info.

use super::*;
use serde_json::{Value, json};

fn job(status: Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "reduce-x7k2q9", "uid": "u1", "creationTimestamp": "2026-01-01T10:00:00Z"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "job", "image": "busybox", "command": ["true"],
             "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}}
        ]}}},
        "status": status,
    }))
    .unwrap()
}

fn pod(phase: &str, state: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "reduce-x7k2q9-abcde", "creationTimestamp": "2026-01-01T10:00:01Z"},
        "status": {"phase": phase, "containerStatuses": [
            {"name": "job", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0, "state": state}
        ]},
    }))
    .unwrap()
}

const NOW: f64 = 1_767_261_630.0; // 2026-01-01T10:00:30Z

fn terminated(code: i32, reason: &str) -> Value {
    json!({"terminated": {"exitCode": code, "reason": reason,
        "startedAt": "2026-01-01T10:00:05Z", "finishedAt": "2026-01-01T10:00:15Z"}})
}

#[test]
fn no_pod_yet_is_pending() {
    let i = job_info(&job(json!({})), &[], NOW);
    assert_eq!(i.status, JobStatus::Pending);
    assert_eq!(i.native_state.as_deref(), Some("Pending"));
    assert_eq!(i.reason.as_deref(), Some("no pod yet"));
    assert_eq!(
        (
            i.exit_code,
            i.wall_time_seconds,
            i.cpu_hours,
            i.peak_memory_gb
        ),
        (None, None, None, None)
    );
}

#[test]
fn a_container_being_created_is_pending_with_its_reason() {
    let p = pod(
        "Pending",
        json!({"waiting": {"reason": "ContainerCreating"}}),
    );
    let i = job_info(&job(json!({"active": 1})), &[&p], NOW);
    assert_eq!(i.status, JobStatus::Pending);
    assert_eq!(i.native_state.as_deref(), Some("ContainerCreating"));
    let p = pod(
        "Pending",
        json!({"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}),
    );
    let i = job_info(&job(json!({"active": 1})), &[&p], NOW);
    assert_eq!(i.native_state.as_deref(), Some("ImagePullBackOff"));
    assert!(i.reason.unwrap().contains("Back-off pulling image"));
}

#[test]
fn an_unschedulable_pod_says_why() {
    let mut p = pod("Pending", json!(null));
    p.status.as_mut().unwrap().container_statuses = None;
    p.status.as_mut().unwrap().conditions = Some(vec![
        serde_json::from_value(json!({
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu."
        }))
        .unwrap(),
    ]);
    let i = job_info(&job(json!({"active": 1})), &[&p], NOW);
    assert_eq!(i.status, JobStatus::Pending);
    assert_eq!(i.native_state.as_deref(), Some("Unschedulable"));
    assert!(i.reason.unwrap().contains("Insufficient cpu"));
}

#[test]
fn running_counts_wall_time_so_far() {
    let p = pod(
        "Running",
        json!({"running": {"startedAt": "2026-01-01T10:00:10Z"}}),
    );
    let i = job_info(
        &job(json!({"active": 1, "startTime": "2026-01-01T10:00:00Z"})),
        &[&p],
        NOW,
    );
    assert_eq!(i.status, JobStatus::Running);
    assert_eq!(i.native_state.as_deref(), Some("Running"));
    assert_eq!(i.wall_time_seconds, Some(20.0));
    assert_eq!(i.exit_code, None);
}

#[test]
fn complete_has_exit_code_wall_time_and_allocated_cpu_hours() {
    let p = pod("Succeeded", terminated(0, "Completed"));
    let status = json!({"succeeded": 1, "completionTime": "2026-01-01T10:00:16Z",
        "conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]});
    let i = job_info(&job(status), &[&p], NOW);
    assert_eq!(i.status, JobStatus::Completed);
    assert_eq!(i.native_state.as_deref(), Some("Complete"));
    assert_eq!(i.exit_code, Some(0));
    assert_eq!(i.wall_time_seconds, Some(10.0));
    assert_eq!(i.cpu_hours, Some(10.0 * 4.0 / 3600.0));
    assert_eq!(i.peak_memory_gb, None);
    let reason = i.reason.unwrap();
    assert!(
        reason.contains("allocation") && reason.contains("4 requested CPUs"),
        "{reason}"
    );
}

#[test]
fn failed_with_exit_code_3() {
    let p = pod("Failed", terminated(3, "Error"));
    let status = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
        "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]});
    let i = job_info(&job(status), &[&p], NOW);
    assert_eq!(i.status, JobStatus::Failed);
    assert_eq!(i.native_state.as_deref(), Some("Error"));
    assert_eq!(i.exit_code, Some(3));
    let reason = i.reason.unwrap();
    assert!(
        reason.starts_with(
            "the container exited with code 3 (Error); BackoffLimitExceeded: Job has reached"
        ),
        "{reason}"
    );
}

#[test]
fn oom_killed_is_the_native_state() {
    let p = pod("Failed", terminated(137, "OOMKilled"));
    let status = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]});
    let i = job_info(&job(status), &[&p], NOW);
    assert_eq!(i.status, JobStatus::Failed);
    assert_eq!(i.native_state.as_deref(), Some("OOMKilled"));
    assert_eq!(i.exit_code, Some(137));
    assert!(i.reason.unwrap().contains("memory limit"));
}

#[test]
fn deadline_exceeded_without_a_pod_left() {
    let status = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True",
        "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]});
    let i = job_info(&job(status), &[], NOW);
    assert_eq!(i.status, JobStatus::Failed);
    assert_eq!(i.native_state.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(i.exit_code, None);
    assert_eq!(
        i.reason.as_deref(),
        Some("DeadlineExceeded: Job was active longer than specified deadline")
    );
    assert_eq!(i.wall_time_seconds, None, "no times, no wall time");

    // With the Job's own times, the wall time is theirs (and the allocation follows).
    let status = json!({"failed": 1, "startTime": "2026-01-01T10:00:00Z", "conditions": [{"type": "Failed",
        "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": "2026-01-01T10:00:03Z"}]});
    let i = job_info(&job(status), &[], NOW);
    assert_eq!(i.wall_time_seconds, Some(3.0));
    assert_eq!(i.cpu_hours, Some(3.0 * 4.0 / 3600.0));

    // The pod's end does not hide the deadline.
    let p = pod("Failed", terminated(137, "Error"));
    let status =
        json!({"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]});
    assert_eq!(
        job_info(&job(status), &[&p], NOW).native_state.as_deref(),
        Some("DeadlineExceeded")
    );
}

#[test]
fn an_ended_pod_without_a_job_condition_is_not_yet_final() {
    let p = pod("Succeeded", terminated(0, "Completed"));
    let i = job_info(&job(json!({"active": 1})), &[&p], NOW);
    assert_eq!(i.status, JobStatus::Running);
    assert_eq!(i.native_state.as_deref(), Some("Succeeded"));
    assert_eq!(i.exit_code, Some(0));
}

#[test]
fn the_newest_pod_decides() {
    let old = pod("Failed", terminated(1, "Error"));
    let mut new = pod(
        "Running",
        json!({"running": {"startedAt": "2026-01-01T10:00:20Z"}}),
    );
    new.metadata.creation_timestamp =
        serde_json::from_value(json!("2026-01-01T10:00:19Z")).unwrap();
    new.metadata.name = Some("reduce-x7k2q9-zzzzz".into());
    assert_eq!(
        newest(&[&old, &new]).unwrap().metadata.name,
        new.metadata.name
    );
    assert_eq!(
        newest(&[&new, &old]).unwrap().metadata.name,
        new.metadata.name
    );
    let i = job_info(&job(json!({"active": 1})), &[&old, &new], NOW);
    assert_eq!(i.status, JobStatus::Running);
    assert_eq!(i.wall_time_seconds, Some(10.0));
}

#[test]
fn finished_means_a_final_condition() {
    assert!(!is_finished(&job(json!({"active": 1}))));
    assert!(is_finished(&job(
        json!({"conditions": [{"type": "Complete", "status": "True"}]})
    )));
    assert!(!is_finished(&job(
        json!({"conditions": [{"type": "Failed", "status": "False"}]})
    )));
}
