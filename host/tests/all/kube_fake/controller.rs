//! The fake's Job controller and kubelet in one: for each Job, a pod whose
//! container `command` + `args` runs as a local process (the image is not
//! used), so states, timestamps, exit codes and logs are real.
//!
//! A pod is `Pending` with its container `waiting: ContainerCreating` for
//! `Options::creating`, then `Running`, then `Succeeded` or `Failed` with the
//! process's exit code. The Job follows: `startTime`, `active`, then
//! `Complete` or, after `backoffLimit` retries, `Failed`
//! (`BackoffLimitExceeded`); `activeDeadlineSeconds` ends it with
//! `DeadlineExceeded` and deletes its pods.

use super::objects::{controller_labels, now, random};
use super::{Fake, Pod};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How a pod's run ended.
enum End {
    Exited(i32),
    Deadline,
    /// The pod (or its Job) was deleted.
    Gone,
}

/// Run a Job created at `key` (namespace, name) with `uid`, to its end.
pub async fn run_job(fake: Arc<Fake>, ns: String, name: String, uid: String) {
    tokio::time::sleep(fake.opts.schedule).await;
    let Some(job) = fake.job(&ns, &name, &uid) else {
        return;
    };
    let backoff = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let deadline = job["spec"]["activeDeadlineSeconds"]
        .as_u64()
        .map(|s| Instant::now() + Duration::from_secs(s));
    fake.update_job(&ns, &name, &uid, |j| {
        j["status"]["startTime"] = json!(now());
        j["status"]["active"] = json!(1);
        j["status"]["ready"] = json!(0);
        j["status"]["terminating"] = json!(0);
    });
    let mut failures = 0;
    loop {
        let pod = make_pod(&job, &ns, &name, &uid);
        let pod_name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let log = fake.dir.join(format!("{ns}.{pod_name}.log"));
        fake.add_pod(
            &ns,
            &pod_name,
            Pod {
                obj: pod,
                log: log.clone(),
                pgid: None,
            },
        );
        let end = run_pod(&fake, &ns, &pod_name, &job, &log, deadline).await;
        let condition = match end {
            End::Gone => return,
            End::Deadline => {
                fake.delete_pod(&ns, &pod_name);
                (
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            }
            End::Exited(0) => (
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            End::Exited(_) => {
                failures += 1;
                if failures <= backoff {
                    fake.update_job(&ns, &name, &uid, |j| {
                        j["status"]["failed"] = json!(failures)
                    });
                    continue;
                }
                (
                    "Failed",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            }
        };
        let (kind, reason, message) = condition;
        fake.update_job(&ns, &name, &uid, |j| {
            let s = &mut j["status"];
            s.as_object_mut().unwrap().remove("active");
            s["ready"] = json!(0);
            if kind == "Complete" {
                s["succeeded"] = json!(1);
                s["completionTime"] = json!(now());
            } else {
                s["failed"] = json!(failures.max(1));
            }
            let t = now();
            let mut conditions = vec![];
            if kind == "Failed" {
                conditions.push(json!({"type": "FailureTarget", "status": "True", "reason": reason, "message": message,
                    "lastProbeTime": t, "lastTransitionTime": t}));
            } else {
                conditions.push(json!({"type": "SuccessCriteriaMet", "status": "True", "reason": reason, "message": message,
                    "lastProbeTime": t, "lastTransitionTime": t}));
            }
            conditions.push(json!({"type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": t, "lastTransitionTime": t}));
            s["conditions"] = json!(conditions);
        });
        return;
    }
}

/// A new pod for `job`, `Pending` with its container being created.
fn make_pod(job: &Value, ns: &str, name: &str, uid: &str) -> Value {
    // As the Job controller's generateName: the base is cut so the name fits 63.
    let base: String = name.chars().take(57).collect();
    let pod_name = format!("{base}-{}", random(5));
    let mut labels = job["spec"]["template"]["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in controller_labels(name, uid) {
        labels[k] = json!(v);
    }
    let spec = job["spec"]["template"]["spec"].clone();
    let containers: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "restartCount": 0,
            "started": false, "state": {"waiting": {"reason": "ContainerCreating"}}}))
        .collect();
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name, "generateName": format!("{base}-"), "namespace": ns,
            "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": now(),
            "labels": labels, "finalizers": ["batch.kubernetes.io/job-tracking"],
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": spec,
        "status": {"phase": "Pending", "startTime": now(), "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}],
            "containerStatuses": containers},
    });
    pod["spec"]["nodeName"] = json!("fake-node");
    pod
}

