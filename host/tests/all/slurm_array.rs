//! `submit --spec` with a batch on the real SLURM test cluster: specs of one
//! shape become one job array (`sbatch --array`), each element a job of its
//! own (`12345_7`). The ledger and the plugin's records are in the shared
//! Redis; `sbatch` calls are counted by wrapper programs.

use crate::common::TestEnv;
use serde_json::{Value, json};
use std::process::{Child, Command};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

const REDIS: &str = "redis://127.0.0.1:6379/0";

/// A test's start: the cluster to itself, and SLURM with the shared Redis.
fn array_env() -> (MutexGuard<'static, ()>, TestEnv) {
    let (g, mut env) = crate::slurm::on_cluster();
    env.use_redis(REDIS);
    (g, env)
}

/// Use `sbatch` (a path) and count-wrapped squeue/sacct.
fn with_programs(env: &mut TestEnv, sbatch: &str) {
    env.use_slurm_programs(sbatch, &["squeue", "sacct"]);
}

/// [`array_env`] with every scheduler command counting its calls.
fn counted_array_env() -> (MutexGuard<'static, ()>, TestEnv) {
    let (g, mut env) = array_env();
    let sbatch = env.sbatch_wrapper("sbatch-counting", "", "");
    with_programs(&mut env, &sbatch);
    (g, env)
}

/// A spec that prints `word` (through the environment) and `extra` resources.
fn spec(word: &str, key: Option<&str>, resources: Value) -> Value {
    let mut rr = json!({"cpu": 1, "memory_gb": 0.1});
    rr.as_object_mut()
        .unwrap()
        .extend(resources.as_object().unwrap().clone());
    let mut s = json!({
        "execution_command": ["sh", "-c", "printf '%s\\n' \"$WORD\""],
        "environment_variables": {"WORD": word},
        "job_name": format!("arr-{word}"),
        "resource_requirements": rr,
    });
    if let Some(k) = key {
        s["idempotency_key"] = json!(k);
    }
    s
}

/// `specs` in a batch file: its path.
fn batch_file(env: &TestEnv, specs: &[Value]) -> String {
    let file = env.home.join("batch.json");
    std::fs::write(&file, Value::Array(specs.to_vec()).to_string()).unwrap();
    file.display().to_string()
}

