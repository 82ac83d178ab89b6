//! Batch submit (`submit --spec FILE` with a JSON array, `POST /v1/jobs`
//! with an array): one result per spec in order, each job its own; a refused
//! spec gets its own error and the rest are made; keys make a batch safe to
//! send again; plugins older than contract 0.3.0 get one `submit` each; a
//! plugin that answers a batch wrongly pairs no id with the wrong spec.
//! On the local backend (real processes); SLURM's job arrays are in `slurm.rs`.

use crate::common::TestEnv;
use crate::daemon::Served;
use serde_json::{Value, json};
use std::path::Path;

/// Write `specs` as a batch file; its path.
fn batch_file(env: &TestEnv, specs: &Value) -> String {
    let path = env
        .home
        .join(format!("batch-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, serde_json::to_vec(specs).unwrap()).unwrap();
    path.display().to_string()
}

/// `submit --spec` of `specs` on `backend` with `--output json`: the exit
/// code and the answer.
fn submit_json(env: &TestEnv, backend: &str, specs: &Value) -> (Option<i32>, Vec<Value>) {
    let file = batch_file(env, specs);
    let out = env.run(&[
        "--backend",
        backend,
        "--output",
        "json",
        "submit",
        "--spec",
        &file,
    ]);
    let answer = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (out.status.code(), answer)
}

fn spec(shell: &str) -> Value {
    json!({ "execution_command": ["/bin/sh", "-c", shell] })
}

fn keyed(shell: &str, key: &str) -> Value {
    json!({ "execution_command": ["/bin/sh", "-c", shell], "idempotency_key": key })
}

/// The local jobs made so far (one folder each; `.slots` is not a job's).
fn job_folders(env: &TestEnv) -> usize {
    std::fs::read_dir(env.state_dir().join("jobs/local"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.')
                })
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_batch_makes_each_job_once_in_order_and_refuses_only_the_bad_spec() {
    let env = TestEnv::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let specs = json!([
        spec("echo batch-0"),
        { "execution_command": [] },
        spec("echo batch-2; exit 3"),
        keyed("echo batch-3", &format!("{run}-3")),
        { "execution_command": ["true"], "idempotency_key": "bad key" },
        keyed("echo batch-5 >&2", &format!("{run}-5")),
    ]);
    let file = batch_file(&env, &specs);
    let out = env.run(&["--output", "json", "submit", "--spec", &file]);
    // The worst element decides the exit status: a refused spec is usage (2).
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let answer: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer.len(), 6, "{answer:?}");
    for bad in [1, 4] {
        assert!(answer[bad]["job_id"].is_null(), "{answer:?}");
        assert_eq!(
            answer[bad]["error"]["kind"], "invalid-request",
            "{answer:?}"
        );
        assert_eq!(answer[bad]["error"]["exit_code"], 2, "{answer:?}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: spec 1: invalid-request") && stderr.contains("error: spec 4:"),
        "{stderr}"
    );
    let ids: Vec<String> = [0, 2, 3, 5]
        .iter()
        .map(|&i| answer[i]["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(job_folders(&env), 4);
    // Each id is its own spec's job: its end and its own output.
    let want = [
        (0, "completed", 0, "batch-0\n", ""),
        (2, "failed", 3, "batch-2\n", ""),
        (3, "completed", 0, "batch-3\n", ""),
        (5, "completed", 0, "", "batch-5\n"),
    ];
    for (id, (i, status, code, stdout, stderr)) in ids.iter().zip(want) {
        let s = env.wait_until(id, "ended", |s| {
            s["status"] == "completed" || s["status"] == "failed"
        });
        assert_eq!(
            (s["status"].as_str(), s["exit_code"].as_i64()),
            (Some(status), Some(code)),
            "spec {i}: {s}"
        );
        let logs: Value =
            serde_json::from_str(&env.expect(0, &["--output", "json", "logs", id])).unwrap();
        assert_eq!(
            (logs["stdout"].as_str(), logs["stderr"].as_str()),
            (Some(stdout), Some(stderr)),
            "spec {i}"
        );
    }

    // The keyed specs again, in another batch and order: their first jobs, no new ones.
    let again = json!([
        keyed("echo batch-5 >&2", &format!("{run}-5")),
        keyed("echo batch-3", &format!("{run}-3"))
    ]);
    let text = env.expect(0, &["submit", "--spec", &batch_file(&env, &again)]);
    assert_eq!(text, format!("{}\n{}\n", ids[3], ids[2]));
    assert_eq!(job_folders(&env), 4);
    // Each key is found as one submit's would be.
    assert_eq!(
        env.expect(0, &["find", "--idempotency-key", &format!("{run}-5")]),
        format!("{}\n", ids[3])
    );
}

#[test]
fn text_output_keeps_one_line_per_spec() {
    let env = TestEnv::new();
    let specs = json!([spec("true"), { "execution_command": [] }, spec("true")]);
    let out = env.run(&["submit", "--spec", &batch_file(&env, &specs)]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text:?}");
    assert!(
        !lines[0].is_empty() && lines[1].is_empty() && !lines[2].is_empty(),
        "{text:?}"
    );
    assert_ne!(lines[0], lines[2]);
}

#[test]
fn a_batch_that_is_not_one_is_refused_whole_and_makes_nothing() {
    let env = TestEnv::new();
    let cases = [
        (json!([]), "1 to 10000"),
        (
            json!([keyed("true", "same"), keyed("true", "same")]),
            "idempotency key `same`",
        ),
    ];
    for (specs, says) in cases {
        let err = env.fail(2, &["submit", "--spec", &batch_file(&env, &specs)]);
        assert!(err.contains(says), "{err}");
    }
    // Not JSON at all, and a key given for a whole batch.
    let path = env.home.join("broken.json");
    std::fs::write(&path, b"[{\"execution_command\": [\"true\"]},").unwrap();
    let err = env.fail(2, &["submit", "--spec", path.to_str().unwrap()]);
    assert!(err.contains("invalid batch of job specs"), "{err}");
    let file = batch_file(&env, &json!([spec("true")]));
    let err = env.fail(2, &["submit", "--idempotency-key", "k", "--spec", &file]);
    assert!(err.contains("each spec its own"), "{err}");
    assert_eq!(job_folders(&env), 0);
}

#[test]
fn a_batch_through_the_daemon_answers_the_same_bytes() {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    let run = uuid::Uuid::new_v4().simple().to_string();
    let specs = json!([
        keyed("true", &format!("{run}-a")),
        { "execution_command": ["true"], "environment_variables": { "BAD\u{1b}]52;c;x\u{7}": "v" } },
        keyed("true", &format!("{run}-b")),
    ]);
    let file = batch_file(&env, &specs);
    let mut outputs = Vec::new();
    for (mode, output) in [
        ("never", "text"),
        ("never", "json"),
        ("require", "text"),
        ("require", "json"),
    ] {
        env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", mode);
        let served = (mode == "require").then(|| Served::start(&env));
        let out = env.run(&["--output", output, "submit", "--spec", &file]);
        drop(served);
        assert_eq!(out.status.code(), Some(2), "{mode} {output}: {out:?}");
        outputs.push((out.stdout, out.stderr));
    }
    // In-process and through the daemon: the same ids (the keys), the same
    // bytes on stdout and stderr, and no control character from the spec.
    assert_eq!(outputs[0], outputs[2]);
    assert_eq!(outputs[1], outputs[3]);
    for (stdout, stderr) in &outputs {
        assert!(!stdout.contains(&0x1b) && !stderr.contains(&0x1b));
    }
    assert_eq!(job_folders(&env), 2);
}

#[test]
fn the_daemon_tracks_a_batch_and_answers_it_over_http() {
    let env = TestEnv::new();
    let served = Served::start(&env);
    let body = serde_json::to_vec(&json!([spec("sleep 1"), spec("exit 4")])).unwrap();
    let (code, v) = served.http("POST", "/v1/jobs", Some(&body));
    assert_eq!(code, 200, "{v}");
    let ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap().to_owned())
        .collect();
    let wait = serde_json::to_vec(&json!({ "job_ids": ids, "timeout": 60 })).unwrap();
    let (code, v) = served.http("POST", "/v1/jobs/wait", Some(&wait));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["jobs"][0]["status"], "completed", "{v}");
    assert_eq!(
        (
            v["jobs"][1]["status"].as_str(),
            v["jobs"][1]["exit_code"].as_i64()
        ),
        (Some("failed"), Some(4)),
        "{v}"
    );
    // One spec, as before: an object answers 201 with its id.
    let (code, v) = served.http(
        "POST",
        "/v1/jobs",
        Some(&serde_json::to_vec(&spec("true")).unwrap()),
    );
    assert_eq!(code, 201, "{v}");
    assert!(v["job_id"].is_string(), "{v}");
}

#[test]
fn a_plugin_of_an_older_contract_gets_one_submit_per_spec() {
    let env = TestEnv::new();
    env.install_plugin("contract-0-1", "old");
    let specs = json!([spec("true"), spec("true"), { "execution_command": [] }]);
    let (_, answer) = submit_json(&env, "old", &specs);
    assert_eq!(answer.len(), 3, "{answer:?}");
    assert!(
        answer[0]["job_id"].is_string() && answer[1]["job_id"].is_string(),
        "{answer:?}"
    );
    assert_ne!(answer[0]["job_id"], answer[1]["job_id"]);
    assert!(answer[2]["error"].is_object(), "{answer:?}");
}

#[test]
fn a_plugin_that_answers_a_batch_short_pairs_no_id_with_a_spec() {
    let (env, _, _) = crate::hostile::hostile_env();
    let specs = json!([
        { "execution_command": ["true"], "job_name": "short-batch" },
        { "execution_command": ["true"], "job_name": "short-batch" },
    ]);
    let (code, answer) = submit_json(&env, "hostile", &specs);
    assert_eq!(answer.len(), 2, "{answer:?}");
    for a in &answer {
        assert!(a["job_id"].is_null(), "{answer:?}");
        assert_eq!(a["error"]["kind"], "plugin-error", "{answer:?}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .contains("answered 1 results for 2 specs"),
            "{answer:?}"
        );
    }
    assert_eq!(code, Some(3));
}

// ---- the bound on running jobs (`max_running_jobs`) ----

/// A job that sleeps 1 s and records when it started and ended (Unix
/// seconds) in `<dir>/<i>.start` and `<dir>/<i>.end`.
fn timed(dir: &Path, i: usize) -> Value {
    let d = dir.display();
    spec(&format!(
        "date +%s.%N > {d}/{i}.start; sleep 1; date +%s.%N > {d}/{i}.end"
    ))
}

/// The most of `spans` (start, end) that overlap at any time.
fn most_at_once(spans: &[(f64, f64)]) -> usize {
    let mut edges: Vec<(f64, i32)> = spans
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // At one instant an end comes before a start: they do not overlap.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// Six 1 s jobs in one batch under a bound of 2: while the first run, the
/// others are `pending` saying why; all six complete; never more than two
/// ran at once (by the times the jobs themselves wrote), and they started
/// in the order submitted.
fn six_jobs_run_two_at_a_time(env: &TestEnv) {
    let times = env.home.join("times");
    std::fs::create_dir_all(&times).unwrap();
    let specs = Value::Array((0..6).map(|i| timed(&times, i)).collect());
    let out = env.expect(
        0,
        &[
            "--output",
            "json",
            "submit",
            "--spec",
            &batch_file(env, &specs),
        ],
    );
    let answer: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = answer
        .iter()
        .map(|a| a["job_id"].as_str().unwrap())
        .collect();

    // While the first two run, the others are pending and say why. (Through
    // the daemon a job it has not polled yet is pending too, as `submitted`.)
    let mut args = vec!["--output", "json", "status"];
    args.extend(&ids);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now: Vec<Value> = serde_json::from_str(&env.expect(0, &args)).unwrap();
        let waiting: Vec<&Value> = now
            .iter()
            .filter(|s| s["native_state"] == "PENDING")
            .collect();
        for w in &waiting {
            assert!(
                w["status"] == "pending"
                    && w["reason"].as_str().is_some_and(|r| {
                        r.contains("waiting for a free slot") && r.contains("max_running_jobs")
                    }),
                "{w}"
            );
        }
        // The third wave cannot start within 2 s.
        if waiting.len() >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let mut args = vec!["--output", "json", "wait", "--timeout", "60"];
    args.extend(&ids);
    let ended: Vec<Value> = serde_json::from_str(&env.expect(0, &args)).unwrap();
    for s in &ended {
        assert_eq!(
            (s["status"].as_str(), s["exit_code"].as_i64()),
            (Some("completed"), Some(0)),
            "{s}"
        );
    }
    let read = |i: usize, what: &str| -> f64 {
        let text = std::fs::read_to_string(times.join(format!("{i}.{what}"))).unwrap();
        text.trim().parse().unwrap()
    };
    let spans: Vec<(f64, f64)> = (0..6).map(|i| (read(i, "start"), read(i, "end"))).collect();
    assert_eq!(most_at_once(&spans), 2, "{spans:?}");
    // In the order submitted: a later job never started before an earlier
    // one, but for the jitter of starting a shell in two slots at once.
    for later in 0..6 {
        for earlier in 0..later {
            assert!(
                spans[later].0 > spans[earlier].0 - 0.05,
                "job {later} started before job {earlier}: {spans:?}"
            );
        }
    }
}

#[test]
fn a_bound_of_two_runs_a_batch_of_six_two_at_a_time() {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    env.max_running_jobs(2);
    six_jobs_run_two_at_a_time(&env);
}

#[test]
fn a_bound_of_two_holds_for_a_batch_through_the_daemon() {
    // The daemon forks supervisors from its zygote instead of exec'ing them.
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "require");
    env.max_running_jobs(2);
    let _served = Served::start(&env);
    six_jobs_run_two_at_a_time(&env);
}

#[test]
fn the_bound_is_shared_by_every_process_that_starts_jobs() {
    // A job started by the daemon holds the only slot: a job submitted
    // in-process by a CLI waits for it, and starts when it ends.
    let mut env = TestEnv::new();
    env.max_running_jobs(1);
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "require");
    let served = Served::start(&env);
    let first = env.submit(&["sleep", "60"]);
    env.wait_until(&first, "running", |s| s["status"] == "running");
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    let second = env.submit(&["true"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(env.status(&second)["status"], "pending");
    env.expect(0, &["cancel", &first]);
    assert_eq!(env.wait(&second)["status"], "completed");
    drop(served);
}
