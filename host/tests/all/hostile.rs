//! A hostile plugin attacks the host one way per call; each attack fails with
//! the error a site admin can act on, and the host answers the next call.

use crate::common::{TestEnv, block_on};
use hpc_host::HostError;
use hpc_host::runtime::bindings::BackendError;

pub fn hostile_env() -> (TestEnv, std::path::PathBuf, std::path::PathBuf) {
    let mut env = TestEnv::new();
    env.install_plugin("hostile", "hostile");
    let granted = env.home.join("granted");
    std::fs::create_dir_all(&granted).unwrap();
    let config = env.home.join("settings.toml");
    std::fs::write(&config, "[default]\nDB_PASSWORD = \"s3cret\"\n").unwrap();
    env.set("HPC_HOST_CONFIG", config.to_str().unwrap());
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__PROGRAMS",
        "{ ok = \"/bin/true\", sh = \"/bin/sh\" }",
    );
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__DIRS",
        &format!("[\"{}\"]", granted.display()),
    );
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__K8S_NAMESPACES",
        "[\"ccat\"]",
    );
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__K8S_KINDS",
        "[\"batch/Job\"]",
    );
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__CPU_SECONDS", "0.5");
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__MEMORY_MB", "64");
    (env, granted, config)
}

enum Expect {
    /// The plugin's call fails with `denied`, its message containing all of these.
    Denied(&'static [&'static str]),
    NotFound,
    /// The plugin is stopped (trap), the message containing one of these.
    Trap(&'static [&'static str]),
    /// The attack is a control: it must work.
    Works,
    /// The plugin's call fails with any backend error, its message containing all of these.
    Fails(&'static [&'static str]),
}

/// The message of `attack`'s failure names each of `needles`.
fn mentions_all(attack: &str, message: &str, needles: &[&str]) {
    for n in needles {
        assert!(message.contains(n), "{attack}: {message:?} lacks {n:?}");
    }
}

