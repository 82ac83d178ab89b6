//! Tests for [`super`], on the real squeue/sacct output in
//! [`crate::sacct::tests`].

use super::*;
use crate::sacct::tests::{
    SACCT_ENDED, SACCT_LAGGING, SACCT_LIST, SQUEUE_ENDED, SQUEUE_LIVE, SQUEUE_RECENT,
};
use crate::sacct::{parse_sacct, parse_squeue};

#[test]
fn state_table() {
    for s in [
        "PENDING",
        "CONFIGURING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    ] {
        assert_eq!(map_state(s).status, JobStatus::Pending, "{s}");
    }
    for s in [
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "STOPPED",
        "SIGNALING",
        "STAGE_OUT",
        "RESIZING",
    ] {
        assert_eq!(map_state(s).status, JobStatus::Running, "{s}");
    }
    assert_eq!(map_state("COMPLETED").status, JobStatus::Completed);
    for s in [
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    ] {
        let m = map_state(s);
        assert_eq!((m.status, m.native.as_str()), (JobStatus::Failed, s));
    }
    assert_eq!(
        map_state("TIMEOUT").reason.as_deref(),
        Some("time limit reached")
    );
    assert_eq!(
        map_state("OUT_OF_MEMORY").reason.as_deref(),
        Some("out of memory")
    );
    assert_eq!(map_state("CANCELLED").reason.as_deref(), Some("cancelled"));
    let m = map_state("CANCELLED by 1000");
    assert_eq!(
        (m.native.as_str(), m.reason.as_deref()),
        ("CANCELLED", Some("cancelled by uid 1000"))
    );
    // sacct without -P cuts wide states with `+`.
    assert_eq!(map_state("CANCELLED+").native, "CANCELLED");
    let m = map_state("WARPED");
    assert_eq!(m.status, JobStatus::Pending);
    assert!(
        m.reason
            .unwrap()
            .contains("unrecognized slurm state `WARPED`")
    );
}

fn acct(id: &str, fixture: &str) -> HpcJobInfo {
    from_acct(id, &parse_sacct(fixture).unwrap()[id], None)
}

#[test]
fn completed_job_metrics() {
    let i = acct("3", SACCT_LIST);
    assert_eq!(i.status, JobStatus::Completed);
    assert_eq!(i.exit_code, Some(0));
    assert_eq!(i.wall_time_seconds, Some(4.0));
    assert_eq!(i.cpu_hours, Some(2.939 / 3600.0));
    assert_eq!(i.peak_memory_gb, Some(331554816.0 / (1u64 << 30) as f64));
    assert_eq!(
        (i.native_state.as_deref(), i.reason),
        (Some("COMPLETED"), None)
    );
    let i = acct("23", SACCT_LIST);
    assert_eq!(i.cpu_hours, Some(4.598 / 3600.0));
    assert_eq!(i.peak_memory_gb, Some(277446656.0 / (1u64 << 30) as f64));
}

#[test]
fn failures_say_why() {
    let i = acct("4", SACCT_LIST);
    assert_eq!(
        (i.status, i.exit_code, i.reason.as_deref()),
        (JobStatus::Failed, Some(3), Some("exit code 3"))
    );
    let i = acct("9", SACCT_LIST);
    assert_eq!((i.status, i.exit_code), (JobStatus::Failed, None));
    assert_eq!(
        (i.native_state.as_deref(), i.reason.as_deref()),
        (Some("TIMEOUT"), Some("time limit reached"))
    );
    assert_eq!(i.wall_time_seconds, Some(83.0));
    let i = acct("10", SACCT_LIST);
    assert_eq!(
        (i.status, i.exit_code, i.reason.as_deref()),
        (JobStatus::Failed, None, Some("cancelled"))
    );
    let i = acct("25", SACCT_ENDED);
    assert_eq!(
        (i.exit_code, i.reason.as_deref()),
        (None, Some("cancelled by uid 0"))
    );
    assert_eq!(i.native_state.as_deref(), Some("CANCELLED"));
    let i = acct("27", SACCT_ENDED);
    assert_eq!(
        (i.exit_code, i.reason.as_deref()),
        (None, Some("killed by signal 9"))
    );
    // Cancelled before it ran: no metrics to speak of, but they are there.
    let i = acct("5", SACCT_LIST);
    assert_eq!(
        (i.status, i.wall_time_seconds, i.peak_memory_gb),
        (JobStatus::Failed, Some(0.0), None)
    );
}

#[test]
fn pending_reason_prefers_squeue() {
    let q = parse_squeue(SQUEUE_RECENT).unwrap();
    let a = parse_sacct(SACCT_LIST).unwrap();
    let i = from_acct("7", &a["7"], Some(&q["7"]));
    assert_eq!(
        (i.status, i.reason.as_deref()),
        (JobStatus::Pending, Some("JobHeldUser"))
    );
    assert_eq!((i.wall_time_seconds, i.cpu_hours), (None, None));
    let i = from_queue("6", &q["6"]);
    assert_eq!(
        (i.status, i.reason.as_deref(), i.exit_code),
        (JobStatus::Pending, Some("BeginTime"), None)
    );
}

#[test]
fn squeue_only_views() {
    let q = parse_squeue(SQUEUE_LIVE).unwrap();
    let i = from_queue("24", &q["24"]);
    assert_eq!(
        (i.status, i.reason, i.native_state.as_deref()),
        (JobStatus::Running, None, Some("RUNNING"))
    );
    let q = parse_squeue(SQUEUE_ENDED).unwrap();
    let i = from_queue("24", &q["24"]);
    assert_eq!((i.status, i.exit_code), (JobStatus::Completed, Some(0)));
    let i = from_queue("26", &q["26"]);
    assert_eq!(
        (i.status, i.exit_code, i.reason.as_deref()),
        (JobStatus::Failed, None, Some("NonZeroExitCode"))
    );
    let i = from_queue("25", &q["25"]);
    assert_eq!(i.reason.as_deref(), Some("cancelled"));
}

#[test]
fn lagging_accounting_does_not_end_a_job() {
    // Known to sacct as PENDING, unknown to squeue: reported as is, with why.
    let i = acct("24", SACCT_LAGGING);
    assert_eq!(i.status, JobStatus::Pending);
    assert!(
        i.reason
            .unwrap()
            .starts_with("slurmctld does not know this job")
    );
}

#[test]
fn which_jobs_need_sacct() {
    let q = parse_squeue(SQUEUE_RECENT).unwrap();
    assert!(needs_accounting(None));
    assert!(needs_accounting(Some(&q["3"])));
    assert!(needs_accounting(Some(&q["5"])));
    assert!(!needs_accounting(Some(&q["6"])));
    assert!(!needs_accounting(Some(&q["9"])));
}

#[test]
fn an_end_accounting_has_not_recorded_yet_is_not_final() {
    let q = parse_squeue(SQUEUE_ENDED).unwrap();
    let i = ending("26", &q["26"]);
    assert_eq!(
        (i.status, i.exit_code, i.native_state.as_deref()),
        (JobStatus::Running, None, Some("FAILED"))
    );
    assert!(i.reason.unwrap().contains("accounting"));
}
