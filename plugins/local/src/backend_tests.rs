//! The Local backend over the SDK's fake host: what it asks the supervisor
//! to run, what it stores, and how the supervisor's word becomes a status.

use super::*;
use hpc_plugin_sdk::JobStatus;
use hpc_plugin_sdk::fake::{self, FakeHost, exited};

fn spec(argv: &[&str]) -> JobSpec {
    let mut s = fake::spec(argv);
    s.environment_variables = vec![("N".into(), "7".into())];
    s.job_name = Some("t".into());
    s
}

fn host() -> FakeHost {
    FakeHost::new().with_setting(NODE_SETTING, "login1")
}

fn status(h: &mut FakeHost, id: &str) -> Result<HpcJobInfo, BackendError> {
    hpc_plugin_sdk::single(Local::statuses(h, &[id.to_string()]))
}

#[test]
fn submit_records_then_spawns_the_command_as_given() {
    let mut h = host();
    let mut s = spec(&["sh", "-c", "echo $N"]);
    s.workspace_dir = Some("/work/ws".into());
    s.resource_requirements.time_hours = Some(1.1);
    let id = Local::submit(&mut h, &s).unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let req = &h.spawned[0];
    assert_eq!(
        (req.id.as_str(), req.argv.as_slice()),
        (id.as_str(), &s.execution_command[..])
    );
    assert_eq!(req.env, [("N".to_string(), "7".to_string())]);
    assert_eq!(req.working_dir.as_deref(), Some("/work/ws"));
    assert_eq!(req.time_limit_seconds, Some(3960));
    let rec = JobRecord::decode(&h.kv[&format!("job/{id}")]).unwrap();
    assert_eq!(rec.node.as_deref(), Some("login1"));
    assert_eq!(rec.submitted_at, 1_700_000_000.001);
}

#[test]
fn sif_path_runs_the_command_under_apptainer_exec_with_binds() {
    let mut h = host().with_setting("HPC_APPTAINER", "/opt/apptainer/bin/apptainer");
    let mut s = spec(&["python3", "-c", "print(1)"]);
    s.sif_path = Some("/images/app.sif".into());
    s.input_dir = Some("/data/in".into());
    s.output_dir = Some("/data/out".into());
    s.workspace_dir = Some("/data/in".into());
    Local::submit(&mut h, &s).unwrap();
    let req = &h.spawned[0];
    assert_eq!(
        req.argv,
        [
            "/opt/apptainer/bin/apptainer",
            "exec",
            "--bind",
            "/data/in",
            "--bind",
            "/data/out",
            "/images/app.sif",
            "python3",
            "-c",
            "print(1)"
        ]
    );
    assert_eq!(
        req.env,
        [
            ("N".to_string(), "7".to_string()),
            ("APPTAINERENV_N".into(), "7".into())
        ]
    );
    // Without the setting, `apptainer` from the job's PATH.
    let mut h = host();
    Local::submit(&mut h, &s).unwrap();
    assert_eq!(h.spawned[0].argv[0], "apptainer");
}

#[test]
fn bad_specs_are_refused_before_anything_is_stored_or_started() {
    let mut relative = spec(&["true"]);
    relative.sif_path = Some("app.sif".into());
    let mut bad_bind = spec(&["true"]);
    bad_bind.sif_path = Some("/app.sif".into());
    bad_bind.output_dir = Some("/out:/etc".into());
    let mut cases = vec![
        (spec(&[]), "`execution_command` is empty"),
        (spec(&["", "x"]), "empty program name"),
        (relative, "`sif-path` must be an absolute path"),
        (bad_bind, "`output_dir` `/out:/etc` cannot be bound"),
    ];
    for hours in [f64::NAN, -1.0, 0.0, 1e300] {
        let mut s = spec(&["true"]);
        s.resource_requirements.time_hours = Some(hours);
        cases.push((s, "`resource_requirements.time_hours`"));
    }
    let mut empty_program = host().with_setting("HPC_APPTAINER", " ");
    let mut s = spec(&["true"]);
    s.sif_path = Some("/app.sif".into());
    assert!(
        matches!(Local::submit(&mut empty_program, &s), Err(BackendError::InvalidRequest(m)) if m.contains("`HPC_APPTAINER` setting is empty"))
    );
    for (s, want) in cases {
        let mut h = host();
        match Local::submit(&mut h, &s) {
            Err(BackendError::InvalidRequest(m)) => assert!(m.contains(want), "{m} / {want}"),
            other => panic!("{want}: {other:?}"),
        }
        assert!(h.kv.is_empty() && h.spawned.is_empty());
    }
}

#[test]
fn store_down_starts_nothing_and_a_failed_spawn_leaves_no_record() {
    let mut h = host();
    h.kv_down = true;
    assert!(matches!(
        Local::submit(&mut h, &spec(&["true"])),
        Err(BackendError::Unavailable(_))
    ));
    assert!(h.spawned.is_empty());

    let mut h = host();
    h.spawn_error = Some(ProcessError::Invalid("no such program `nope`".into()));
    assert!(
        matches!(Local::submit(&mut h, &spec(&["nope"])), Err(BackendError::InvalidRequest(m)) if m.contains("nope"))
    );
    assert!(h.kv.is_empty(), "{:?}", h.kv.keys());
}

