//! Builds the test-only plugins (tests/plugins/*) for `wasm32-wasip2` and
//! puts them in one folder as `<name>.wasm` (STYLE.md §4: test artifacts in a
//! crate of their own, so `cargo build --release` of the host never builds them).

#[path = "../../../host/build/target.rs"]
mod target;
#[path = "../../../host/build/wasm.rs"]
mod wasm;

use std::path::PathBuf;
use std::{env, fs};

/// (file name, crate name).
const TEST_ONLY: &[(&str, &str)] = &[
    ("hostile", "hpc-test-plugin-hostile"),
    ("misbehave", "hpc-test-plugin-misbehave"),
    ("wrong-version", "hpc-test-plugin-wrong-version"),
    ("contract-0-1", "hpc-test-plugin-contract-0-1"),
    ("broken", "hpc-test-plugin-broken"),
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.ancestors().nth(3).unwrap();
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustup = env::var_os("RUSTUP").unwrap_or_else(|| "rustup".into());
    let toolchain = env::var_os("RUSTUP_TOOLCHAIN");
    if let Err(e) = target::ensure_target(&rustc, &rustup, toolchain.as_deref(), wasm::TARGET) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let crates: Vec<&str> = TEST_ONLY.iter().map(|(_, k)| *k).collect();
    let artifacts = wasm::build(workspace, &out_dir.join("wasm"), &crates);
    let dir = out_dir.join("test-plugins");
    fs::create_dir_all(&dir).unwrap();
    for (name, krate) in TEST_ONLY {
        fs::copy(
            wasm::artifact(&artifacts, krate),
            dir.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    println!("cargo:rustc-env=HPC_HOST_TEST_PLUGINS={}", dir.display());
}
