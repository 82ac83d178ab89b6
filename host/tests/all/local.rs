//! The local backend end to end on the embedded store: each step is a separate
//! `hpc-host` process, as the workflow manager calls it.

use crate::common::{TestEnv, group_members};
use std::time::Duration;

#[test]
fn submit_status_wait_logs() {
    let env = TestEnv::new();
    let out = env.expect(
        0,
        &[
            "submit",
            "--job-name",
            "hello",
            "--",
            "sh",
            "-c",
            "echo hi; echo oops >&2; sleep 1",
        ],
    );
    let id = out.trim();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "a UUID job id, not {id:?}"
    );

    // The submitting process has exited; the job still runs.
    let s = env.status(id);
    assert_eq!(s["status"], "running", "{s}");
    assert_eq!(s["native_state"], "RUNNING");

    let s = env.wait(id);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["exit_code"], 0);
    let wall = s["wall_time_seconds"].as_f64().unwrap();
    assert!((1.0..5.0).contains(&wall), "wall time {wall}");
    assert!(s["cpu_hours"].as_f64().unwrap() >= 0.0);
    assert!(s["peak_memory_gb"].as_f64().unwrap() > 0.0);

    let out = env.run(&["logs", id]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let logs: serde_json::Value =
        serde_json::from_str(&env.expect(0, &["--output", "json", "logs", id])).unwrap();
    assert_eq!(logs["stdout"], "hi\n");

    // The text form names the state too.
    let text = env.expect(0, &["status", id]);
    assert!(
        text.starts_with(id) && text.contains("completed") && text.contains("exit=0"),
        "{text}"
    );
}

#[test]
fn failing_job_reports_exit_code_and_reason() {
    let env = TestEnv::new();
    let id = env.submit(&["sh", "-c", "exit 3"]);
    let s = env.wait(id.as_str());
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["exit_code"], 3);
    assert_eq!(s["native_state"], "FAILED");
    assert_eq!(s["reason"], "exit code 3");
}

#[test]
fn a_command_that_cannot_start_fails_submit() {
    let env = TestEnv::new();
    let err = env.fail(2, &["submit", "--", "/no/such/program"]);
    assert!(err.contains("cannot start `/no/such/program`"), "{err}");
}

/// A `workspace_dir` that does not exist is named as such, not blamed on the
/// program (exec's own ENOENT would say `python3` is missing).
#[test]
fn a_missing_workspace_dir_is_named_in_the_refusal() {
    let env = TestEnv::new();
    let ws = env.home.join("no-such-workspace");
    let err = env.fail(
        2,
        &[
            "submit",
            "--workspace-dir",
            ws.to_str().unwrap(),
            "--",
            "true",
        ],
    );
    assert!(
        err.contains(&format!(
            "its working folder `{}` does not exist",
            ws.display()
        )),
        "{err}"
    );
}

#[test]
fn peak_memory_of_a_200_mb_job_is_reported_within_20_percent() {
    let env = TestEnv::new();
    let id = env.submit(&["python3", "-c", "b = b'x' * (200 * 1024 * 1024)"]);
    let s = env.wait(&id);
    assert_eq!(s["status"], "completed", "{s}");
    let peak = s["peak_memory_gb"].as_f64().unwrap();
    let expected = 200.0 / 1024.0;
    assert!(
        (peak - expected).abs() / expected < 0.2,
        "peak {peak} GB vs {expected} GB"
    );
}

