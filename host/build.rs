//! Builds the built-in plugins for `wasm32-wasip2` as part of the host's
//! normal build and generates `plugins.rs`: each plugin's `.wasm` embedded
//! with its sha256 and its policy request (`plugins/<name>/policy.toml`).
//! The test-only plugins are built by the `hpc-test-plugins` crate
//! (tests/plugins/artifacts), a dev-dependency: release builds skip them.

#[path = "build/target.rs"]
mod target;
#[path = "build/templates.rs"]
mod templates;
#[path = "build/wasm.rs"]
mod wasm;

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::{env, fs};

/// Built into the binary: (plugin name, crate name). Each ships its policy
/// request as `plugins/<name>/policy.toml`, embedded beside its `.wasm`. This
/// is the one list of built-in plugins: the host knows them by this list only.
const BUILTIN: &[(&str, &str)] = &[
    ("kubernetes", "hpc-plugin-kubernetes"),
    ("local", "hpc-plugin-local"),
    ("slurm", "hpc-plugin-slurm"),
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap();
    check_target();

    let crates: Vec<&str> = BUILTIN.iter().map(|(_, k)| *k).collect();
    let artifacts = wasm::build(workspace, &out_dir.join("wasm"), &crates);
    let mut generated = String::from(
        "/// The plugins built into this binary.\npub const BUILTIN_PLUGINS: &[BuiltinPlugin] = &[\n",
    );
    for (name, krate) in BUILTIN {
        let wasm = wasm::artifact(&artifacts, krate);
        let bytes = fs::read(&wasm).unwrap();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let policy = workspace.join("plugins").join(name).join("policy.toml");
        assert!(
            policy.is_file(),
            "built-in plugin `{name}` has no policy request at {}",
            policy.display()
        );
        println!("cargo:rerun-if-changed={}", policy.display());
        writeln!(
            generated,
            "    BuiltinPlugin {{ name: {name:?}, wasm: include_bytes!({:?}), sha256: {sha:?}, policy: include_str!({:?}) }},",
            wasm.display().to_string(),
            policy.display().to_string()
        )
        .unwrap();
    }
    generated.push_str("];\n");
    fs::write(out_dir.join("plugins.rs"), generated).unwrap();
    templates::generate(workspace, &out_dir);
    link_without_pie();
}

/// Link the `hpc-host` binary as a position-dependent executable.
///
/// Every CLI call is a fresh process, and a position-independent one spends
/// its start-up relocating itself: ~60,000 relative relocations, which write
/// to ~240 pages (`.data.rel.ro`, `.got`) and so copy each of them. Linked at
/// a fixed address the linker resolves them all, and `hpc-host --version`
/// starts in ~1.3 ms instead of ~2.0 ms (BENCHMARKS.md, "Where the CLI's time
/// goes"); packing the relocations (`-z pack-relative-relocs`) saved nothing
/// measurable, since the page copies are the cost, not the table.
///
/// Only the link changes: the code is compiled as before (position-
/// independent code links fine into a fixed-address executable), so no
/// dependency is rebuilt. The price is that the binary's own code and data
/// are no longer placed at a random address (libraries, heap, stacks and
/// mmaps still are).
fn link_without_pie() {
    let target = env::var("TARGET").unwrap_or_default();
    if target.contains("-linux-") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}

/// Add the wasm target through rustup when it is missing (with a note on
/// stderr and as a cargo warning), else fail early, rustc-style, saying what
/// to run.
fn check_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let rustup = env::var_os("RUSTUP").unwrap_or_else(|| "rustup".into());
    let toolchain = env::var_os("RUSTUP_TOOLCHAIN");
    let had = target::has_target(&rustc, wasm::TARGET);
    if let Err(e) = target::ensure_target(&rustc, &rustup, toolchain.as_deref(), wasm::TARGET) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if !had {
        println!(
            "cargo:warning=installed the missing `{}` target with rustup",
            wasm::TARGET
        );
    }
}
