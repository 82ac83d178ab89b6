//! The SLURM backend against the real single-node cluster that
//! `scripts/slurm-testcluster.sh` starts (the README's test command does).
//!
//! The tests share one cluster and one of them stops its controller, so they
//! run one at a time (`CLUSTER`).

use crate::common::TestEnv;
use serde_json::Value;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

static CLUSTER: Mutex<()> = Mutex::new(());

pub fn lock() -> MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|p| p.into_inner())
}

/// An environment whose backend is SLURM, on the test cluster's partition.
pub fn slurm_env() -> TestEnv {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm");
    env.set("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug");
    env
}

/// A SLURM test's start: the cluster to itself ([`lock`]) and a [`slurm_env`].
pub fn on_cluster() -> (MutexGuard<'static, ()>, TestEnv) {
    (lock(), slurm_env())
}

fn wait(env: &TestEnv, id: &str) -> Value {
    env.json(&["wait", "--timeout", "180", id])
}

fn logs(env: &TestEnv, id: &str) -> String {
    String::from_utf8(env.run(&["logs", id]).stdout).unwrap()
}

#[test]
#[ignore = "needs slurm"]
fn slurm_job_succeeds_with_logs_and_metrics() {
    let (_g, env) = on_cluster();
    let id = env.submit(&[
        "python3",
        "-c",
        "import time; b = b'x' * (200 * 1024 * 1024); time.sleep(3); print('done')",
    ]);
    assert!(id.parse::<u64>().is_ok(), "a SLURM job id, not {id}");
    let s = wait(&env, &id);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["native_state"], "COMPLETED");
    assert!(s["wall_time_seconds"].as_f64().unwrap() >= 3.0, "{s}");
    assert!(s["cpu_hours"].as_f64().unwrap() > 0.0, "{s}");
    let peak = s["peak_memory_gb"].as_f64().unwrap();
    let expected = 200.0 / 1024.0;
    assert!(
        (peak - expected).abs() / expected < 0.2,
        "peak {peak} GB vs {expected} GB"
    );
    assert_eq!(logs(&env, &id), "done\n");
    // The sbatch script is in the workspace folder.
    let scripts: Vec<_> = std::fs::read_dir(env.state_dir().join("slurm"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        scripts
            .iter()
            .any(|e| e.path().extension().is_some_and(|x| x == "sbatch")),
        "{scripts:?}"
    );
}

#[test]
#[ignore = "needs slurm"]
fn slurm_exit_3_is_failed_with_exit_code_3() {
    let (_g, env) = on_cluster();
    let id = env.submit(&["sh", "-c", "echo failing >&2; exit 3"]);
    let s = wait(&env, &id);
    assert_eq!(
        (s["status"].as_str(), s["exit_code"].as_i64()),
        (Some("failed"), Some(3)),
        "{s}"
    );
    assert_eq!(s["native_state"], "FAILED");
    let err = String::from_utf8(env.run(&["logs", &id]).stderr).unwrap();
    assert_eq!(err, "failing\n");
}