#[test]
fn status_follows_the_supervisor_and_caches_the_end() {
    let mut h = host();
    let id = Local::submit(&mut h, &spec(&["true"])).unwrap();
    let s = status(&mut h, &id).unwrap();
    assert_eq!(
        (s.status, s.native_state.as_deref()),
        (JobStatus::Running, Some("RUNNING"))
    );
    assert!(s.wall_time_seconds.is_some_and(|w| w >= 0.0), "{s:?}");

    h.jobs.insert(id.clone(), exited(3));
    let s = status(&mut h, &id).unwrap();
    assert_eq!((s.status, s.exit_code), (JobStatus::Failed, Some(3)));
    assert_eq!(s.reason.as_deref(), Some("exit code 3"));
    assert_eq!(s.peak_memory_gb, Some(1.0 / 1024.0));
    assert_eq!(s.cpu_hours, Some(0.5 / 3600.0));

    // The end is in the record now: no supervisor needed.
    h.jobs.clear();
    assert_eq!(
        status(&mut h, &id).unwrap().native_state.as_deref(),
        Some("FAILED")
    );
}

#[test]
fn a_job_waiting_for_a_slot_is_pending_with_the_reason_then_running() {
    use hpc_plugin_sdk::host::NOT_STARTED;
    let mut h = host();
    let id = Local::submit(&mut h, &spec(&["true"])).unwrap();
    h.jobs.insert(id.clone(), JobState::Running(NOT_STARTED));
    let s = status(&mut h, &id).unwrap();
    assert_eq!(
        (s.status, s.native_state.as_deref(), s.reason.as_deref()),
        (
            JobStatus::Pending,
            Some("PENDING"),
            Some(crate::record::WAITING_REASON)
        )
    );
    assert_eq!(s.wall_time_seconds, None);
    // A store that lost the record still finds the job, with no start time.
    h.kv.clear();
    let s = status(&mut h, &id).unwrap();
    assert_eq!(s.status, JobStatus::Pending);
    let rec = JobRecord::decode(&h.kv[&format!("job/{id}")]).unwrap();
    assert_eq!(rec.submitted_at, 0.0);

    h.jobs
        .insert(id.clone(), JobState::Running(1_700_000_000.0));
    let s = status(&mut h, &id).unwrap();
    assert_eq!((s.status, s.reason), (JobStatus::Running, None));

    // Cancelled while it waited: ended, cancelled, like a running job.
    let waiting = Local::submit(&mut h, &spec(&["true"])).unwrap();
    h.jobs
        .insert(waiting.clone(), JobState::Running(NOT_STARTED));
    Local::cancel(&mut h, &waiting).unwrap();
    let s = status(&mut h, &waiting).unwrap();
    assert_eq!(
        (s.status, s.native_state.as_deref()),
        (JobStatus::Failed, Some("CANCELLED"))
    );
}

#[test]
fn unknown_and_malformed_ids_are_not_found_one_by_one() {
    let mut h = host();
    let id = Local::submit(&mut h, &spec(&["true"])).unwrap();
    h.jobs.insert(id.clone(), exited(0));
    let unknown = uuid::Uuid::new_v4().to_string();
    let all = Local::statuses(&mut h, &[id.clone(), "42".into(), unknown]).unwrap();
    assert_eq!(all[0].as_ref().unwrap().status, JobStatus::Completed);
    assert!(matches!(&all[1], Err(BackendError::NotFound(m)) if m.contains("not a UUID")));
    assert!(matches!(&all[2], Err(BackendError::NotFound(_))));
}

#[test]
fn cancel_kills_and_records_the_end_once() {
    let mut h = host();
    let id = Local::submit(&mut h, &spec(&["sleep", "100"])).unwrap();
    Local::cancel(&mut h, &id).unwrap();
    assert_eq!(h.killed, [id.as_str()]);
    h.jobs.clear();
    let s = status(&mut h, &id).unwrap();
    assert_eq!(s.native_state.as_deref(), Some("CANCELLED"));
    // Cancelling an ended job asks the supervisor nothing.
    Local::cancel(&mut h, &id).unwrap();
    assert_eq!(h.killed.len(), 1);
}

#[test]
fn logs_come_from_the_supervisor_or_name_the_node_that_has_them() {
    let mut h = host();
    let id = Local::submit(&mut h, &spec(&["true"])).unwrap();
    h.job_logs
        .insert(id.clone(), ("hi\n".into(), "oops\n".into()));
    let logs = Local::logs(&mut h, &id).unwrap();
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("hi\n", "oops\n")
    );

    h.job_logs.clear();
    h.settings.insert(NODE_SETTING.into(), "login2".into());
    let e = Local::logs(&mut h, &id).unwrap_err();
    assert!(
        matches!(&e, BackendError::Unavailable(m) if m.contains("runs on `login1`") && m.contains("this is `login2`")),
        "{e:?}"
    );
}
