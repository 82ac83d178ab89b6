//! Tests for [`super`], on output captured from SLURM 22.05 on the test
//! cluster (scripts/slurm-testcluster.sh) with the exact command lines of
//! [`squeue_args`] and [`sacct_args`].

use super::*;

/// `squeue --all -h -t all -j 3,4,5,6,7,8,9,10,23,99999 -o %i|%T|%r`, after
/// 3, 4, 5, 8, 9 and 10 had left the controller (MinJobAge); 99999 never existed.
pub const SQUEUE_LIST: &str = "23|COMPLETED|None\n6|PENDING|BeginTime\n7|PENDING|JobHeldUser\n";

/// The same squeue, minutes earlier: finished jobs are still listed.
pub const SQUEUE_RECENT: &str = "5|CANCELLED|Resources\n8|CANCELLED|BeginTime\n3|COMPLETED|None\n\
4|FAILED|NonZeroExitCode\n6|PENDING|BeginTime\n7|PENDING|JobHeldUser\n9|RUNNING|None\n";

/// `squeue ... -j 24,25,26,27`: two running, two waiting for CPUs.
pub const SQUEUE_LIVE: &str =
    "26|PENDING|Resources\n27|PENDING|Priority\n24|RUNNING|None\n25|RUNNING|None\n";

/// `squeue ... -j 99999` (or any single unknown id): exit status 1.
pub const SQUEUE_UNKNOWN_STDERR: &str = "slurm_load_jobs error: Invalid job id specified\n";

/// `sacct -P -n --noconvert -j 3,4,5,6,7,8,9,10,23,99999 -o JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS,Reason`:
/// 3 completed (300 MB for 3 s), 4 exited 3, 5 and 8 cancelled while
/// pending, 6 pending (`--begin`), 7 held, 9 hit `--time=1`, 10 cancelled
/// while running, 23 ran an `srun` step besides its batch step.
pub const SACCT_LIST: &str = "\
3|COMPLETED|0:0|4|00:02.939||None
3.batch|COMPLETED|0:0|4|00:02.939|331554816|
4|FAILED|3:0|1|00:00.002||None
4.batch|FAILED|3:0|1|00:00.002|3112960|
5|CANCELLED|0:0|0|00:00:00||None
6|PENDING|0:0|0|00:00:00||BeginTime
7|PENDING|0:0|0|00:00:00||JobHeldUser
8|CANCELLED|0:0|0|00:00:00||BeginTime
9|TIMEOUT|0:0|83|00:00.001||None
9.batch|CANCELLED|0:15|83|00:00.001|3117056|
10|CANCELLED|0:15|2|00:00.001||None
10.batch|CANCELLED|0:15|2|00:00.001|3366912|
23|COMPLETED|0:0|5|00:04.598||None
23.batch|COMPLETED|0:0|5|00:02.351|277446656|
23.0|COMPLETED|0:0|2|00:02.246|171098112|
";

/// sacct for 24-27 while squeue said running/pending: the accounting lags.
/// The running jobs' job lines still say PENDING; 26 and 27 are not there.
pub const SACCT_LAGGING: &str = "\
24|PENDING|0:0|2|00:00:00||None
24.batch|RUNNING|0:0|2|00:00:00||
25|PENDING|0:0|2|00:00:00||None
25.batch|RUNNING|0:0|2|00:00:00||
";

/// The same four ended: 24 completed, 25 `scancel`ed while running (the job
/// line keeps the uid), 26 exited 3, 27 killed itself with SIGKILL.
pub const SACCT_ENDED: &str = "\
24|COMPLETED|0:0|4|00:04.281||None
24.batch|COMPLETED|0:0|4|00:04.281|120078336|
25|CANCELLED by 0|0:0|2|00:00.003||None
25.batch|CANCELLED|0:15|2|00:00.003|3104768|
26|FAILED|3:0|2|00:00.003||None
26.batch|FAILED|3:0|2|00:00.003|3125248|
27|FAILED|0:9|0|00:00.002||None
27.batch|CANCELLED|0:9|0|00:00.002||
";

/// And squeue for them.
pub const SQUEUE_ENDED: &str =
    "25|CANCELLED|None\n24|COMPLETED|None\n26|FAILED|NonZeroExitCode\n27|FAILED|JobLaunchFailure\n";

/// `sacct ... -j 28,29,31,6,999999` for jobs the plugin submitted
/// (tests/real_slurm.rs): sacct sorts by id; job 28 ran for less than one
/// sample, so it has no MaxRSS at all.
pub const SACCT_PLUGIN_JOBS: &str = "\
6|PENDING|0:0|0|00:00:00||BeginTime
28|COMPLETED|0:0|0|00:00.003||None
28.batch|COMPLETED|0:0|0|00:00.003||
29|FAILED|3:0|1|00:00.004||None
29.batch|FAILED|3:0|1|00:00.004|3203072|
31|CANCELLED by 0|0:0|2|00:00.003||None
31.batch|CANCELLED|0:15|2|00:00.003|1691648|
";

#[test]
fn short_job_has_no_peak_memory() {
    let a = parse_sacct(SACCT_PLUGIN_JOBS).unwrap();
    assert_eq!(a.len(), 4);
    assert_eq!(a["28"].max_rss_bytes, None);
    assert_eq!(a["28"].total_cpu_seconds, Some(0.003));
    assert_eq!(a["31"].state, "CANCELLED by 0");
    assert_eq!(a["29"].max_rss_bytes, Some(3203072));
}

