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
use std::path::{Path, PathBuf};
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
    link_for_start_up(workspace);
}

/// How the `hpc-host` binary is linked, for a CLI call's start-up: every
/// call is a fresh process of a 38 MB binary, and what it costs before doing
/// anything is relocation and page faults (BENCHMARKS.md, "Where the CLI's
/// time goes"). Only the link changes: no dependency is rebuilt.
fn link_for_start_up(workspace: &Path) {
    // glibc Linux only: musl links static-pie, which `-no-pie` contradicts.
    let glibc_linux = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if !glibc_linux {
        return;
    }
    // Position-dependent: as a PIE the binary applied ~60,000 relative
    // relocations at every start, writing to (and so copying) ~240 pages of
    // `.data.rel.ro` and `.got`; linked at a fixed address there are none, and
    // `--version` starts ~0.7 ms sooner. Packing the relocations
    // (`-z pack-relative-relocs`) saved nothing measurable: the page copies are
    // the cost, not the table. Position-independent code links fine into such
    // an executable. The price: the binary's own code and data are no longer
    // at a random address (libraries, heap, stacks and mmaps still are).
    println!("cargo:rustc-link-arg-bins=-no-pie");
    // The functions a CLI call runs, placed together at the start of `.text`:
    // a submit through the daemon reads its code in with 15 page faults, not
    // 81. LLD (rustc's default linker on x86_64 Linux) takes the list; another
    // linker may not, so a build that names its own linker goes without.
    let order = workspace.join("host/build/startup-order.txt");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let own_linker = env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld");
    let lld_default = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    println!("cargo:rerun-if-changed={}", order.display());
    if lld_default && !own_linker && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names the binary no longer has (renamed since the list was made)
        // are skipped; `scripts/startup-order.sh` makes a fresh list.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
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
