//! Builds the plugins for `wasm32-wasip2` as part of the host's normal build
//! (the wasmtime `test-programs` pattern) and generates `plugins.rs`:
//! the built-in plugins embedded with their sha256, and the folder of the
//! test-only plugins for the integration tests.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

/// Built into the binary: (plugin name, crate name).
const BUILTIN: &[(&str, &str)] = &[
    ("kubernetes", "hpc-plugin-kubernetes"),
    ("local", "hpc-plugin-local"),
    ("slurm", "hpc-plugin-slurm"),
];
/// Built for the tests only: (file name, crate name).
const TEST_ONLY: &[(&str, &str)] = &[
    ("hostile", "hpc-test-plugin-hostile"),
    ("misbehave", "hpc-test-plugin-misbehave"),
    ("wrong-version", "hpc-test-plugin-wrong-version"),
];
const TARGET: &str = "wasm32-wasip2";

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap();
    check_target();

    let target_dir = out_dir.join("wasm");
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--release")
        .arg("--locked")
        .arg(format!("--target={TARGET}"))
        .env("CARGO_TARGET_DIR", &target_dir)
        // Plugins ship without debug info: smaller files compile faster and
        // make smaller `.cwasm` cache entries.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // The outer build's flags are for the host target, not for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    if env::var_os("CARGO_NET_OFFLINE").is_some() {
        cmd.arg("--offline");
    }
    for (_, krate) in BUILTIN.iter().chain(TEST_ONLY) {
        cmd.arg("-p").arg(krate);
    }
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .expect("failed to run cargo to build the plugins");
    assert!(status.success(), "building the plugins failed: {status}");

    let artifacts = target_dir.join(TARGET).join("release");
    let mut generated = String::from(
        "/// The plugins built into this binary.\npub const BUILTIN_PLUGINS: &[BuiltinPlugin] = &[\n",
    );
    for (name, krate) in BUILTIN {
        let wasm = artifact(&artifacts, krate);
        let bytes = fs::read(&wasm).unwrap();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(
            generated,
            "    BuiltinPlugin {{ name: {name:?}, wasm: include_bytes!({:?}), sha256: {sha:?} }},",
            wasm.display().to_string()
        )
        .unwrap();
    }
    generated.push_str("];\n");
    fs::write(out_dir.join("plugins.rs"), generated).unwrap();

    let test_dir = out_dir.join("test-plugins");
    fs::create_dir_all(&test_dir).unwrap();
    for (name, krate) in TEST_ONLY {
        fs::copy(
            artifact(&artifacts, krate),
            test_dir.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    println!(
        "cargo:rustc-env=HPC_HOST_TEST_PLUGINS={}",
        test_dir.display()
    );
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    // Cargo gives this build-script run the same identity in every checkout,
    // and it checks the paths above as they were in the checkout that ran it
    // last: two clones sharing one CARGO_TARGET_DIR (CI's cache) would see
    // each other's plugins. scripts/test.sh names the checkout here.
    println!("cargo:rerun-if-env-changed=HPC_HOST_CHECKOUT");
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
}

/// The `.wasm` of a crate, after registering its sources (from cargo's
/// dep-info file) so the host is rebuilt only when a plugin changes.
fn artifact(dir: &Path, krate: &str) -> PathBuf {
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

/// Fail early, rustc-style, when the wasm target is missing.
fn check_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print=target-libdir", &format!("--target={TARGET}")])
        .output()
        .expect("failed to run rustc");
    let libdir = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !Path::new(libdir.trim()).exists() {
        eprintln!("error: the `{TARGET}` target is not installed");
        eprintln!(
            "help: rustup target add {TARGET}  (rust-toolchain.toml lists it: rustup installs it on first use)"
        );
        std::process::exit(1);
    }
}
