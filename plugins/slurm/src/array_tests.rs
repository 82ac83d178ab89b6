//! Tests for [`super`]: grouping by shape, the array script's layout, and
//! property tests that run the script with the real `bash` for each task
//! index and check that each task receives exactly its own argv and
//! environment.

use super::*;
use crate::quote::sbatch_model::sbatch_split;
use crate::script::{ScriptInputs, check};
use bash::{helper_argv, temp_dir};
use hpc_plugin_sdk::JobSpec;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

// The script and array tests both include it (clippy's `duplicate_mod`):
// each is a private module of its own parent, so neither can reach the other's.
#[allow(clippy::duplicate_mod)]
#[path = "bash_tests.rs"]
mod bash;

fn spec(argv: &[&str]) -> JobSpec {
    let mut s = hpc_plugin_sdk::fake::spec(argv);
    s.workspace_dir = Some("/work/ws".into());
    s
}

fn inputs() -> ScriptInputs<'static> {
    ScriptInputs {
        partition: "debug",
        default_workspace: None,
        unique: "",
        push: None,
    }
}

fn checked(specs: &[JobSpec]) -> Vec<Checked> {
    specs.iter().map(|s| check(s, &inputs()).unwrap()).collect()
}

fn plan(specs: &[JobSpec]) -> ArrayPlan {
    let c = checked(specs);
    let tasks: Vec<&Checked> = c.iter().collect();
    build(
        &tasks,
        &specs[0].resource_requirements,
        "debug",
        "b1",
        "hpc-host-batch=b1",
        None,
    )
    .unwrap()
}

#[test]
fn specs_group_by_header_only() {
    let mut specs = vec![spec(&["a"]), spec(&["b"]), spec(&["c"]), spec(&["d"])];
    specs[0].resource_requirements.memory_gb = Some(16.0);
    specs[1].resource_requirements.memory_gb = Some(16.0);
    specs[1].job_name = Some("other name".into());
    specs[1].environment_variables = vec![("X".into(), "1".into())];
    specs[1].sif_path = Some("/images/a.sif".into());
    specs[2].resource_requirements.memory_gb = Some(16.0);
    specs[2].resource_requirements.extra = vec![("account".into(), "a".into())];
    specs[3].resource_requirements.memory_gb = Some(16.0);
    specs[3].workspace_dir = Some("/work/other".into());
    let mut more = spec(&["e"]);
    more.resource_requirements.memory_gb = Some(16.0);
    specs.push(more);
    let c = checked(&specs);
    let items: Vec<Option<&Checked>> = c
        .iter()
        .enumerate()
        .map(|(i, c)| (i != 4).then_some(c))
        .collect();
    assert_eq!(group(&items), [vec![0, 1], vec![2], vec![3]]);
    let all: Vec<Option<&Checked>> = c.iter().map(Some).collect();
    assert_eq!(group(&all), [vec![0, 1, 4], vec![2], vec![3]]);
}

#[test]
fn array_script_layout() {
    let mut specs = vec![spec(&["echo", "a b"]), spec(&["echo", "it's"])];
    specs[0].job_name = Some("reduce".into());
    specs[1].job_name = Some("reduce".into());
    specs[1].environment_variables = vec![("V".into(), "$HOME".into())];
    for s in &mut specs {
        s.resource_requirements.cpu = Some(2);
        s.resource_requirements.extra = vec![("comment".into(), "night 7".into())];
    }
    let p = plan(&specs);
    assert_eq!(p.script_path, "/work/ws/hpc-reduce-b1.sbatch");
    assert_eq!(p.base, "/work/ws/hpc-reduce-b1");
    assert_eq!(p.tasks, 2);
    assert_eq!(
        p.text,
        concat!(
            "#!/bin/bash\n",
            "#SBATCH --job-name=\"reduce\"\n",
            "#SBATCH --partition=\"debug\"\n",
            "#SBATCH --chdir=\"/work/ws\"\n",
            "#SBATCH --output=\"/work/ws/hpc-reduce-b1_%A_%a.out\"\n",
            "#SBATCH --error=\"/work/ws/hpc-reduce-b1_%A_%a.err\"\n",
            "#SBATCH --cpus-per-task=2\n",
            "#SBATCH --comment=\"night 7 hpc-host-batch=b1\"\n",
            "# written by hpc-plugin-slurm ",
            env!("CARGO_PKG_VERSION"),
            "\n",
            "# an array of 2 tasks: each runs its entry below\n",
            "case \"${SLURM_ARRAY_TASK_ID-}\" in\n",
            "0)\n",
            "exec -- 'echo' 'a b'\n",
            ";;\n",
            "1)\n",
            "export V='$HOME'\n",
            "exec -- 'echo' 'it'\\''s'\n",
            ";;\n",
            "esac\n",
            "echo \"hpc-plugin-slurm: this array has no task '${SLURM_ARRAY_TASK_ID-}'\" >&2\n",
            "exit 1\n",
        )
    );
    assert_eq!(
        log_path(&p.base, "12", 1, "out"),
        "/work/ws/hpc-reduce-b1_12_1.out"
    );
    // Different names: the array's is the neutral one.
    specs[1].job_name = Some("other".into());
    assert_eq!(plan(&specs).job_name, MIXED_NAME);
}

