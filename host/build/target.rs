//! Making sure the `wasm32-wasip2` target is installed before building the
//! plugins: rustup 1.29 does not add a missing target of an already installed
//! toolchain from rust-toolchain.toml, so a fresh clone would fail after a long
//! build. Shared by `build.rs` and its test (which fakes `rustc` and `rustup`).

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Whether `rustc` has the standard library of `target`.
pub fn has_target(rustc: &OsStr, target: &str) -> bool {
    let Ok(out) = Command::new(rustc)
        .args(["--print=target-libdir", &format!("--target={target}")])
        .output()
    else {
        return false;
    };
    let libdir = String::from_utf8_lossy(&out.stdout);
    out.status.success() && !libdir.trim().is_empty() && Path::new(libdir.trim()).exists()
}

/// Install `target` through `rustup` when `rustc` lacks it. `toolchain` is
/// rustup's name for the toolchain in use (`RUSTUP_TOOLCHAIN`), if known.
/// Says what it does on stderr; the error says what to run by hand.
pub fn ensure_target(
    rustc: &OsStr,
    rustup: &OsStr,
    toolchain: Option<&OsStr>,
    target: &str,
) -> Result<(), String> {
    if has_target(rustc, target) {
        return Ok(());
    }
    let by_hand = format!("rustup target add {target}");
    let mut cmd = Command::new(rustup);
    cmd.args(["target", "add", target]);
    if let Some(t) = toolchain {
        cmd.arg("--toolchain").arg(t);
    }
    eprintln!("note: the `{target}` target is missing; installing it: {cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() && has_target(rustc, target) => Ok(()),
        Ok(s) => Err(format!(
            "the `{target}` target is not installed and `rustup target add` failed ({s})\nhelp: {by_hand}"
        )),
        Err(e) => Err(format!(
            "the `{target}` target is not installed and rustup could not be run ({e})\nhelp: install rustup, or the target for your toolchain: {by_hand}"
        )),
    }
}