#[test]
fn every_attack_is_contained_and_the_host_answers_the_next_call() {
    let (env, granted, config) = hostile_env();
    // Another plugin's record, which the hostile one must not reach.
    let local_job = env.submit(&["true"]);
    env.wait(&local_job);

    let host = env.host("hostile");
    let plugin = host.backend().unwrap();
    let outside = std::env::temp_dir().join(format!("hostile-{}", uuid::Uuid::new_v4()));
    let escaped = granted.join("../escaped");
    let cases: Vec<(String, Expect)> = vec![
        ("read-passwd".into(), Expect::Denied(&["filesystem"])),
        (
            format!("read-file:{}", config.display()),
            Expect::Denied(&["filesystem"]),
        ),
        ("setting:DB_PASSWORD".into(), Expect::Works),
        (
            format!("write-file:{}", outside.display()),
            Expect::Denied(&["filesystem"]),
        ),
        (
            format!("write-file:{}", escaped.display()),
            Expect::Denied(&["filesystem"]),
        ),
        (
            format!("write-file:{}", granted.join("inside").display()),
            Expect::Works,
        ),
        (
            "run:bash".into(),
            Expect::Denied(&[
                "may not run `bash`",
                "plugins.hostile.programs",
                "granted: ok",
            ]),
        ),
        ("run:../ok".into(), Expect::Denied(&["may not run `../ok`"])),
        (
            "run:/bin/true".into(),
            Expect::Denied(&["may not run `/bin/true`"]),
        ),
        ("run:ok".into(), Expect::Works),
        ("env-preload:ok".into(), Expect::Denied(&["LD_PRELOAD"])),
        (
            "spawn-flood:ok".into(),
            Expect::Denied(&["after 64 spawns", "max_runs_per_call"]),
        ),
        (format!("kv-read:job/{local_job}"), Expect::NotFound),
        (
            format!("kv-write:../local:job/{local_job}"),
            Expect::Denied(&["visible keys: [\"../local:job/"]),
        ),
        (
            "kube-create:kube-system".into(),
            Expect::Denied(&["namespace `kube-system`", "k8s_namespaces"]),
        ),
        (
            "kube-delete:ccat".into(),
            Expect::Denied(&["kind `Secret`", "k8s_kinds"]),
        ),
        ("loop".into(), Expect::Trap(&["CPU time"])),
        ("alloc".into(), Expect::Trap(&["memory"])),
        // Rust keeps its stack in linear memory: overflowing it faults there,
        // or wasmtime's own stack limit traps first.
        (
            "stack-overflow".into(),
            Expect::Trap(&["stack", "out of bounds memory access"]),
        ),
        ("panic".into(), Expect::Trap(&["hostile panic"])),
        // Class 3: the environment of a program is an allow-list.
        (
            "env:BASH_ENV".into(),
            Expect::Denied(&["`BASH_ENV`", "plugins.hostile.program_env"]),
        ),
        (
            "env:PATH".into(),
            Expect::Denied(&["`PATH`", "program_env"]),
        ),
        (
            "env:SLURM_CONF".into(),
            Expect::Denied(&["`SLURM_CONF`", "program_env"]),
        ),
        (
            "env:KUBECONFIG".into(),
            Expect::Denied(&["`KUBECONFIG`", "program_env"]),
        ),
        (
            "env:PYTHONPATH".into(),
            Expect::Denied(&["`PYTHONPATH`", "program_env"]),
        ),
        // ... and a program's whole tree ends at its timeout.
        (
            "sleep-tree:3131".into(),
            Expect::Fails(&["did not finish within 0.5 s"]),
        ),
        // Class 2: what the host allocates on the plugin's behalf is bounded.
        (
            "kv-many:512".into(),
            Expect::Fails(&["would exceed 16777216 bytes"]),
        ),
        (
            "kv-write-flood:200".into(),
            Expect::Denied(&["after 15 writes", "bytes written per call"]),
        ),
        (
            "job-states:100000".into(),
            Expect::Trap(&["100000 job states"]),
        ),
        (
            "huge-error:34603008".into(),
            Expect::Fails(&["[truncated by hpc-host]"]),
        ),
        // Class 5: no link out of a granted folder.
        (
            format!("symlink:../..={}", granted.join("up").display()),
            Expect::Denied(&["filesystem", "not permitted"]),
        ),
        // Class 6: grants name the API group; pods meet the baseline level.
        (
            "kube-kind:batch.volcano.sh/v1alpha1".into(),
            Expect::Denied(&["kind `batch.volcano.sh/Job`", "k8s_kinds"]),
        ),
        (
            "kube-kind:example.com/v1".into(),
            Expect::Denied(&["kind `example.com/Job`"]),
        ),
        (
            "kube-privileged:ccat".into(),
            Expect::Denied(&[
                "`baseline` pod security level",
                "hostPID",
                "hostNetwork",
                "hostPath",
                "privileged",
                "`cluster-admin`",
                "k8s_service_accounts",
            ]),
        ),
    ];
    block_on(async {
        for (attack, expect) in cases {
            let got = plugin.get_status(&attack).await;
            match (&expect, &got) {
                (
                    Expect::Denied(needles),
                    Err(HostError::Backend {
                        error: BackendError::Denied(m),
                        ..
                    }),
                ) => mentions_all(&attack, m, needles),
                (
                    Expect::NotFound,
                    Err(HostError::Backend {
                        error: BackendError::NotFound(_),
                        ..
                    }),
                ) => {}
                (Expect::Trap(needles), Err(HostError::PluginTrap { message, .. })) => {
                    let m = message.to_lowercase();
                    assert!(
                        needles.iter().any(|n| m.contains(&n.to_lowercase())),
                        "{attack}: {message}"
                    );
                }
                (Expect::Fails(needles), Err(HostError::Backend { error, .. })) => {
                    let (_, m) = hpc_host::runtime::error::kind_and_message(error);
                    assert!(m.len() < 70_000, "{attack}: {} bytes", m.len());
                    mentions_all(&attack, m, needles);
                }
                (Expect::Works, Ok(info)) => {
                    if attack.starts_with("setting:") {
                        assert_eq!(
                            info.reason.as_deref(),
                            Some(""),
                            "the host's settings leaked: {info:?}"
                        );
                    }
                }
                _ => panic!("{attack}: unexpected {got:?}"),
            }
            let fine = plugin.get_status("fine").await.unwrap();
            assert_eq!(fine.native_state.as_deref(), Some("FINE"), "after {attack}");
        }
        // A gigantic answer is cut, not passed on whole.
        let big = plugin.get_status("huge-string:16777216").await.unwrap();
        let reason = big.reason.unwrap();
        assert!(
            reason.len() < 70_000 && reason.ends_with("[truncated by hpc-host]"),
            "{}",
            reason.len()
        );
    });
    assert!(!outside.exists() && !escaped.exists());
    assert!(
        std::fs::symlink_metadata(granted.join("up")).is_err(),
        "a link was planted"
    );
    // The timed-out program's children went with it.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        crate::common::processes_with("sleep 3131").is_empty(),
        "left running: {:?}",
        crate::common::processes_with("sleep 3131")
    );
    assert!(granted.join("inside").exists());
    // The other plugin's record is intact.
    assert_eq!(env.status(&local_job)["status"], "completed");
}

