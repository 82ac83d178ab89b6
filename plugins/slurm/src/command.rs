//! What a scheduler command's result means for the caller: which failures
//! are transient ([`BackendError::Unavailable`]: retry later), which are the
//! request's fault ([`BackendError::InvalidRequest`]), and how to read
//! `sbatch --parsable`.
//!
//! ```
//! use hpc_plugin_slurm::command::{is_outage, parse_sbatch_id};
//!
//! assert!(is_outage("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"));
//! assert_eq!(parse_sbatch_id("42;cluster1\n").unwrap(), "42");
//! ```
//!
//! The messages below were taken from SLURM 22.05 on the test cluster
//! (scripts/slurm-testcluster.sh): slurmctld down makes sbatch, squeue and
//! scancel fail after ~9 s with `Unable to contact slurm controller`;
//! slurmdbd down makes sacct fail at once with `Connection refused`.

use hpc_plugin_sdk::BackendError;
use hpc_plugin_sdk::host::process::{ProcessError, RunOutput};

/// Text in a command's error output that means "the scheduler is down or
/// slow", compared lowercased. These deserve a retry, not a failed job.
pub const OUTAGE_MARKERS: &[&str] = &[
    "unable to contact slurm controller",
    "socket timed out",
    "connection refused",
    "connection timed out",
    "connection reset",
    "zero bytes were transmitted or received",
    "communication connection failure",
    "transport endpoint is not connected",
    "problem talking to the database",
    "slurmdbd not responding",
    "temporarily unable to accept job",
    "resource temporarily unavailable",
    "controller in standby mode",
    "unable to establish control machine address",
];

/// Whether `stderr` reports a scheduler outage (see [`OUTAGE_MARKERS`]).
pub fn is_outage(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    OUTAGE_MARKERS.iter().any(|m| lower.contains(m))
}

/// A command's error output as one line, without the `prog: error: `
/// prefixes, for error messages.
pub fn message(out: &RunOutput) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let text = if text.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout)
    } else {
        text
    };
    let lines: Vec<&str> = text
        .lines()
        .map(|l| {
            let l = l.trim();
            l.split_once(": error: ").map_or(l, |(_, rest)| rest)
        })
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        exit_description(out)
    } else {
        lines.join("; ")
    }
}

/// `exit status N` or `killed by signal N`.
fn exit_description(out: &RunOutput) -> String {
    match (out.exit_code, out.signal) {
        (Some(code), _) => format!("exit status {code}, no message"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => "no exit status".into(),
    }
}

/// Whether the command exited 0.
pub fn succeeded(out: &RunOutput) -> bool {
    out.exit_code == Some(0)
}

/// The error for a scheduler command that could not run or finish.
///
/// `TimedOut` is an outage: the scheduler did not answer within the
/// command timeout (`SLURM_COMMAND_TIMEOUT_MS`).
pub fn process_error(program: &str, err: ProcessError) -> BackendError {
    match err {
        ProcessError::TimedOut(m) => BackendError::Unavailable(format!(
            "`{program}` did not finish in time (scheduler slow or down): {m}"
        )),
        ProcessError::Denied(m) => BackendError::Denied(format!("may not run `{program}`: {m}")),
        ProcessError::NotFound(m) | ProcessError::Invalid(m) | ProcessError::Failed(m) => {
            BackendError::Internal(format!("could not run `{program}`: {m}"))
        }
    }
}

/// The error for a query command (`squeue`, `sacct`, `scancel`) that exited
/// non-zero: an outage, or something unexpected.
pub fn query_failure(program: &str, out: &RunOutput) -> BackendError {
    let msg = message(out);
    if is_outage(&msg) {
        BackendError::Unavailable(format!("`{program}` could not reach the scheduler: {msg}"))
    } else {
        BackendError::Internal(format!("`{program}` failed: {msg}"))
    }
}

/// The error for an `sbatch` that exited non-zero: an outage, or a refusal
/// of the request (invalid partition, impossible resources, account or QOS
/// limits), which retrying unchanged would not fix.
pub fn sbatch_failure(out: &RunOutput) -> BackendError {
    let msg = message(out);
    if is_outage(&msg) {
        BackendError::Unavailable(format!("`sbatch` could not reach the scheduler: {msg}"))
    } else {
        BackendError::InvalidRequest(format!("slurm refused the job: {msg}"))
    }
}

/// The job id from `sbatch --parsable` output: `ID` or `ID;cluster`.
pub fn parse_sbatch_id(stdout: &str) -> Result<String, BackendError> {
    let first = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let id = first.split(';').next().unwrap_or("");
    if is_plain_job_id(id) {
        Ok(id.to_string())
    } else {
        Err(BackendError::Internal(format!(
            "`sbatch --parsable` printed `{}`, not a job id",
            stdout.trim().escape_debug()
        )))
    }
}

/// Whether `id` is a plain SLURM job id: ASCII digits for a number from 1
/// to 2147483647.
///
/// squeue 22.05 reads ids as a C `int`: for 2147483648 to 4294967295 it
/// refuses the whole list (`squeue: error: Invalid job id: N`), so such an
/// id must never reach it.
pub fn is_plain_job_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 10
        && id.bytes().all(|b| b.is_ascii_digit())
        && id
            .parse::<u64>()
            .is_ok_and(|n| n > 0 && n <= i32::MAX as u64)
}

/// The largest array task index an element id may carry: SLURM's own
/// ceiling on `MaxArraySize` is 4000001, so indices end at 4000000.
pub const MAX_TASK_INDEX: u32 = 4_000_000;

