//! The operations over the SDK's fake host: which API calls they make and
//! how the answers (and refusals) become the contract's.

use super::*;
use hpc_plugin_sdk::JobStatus;
use hpc_plugin_sdk::fake::{self, FakeHost};

fn spec() -> JobSpec {
    let mut s = fake::spec(&["python", "run.py"]);
    s.image_ref = Some("python:3.12".into());
    s.job_name = Some("Reduce".into());
    s
}

fn host() -> FakeHost {
    FakeHost::new().with_setting(SETTING_NAMESPACE, "hpc")
}

const NO_JOBS: &str = r#"{"apiVersion":"batch/v1","kind":"JobList","metadata":{},"items":[]}"#;
const NO_PODS: &str = r#"{"apiVersion":"v1","kind":"PodList","metadata":{},"items":[]}"#;
const RUNNING: &str = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"reduce-bcdfgh"},"status":{"active":1}}"#;

#[test]
fn a_keyed_submit_whose_job_exists_answers_it_and_never_takes_anothers() {
    // The name comes from the key: a 409 means the key's Job was made
    // before (the host's ledger lost it), unless the Job there is not ours.
    let mut keyed = spec();
    keyed.idempotency_key = Some("exec-7".into());
    let ours = |key: &str| {
        format!(
            r#"{{"apiVersion":"batch/v1","kind":"Job","metadata":{{"name":"x","annotations":{{"hpc-host/idempotency-key":"{key}"}}}}}}"#
        )
    };
    let mut h = host();
    h.kube_answer("create", Err(KubeError::Conflict("exists".into())))
        .kube_answer("get", Ok(ours("exec-7")));
    let id = Kubernetes::submit(&mut h, &keyed).unwrap();
    assert_eq!(h.kube_calls_to("create").len(), 1, "no second create");
    assert!(id.starts_with("reduce-"), "{id}");
    let mut again = host();
    again.kube_answer("create", Ok("{}".into()));
    assert_eq!(
        Kubernetes::submit(&mut again, &keyed).unwrap(),
        id,
        "the same name"
    );

    let mut h = host();
    h.kube_answer("create", Err(KubeError::Conflict("exists".into())))
        .kube_answer("get", Ok(ours("exec-8")));
    assert!(matches!(
        Kubernetes::submit(&mut h, &keyed),
        Err(BackendError::Internal(m)) if m.contains("not made for this idempotency key")
    ));
}

#[test]
fn submit_needs_a_namespace_and_retries_a_taken_name() {
    let mut h = FakeHost::new();
    assert!(
        matches!(Kubernetes::submit(&mut h, &spec()), Err(BackendError::InvalidRequest(m)) if m.contains(SETTING_NAMESPACE))
    );
    assert!(h.kube_calls.is_empty());

    let mut h = host();
    h.kube_answer("create", Err(KubeError::Conflict("exists".into())))
        .kube_answer("create", Ok("{}".into()));
    let id = Kubernetes::submit(&mut h, &spec()).unwrap();
    let creates = h.kube_calls_to("create");
    assert_eq!(creates.len(), 2);
    assert_eq!(
        (creates[1].kind.as_str(), creates[1].namespace.as_str()),
        ("Job", "hpc")
    );
    let body: serde_json::Value = serde_json::from_str(&creates[1].arg).unwrap();
    assert_eq!(body["metadata"]["name"], id.as_str());
    assert!(id.starts_with("reduce-"), "{id}");
}

#[test]
fn submit_refuses_bad_time_before_any_call() {
    let mut h = host();
    let mut s = spec();
    s.resource_requirements.time_hours = Some(f64::NAN);
    assert!(
        matches!(Kubernetes::submit(&mut h, &s), Err(BackendError::InvalidRequest(m)) if m.contains("`time_hours`"))
    );
    assert!(h.kube_calls.is_empty());
}

#[test]
fn statuses_read_cancel_markers_for_missing_jobs() {
    let mut h = host();
    h.kv.insert("cancelled/gone-bcdfgh".into(), b"1".to_vec());
    h.kube_answer("list", Ok(NO_JOBS.into()));
    let ids = [
        "gone-bcdfgh".to_string(),
        "never-bcdfgh".into(),
        "Not A Name".into(),
    ];
    let all = Kubernetes::statuses(&mut h, &ids).unwrap();
    assert_eq!(all[0].as_ref().unwrap().status, JobStatus::Failed);
    assert!(matches!(&all[1], Err(BackendError::NotFound(m)) if m.contains("namespace `hpc`")));
    assert!(
        matches!(&all[2], Err(BackendError::NotFound(m)) if m.contains("not a valid job name"))
    );
    // One Job list for both valid ids; no pods listed when no Job was found.
    assert_eq!(h.kube_calls.len(), 1);
    assert_eq!(
        h.kube_calls[0].arg,
        "hpc-host/job-id in (gone-bcdfgh,never-bcdfgh)"
    );
}

#[test]
fn cancel_deletes_a_running_job_and_leaves_a_marker() {
    let mut h = host();
    h.kube_answer("get", Ok(RUNNING.into()))
        .kube_answer("delete", Ok("{}".into()));
    Kubernetes::cancel(&mut h, "reduce-bcdfgh").unwrap();
    assert_eq!(h.kube_calls_to("delete")[0].arg, "reduce-bcdfgh");
    assert_eq!(h.kv["cancelled/reduce-bcdfgh"], b"1");

    // A job that never was is not found; the store being down only warns.
    let mut h = host();
    h.kube_answer("get", Err(KubeError::NotFound("no".into())));
    assert!(matches!(
        Kubernetes::cancel(&mut h, "never-bcdfgh"),
        Err(BackendError::NotFound(_))
    ));
    let mut h = host();
    h.kv_down = true;
    h.kube_answer("get", Ok(RUNNING.into()))
        .kube_answer("delete", Ok("{}".into()));
    Kubernetes::cancel(&mut h, "reduce-bcdfgh").unwrap();
    assert!(h.warnings[0].contains("cannot record"), "{:?}", h.warnings);
}

#[test]
fn logs_before_the_pod_exists_are_unavailable() {
    let mut h = host();
    h.kube_answer("list", Ok(NO_PODS.into()))
        .kube_answer("get", Ok(RUNNING.into()));
    assert!(
        matches!(Kubernetes::logs(&mut h, "reduce-bcdfgh"), Err(BackendError::Unavailable(m)) if m.contains("not been created"))
    );
}