#[test]
fn denials_are_logged_with_plugin_capability_and_target() {
    let env = hostile_cli();
    let err = env.fail(4, &["status", "run:bash"]);
    assert!(
        err.contains("denied") && err.contains("plugin=\"hostile\""),
        "{err}"
    );
    assert!(
        err.contains("capability=\"process\"") && err.contains("target=\"bash\""),
        "{err}"
    );
    assert!(err.contains("plugins.hostile.programs"), "{err}");
}

#[test]
fn a_tampered_or_unsafe_cache_entry_is_recompiled_not_executed() {
    let mut env = TestEnv::new();
    let cache = env.home.join("cache");
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_CACHE_DIR",
        cache.to_str().unwrap(),
    );
    env.expect(0, &["plugins", "compile", "local"]);
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .unwrap();
    let original = std::fs::read(&entry).unwrap();

    // Flip bytes in the middle of the compiled code.
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&entry, &bytes).unwrap();
    let out = env.run(&["submit", "--", "true"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match its checksum"), "{err}");
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        original,
        "rewritten by a fresh compile"
    );

    // World-writable, or owned by someone else: refused, recompiled.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.run(&["submit", "--", "true"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("writable by group or others"));
    let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&entry, Some(65534), None).unwrap();
        let out = env.run(&["submit", "--", "true"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("owned by uid 65534"));
    }
}

/// The hostile plugin as the CLI's backend.
fn hostile_cli() -> TestEnv {
    let (mut env, _, _) = hostile_env();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "hostile");
    env
}

fn no_raw_controls(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what} has raw control characters: {text:?}"
    );
    assert!(
        text.lines().all(|l| !l.starts_with("FORGED")),
        "{what} has a forged line: {text:?}"
    );
}

#[test]
fn text_output_escapes_control_characters_and_json_stays_exact() {
    let env = hostile_cli();
    let err = env.fail(3, &["status", "ctl-error:FORGED"]);
    no_raw_controls("stderr", &err);
    assert!(
        err.contains("\\x1b]52;c;ZXZpbA==\\x07\\r\\nFORGED"),
        "{err}"
    );

    let out = env.expect(0, &["status", "ctl-status:FORGED"]);
    no_raw_controls("stdout", &out);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("ctl\\x1b[2J  completed"), "{out}");
    // JSON is exact: the workflow manager gets the plugin's very bytes.
    let json: serde_json::Value =
        serde_json::from_str(&env.expect(0, &["--output", "json", "status", "ctl-status:FORGED"]))
            .unwrap();
    assert_eq!(json["reason"], "\r\nFORGED  completed");
    assert_eq!(json["native_state"], "\u{1b}]0;title\u{7}");

    let logs = env.expect(0, &["logs", "any"]);
    no_raw_controls("logs", &logs);
    assert!(
        logs.starts_with("out\\x1b]52;c;ZXZpbA==\\x07\n"),
        "{logs:?}"
    );
    // And the next call is answered normally.
    assert!(env.expect(0, &["status", "fine"]).contains("FINE"));
}

