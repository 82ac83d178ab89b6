//! The conformance kit (`hpc-host plugins test`): the built-in backends pass
//! it against real processes, the real SLURM test cluster and the fake
//! Kubernetes API server, and each of its checks fails on a test plugin that
//! breaks that one promise (`tests/plugins/broken`, its breakage chosen by
//! its `BREAK` setting).

use crate::common::TestEnv;
use serde_json::Value;

/// Every check the kit has, by name (the report must list them all).
const CHECKS: &[&str] = &[
    "describe",
    "completes",
    "exit-code",
    "logs",
    "cancel-running",
    "cancel-ended",
    "unknown-id",
    "statuses-order",
    "time-limit",
    "keyed-submit",
    "monotone",
    "invalid-request",
    "submit-many",
];

/// Run the kit with JSON output; the exit code and the report.
fn kit(env: &TestEnv, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--output", "json", "plugins", "test"];
    all.extend_from_slice(args);
    let out = env.run(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn outcomes(report: &Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every check ran and passed (none skipped), and the exit code says so.
fn assert_all_pass(code: i32, report: &Value) {
    let got = outcomes(report);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, CHECKS, "{report:#}");
    assert!(got.iter().all(|(_, o)| o == "pass"), "{report:#}");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["passed"], true);
}

#[test]
fn kit_local_passes_with_table_json_and_junit() {
    let env = TestEnv::new();
    let junit = env.home.join("kit.xml");
    let (code, report) = kit(
        &env,
        &[
            "local",
            "--timeout",
            "30",
            "--junit",
            junit.to_str().unwrap(),
        ],
    );
    assert_all_pass(code, &report);
    assert_eq!(report["contract"], "ccat:hpc@0.3.0");
    // A short run: the slowest check waits for the 2 s time limit.
    let seconds = report["seconds"].as_f64().unwrap();
    assert!(seconds < 20.0, "the kit took {seconds} s");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("tests=\"13\" failures=\"0\" errors=\"0\" skipped=\"0\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<testcase ").count(), 13, "{xml}");
    // The table, for people: one line per check and the counts.
    let table = env.expect(0, &["plugins", "test", "local", "--check", "exit-code"]);
    assert!(
        table.starts_with("plugin `local` (ccat:hpc@0.3.0)\n"),
        "{table}"
    );
    assert!(table.contains("  pass  exit-code "), "{table}");
    assert!(
        table.ends_with("1 checks: 1 passed, 0 failed, 0 skipped")
            || table.contains("1 checks: 1 passed, 0 failed, 0 skipped ("),
        "{table}"
    );
    let err = env.fail(2, &["plugins", "test", "local", "--check", "no-such-check"]);
    assert!(err.contains("no check `no-such-check`"), "{err}");
}

#[test]
#[ignore = "needs slurm"]
fn kit_slurm_passes_on_the_test_cluster() {
    let _g = crate::slurm::lock();
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm");
    env.set("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug");
    // SLURM rounds the 2 s limit up to a minute and checks limits every 30
    // s; the test cluster is shared, so a job may wait in the queue a while.
    let (code, report) = kit(&env, &["slurm", "--timeout", "600"]);
    assert_all_pass(code, &report);
}

#[test]
fn kit_kubernetes_passes_against_the_fake_api_server() {
    let t = crate::kube_fake::scenario::Target::fake(crate::kube_fake::Options::default());
    let (code, report) = kit(
        &t.env,
        &["kubernetes", "--image-ref", &t.image, "--timeout", "30"],
    );
    assert_all_pass(code, &report);
}

/// The broken plugin installed, breaking `mode` ("" breaks nothing).
fn broken_env(mode: &str) -> TestEnv {
    let mut env = TestEnv::new();
    env.install_plugin("broken", "broken");
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__BROKEN__SUPERVISE", "true");
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__BROKEN__CONFIG",
        &format!("{{ BREAK = \"{mode}\" }}"),
    );
    env
}

#[test]
fn kit_passes_the_broken_plugin_when_nothing_is_broken() {
    let env = broken_env("");
    let (code, report) = kit(&env, &["broken", "--timeout", "20"]);
    assert_all_pass(code, &report);
}

#[test]
fn kit_fails_each_check_on_a_plugin_that_breaks_its_promise() {
    // (BREAK, the check that must fail)
    let cases: &[(&str, &str)] = &[
        ("describe-lies", "describe"),
        ("no-metrics", "completes"),
        ("exit-code-lost", "exit-code"),
        ("no-stderr", "logs"),
        ("cancel-noop", "cancel-running"),
        ("cancel-ended-errors", "cancel-ended"),
        ("unknown-traps", "unknown-id"),
        ("statuses-reversed", "statuses-order"),
        ("no-time-limit", "time-limit"),
        ("find-none", "keyed-submit"),
        ("backwards", "monotone"),
        ("invalid-internal", "invalid-request"),
        ("many-reversed", "submit-many"),
    ];
    // Every check has its broken plugin.
    let mut covered: Vec<&str> = cases.iter().map(|(_, c)| *c).collect();
    covered.sort();
    let mut all = CHECKS.to_vec();
    all.sort();
    assert_eq!(covered, all);
    // Four at a time: each run waits on real jobs, mostly asleep.
    for chunk in cases.chunks(4) {
        let runs: Vec<_> = chunk
            .iter()
            .map(|&(mode, check)| {
                std::thread::spawn(move || {
                    let env = broken_env(mode);
                    let (code, report) = kit(&env, &["broken", "--timeout", "8", "--check", check]);
                    (mode, check, code, report)
                })
            })
            .collect();
        for r in runs {
            let (mode, check, code, report) = r.join().unwrap();
            assert_eq!(
                outcomes(&report),
                [(check.to_owned(), "fail".to_owned())],
                "BREAK={mode}: {report:#}"
            );
            assert_eq!(code, 1, "BREAK={mode}: {report:#}");
            let message = report["checks"][0]["message"].as_str().unwrap();
            assert!(!message.is_empty(), "BREAK={mode}: {report:#}");
        }
    }
}

#[test]
fn kit_skips_only_what_the_plugin_says_it_cannot_do() {
    // A 0.1.0 plugin has no `find-job`: the keyed-submit check is skipped
    // with the reason, and a skip is not a failure.
    let env = TestEnv::new();
    env.install_plugin("contract-0-1", "old");
    let (code, report) = kit(
        &env,
        &["old", "--check", "keyed-submit", "--check", "submit-many"],
    );
    assert_eq!(
        outcomes(&report),
        [
            ("keyed-submit".to_owned(), "skip".to_owned()),
            ("submit-many".to_owned(), "skip".to_owned())
        ]
    );
    for c in 0..2 {
        let why = report["checks"][c]["message"].as_str().unwrap();
        assert!(why.contains("ccat:hpc@0.1.0"), "{why}");
    }
    assert_eq!(code, 0, "{report:#}");
    // By file as well as by name; the table says why.
    let file = env.plugins_dir().join("old.wasm");
    let table = env.expect(
        0,
        &["plugins", "test", file.to_str().unwrap(), "--check", "keyed-submit"],
    );
    assert!(table.contains("  skip  keyed-submit"), "{table}");
    assert!(table.contains("has no `find-job`"), "{table}");
}
