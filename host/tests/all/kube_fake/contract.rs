//! The fake checked against the contract file, through a real kube client:
//! if these drift from `kubernetes-api-contract.md`, the backend's tests
//! prove nothing.

use super::scenario::{api, api_status};
use super::{FakeApi, Options};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn request(method: &str, path: &str, body: Option<Value>) -> http::Request<Vec<u8>> {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

fn job(name: &str, restart: &str) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"template": {"spec": {"restartPolicy": restart,
            "containers": [{"name": "job", "image": "busybox", "command": ["sleep", "30"]}]}}}})
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kube_fake_keeps_to_the_contract() {
    let fake = FakeApi::start(Options::default());
    let home =
        std::env::temp_dir().join(format!("hpc-host-kube-contract-{}", uuid::Uuid::new_v4()));
    let kc = fake.write_kubeconfig(&home, "ccat");
    let call = |m: &str, p: &str, b: Option<Value>| -> Result<Value, u16> {
        api(&kc, request(m, p, b)).map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
    };
    let jobs = "/apis/batch/v1/namespaces/ccat/jobs";

    // Create: 201 with the server-filled fields.
    let created = call("POST", jobs, Some(job("a", "Never"))).unwrap();
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    assert!(
        created["metadata"]["resourceVersion"].is_string()
            && created["metadata"]["creationTimestamp"].is_string()
    );
    assert_eq!(created["spec"]["backoffLimit"], 6, "the default");
    assert_eq!(
        (
            created["spec"]["completions"].as_i64(),
            created["spec"]["parallelism"].as_i64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        created["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );
    let labels = &created["spec"]["template"]["metadata"]["labels"];
    for key in ["job-name", "batch.kubernetes.io/job-name"] {
        assert_eq!(labels[key], "a");
    }
    for key in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
        assert_eq!(labels[key], uid.as_str());
    }

    // 409, 422, 404 with Status bodies.
    assert_eq!(call("POST", jobs, Some(job("a", "Never"))), Err(409));
    assert_eq!(call("POST", jobs, Some(job("b", "Always"))), Err(422));
    assert_eq!(
        call("POST", jobs, Some(job(&"c".repeat(64), "Never"))),
        Err(422)
    );
    assert_eq!(call("POST", jobs, Some(job("Bad_Name", "Never"))), Err(422));
    assert_eq!(call("GET", &format!("{jobs}/missing"), None), Err(404));
    let status = api_status(&kc, request("GET", &format!("{jobs}/missing"), None)).unwrap_err();
    assert_eq!((status.reason.as_str(), status.code), ("NotFound", 404));
    assert_eq!(status.message, "jobs.batch \"missing\" not found");
    assert_eq!(
        status
            .details
            .as_ref()
            .map(|d| (d.name.as_str(), d.group.as_str(), d.kind.as_str())),
        Some(("missing", "batch", "jobs"))
    );
    let status = api_status(&kc, request("POST", jobs, Some(job("b", "Always")))).unwrap_err();
    assert_eq!(status.reason, "Invalid");
    assert!(
        status
            .message
            .contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\""),
        "{}",
        status.message
    );

    // The pod: labels, owner, and a list whose query starts with `?&`.
    let pods_of = |job: &str| -> Vec<Value> {
        let v = call(
            "GET",
            &format!("/api/v1/namespaces/ccat/pods?&labelSelector=job-name%3D{job}"),
            None,
        )
        .unwrap();
        assert_eq!(
            (v["kind"].as_str(), v["apiVersion"].as_str()),
            (Some("PodList"), Some("v1"))
        );
        v["items"].as_array().unwrap().clone()
    };
    until("a pod runs", || {
        pods_of("a")
            .first()
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let pod = &pods_of("a")[0];
    assert!(pod["metadata"]["name"].as_str().unwrap().starts_with("a-"));
    assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], uid.as_str());
    assert_eq!(pod["metadata"]["labels"]["controller-uid"], uid.as_str());
    assert!(pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string());

    // DELETE without a policy orphans the pods: they keep running.
    let deleted = call("DELETE", &format!("{jobs}/a"), None).unwrap();
    assert!(
        deleted["metadata"]["deletionTimestamp"].is_string(),
        "{deleted}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let orphans = pods_of("a");
    assert_eq!(orphans.len(), 1, "Orphan leaves the pod");
    assert!(orphans[0]["metadata"].get("ownerReferences").is_none());
    assert_eq!(orphans[0]["status"]["phase"], "Running");

    // Background deletes them.
    call("POST", jobs, Some(job("d", "Never"))).unwrap();
    until("d's pod", || !pods_of("d").is_empty());
    let status = call(
        "DELETE",
        &format!("{jobs}/d"),
        Some(json!({"propagationPolicy": "Background"})),
    )
    .unwrap();
    assert_eq!(
        (status["kind"].as_str(), status["status"].as_str()),
        (Some("Status"), Some("Success"))
    );
    until("d's pod is deleted", || pods_of("d").is_empty());
    assert_eq!(call("DELETE", &format!("{jobs}/d"), None), Err(404));

    // Logs: 400 while the container is created, then the text.
    let slow = FakeApi::start(Options {
        creating: Duration::from_secs(3),
        ..Options::default()
    });
    let kc2 = slow.write_kubeconfig(&home.join("slow"), "ccat");
    let mut j = job("e", "Never");
    j["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["echo", "hi"]);
    api(&kc2, request("POST", jobs, Some(j))).unwrap();
    let mut pod = String::new();
    until("e's pod", || {
        let v: Value = serde_json::from_str(
            &api(
                &kc2,
                request(
                    "GET",
                    "/api/v1/namespaces/ccat/pods?labelSelector=job-name%3De",
                    None,
                ),
            )
            .unwrap(),
        )
        .unwrap();
        pod = v["items"][0]["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        !pod.is_empty()
    });
    let logs = format!("/api/v1/namespaces/ccat/pods/{pod}/log?container=job");
    assert_eq!(api(&kc2, request("GET", &logs, None)), Err(400));
    until("e's log", || {
        api(&kc2, request("GET", &logs, None)).is_ok_and(|t| t == "hi\n")
    });
    let _ = std::fs::remove_dir_all(&home);
}