#[test]
fn huge_ids_messages_and_logs_are_refused_or_cut() {
    let mut env = hostile_cli();
    let err = env.fail(3, &["submit", "--job-name", "huge-id", "--", "true"]);
    assert!(
        err.contains("answered a job id of 34603008 bytes (at most 1024)"),
        "{err}"
    );
    assert!(err.len() < 4096, "{} bytes of error", err.len());
    let err = env.fail(3, &["submit", "--job-name", "ctl-id", "--", "true"]);
    assert!(err.contains("job id with control characters"), "{err}");
    no_raw_controls("stderr", &err);

    let err = env.fail(3, &["status", "huge-error:34603008"]);
    assert!(
        err.len() < 70_000 && err.contains("[truncated by hpc-host]"),
        "{}",
        err.len()
    );

    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__OUTPUT_BYTES",
        "1048576",
    );
    let logs = env.expect(0, &["logs", "big:20000000"]);
    assert!(
        logs.len() <= (1 << 20) + 100,
        "{} bytes of logs",
        logs.len()
    );
    assert!(logs.starts_with("[cut by hpc-host: "), "{}", &logs[..80]);
    assert!(env.expect(0, &["status", "fine"]).contains("FINE"));
}

#[test]
fn a_plugin_cannot_flood_or_forge_the_host_log() {
    let env = hostile_cli();
    let start = std::time::Instant::now();
    let out = env.run(&["status", "log-flood:100000"]);
    let err = String::from_utf8_lossy(&out.stderr);
    no_raw_controls("log", &err);
    let lines = err.lines().filter(|l| l.contains("flood")).count();
    assert_eq!(lines, 1000, "{lines} plugin log lines");
    let dropped: Vec<&str> = err.lines().filter(|l| l.contains("dropped")).collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(
        dropped[0].contains("dropped 99000 log lines"),
        "{}",
        dropped[0]
    );
    // The context is cut to 128 bytes and its newline escaped.
    let first = err.lines().find(|l| l.contains("flood")).unwrap();
    assert!(
        first.contains("FORGED context") && first.len() < 4096 + 600,
        "{first}"
    );
    assert!(err.len() < 3 << 20, "{} bytes of log", err.len());
    eprintln!("100000 log calls took {:?}", start.elapsed());
    assert!(env.expect(0, &["status", "fine"]).contains("FINE"));
}

#[test]
fn resource_attacks_stay_within_memory_mb_of_host_rss() {
    let env = hostile_cli();
    let (out, base) = crate::common::run_measured(&env, &["status", "fine"]);
    assert!(out.status.success());
    // memory_mb is 64 in hostile_env; the host's own allocations for the
    // plugin are bounded at 16 MiB per call (kv answers and writes).
    const SLACK: u64 = 48 << 20;
    let bound = base + (64 << 20) + SLACK;
    for attack in [
        "kv-many:512",
        "kv-write-flood:200",
        "job-states:100000",
        "huge-error:34603008",
        "alloc",
    ] {
        let (out, rss) = crate::common::run_measured(&env, &["status", attack]);
        assert!(!out.status.success(), "{attack} succeeded");
        eprintln!(
            "{attack}: peak host RSS {} MiB (baseline {} MiB, bound {} MiB)",
            rss >> 20,
            base >> 20,
            bound >> 20
        );
        assert!(
            rss <= bound,
            "{attack}: {} MiB > {} MiB",
            rss >> 20,
            bound >> 20
        );
    }
}

/// The hostile plugin as the CLI's backend, with a call's wall-clock limit
/// of 1 s and a CPU limit of `cpu_seconds`.
fn hostile_cli_wall_1s(cpu_seconds: &str) -> TestEnv {
    let mut env = hostile_cli();
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__CPU_SECONDS",
        cpu_seconds,
    );
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__WALL_SECONDS", "1");
    env
}

#[test]
fn wall_seconds_holds_while_the_plugin_computes() {
    let env = hostile_cli_wall_1s("60");
    let start = std::time::Instant::now();
    let err = env.fail(3, &["status", "loop"]);
    let took = start.elapsed();
    assert!(
        err.contains("did not answer `get-statuses` within 1 s"),
        "{err}"
    );
    assert!(took.as_secs_f64() < 4.0, "took {took:?}");
}

