//! Tests for [`super`]: fixed cases, and property tests that run the
//! generated script with the real `bash` and check that the job receives
//! exactly the intended argv and environment.

use super::*;
use crate::quote::sbatch_model::sbatch_split;
use bash::{HELPER, helper_argv, temp_dir};
use std::collections::BTreeMap;
use std::path::Path;

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
        default_workspace: Some("/default/ws"),
        unique: "u1",
        push: None,
    }
}

/// The `#SBATCH` lines of a script, each split as sbatch splits it.
fn directives_of(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#SBATCH"))
        .map(sbatch_split)
        .collect()
}

#[test]
fn full_script() {
    let mut s = spec(&["python3", "run.py", "--in", "a b"]);
    s.job_name = Some("reduce obs #42".into());
    s.resource_requirements.cpu = Some(4);
    s.resource_requirements.memory_gb = Some(16.0);
    s.resource_requirements.time_hours = Some(2.0);
    s.resource_requirements.extra = vec![("account".into(), "ccat".into())];
    s.environment_variables = vec![("OMP_NUM_THREADS".into(), "4".into())];
    let plan = build(&s, &inputs()).unwrap();
    assert_eq!(
        plan.text,
        concat!(
            "#!/bin/bash\n",
            "#SBATCH --job-name=\"reduce_obs__42\"\n",
            "#SBATCH --partition=\"debug\"\n",
            "#SBATCH --chdir=\"/work/ws\"\n",
            "#SBATCH --output=\"/work/ws/hpc-reduce_obs__42-u1.out\"\n",
            "#SBATCH --error=\"/work/ws/hpc-reduce_obs__42-u1.err\"\n",
            "#SBATCH --cpus-per-task=4\n",
            "#SBATCH --mem=16G\n",
            "#SBATCH --time=02:00:00\n",
            "#SBATCH --account=\"ccat\"\n",
            "# written by hpc-plugin-slurm ",
            env!("CARGO_PKG_VERSION"),
            "\n",
            "export OMP_NUM_THREADS='4'\n",
            "exec -- 'python3' 'run.py' '--in' 'a b'\n",
        )
    );
    assert_eq!(plan.script_path, "/work/ws/hpc-reduce_obs__42-u1.sbatch");
    assert_eq!(plan.stdout_path, "/work/ws/hpc-reduce_obs__42-u1.out");
    assert_eq!(plan.stderr_path, "/work/ws/hpc-reduce_obs__42-u1.err");
}

#[test]
fn default_workspace_and_name() {
    let mut s = spec(&["true"]);
    s.workspace_dir = None;
    let plan = build(&s, &inputs()).unwrap();
    assert_eq!(plan.workspace, "/default/ws");
    assert_eq!(plan.job_name, "hpc-job");
    assert_eq!(plan.stdout_path, "/default/ws/hpc-hpc-job-u1.out");
    let no_default = ScriptInputs {
        default_workspace: None,
        ..inputs()
    };
    let err = build(&s, &no_default).unwrap_err();
    assert!(err.contains("`HPC_SLURM_WORKDIR`"), "{err}");
}

#[test]
fn odd_workspace_paths() {
    let mut s = spec(&["true"]);
    s.workspace_dir = Some("/data/50% done/#x \"q\"/".into());
    let plan = build(&s, &inputs()).unwrap();
    assert_eq!(
        plan.stdout_path,
        "/data/50% done/#x \"q\"/hpc-hpc-job-u1.out"
    );
    let d = directives_of(&plan.text);
    assert_eq!(d[2], ["--chdir=/data/50% done/#x \"q\""]);
    assert_eq!(
        d[3],
        ["--output=/data/50%% done/#x \"q\"/hpc-hpc-job-u1.out"]
    );
    for bad in ["relative/dir", "/a\nb", "/a\\b", ""] {
        s.workspace_dir = Some(bad.into());
        assert!(build(&s, &inputs()).is_err(), "{bad:?}");
    }
}

#[test]
fn partition_is_checked() {
    let s = spec(&["true"]);
    for bad in ["", "a\nb"] {
        let i = ScriptInputs {
            partition: bad,
            ..inputs()
        };
        assert!(build(&s, &i).unwrap_err().contains("`SLURM_PARTITION`"));
    }
}

#[test]
fn job_names_are_sanitized() {
    assert_eq!(sanitize_job_name("ok-name_1.2"), "ok-name_1.2");
    assert_eq!(sanitize_job_name("a\n#SBATCH --x"), "a__SBATCH_--x");
    assert_eq!(sanitize_job_name("$(rm -rf)`;'\""), "__rm_-rf_____");
    assert_eq!(sanitize_job_name("-flag"), "_flag");
    assert_eq!(sanitize_job_name(".hidden"), "_hidden");
    assert_eq!(sanitize_job_name("日本"), "__");
    assert_eq!(sanitize_job_name(""), "hpc-job");
    assert_eq!(
        sanitize_job_name(&"x".repeat(100)).len(),
        MAX_JOB_NAME_CHARS
    );
}