/// Submit a batch file; the JSON answer (a list) and the exit code.
fn submit_batch(env: &TestEnv, specs: &[Value]) -> (Vec<Value>, Option<i32>) {
    let file = batch_file(env, specs);
    let out = env.run(&["--output", "json", "submit", "--spec", &file]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (v.as_array().unwrap().clone(), out.status.code())
}

fn job_ids(answers: &[Value]) -> Vec<String> {
    answers
        .iter()
        .map(|a| {
            a["job_id"]
                .as_str()
                .unwrap_or_else(|| panic!("{a}"))
                .to_owned()
        })
        .collect()
}

fn array_of(id: &str) -> &str {
    id.split_once('_')
        .unwrap_or_else(|| panic!("`{id}` is no array element"))
        .0
}

fn wait_all(env: &TestEnv, ids: &[String]) -> Vec<Value> {
    let mut args = vec!["--output", "json", "wait", "--timeout", "600"];
    args.extend(ids.iter().map(String::as_str));
    let v: Value = serde_json::from_str(&env.expect(0, &args)).unwrap();
    v.as_array().unwrap().clone()
}

fn logs(env: &TestEnv, id: &str) -> String {
    String::from_utf8(env.expect(0, &["logs", id]).into_bytes()).unwrap()
}

/// Cancel what a test leaves, by id.
fn cancel(ids: &[&str]) {
    if !ids.is_empty() {
        let _ = Command::new("scancel").args(ids).status();
    }
}

#[test]
#[ignore = "needs slurm and redis"]
fn slurm_200_specs_of_one_shape_are_one_array_per_element_logs_and_cancel() {
    let (_g, env) = counted_array_env();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let specs: Vec<Value> = (0..200)
        .map(|i| {
            spec(
                &i.to_string(),
                Some(&format!("arr200-{run}/{i}")),
                json!({}),
            )
        })
        .collect();
    let t = Instant::now();
    let (answers, code) = submit_batch(&env, &specs);
    let took = t.elapsed();
    assert_eq!(code, Some(0), "{answers:?}");
    let ids = job_ids(&answers);
    assert!(
        env.calls("sbatch") <= 5,
        "{} sbatch calls",
        env.calls("sbatch")
    );
    assert_eq!(env.calls("sbatch"), 1, "one shape, one array");
    let array = array_of(&ids[0]).to_owned();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(id, &format!("{array}_{i}"));
    }
    eprintln!("200 specs: one sbatch, {took:?}");

    let done = wait_all(&env, &ids);
    assert_eq!(done.len(), 200);
    for (s, id) in done.iter().zip(&ids) {
        assert_eq!(s["job_id"].as_str(), Some(id.as_str()));
        assert_eq!(s["status"], "completed", "{s}");
    }
    for i in [0, 7, 199] {
        assert_eq!(logs(&env, &ids[i]), format!("{i}\n"));
    }

    // The same keyed batch again: the same ids, no sbatch.
    let (again, code) = submit_batch(&env, &specs);
    assert_eq!(code, Some(0));
    assert_eq!(job_ids(&again), ids);
    assert_eq!(env.calls("sbatch"), 1);

    // Cancel one element of a running array; the others go on.
    let sleepers: Vec<Value> = (0..3)
        .map(|i| {
            let mut s = spec(&i.to_string(), None, json!({}));
            s["execution_command"] = json!(["sleep", "300"]);
            s
        })
        .collect();
    let (answers, code) = submit_batch(&env, &sleepers);
    assert_eq!(code, Some(0));
    let sl = job_ids(&answers);
    let sl_array = array_of(&sl[0]).to_owned();
    assert_eq!(env.calls("sbatch"), 2);
    env.wait_until(&sl[1], "running", |s| s["status"] == "running");
    env.expect(0, &["cancel", &sl[1]]);
    let s = env.wait(&sl[1]);
    assert_eq!(
        (s["status"].as_str(), s["native_state"].as_str()),
        (Some("failed"), Some("CANCELLED")),
        "{s}"
    );
    for id in [&sl[0], &sl[2]] {
        let s = env.status(id);
        assert!(
            ["pending", "running"].contains(&s["status"].as_str().unwrap()),
            "{s}"
        );
    }
    env.expect(0, &["cancel", &sl[0], &sl[2]]);
    for id in [&sl[0], &sl[2]] {
        assert_eq!(env.wait(id)["native_state"], "CANCELLED");
    }
    cancel(&[&sl_array]);
}

#[test]
#[ignore = "needs slurm and redis"]
fn slurm_mixed_shapes_group_and_an_invalid_spec_fails_alone() {
    let (_g, env) = counted_array_env();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let shapes = [
        json!({}),
        json!({"memory_gb": 0.2}),
        json!({"comment": format!("mixed {run}")}),
    ];
    // Interleaved: shape i % 3, and one invalid spec in the middle.
    let mut specs: Vec<Value> = (0..9)
        .map(|i| {
            spec(
                &i.to_string(),
                Some(&format!("mixed-{run}/{i}")),
                shapes[i % 3].clone(),
            )
        })
        .collect();
    let mut bad = spec("bad", Some(&format!("mixed-{run}/bad")), json!({}));
    bad["environment_variables"] = json!({"NOT A NAME": "x"});
    specs.insert(4, bad);
    let (answers, code) = submit_batch(&env, &specs);
    assert_eq!(code, Some(2), "an invalid-request element: {answers:?}");
    assert_eq!(answers[4]["job_id"], Value::Null);
    assert_eq!(
        answers[4]["error"]["kind"], "invalid-request",
        "{}",
        answers[4]
    );
    assert_eq!(env.calls("sbatch"), 3, "one array per shape");
    let ids: Vec<String> = answers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 4)
        .map(|(_, a)| a["job_id"].as_str().unwrap().to_owned())
        .collect();
    // Element i is shape i % 3, task i / 3 of its array.
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(id, &format!("{}_{}", array_of(&ids[i % 3]), i / 3));
    }
    let arrays: std::collections::BTreeSet<&str> = ids.iter().map(|id| array_of(id)).collect();
    assert_eq!(arrays.len(), 3);
    for (s, id) in wait_all(&env, &ids).iter().zip(&ids) {
        assert_eq!(s["status"], "completed", "{s}");
        let i: usize = ids.iter().position(|x| x == id).unwrap();
        assert_eq!(logs(&env, id), format!("{i}\n"));
    }
    // The invalid spec can be fixed and submitted with its key.
    let (again, _) = submit_batch(&env, &specs);
    assert_eq!(
        again
            .iter()
            .filter_map(|a| a["job_id"].as_str())
            .collect::<Vec<_>>(),
        ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(env.calls("sbatch"), 3);
}

