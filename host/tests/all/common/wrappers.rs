//! Stand-ins for the scheduler's commands that a test or bench gives the
//! SLURM plugin (its `programs` setting): wrappers that count their calls,
//! or that wait before or after the real command.
//!
//! The integration tests use these through [`super::TestEnv`]; the benches
//! include this file too (`host/benches/support/mod.rs`), so that both count
//! scheduler queries the same way.

use std::path::Path;

/// Write an executable `sh` script at `path` running `body`: its path, as a
/// `programs` entry wants it.
pub fn script(path: &Path, body: &str) -> String {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

/// The line a wrapper in `dir` starts with to count a call of `program`
/// (see [`calls`]).
pub fn count_call(dir: &Path, program: &str) -> String {
    format!(
        "echo call >> '{}'",
        dir.join(format!("{program}.calls")).display()
    )
}

/// A wrapper of `/usr/bin/<program>` in `dir` that counts its calls and then
/// runs it: its path.
pub fn counting(dir: &Path, program: &str) -> String {
    script(
        &dir.join(format!("{program}-counting")),
        &format!(
            "{}\nexec /usr/bin/{program} \"$@\"",
            count_call(dir, program)
        ),
    )
}

/// How many calls of `program` the wrappers in `dir` counted.
pub fn calls(dir: &Path, program: &str) -> usize {
    std::fs::read_to_string(dir.join(format!("{program}.calls")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// The SLURM plugin's `programs` setting (a TOML inline table): `sbatch`
/// (a path) and the other commands from `/usr/bin`, those `counted` names
/// through a [`counting`] wrapper in `dir`.
pub fn slurm_programs(dir: &Path, sbatch: &str, counted: &[&str]) -> String {
    let path = |program: &str| {
        if counted.contains(&program) {
            counting(dir, program)
        } else {
            format!("/usr/bin/{program}")
        }
    };
    format!(
        "{{ sbatch = \"{sbatch}\", scancel = \"{}\", squeue = \"{}\", sacct = \"{}\" }}",
        path("scancel"),
        path("squeue"),
        path("sacct")
    )
}
