//! Many specs of one shape as one SLURM job array: which specs share a
//! shape, and the array's script.
//!
//! **The shape is the header.** Two specs have one shape when the
//! `#SBATCH` lines their single-job scripts would have are the same, apart
//! from the job name and the log file names: the workspace (`--chdir`, and
//! the folder of `--output`/`--error`) and every directive from
//! `resource-requirements` as [`resources::directives`] writes it (cpu,
//! memory, time, gpus, nodes, and each guarded `extra` key: account, qos,
//! constraint, comment, begin, dependency, ...). The partition is a setting,
//! the same for the whole batch. The key is the directives' text itself, not
//! a list of fields kept beside it, so a directive added to the single-job
//! script is part of the shape at once, and `16` and `16.0` GB (both
//! `--mem=16G`) group together.
//!
//! Everything else is per task and goes into the script's table, indexed
//! by `SLURM_ARRAY_TASK_ID`: the argv, the environment, and what shapes the
//! argv (`sif-path`, `input-dir`, `output-dir` become Apptainer's words, so
//! jobs in different images share an array). `image-ref` and
//! `manifest-path` change no script. The job name is left out of the shape:
//! a workflow manager names each job apart (`reduce-17`), and one `sbatch`
//! per name would undo the batch. An array has one name in SLURM: the
//! tasks' name when they all have the same, else [`MIXED_NAME`].
//!
//! A task's table entry is exactly the single-job script's body
//! ([`script::body`]): `export NAME='value'` lines and one `exec --` line,
//! every word quoted by [`crate::quote::bash_quote`]. The selector is the
//! task index SLURM sets, matched against plain decimal patterns; no spec
//! text is ever a pattern or reaches the shell unquoted.
//!
//! ```
//! use hpc_plugin_slurm::array::{shape_of, MIXED_NAME};
//! use hpc_plugin_slurm::script::{check, ScriptInputs};
//!
//! let inputs = ScriptInputs { partition: "debug", default_workspace: Some("/w"), unique: "u", push: None };
//! let mut a = hpc_plugin_sdk::fake::spec(&["echo", "a"]);
//! a.resource_requirements.memory_gb = Some(16.0);
//! let mut b = hpc_plugin_sdk::fake::spec(&["echo", "b"]);
//! b.resource_requirements.memory_gb = Some(16.0);
//! b.job_name = Some("other".into());
//! let (a, b) = (check(&a, &inputs).unwrap(), check(&b, &inputs).unwrap());
//! assert_eq!(shape_of(&a), shape_of(&b));
//! ```

use std::collections::HashMap;

use hpc_plugin_sdk::ResourceRequirements;

use crate::resources;
use crate::script::{self, Checked, escape_pattern};

/// The job name of an array whose tasks have different names.
pub const MIXED_NAME: &str = "hpc-array";

/// What two specs must share to go into one array (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    /// The workspace folder.
    pub workspace: String,
    /// The directives from the resource requirements.
    pub directives: Vec<String>,
}

/// The shape of a checked spec.
pub fn shape_of(c: &Checked) -> Shape {
    Shape {
        workspace: c.workspace.clone(),
        directives: c.directives.clone(),
    }
}

/// Indices of `items` grouped by shape, groups in the order their first
/// member appears, members in order; `None` items are left out.
pub fn group(items: &[Option<&Checked>]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<Shape, usize> = HashMap::new();
    for (i, c) in items.iter().enumerate() {
        let Some(c) = c else { continue };
        let n = *index.entry(shape_of(c)).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[n].push(i);
    }
    groups
}

/// An array's script, ready to write, and where its files go.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayPlan {
    /// The folder the tasks run in.
    pub workspace: String,
    /// The array's job name.
    pub job_name: String,
    /// Where to write [`ArrayPlan::text`]: `<base>.sbatch`.
    pub script_path: String,
    /// The tasks' file prefix: task `i` of array `N` logs to
    /// `<base>_<N>_<i>.out` and `.err` (`--output=<base>_%A_%a.out`).
    pub base: String,
    /// How many tasks.
    pub tasks: usize,
    /// The script.
    pub text: String,
}

