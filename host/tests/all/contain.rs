//! Broken, hostile or incompatible plugins give clear errors, and the host
//! goes on answering.

use crate::common::TestEnv;
use hpc_host::settings::{Overrides, Settings};
use hpc_host::{Host, HostError};

#[test]
fn trap_loop_and_runaway_allocation_are_contained_in_process() {
    let mut env = TestEnv::new();
    env.install_plugin("misbehave", "misbehave");
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__MISBEHAVE__CPU_SECONDS",
        "0.5",
    );
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MISBEHAVE__MEMORY_MB", "64");
    let o = Overrides {
        backend: Some("misbehave".into()),
        ..Default::default()
    };
    let settings = Settings::resolve(&o, &env.vars).unwrap();
    let host = Host::new(&settings).unwrap();
    let plugin = host.backend().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
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
    let mut env = TestEnv::new();
    env.install_plugin("misbehave", "misbehave");
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
        err.contains("ccat:hpc@0.2.0") && err.contains("speaks ccat:hpc@0.1.0"),
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
    let s: serde_json::Value =
        serde_json::from_str(&env.expect(0, &["--output", "json", "status", "x"])).unwrap();
    assert_eq!(s["native_state"], "FINE");
    let list = env.expect(0, &["plugins", "list"]);
    assert!(list.contains("local.wasm"), "{list}");
}

#[test]
fn an_import_the_policy_does_not_grant_is_refused_at_load() {
    let env = TestEnv::new();
    // The local plugin imports `process`; under another name it gets no grant.
    std::fs::create_dir_all(env.plugins_dir()).unwrap();
    std::fs::write(
        env.plugins_dir().join("mysite.wasm"),
        hpc_host::builtin::find("local").unwrap().wasm,
    )
    .unwrap();
    let err = env.fail(4, &["--backend", "mysite", "status", "x"]);
    assert!(
        err.contains("imports `ccat:hpc/process@0.1.0`") && err.contains("plugins.mysite.programs"),
        "{err}"
    );
    // Granting it in settings makes it load.
    let mut env2 = TestEnv::new();
    std::fs::create_dir_all(env2.plugins_dir()).unwrap();
    std::fs::write(
        env2.plugins_dir().join("mysite.wasm"),
        hpc_host::builtin::find("local").unwrap().wasm,
    )
    .unwrap();
    env2.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__SUPERVISE", "true");
    let id = env2.submit_with_backend("mysite", &["true"]);
    assert!(uuid::Uuid::parse_str(&id).is_ok());
}

#[test]
fn a_pinned_sha256_refuses_another_file() {
    let mut env = TestEnv::new();
    env.install_plugin("misbehave", "misbehave");
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
    let file = env.home.join("local.wasm");
    std::fs::write(&file, hpc_host::builtin::find("local").unwrap().wasm).unwrap();
    let v: serde_json::Value = serde_json::from_str(&env.expect(
        0,
        &[
            "--output",
            "json",
            "plugins",
            "inspect",
            file.to_str().unwrap(),
        ],
    ))
    .unwrap();
    assert_eq!(v["contract"], "0.1.0");
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
        let mut args = vec!["--backend", backend, "--output", "json", "submit", "--"];
        args.extend_from_slice(argv);
        let v: serde_json::Value = serde_json::from_str(&self.expect(0, &args)).unwrap();
        v["job_id"].as_str().unwrap().to_owned()
    }
}