#[test]
fn bad_commands_and_env_are_refused() {
    assert!(
        build(&spec(&[]), &inputs())
            .unwrap_err()
            .contains("`execution-command` is empty")
    );
    assert!(build(&spec(&[""]), &inputs()).is_err());
    assert!(
        build(&spec(&["echo", "a\0b"]), &inputs())
            .unwrap_err()
            .contains("NUL")
    );
    for (name, value) in [
        ("1X", "v"),
        ("A-B", "v"),
        ("", "v"),
        ("Ä", "v"),
        ("A B", "v"),
        ("SHELLOPTS", "v"),
        ("X", "a\0"),
    ] {
        let mut s = spec(&["true"]);
        s.environment_variables = vec![(name.into(), value.into())];
        assert!(build(&s, &inputs()).is_err(), "{name:?}={value:?}");
    }
    let mut s = spec(&["true"]);
    s.environment_variables = vec![("A".into(), "1".into()), ("A".into(), "2".into())];
    assert!(build(&s, &inputs()).unwrap_err().contains("set twice"));
}

#[test]
fn apptainer_wrapping() {
    let mut s = spec(&["python3", "-c", "print(1)"]);
    s.sif_path = Some("/images/app.sif".into());
    s.input_dir = Some("/data/in".into());
    s.output_dir = Some("/data/out".into());
    s.environment_variables = vec![("PATH".into(), "/opt/bin".into())];
    let plan = build(&s, &inputs()).unwrap();
    assert!(
        plan.text
            .contains("export PATH='/opt/bin'\nexport APPTAINERENV_PATH='/opt/bin'\n")
    );
    assert!(plan.text.ends_with(
        "exec -- 'apptainer' 'exec' '--bind' '/data/in' '--bind' '/data/out' '--bind' '/work/ws' \
         '/images/app.sif' 'python3' '-c' 'print(1)'\n"
    ));
    s.input_dir = Some("/work/ws".into());
    s.output_dir = None;
    let plan = build(&s, &inputs()).unwrap();
    assert!(
        plan.text.contains("'--bind' '/work/ws' '/images/app.sif'"),
        "{}",
        plan.text
    );
    assert_eq!(plan.text.matches("--bind").count(), 1);
    s.input_dir = Some("/data/a,b".into());
    assert!(
        build(&s, &inputs())
            .unwrap_err()
            .contains("cannot be bound")
    );
    s.input_dir = None;
    s.sif_path = Some("-rf.sif".into());
    assert!(build(&s, &inputs()).unwrap_err().contains("absolute"));
}

#[test]
fn newline_in_job_name_or_values_never_reaches_a_directive() {
    let mut s = spec(&["echo", "x\n#SBATCH --partition=evil"]);
    s.job_name = Some("n\n#SBATCH --partition=evil".into());
    s.environment_variables = vec![("V".into(), "\n#SBATCH --qos=evil\n".into())];
    let plan = build(&s, &inputs()).unwrap();
    assert!(!plan.text.contains("evil\n") && !plan.text.contains("\n#SBATCH --partition=evil"));
    let all: Vec<String> = directives_of(&plan.text).concat();
    assert_eq!(all.len(), 5, "{all:?}");
    assert!(all.iter().all(|d| !d.ends_with("=evil")), "{all:?}");
}

/// Runs `plan.text` with bash (see [`bash`]).
fn run_with_bash(plan: &ScriptPlan, dir: &Path) -> (Vec<String>, BTreeMap<String, String>) {
    bash::run(&plan.text, dir, &[])
}

#[test]
fn bash_runs_exactly_the_argv() {
    let tail = [
        "it's",
        "$(echo pwned)",
        "`id`",
        "a;b",
        "x\ny",
        "\r\n",
        "",
        "é日",
        "-n",
        "*",
        "~",
        "\\",
        "$'\\n'",
    ];
    let mut argv: Vec<&str> = HELPER.to_vec();
    argv.extend(tail);
    let mut s = spec(&argv);
    s.environment_variables = vec![("HPC_X".into(), "v'$(id)`x`\n\u{7f}".into())];
    let dir = temp_dir("fixed");
    let (got, env) = run_with_bash(&build(&s, &inputs()).unwrap(), &dir);
    assert_eq!(got, tail);
    assert_eq!(env["HPC_X"], "v'$(id)`x`\n\u{7f}");
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- job ends pushed to the daemon (`HPC_PUSH_ADDRESS`, crate::push) ----

fn with_push(addr: &str) -> ScriptInputs<'static> {
    ScriptInputs {
        push: Some(crate::push::parse_address(addr).unwrap()),
        ..inputs()
    }
}