#[test]
fn a_percent_in_the_workspace_is_literal_in_the_log_pattern() {
    let mut s = spec(&["true"]);
    s.workspace_dir = Some("/work/100%".into());
    let p = plan(&[s.clone(), s]);
    assert!(
        p.text
            .contains("--output=\"/work/100%%/hpc-hpc-job-b1_%A_%a.out\""),
        "{}",
        p.text
    );
    assert_eq!(p.base, "/work/100%/hpc-hpc-job-b1");
}

#[test]
fn groups_split_by_tasks_and_bytes() {
    let sizes = [10, 10, 10, 50, 10, 10];
    let members: Vec<usize> = (0..6).collect();
    assert_eq!(
        chunks(&members, 1000, 1000, |i| sizes[i]),
        [vec![0, 1, 2, 3, 4, 5]]
    );
    assert_eq!(
        chunks(&members, 4, 1000, |i| sizes[i]),
        [vec![0, 1, 2, 3], vec![4, 5]]
    );
    assert_eq!(
        chunks(&members, 1000, 30, |i| sizes[i]),
        [vec![0, 1, 2], vec![3], vec![4, 5]]
    );
    assert_eq!(chunks(&[7, 9], 0, 30, |_| 1), [vec![7], vec![9]]);
}

#[test]
fn array_options() {
    assert_eq!(array_option(200, None), "--array=0-199");
    assert_eq!(array_option(1000, Some(10)), "--array=0-999%10");
}

/// Run task `index` of an array script with bash (see [`bash`]).
fn run_task(text: &str, index: usize, dir: &Path) -> (Vec<String>, BTreeMap<String, String>) {
    bash::run(text, dir, &[("SLURM_ARRAY_TASK_ID", &index.to_string())])
}

#[test]
fn a_task_index_the_table_lacks_fails_the_task() {
    let p = plan(&[spec(&["true"]), spec(&["true"])]);
    let dir = temp_dir("array-missing");
    let path = dir.join("a.sbatch");
    std::fs::write(&path, &p.text).unwrap();
    for index in ["2", "", "0)", "*", "1|0"] {
        let out = Command::new("bash")
            .arg(&path)
            .env_clear()
            .env("SLURM_ARRAY_TASK_ID", index)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{index:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("has no task"));
    }
    std::fs::remove_dir_all(dir).unwrap();
}

mod props {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    /// Strings that stress quoting, as in the single-job script's tests,
    /// plus the array table's own syntax (`)`, `;;`, `esac`, `*`).
    fn nasty() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            "'",
            "\"",
            "$",
            "`",
            "\\",
            ";",
            ";;",
            "&",
            "|",
            "(",
            ")",
            "{",
            "}",
            "<",
            ">",
            "*",
            "?",
            "[",
            "]",
            "~",
            "!",
            "#",
            "%",
            "=",
            " ",
            "\n",
            "\r",
            "\t",
            "\x01",
            "\x1b",
            "é",
            "日",
            "\u{2028}",
            "🦀",
            "esac",
            "0)",
            "${SLURM_ARRAY_TASK_ID}",
            "a",
            "-",
        ]);
        let any_char = any::<char>()
            .prop_filter("no NUL", |c| *c != '\0')
            .prop_map(|c| c.to_string());
        vec(
            prop_oneof![4 => special.prop_map(String::from), 1 => any_char],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn each_task_gets_exactly_its_argv_and_env(
            tasks in vec((vec(nasty(), 0..5), btree_map("HPC_T[A-Z0-9_]{0,6}", nasty(), 0..3), nasty()), 2..5),
        ) {
            let specs: Vec<JobSpec> = tasks
                .iter()
                .map(|(tail, env, name)| {
                    let mut s = spec(&[]);
                    s.execution_command = helper_argv(tail);
                    s.environment_variables = env.clone().into_iter().collect();
                    s.job_name = Some(name.clone());
                    s
                })
                .collect();
            let p = plan(&specs);
            // Only the header has directives, each one word as sbatch reads it.
            let d: Vec<Vec<String>> = p
                .text
                .lines()
                .filter_map(|l| l.strip_prefix("#SBATCH"))
                .map(sbatch_split)
                .collect();
            prop_assert_eq!(d.len(), 6);
            prop_assert!(d.iter().all(|args| args.len() == 1), "{:?}", d);
            let dir = temp_dir("array-prop");
            for (i, (tail, env, _)) in tasks.iter().enumerate() {
                let (got, job_env) = run_task(&p.text, i, &dir);
                prop_assert_eq!(&got, tail);
                for (k, v) in env {
                    prop_assert_eq!(job_env.get(k), Some(v));
                }
                prop_assert_eq!(job_env.get("SLURM_ARRAY_TASK_ID"), Some(&i.to_string()));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn with_a_push_address_every_task_sends_its_own_end() {
    let specs = [spec(&["echo", "a"]), spec(&["echo", "b"])];
    let c = checked(&specs);
    let tasks: Vec<&Checked> = c.iter().collect();
    let addr = crate::push::parse_address("127.0.0.1:7878").unwrap();
    let with = build(
        &tasks,
        &specs[0].resource_requirements,
        "debug",
        "b1",
        "hpc-host-batch=b1",
        Some(addr),
    )
    .unwrap();
    // One trap per task, naming the element (`<array>_<task>`).
    assert_eq!(
        with.text.matches("'/dev/udp/127.0.0.1/7878'").count(),
        2,
        "{}",
        with.text
    );
    assert!(with.text.contains("SLURM_ARRAY_TASK_ID}"), "{}", with.text);
    assert!(!plan(&specs).text.contains("/dev/udp/"));
}
