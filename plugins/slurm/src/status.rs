//! SLURM job states to the seed's four, with the native state and a reason,
//! and the metrics of a finished job.
//!
//! ```
//! use hpc_plugin_sdk::JobStatus;
//! use hpc_plugin_slurm::status::map_state;
//!
//! let m = map_state("CANCELLED by 0");
//! assert_eq!((m.status, m.native.as_str()), (JobStatus::Failed, "CANCELLED"));
//! assert_eq!(m.reason.as_deref(), Some("cancelled by uid 0"));
//! ```
//!
//! | SLURM state | status |
//! |---|---|
//! | PENDING, CONFIGURING, REQUEUED, REQUEUE_HOLD, REQUEUE_FED, RESV_DEL_HOLD, SPECIAL_EXIT | pending |
//! | RUNNING, COMPLETING, SUSPENDED, STOPPED, SIGNALING, STAGE_OUT, RESIZING | running |
//! | COMPLETED | completed |
//! | FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, REVOKED | failed |
//!
//! SUSPENDED and friends count as running: the job holds its allocation and
//! has started; it is not waiting to. A state this table does not know is
//! reported as pending (never as ended) with a reason that says so.

use hpc_plugin_sdk::{HpcJobInfo, JobStatus, bytes_to_gb};

use crate::sacct::{AcctJob, QueueEntry};

/// A state, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// One of the seed's four.
    pub status: JobStatus,
    /// SLURM's own word, without the `by <uid>` of `CANCELLED by 0`.
    pub native: String,
    /// Why, when the state alone says it (`time limit reached`).
    pub reason: Option<String>,
}

/// Map a squeue `%T` or sacct `State` value.
pub fn map_state(state: &str) -> Mapped {
    let mut words = state.split_whitespace();
    let native = words.next().unwrap_or("").trim_end_matches('+').to_string();
    // sacct: `CANCELLED by 1000` names the uid that cancelled.
    let by_uid = match (words.next(), words.next()) {
        (Some("by"), Some(uid)) => Some(uid.to_string()),
        _ => None,
    };
    let (status, reason): (JobStatus, Option<String>) = match native.as_str() {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
        | "RESV_DEL_HOLD" | "SPECIAL_EXIT" => (JobStatus::Pending, None),
        "RUNNING" | "COMPLETING" | "SUSPENDED" | "STOPPED" | "SIGNALING" | "STAGE_OUT"
        | "RESIZING" => (JobStatus::Running, None),
        "COMPLETED" => (JobStatus::Completed, None),
        "FAILED" => (JobStatus::Failed, None),
        "CANCELLED" => (
            JobStatus::Failed,
            Some(by_uid.map_or_else(
                || "cancelled".to_string(),
                |uid| format!("cancelled by uid {uid}"),
            )),
        ),
        "TIMEOUT" => (JobStatus::Failed, Some("time limit reached".into())),
        "OUT_OF_MEMORY" => (JobStatus::Failed, Some("out of memory".into())),
        "NODE_FAIL" => (JobStatus::Failed, Some("node failure".into())),
        "PREEMPTED" => (JobStatus::Failed, Some("preempted".into())),
        "BOOT_FAIL" => (JobStatus::Failed, Some("node boot failure".into())),
        "DEADLINE" => (JobStatus::Failed, Some("deadline reached".into())),
        "REVOKED" => (
            JobStatus::Failed,
            Some("revoked: started on another cluster of the federation".into()),
        ),
        other => (
            JobStatus::Pending,
            Some(format!(
                "unrecognized slurm state `{}`",
                other.escape_debug()
            )),
        ),
    };
    Mapped {
        status,
        native,
        reason,
    }
}

/// The info for a job squeue lists, when sacct has nothing better (the job
/// has not ended, or its accounting record is not there yet).
pub fn from_queue(job_id: &str, q: &QueueEntry) -> HpcJobInfo {
    let m = map_state(&q.state);
    HpcJobInfo {
        job_id: job_id.into(),
        status: m.status,
        // squeue has no exit status; only COMPLETED implies one.
        exit_code: (m.status == JobStatus::Completed).then_some(0),
        wall_time_seconds: None,
        cpu_hours: None,
        peak_memory_gb: None,
        reason: m.reason.clone().or_else(|| useful_reason(&q.reason)),
        native_state: Some(m.native),
    }
}

