//! Running a job's command in an Apptainer image (`sif-path`), as the seed's
//! backends do: `apptainer exec --bind <input-dir> --bind <output-dir> --bind
//! <workspace> <sif-path> argv...`, as argv words (SLURM quotes them into its
//! script; Local hands them to the host's supervisor, never to a shell).
//!
//! ```
//! use hpc_plugin_sdk::apptainer::{Mount, wrap};
//!
//! let argv = vec!["python3".to_string(), "run.py".into()];
//! let words = wrap("apptainer", "/img/app.sif", &[Mount::new("`input-dir`", Some("/in")),
//!     Mount::new("the workspace", Some("/ws"))], &argv).unwrap();
//! assert_eq!(words, ["apptainer", "exec", "--bind", "/in", "--bind", "/ws", "/img/app.sif", "python3", "run.py"]);
//! ```

use crate::spec::check_no_nul;

/// The program when a site names none: looked up in the job's `PATH`.
pub const DEFAULT_PROGRAM: &str = "apptainer";

/// The setting that names the Apptainer program for plugins that run it
/// directly (Local), e.g. an absolute path outside the job's `PATH`.
pub const SETTING_PROGRAM: &str = "HPC_APPTAINER";

/// The prefix that sets a variable inside the container whatever its name:
/// Apptainer passes most of the environment in, but not `PATH` or
/// `LD_LIBRARY_PATH`.
pub const ENV_PREFIX: &str = "APPTAINERENV_";

/// A folder to bind into the container at its own path; `what` names it in
/// messages.
pub struct Mount<'a> {
    /// How the message names the folder, e.g. ``"`input-dir`"``.
    pub what: &'a str,
    /// The folder, if the spec has one.
    pub dir: Option<&'a str>,
}

impl<'a> Mount<'a> {
    /// A mount of `dir` (if any), named `what` in messages.
    pub fn new(what: &'a str, dir: Option<&'a str>) -> Self {
        Mount { what, dir }
    }
}

/// The words that run `argv` in `sif` with each folder bound at its own path
/// (each once). An `Err` is an invalid-request message.
pub fn wrap(
    program: &str,
    sif: &str,
    mounts: &[Mount<'_>],
    argv: &[String],
) -> Result<Vec<String>, String> {
    check_no_nul("`sif-path`", sif)?;
    // Absolute, so that it can never be read as an option of `apptainer exec`.
    if !sif.starts_with('/') {
        return Err(format!(
            "`sif-path` must be an absolute path, not `{}`",
            sif.escape_debug()
        ));
    }
    let mut words = vec![program.to_string(), "exec".to_string()];
    let mut bound: Vec<&str> = Vec::new();
    for Mount { what, dir } in mounts {
        let Some(dir) = *dir else { continue };
        check_no_nul(what, dir)?;
        // `--bind src[:dest[:opts]][,src...]`: a `,` or `:` would be read as
        // syntax, so such a folder cannot be bound as itself.
        if !dir.starts_with('/') || dir.contains([',', ':']) {
            return Err(format!(
                "{what} `{}` cannot be bound into the container: it must be an absolute path without `,` or `:`",
                dir.escape_debug()
            ));
        }
        if !bound.contains(&dir) {
            bound.push(dir);
            words.push("--bind".into());
            words.push(dir.into());
        }
    }
    words.push(sif.to_string());
    words.extend(argv.iter().cloned());
    Ok(words)
}

/// `env` followed by each variable again as `APPTAINERENV_<NAME>`, so that
/// it reaches the program inside the container as given.
pub fn container_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let prefixed = env
        .iter()
        .map(|(n, v)| (format!("{ENV_PREFIX}{n}"), v.clone()));
    env.iter().cloned().chain(prefixed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_apptainer_would_misread() {
        let argv = vec!["true".to_string()];
        assert!(
            wrap("apptainer", "img.sif", &[], &argv)
                .unwrap_err()
                .contains("absolute")
        );
        let comma = [Mount::new("`output-dir`", Some("/a,b"))];
        assert!(
            wrap("apptainer", "/i.sif", &comma, &argv)
                .unwrap_err()
                .contains("cannot be bound")
        );
        let twice = [
            Mount::new("a", Some("/x")),
            Mount::new("b", Some("/x")),
            Mount::new("c", None),
        ];
        assert_eq!(
            wrap("/opt/apptainer", "/i.sif", &twice, &argv).unwrap(),
            ["/opt/apptainer", "exec", "--bind", "/x", "/i.sif", "true"]
        );
    }

    #[test]
    fn environment_is_doubled_with_the_prefix() {
        let env = vec![("PATH".to_string(), "/opt/bin".to_string())];
        assert_eq!(
            container_env(&env),
            [
                ("PATH".to_string(), "/opt/bin".to_string()),
                ("APPTAINERENV_PATH".into(), "/opt/bin".into())
            ]
        );
    }
}
