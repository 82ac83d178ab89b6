//! Generated batch scripts run with the real `bash`, for the tests of
//! `script` and `array` (each includes this file with `#[path]`). The job's
//! command starts with [`HELPER`], which prints its arguments NUL-separated
//! on stdout and its environment (`env -0`) on stderr; [`run`] reads both back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The helper argv: bash prints its arguments (`$@`, after `$0`), then the
/// environment.
pub const HELPER: [&str; 4] = [
    "/bin/bash",
    "-c",
    r#"for a in "$@"; do printf '%s\0' "$a"; done; exec /usr/bin/env -0 >&2"#,
    "helper",
];

/// [`HELPER`] with the arguments `tail`: a command that prints `tail`.
pub fn helper_argv(tail: &[String]) -> Vec<String> {
    HELPER
        .iter()
        .map(|s| s.to_string())
        .chain(tail.iter().cloned())
        .collect()
}

/// `bash` running the script `text` (saved in `dir`) with no environment
/// but `PATH` and `vars` (what SLURM sets).
pub fn command(text: &str, dir: &Path, vars: &[(&str, &str)]) -> Command {
    let path = dir.join("job.sbatch");
    std::fs::write(&path, text).unwrap();
    let mut bash = Command::new("bash");
    bash.arg(&path)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(vars.iter().copied());
    bash
}

/// Run the script `text` (see [`command`]): the helper's arguments and
/// environment.
pub fn run(
    text: &str,
    dir: &Path,
    vars: &[(&str, &str)],
) -> (Vec<String>, BTreeMap<String, String>) {
    let out = command(text, dir, vars).output().expect("bash runs");
    assert!(
        out.status.success(),
        "the script failed with {vars:?}: {out:?}\n{text}"
    );
    let split = |b: &[u8]| -> Vec<String> {
        let s = String::from_utf8(b.to_vec()).expect("utf-8 output");
        let mut parts: Vec<String> = s.split('\0').map(String::from).collect();
        assert_eq!(parts.pop().as_deref(), Some(""), "output ends with NUL");
        parts
    };
    let env = split(&out.stderr)
        .into_iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    (split(&out.stdout), env)
}

/// A scratch folder named after `tag`, for this test process (each test
/// its own tag: tests run in parallel).
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hpc-plugin-slurm-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