#[test]
fn push_address_is_an_ip_and_a_port_only() {
    use crate::push::parse_address;
    for ok in [
        "127.0.0.1:7878",
        "10.1.2.3:1",
        "[::1]:7878",
        "[fd00::5]:65535",
    ] {
        assert!(parse_address(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "127.0.0.1",
        "login1:7878",
        "localhost:7878",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "0.0.0.0:7878",
        "[::]:7878",
        "224.0.0.1:7878",
        "255.255.255.255:7878",
        "::1:7878",
        " 127.0.0.1:7878",
        "127.0.0.1:7878\n",
        "127.0.0.1:7878'; id; '",
        "127.0.0.1:7878/x",
        "$(id):7878",
    ] {
        let err = parse_address(bad).unwrap_err();
        assert!(err.contains("`HPC_PUSH_ADDRESS`"), "{bad:?}: {err}");
    }
}

#[test]
fn without_push_the_script_is_unchanged_and_with_it_the_command_is_not_exec_of_bash() {
    let s = spec(&["python3", "run.py"]);
    let plain = build(&s, &inputs()).unwrap().text;
    assert!(plain.ends_with("exec -- 'python3' 'run.py'\n"), "{plain}");
    assert!(!plain.contains("trap"), "{plain}");
    let pushed = build(&s, &with_push("10.1.2.3:7878")).unwrap().text;
    assert!(pushed.starts_with(&plain[..plain.rfind("exec --").unwrap()]));
    assert!(
        pushed.contains(">'/dev/udp/10.1.2.3/7878'; } 2>/dev/null\n"),
        "{pushed}"
    );
    assert!(pushed.contains("\ntrap hpc_host_ended EXIT\n"), "{pushed}");
    assert!(
        pushed.ends_with("{ (exec -- 'python3' 'run.py' 2>&3 3>&-); } 3>&2 2>/dev/null\n"),
        "{pushed}"
    );
    let v6 = build(&s, &with_push("[fd00::5]:7878")).unwrap().text;
    assert!(v6.contains(">'/dev/udp/fd00::5/7878';"), "{v6}");
}

/// Runs a pushed script with bash as slurm would (`SLURM_JOB_ID` and
/// friends set): its exit status, stdout, stderr, and how long it took.
fn run_pushed(
    plan: &ScriptPlan,
    dir: &std::path::Path,
    vars: &[(&str, &str)],
) -> (
    std::process::ExitStatus,
    String,
    String,
    std::time::Duration,
) {
    let mut bash = bash::command(&plan.text, dir, vars);
    let started = std::time::Instant::now();
    let out = bash.output().expect("bash runs");
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (
        out.status,
        text(out.stdout),
        text(out.stderr),
        started.elapsed(),
    )
}

#[test]
fn pushed_script_sends_the_job_id_once_and_keeps_the_exit_status_and_output() {
    use std::os::unix::process::ExitStatusExt;
    let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    listener
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = temp_dir("push");
    let recv = || {
        let mut buf = [0u8; 256];
        let n = listener.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let plan = |argv: &[&str]| build(&spec(argv), &with_push(&addr)).unwrap();

    // A plain job: its output and status are the command's; one datagram.
    let (status, out, err, _) = run_pushed(
        &plan(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
        &dir,
        &[("SLURM_JOB_ID", "4242")],
    );
    assert_eq!(status.code(), Some(3));
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    assert_eq!(recv(), "hpc-host-end 4242\n");

    // An array element is named as slurm prints it.
    let vars = [
        ("SLURM_JOB_ID", "4250"),
        ("SLURM_ARRAY_JOB_ID", "4243"),
        ("SLURM_ARRAY_TASK_ID", "7"),
    ];
    let (status, ..) = run_pushed(&plan(&["true"]), &dir, &vars);
    assert!(status.success());
    assert_eq!(recv(), "hpc-host-end 4243_7\n");

    // A command killed by a signal: the script dies of the same signal (so
    // slurm records the signal, as with `exec`), after the send, and bash's
    // own `Killed` report does not reach the job's stderr.
    let (status, _, err, _) = run_pushed(
        &plan(&["sh", "-c", "kill -9 $$"]),
        &dir,
        &[("SLURM_JOB_ID", "4244")],
    );
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert_eq!(err, "");
    assert_eq!(recv(), "hpc-host-end 4244\n");

    // A program that does not exist: 127 and bash's message, as with `exec`.
    let (status, _, err, _) = run_pushed(
        &plan(&["/nonexistent/program"]),
        &dir,
        &[("SLURM_JOB_ID", "4245")],
    );
    assert_eq!(status.code(), Some(127));
    assert!(err.contains("/nonexistent/program"), "{err}");
    assert_eq!(recv(), "hpc-host-end 4245\n");

    // The argv and environment still arrive exactly.
    let mut argv: Vec<&str> = HELPER.to_vec();
    argv.extend(["it's", "$(id)", "hpc_host_ended", "-n"]);
    let mut s = spec(&argv);
    s.environment_variables = vec![("HPC_X".into(), "v'$(id)".into())];
    let p = build(&s, &with_push(&addr)).unwrap();
    let (got, env) = run_with_bash(&p, &dir);
    assert_eq!(got, ["it's", "$(id)", "hpc_host_ended", "-n"]);
    assert_eq!(env["HPC_X"], "v'$(id)");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pushed_script_is_neither_failed_nor_delayed_without_a_listener() {
    // A port nobody listens on (bound, then closed), and an address that
    // goes nowhere (TEST-NET-1): the job's status is the command's, at once.
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let dir = temp_dir("push-none");
    for addr in [free.as_str(), "192.0.2.1:9", "[100::1]:9"] {
        for (code, cmd) in [(0, "exit 0"), (5, "exit 5")] {
            let plan = build(&spec(&["sh", "-c", cmd]), &with_push(addr)).unwrap();
            let (status, out, err, took) = run_pushed(&plan, &dir, &[("SLURM_JOB_ID", "1")]);
            assert_eq!(status.code(), Some(code), "{addr}: {err}");
            assert_eq!((out.as_str(), err.as_str()), ("", ""), "{addr}");
            assert!(took < std::time::Duration::from_secs(2), "{addr}: {took:?}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

mod props {
    use super::*;
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;

    /// Strings that stress quoting: shell syntax, quotes, control characters
    /// (no NUL: it cannot reach a program), and non-ASCII.
    fn nasty() -> impl Strategy<Value = String> {
        let special = prop::sample::select(vec![
            '\'', '"', '$', '`', '\\', ';', '&', '|', '(', ')', '{', '}', '<', '>', '*', '?', '[',
            ']', '~', '!', '#', '%', '=', ' ', '\n', '\r', '\t', '\x01', '\x1b', '\x7f', 'é', 'ß',
            '日', '\u{2028}', '\u{feff}', '🦀', 'a', 'Z', '0', '-',
        ]);
        let any_char = any::<char>().prop_filter("no NUL", |c| *c != '\0');
        vec(prop_oneof![4 => special, 1 => any_char], 0..16).prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn script_delivers_argv_and_env_exactly(
            tail in vec(nasty(), 0..6),
            env in btree_map("HPC_T[A-Z0-9_]{0,6}", nasty(), 0..4),
            name in nasty(),
            workspace in "/[^\\x00-\\x1f\\x7f\\\\]{0,20}",
        ) {
            let mut s = spec(&[]);
            s.execution_command = helper_argv(&tail);
            s.environment_variables = env.clone().into_iter().collect();
            s.job_name = Some(name);
            s.workspace_dir = Some(workspace);
            let plan = build(&s, &inputs()).unwrap();

            // Structure: every line is where it should be, so no value
            // introduced a line of its own.
            let lines: Vec<&str> = plan.text.lines().collect();
            prop_assert_eq!(lines.len(), 1 + 5 + 1 + env.len() + 1);
            prop_assert!(lines[1..6].iter().all(|l| l.starts_with("#SBATCH --")));
            let d = directives_of(&plan.text);
            prop_assert!(d.iter().all(|args| args.len() == 1), "{:?}", d);
            prop_assert_eq!(&d[0][0], &format!("--job-name={}", plan.job_name));
            prop_assert_eq!(&d[2][0], &format!("--chdir={}", plan.workspace));
            prop_assert_eq!(&d[3][0], &format!("--output={}", plan.stdout_path.replace('%', "%%")));

            let dir = temp_dir("prop");
            let (got, job_env) = run_with_bash(&plan, &dir);
            std::fs::remove_dir_all(&dir).unwrap();
            prop_assert_eq!(got, tail);
            for (k, v) in &env {
                prop_assert_eq!(job_env.get(k), Some(v));
            }
        }

        #[test]
        fn sanitized_names_are_safe(name in nasty()) {
            let n = sanitize_job_name(&name);
            prop_assert!(!n.is_empty() && n.chars().count() <= MAX_JOB_NAME_CHARS);
            prop_assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
            prop_assert!(!n.starts_with(['.', '-']));
        }
    }
}
