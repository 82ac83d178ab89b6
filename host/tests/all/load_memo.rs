//! Loading a plugin file with remembered digests (`host/src/runtime/digests.rs`):
//! an unchanged file is not hashed again, but a file changed in place (same
//! size, same path) is, so a sha256 pin still holds exactly; a memo others
//! could read or write is not trusted.

use crate::common::{TEST_PLUGINS, TestEnv};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A test environment with a compile cache (and memo) of its own.
fn own_cache() -> TestEnv {
    let mut env = TestEnv::new();
    let cache = env.home.join("cache");
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_CACHE_DIR",
        &cache.display().to_string(),
    );
    env
}

fn memo(env: &TestEnv) -> std::path::PathBuf {
    env.home.join("cache/digests.json")
}

#[test]
fn a_plugin_changed_in_place_is_hashed_again_and_its_pin_holds() {
    let mut env = own_cache();
    env.install_plugin("misbehave", "pinned");
    let file = env.plugins_dir().join("pinned.wasm");
    let good = std::fs::read(&file).unwrap();
    env.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__PINNED__SHA256",
        &hpc_host::runtime::engine::sha256_hex(&good),
    );
    // Twice: the second load uses the remembered digest.
    for _ in 0..2 {
        let out = env.expect(0, &["--backend", "pinned", "status", "x"]);
        assert!(out.starts_with("x  completed"), "{out}");
    }
    let m = memo(&env);
    let meta = std::fs::metadata(&m).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "the memo is private");
    let text = std::fs::read_to_string(&m).unwrap();
    assert!(text.contains(file.to_str().unwrap()), "{text}");

    // The same inode, rewritten in place with other bytes of the same size:
    // the identity (ctime) changed, so the file is hashed again.
    let inode = std::fs::metadata(&file).unwrap().ino();
    let mut other = std::fs::read(Path::new(TEST_PLUGINS).join("hostile.wasm")).unwrap();
    other.resize(good.len(), 0);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &other))
        .unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().ino(), inode);
    let err = env.fail(4, &["--backend", "pinned", "status", "x"]);
    assert!(
        err.contains(&format!(
            "its sha256 is {}",
            hpc_host::runtime::engine::sha256_hex(&other)
        )),
        "{err}"
    );
}

#[test]
fn a_memo_others_could_write_is_not_trusted_and_is_replaced() {
    let env = own_cache();
    env.install_plugin("misbehave", "memo-check");
    env.expect(0, &["--backend", "memo-check", "status", "x"]);
    let m = memo(&env);
    std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o666)).unwrap();
    env.expect(0, &["--backend", "memo-check", "status", "x"]);
    let mode = std::fs::metadata(&m).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the memo was not rewritten private");
    // Its entries were not read: the plugin file was hashed again and is
    // the only file it remembers, with the compiled code written before.
    let text = std::fs::read_to_string(&m).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2, "{text}");
}