/// A job squeue shows ended that the accounting database does not list yet
/// (slurmdbd records an end a moment after slurmctld, and an array
/// element's first): not reported final until sacct has the end with its
/// exit code and metrics, since a final answer is never asked again. squeue
/// keeps an ended job for `MinJobAge` (300 s by default); an end the
/// database never records is `not-found` after that.
pub fn ending(job_id: &str, q: &QueueEntry) -> HpcJobInfo {
    let m = map_state(&q.state);
    HpcJobInfo {
        job_id: job_id.into(),
        status: JobStatus::Running,
        exit_code: None,
        wall_time_seconds: None,
        cpu_hours: None,
        peak_memory_gb: None,
        reason: Some(format!(
            "ended ({}); waiting for slurm's accounting to record it",
            m.native
        )),
        native_state: Some(m.native),
    }
}

/// The info for a job from its accounting record. `queued` is what squeue
/// says about it, if it lists it.
pub fn from_acct(job_id: &str, a: &AcctJob, queued: Option<&QueueEntry>) -> HpcJobInfo {
    let m = map_state(&a.state);
    let ended = m.status.is_terminal();
    let (exit_code, exit_reason) = if ended {
        exit_of(&m, a.exit)
    } else {
        (None, None)
    };
    let mut reason = m.reason.clone().or(exit_reason);
    if !ended {
        reason = match queued {
            Some(q) => reason.or_else(|| useful_reason(&q.reason)),
            // Not in squeue, yet not ended in the accounting: the controller
            // no longer knows the job (its state was lost), or the end has
            // not reached the database yet. Either way it is not finished
            // as far as anyone can tell, so it is not reported as ended.
            None => Some(format!(
                "slurmctld does not know this job; the accounting database last recorded it as `{}`",
                m.native
            )),
        };
    }
    HpcJobInfo {
        job_id: job_id.into(),
        status: m.status,
        exit_code,
        wall_time_seconds: if ended {
            a.elapsed_seconds.map(|s| s as f64)
        } else {
            None
        },
        cpu_hours: if ended {
            a.total_cpu_seconds
                .map(hpc_plugin_sdk::resources::seconds_to_hours)
        } else {
            None
        },
        peak_memory_gb: if ended {
            a.max_rss_bytes.map(bytes_to_gb)
        } else {
            None
        },
        reason,
        native_state: Some(m.native),
    }
}

/// The exit code of an ended job and, for a failure, the reason it implies.
///
/// `ExitCode` is `status:signal`. A job killed by a signal has no exit code;
/// COMPLETED and FAILED report the status; the other failures (CANCELLED,
/// TIMEOUT, ...) show `0:0` or `0:15` on the job line, which says nothing
/// about the program, so they report none unless it is non-zero.
fn exit_of(m: &Mapped, exit: Option<(i32, i32)>) -> (Option<i32>, Option<String>) {
    let Some((code, signal)) = exit else {
        return ((m.status == JobStatus::Completed).then_some(0), None);
    };
    let failed = m.native == "FAILED";
    if signal != 0 {
        return (None, failed.then(|| format!("killed by signal {signal}")));
    }
    match m.native.as_str() {
        "COMPLETED" => (Some(code), None),
        "FAILED" => (Some(code), Some(format!("exit code {code}"))),
        _ => ((code != 0).then_some(code), None),
    }
}

/// squeue's and sacct's reason, unless it is `None` (nothing to say).
fn useful_reason(reason: &str) -> Option<String> {
    match reason.trim() {
        "" | "None" | "(null)" => None,
        r => Some(r.to_string()),
    }
}

/// Whether squeue's view of a job is final enough to skip sacct: it has not
/// ended, so there are no metrics to fetch yet.
pub fn needs_accounting(queued: Option<&QueueEntry>) -> bool {
    queued.is_none_or(|q| map_state(&q.state).status.is_terminal())
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
