//! Tests for [`super`] over a fake [`Host`] that answers with the real
//! squeue/sacct output in [`crate::sacct::tests`] and counts every call.

use super::*;
use crate::host::fake::{Fake, fail, ok};
use crate::sacct::tests::{SACCT_LIST, SQUEUE_LIST, SQUEUE_LIVE, SQUEUE_UNKNOWN_STDERR};
use hpc_plugin_sdk::JobStatus;
use hpc_plugin_sdk::host::process::ProcessError;
use std::path::PathBuf;

fn workspace(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hpc-plugin-slurm-backend-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec(ws: &std::path::Path) -> JobSpec {
    let mut s = hpc_plugin_sdk::fake::spec(&["echo", "hi"]);
    s.workspace_dir = Some(ws.to_str().unwrap().into());
    s.resource_requirements.cpu = Some(1);
    s.job_name = Some("t".into());
    s
}

fn files_in(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn submit_writes_script_runs_sbatch_and_records_logs() {
    let ws = workspace("submit");
    let mut h = Fake::new();
    h.answer("sbatch", ok("42;testcluster\n"));
    assert_eq!(submit(&mut h, &spec(&ws)).unwrap(), "42");
    let call = &h.calls_to("sbatch")[0];
    assert_eq!(call.timeout_ms, Some(DEFAULT_TIMEOUT_MS));
    assert_eq!(call.args[0], "--parsable");
    let script = std::fs::read_to_string(&call.args[1]).unwrap();
    assert!(
        script
            .starts_with("#!/bin/bash\n#SBATCH --job-name=\"t\"\n#SBATCH --partition=\"debug\"\n")
    );
    assert!(script.ends_with("exec -- 'echo' 'hi'\n"));
    let rec = JobRecord::from_bytes(&h.kv["job/42"]).unwrap();
    assert_eq!(rec.job_id.as_deref(), Some("42"));
    assert_eq!(rec.script, call.args[1]);
    assert!(rec.stdout.starts_with(ws.to_str().unwrap()) && rec.stdout.ends_with(".out"));
    assert_eq!(h.kv.len(), 1, "the pending record is gone");
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn submit_needs_a_partition_and_a_sane_timeout() {
    let ws = workspace("settings");
    let mut h = Fake::new();
    h.settings.clear();
    let Err(BackendError::InvalidRequest(m)) = submit(&mut h, &spec(&ws)) else {
        panic!()
    };
    assert!(
        m.starts_with("the `SLURM_PARTITION` setting is not set"),
        "{m}"
    );
    let mut h = Fake::new();
    h.settings.insert(SETTING_TIMEOUT.into(), "soon".into());
    let Err(BackendError::InvalidRequest(m)) = submit(&mut h, &spec(&ws)) else {
        panic!()
    };
    assert!(m.contains("`SLURM_COMMAND_TIMEOUT_MS`"), "{m}");
    let mut h = Fake::new();
    h.settings.insert(SETTING_TIMEOUT.into(), "5000".into());
    h.answer("sbatch", ok("7\n"));
    submit(&mut h, &spec(&ws)).unwrap();
    assert_eq!(h.calls[0].timeout_ms, Some(5000));
    assert!(h.calls.len() == 1);
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn submit_with_a_push_address_puts_the_checked_address_in_the_script() {
    let ws = workspace("push");
    let mut h = Fake::new();
    h.settings
        .insert(push::SETTING_PUSH.into(), "127.0.0.1:7878; id".into());
    let Err(BackendError::InvalidRequest(m)) = submit(&mut h, &spec(&ws)) else {
        panic!()
    };
    assert!(m.contains("`HPC_PUSH_ADDRESS`"), "{m}");
    assert!(h.calls.is_empty(), "refused before sbatch");
    assert_eq!(files_in(&ws), 0);
    let mut h = Fake::new();
    h.settings
        .insert(push::SETTING_PUSH.into(), " [::1]:7878 ".into());
    h.answer("sbatch", ok("43\n"));
    submit(&mut h, &spec(&ws)).unwrap();
    let script = std::fs::read_to_string(&h.calls_to("sbatch")[0].args[1]).unwrap();
    assert!(script.contains(">'/dev/udp/::1/7878';"), "{script}");
    assert!(script.ends_with("{ (exec -- 'echo' 'hi' 2>&3 3>&-); } 3>&2 2>/dev/null\n"));
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn submit_with_store_down_fails_before_sbatch() {
    let ws = workspace("kvdown");
    let mut h = Fake::new();
    h.kv_fail_after = Some(0);
    assert!(matches!(
        submit(&mut h, &spec(&ws)),
        Err(BackendError::Unavailable(_))
    ));
    assert!(h.calls.is_empty());
    assert_eq!(files_in(&ws), 0, "the script is removed again");
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn submit_store_failing_after_sbatch_still_returns_the_id() {
    let ws = workspace("kvlate");
    let mut h = Fake::new();
    h.kv_fail_after = Some(1);
    h.answer("sbatch", ok("43\n"));
    assert_eq!(submit(&mut h, &spec(&ws)).unwrap(), "43");
    assert!(
        h.warnings[0].contains("job 43 was submitted"),
        "{:?}",
        h.warnings
    );
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn submit_refused_or_unreachable() {
    let ws = workspace("refused");
    let mut h = Fake::new();
    h.answer("sbatch", fail("sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified\n"));
    let Err(BackendError::InvalidRequest(m)) = submit(&mut h, &spec(&ws)) else {
        panic!()
    };
    assert!(m.contains("invalid partition specified: nosuch"), "{m}");
    assert_eq!(files_in(&ws), 0);
    assert!(h.kv.is_empty());
    h.answer("sbatch", fail("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n"));
    assert!(matches!(
        submit(&mut h, &spec(&ws)),
        Err(BackendError::Unavailable(_))
    ));
    h.answer(
        "sbatch",
        Err(ProcessError::TimedOut("after 20000 ms".into())),
    );
    assert!(matches!(
        submit(&mut h, &spec(&ws)),
        Err(BackendError::Unavailable(_))
    ));
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn submit_into_a_missing_workspace() {
    let mut h = Fake::new();
    let mut s = spec(std::path::Path::new("/nonexistent/hpc-ws"));
    let Err(BackendError::InvalidRequest(m)) = submit(&mut h, &s) else {
        panic!()
    };
    assert!(m.contains("must exist"), "{m}");
    s.execution_command.clear();
    assert!(matches!(
        submit(&mut h, &s),
        Err(BackendError::InvalidRequest(_))
    ));
    assert!(h.calls.is_empty());
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn one_squeue_and_one_sacct_for_many_jobs() {
    let mut h = Fake::new();
    h.answer("squeue", ok(SQUEUE_LIST))
        .answer("sacct", ok(SACCT_LIST));
    let r = statuses(&mut h, &ids(&["3", "6", "99999", "abc", "23", "6", "10"])).unwrap();
    assert_eq!(h.calls.len(), 2);
    assert_eq!(h.calls[0].args[6], "3,6,99999,23,10");
    // Pending job 6 is answered by squeue alone.
    assert_eq!(h.calls[1].args[4], "3,99999,23,10");
    let status = |i: usize| r[i].as_ref().ok().map(|j| j.status);
    assert_eq!(status(0), Some(JobStatus::Completed));
    assert_eq!(status(1), Some(JobStatus::Pending));
    assert!(
        matches!(&r[2], Err(BackendError::NotFound(m)) if m.contains("neither `squeue` nor `sacct`"))
    );
    assert!(matches!(&r[3], Err(BackendError::NotFound(m)) if m.contains("not a slurm job id")));
    assert_eq!(status(4), Some(JobStatus::Completed));
    assert_eq!(status(5), Some(JobStatus::Pending));
    assert_eq!(r[6].as_ref().unwrap().reason.as_deref(), Some("cancelled"));
}

#[test]
fn live_jobs_need_no_sacct() {
    let mut h = Fake::new();
    h.answer("squeue", ok(SQUEUE_LIVE));
    let r = statuses(&mut h, &ids(&["24", "26"])).unwrap();
    assert_eq!(h.calls.len(), 1);
    assert_eq!(r[0].as_ref().unwrap().status, JobStatus::Running);
    assert_eq!(r[1].as_ref().unwrap().reason.as_deref(), Some("Resources"));
}

#[test]
fn unknown_single_id_is_not_an_outage() {
    let mut h = Fake::new();
    h.answer("squeue", fail(SQUEUE_UNKNOWN_STDERR))
        .answer("sacct", ok(""));
    let r = statuses(&mut h, &ids(&["99999"])).unwrap();
    assert!(matches!(&r[0], Err(BackendError::NotFound(_))));
    assert_eq!(h.calls.len(), 2);
}

#[test]
fn outages() {
    let mut h = Fake::new();
    h.answer(
        "squeue",
        fail("slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"),
    );
    assert!(matches!(
        statuses(&mut h, &ids(&["1"])),
        Err(BackendError::Unavailable(_))
    ));
    h.answer("squeue", Err(ProcessError::TimedOut("20000 ms".into())));
    assert!(matches!(
        statuses(&mut h, &ids(&["1"])),
        Err(BackendError::Unavailable(_))
    ));
    // sacct down: the running job is still answered; the others must retry.
    h.answer("squeue", ok(SQUEUE_LIVE));
    h.answer(
        "sacct",
        fail("sacct: error: Problem talking to the database: Connection refused\n"),
    );
    let r = statuses(&mut h, &ids(&["24", "3"])).unwrap();
    assert_eq!(r[0].as_ref().unwrap().status, JobStatus::Running);
    assert!(matches!(&r[1], Err(BackendError::Unavailable(_))));
    // Output cut by the host: refuse rather than miss jobs.
    h.answer(
        "squeue",
        Ok(RunOutput {
            truncated: true,
            ..ok(SQUEUE_LIVE).unwrap()
        }),
    );
    assert!(matches!(
        statuses(&mut h, &ids(&["24"])),
        Err(BackendError::Internal(_))
    ));
}

#[test]
fn no_calls_for_invalid_ids_and_chunks_past_the_limit() {
    let mut h = Fake::new();
    let r = statuses(&mut h, &ids(&["x", "", "1_x"])).unwrap();
    assert!(
        h.calls.is_empty()
            && r.iter()
                .all(|r| matches!(r, Err(BackendError::NotFound(_))))
    );
    let many: Vec<String> = (1..=SACCT_CHUNK + 1).map(|i| i.to_string()).collect();
    h.answer("squeue", ok(""))
        .answer("sacct", ok(""))
        .answer("sacct", ok("1|COMPLETED|0:0|1|00:00:01||None\n"));
    let r = statuses(&mut h, &many).unwrap();
    assert_eq!(
        (h.calls_to("squeue").len(), h.calls_to("sacct").len()),
        (1, 2)
    );
    assert_eq!(r[0].as_ref().unwrap().status, JobStatus::Completed);
}

#[test]
fn cancel_runs_scancel() {
    let mut h = Fake::new();
    h.answer("scancel", ok(""));
    cancel(&mut h, "25").unwrap();
    assert_eq!(h.calls[0].args, ["25"]);
    assert!(matches!(
        cancel(&mut h, "25;rm"),
        Err(BackendError::NotFound(_))
    ));
    // What scancel's refusals mean for the caller (a job that ended is no
    // refusal: it is cancelled as far as anyone can tell).
    for (why, expected) in [
        ("Invalid job id specified", Err("not-found")),
        (
            "Unable to contact slurm controller (connect failure)",
            Err("unavailable"),
        ),
        ("Access/permission denied", Err("denied")),
        ("Job/step already completing or completed", Ok(())),
    ] {
        let stderr = format!("scancel: error: Kill job error on job id 3: {why}\n");
        h.answer("scancel", fail(&stderr));
        let got = cancel(&mut h, "3").map_err(|e| match e {
            BackendError::InvalidRequest(_) => "invalid-request",
            BackendError::NotFound(_) => "not-found",
            BackendError::Denied(_) => "denied",
            BackendError::Unavailable(_) => "unavailable",
            BackendError::Internal(_) => "internal",
        });
        assert_eq!(got, expected, "{why}");
    }
}

#[test]
fn logs_from_the_recorded_files() {
    let ws = workspace("logs");
    let mut h = Fake::new();
    h.answer("sbatch", ok("50\n"));
    submit(&mut h, &spec(&ws)).unwrap();
    let rec = JobRecord::from_bytes(&h.kv["job/50"]).unwrap();
    // Not started yet: empty.
    let l = logs(&mut h, "50").unwrap();
    assert_eq!((l.stdout.as_str(), l.stderr.as_str()), ("", ""));
    std::fs::write(&rec.stdout, "out\n").unwrap();
    std::fs::write(&rec.stderr, b"err \xff\n").unwrap();
    let l = logs(&mut h, "50").unwrap();
    assert_eq!(
        (l.stdout.as_str(), l.stderr.as_str()),
        ("out\n", "err \u{fffd}\n")
    );
    // A huge log: its end only.
    let mut big = vec![b'a'; MAX_LOG_BYTES as usize];
    big.extend_from_slice(b"THE END\n");
    std::fs::write(&rec.stdout, &big).unwrap();
    let l = logs(&mut h, "50").unwrap();
    assert!(
        l.stdout.starts_with("[hpc-host: showing the last") && l.stdout.ends_with("aTHE END\n")
    );
    assert!(matches!(logs(&mut h, "51"), Err(BackendError::NotFound(_))));
    assert!(matches!(
        logs(&mut h, "../x"),
        Err(BackendError::NotFound(_))
    ));
    std::fs::remove_dir_all(ws).unwrap();
}
