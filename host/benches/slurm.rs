//! The SLURM backend next to the scheduler's own commands, in one run. Needs
//! the test cluster (`scripts/slurm-testcluster.sh`). Run:
//!
//! ```text
//! scripts/slurm-testcluster.sh && cargo bench -p hpc-host --bench slurm
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hpc-host");
/// The bench's Redis database (flushed at its start).
const REDIS_DB: &str = "14";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

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

fn main() {
    let home = std::env::temp_dir().join(format!("hpc-host-bench-slurm-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    // The store is a Redis database of the bench's own, so that the rows
    // below can lose it (a store this machine saw come back empty asks the
    // scheduler before a new key's submit, for a day; see `ledger::RECOVERY`).
    run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
    let host = |args: &[&str]| {
        let mut c = Command::new(BIN);
        c.args(args)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm")
            .env("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug")
            .env(
                "CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL",
                format!("redis://127.0.0.1:6379/{REDIS_DB}"),
            )
            .env(
                "CCAT_WORKFLOW_MANAGER_HPC_REDIS_ALLOW_UNAUTHENTICATED",
                "true",
            );
        c
    };
    run(&mut host(&["plugins", "compile", "slurm"]));
    let workdir = home.join("raw");
    std::fs::create_dir_all(&workdir).unwrap();

    let raw_sbatch = || {
        let mut c = Command::new("sbatch");
        c.args([
            "--parsable",
            "-p",
            "debug",
            "-o",
            "/dev/null",
            "--wrap",
            "true",
        ])
        .current_dir(&workdir);
        c
    };

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
        raw.push(timed(&mut raw_sbatch()).0);
    }
    // The store loses its data, as a Redis without persistence does on a
    // restart: for a day, a new key's submit asks `find-job` first.
    run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
    for i in 0..n {
        let key = format!("bench-{run_tag}-{i}-recovering");
        let submit = ["submit", "--idempotency-key", &key, "--", "true"];
        young.push(timed(&mut host(&submit)).0);
        raw.push(timed(&mut raw_sbatch()).0);
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
        .map(|_| run(&mut raw_sbatch()).trim().to_owned())
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
    let one = median(
        (0..5)
            .map(|_| {
                timed(Command::new("sacct").args([
                    "-P",
                    "-n",
                    "--noconvert",
                    "-j",
                    &list,
                    "-o",
                    "JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS",
                ]))
                .0
            })
            .collect(),
    );
    let t = Instant::now();
    for id in &ids {
        run(Command::new("sacct").args([
            "-P",
            "-n",
            "--noconvert",
            "-j",
            id,
            "-o",
            "JobID,State,ExitCode,ElapsedRaw,TotalCPU,MaxRSS",
        ]));
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

    run(Command::new("redis-cli").args(["-n", REDIS_DB, "flushdb"]));
    let _ = std::fs::remove_dir_all(&home);
    println!("| measurement | value | note |\n|---|---|---|");
    for (a, b, c) in rows {
        println!("| {a} | {b} | {c} |");
    }
}
