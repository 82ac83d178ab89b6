//! The SLURM backend next to the scheduler's own commands, in one run. Needs
//! the test cluster (`scripts/slurm-testcluster.sh`). Run:
//!
//! ```text
//! scripts/slurm-testcluster.sh && cargo bench -p hpc-host --bench slurm
//! cargo bench -p hpc-host --bench slurm -- --arrays   # only the batch rows
//! ```

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::wrappers::{calls, counting, slurm_programs};
use support::{Env, median, print_table};

/// The bench's Redis database (flushed at its start).
const REDIS_DB: &str = "14";

/// Milliseconds to one decimal: these are scheduler round trips.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn timed(cmd: &mut Command) -> (Duration, String) {
    let t = Instant::now();
    let out = run(cmd);
    (t.elapsed(), out)
}

/// `sbatch --parsable -p debug -o /dev/null EXTRA --wrap true` in `workdir`.
fn raw_sbatch(workdir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new("sbatch");
    c.args(["--parsable", "-p", "debug", "-o", "/dev/null"])
        .args(extra)
        .args(["--wrap", "true"])
        .current_dir(workdir);
    c
}

/// `sacct` of `jobs` (ids joined by commas) with the fields `status` reads.
fn sacct(jobs: &str) -> Command {
    let mut c = Command::new("sacct");
    c.args(["-P", "-n", "--noconvert", "-j", jobs])
        .args(["-o", "JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS"]);
    c
}

fn main() {
    // The store is a Redis database of the bench's own, so that the rows
    // below can lose it (a store this machine saw come back empty asks the
    // scheduler before a new key's submit, for a day; see `ledger::RECOVERY`).
    run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
    let redis_url = format!("redis://127.0.0.1:6379/{REDIS_DB}");
    let env = Env::new(
        "slurm",
        &[
            ("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm"),
            ("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug"),
            ("CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL", &redis_url),
            (
                "CCAT_WORKFLOW_MANAGER_HPC_REDIS_ALLOW_UNAUTHENTICATED",
                "true",
            ),
        ],
    );
    let host = |args: &[&str]| env.cmd(args);
    run(&mut host(&["plugins", "compile", "slurm"]));
    let workdir = env.home.join("raw");
    std::fs::create_dir_all(&workdir).unwrap();
    if std::env::args().any(|a| a == "--arrays") {
        let rows = arrays(&env, &workdir);
        run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
        let _ = std::fs::remove_dir_all(&env.home);
        print_table(rows);
        return;
    }

    // ---- submit: hpc-host unkeyed, keyed, a repeated key, raw sbatch; interleaved;
    // then keyed again after the store lost its data
    let n = 30;
    let run_tag = std::process::id();
    let (mut ours, mut keyed, mut young, mut again, mut raw) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        ours.push(timed(&mut host(&["submit", "--", "true"])).0);
        let key = format!("bench-{run_tag}-{i}");
        let keyed_submit = ["submit", "--idempotency-key", &key, "--", "true"];
        // The first makes the job; the second repeats a used key.
        keyed.push(timed(&mut host(&keyed_submit)).0);
        again.push(timed(&mut host(&keyed_submit)).0);
        raw.push(timed(&mut raw_sbatch(&workdir, &[])).0);
    }
    // The store loses its data, as a Redis without persistence does on a
    // restart: for a day, a new key's submit asks `find-job` first.
    run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
    for i in 0..n {
        let key = format!("bench-{run_tag}-{i}-recovering");
        let submit = ["submit", "--idempotency-key", &key, "--", "true"];
        young.push(timed(&mut host(&submit)).0);
        raw.push(timed(&mut raw_sbatch(&workdir, &[])).0);
    }
    let (ours, keyed, young, again, raw) = (
        median(ours),
        median(keyed),
        median(young),
        median(again),
        median(raw),
    );
    let vs_raw = |d: Duration| format!("{:.1}x raw sbatch", d.as_secs_f64() / raw.as_secs_f64());
    let mut rows = vec![
        (
            format!("`hpc-host submit -- true` (median of {n})"),
            ms(ours),
            vs_raw(ours),
        ),
        (
            format!("`hpc-host submit --idempotency-key K -- true`, a new key (median of {n})"),
            ms(keyed),
            format!(
                "{} ({:+.1} ms vs unkeyed)",
                vs_raw(keyed),
                (keyed.as_secs_f64() - ours.as_secs_f64()) * 1e3
            ),
        ),
        (
            format!("the same, a new key, in a store that came back empty (median of {n})"),
            ms(young),
            format!(
                "{} ({:+.1} ms vs unkeyed): `find-job` first",
                vs_raw(young),
                (young.as_secs_f64() - ours.as_secs_f64()) * 1e3
            ),
        ),
        (
            format!("the same submit again, a key already used (median of {n})"),
            ms(again),
            format!("{}; no sbatch runs", vs_raw(again)),
        ),
        (
            format!("raw `sbatch --parsable --wrap true` (median of {})", 2 * n),
            ms(raw),
            "baseline".to_owned(),
        ),
    ];

    // ---- status of 200 finished jobs -------------------------------------------
    let ids: Vec<String> = (0..200)
        .map(|_| run(&mut raw_sbatch(&workdir, &[])).trim().to_owned())
        .collect();
    let list = ids.join(",");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = run(Command::new("sacct").args(["-X", "-n", "-P", "-o", "State", "-j", &list]));
        if out.lines().filter(|l| l.trim() == "COMPLETED").count() == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "200 jobs did not finish");
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut args = vec!["--output", "json", "status"];
    args.extend(ids.iter().map(String::as_str));
    let ours = median((0..5).map(|_| timed(&mut host(&args)).0).collect());
    let one = median((0..5).map(|_| timed(&mut sacct(&list)).0).collect());
    let t = Instant::now();
    for id in &ids {
        run(&mut sacct(id));
    }
    let singles = t.elapsed();
    rows.push((
        "`hpc-host status` of 200 jobs (median of 5)".into(),
        ms(ours),
        format!(
            "{:.2}x one raw sacct",
            ours.as_secs_f64() / one.as_secs_f64()
        ),
    ));
    rows.push((
        "one raw `sacct -j <200 ids>` (median of 5)".into(),
        ms(one),
        "baseline".into(),
    ));
    rows.push((
        "200 single `sacct -j <id>` calls (once)".into(),
        ms(singles),
        format!(
            "{:.0}x one batched sacct",
            singles.as_secs_f64() / one.as_secs_f64()
        ),
    ));

    rows.extend(arrays(&env, &workdir));

    run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
    let _ = std::fs::remove_dir_all(&env.home);
    print_table(rows);
}