/// The jobs (array elements one per line, `squeue -r`) this user's cluster
/// holds under job name `name`.
fn jobs_named(name: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["--me", "-r", "-h", "-t", "all", "-n", name, "-o", "%i"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    ids.sort();
    ids
}

fn spawn_batch(env: &TestEnv, specs: &[Value]) -> Child {
    let file = batch_file(env, specs);
    env.spawn(&["--output", "json", "submit", "--spec", &file])
}

/// A batch submit SIGKILLed after sbatch made the array (the wrapper waits
/// after it), and one killed before sbatch ran (the wrapper waits before
/// it, and dies with the submitter): retried with the same keys, each job
/// exists exactly once.
#[test]
#[ignore = "needs slurm and redis"]
fn slurm_a_killed_batch_submit_retried_makes_each_job_once() {
    let (_g, mut env) = array_env();
    env.expect(0, &["plugins", "compile", "slurm"]);
    let run = uuid::Uuid::new_v4().simple().to_string();
    // One job name per batch, so the cluster's jobs of each can be counted.
    let batch = |tag: &str| -> Vec<Value> {
        (0..10)
            .map(|i| {
                let mut s = spec(&i.to_string(), Some(&format!("{tag}-{run}/{i}")), json!({}));
                s["job_name"] = json!(format!("{tag}-{run}"));
                s
            })
            .collect()
    };
    let sorted = |ids: &[String]| {
        let mut v = ids.to_vec();
        v.sort();
        v
    };

    // After sbatch: the array exists, no id was recorded.
    let marker = env.home.join("sbatch.done");
    let late = env.sbatch_wrapper(
        "sbatch-then-wait",
        "",
        &format!("echo done > '{}'\nsleep 60", marker.display()),
    );
    with_programs(&mut env, &late);
    let specs = batch("late");
    let mut child = spawn_batch(&env, &specs);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "sbatch never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert_eq!(env.calls("sbatch"), 1);
    let t = Instant::now();
    let (answers, code) = submit_batch(&env, &specs);
    assert_eq!(code, Some(0), "{answers:?}");
    let ids = job_ids(&answers);
    assert_eq!(env.calls("sbatch"), 1, "the retry found the array");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let array = array_of(&ids[0]).to_owned();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(id, &format!("{array}_{i}"));
    }
    assert_eq!(jobs_named(&format!("late-{run}")), sorted(&ids));
    for s in wait_all(&env, &ids) {
        assert_eq!(s["status"], "completed", "{s}");
    }

    // Before sbatch: the wrapper is killed with the submitter; no array.
    let early = env.sbatch_wrapper("wait-then-sbatch", "sleep 3", "");
    with_programs(&mut env, &early);
    let specs = batch("early");
    let before = env.calls("sbatch");
    let mut child = spawn_batch(&env, &specs);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.calls("sbatch") == before {
        assert!(Instant::now() < deadline, "sbatch never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    std::thread::sleep(Duration::from_secs(4));
    let plain = env.sbatch_wrapper("sbatch-counting", "", "");
    with_programs(&mut env, &plain);
    let (answers, code) = submit_batch(&env, &specs);
    assert_eq!(code, Some(0), "{answers:?}");
    let ids = job_ids(&answers);
    // The ledger settles each key of a dead submitter's claim on its own and
    // makes the ones not found one `submit` each: jobs, not one array.
    let made = env.calls("sbatch");
    assert!(made > before + 1, "the retry made the jobs");
    assert_eq!(jobs_named(&format!("early-{run}")), sorted(&ids));
    let (again, _) = submit_batch(&env, &specs);
    assert_eq!(job_ids(&again), ids);
    assert_eq!(env.calls("sbatch"), made);
    for s in wait_all(&env, &ids) {
        assert_eq!(s["status"], "completed", "{s}");
    }
}
