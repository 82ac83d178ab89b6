//! Plugins bring their own policy request (`<name>.policy.toml` beside the
//! `.wasm`); the settings grant it, add to it, or (with `replace`) narrow it.

use crate::common::TestEnv;
use serde_json::json;

/// `mysite`: the local plugin's code under another name, asking for what
/// the local plugin needs (supervised jobs) through its own request file.
fn site_plugin(env: &TestEnv) -> std::path::PathBuf {
    let wasm = env.write_builtin("local", &env.plugins_dir().join("mysite.wasm"));
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
    let file = env.write_builtin("slurm", &env.home.join("slurm.wasm"));
    let v = inspect(&env, &file);
    assert_eq!(v["requested"]["trusted"], true, "{v}");
    assert_eq!(v["requested"]["from"], "built-in");
    let dirs = v["policy"]["dirs"].to_string();
    assert!(dirs.contains(".local/state/hpc-host/slurm"), "{dirs}");
}

/// The built-in `slurm` plugin's code as a file, for `plugins inspect`: with
/// no request beside it, it runs under the built-in's.
fn slurm_file(env: &TestEnv) -> std::path::PathBuf {
    env.write_builtin("slurm", &env.home.join("slurm.wasm"))
}

/// Use a settings file with this text.
fn settings(env: &mut TestEnv, text: &str) {
    let file = env.home.join("settings.toml");
    std::fs::write(&file, text).unwrap();
    env.set("HPC_HOST_CONFIG", &file.display().to_string());
}

/// Issue 19: the README's own example widened `dirs` and took the SLURM
/// plugin's script folder away (every job without a `workspace_dir` failed).
/// A settings list adds to what the plugin asks for; only `replace` removes.
#[test]
fn widening_a_builtins_dirs_keeps_its_own_folder_until_replace_says_otherwise() {
    let mut env = TestEnv::new();
    let file = slurm_file(&env);
    let extra = env.home.join("workspaces").display().to_string();
    settings(
        &mut env,
        &format!("[default.plugins.slurm]\ndirs = [\"{extra}\"]\nenv = [\"TZ\"]\n"),
    );
    let v = inspect(&env, &file);
    let own = v["requested"]["policy"]["dirs"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(own.ends_with("/hpc-host/slurm"), "{v}");
    assert_eq!(v["policy"]["dirs"], json!([own, extra]), "{v}");
    assert_eq!(
        v["provenance"]["dirs"],
        json!({ &own: "request", &extra: "settings" })
    );
    // The script folder the plugin writes to is still the granted one.
    assert_eq!(v["policy"]["config"]["HPC_SLURM_WORKDIR"], own);
    assert_eq!(v["provenance"]["config"]["HPC_SLURM_WORKDIR"], "request");
    let env_list = v["policy"]["env"].as_array().unwrap();
    assert_eq!(env_list.first(), Some(&json!("HOME")), "{v}");
    assert_eq!(env_list.last(), Some(&json!("TZ")), "{v}");
    assert_eq!(v["provenance"]["env"]["TZ"], "settings");
    assert_eq!(v["provenance"]["programs"]["sbatch"], "request");
    assert_eq!(v["provenance"]["limits"]["memory_mb"], "least-privilege");
    assert_eq!(v["verdict"], "loads", "{v}");

    // Said explicitly, the settings' list is the whole answer.
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__REPLACE",
        "[\"dirs\"]",
    );
    let v = inspect(&env, &file);
    assert_eq!(v["policy"]["dirs"], json!([extra]), "{v}");
    assert_eq!(v["provenance"]["dirs"], json!({ &extra: "settings" }));
    assert!(
        v["policy"]["env"].as_array().unwrap().len() > 1,
        "`env` is not named: still added to: {v}"
    );

    // `replace` may name only a list or table key the same table sets.
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__REPLACE",
        "[\"programs\"]",
    );
    let v = inspect(&env, &file);
    let verdict = v["verdict"].as_str().unwrap();
    assert!(
        verdict.contains("`plugins.slurm.replace` names `programs`")
            && verdict.contains("does not set"),
        "{verdict}"
    );
}

/// A site plugin asking for a folder, and the admin's settings.
fn site_plugin_with_a_folder(env: &TestEnv) -> (std::path::PathBuf, String) {
    let wasm = env.write_builtin("local", &env.plugins_dir().join("mysite.wasm"));
    let asked = env.home.join("site-data").display().to_string();
    std::fs::write(
        env.plugins_dir().join("mysite.policy.toml"),
        format!("supervise = true\ndirs = [\"{asked}\"]\n"),
    )
    .unwrap();
    (wasm, asked)
}

/// For a site plugin the settings list is the grant: a requested entry the
/// admin did not list is refused (never merged in), the admin's own entries
/// are added, and `replace` runs the plugin without what it left out.
#[test]
fn a_site_plugin_gains_nothing_beyond_least_privilege_through_the_merge() {
    let mut env = TestEnv::new();
    let (wasm, asked) = site_plugin_with_a_folder(&env);
    let other = env.home.join("other").display().to_string();
    // A grant of another key grants nothing of `dirs`.
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__SUPERVISE", "true");
    let v = inspect(&env, &wasm);
    let verdict = v["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("refused") && verdict.contains("plugins.mysite.dirs"),
        "{verdict}"
    );
    assert!(v["policy"].is_null() && v["provenance"].is_null(), "{v}");

    // Widening with another folder only: refused, naming what is missing.
    let dirs = "CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__DIRS";
    env.set(dirs, &format!("[\"{other}\"]"));
    let err = env.fail(4, &["--backend", "mysite", "status", "x"]);
    assert!(
        err.contains(&format!("`{asked}` in `dirs`"))
            && err.contains("`plugins.mysite.dirs`")
            && err.contains("`plugins.mysite.replace`"),
        "{err}"
    );
    assert!(inspect(&env, &wasm)["policy"].is_null());

    // Listed: granted, with the admin's own folder added.
    env.set(dirs, &format!("[\"{other}\", \"{asked}\"]"));
    let v = inspect(&env, &wasm);
    assert_eq!(v["verdict"], "loads", "{v}");
    assert_eq!(v["policy"]["dirs"], json!([asked, other]));
    assert_eq!(
        v["provenance"]["dirs"],
        json!({ &asked: "request", &other: "settings" })
    );
    assert_eq!(v["provenance"]["supervise"], "request");

    // Narrowed, said so: only the admin's folder.
    env.set(dirs, &format!("[\"{other}\"]"));
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__MYSITE__REPLACE",
        "[\"dirs\"]",
    );
    let v = inspect(&env, &wasm);
    assert_eq!(v["verdict"], "loads", "{v}");
    assert_eq!(v["policy"]["dirs"], json!([other]));
    assert_eq!(v["provenance"]["dirs"], json!({ &other: "settings" }));
}
