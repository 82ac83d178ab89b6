//! Service mode next to the CLI and the scheduler's own commands, in one run.
//! The SLURM parts need the test cluster; `--local` runs only the rest.
//!
//! ```text
//! scripts/slurm-testcluster.sh && cargo bench -p hpc-host --bench daemon
//! ```

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::wrappers::{calls, slurm_programs};
use support::{Conn, Env, Row, drain_queue, median, ms, row, sacct_until_final};

const TEST_PLUGINS: &str = hpc_test_plugins::DIR;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let local_only = std::env::args().any(|a| a == "--local");
    let mut rows = Vec::new();
    describe_pooled_vs_on_demand(&mut rows);
    local(&mut rows);
    if !local_only {
        slurm(&mut rows);
    }
    support::print_table(rows);
}

/// `describe` in one process: engines with and without the pooling allocator.
fn describe_pooled_vs_on_demand(rows: &mut Vec<Row>) {
    let home = std::env::temp_dir().join(format!("hpc-host-bench-describe-{}", std::process::id()));
    let vars = vec![("HOME".to_owned(), home.display().to_string())];
    let settings =
        hpc_host::runtime::settings::Settings::resolve(&Default::default(), &vars).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut p50 = Vec::new();
    for pooling in [true, false] {
        let options = hpc_host::HostOptions {
            pooling,
            ..hpc_host::HostOptions::cli()
        };
        let host = hpc_host::Host::with_options(&settings, options).unwrap();
        let plugin = host.backend().unwrap();
        let times: Vec<Duration> = (0..2000)
            .map(|_| {
                let t = Instant::now();
                rt.block_on(plugin.describe()).unwrap();
                t.elapsed()
            })
            .collect();
        p50.push(median(times));
    }
    row(
        rows,
        "`describe` in-process, pooling allocator (daemon)",
        ms(p50[0]),
        "p50 of 2000".into(),
    );
    row(
        rows,
        "`describe` in-process, on-demand allocator (CLI)",
        ms(p50[1]),
        format!(
            "p50 of 2000; pooled is {:.2}x",
            p50[0].as_secs_f64() / p50[1].as_secs_f64()
        ),
    );
    let _ = std::fs::remove_dir_all(home);
}

