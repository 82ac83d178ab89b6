//! Exactly-once submit (`--idempotency-key`) and a store that comes back
//! empty, against real processes, the real SLURM cluster, Redis and the
//! Kubernetes fake.
//!
//! The crash loop: N submits with distinct keys, each killed with SIGKILL at
//! a random moment, then each retried once with its key. Every retry must
//! get an id, the ids must be N distinct jobs, every id a killed submit
//! printed must be its retry's, and the scheduler must hold exactly N jobs
//! with these keys: no orphans, no duplicates.

use crate::common::TestEnv;
use crate::redis_store::OwnRedis;
use crate::slurm::on_cluster;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// `hpc-host --output json submit --idempotency-key KEY [flags] -- argv`, started.
fn spawn_keyed(env: &TestEnv, key: &str, flags: &[&str], argv: &[&str]) -> Child {
    let submit = ["--output", "json", "submit", "--idempotency-key", key];
    env.spawn(&[&submit[..], flags, &["--"], argv].concat())
}

/// The job id a finished submit printed, if any.
fn printed_id(child: Child) -> Option<String> {
    let out = child.wait_with_output().unwrap();
    let id = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["job_id"].as_str().map(str::to_owned));
    if id.is_none() {
        eprintln!(
            "a submit printed no id ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    id
}

/// Submit with a key and require an id.
fn keyed(env: &TestEnv, key: &str, flags: &[&str], argv: &[&str]) -> String {
    let out = spawn_keyed(env, key, flags, argv)
        .wait_with_output()
        .unwrap();
    assert!(
        out.status.success(),
        "submit with key {key}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["job_id"].as_str().unwrap().to_owned()
}

/// Four submits at once with one key: the one id they all print.
fn keyed_at_once(env: &TestEnv, key: &str, flags: &[&str], argv: &[&str]) -> String {
    let children: Vec<Child> = (0..4).map(|_| spawn_keyed(env, key, flags, argv)).collect();
    let ids: BTreeSet<String> = children
        .into_iter()
        .map(|c| printed_id(c).expect("every concurrent submit gets the id"))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids.into_iter().next().unwrap()
}

/// A pseudo-random delay in `0..max_ms` ms (a UUID's random bits).
fn random_ms(max_ms: u64) -> u64 {
    let b = uuid::Uuid::new_v4().as_u128();
    (b as u64) % max_ms
}

/// The crash loop; returns each key's id after its retry. Kills land
/// uniformly in `0..max_kill_ms`: set it near one submit's duration (about
/// 10 ms here for local and SLURM) so that they hit every phase of it.
fn crash_loop(
    env: &TestEnv,
    prefix: &str,
    n: usize,
    max_kill_ms: u64,
    flags: &[&str],
    argv: &[&str],
) -> HashMap<String, String> {
    let mut killed_printed = HashMap::new();
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let child = spawn_keyed(env, &key, flags, argv);
        std::thread::sleep(Duration::from_micros(random_ms(max_kill_ms * 1000)));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        if let Some(id) = printed_id(child) {
            killed_printed.insert(key, id);
        }
    }
    let mut ids = HashMap::new();
    for i in 0..n {
        let key = format!("{prefix}-{i}");
        let id = keyed(env, &key, flags, argv);
        if let Some(first) = killed_printed.get(&key) {
            assert_eq!(
                first, &id,
                "key {key}: the retry must return the id the killed submit printed"
            );
        }
        ids.insert(key, id);
    }
    let distinct: BTreeSet<&String> = ids.values().collect();
    assert_eq!(distinct.len(), n, "{ids:?}");
    eprintln!(
        "crash loop {prefix}: {} of {n} killed submits had printed an id",
        killed_printed.len()
    );
    ids
}

/// Folders of local jobs (one per job the supervisor started; `.slots` is
/// not a job's).
fn local_job_folders(env: &TestEnv) -> usize {
    std::fs::read_dir(env.state_dir().join("jobs/local"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn local_env() -> TestEnv {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "local");
    env
}

#[test]
fn local_crash_loop_makes_each_job_exactly_once() {
    let env = local_env();
    // Warm the compile cache, so kills land in every phase of a submit.
    env.expect(0, &["plugins", "compile", "local"]);
    let ids = crash_loop(&env, "crash-local", 16, 12, &[], &["true"]);
    assert_eq!(local_job_folders(&env), 16);
    for id in ids.values() {
        assert_eq!(env.wait(id)["status"], "completed");
    }
}

#[test]
fn local_same_key_at_once_is_one_job_and_an_old_key_is_its_old_job() {
    let env = local_env();
    env.expect(0, &["plugins", "compile", "local"]);
    let id = keyed_at_once(&env, "exec-together", &[], &["sh", "-c", "echo once"]);
    assert_eq!(env.wait(&id)["status"], "completed");
    // Long after it ended: the same id, no second job.
    assert_eq!(
        keyed(&env, "exec-together", &[], &["sh", "-c", "echo once"]),
        id
    );
    assert_eq!(local_job_folders(&env), 1);
    assert_eq!(
        String::from_utf8(env.run(&["logs", &id]).stdout).unwrap(),
        "once\n"
    );
    // Another key is another job.
    assert_ne!(keyed(&env, "exec-other", &[], &["true"]), id);
    assert_eq!(local_job_folders(&env), 2);
    // `find` answers without making anything.
    assert_eq!(
        env.expect(0, &["find", "--idempotency-key", "exec-together"])
            .trim(),
        id
    );
    let err = env.fail(3, &["find", "--idempotency-key", "exec-never"]);
    assert!(
        err.contains("not-found") && err.contains("exec-never"),
        "{err}"
    );
    assert_eq!(local_job_folders(&env), 2);
}

#[test]
fn keys_are_checked_and_a_spec_can_carry_one() {
    let env = local_env();
    for bad in ["", "a b", "$(id)", "x;y", &"k".repeat(201)] {
        let err = env.fail(2, &["submit", "--idempotency-key", bad, "--", "true"]);
        assert!(err.contains("idempotency key"), "{bad:?}: {err}");
    }
    let spec = env.home.join("spec.json");
    std::fs::write(
        &spec,
        r#"{"execution_command": ["true"], "idempotency_key": "from-spec-1"}"#,
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let v = env.json(&["submit", "--spec", spec]);
    let id = v["job_id"].as_str().unwrap();
    assert_eq!(keyed(&env, "from-spec-1", &[], &["true"]), id);
    let err = env.fail(2, &["submit", "--spec", spec, "--idempotency-key", "other"]);
    assert!(err.contains("differ"), "{err}");
    assert_eq!(local_job_folders(&env), 1);
}

#[test]
fn a_plugin_built_against_contract_0_1_loads_and_its_keys_still_dedupe() {
    let mut env = local_env();
    env.install_plugin("contract-0-1", "old");
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "old");
    let plain = env.submit(&["true"]);
    assert_eq!(env.status(&plain)["status"], "completed");
    let a = keyed(&env, "exec-old-1", &[], &["true"]);
    assert_eq!(keyed(&env, "exec-old-1", &[], &["true"]), a);
    assert_ne!(a, plain);
    // Two jobs made in all: the repeated key made none.
    assert_eq!(a, "v01-2");
    let v = env.inspect(&env.plugins_dir().join("old.wasm"));
    assert_eq!(v["contract"], "0.1.0", "{v}");
}

// ---- SLURM ----

/// What each SLURM job here asks for: little enough for the test cluster.
const SMALL_JOB: [&str; 4] = ["--cpu", "1", "--memory-gb", "0.1"];

/// [`on_cluster`] with the SLURM plugin compiled, so that a submit's time
/// (which the kills aim at) is the submit's alone.
fn on_cluster_compiled() -> (MutexGuard<'static, ()>, TestEnv) {
    let (g, env) = on_cluster();
    env.expect(0, &["plugins", "compile", "slurm"]);
    (g, env)
}

/// Jobs the cluster holds whose comment carries a key starting with `prefix`.
fn slurm_jobs_with_keys(prefix: &str) -> Vec<(String, String)> {
    let out = Command::new("squeue")
        .args(["--me", "-h", "-t", "all", "-o", "%i|%k"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (id, comment) = l.split_once('|')?;
            let key = comment.rsplit(' ').next()?.strip_prefix("hpc-host-key=")?;
            key.starts_with(prefix)
                .then(|| (id.to_owned(), key.to_owned()))
        })
        .collect()
}

#[test]
#[ignore = "needs slurm"]
fn slurm_crash_loop_makes_each_job_exactly_once() {
    let (_g, env) = on_cluster_compiled();
    let prefix = format!("crash-slurm-{}", uuid::Uuid::new_v4().simple());
    let ids = crash_loop(&env, &prefix, 16, 16, &SMALL_JOB, &["/bin/true"]);
    let jobs = slurm_jobs_with_keys(&prefix);
    assert_eq!(
        jobs.len(),
        16,
        "exactly one job per key, no orphans: {jobs:?}"
    );
    for (id, key) in &jobs {
        assert_eq!(ids.get(key), Some(id), "job {id} of key {key}");
    }
}

/// The two sides of the crash window, made wide on purpose: a submitter
/// killed after sbatch made the job but before it could record the id (the
/// retry finds the job by its key), and one killed before sbatch ran (its
/// sbatch dies with it, and the retry makes the job).
#[test]
#[ignore = "needs slurm"]
fn slurm_a_submitter_killed_on_either_side_of_sbatch_leaves_one_job() {
    let (_g, mut env) = on_cluster_compiled();
    let tag = uuid::Uuid::new_v4().simple().to_string();

    // After: sbatch has made the job; the wrapper then waits.
    let late = format!("late-{tag}");
    let wrapper = env.sbatch_wrapper("sbatch-then-wait", "", "exec sleep 30");
    env.use_slurm_programs(&wrapper, &[]);
    let child = spawn_keyed(&env, &late, &SMALL_JOB, &["/bin/true"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while slurm_jobs_with_keys(&late).is_empty() {
        assert!(Instant::now() < deadline, "the job never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(printed_id(child), None);
    let made = slurm_jobs_with_keys(&late);
    // `find` settles the interrupted submit without making a job.
    let v = env.json(&["find", "--idempotency-key", &late]);
    assert_eq!(
        (v["state"].as_str(), v["job_id"].as_str()),
        (Some("made"), Some(made[0].0.as_str())),
        "{v}"
    );
    let started = Instant::now();
    // The retry must not run sbatch (which would wait 30 s): it finds the job.
    let id = keyed(&env, &late, &SMALL_JOB, &["/bin/true"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].0, id);

    // Before: killed while the wrapper waits to run sbatch. Its programs die
    // with it (PR_SET_PDEATHSIG), so no job appears later.
    let early = format!("early-{tag}");
    let wrapper = env.sbatch_wrapper("wait-then-sbatch", "sleep 2", "");
    env.use_slurm_programs(&wrapper, &[]);
    let child = spawn_keyed(&env, &early, &SMALL_JOB, &["/bin/true"]);
    std::thread::sleep(Duration::from_millis(700));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    assert_eq!(printed_id(child), None);
    // Never made, and says so (the claim is cleared).
    let out = env.run(&["--output", "json", "find", "--idempotency-key", &early]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["job_id"].as_str()),
        (Some("never-made"), None),
        "{v}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-found"));
    env.use_slurm_programs("/usr/bin/sbatch", &[]);
    let id = keyed(&env, &early, &SMALL_JOB, &["/bin/true"]);
    std::thread::sleep(Duration::from_secs(3));
    let made = slurm_jobs_with_keys(&early);
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].0, id);
}

#[test]
#[ignore = "needs slurm"]
fn slurm_same_key_at_once_is_one_job_and_an_old_key_is_its_old_job() {
    let (_g, env) = on_cluster_compiled();
    let key = format!("together-{}", uuid::Uuid::new_v4().simple());
    let id = keyed_at_once(&env, &key, &SMALL_JOB, &["/bin/true"]);
    let s = env.json(&["wait", "--timeout", "120", &id]);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(keyed(&env, &key, &SMALL_JOB, &["/bin/true"]), id);
    assert_eq!(slurm_jobs_with_keys(&key).len(), 1);
}

// ---- Kubernetes (the fake API server) ----

#[test]
fn kube_a_keyed_submit_is_one_job_even_when_the_ledger_is_lost() {
    use crate::kube_fake::Options;
    use crate::kube_fake::scenario::Target;
    let t = Target::fake(Options::default());
    let a = t.submit(&["--idempotency-key", "exec-k8s-1"], &["true"]);
    assert_eq!(t.submit(&["--idempotency-key", "exec-k8s-1"], &["true"]), a);
    let job = t.job(&a).expect("the Job exists");
    assert_eq!(
        job["metadata"]["annotations"]["hpc-host/idempotency-key"],
        "exec-k8s-1"
    );
    // The ledger lost (a store that came back empty): a store that young
    // asks `find-job` before it submits, which finds the Job by its label.
    for f in ["store.sqlite3", "store.sqlite3-wal", "store.sqlite3-shm"] {
        let _ = std::fs::remove_file(t.env.state_dir().join(f));
    }
    assert_eq!(t.submit(&["--idempotency-key", "exec-k8s-1"], &["true"]), a);
    let b = t.submit(&["--idempotency-key", "exec-k8s-2"], &["true"]);
    assert_ne!(a, b);
    let fake = t.fake.as_ref().unwrap();
    let creates = |requests: &[String]| {
        requests
            .iter()
            .filter(|r| r.starts_with("POST") && r.contains("/jobs"))
            .count()
    };
    assert_eq!(creates(&fake.requests()), 2, "{:?}", fake.requests());
    // (Where the ledger does not ask, in a store older than a day, the Job's
    // name still holds: it comes from the key, so the API server refuses a
    // second one and the plugin answers with the first; the plugin's unit
    // test `a_keyed_submit_whose_job_exists_answers_it_and_never_takes_anothers`.)
}

#[test]
fn kube_crash_loop_makes_each_job_exactly_once() {
    use crate::kube_fake::Options;
    use crate::kube_fake::scenario::Target;
    let t = Target::fake(Options::default());
    t.env.expect(0, &["plugins", "compile", "kubernetes"]);
    let flags = ["--image-ref", t.image.as_str()];
    let ids = crash_loop(&t.env, "crash-k8s", 8, 25, &flags, &["true"]);
    for id in ids.values() {
        assert!(t.job(id).is_some(), "{id}");
    }
    // Exactly one Job per key in the API server.
    let all = t
        .api_get(&format!("/apis/batch/v1/namespaces/{}/jobs", t.ns))
        .unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 8, "{all}");
}

// ---- a store that comes back empty ----

/// A Redis of this test's own that starts empty after each restart, as the
/// store of `env`; `n` tells apart the port of each test that uses one.
fn volatile_redis(env: &mut TestEnv, n: u32) -> (OwnRedis, u16) {
    let port = 20000 + ((std::process::id() + n) % 20000) as u16;
    let dir = env.home.join("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let redis = OwnRedis::start_volatile(&dir, port);
    env.use_redis(&format!("redis://127.0.0.1:{port}/0"));
    (redis, port)
}

#[test]
#[ignore = "needs redis"]
fn local_jobs_outlive_a_redis_restarted_empty() {
    let mut env = local_env();
    let (mut redis, port) = volatile_redis(&mut env, 7);
    let a = env.submit(&["sh", "-c", "sleep 3; echo a-done"]);
    let b = env.submit(&["sh", "-c", "sleep 3; exit 4"]);
    assert_eq!(env.status(&a)["status"], "running");
    redis.stop();
    redis.restart();
    assert_eq!(
        crate::redis_store::redis_cli(port, &["dbsize"]).trim(),
        "0",
        "the restarted Redis is empty"
    );
    // Every job still answers, running...
    for id in [&a, &b] {
        assert_eq!(env.status(id)["status"], "running", "{id}");
    }
    // ... and with its end once it ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sa = loop {
        let s = env.status(&a);
        if s["status"] != "running" || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(sa["status"], "completed", "{sa}");
    let sb = env.wait(&b);
    assert_eq!(sb["status"], "failed", "{sb}");
    assert_eq!(sb["exit_code"], 4, "{sb}");
    assert_eq!(
        String::from_utf8(env.run(&["logs", &a]).stdout).unwrap(),
        "a-done\n"
    );
    // Indexed again: the records are back in Redis.
    let keys = crate::redis_store::redis_cli(port, &["--scan", "--pattern", "hpc-host:local:*"]);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    // A job that never existed is still not-found.
    let err = env.fail(3, &["status", "00000000-0000-4000-8000-000000000000"]);
    assert!(
        err.contains("not-found") || err.contains("no local job"),
        "{err}"
    );
}

#[test]
#[ignore = "needs slurm"]
fn slurm_a_key_holds_across_a_redis_restarted_empty() {
    let (_g, mut env) = on_cluster();
    let (mut redis, port) = volatile_redis(&mut env, 13);
    env.use_slurm_programs("/usr/bin/sbatch", &["squeue"]);
    let key = format!("lost-slurm-{}", uuid::Uuid::new_v4().simple());
    let submit = |key: &str| keyed(&env, key, &SMALL_JOB, &["/bin/true"]);
    // A store this machine has not used before is new: nobody is asked.
    let a = submit(&key);
    assert_eq!(env.calls("squeue"), 0, "a new store asks no scheduler");

    // The store comes back empty: the key's claim and id are gone.
    redis.stop();
    redis.restart();
    assert_eq!(crate::redis_store::redis_cli(port, &["dbsize"]).trim(), "0");
    assert_eq!(submit(&key), a, "the job made before the store was lost");
    let asked = env.calls("squeue");
    assert!(asked > 0, "the scheduler was asked first");
    assert_eq!(slurm_jobs_with_keys(&key).len(), 1, "no second job");
    // Recorded again: the next submit answers from the store.
    assert_eq!(submit(&key), a);
    assert_eq!(env.calls("squeue"), asked);
    // While the store recovers, a new key asks too (and makes its job).
    let b = submit(&format!("{key}-b"));
    assert_ne!(a, b);
    assert!(env.calls("squeue") > asked);

    // A day after the loss was noticed, nobody is asked any more.
    let births = env.state_dir().join("ledger-births.json");
    let mut seen: Value = serde_json::from_slice(&std::fs::read(&births).unwrap()).unwrap();
    for store in seen.as_object_mut().unwrap().values_mut() {
        let noticed = store["reborn"][0].as_f64().unwrap();
        store["reborn"][0] = (noticed - 2.0 * 86_400.0).into();
    }
    std::fs::write(&births, serde_json::to_vec(&seen).unwrap()).unwrap();
    let asked = env.calls("squeue");
    let c = submit(&format!("{key}-c"));
    assert!(c != a && c != b);
    assert_eq!(env.calls("squeue"), asked, "no find-job after the recovery");
}

// ---- through the daemon ----

#[test]
fn a_key_holds_across_the_daemon_its_http_api_and_the_cli_without_it() {
    use crate::daemon::Served;
    let mut env = local_env();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "require");
    let served = Served::start(&env);
    let id = keyed(&env, "exec-daemon-1", &[], &["true"]);
    assert_eq!(keyed(&env, "exec-daemon-1", &[], &["true"]), id);
    let body = br#"{"execution_command": ["true"], "idempotency_key": "exec-daemon-1"}"#;
    let (code, v) = served.http("POST", "/v1/jobs", Some(body));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["job_id"], id.as_str(), "{v}");
    let (code, v) = served.http("GET", "/v1/submissions/exec-daemon-1", None);
    assert_eq!(
        (code, v["state"].as_str(), v["job_id"].as_str()),
        (200, Some("made"), Some(id.as_str())),
        "{v}"
    );
    let (code, v) = served.http("GET", "/v1/submissions/exec-daemon-2", None);
    assert_eq!(
        (code, v["state"].as_str()),
        (200, Some("never-made")),
        "{v}"
    );
    // A replayed key does not make the daemon think its ended job pending.
    assert_eq!(env.wait(&id)["status"], "completed");
    let (_, v) = served.http("POST", "/v1/jobs", Some(body));
    assert_eq!(v["job_id"], id.as_str());
    assert_eq!(env.status(&id)["status"], "completed");
    // In-process, beside the daemon: the same ledger.
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    assert_eq!(keyed(&env, "exec-daemon-1", &[], &["true"]), id);
    assert_eq!(local_job_folders(&env), 1);
    // A bad key is the daemon's 400, with the CLI's error kind.
    let (code, v) = served.http(
        "POST",
        "/v1/jobs",
        Some(br#"{"execution_command": ["true"], "idempotency_key": "a b"}"#),
    );
    assert_eq!(code, 400, "{v}");
}