#[test]
fn command_lines() {
    assert_eq!(
        squeue_args(&["3", "4"]),
        [
            "--all", "-r", "-h", "-t", "all", "-j", "3,4", "-o", "%i|%T|%r"
        ]
    );
    assert_eq!(
        sacct_args(&["3"]),
        [
            "-P",
            "-n",
            "--noconvert",
            "-j",
            "3",
            "-o",
            "JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS,Reason"
        ]
    );
}

#[test]
fn squeue_lines() {
    let q = parse_squeue(SQUEUE_LIST).unwrap();
    assert_eq!(q.len(), 3);
    assert_eq!(
        q["7"],
        QueueEntry {
            state: "PENDING".into(),
            reason: "JobHeldUser".into()
        }
    );
    assert!(!q.contains_key("99999"));
    assert_eq!(
        parse_squeue(SQUEUE_RECENT).unwrap()["4"].reason,
        "NonZeroExitCode"
    );
    assert!(parse_squeue("").unwrap().is_empty());
    // Array elements are jobs of their own; a folded line is skipped; a
    // line without fields is an error.
    let q =
        parse_squeue("12_3|RUNNING|None\n12_[4-9]|PENDING|Resources\n12+0|RUNNING|None\n").unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q["12_3"].state, "RUNNING");
    assert!(parse_squeue("garbage\n").is_err());
}

#[test]
fn sacct_job_lines_and_steps() {
    let a = parse_sacct(SACCT_LIST).unwrap();
    assert_eq!(a.len(), 9);
    assert_eq!(
        a["3"],
        AcctJob {
            state: "COMPLETED".into(),
            exit: Some((0, 0)),
            elapsed_seconds: Some(4),
            total_cpu_seconds: Some(2.939),
            max_rss_bytes: Some(331554816),
            reason: "None".into(),
        }
    );
    assert_eq!(a["4"].exit, Some((3, 0)));
    assert_eq!(a["6"].max_rss_bytes, None);
    assert_eq!(a["6"].total_cpu_seconds, Some(0.0));
    assert_eq!(a["9"].state, "TIMEOUT");
    assert_eq!(a["10"].exit, Some((0, 15)));
    // The job line's TotalCPU is the sum of its steps'; MaxRSS the largest.
    assert_eq!(a["23"].total_cpu_seconds, Some(4.598));
    assert_eq!(a["23"].max_rss_bytes, Some(277446656));
    assert!(!a.contains_key("99999"));
    assert_eq!(
        parse_sacct(SACCT_ENDED).unwrap()["25"].state,
        "CANCELLED by 0"
    );
    assert_eq!(parse_sacct(SACCT_ENDED).unwrap()["27"].exit, Some((0, 9)));
}

#[test]
fn sacct_fallbacks_and_errors() {
    // No TotalCPU on the job line: sum the steps.
    let a = parse_sacct("5|COMPLETED|0:0|9|||None\n5.batch|COMPLETED|0:0|9|00:01.5|2K|\n5.0|COMPLETED|0:0|9|01:00|1M|\n")
        .unwrap();
    assert_eq!(a["5"].total_cpu_seconds, Some(61.5));
    assert_eq!(a["5"].max_rss_bytes, Some(1 << 20));
    // A reason with `|` stays whole; array elements are jobs of their own
    // (with their steps); folded array and het lines are skipped.
    let a = parse_sacct(
        "6|PENDING|0:0|0|00:00:00||a|b\n7_1|COMPLETED|0:0|1|00:00.5||None\n7_1.batch|COMPLETED|0:0|1|00:00.5|3K|\n7_[2-5]|PENDING|0:0|0|00:00:00||None\n8+0|RUNNING|0:0|1|||\n",
    )
    .unwrap();
    assert_eq!(a["6"].reason, "a|b");
    assert_eq!(a["7_1"].max_rss_bytes, Some(3 << 10));
    assert_eq!(a.len(), 2);
    assert!(parse_sacct("1|COMPLETED|0:0\n").is_err());
    assert!(parse_sacct("1|COMPLETED|x|1|||None\n").is_err());
    assert!(parse_sacct("1|COMPLETED|0:0|1|soon||None\n").is_err());
}

#[test]
fn cpu_times() {
    assert_eq!(parse_cpu_time("00:02.939"), Ok(Some(2.939)));
    assert_eq!(parse_cpu_time("00:00:00"), Ok(Some(0.0)));
    assert_eq!(parse_cpu_time("01:02:03"), Ok(Some(3723.0)));
    assert_eq!(
        parse_cpu_time("2-03:04:05.5"),
        Ok(Some(2.0 * 86400.0 + 3.0 * 3600.0 + 245.5))
    );
    assert_eq!(parse_cpu_time(""), Ok(None));
    for bad in ["1", "a:b", "1-2", "1:2:3:4", "00:-1"] {
        assert!(parse_cpu_time(bad).is_err(), "{bad}");
    }
}

#[test]
fn byte_counts() {
    assert_eq!(parse_bytes("331554816"), Ok(Some(331554816)));
    assert_eq!(parse_bytes("1.5G"), Ok(Some(3 << 29)));
    assert_eq!(parse_bytes("100K"), Ok(Some(102400)));
    assert_eq!(parse_bytes(""), Ok(None));
    assert!(parse_bytes("lots").is_err());
    assert!(parse_bytes("-1").is_err());
}

#[test]
fn exit_codes() {
    assert_eq!(parse_exit_code("0:15"), Some((0, 15)));
    assert_eq!(parse_exit_code("3:0"), Some((3, 0)));
    assert_eq!(parse_exit_code("3"), None);
}