#[test]
fn a_call_ended_at_wall_seconds_takes_its_programs_whole_tree_with_it() {
    let env = hostile_cli_wall_1s("5");
    let err = env.fail(3, &["status", "spin-then-tree:4343"]);
    assert!(err.contains("within 1 s"), "{err}");
    // The call was dropped while `sh` and its two `sleep`s ran: all gone.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        crate::common::processes_with("sleep 4343").is_empty(),
        "left running: {:?}",
        crate::common::processes_with("sleep 4343")
    );
}

/// The kv quota holds across calls: a plugin that keeps 1 MiB per call is
/// refused once over `kv_max_bytes`, and once over `kv_max_keys`; the next
/// call works, and deleting frees quota.
fn kv_quota_holds_across_calls(redis: Option<&str>) {
    let (mut env, _, _) = hostile_env();
    let prefix = format!("hpc-host-test:{}:", uuid::Uuid::new_v4());
    if let Some(url) = redis {
        env.use_redis(url);
        env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__KV_PREFIX", &prefix);
    }
    // Three values of 1 MiB and their keys fit in 4 MiB; a fourth does not.
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__KV_MAX_BYTES",
        &(4 << 20).to_string(),
    );
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__KV_MAX_KEYS", "6");
    let host = env.host("hostile");
    let plugin = host.backend().unwrap();
    block_on(async {
        let works = async |attack: &str| match plugin.get_status(attack).await {
            Ok(info) => assert_eq!(info.native_state.as_deref(), Some("GOT-THROUGH")),
            other => panic!("{attack}: {other:?}"),
        };
        let refused = async |attack: &str, needles: &[&str]| {
            match plugin.get_status(attack).await {
                Err(HostError::Backend {
                    error: BackendError::Denied(m),
                    ..
                }) => {
                    // The plugin's kv call failed with `invalid`, naming the quota.
                    assert!(m.contains("Invalid(\"kv quota: "), "{attack}: {m}");
                    mentions_all(attack, &m, needles);
                }
                other => panic!("{attack}: expected a quota refusal, got {other:?}"),
            }
            let fine = plugin.get_status("fine").await.unwrap();
            assert_eq!(fine.native_state.as_deref(), Some("FINE"), "after {attack}");
        };
        let bytes = [
            "`kv_max_bytes` of 4194304",
            "`plugins.hostile.kv_max_bytes`",
        ];
        let keys = ["`kv_max_keys` of 6", "`plugins.hostile.kv_max_keys`"];
        for i in 0..3 {
            works(&format!("kv-put:{i}:1048576")).await;
        }
        refused("kv-put:3:1048576", &bytes).await;
        // Rewriting a kept value is no growth: it passes at the quota.
        works("kv-put:0:1048576").await;
        works("kv-del:1").await;
        works("kv-put:3:1048576").await;
        refused("kv-put:4:1048576", &bytes).await;
        // Three kept keys, three small ones: six is the most.
        for k in ["s0:10", "s1:10", "s2:10"] {
            works(&format!("kv-put:{k}")).await;
        }
        refused("kv-put:s3:10", &keys).await;
        refused("kv-count:c", &keys).await;
        works("kv-del:s0").await;
        works("kv-count:c").await;
        works("kv-count:c").await;
        refused("kv-put:s4:10", &keys).await;
        // Deleting what is kept frees it for the next calls.
        for k in ["0", "2", "3", "s1", "s2", "c"] {
            works(&format!("kv-del:{k}")).await;
        }
        for i in 0..3 {
            works(&format!("kv-put:{i}:1048576")).await;
        }
        for k in ["0", "1", "2"] {
            works(&format!("kv-del:{k}")).await;
        }
    });
    if redis.is_some() {
        let record = format!("{}usage:{prefix}", hpc_host::store::HOST_NAMESPACE);
        crate::redis_store::redis_cli(6379, &["del", &record]);
    }
}

#[test]
fn kv_quota_holds_across_calls_embedded() {
    kv_quota_holds_across_calls(None);
}

#[test]
#[ignore = "needs redis"]
fn kv_quota_holds_across_calls_redis() {
    kv_quota_holds_across_calls(Some("redis://127.0.0.1:6379/0"));
}
