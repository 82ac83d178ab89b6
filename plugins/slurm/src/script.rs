//! The sbatch script for a [`JobSpec`]: `#SBATCH` directives, then the
//! environment, then the execution command.
//!
//! ```
//! use hpc_plugin_sdk::{JobSpec, ResourceRequirements};
//! use hpc_plugin_slurm::script::{build, ScriptInputs};
//!
//! let spec = JobSpec {
//!     execution_command: vec!["echo".into(), "it's $HOME".into()],
//!     image_ref: None, sif_path: None, input_dir: None, output_dir: None,
//!     workspace_dir: Some("/scratch/jobs".into()), manifest_path: None,
//!     resource_requirements: ResourceRequirements {
//!         cpu: Some(4), memory_gb: Some(16.0), time_hours: Some(2.0),
//!         gpus: None, nodes: None, extra: vec![],
//!     },
//!     environment_variables: vec![("GREETING".into(), "a b".into())],
//!     job_name: Some("demo run".into()), idempotency_key: None,
//! };
//! let plan = build(&spec, &ScriptInputs { partition: "debug", default_workspace: None, unique: "1a2b", push: None }).unwrap();
//! assert_eq!(plan.script_path, "/scratch/jobs/hpc-demo_run-1a2b.sbatch");
//! assert!(plan.text.contains("#SBATCH --cpus-per-task=4\n#SBATCH --mem=16G\n#SBATCH --time=02:00:00\n"));
//! assert!(plan.text.ends_with("export GREETING='a b'\nexec -- 'echo' 'it'\\''s $HOME'\n"));
//! ```
//!
//! Nothing from the spec is ever interpreted by a shell: argv elements and
//! environment values are quoted per word ([`bash_quote`]), directive values
//! are quoted for sbatch's own parser ([`directive_quote`]) and may not hold
//! control characters, the job name is reduced to a safe character set, and
//! environment variable names must be plain identifiers.
//!
//! With `sif-path` the command runs as `apptainer exec --bind <input-dir>
//! --bind <output-dir> --bind <workspace> <sif-path> argv...`. `image-ref`
//! and `manifest-path` do not change the script.

use hpc_plugin_sdk::JobSpec;
use hpc_plugin_sdk::apptainer::{self, Mount};
use hpc_plugin_sdk::spec::check_command;

use crate::push;
use crate::quote::{bash_quote, check_directive_value, check_no_nul, directive_quote};
use crate::resources;

/// The longest job name sent to SLURM, in characters. Longer names are cut:
/// they only clutter `squeue` and file names.
pub const MAX_JOB_NAME_CHARS: usize = 64;

/// How much of the job name goes into file names, in characters.
const MAX_FILE_NAME_PART: usize = 40;

/// The job name when the spec has none.
pub const DEFAULT_JOB_NAME: &str = "hpc-job";

/// Variables bash manages itself: `export NAME=...` in the script is refused
/// (readonly) or does not reach the program as given. Found by running
/// `export NAME='v a l'; exec env` for each of bash's special variables.
pub const BASH_MANAGED_VARIABLES: &[&str] = &[
    "BASHOPTS",
    "BASHPID",
    "BASH_ALIASES",
    "BASH_ARGC",
    "BASH_ARGV",
    "BASH_CMDS",
    "BASH_COMMAND",
    "BASH_LINENO",
    "BASH_SOURCE",
    "BASH_SUBSHELL",
    "BASH_VERSINFO",
    "DIRSTACK",
    "EPOCHREALTIME",
    "EPOCHSECONDS",
    "EUID",
    "FUNCNAME",
    "GROUPS",
    "HISTCMD",
    "LINENO",
    "OPTIND",
    "PPID",
    "RANDOM",
    "SECONDS",
    "SHELLOPTS",
    "SHLVL",
    "SRANDOM",
    "UID",
    "_",
];

/// The program that runs a job with a `sif-path`, looked up in the job's `PATH`
/// on the compute node.
pub const APPTAINER: &str = apptainer::DEFAULT_PROGRAM;

/// What [`build`] needs besides the spec.
pub struct ScriptInputs<'a> {
    /// The `SLURM_PARTITION` setting.
    pub partition: &'a str,
    /// The `HPC_SLURM_WORKDIR` setting: the workspace when the spec has none.
    pub default_workspace: Option<&'a str>,
    /// Makes this job's file names unique in the workspace (letters and digits).
    pub unique: &'a str,
    /// The `HPC_PUSH_ADDRESS` setting, checked: where the script sends the
    /// job's end ([`crate::push`]); `None` sends nothing.
    pub push: Option<std::net::SocketAddr>,
}

