//! Building plugin crates for `wasm32-wasip2` from a build script (the
//! wasmtime `test-programs` pattern). Shared by `host/build.rs` (the built-in
//! plugins) and `tests/plugins/artifacts/build.rs` (the test-only plugins).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

pub const TARGET: &str = "wasm32-wasip2";

/// Build `crates` of the workspace at `workspace` for the wasm target, into
/// `target_dir`; returns the folder holding their `.wasm` files.
pub fn build(workspace: &Path, target_dir: &Path, crates: &[&str]) -> PathBuf {
    // One folder per checkout: cargo judges a workspace crate fresh by the
    // files its dep-info names, which are the checkout's that built it, so a
    // build cache copied from (or shared with) another checkout would hand
    // that checkout's plugins to this one.
    let target_dir = &target_dir.join(checkout_tag(workspace));
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg(format!("--target={TARGET}"))
        .env("CARGO_TARGET_DIR", target_dir)
        // Plugins ship without debug info: smaller files compile faster and
        // make smaller `.cwasm` cache entries.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // The outer build's flags are for the host target, not for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        // Under `cargo clippy` the outer cargo runs rustc through
        // clippy-driver with the lint arguments: the plugins are built here,
        // not linted (they are linted as workspace crates themselves).
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS");
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    for krate in crates {
        cmd.arg("-p").arg(krate);
    }
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .expect("failed to run cargo to build the plugins");
    assert!(status.success(), "building the plugins failed: {status}");
    // Cargo gives a build-script run the same identity in every checkout,
    // and it checks the paths below as they were in the checkout that ran it
    // last: two clones sharing one CARGO_TARGET_DIR (CI's cache) would see
    // each other's plugins. scripts/test.sh names the checkout here.
    println!("cargo:rerun-if-env-changed=HPC_HOST_CHECKOUT");
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    target_dir.join(TARGET).join("release")
}

/// A short name for a checkout, from its path.
fn checkout_tag(workspace: &Path) -> String {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same path gives the same tag every build.
    let mut h = std::hash::DefaultHasher::new();
    workspace.hash(&mut h);
    format!("checkout-{:016x}", h.finish())
}

/// The `.wasm` of a crate, after registering its sources (from cargo's
/// dep-info file) so the build script reruns only when a plugin changes.
pub fn artifact(dir: &Path, krate: &str) -> PathBuf {
    let stem = krate.replace('-', "_");
    let wasm = dir.join(format!("{stem}.wasm"));
    assert!(wasm.exists(), "no artifact at {}", wasm.display());
    if let Ok(deps) = fs::read_to_string(dir.join(format!("{stem}.d"))) {
        let (_, inputs) = deps.split_once(": ").unwrap_or(("", ""));
        // Paths are space separated, with spaces inside a path escaped as `\ `.
        let inputs = inputs.replace("\\ ", "\u{0}");
        for input in inputs.split_whitespace() {
            println!("cargo:rerun-if-changed={}", input.replace('\u{0}', " "));
        }
    }
    wasm
}