fn local(rows: &mut Vec<Row>) {
    let env = Env::new("daemon-local", &[]);
    let daemon = env.serve(&[]);
    let mut c = Conn::new(&env.socket());
    let spec = r#"{"execution_command": ["true"]}"#;
    let t = Instant::now();
    let ids: Vec<String> = (0..1000).map(|_| c.submit(spec)).collect();
    row(
        rows,
        "local: 1,000 submits through the daemon, one connection",
        format!("{:.2} s", t.elapsed().as_secs_f64()),
        "goal ≤ 2 s".into(),
    );
    std::thread::sleep(Duration::from_secs(3));
    let body = serde_json::json!({ "job_ids": ids }).to_string();
    let times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let (code, _) = c.call("POST", "/v1/jobs/status", &body);
            assert_eq!(code, 200);
            t.elapsed()
        })
        .collect();
    row(
        rows,
        "local: status of 1,000 ids through the daemon",
        ms(median(times)),
        "median of 5; goal ≤ 50 ms".into(),
    );
    let mut cli = env.cmd(&["status"]);
    cli.args(&ids)
        .env("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t = Instant::now();
    let _ = cli.status();
    row(
        rows,
        "local: status of 1,000 ids, CLI in-process",
        ms(t.elapsed()),
        "once; baseline".into(),
    );
    drop(daemon);

    // RSS while tracking 10,000 jobs (the `misbehave` test plugin answers every id).
    let env = Env::new(
        "daemon-rss",
        &[("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "misbehave")],
    );
    let dir = env.home.join(".local/share/hpc-host/plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        Path::new(TEST_PLUGINS).join("misbehave.wasm"),
        dir.join("misbehave.wasm"),
    )
    .unwrap();
    let daemon = env.serve(&[]);
    let mut c = Conn::new(&env.socket());
    let before = rss_kib(daemon.id());
    for chunk in 0..10 {
        let ids: Vec<String> = (0..1000).map(|i| format!("job-{chunk}-{i}")).collect();
        let (code, _) = c.call(
            "POST",
            "/v1/jobs/status",
            &serde_json::json!({ "job_ids": ids }).to_string(),
        );
        assert_eq!(code, 200);
    }
    let (_, h) = c.call("GET", "/v1/health", "");
    let after = rss_kib(daemon.id());
    row(
        rows,
        "daemon RSS tracking 10,000 jobs",
        format!("{:.1} MiB", after as f64 / 1024.0),
        format!(
            "{:.1} MiB before; {} jobs tracked",
            before as f64 / 1024.0,
            h["jobs_tracked"]
        ),
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&env.home);
}

/// `sbatch --wrap WRAP` run in `workdir`, as a user would: the job's id.
fn raw_sbatch(workdir: &Path, wrap: &str) -> String {
    let out = Command::new("sbatch")
        .args(["--parsable", "-p", "debug", "-D"])
        .arg(workdir)
        .args(["--wrap", wrap])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn slurm(rows: &mut Vec<Row>) {
    let mut env = Env::new(
        "daemon-slurm",
        &[
            ("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm"),
            ("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug"),
            ("CCAT_WORKFLOW_MANAGER_HPC_POLL_SECONDS__SLURM", "2"),
        ],
    );
    let programs = slurm_programs(&env.home, "/usr/bin/sbatch", &["squeue", "sacct"]);
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", &programs);
    let home = &env.home;
    let daemon = env.serve(&[]);
    let mut c = Conn::new(&env.socket());

    // submit: raw sbatch, through the socket, through the CLI, interleaved.
    let workdir = home.join("raw");
    std::fs::create_dir_all(&workdir).unwrap();
    let spec = r#"{"execution_command": ["true"]}"#;
    let (mut raw, mut sock, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..30 {
        let t = Instant::now();
        raw_sbatch(&workdir, "true");
        raw.push(t.elapsed());
        let t = Instant::now();
        c.submit(spec);
        sock.push(t.elapsed());
        let t = Instant::now();
        let out = env.cmd(&["submit", "--", "true"]).output().unwrap();
        assert!(out.status.success());
        cli.push(t.elapsed());
    }
    let (raw, sock, cli) = (median(raw), median(sock), median(cli));
    row(
        rows,
        "raw `sbatch --parsable --wrap true`",
        ms(raw),
        "median of 30; baseline".into(),
    );
    row(
        rows,
        "`submit` over the socket (running client)",
        ms(sock),
        format!(
            "{:.2}x raw sbatch; goal ≤ 1.2x",
            sock.as_secs_f64() / raw.as_secs_f64()
        ),
    );
    row(
        rows,
        "`hpc-host submit` through the daemon (CLI)",
        ms(cli),
        format!(
            "{:.2}x raw sbatch; goal ≤ 1.5x",
            cli.as_secs_f64() / raw.as_secs_f64()
        ),
    );

    // 20 jobs: last submit → all known final, daemon `wait` vs a raw sacct loop,
    // each starting on an empty queue (the submits above queued ~90 jobs).
    drain_queue();
    let (sq0, sa0) = (calls(home, "squeue"), calls(home, "sacct"));
    let ids: Vec<String> = (0..20)
        .map(|_| c.submit(r#"{"execution_command": ["sleep", "2"]}"#))
        .collect();
    let t = Instant::now();
    let (code, v) = c.call(
        "POST",
        "/v1/jobs/wait",
        &serde_json::json!({ "job_ids": ids, "timeout": 120 }).to_string(),
    );
    assert_eq!((code, v["complete"].as_bool()), (200, Some(true)));
    let via_daemon = t.elapsed();
    let daemon_queries = calls(home, "squeue") - sq0 + calls(home, "sacct") - sa0;
    drain_queue();
    let raw_ids: Vec<String> = (0..20).map(|_| raw_sbatch(&workdir, "sleep 2")).collect();
    let t = Instant::now();
    let raw_queries = sacct_until_final(&raw_ids);
    let raw_loop = t.elapsed();
    row(
        rows,
        "20 jobs of `sleep 2`: last submit → all final, raw sacct loop every 0.2 s",
        format!("{:.2} s", raw_loop.as_secs_f64()),
        format!("{raw_queries} sacct; baseline"),
    );
    row(
        rows,
        "20 jobs of `sleep 2`: last submit → all final, daemon `wait` (interval 2 s)",
        format!("{:.2} s", via_daemon.as_secs_f64()),
        format!(
            "{:.2}x; {daemon_queries} squeue+sacct ({:.2} of the raw loop's)",
            via_daemon.as_secs_f64() / raw_loop.as_secs_f64(),
            daemon_queries as f64 / raw_queries as f64
        ),
    );

    // The workflow-manager pattern: 200 jobs, 10 clients, per-job status each cycle.
    let ids: Vec<String> = (0..200)
        .map(|_| c.submit(r#"{"execution_command": ["sleep", "600"]}"#))
        .collect();
    let run_for = Duration::from_secs(30);
    for (label, via_daemon) in [("daemon", true), ("CLI only", false)] {
        let (sq0, sa0) = (calls(home, "squeue"), calls(home, "sacct"));
        let t = Instant::now();
        let lat: Vec<Duration> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..10)
                .map(|_| {
                    let ids = &ids;
                    let env = &env;
                    s.spawn(move || {
                        let mut lat = Vec::new();
                        let mut conn = via_daemon.then(|| Conn::new(&env.socket()));
                        while t.elapsed() < run_for {
                            let cycle = Instant::now();
                            for id in ids {
                                if t.elapsed() >= run_for {
                                    break;
                                }
                                let q = Instant::now();
                                match conn.as_mut() {
                                    Some(c) => assert_eq!(
                                        c.call("GET", &format!("/v1/jobs/{id}"), "").0,
                                        200
                                    ),
                                    None => {
                                        let out = env
                                            .cmd(&["--output", "json", "status", id])
                                            .env("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never")
                                            .output()
                                            .unwrap();
                                        assert!(out.status.success());
                                    }
                                }
                                lat.push(q.elapsed());
                            }
                            std::thread::sleep(
                                Duration::from_secs(1).saturating_sub(cycle.elapsed()),
                            );
                        }
                        lat
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let minutes = t.elapsed().as_secs_f64() / 60.0;
        let (sq, sa) = (calls(home, "squeue") - sq0, calls(home, "sacct") - sa0);
        let n = lat.len();
        row(
            rows,
            &format!("workflow-manager pattern, {label}: 200 jobs, 10 clients, 30 s"),
            format!("{:.0} scheduler commands/min", (sq + sa) as f64 / minutes),
            format!(
                "{sq} squeue + {sa} sacct; {n} status answers, median latency {}",
                ms(median(lat))
            ),
        );
    }
    let out = Command::new("scancel").args(&ids).output();
    let _ = out;
    drop(daemon);
    let _ = std::fs::remove_dir_all(&env.home);
}
