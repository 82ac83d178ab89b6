//! First contact: `build.rs` adds a missing `wasm32-wasip2` target through
//! rustup instead of failing. Tested with stand-in `rustc` and `rustup`
//! programs, so the real toolchain (shared by everyone) is never changed.

#[path = "../../build/target.rs"]
mod target;

use crate::common::TestEnv;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A `rustc` that has the target once `installed` exists, and a `rustup`
/// that logs its arguments and (unless told to fail) installs it.
fn fakes(env: &TestEnv, rustup_fails: bool) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = env.home.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let installed = env.home.join("installed");
    let libdir = env.home.join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let rustc = dir.join("rustc");
    script(
        &rustc,
        &format!(
            "[ -e {} ] && echo {} && exit 0\necho 'error: no such target' >&2; exit 1",
            installed.display(),
            libdir.display()
        ),
    );
    let rustup = dir.join("rustup");
    let action = if rustup_fails {
        "exit 1".to_owned()
    } else {
        format!("touch {}", installed.display())
    };
    script(
        &rustup,
        &format!(
            "echo \"$@\" >> {}\n{action}",
            env.home.join("rustup.log").display()
        ),
    );
    (rustc, rustup)
}

#[test]
fn a_missing_target_is_added_through_rustup() {
    let env = TestEnv::new();
    let (rustc, rustup) = fakes(&env, false);
    assert!(!target::has_target(rustc.as_os_str(), "wasm32-wasip2"));
    target::ensure_target(
        rustc.as_os_str(),
        rustup.as_os_str(),
        Some("1.95-x86_64-unknown-linux-gnu".as_ref()),
        "wasm32-wasip2",
    )
    .unwrap();
    let log = std::fs::read_to_string(env.home.join("rustup.log")).unwrap();
    assert_eq!(
        log.trim(),
        "target add wasm32-wasip2 --toolchain 1.95-x86_64-unknown-linux-gnu"
    );
    // Present now: rustup is not asked again.
    target::ensure_target(rustc.as_os_str(), rustup.as_os_str(), None, "wasm32-wasip2").unwrap();
    assert_eq!(
        std::fs::read_to_string(env.home.join("rustup.log"))
            .unwrap()
            .lines()
            .count(),
        1
    );
}

#[test]
fn without_rustup_the_error_says_what_to_run() {
    let env = TestEnv::new();
    let (rustc, rustup) = fakes(&env, true);
    let e = target::ensure_target(rustc.as_os_str(), rustup.as_os_str(), None, "wasm32-wasip2")
        .unwrap_err();
    assert!(e.contains("help: rustup target add wasm32-wasip2"), "{e}");
    let missing = env.home.join("no-rustup-here");
    let e = target::ensure_target(
        rustc.as_os_str(),
        missing.as_os_str(),
        None,
        "wasm32-wasip2",
    )
    .unwrap_err();
    assert!(
        e.contains("could not be run") && e.contains("rustup target add"),
        "{e}"
    );
}