/// Wait (up to 10 minutes) until slurmctld holds at most `10,000 - need`
/// job records, so the next round's submits are not refused.
fn wait_for_room(need: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = run(Command::new("squeue").args(["-h", "-r", "-t", "all", "-o", "%i"]));
        let held = out.lines().count();
        if held + need <= 10_000 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slurmctld still holds {held} jobs"
        );
        eprintln!("slurmctld holds {held} jobs; waiting for room for {need}");
        std::thread::sleep(Duration::from_secs(15));
    }
}

/// Cancel jobs this bench made, by id (an array id cancels its elements).
fn cancel(ids: &[String]) {
    for chunk in ids.chunks(500) {
        let _ = Command::new("scancel").args(chunk).status();
    }
}

/// Array ids (the part before `_`) and plain ids of `submit`'s output.
fn cancel_ids(out: &str) -> Vec<String> {
    let mut ids: Vec<String> = out
        .lines()
        .map(|l| l.trim().split('_').next().unwrap_or("").to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    ids.dedup();
    ids
}

/// Many jobs of one shape: `hpc-host submit --spec batch.json` (unkeyed and
/// keyed) vs a raw `sbatch` loop vs one raw `sbatch --array`; time and
/// scheduler RPCs (sbatch calls, counted by a wrapper for hpc-host). Every
/// job starts in an hour (`--begin`), so nothing runs and the queue is the
/// same for each; each round's jobs are cancelled by id after it.
fn arrays(env: &Env, workdir: &Path) -> Vec<support::Row> {
    let home = &env.home;
    let programs = slurm_programs(home, &counting(home, "sbatch"), &[]);
    // `hpc-host submit --spec FILE` of `k` jobs with the counting sbatch: its
    // time and sbatch calls. Its jobs are cancelled after.
    let submit = |file: &Path, k: usize| {
        let before = calls(home, "sbatch");
        let mut c = env.cmd(&["submit", "--spec", file.to_str().unwrap()]);
        c.env("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", &programs);
        let (t, out) = timed(&mut c);
        assert_eq!(out.lines().count(), k, "{out}");
        let rpc = calls(home, "sbatch") - before;
        cancel(&cancel_ids(&out));
        (t, rpc)
    };
    // A raw job as the specs ask for (100 MB, starting in an hour), or an
    // array of them.
    let raw_later = |array: Option<&str>| {
        let mut extra = vec!["--begin=now+1hour", "--mem=100M"];
        extra.extend(array);
        raw_sbatch(workdir, &extra)
    };
    let mut rows = Vec::new();
    // Every job (an array element too) counts against slurmctld's
    // `MaxJobCount` (10,000 here) until `MinJobAge` (300 s) after it ended,
    // cancelled or not: 3 rounds of 200 and one of 1,000, with a wait for
    // room before each size.
    for (k, rounds) in [(200usize, 3), (1000, 1)] {
        wait_for_room(4 * k * rounds + 1000);
        let batch = |keyed: Option<&str>| {
            let specs: Vec<serde_json::Value> = (0..k)
                .map(|i| {
                    let mut s = serde_json::json!({
                        "execution_command": ["true"],
                        "job_name": "bench-array",
                        "resource_requirements": {"cpu": 1, "memory_gb": 0.1, "begin": "now+1hour"},
                        "environment_variables": {"TASK": i.to_string()},
                    });
                    if let Some(tag) = keyed {
                        s["idempotency_key"] = serde_json::json!(format!("{tag}/{i}"));
                    }
                    s
                })
                .collect();
            let file = home.join("batch.json");
            std::fs::write(&file, serde_json::Value::Array(specs).to_string()).unwrap();
            file
        };
        let (mut ours, mut keyed, mut raw_loop, mut raw_array) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut ours_rpc, mut keyed_rpc) = (0, 0);
        for round in 0..rounds {
            let (t, rpc) = submit(&batch(None), k);
            ours.push(t);
            ours_rpc = rpc;
            let tag = format!("bench-array-{}-{k}-{round}", std::process::id());
            let (t, rpc) = submit(&batch(Some(&tag)), k);
            keyed.push(t);
            keyed_rpc = rpc;

            let t = Instant::now();
            let mut ids = Vec::new();
            for _ in 0..k {
                ids.push(run(&mut raw_later(None)).trim().to_owned());
            }
            raw_loop.push(t.elapsed());
            cancel(&ids);

            let array = format!("--array=0-{}", k - 1);
            let (t, out) = timed(&mut raw_later(Some(&array)));
            raw_array.push(t);
            cancel(&[out.trim().to_owned()]);
        }
        let (ours, keyed, raw_loop, raw_array) = (
            median(ours),
            median(keyed),
            median(raw_loop),
            median(raw_array),
        );
        let ratio = |d: Duration, base: Duration| d.as_secs_f64() / base.as_secs_f64();
        rows.push((
            format!(
                "{k} jobs of one shape: `hpc-host submit --spec batch.json` (median of {rounds})"
            ),
            ms(ours),
            format!(
                "{ours_rpc} sbatch; {:.2}x one raw array, {:.3}x the raw loop",
                ratio(ours, raw_array),
                ratio(ours, raw_loop)
            ),
        ));
        rows.push((
            format!("the same, every spec with its idempotency key (median of {rounds})"),
            ms(keyed),
            format!(
                "{keyed_rpc} sbatch; {:.2}x one raw array, {:.3}x the raw loop",
                ratio(keyed, raw_array),
                ratio(keyed, raw_loop)
            ),
        ));
        rows.push((
            format!("{k} raw `sbatch --parsable --wrap true` in a loop (median of {rounds})"),
            ms(raw_loop),
            format!("{k} sbatch"),
        ));
        rows.push((
            format!(
                "one raw `sbatch --array=0-{} --wrap true` (median of {rounds})",
                k - 1
            ),
            ms(raw_array),
            "1 sbatch".into(),
        ));
    }
    rows
}