#[test]
fn the_job_outlives_the_submitter_and_gets_a_minimal_environment() {
    let mut env = TestEnv::new();
    env.set("SECRET_TOKEN", "hunter2");
    let hostile = "a 'b' \"c\" $(touch /tmp/pwned) `id`; rm -rf / \n ünïcode";
    let out = env.expect(
        0,
        &[
            "submit",
            "--env-var",
            &format!("GREETING={hostile}"),
            "--",
            "sh",
            "-c",
            "sleep 1; printf '%s|%s|%s' \"$GREETING\" \"${SECRET_TOKEN-unset}\" \"$PATH\"",
        ],
    );
    let id = out.trim();
    assert_eq!(env.status(id)["status"], "running");
    assert_eq!(env.wait(id)["status"], "completed");
    let logs = String::from_utf8(env.run(&["logs", id]).stdout).unwrap();
    assert_eq!(
        logs,
        format!("{hostile}|unset|/usr/local/bin:/usr/bin:/bin")
    );
    assert!(!std::path::Path::new("/tmp/pwned").exists());
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let env = TestEnv::new();
    let id = env.submit(&["sh", "-c", "sleep 60 & sleep 60; wait"]);
    env.wait_until(&id, "running", |s| s["status"] == "running");
    let pgid = env.supervisor_record(&id)["job_pid"].as_i64().unwrap();
    // Both sleeps and the shell are in the job's group.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while group_members(pgid).len() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(group_members(pgid).len(), 3);

    env.expect(0, &["cancel", &id]);
    let s = env.status(&id);
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["native_state"], "CANCELLED");
    assert!(
        group_members(pgid).is_empty(),
        "left behind: {:?}",
        group_members(pgid)
    );
    // Cancelling a job that has ended is not an error.
    env.expect(0, &["cancel", &id]);
}

#[test]
fn a_killed_supervisor_means_failed_with_a_reason() {
    let env = TestEnv::new();
    let id = env.submit(&["sleep", "60"]);
    env.wait_until(&id, "running", |s| s["status"] == "running");
    let record = env.supervisor_record(&id);
    let supervisor = record["supervisor_pid"].as_i64().unwrap() as i32;
    let job = record["job_pid"].as_i64().unwrap();
    unsafe { libc::kill(supervisor, libc::SIGKILL) };

    let s = env.wait_until(&id, "lost", |s| s["status"] != "running");
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["native_state"], "LOST");
    assert!(s["reason"].as_str().unwrap().contains("supervisor"), "{s}");
    // The job died with its supervisor (PR_SET_PDEATHSIG), it is not left running.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !group_members(job).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(group_members(job).is_empty());
}

#[test]
fn time_hours_limits_the_job() {
    let env = TestEnv::new();
    // 1.8 s, rounded up to 2 s by the plugin.
    let id = env
        .expect(
            0,
            &["submit", "--time-hours", "0.0005", "--", "sleep", "30"],
        )
        .trim()
        .to_owned();
    let s = env.wait(&id);
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["native_state"], "TIMEOUT");
}

