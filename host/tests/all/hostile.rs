//! A hostile plugin attacks the host one way per call; each attack fails with
//! the error a site admin can act on, and the host answers the next call.

use crate::common::TestEnv;
use hpc_host::bindings::BackendError;
use hpc_host::settings::{Overrides, Settings};
use hpc_host::{Host, HostError};

fn hostile_env() -> (TestEnv, std::path::PathBuf, std::path::PathBuf) {
    let mut env = TestEnv::new();
    env.install_plugin("hostile", "hostile");
    let granted = env.home.join("granted");
    std::fs::create_dir_all(&granted).unwrap();
    let config = env.home.join("settings.toml");
    std::fs::write(&config, "[default]\nDB_PASSWORD = \"s3cret\"\n").unwrap();
    env.set("HPC_HOST_CONFIG", config.to_str().unwrap());
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__PROGRAMS",
        "{ ok = \"/bin/true\" }",
    );
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__DIRS",
        &format!("[\"{}\"]", granted.display()),
    );
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__K8S_NAMESPACES",
        "[\"ccat\"]",
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
}

#[test]
fn every_attack_is_contained_and_the_host_answers_the_next_call() {
    let (env, granted, config) = hostile_env();
    // Another plugin's record, which the hostile one must not reach.
    let local_job = env.submit(&["true"]);
    env.wait(&local_job);

    let settings = Settings::resolve(
        &Overrides {
            backend: Some("hostile".into()),
            ..Default::default()
        },
        &env.vars,
    )
    .unwrap();
    let host = Host::new(&settings).unwrap();
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
    ];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (attack, expect) in cases {
            let got = plugin.get_status(&attack).await;
            match (&expect, &got) {
                (
                    Expect::Denied(needles),
                    Err(HostError::Backend {
                        error: BackendError::Denied(m),
                        ..
                    }),
                ) => {
                    for n in *needles {
                        assert!(m.contains(n), "{attack}: {m:?} lacks {n:?}");
                    }
                }
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
    assert!(granted.join("inside").exists());
    // The other plugin's record is intact.
    assert_eq!(env.status(&local_job)["status"], "completed");
}

#[test]
fn denials_are_logged_with_plugin_capability_and_target() {
    let (mut env, _, _) = hostile_env();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "hostile");
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
