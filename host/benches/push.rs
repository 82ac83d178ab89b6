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

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hpc-host");
const JOBS: usize = 20;
const ROUNDS: usize = 3;

fn http(socket: &Path, method: &str, path: &str, body: &str) -> serde_json::Value {
    let mut s = UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let json = raw.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(json).unwrap_or_else(|_| panic!("not JSON: {raw}"))
}

fn counting(home: &Path, program: &str) -> String {
    let path = home.join(format!("{program}-counting"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho call >> '{}'\nexec /usr/bin/{program} \"$@\"\n",
            home.join(format!("{program}.calls")).display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

fn calls(home: &Path, program: &str) -> usize {
    std::fs::read_to_string(home.join(format!("{program}.calls")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Wait until none of this user's jobs is pending or running.
fn drain_queue() {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = Command::new("squeue")
            .args(["--me", "-h", "-t", "pending,running,completing"])
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `sacct` every 0.2 s until all `ids` are final: its calls, and when.
fn raw_sacct_loop(ids: &[String]) -> (usize, Instant) {
    let list = ids.join(",");
    let mut n = 0;
    loop {
        let out = Command::new("sacct")
            .args(["-X", "-n", "-P", "-o", "State", "-j", &list])
            .output()
            .unwrap();
        n += 1;
        let text = String::from_utf8_lossy(&out.stdout);
        let states: Vec<&str> = text.lines().collect();
        if states.len() == ids.len()
            && states.iter().all(|s| {
                ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"]
                    .iter()
                    .any(|f| s.starts_with(f))
            })
        {
            return (n, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Round {
    daemon: Duration,
    daemon_queries: usize,
    raw: Duration,
    raw_queries: usize,
}

struct Daemon {
    home: PathBuf,
    socket: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(tag: &str, push: Option<&str>) -> Daemon {
        let home =
            std::env::temp_dir().join(format!("hpc-host-bench-push-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        let programs = format!(
            "{{ sbatch = \"/usr/bin/sbatch\", scancel = \"/usr/bin/scancel\", squeue = \"{}\", sacct = \"{}\" }}",
            counting(&home, "squeue"),
            counting(&home, "sacct")
        );
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .env_clear()
            .env("HOME", &home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm")
            .env("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug")
            .env("CCAT_WORKFLOW_MANAGER_PLUGINS__SLURM__PROGRAMS", &programs)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(addr) = push {
            cmd.env("CCAT_WORKFLOW_MANAGER_HPC_PUSH_ADDRESS", addr);
        }
        let child = cmd.spawn().unwrap();
        let socket = home.join(".local/state/hpc-host/hpc-host.sock");
        while UnixStream::connect(&socket).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            home,
            socket,
            child,
        }
    }

    fn round(&self) -> Round {
        drain_queue();
        let ids: Vec<String> = (0..JOBS)
            .map(|_| {
                http(
                    &self.socket,
                    "POST",
                    "/v1/jobs",
                    r#"{"execution_command": ["true"]}"#,
                )["job_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let t = Instant::now();
        let q0 = calls(&self.home, "squeue") + calls(&self.home, "sacct");
        let raw = {
            let ids = ids.clone();
            std::thread::spawn(move || raw_sacct_loop(&ids))
        };
        let v = http(
            &self.socket,
            "POST",
            "/v1/jobs/wait",
            &serde_json::json!({ "job_ids": ids, "timeout": 300 }).to_string(),
        );
        assert_eq!(v["complete"], true, "{v}");
        let daemon = t.elapsed();
        let daemon_queries = calls(&self.home, "squeue") + calls(&self.home, "sacct") - q0;
        let (raw_queries, raw_done) = raw.join().unwrap();
        Round {
            daemon,
            daemon_queries,
            raw: raw_done.duration_since(t),
            raw_queries,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn median<T: PartialOrd + Copy>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
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
