//! The Kubernetes backend end to end: the real `hpc-host` binary, its
//! `kubernetes` plugin and the host's `kube` capability, against the fake API
//! server in [`crate::kube_fake`] (a kubeconfig in the test's HOME points at
//! it), and against a real cluster when `HPC_HOST_TEST_KUBECONFIG` names one.
//!
//! The scenario steps in [`crate::kube_fake::scenario`] take a [`Target`], so
//! the same steps run against both.

use crate::common::TestEnv;
use crate::kube_fake::scenario::*;
use crate::kube_fake::{Options, write_kubeconfig};
use serde_json::Value;
use std::time::{Duration, Instant};

// ---- against the fake ----

/// A test per scenario step, each against a fake of its own.
macro_rules! steps_on_the_fake {
    ($($test:ident: $step:ident,)*) => {$(
        #[test]
        fn $test() {
            $step(&Target::fake(Options::default()));
        }
    )*};
}

steps_on_the_fake! {
    kube_success_with_logs_and_wall_time: success_with_logs_and_wall_time,
    kube_exit_3_is_failed_with_exit_code_3: exit_3_fails_with_exit_code_3,
    kube_cancel_while_running_leaves_no_pods: cancel_while_running_deletes_the_pods,
    kube_hostile_job_names: hostile_job_names_become_valid_names,
}

#[test]
fn kube_namespace_or_kind_not_granted_is_denied() {
    let mut t = Target::fake(Options::default());
    a_namespace_not_granted_is_denied(&mut t);
    let fake = t.fake.as_ref().unwrap();
    assert!(
        fake.requests().iter().all(|r| !r.contains("kube-system")),
        "{:?}",
        fake.requests()
    );
    // A policy without Pod: the Job is created, reading its pods is denied.
    t.env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__KUBERNETES__K8S_KINDS",
        "[\"batch/Job\"]",
    );
    // A settings list adds to the request's kinds: removing `Pod` is said.
    t.env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__KUBERNETES__REPLACE",
        "[\"k8s_kinds\"]",
    );
    let id = t.submit(&[], &["true"]);
    let err = t.env.fail(4, &["status", &id]);
    assert!(err.contains("may not use kind `Pod`"), "{err}");
}

#[test]
fn kube_status_of_many_jobs_is_one_list_call_per_kind() {
    let t = Target::fake(Options::default());
    let ids: Vec<String> = (0..3)
        .map(|i| t.submit(&["--job-name", &format!("batch-{i}")], &["true"]))
        .collect();
    let fake = t.fake.as_ref().unwrap();
    let before = fake.requests().len();
    let mut args = vec!["--output", "json", "status"];
    args.extend(ids.iter().map(String::as_str));
    args.extend(["never-submitted-abc123", "Not/A/Name"]);
    let out = t.env.run(&args);
    assert_eq!(
        out.status.code(),
        Some(3),
        "not-found ids: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.len(), 5);
    for (s, id) in list.iter().zip(&ids) {
        assert_eq!(s["job_id"], id.as_str());
        assert!(s["status"].is_string(), "{s}");
    }
    assert_eq!(list[3]["error"]["kind"], "not-found");
    assert_eq!(list[4]["error"]["kind"], "not-found");
    let calls: Vec<String> = fake.requests()[before..].to_vec();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    // kube's request builder starts the query with `?&`.
    assert!(
        calls[0].starts_with("GET /apis/batch/v1/namespaces/ccat/jobs?&labelSelector="),
        "{calls:#?}"
    );
    assert!(
        calls[1].starts_with("GET /api/v1/namespaces/ccat/pods?&labelSelector="),
        "{calls:#?}"
    );
}

#[test]
fn kube_logs_while_the_container_is_created_is_a_clear_error() {
    let t = Target::fake(Options {
        creating: Duration::from_secs(4),
        ..Options::default()
    });
    let id = t.submit(&[], &["echo", "late"]);
    let s = t.until("a pod", || {
        Some(t.status(&id)).filter(|s| s["native_state"] == "ContainerCreating")
    });
    assert_eq!(s["status"], "pending", "{s}");
    let err = t.env.fail(3, &["logs", &id]);
    assert!(
        err.contains("unavailable") && err.contains("still being created (ContainerCreating)"),
        "{err}"
    );
    assert_eq!(t.wait(&id)["status"], "completed");
    assert_eq!(t.env.expect(0, &["logs", &id]), "late\n");
}

#[test]
fn kube_deadline_exceeded_fails_the_job() {
    let t = Target::fake(Options::default());
    // 0.0005 h = 1.8 s: activeDeadlineSeconds 2.
    let id = t.submit(&["--time-hours", "0.0005"], &["sleep", "60"]);
    let s = t.wait(&id);
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["native_state"], "DeadlineExceeded");
    // The pod is gone: the wall time is the Job's, from start to deadline.
    let wall = s["wall_time_seconds"].as_f64().unwrap();
    assert!((1.0..=5.0).contains(&wall), "wall time {wall}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("longer than specified deadline"),
        "{s}"
    );
    assert!(t.pods(&id).is_empty());
}

