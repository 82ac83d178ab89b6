//! The `squeue` and `sacct` command lines this backend runs, and parsers for
//! what they print.
//!
//! ```
//! use hpc_plugin_slurm::sacct::{parse_sacct, parse_squeue};
//!
//! let q = parse_squeue("7|PENDING|JobHeldUser\n").unwrap();
//! assert_eq!(q["7"].state, "PENDING");
//!
//! let a = parse_sacct("3|COMPLETED|0:0|4|00:02.939||None\n3.batch|COMPLETED|0:0|4|00:02.939|331554816|\n").unwrap();
//! assert_eq!(a["3"].max_rss_bytes, Some(331554816));
//! assert_eq!(a["3"].total_cpu_seconds, Some(2.939));
//! ```
//!
//! Both use `|` as the field separator (`-P` for sacct, an explicit format for
//! squeue); no field before the last can contain one, and the last (the
//! reason) is read whole.

use std::collections::HashMap;

use crate::command::is_job_id;

/// squeue's output format: job id, state (long form), reason.
pub const SQUEUE_FORMAT: &str = "%i|%T|%r";

/// sacct's fields. `JobID` is `ID` for the job line and `ID.step` for each
/// step (`batch`, `extern`, `0`, ...). All exist in SLURM 22.05
/// (`sacct --helpformat`).
pub const SACCT_FIELDS: &str = "JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS,Reason";

/// `squeue` arguments for `ids` (comma-joined). `-t all` includes finished
/// jobs still in the controller's memory (`MinJobAge`); `--all` includes
/// hidden partitions, which plain squeue leaves out; `-r` lists an array's
/// pending elements one per line (`12_3`), never folded (`12_[0-9]`).
pub fn squeue_args(ids: &[&str]) -> Vec<String> {
    [
        "--all",
        "-r",
        "-h",
        "-t",
        "all",
        "-j",
        &ids.join(","),
        "-o",
        SQUEUE_FORMAT,
    ]
    .map(String::from)
    .to_vec()
}

/// `sacct` arguments for `ids` (comma-joined). `--noconvert` makes MaxRSS
/// plain bytes; with `-j` sacct looks back to the epoch, not just today.
pub fn sacct_args(ids: &[&str]) -> Vec<String> {
    [
        "-P",
        "-n",
        "--noconvert",
        "-j",
        &ids.join(","),
        "-o",
        SACCT_FIELDS,
    ]
    .map(String::from)
    .to_vec()
}

/// One job as squeue shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueEntry {
    /// `PENDING`, `RUNNING`, `COMPLETED`, ...
    pub state: String,
    /// Why it is pending, or why it ended (`Resources`, `NonZeroExitCode`);
    /// `None` when there is nothing to say.
    pub reason: String,
}

/// One job as sacct shows it: the job line, plus what its steps add.
#[derive(Debug, Clone, PartialEq)]
pub struct AcctJob {
    /// The job line's state, whole: `CANCELLED by 0` keeps its uid.
    pub state: String,
    /// The job line's `ExitCode` as (exit status, signal).
    pub exit: Option<(i32, i32)>,
    /// Wall time in seconds.
    pub elapsed_seconds: Option<u64>,
    /// CPU time used, in seconds: the job line's `TotalCPU`, which already
    /// sums its steps (job 3 above: job line and `.batch` both 2.939 s).
    /// When the job line has none, the sum of the steps'.
    pub total_cpu_seconds: Option<f64>,
    /// The largest `MaxRSS` of any step. The job line has none: MaxRSS is
    /// sampled per step (each second, `JobAcctGatherFrequency=task=1`), so a
    /// job shorter than a sample has none at all.
    pub max_rss_bytes: Option<u64>,
    /// The job line's `Reason` (`BeginTime`, `None`, ...).
    pub reason: String,
}

/// Parse `squeue -h -o "%i|%T|%r"` output, keyed by job id (plain, or an
/// array element's `12_3`). Lines for heterogeneous job components (`12+0`)
/// or folded array elements (`12_[0-9]`) are skipped.
pub fn parse_squeue(stdout: &str) -> Result<HashMap<String, QueueEntry>, String> {
    let mut jobs = HashMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.splitn(3, '|');
        let (Some(id), Some(state), Some(reason)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(format!(
                "unexpected `squeue` line `{}`",
                line.escape_debug()
            ));
        };
        let id = id.trim();
        if !is_job_id(id) {
            continue;
        }
        jobs.insert(
            id.to_string(),
            QueueEntry {
                state: state.trim().into(),
                reason: reason.trim().into(),
            },
        );
    }
    Ok(jobs)
}