/// Whether `id` is a job id this backend hands out: a plain id
/// ([`is_plain_job_id`]) or an array element `<array id>_<index>`
/// (`12345_7`, as squeue and sacct print it), the index in decimal without
/// leading zeros up to [`MAX_TASK_INDEX`]. Heterogeneous components
/// (`12+0`) and whole-array forms (`12_[0-3]`) are not accepted: this
/// backend never submits such jobs.
pub fn is_job_id(id: &str) -> bool {
    match id.split_once('_') {
        None => is_plain_job_id(id),
        Some((job, index)) => is_plain_job_id(job) && task_index(index).is_some(),
    }
}

/// An array task index, as [`is_job_id`] reads it.
pub fn task_index(s: &str) -> Option<u32> {
    let digits = !s.is_empty() && s.len() <= 7 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&n| n <= MAX_TASK_INDEX)
}

/// An array element id split into the array's id and the task index.
pub fn split_element(id: &str) -> Option<(&str, u32)> {
    let (job, index) = id.split_once('_')?;
    Some((job, task_index(index)?)).filter(|_| is_plain_job_id(job))
}

/// The answer for an id that [`is_job_id`] refuses, without asking SLURM.
pub fn not_a_job_id(id: &str) -> BackendError {
    BackendError::NotFound(format!("`{}` is not a slurm job id", id.escape_debug()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(code: Option<i32>, stdout: &str, stderr: &str) -> RunOutput {
        RunOutput {
            exit_code: code,
            signal: None,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
            truncated: false,
        }
    }

    // Real messages from SLURM 22.05 (scripts/slurm-testcluster.sh).
    const CTLD_DOWN_SBATCH: &str = "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n";
    const CTLD_DOWN_SQUEUE: &str =
        "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n";
    const DBD_DOWN_SACCT: &str = "sacct: error: slurm_persist_conn_open_without_init: failed to open persistent connection to host:localhost:6819: Connection refused\nsacct: error: Sending PersistInit msg: Connection refused\nsacct: error: Problem talking to the database: Connection refused\n";
    const BAD_PARTITION: &str = "sbatch: error: invalid partition specified: nosuch\nsbatch: error: Batch job submission failed: Invalid partition name specified\n";
    const TOO_MANY_CPUS: &str =
        "sbatch: error: Batch job submission failed: More processors requested than permitted\n";
    const TOO_MUCH_MEMORY: &str = "sbatch: error: Memory specification can not be satisfied\nsbatch: error: Batch job submission failed: Requested node configuration is not available\n";

    #[test]
    fn outages_are_unavailable() {
        assert!(matches!(
            sbatch_failure(&out(Some(1), "", CTLD_DOWN_SBATCH)),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            query_failure("squeue", &out(Some(1), "", CTLD_DOWN_SQUEUE)),
            BackendError::Unavailable(_)
        ));
        let e = query_failure("sacct", &out(Some(1), "", DBD_DOWN_SACCT));
        let BackendError::Unavailable(m) = e else {
            panic!("{e:?}")
        };
        assert!(
            m.starts_with(
                "`sacct` could not reach the scheduler: slurm_persist_conn_open_without_init"
            ),
            "{m}"
        );
        assert!(matches!(
            process_error("squeue", ProcessError::TimedOut("20000 ms".into())),
            BackendError::Unavailable(_)
        ));
    }

    #[test]
    fn refusals_are_invalid_requests_with_sbatch_message() {
        let BackendError::InvalidRequest(m) = sbatch_failure(&out(Some(1), "", BAD_PARTITION))
        else {
            panic!()
        };
        assert_eq!(
            m,
            "slurm refused the job: invalid partition specified: nosuch; Batch job submission failed: Invalid partition name specified"
        );
        for m in [TOO_MANY_CPUS, TOO_MUCH_MEMORY] {
            assert!(matches!(
                sbatch_failure(&out(Some(1), "", m)),
                BackendError::InvalidRequest(_)
            ));
        }
    }

    #[test]
    fn message_without_stderr() {
        assert_eq!(message(&out(Some(3), "", "")), "exit status 3, no message");
        let killed = RunOutput {
            signal: Some(9),
            ..out(None, "", "")
        };
        assert_eq!(message(&killed), "killed by signal 9");
    }

    #[test]
    fn sbatch_ids() {
        assert_eq!(parse_sbatch_id("12\n").unwrap(), "12");
        assert_eq!(parse_sbatch_id("\n77;testcluster\n").unwrap(), "77");
        for bad in ["", "Submitted batch job 12", "12_3", "0", "abc;x"] {
            assert!(
                matches!(parse_sbatch_id(bad), Err(BackendError::Internal(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn job_ids() {
        for ok in ["1", "42", "2147483647", "12_3", "12_0", "7_4000000"] {
            assert!(is_job_id(ok), "{ok}");
        }
        assert!(!is_plain_job_id("12_3"));
        assert_eq!(split_element("12_3"), Some(("12", 3)));
        assert_eq!(split_element("12"), None);
        for bad in [
            "",
            "0",
            "00",
            "-1",
            "+1",
            "1.0",
            "12+0",
            "12_",
            "_3",
            "12_03",
            "12_-1",
            "12_[0-3]",
            "12_4000001",
            "0_1",
            "12_3_4",
            "2147483648",
            "4294967295",
            "12345678901",
            " 1",
            "١",
        ] {
            assert!(!is_job_id(bad), "{bad:?}");
        }
    }
}
