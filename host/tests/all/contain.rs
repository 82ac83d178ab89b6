//! Broken, hostile or incompatible plugins give clear errors, and the host
//! goes on answering.

use crate::common::{TestEnv, block_on, poll, processes_with};
use hpc_host::HostError;
use std::time::Duration;

/// The `misbehave` test plugin installed under its name.
fn misbehave_env() -> TestEnv {
    let env = TestEnv::new();
    env.install_plugin("misbehave", "misbehave");
    env
}

#[test]
fn trap_loop_and_runaway_allocation_are_contained_in_process() {
    let mut env = misbehave_env();
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__MISBEHAVE__CPU_SECONDS",
        "0.5",
    );
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MISBEHAVE__MEMORY_MB", "64");
    let host = env.host("misbehave");
    let plugin = host.backend().unwrap();
    block_on(async {
        for (id, needle) in [
            ("trap", "deliberate panic"),
            ("loop", "CPU time"),
            ("alloc", "memory"),
        ] {
            let start = std::time::Instant::now();
            match plugin.get_status(id).await {
                Err(HostError::PluginTrap {
                    plugin,
                    function,
                    message,
                }) => {
                    assert_eq!((plugin.as_str(), function), ("misbehave", "get-status"));
                    assert!(message.contains(needle), "{id}: {message}");
                }
                other => panic!("{id}: expected a trap, got {other:?}"),
            }
            assert!(
                start.elapsed().as_secs() < 10,
                "{id} took {:?}",
                start.elapsed()
            );
            // The same plugin answers the next call.
            let info = plugin.get_status("fine").await.unwrap();
            assert_eq!(info.native_state.as_deref(), Some("FINE"));
        }
    });
}

#[test]
fn traps_reach_the_cli_as_exit_3_naming_plugin_and_function() {
    let mut env = misbehave_env();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "misbehave");
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__MISBEHAVE__CPU_SECONDS",
        "0.5",
    );
    let err = env.fail(3, &["status", "trap"]);
    assert!(
        err.contains("plugin `misbehave` failed in `get-statuses`")
            && err.contains("deliberate panic"),
        "{err}"
    );
    let err = env.fail(3, &["status", "loop"]);
    assert!(err.contains("CPU time"), "{err}");
    env.expect(0, &["status", "fine"]);
}

#[test]
fn a_plugin_built_against_another_contract_is_refused() {
    let env = TestEnv::new();
    env.install_plugin("wrong-version", "future");
    let err = env.fail(3, &["--backend", "future", "status", "x"]);
    assert!(
        err.contains("ccat:hpc@9.0.0") && err.contains("speaks ccat:hpc@0.3.0"),
        "{err}"
    );
}

#[test]
fn a_missing_plugin_is_named() {
    let env = TestEnv::new();
    let err = env.fail(2, &["--backend", "nosuch", "status", "x"]);
    assert!(
        err.contains("plugin `nosuch` not found") && err.contains("nosuch.wasm"),
        "{err}"
    );
    let err = env.fail(2, &["--backend", "../etc/passwd", "status", "x"]);
    assert!(err.contains("not a valid plugin name"), "{err}");
}

#[test]
fn a_plugin_file_overrides_the_builtin_of_its_name() {
    let env = TestEnv::new();
    env.install_plugin("misbehave", "local");
    assert_eq!(env.status("x")["native_state"], "FINE");
    let list = env.expect(0, &["plugins", "list"]);
    assert!(list.contains("local.wasm"), "{list}");
}

#[test]
fn an_import_the_policy_does_not_grant_is_refused_at_load() {
    // The local plugin imports `process`; under another name it gets no grant.
    let local_as_mysite = || {
        let env = TestEnv::new();
        env.write_builtin("local", &env.plugins_dir().join("mysite.wasm"));
        env
    };
    let env = local_as_mysite();
    let err = env.fail(4, &["--backend", "mysite", "status", "x"]);
    assert!(
        err.contains("imports `ccat:hpc/process@0.1.0`") && err.contains("plugins.mysite.programs"),
        "{err}"
    );
    // Granting it in settings makes it load.
    let mut env2 = local_as_mysite();
    env2.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__SUPERVISE", "true");
    let id = env2.submit_with_backend("mysite", &["true"]);
    assert!(uuid::Uuid::parse_str(&id).is_ok());
}

#[test]
fn a_pinned_sha256_refuses_another_file() {
    let mut env = misbehave_env();
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__MISBEHAVE__SHA256",
        &"0".repeat(64),
    );
    let err = env.fail(4, &["--backend", "misbehave", "status", "x"]);
    assert!(err.contains("pins"), "{err}");
}

#[test]
fn plugins_inspect_shows_imports_exports_and_policy() {
    let env = TestEnv::new();
    let file = env.write_builtin("local", &env.home.join("local.wasm"));
    let v = env.inspect(&file);
    assert_eq!(v["contract"], "0.3.0");
    let imports = v["imports"].to_string();
    assert!(
        imports.contains("ccat:hpc/process@0.1.0") && imports.contains("ccat:hpc/kv@0.1.0"),
        "{imports}"
    );
    assert!(!imports.contains("ccat:hpc/kube"), "{imports}");
    assert_eq!(v["policy"]["supervise"], true);
    assert_eq!(v["verdict"], "loads");
}