/// Parse `sacct -P -n --noconvert -o JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS,Reason`
/// output, keyed by job id. sacct names an array element's rows like a
/// job's, `12_3` and `12_3.batch`, so each element is a job of its own here;
/// a pending array's folded row (`12_[0-9]`) is skipped.
pub fn parse_sacct(stdout: &str) -> Result<HashMap<String, AcctJob>, String> {
    let mut jobs: HashMap<String, AcctJob> = HashMap::new();
    // Steps may in principle come before their job line; keep them aside.
    let mut step_cpu: HashMap<String, f64> = HashMap::new();
    let mut step_rss: HashMap<String, u64> = HashMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.splitn(7, '|').collect();
        if f.len() != 7 {
            return Err(format!("unexpected `sacct` line `{}`", line.escape_debug()));
        }
        let bad = |what: &str| {
            format!(
                "unexpected {what} in `sacct` line `{}`",
                line.escape_debug()
            )
        };
        let (job, step) = match f[0].split_once('.') {
            Some((job, step)) => (job, Some(step)),
            None => (f[0], None),
        };
        if !is_job_id(job) {
            continue;
        }
        let cpu = parse_cpu_time(f[4]).map_err(|_| bad("`TotalCPU`"))?;
        let rss = parse_bytes(f[5]).map_err(|_| bad("`MaxRSS`"))?;
        if step.is_some() {
            if let Some(c) = cpu {
                *step_cpu.entry(job.into()).or_default() += c;
            }
            if let Some(r) = rss {
                let max = step_rss.entry(job.into()).or_default();
                *max = (*max).max(r);
            }
            continue;
        }
        let elapsed = match f[3].trim() {
            "" => None,
            s => Some(s.parse::<u64>().map_err(|_| bad("`ElapsedRaw`"))?),
        };
        let exit = match f[2].trim() {
            "" => None,
            s => Some(parse_exit_code(s).ok_or_else(|| bad("`ExitCode`"))?),
        };
        jobs.insert(
            job.into(),
            AcctJob {
                state: f[1].trim().into(),
                exit,
                elapsed_seconds: elapsed,
                total_cpu_seconds: cpu,
                max_rss_bytes: rss,
                reason: f[6].trim().into(),
            },
        );
    }
    for (id, job) in &mut jobs {
        if job.total_cpu_seconds.is_none() {
            job.total_cpu_seconds = step_cpu.get(id).copied();
        }
        if let Some(&r) = step_rss.get(id) {
            job.max_rss_bytes = Some(job.max_rss_bytes.unwrap_or(0).max(r));
        }
    }
    Ok(jobs)
}

/// `N:S` (exit status, signal).
pub fn parse_exit_code(s: &str) -> Option<(i32, i32)> {
    let (code, sig) = s.split_once(':')?;
    Some((code.parse().ok()?, sig.parse().ok()?))
}

/// SLURM's CPU time, `[D-][HH:]MM:SS[.mmm]`, in seconds; `None` for an empty
/// field.
pub fn parse_cpu_time(s: &str) -> Result<Option<f64>, String> {
    let s = s.trim();
    let bad = || format!("`{}` is not a cpu time", s.escape_debug());
    if s.is_empty() {
        return Ok(None);
    }
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) => (d.parse::<u64>().map_err(|_| bad())?, rest),
        None => (0, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (h, m, sec) = match parts[..] {
        [m, sec] => ("0", m, sec),
        [h, m, sec] => (h, m, sec),
        _ => return Err(bad()),
    };
    let whole = |v: &str| v.parse::<u64>().map_err(|_| bad());
    let seconds: f64 = sec.parse().map_err(|_| bad())?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(bad());
    }
    Ok(Some(
        ((days * 24 + whole(h)?) * 3600 + whole(m)? * 60) as f64 + seconds,
    ))
}

/// A byte count, plain (`--noconvert`) or with a binary suffix (`K`, `M`,
/// `G`, `T`, `P`, as sacct prints without `--noconvert`); `None` for empty.
pub fn parse_bytes(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    let bad = || format!("`{}` is not a byte count", s.escape_debug());
    if s.is_empty() {
        return Ok(None);
    }
    let (num, shift) = match s.as_bytes()[s.len() - 1] {
        b'K' => (&s[..s.len() - 1], 10),
        b'M' => (&s[..s.len() - 1], 20),
        b'G' => (&s[..s.len() - 1], 30),
        b'T' => (&s[..s.len() - 1], 40),
        b'P' => (&s[..s.len() - 1], 50),
        _ => (s, 0),
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Ok(Some((value * (1u64 << shift) as f64).round() as u64))
}

#[cfg(test)]
#[path = "sacct_tests.rs"]
pub(crate) mod tests;