/// A script ready to write, and where its job's files go.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptPlan {
    /// The folder the job runs in and its files live in.
    pub workspace: String,
    /// Where to write [`ScriptPlan::text`].
    pub script_path: String,
    /// The job's standard output file (`--output`).
    pub stdout_path: String,
    /// The job's standard error file (`--error`).
    pub stderr_path: String,
    /// The job name as sent to SLURM.
    pub job_name: String,
    /// The script.
    pub text: String,
}

/// A spec, checked: everything a script needs from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The folder the job runs in and its files live in.
    pub workspace: String,
    /// The job name as sent to SLURM ([`sanitize_job_name`]).
    pub job_name: String,
    /// The `#SBATCH` directives from the resource requirements (without the
    /// `--` lines the backend writes itself), the comment without any tag.
    pub directives: Vec<String>,
    /// `export` pairs, checked.
    pub env: Vec<(String, String)>,
    /// The words the script executes.
    pub command: Vec<String>,
}

/// Check `spec` against the settings; an `Err` is an invalid-request message.
pub fn check(spec: &JobSpec, inputs: &ScriptInputs<'_>) -> Result<Checked, String> {
    check_directive_value("the `SLURM_PARTITION` setting", inputs.partition)?;
    if inputs.partition.trim().is_empty() {
        return Err("the `SLURM_PARTITION` setting is empty".into());
    }
    let workspace = match (&spec.workspace_dir, inputs.default_workspace) {
        (Some(dir), _) => check_workspace("`workspace-dir`", dir)?,
        (None, Some(dir)) => check_workspace("the `HPC_SLURM_WORKDIR` setting", dir)?,
        (None, None) => {
            return Err(
                "the spec has no `workspace-dir` and the `HPC_SLURM_WORKDIR` setting is not set"
                    .into(),
            );
        }
    };
    let command = command_words(spec, &workspace)?;
    let env = environment(spec)?;
    let directives = resources::directives(&spec.resource_requirements)?;
    let job_name = sanitize_job_name(spec.job_name.as_deref().unwrap_or(DEFAULT_JOB_NAME));
    Ok(Checked {
        workspace,
        job_name,
        directives,
        env,
        command,
    })
}

/// `<workspace>/hpc-<name>-<unique>`: where a job's files go, without the
/// extension.
pub fn file_base(workspace: &str, job_name: &str, unique: &str) -> String {
    let file_part: String = job_name.chars().take(MAX_FILE_NAME_PART).collect();
    let sep = if workspace.ends_with('/') { "" } else { "/" };
    format!("{workspace}{sep}hpc-{file_part}-{unique}")
}

/// The script's first lines: the shebang and the `#SBATCH` directives the
/// backend writes (name, partition, folder, logs), then `directives`.
/// `stdout`/`stderr` are `--output`/`--error` patterns, already escaped.
pub fn header(
    job_name: &str,
    partition: &str,
    workspace: &str,
    logs: (&str, &str),
    directives: &[String],
) -> String {
    let mut text = String::from("#!/bin/bash\n");
    let mut directive = |d: &str| {
        text.push_str("#SBATCH ");
        text.push_str(d);
        text.push('\n');
    };
    directive(&format!("--job-name={}", directive_quote(job_name)));
    directive(&format!("--partition={}", directive_quote(partition)));
    directive(&format!("--chdir={}", directive_quote(workspace)));
    directive(&format!("--output={}", directive_quote(logs.0)));
    directive(&format!("--error={}", directive_quote(logs.1)));
    for d in directives {
        directive(d);
    }
    // sbatch reads directives only up to the first command, so the comment
    // and everything after it come last.
    text.push_str(concat!(
        "# written by hpc-plugin-slurm ",
        env!("CARGO_PKG_VERSION"),
        "\n"
    ));
    text
}

/// What runs: one `export NAME='value'` line per variable, then `exec --`
/// and the command's words, each quoted ([`bash_quote`]); with a `push`
/// address, the trap that sends the job's end and the command in a
/// subshell instead ([`crate::push`]).
pub fn body(
    env: &[(String, String)],
    command: &[String],
    push: Option<std::net::SocketAddr>,
) -> String {
    let mut text = String::new();
    for (name, value) in env {
        text.push_str(&format!("export {name}={}\n", bash_quote(value)));
    }
    // `exec` makes the job's exit status the program's and delivers SLURM's
    // signals (scancel, time limit) to it directly; `--` keeps a program name
    // starting with `-` from being read as an option of `exec`.
    let mut words = String::new();
    for word in command {
        words.push(' ');
        words.push_str(&bash_quote(word));
    }
    match push {
        None => text.push_str(&format!(
            "exec --{words}
"
        )),
        Some(addr) => {
            text.push_str(&push::trap_lines(addr));
            text.push_str(&push::command_line(&words));
        }
    }
    text
}