/// The `--output`/`--error` file of task `index` of array `array_id`.
pub fn log_path(base: &str, array_id: &str, index: u32, ext: &str) -> String {
    format!("{base}_{array_id}_{index}.{ext}")
}

/// The script of an array of `tasks` (all of one shape, at least one):
/// the shared header, whose comment ends with `comment_tag`, then a `case`
/// on `SLURM_ARRAY_TASK_ID` with each task's body. A task index the table
/// does not have (none can happen) fails the task with exit status 1.
pub fn build(
    tasks: &[&Checked],
    requirements: &ResourceRequirements,
    partition: &str,
    unique: &str,
    comment_tag: &str,
    push: Option<std::net::SocketAddr>,
) -> Result<ArrayPlan, String> {
    let first = tasks.first().ok_or("an array needs at least one task")?;
    let job_name = if tasks.iter().all(|t| t.job_name == first.job_name) {
        first.job_name.clone()
    } else {
        MIXED_NAME.to_string()
    };
    let directives = resources::directives(&crate::find::with_tag(requirements, comment_tag))?;
    let base = script::file_base(&first.workspace, &job_name, unique);
    let pattern = |ext: &str| format!("{}_%A_%a.{ext}", escape_pattern(&base));
    let mut text = script::header(
        &job_name,
        partition,
        &first.workspace,
        (&pattern("out"), &pattern("err")),
        &directives,
    );
    text.push_str(&format!(
        "# an array of {} tasks: each runs its entry below\n",
        tasks.len()
    ));
    text.push_str("case \"${SLURM_ARRAY_TASK_ID-}\" in\n");
    for (i, t) in tasks.iter().enumerate() {
        text.push_str(&entry(i, t, push));
    }
    text.push_str("esac\n");
    text.push_str(
        "echo \"hpc-plugin-slurm: this array has no task '${SLURM_ARRAY_TASK_ID-}'\" >&2\nexit 1\n",
    );
    Ok(ArrayPlan {
        workspace: first.workspace.clone(),
        job_name,
        script_path: format!("{base}.sbatch"),
        base,
        tasks: tasks.len(),
        text,
    })
}

/// The most bytes of task table in one array's script. slurmctld refuses a
/// batch script over `max_script_size` (4 MB by default); a group whose
/// table would pass this is split into several arrays.
pub const MAX_TABLE_BYTES: usize = 3 << 20;

/// Split `members` (in order) into runs of at most `max_tasks`, each with
/// at most `max_bytes` of task table (`bytes(i)`: member `i`'s entry; a
/// single larger entry is a run of its own).
pub fn chunks(
    members: &[usize],
    max_tasks: usize,
    max_bytes: usize,
    bytes: impl Fn(usize) -> usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for &i in members {
        let b = bytes(i);
        match out.last_mut() {
            Some(run) if run.len() < max_tasks.max(1) && size + b <= max_bytes => {
                run.push(i);
                size += b;
            }
            _ => {
                out.push(vec![i]);
                size = b;
            }
        }
    }
    out
}

/// A task's entry in the table: its index, its body, `;;`.
pub fn entry(index: usize, task: &Checked, push: Option<std::net::SocketAddr>) -> String {
    format!(
        "{index})\n{};;\n",
        script::body(&task.env, &task.command, push)
    )
}

/// `--array=0-<k-1>`, with `%<max>` when at most `max_running` tasks may
/// run at once.
pub fn array_option(tasks: usize, max_running: Option<u32>) -> String {
    let last = tasks.saturating_sub(1);
    match max_running {
        Some(m) => format!("--array=0-{last}%{m}"),
        None => format!("--array=0-{last}"),
    }
}

#[cfg(test)]
#[path = "array_tests.rs"]
mod tests;
