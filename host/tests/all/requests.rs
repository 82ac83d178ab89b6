//! Plugins bring their own policy request (`<name>.policy.toml` beside the
//! `.wasm`); the settings grant, narrow or refuse it.

use crate::common::TestEnv;

/// `mysite`: the local plugin's code under another name, asking for what
/// the local plugin needs (supervised jobs) through its own request file.
fn site_plugin(env: &TestEnv) -> std::path::PathBuf {
    std::fs::create_dir_all(env.plugins_dir()).unwrap();
    let wasm = env.plugins_dir().join("mysite.wasm");
    std::fs::write(&wasm, hpc_host::builtin::find("local").unwrap().wasm).unwrap();
    std::fs::write(
        env.plugins_dir().join("mysite.policy.toml"),
        "supervise = true\nmemory_mb = 64\nkv_max_keys = 1000\n[config]\nHPC_NODE = \"${HOSTNAME}\"\n",
    )
    .unwrap();
    wasm
}

fn inspect(env: &TestEnv, wasm: &std::path::Path) -> serde_json::Value {
    let out = env.expect(
        0,
        &[
            "--output",
            "json",
            "plugins",
            "inspect",
            wasm.to_str().unwrap(),
        ],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn a_site_request_is_shown_and_refused_until_the_settings_grant_it() {
    let env = TestEnv::new();
    let wasm = site_plugin(&env);
    let v = inspect(&env, &wasm);
    assert_eq!(v["requested"]["policy"]["supervise"], true, "{v}");
    assert_eq!(v["requested"]["trusted"], false, "{v}");
    assert!(
        v["requested"]["from"]
            .as_str()
            .unwrap()
            .ends_with("mysite.policy.toml"),
        "{v}"
    );
    let verdict = v["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("refused") && verdict.contains("plugins.mysite.supervise"),
        "{verdict}"
    );
    assert!(v["policy"].is_null(), "nothing is granted: {v}");
    let err = env.fail(4, &["--backend", "mysite", "status", "x"]);
    assert!(
        err.contains("supervise = true") && err.contains("`plugins.mysite.supervise`"),
        "{err}"
    );
}

#[test]
fn a_granted_site_request_loads_with_what_needs_no_grant() {
    let mut env = TestEnv::new();
    let wasm = site_plugin(&env);
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__SUPERVISE", "true");
    let v = inspect(&env, &wasm);
    assert_eq!(v["verdict"], "loads", "{v}");
    assert_eq!(v["policy"]["supervise"], true);
    // Below the default limit and its own config: no grant needed.
    assert_eq!(v["policy"]["limits"]["memory_mb"], 64);
    assert_eq!(v["policy"]["limits"]["kv_max_keys"], 1000);
    assert_eq!(v["policy"]["limits"]["kv_max_bytes"], 64 << 20);
    assert!(v["policy"]["config"]["HPC_NODE"].is_string(), "{v}");
    let out = env.expect(
        0,
        &[
            "--backend",
            "mysite",
            "--output",
            "json",
            "submit",
            "--",
            "true",
        ],
    );
    assert!(out.contains("job_id"), "{out}");
}

#[test]
fn the_settings_can_narrow_a_site_request_away() {
    let mut env = TestEnv::new();
    site_plugin(&env);
    // Granting `supervise = false` answers the request: it loads, without
    // supervision, so the import of `process` is then refused.
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__SUPERVISE", "false");
    let err = env.fail(4, &["--backend", "mysite", "status", "x"]);
    assert!(err.contains("imports `ccat:hpc/process"), "{err}");
}

#[test]
fn a_builtin_shows_its_own_request() {
    let env = TestEnv::new();
    let file = env.home.join("slurm.wasm");
    std::fs::write(&file, hpc_host::builtin::find("slurm").unwrap().wasm).unwrap();
    let v = inspect(&env, &file);
    assert_eq!(v["requested"]["trusted"], true, "{v}");
    assert_eq!(v["requested"]["from"], "built-in");
    let dirs = v["policy"]["dirs"].to_string();
    assert!(dirs.contains(".local/state/hpc-host/slurm"), "{dirs}");
}