/// The kubernetes backend with an API server at `127.0.0.1:{port}`.
fn kube_env_at(port: u16) -> TestEnv {
    let mut env = TestEnv::new();
    let config = write_kubeconfig(&env.home, &format!("http://127.0.0.1:{port}"), "ccat");
    env.set("KUBECONFIG", &config.display().to_string());
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "kubernetes");
    env.set("CCAT_WORKFLOW_MANAGER_K8S_NAMESPACE", "ccat");
    env
}

/// Run each of `calls`, which must fail as `unavailable` (exit 3), all
/// within `limit`: their stderr.
fn unavailable_within(env: &TestEnv, limit: Duration, calls: &[&[&str]]) -> Vec<String> {
    let start = Instant::now();
    let errs = calls
        .iter()
        .map(|args| {
            let err = env.fail(3, args);
            assert!(err.contains("unavailable"), "{err}");
            err
        })
        .collect();
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
    errs
}

#[test]
fn kube_api_server_down_is_unavailable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = kube_env_at(port);
    let submit = ["submit", "--image-ref", "busybox", "--", "true"];
    let errs = unavailable_within(
        &env,
        Duration::from_secs(10),
        &[&submit, &["status", "some-job"]],
    );
    assert!(
        errs[0].contains("cannot reach the Kubernetes API server"),
        "{}",
        errs[0]
    );
}

#[test]
fn kube_a_server_that_never_answers_is_unavailable_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accept connections and hold them, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(16) {
            held.push(conn);
        }
        std::thread::sleep(Duration::from_secs(120));
    });
    let env = kube_env_at(port);
    unavailable_within(&env, Duration::from_secs(40), &[&["status", "some-job"]]);
}

#[test]
fn kube_api_errors_map_onto_the_contract() {
    let mut t = Target::fake(Options {
        forbidden: vec!["locked".into()],
        broken: vec!["broken".into()],
        ..Options::default()
    });
    // 403: denied, with the server's message.
    t.env.set("CCAT_WORKFLOW_MANAGER_K8S_NAMESPACE", "locked");
    let err = t
        .env
        .fail(4, &["submit", "--image-ref", "busybox", "--", "true"]);
    assert!(
        err.contains("denied") && err.contains("cannot post resource \"jobs\""),
        "{err}"
    );
    // 5xx: unavailable.
    t.env.set("CCAT_WORKFLOW_MANAGER_K8S_NAMESPACE", "broken");
    let err = t.env.fail(3, &["status", "some-job"]);
    assert!(err.contains("unavailable") && err.contains("500"), "{err}");
    // 401 (a wrong token): denied.
    t.env.set("CCAT_WORKFLOW_MANAGER_K8S_NAMESPACE", "ccat");
    let text = std::fs::read_to_string(&t.kubeconfig)
        .unwrap()
        .replace(crate::kube_fake::TOKEN, "wrong");
    std::fs::write(&t.kubeconfig, text).unwrap();
    let err = t.env.fail(4, &["status", "some-job"]);
    assert!(
        err.contains("denied") && err.contains("Unauthorized"),
        "{err}"
    );
}

#[test]
fn kube_what_a_job_cannot_express_is_refused() {
    let mut t = Target::fake(Options::default());
    let err = t.env.fail(2, &["submit", "--", "true"]);
    assert!(
        err.contains("invalid-request") && err.contains("image_ref"),
        "{err}"
    );
    let err = t.env.fail(
        2,
        &[
            "submit",
            "--image-ref",
            "busybox",
            "--nodes",
            "2",
            "--",
            "true",
        ],
    );
    assert!(err.contains("`nodes` must be 1"), "{err}");
    t.env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__KUBERNETES__CONFIG__K8S_TTL_SECONDS_AFTER_FINISHED",
        "soon",
    );
    let err = t
        .env
        .fail(2, &["submit", "--image-ref", "busybox", "--", "true"]);
    assert!(err.contains("K8S_TTL_SECONDS_AFTER_FINISHED"), "{err}");
    assert!(
        t.fake.as_ref().unwrap().requests().is_empty(),
        "nothing reached the server"
    );

    // No namespace: the plugin's kube import is not granted at all.
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "kubernetes");
    let err = env.fail(4, &["status", "x"]);
    assert!(err.contains("k8s_namespaces"), "{err}");
    // Namespaces granted but no `K8S_NAMESPACE`: the plugin names the setting.
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__KUBERNETES__K8S_NAMESPACES",
        "[\"ccat\"]",
    );
    let err = env.fail(2, &["status", "x"]);
    assert!(err.contains("`K8S_NAMESPACE` is not set"), "{err}");
}

#[test]
fn kube_real_cluster_scenario() {
    let Some(mut t) = Target::real() else {
        println!("kubernetes real-cluster test did not run: HPC_HOST_TEST_KUBECONFIG is not set");
        return;
    };
    success_with_logs_and_wall_time(&t);
    exit_3_fails_with_exit_code_3(&t);
    cancel_while_running_deletes_the_pods(&t);
    hostile_job_names_become_valid_names(&t);
    a_namespace_not_granted_is_denied(&mut t);
}