#[test]
fn status_of_many_ids_keeps_order_and_reports_unknown_ones() {
    let env = TestEnv::new();
    let a = env.submit(&["true"]);
    let b = env.submit(&["false"]);
    env.wait(&a);
    env.wait(&b);
    let unknown = uuid::Uuid::new_v4().to_string();
    let out = env.run(&["--output", "json", "status", &a, &unknown, &b, "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 4);
    assert_eq!(
        (v[0]["job_id"].as_str().unwrap(), &v[0]["status"]),
        (a.as_str(), &"completed".into())
    );
    assert_eq!(v[1]["error"]["kind"], "not-found");
    assert_eq!(
        (v[2]["job_id"].as_str().unwrap(), &v[2]["status"]),
        (b.as_str(), &"failed".into())
    );
    assert_eq!(v[3]["error"]["kind"], "not-found");
}

#[test]
fn bad_input_is_refused_with_exit_2() {
    let env = TestEnv::new();
    let spec = env.home.join("spec.json");
    std::fs::write(&spec, r#"{"execution_command": ["echo"], "bogus": 1}"#).unwrap();
    let err = env.fail(2, &["submit", "--spec", spec.to_str().unwrap()]);
    assert!(err.contains("unknown field `bogus`"), "{err}");
    let err = env.fail(2, &["submit", "--env-var", "NOEQUALS", "--", "true"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    env.fail(2, &["submit"]);
    env.fail(2, &["frobnicate"]);
    // Nothing was recorded by the refused submits.
    assert!(!env.state_dir().join("jobs").exists());
}

#[test]
fn a_json_spec_from_stdin() {
    let env = TestEnv::new();
    let mut child = std::process::Command::new(crate::common::BIN)
        .args(["--output", "json", "submit", "--spec", "-"])
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"execution_command": "echo $N-$M", "job_name": "spec", "environment_variables": {"N": 7, "M": "x"}}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(env.wait(&id)["status"], "completed");
    assert_eq!(
        String::from_utf8(env.run(&["logs", &id]).stdout).unwrap(),
        "7-x\n"
    );
}

#[test]
fn wait_timeout_exits_1() {
    let env = TestEnv::new();
    let id = env.submit(&["sleep", "30"]);
    let out = env.run(&["--output", "json", "wait", "--timeout", "0.3", &id]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "running");
    env.expect(0, &["cancel", &id]);
}

/// `sif_path` runs the command as `apptainer exec --bind <input_dir> --bind
/// <output_dir> --bind <workspace_dir> <sif> argv...`, as the seed's Local
/// backend does. Apptainer is not packaged for this machine, so a stand-in
/// script takes its place (through the `HPC_APPTAINER` setting): it records
/// its argv, then runs the command after the image path as apptainer would.
#[test]
fn sif_path_runs_the_command_under_apptainer_exec_with_binds() {
    let mut env = TestEnv::new();
    let dir = |name: &str| {
        let d = env.home.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d.display().to_string()
    };
    let (input, output, workspace, tools) = (dir("in"), dir("out"), dir("ws"), dir("tools"));
    let argv_file = format!("{tools}/argv");
    let stand_in = format!("{tools}/apptainer");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\n\
             printf '%s\\n' \"$@\" > '{argv_file}'\n\
             [ \"$1\" = exec ] || exit 97\n\
             shift\n\
             while [ \"$1\" = --bind ]; do shift 2; done\n\
             shift\n\
             exec \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CONFIG__HPC_APPTAINER",
        &stand_in,
    );

    let script = "printf '%s|%s|' \"$GREETING\" \"$APPTAINERENV_GREETING\"; pwd";
    let out = env.expect(
        0,
        &[
            "--output",
            "json",
            "submit",
            "--sif-path",
            "/images/app.sif",
            "--input-dir",
            &input,
            "--output-dir",
            &output,
            "--workspace-dir",
            &workspace,
            "--env-var",
            "GREETING=hi there",
            "--",
            "sh",
            "-c",
            script,
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = v["job_id"].as_str().unwrap().to_owned();
    let s = env.wait(&id);
    assert_eq!(s["status"], "completed", "{s}");

    let recorded = std::fs::read_to_string(&argv_file).unwrap();
    let expected = [
        "exec",
        "--bind",
        &input,
        "--bind",
        &output,
        "--bind",
        &workspace,
        "/images/app.sif",
        "sh",
        "-c",
        script,
    ]
    .map(|w| format!("{w}\n"))
    .concat();
    assert_eq!(recorded, expected);
    let logs = String::from_utf8(env.run(&["logs", &id]).stdout).unwrap();
    assert_eq!(logs, format!("hi there|hi there|{workspace}\n"));

    // A relative image path is refused before anything runs.
    std::fs::remove_file(&argv_file).unwrap();
    let err = env.fail(2, &["submit", "--sif-path", "app.sif", "--", "true"]);
    assert!(err.contains("`sif-path` must be an absolute path"), "{err}");
    assert!(!std::path::Path::new(&argv_file).exists());
}

// ---- the bound on running jobs (`max_running_jobs`; batches in batch.rs) ----

/// Kill a local job's supervisor with SIGKILL.
fn kill_supervisor(env: &TestEnv, id: &str) {
    let pid = env.supervisor_record(id)["supervisor_pid"]
        .as_i64()
        .unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

#[test]
fn jobs_waiting_for_a_slot_can_be_cancelled_and_never_start() {
    let mut env = TestEnv::new();
    env.max_running_jobs(1);
    let running = env.submit(&["sleep", "60"]);
    env.wait_until(&running, "running", |s| s["status"] == "running");
    // Each leaves a file if it ever runs.
    let ran = |name: &str| env.home.join(format!("{name}-ran"));
    let touch = |name: &str| {
        let path = ran(name).display().to_string();
        env.submit(&["touch", &path])
    };
    // `head` polls for the slot; `queued` and `last` sleep in the line.
    let (head, queued, last) = (touch("head"), touch("queued"), touch("last"));
    let s = env.status(&queued);
    assert_eq!(
        (s["status"].as_str(), s["native_state"].as_str()),
        (Some("pending"), Some("PENDING")),
        "{s}"
    );
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waiting for a free slot")),
        "{s}"
    );
    assert!(env.supervisor_record(&queued)["job_pid"].is_null());
    for id in [&queued, &head] {
        env.expect(0, &["cancel", id]);
        let s = env.status(id);
        assert_eq!(
            (s["status"].as_str(), s["native_state"].as_str()),
            (Some("failed"), Some("CANCELLED")),
            "{s}"
        );
        // Cancelling it again is no error.
        env.expect(0, &["cancel", id]);
    }
    // The cancelled ones left the line: the last starts once the slot is free.
    assert_eq!(env.status(&last)["status"], "pending");
    env.expect(0, &["cancel", &running]);
    assert_eq!(env.wait(&last)["status"], "completed");
    assert!(ran("last").exists());
    assert!(!ran("head").exists() && !ran("queued").exists());
}

#[test]
fn a_killed_supervisor_frees_its_slot_and_a_killed_waiter_is_lost() {
    let mut env = TestEnv::new();
    env.max_running_jobs(1);
    let first = env.submit(&["sleep", "60"]);
    env.wait_until(&first, "running", |s| s["status"] == "running");
    let waiter = env.submit(&["sleep", "60"]);
    let next = env.submit(&["sh", "-c", "echo ran"]);

    kill_supervisor(&env, &waiter);
    let s = env.wait_until(&waiter, "lost", |s| s["status"] != "pending");
    assert_eq!(
        (s["status"].as_str(), s["native_state"].as_str()),
        (Some("failed"), Some("LOST")),
        "{s}"
    );
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("waited for a free slot")),
        "{s}"
    );
    assert_eq!(env.status(&next)["status"], "pending");

    kill_supervisor(&env, &first);
    env.wait_until(&first, "lost", |s| s["status"] != "running");
    let s = env.wait(&next);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(
        String::from_utf8(env.run(&["logs", &next]).stdout).unwrap(),
        "ran\n"
    );
}

#[test]
fn a_command_that_cannot_start_fails_submit_even_when_it_would_wait() {
    let mut env = TestEnv::new();
    env.max_running_jobs(1);
    let running = env.submit(&["sleep", "60"]);
    env.wait_until(&running, "running", |s| s["status"] == "running");
    let err = env.fail(2, &["submit", "--", "/no/such/program"]);
    assert!(err.contains("cannot start `/no/such/program`"), "{err}");
    // Looked up in the job's PATH, as exec would.
    let err = env.fail(2, &["submit", "--", "no-such-program-3141"]);
    assert!(err.contains("cannot start `no-such-program-3141`"), "{err}");
    let ok = env.submit(&["sh", "-c", "exit 0"]);
    assert_eq!(env.status(&ok)["status"], "pending");
    env.expect(0, &["cancel", &running]);
    assert_eq!(env.wait(&ok)["status"], "completed");
}