/// Create the container's process after the creation delay and wait for its end.
async fn run_pod(
    fake: &Arc<Fake>,
    ns: &str,
    pod: &str,
    job: &Value,
    log: &std::path::Path,
    deadline: Option<Instant>,
) -> End {
    let far = Instant::now() + Duration::from_secs(86_400);
    let deadline = deadline.unwrap_or(far);
    tokio::select! {
        _ = tokio::time::sleep(fake.opts.creating) => {}
        _ = tokio::time::sleep_until(deadline) => return End::Deadline,
    }
    if !fake.pod_exists(ns, pod) {
        return End::Gone;
    }
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let argv: Vec<String> = ["command", "args"]
        .iter()
        .flat_map(|k| c[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = tokio::process::Command::new(argv.first().map_or("", String::as_str));
    cmd.args(argv.iter().skip(1))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOSTNAME", pod)
        .current_dir(&fake.dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .process_group(0);
    for e in c["env"].as_array().into_iter().flatten() {
        cmd.env(
            e["name"].as_str().unwrap_or_default(),
            e["value"].as_str().unwrap_or_default(),
        );
    }
    let started = now();
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = format!(
                "failed to create containerd task: exec: {:?}: {e}",
                argv.first()
            );
            let t = json!({"exitCode": 128, "reason": "StartError", "message": message, "startedAt": started, "finishedAt": now()});
            return finish(fake, ns, pod, 128, t);
        }
    };
    let pgid = child.id().map(|p| p as i32);
    let alive = fake.update_pod(ns, pod, |p| {
        p.pgid = pgid;
        let s = &mut p.obj["status"];
        s["phase"] = json!("Running");
        s["containerStatuses"][0]["state"] = json!({"running": {"startedAt": started}});
        s["containerStatuses"][0]["started"] = json!(true);
        s["containerStatuses"][0]["ready"] = json!(true);
    });
    if !alive {
        // Deleted while its container was being created.
        if let Some(g) = pgid {
            unsafe { libc::kill(-g, libc::SIGKILL) };
        }
        let _ = child.wait().await;
        return End::Gone;
    }
    fake.update_job_by_pod(ns, pod, |j| j["status"]["ready"] = json!(1));
    let status = tokio::select! {
        s = child.wait() => s.unwrap(),
        _ = tokio::time::sleep_until(deadline) => {
            if let Some(g) = pgid {
                unsafe { libc::kill(-g, libc::SIGKILL) };
            }
            let _ = child.wait().await;
            return End::Deadline;
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(9));
    let reason = if code == 0 { "Completed" } else { "Error" };
    let t = json!({"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now(),
        "containerID": format!("containerd://{}", random(12))});
    finish(fake, ns, pod, code, t)
}

/// Record a terminated container; `Gone` if the pod was deleted meanwhile.
fn finish(fake: &Arc<Fake>, ns: &str, pod: &str, code: i32, terminated: Value) -> End {
    let alive = fake.update_pod(ns, pod, |p| {
        p.pgid = None;
        let s = &mut p.obj["status"];
        s["phase"] = json!(if code == 0 { "Succeeded" } else { "Failed" });
        s["containerStatuses"][0]["state"] = json!({"terminated": terminated});
        s["containerStatuses"][0]["ready"] = json!(false);
        s["containerStatuses"][0]["started"] = json!(false);
    });
    // An orphaned pod lives on, but no Job is waiting for it.
    if alive && fake.owner_alive(ns, pod) {
        End::Exited(code)
    } else {
        End::Gone
    }
}
