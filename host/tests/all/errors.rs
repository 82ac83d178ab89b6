//! Typed errors end to end: a store that cannot be opened or reached exits 3
//! (the backend failed), bad numbers exit 2 with a clear message, and no
//! input makes the host panic.

use crate::common::TestEnv;

const SOME_ID: &str = "0b0c1d2e-0000-4000-8000-000000000000";

#[test]
fn redis_on_a_closed_port_exits_3() {
    let mut t = TestEnv::new();
    // Port 1 is never a Redis server: the connection is refused.
    t.use_redis("redis://127.0.0.1:1/0");
    let err = t.fail(3, &["status", SOME_ID]);
    assert!(
        err.contains("unreachable") || err.contains("unavailable"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_embedded_store_that_cannot_be_opened_exits_3() {
    let t = TestEnv::new();
    // The store's file is a folder: SQLite cannot open it.
    std::fs::create_dir_all(t.state_dir().join("store.sqlite3")).unwrap();
    let err = t.fail(3, &["status", SOME_ID]);
    assert!(err.contains("cannot open the embedded store"), "{err}");
    assert!(err.contains("store.sqlite3"), "{err}");
}

#[test]
fn a_state_folder_that_cannot_be_made_exits_3() {
    let mut t = TestEnv::new();
    let file = t.home.join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    t.set(
        "CCAT_WORKFLOW_MANAGER_HPC_STATE_DIR",
        &file.join("state").display().to_string(),
    );
    let err = t.fail(3, &["status", SOME_ID]);
    assert!(err.contains("cannot create the state folder"), "{err}");
}

#[test]
fn a_huge_cpu_limit_is_a_clear_error_not_a_panic() {
    let mut t = TestEnv::new();
    t.set("CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CPU_SECONDS", "1e300");
    let err = t.fail(2, &["status", SOME_ID]);
    assert!(
        err.contains("cpu_seconds") && err.contains("positive number of seconds"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_infinite_wait_timeout_is_a_clear_error_not_a_panic() {
    let t = TestEnv::new();
    for bad in ["inf", "1e300"] {
        let err = t.fail(2, &["wait", "--timeout", bad, SOME_ID]);
        assert!(err.contains("`--timeout"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A plugin file that is not a component: the report says so, then what
/// wasmtime found (`caused by:`), and `plugins list` keeps it on one line.
#[test]
fn a_plugin_file_that_is_no_component_reports_wasmtimes_cause() {
    let t = TestEnv::new();
    std::fs::create_dir_all(t.plugins_dir()).unwrap();
    std::fs::write(t.plugins_dir().join("junk.wasm"), b"\0asm not really").unwrap();
    let err = t.fail(3, &["--backend", "junk", "status", SOME_ID]);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[0], "error: plugin `junk` could not be loaded: not a valid WebAssembly component",
        "{err}"
    );
    assert!(lines[1].starts_with("caused by: "), "{err}");
    let list = t.expect(0, &["plugins", "list"]);
    let row = list.lines().find(|l| l.contains("junk")).unwrap();
    assert!(
        row.contains("not a valid WebAssembly component; caused by: "),
        "{list}"
    );
}