/// `path` as an `--output`/`--error` value: `%` starts a file name pattern
/// (`%j`) there; `%%` is a literal `%`.
pub fn escape_pattern(path: &str) -> String {
    path.replace('%', "%%")
}

/// Build the script for `spec`; an `Err` is an invalid-request message.
pub fn build(spec: &JobSpec, inputs: &ScriptInputs<'_>) -> Result<ScriptPlan, String> {
    let checked = check(spec, inputs)?;
    let directives = match &spec.idempotency_key {
        Some(key) => {
            resources::directives(&crate::find::with_key(&spec.resource_requirements, key))?
        }
        None => checked.directives.clone(),
    };
    let base = file_base(&checked.workspace, &checked.job_name, inputs.unique);
    let (stdout_path, stderr_path) = (format!("{base}.out"), format!("{base}.err"));
    let mut text = header(
        &checked.job_name,
        inputs.partition,
        &checked.workspace,
        (&escape_pattern(&stdout_path), &escape_pattern(&stderr_path)),
        &directives,
    );
    text.push_str(&body(&checked.env, &checked.command, inputs.push));
    Ok(ScriptPlan {
        workspace: checked.workspace,
        script_path: format!("{base}.sbatch"),
        stdout_path,
        stderr_path,
        job_name: checked.job_name,
        text,
    })
}

/// Make `name` a job name SLURM and file names take as is: letters, digits,
/// `.`, `_` and `-`; anything else becomes `_`; at most
/// [`MAX_JOB_NAME_CHARS`]; never empty, never starting with `.` or `-`.
pub fn sanitize_job_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_JOB_NAME_CHARS)
        .collect();
    if out.starts_with(['.', '-']) {
        out.replace_range(..1, "_");
    }
    if out.is_empty() {
        DEFAULT_JOB_NAME.to_string()
    } else {
        out
    }
}

/// A workspace folder must be absolute, and representable in `--output`.
fn check_workspace(what: &str, dir: &str) -> Result<String, String> {
    check_directive_value(what, dir)?;
    if !dir.starts_with('/') {
        return Err(format!("{what} must be an absolute path, not `{dir}`"));
    }
    // slurmstepd drops a `\` from an output path (and turns off its patterns),
    // so a log under such a folder would land somewhere else.
    if dir.contains('\\') {
        return Err(format!(
            "{what} `{dir}` contains `\\`, which slurm's `--output` cannot represent"
        ));
    }
    let trimmed = dir.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.into()
    })
}

/// The words the script executes: the execution command, or Apptainer
/// running it in `sif-path` with the input, output and workspace folders
/// bound at their own paths.
fn command_words(spec: &JobSpec, workspace: &str) -> Result<Vec<String>, String> {
    check_command(&spec.execution_command, "execution-command")?;
    let Some(sif) = &spec.sif_path else {
        return Ok(spec.execution_command.clone());
    };
    let mounts = [
        Mount::new("`input-dir`", spec.input_dir.as_deref()),
        Mount::new("`output-dir`", spec.output_dir.as_deref()),
        Mount::new("the workspace", Some(workspace)),
    ];
    apptainer::wrap(APPTAINER, sif, &mounts, &spec.execution_command)
}

/// The spec's environment as `export` pairs, checked.
///
/// For a container job each variable is also exported as
/// `APPTAINERENV_<NAME>`: Apptainer passes most of the host environment into
/// the container, but not `PATH` or `LD_LIBRARY_PATH`, and the prefixed form
/// sets the variable in the container whatever its name.
fn environment(spec: &JobSpec) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in &spec.environment_variables {
        if !is_identifier(name) {
            return Err(format!(
                "environment variable name `{}` is not valid: it must match `[A-Za-z_][A-Za-z0-9_]*`",
                name.escape_debug()
            ));
        }
        if BASH_MANAGED_VARIABLES.contains(&name.as_str()) {
            return Err(format!(
                "environment variable `{name}` is managed by bash and cannot be set for a slurm job"
            ));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("environment variable `{name}` is set twice"));
        }
        check_no_nul(
            &format!("the value of environment variable `{name}`"),
            value,
        )?;
        out.push((name.clone(), value.clone()));
    }
    if spec.sif_path.is_some() {
        out = apptainer::container_env(&out);
    }
    Ok(out)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