impl TestEnv {
    fn submit_with_backend(&self, backend: &str, argv: &[&str]) -> String {
        let args = [&["--backend", backend, "submit", "--"], argv].concat();
        self.json(&args)["job_id"].as_str().unwrap().to_owned()
    }
}

/// Wait up to 10 s for no process to match `needle`.
fn gone(needle: &str, never: &str) {
    poll(Duration::from_secs(10), never, || {
        processes_with(needle).is_empty().then_some(())
    });
}

#[test]
fn a_job_child_that_calls_setsid_ends_with_cancel_and_with_the_time_limit() {
    let env = TestEnv::new();
    // The daemon leaves the job's process group and session.
    let id = env.submit(&["sh", "-c", "setsid sleep 3141 & sleep 300"]);
    env.wait_until(&id, "running", |s| s["status"] == "running");
    poll(Duration::from_secs(5), "the daemon never started", || {
        (!processes_with("sleep 3141").is_empty()).then_some(())
    });
    env.expect(0, &["cancel", &id]);
    assert_eq!(env.status(&id)["native_state"], "CANCELLED");
    assert!(
        processes_with("sleep 3141").is_empty(),
        "the setsid child outlived cancel: {:?}",
        processes_with("sleep 3141")
    );

    // At its time limit (2 s), and a double fork too.
    let id = env
        .expect(
            0,
            &[
                "submit",
                "--time-hours",
                "0.0005",
                "--",
                "sh",
                "-c",
                "(setsid sleep 3142 &) ; sh -c 'sleep 3143 &' ; sleep 300",
            ],
        )
        .trim()
        .to_owned();
    let s = env.wait(&id);
    assert_eq!(s["native_state"], "TIMEOUT", "{s}");
    for daemon in ["sleep 3142", "sleep 3143"] {
        gone(
            daemon,
            &format!("`{daemon}` left running after the time limit"),
        );
    }

    // A job that ends normally takes its daemons with it.
    let id = env.submit(&["sh", "-c", "setsid sleep 3144 & sleep 0.2"]);
    let s = env.wait(&id);
    assert_eq!(s["status"], "completed", "{s}");
    assert!(processes_with("sleep 3144").is_empty());
    // The host answers the next call normally.
    let id = env.submit(&["true"]);
    assert_eq!(env.wait(&id)["status"], "completed");
}

#[test]
fn dirs_overlapping_the_hosts_own_folders_are_refused() {
    let mut env = TestEnv::new();
    let state = env.state_dir();
    let cache = env
        .vars
        .iter()
        .find(|(k, _)| k == "CCAT_WORKFLOW_MANAGER_HPC_CACHE_DIR")
        .unwrap()
        .1
        .clone();
    let home = env.home.display().to_string();
    for (dir, what) in [
        (cache.clone(), "compile cache"),
        (home.clone(), "state folder"),
        (state.join("jobs").display().to_string(), "state folder"),
        (env.plugins_dir().display().to_string(), "plugins folder"),
        (
            format!(
                "{cache}/../{}",
                std::path::Path::new(&cache)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
            ),
            "compile cache",
        ),
    ] {
        env.set(
            "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__DIRS",
            &format!("[\"{dir}\"]"),
        );
        let err = env.fail(2, &["submit", "--", "true"]);
        assert!(
            err.contains("plugins.local.dirs") && err.contains(what),
            "{dir}: {err}"
        );
    }
    // A folder of the site's own is fine, and so is slurm's default workdir.
    let own = env.home.join("data");
    std::fs::create_dir_all(&own).unwrap();
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__DIRS",
        &format!("[\"{}\"]", own.display()),
    );
    let id = env.submit(&["true"]);
    assert_eq!(env.wait(&id)["status"], "completed");
}

#[test]
fn plugin_files_are_checked_like_openssh_strict_modes() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new();
    env.install_plugin("hostile", "hostile");
    env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "hostile");
    // What the hostile plugin imports, granted, so only the file checks refuse it.
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__SUPERVISE", "true");
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__HOSTILE__K8S_NAMESPACES",
        "[\"ccat\"]",
    );
    let file = env.plugins_dir().join("hostile.wasm");
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(&env.plugins_dir(), 0o755);
    mode(&file, 0o666);
    let err = env.fail(4, &["status", "fine"]);
    assert!(
        err.contains("hostile.wasm") && err.contains("writable by group or others"),
        "{err}"
    );
    mode(&file, 0o644);
    mode(&env.plugins_dir(), 0o777);
    let err = env.fail(4, &["status", "fine"]);
    assert!(err.contains("plugins") && err.contains("mode 777"), "{err}");
    mode(&env.plugins_dir(), 0o1777);
    env.expect(0, &["status", "fine"]);
    mode(&env.plugins_dir(), 0o755);
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let err = env.fail(4, &["status", "fine"]);
        assert!(err.contains("owned by uid 65534"), "{err}");
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();
    }
    env.expect(0, &["status", "fine"]);
}

#[test]
fn the_embedded_store_and_job_files_are_private_in_a_shared_folder() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    let state = env.state_dir();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = env.submit(&["echo", "secret-argv"]);
    env.wait(&id);
    let mut checked = 0;
    let mut todo = vec![state.clone()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let m = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(m & 0o077, 0, "{} is {m:o}", e.path().display());
                todo.push(e.path());
            } else {
                assert_eq!(m & 0o077, 0, "{} is {m:o}", e.path().display());
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "only {checked} files");
    assert!(state.join("store.sqlite3").exists());
}
