//! Job ends pushed from the batch script (issue 20): how soon `wait`
//! through the daemon knows 20 trivial SLURM jobs ended, and with how many
//! scheduler queries, next to a raw `sacct` loop every 0.2 s watching the
//! same jobs at the same time. Default settings (SLURM poll interval 10 s),
//! with `HPC_PUSH_ADDRESS` on loopback and without it; 3 rounds each, one
//! daemon per way (its poll phase is whatever it is). Needs the test cluster.
//!
//! ```text
//! scripts/slurm-testcluster.sh && cargo bench -p hpc-host --bench push
//! ```

mod support;

use std::time::{Duration, Instant};
use support::wrappers::{calls, slurm_programs};
use support::{Conn, Env, Served, drain_queue, median, sacct_until_final};

const JOBS: usize = 20;
const ROUNDS: usize = 3;

struct Round {
    daemon: Duration,
    daemon_queries: usize,
    raw: Duration,
    raw_queries: usize,
}

/// A daemon on the SLURM backend whose `squeue` and `sacct` count their calls.
struct Daemon {
    env: Env,
    _served: Served,
}

impl Daemon {
    fn start(tag: &str, push: Option<&str>) -> Daemon {
        let mut env = Env::new(
            &format!("push-{tag}"),
            &[
                ("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm"),
                ("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug"),
            ],
        );
        let programs = slurm_programs(&env.home, "/usr/bin/sbatch", &["squeue", "sacct"]);
        env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", &programs);
        if let Some(addr) = push {
            env.set("CCAT_WORKFLOW_MANAGER_HPC_PUSH_ADDRESS", addr);
        }
        let _served = env.serve(&[]);
        Daemon { env, _served }
    }

    /// The scheduler queries the daemon made so far.
    fn queries(&self) -> usize {
        calls(&self.env.home, "squeue") + calls(&self.env.home, "sacct")
    }

    fn round(&self) -> Round {
        drain_queue();
        let mut c = Conn::new(&self.env.socket());
        let ids: Vec<String> = (0..JOBS)
            .map(|_| c.submit(r#"{"execution_command": ["true"]}"#))
            .collect();
        let t = Instant::now();
        let q0 = self.queries();
        let raw = {
            let ids = ids.clone();
            std::thread::spawn(move || (sacct_until_final(&ids), Instant::now()))
        };
        let (code, v) = c.call(
            "POST",
            "/v1/jobs/wait",
            &serde_json::json!({ "job_ids": ids, "timeout": 300 }).to_string(),
        );
        assert_eq!((code, v["complete"].as_bool()), (200, Some(true)), "{v}");
        let daemon = t.elapsed();
        let daemon_queries = self.queries() - q0;
        let (raw_queries, raw_done) = raw.join().unwrap();
        Round {
            daemon,
            daemon_queries,
            raw: raw_done.duration_since(t),
            raw_queries,
        }
    }
}

fn main() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    println!(
        "| {JOBS} trivial jobs, last submit → all known final (median of {ROUNDS}) | daemon `wait` | raw `sacct` loop (0.2 s), same jobs | time ratio | scheduler queries | query ratio |"
    );
    println!("|---|---|---|---|---|---|");
    for (tag, push) in [("pushed", Some(addr.as_str())), ("polled", None)] {
        let d = Daemon::start(tag, push);
        let rounds: Vec<Round> = (0..ROUNDS).map(|_| d.round()).collect();
        for (i, r) in rounds.iter().enumerate() {
            eprintln!(
                "{tag} round {i}: daemon {:.2} s, {} queries; raw {:.2} s, {} sacct",
                r.daemon.as_secs_f64(),
                r.daemon_queries,
                r.raw.as_secs_f64(),
                r.raw_queries
            );
        }
        let dm = median(rounds.iter().map(|r| r.daemon).collect());
        let rm = median(rounds.iter().map(|r| r.raw).collect());
        let dq = median(rounds.iter().map(|r| r.daemon_queries).collect());
        let rq = median(rounds.iter().map(|r| r.raw_queries).collect());
        let way = match push {
            Some(_) => "with `HPC_PUSH_ADDRESS` (loopback), interval 10 s",
            None => "without push, interval 10 s",
        };
        println!(
            "| {way} | {:.2} s | {:.2} s | {:.2}x | {dq} squeue+sacct vs {rq} sacct | {:.2} |",
            dm.as_secs_f64(),
            rm.as_secs_f64(),
            dm.as_secs_f64() / rm.as_secs_f64(),
            dq as f64 / rq as f64
        );
    }
}