#[test]
#[ignore = "needs slurm"]
fn slurm_cancel_running_and_pending() {
    let (_g, env) = on_cluster();
    let running = env.submit(&["sleep", "120"]);
    env.wait_until(&running, "running", |s| s["status"] == "running");
    let spec = env.home.join("pending.json");
    std::fs::write(
        &spec,
        r#"{"execution_command": ["true"], "job_name": "later", "resource_requirements": {"begin": "now+1hour"}}"#,
    )
    .unwrap();
    let pending = env.json(&["submit", "--spec", spec.to_str().unwrap()])["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(env.status(&pending)["status"], "pending");

    env.expect(0, &["cancel", &running, &pending]);
    for id in [&running, &pending] {
        let s = wait(&env, id);
        assert_eq!(s["status"], "failed", "{s}");
        assert_eq!(s["native_state"], "CANCELLED", "{s}");
        assert!(
            s["reason"].as_str().unwrap_or("").contains("cancelled"),
            "{s}"
        );
    }
    // Cancelling a finished job is not an error.
    env.expect(0, &["cancel", &running]);
}

#[test]
#[ignore = "needs slurm"]
fn slurm_status_of_50_jobs_is_one_squeue_and_one_sacct() {
    let (_g, mut env) = on_cluster();
    env.use_slurm_programs("/usr/bin/sbatch", &["squeue", "sacct"]);
    let ids: Vec<String> = (0..50)
        .map(|i| env.submit(&["sh", "-c", &format!("echo {i}")]))
        .collect();
    let mut args = vec!["--output", "json", "wait", "--timeout", "180"];
    args.extend(ids.iter().map(String::as_str));
    env.expect(0, &args);

    let (sq, sa) = (env.calls("squeue"), env.calls("sacct"));
    args.splice(0..5, ["--output", "json", "status"]);
    let v: Value = serde_json::from_str(&env.expect(0, &args)).unwrap();
    assert_eq!(env.calls("squeue") - sq, 1, "one squeue for 50 ids");
    assert!(env.calls("sacct") - sa <= 1, "at most one sacct for 50 ids");
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 50);
    for (info, id) in v.iter().zip(&ids) {
        assert_eq!(info["job_id"].as_str(), Some(id.as_str()));
        assert_eq!(info["status"], "completed", "{info}");
    }
    // An id nobody knows is not-found, never completed.
    let out = env.run(&["--output", "json", "status", "2147480000"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["kind"], "not-found", "{v}");
}

#[test]
#[ignore = "needs slurm"]
fn slurm_hostile_names_and_values_reach_the_job_intact_or_are_refused() {
    let (_g, env) = on_cluster();
    let marker = env.home.join("pwned");
    let hostile = format!(
        "it's \"quoted\" $(touch {m}) `touch {m}`; touch {m} \\ ünï\ncode",
        m = marker.display()
    );
    let spec = serde_json::json!({
        "execution_command": ["printf", "%s|%s", "$ARG", hostile],
        "job_name": format!("name'\"$(touch {m});\n#SBATCH --partition=evil", m = marker.display()),
        "environment_variables": {"ARG": hostile},
    });
    let file = env.home.join("spec.json");
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = env.json(&["submit", "--spec", file.to_str().unwrap()]);
    let id = out["job_id"].as_str().unwrap().to_owned();
    assert_eq!(wait(&env, &id)["status"], "completed");
    // argv is not expanded: `$ARG` stays literal; the env value arrives whole.
    assert_eq!(logs(&env, &id), format!("$ARG|{hostile}"));
    assert!(!marker.exists(), "a value was executed");

    let spec = serde_json::json!({"execution_command": ["true"], "environment_variables": {"ARG": hostile},
        "resource_requirements": {"account": "x\n#SBATCH --partition=evil"}});
    std::fs::write(&file, spec.to_string()).unwrap();
    let err = env.fail(2, &["submit", "--spec", file.to_str().unwrap()]);
    assert!(err.contains("invalid-request"), "{err}");
}

#[test]
#[ignore = "needs slurm"]
fn slurm_partition_that_does_not_exist_is_invalid_request() {
    let (_g, mut env) = on_cluster();
    env.set("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "nosuchpartition");
    let err = env.fail(2, &["submit", "--", "true"]);
    assert!(
        err.contains("invalid-request") && err.to_lowercase().contains("partition"),
        "{err}"
    );
}

#[test]
#[ignore = "needs slurm"]
fn slurm_controller_down_is_unavailable_and_comes_back() {
    let (_g, env) = on_cluster();
    let before = env.submit(&["true"]);
    wait(&env, &before);
    let scripts = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts");
    let stop = std::process::Command::new(format!("{scripts}/slurm-testcluster-stop.sh"))
        .arg("slurmctld")
        .status()
        .unwrap();
    assert!(stop.success());
    let restart = || {
        let ok = std::process::Command::new(format!("{scripts}/slurm-testcluster.sh"))
            .status()
            .unwrap();
        assert!(ok.success(), "restarting the cluster");
    };
    let t = Instant::now();
    let out = env.run(&["submit", "--", "true"]);
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let status = env.run(&["status", &before]);
    restart();
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("unavailable") && err.contains("slurm controller"),
        "{err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "submit took {took:?} with the controller down"
    );
    assert_eq!(
        status.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(String::from_utf8_lossy(&status.stderr).contains("unavailable"));

    // Back: the job submitted before is still known, and new work goes through.
    assert_eq!(env.status(&before)["status"], "completed");
    let after = env.submit(&["true"]);
    assert_eq!(wait(&env, &after)["status"], "completed");
}

/// A job SLURM requeues (here by hand, as after a node failure or a
/// preemption with `--requeue`) is the same job, pending again: never
/// reported final on the way, and running again once SLURM starts it.
#[test]
#[ignore = "needs slurm"]
fn slurm_a_requeued_job_stays_the_same_job_and_is_never_final_on_the_way() {
    let (_g, env) = on_cluster();
    let id = env.submit(&["sh", "-c", "echo attempt; sleep 300"]);
    let status = |env: &TestEnv| env.status(&id);
    let deadline = Instant::now() + Duration::from_secs(180);
    while status(&env)["status"] != "running" {
        assert!(Instant::now() < deadline, "the job never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = std::process::Command::new("scontrol")
        .args(["requeue", &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // SLURM holds a requeued job (BeginTime) before it may start again.
    let mut seen = Vec::new();
    for _ in 0..15 {
        let s = status(&env);
        assert!(
            ["pending", "running"].contains(&s["status"].as_str().unwrap_or("")),
            "a requeued job was reported {s}"
        );
        seen.push(s["status"].as_str().unwrap().to_owned());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.iter().any(|s| s == "pending"), "{seen:?}");
    // Released, it runs again under the same id.
    let out = std::process::Command::new("scontrol")
        .args(["update", &format!("jobid={id}"), "starttime=now"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let s = status(&env);
        assert_ne!(s["status"], "failed", "{s}");
        assert_ne!(s["status"], "completed", "{s}");
        if s["status"] == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the requeued job never ran again: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    env.expect(0, &["cancel", &id]);
    assert_eq!(wait(&env, &id)["native_state"], "CANCELLED");
}
