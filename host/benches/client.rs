//! Where the CLI's time goes when a daemon serves it: `hpc-host submit`
//! through `hpc-host serve` next to a raw `sbatch`, and the client process
//! taken apart by how far it gets before it exits.
//!
//! ```text
//! cargo bench -p hpc-host --bench client -- --local   # no SLURM needed
//! scripts/slurm-testcluster.sh && cargo bench -p hpc-host --bench client
//! HPC_HOST_BENCH_BASELINE=/path/to/old/hpc-host cargo bench ...  # before/after
//! ```
//!
//! Every row is a whole process, timed from spawn to reaped, in rounds that
//! run each row once (interleaved, so a load that comes and goes hits every
//! row alike). The breakdown comes from commands that stop at successive
//! points of the same path, so no tracer slows what is measured:
//!
//! - a process that does nothing (this bench, re-run as `__floor`): exec,
//!   the dynamic loader and the Rust runtime's start;
//! - `hpc-host --version`: the same for the 38 MB binary (its relocation,
//!   and clap building the command line);
//! - `submit` with `HPC_DAEMON = "require"` and no socket: + argument
//!   parsing, logging, the async runtime, the settings, the socket check;
//! - `submit` to a daemon serving other settings: + connect, `SO_PEERCRED`,
//!   the health request and the fingerprint comparison;
//! - `submit` to the daemon: + the submit request (mostly the daemon's own
//!   work, which the last row measures from a running client).

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Conn, Env, Row, Served, ms, print_table, row};

/// The binaries measured, each with a label for its rows: this build's, and
/// with `HPC_HOST_BENCH_BASELINE=/path/to/hpc-host` another one (a build of
/// `main`, say) run in the same rounds, so both see the same load.
fn binaries() -> Vec<(String, PathBuf)> {
    let mut all = vec![(String::new(), PathBuf::from(env!("CARGO_BIN_EXE_hpc-host")))];
    if let Some(other) = std::env::var_os("HPC_HOST_BENCH_BASELINE") {
        all.push(("baseline: ".into(), other.into()));
    }
    all
}

/// Rounds of the local breakdown (each runs every row once).
const LOCAL_ROUNDS: usize = 100;
/// Rounds of the SLURM comparison: the goal is stated on a median of 20.
const SLURM_ROUNDS: usize = 20;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("__floor") {
        return;
    }
    let local_only = std::env::args().any(|a| a == "--local");
    let mut rows = Vec::new();
    binary(&mut rows);
    local(&mut rows);
    if !local_only {
        slurm(&mut rows);
    }
    print_table(rows);
}

/// One run of a process: wall time from spawn to reaped, its CPU time
/// (user + system) and its minor page faults, from `wait4`'s rusage.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    cpu: Duration,
    faults: i64,
}

/// Spawn `cmd` (output discarded), reap it with `wait4` and check its exit code.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn run(cmd: &mut Command, expect: i32) -> Run {
    let t = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: reaps our own child, whose `Child` is dropped unwaited below.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == expect,
        "{cmd:?}: wait status {status:#x}, expected exit {expect}"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        wall,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        faults: usage.ru_minflt,
    }
}

/// The runs of one row, and their summaries.
#[derive(Default)]
struct Runs(Vec<Run>);

impl Runs {
    fn quantile(&self, q: f64) -> Duration {
        let mut w: Vec<Duration> = self.0.iter().map(|r| r.wall).collect();
        w.sort();
        w[((w.len() - 1) as f64 * q).round() as usize]
    }
    fn median(&self) -> Duration {
        self.quantile(0.5)
    }
    fn cpu(&self) -> Duration {
        self.0.iter().map(|r| r.cpu).sum::<Duration>() / self.0.len() as u32
    }
    fn faults(&self) -> i64 {
        let mut f: Vec<i64> = self.0.iter().map(|r| r.faults).collect();
        f.sort();
        f[f.len() / 2]
    }
}

/// A row of whole-process runs: median wall time; p10 (what the machine
/// gives when nothing else runs), mean CPU and median minor faults in the note.
fn process_row(rows: &mut Vec<Row>, what: &str, runs: &Runs, extra: &str) {
    row(
        rows,
        what,
        ms(runs.median()),
        format!(
            "p10 {}; CPU {}; {} minor faults{extra}",
            ms(runs.quantile(0.1)),
            ms(runs.cpu()),
            runs.faults()
        ),
    );
}

/// `hpc-host submit -- true` with `bin`, `HPC_DAEMON = "require"` and `extra`.
fn submit(env: &Env, bin: &Path, extra: &[(&str, String)]) -> Command {
    let mut c = env.cmd_of(bin, &["submit", "--", "true"]);
    c.env("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "require")
        .envs(extra.iter().map(|(k, v)| (k, v)));
    c
}

/// What each binary is: position-independent or not, and what its
/// start-up relocation costs according to the dynamic loader (glibc's
/// `LD_DEBUG=statistics`, the least of 20 runs: the loader times itself with
/// the cycle counter, so a run that was preempted only reads higher).
fn binary(rows: &mut Vec<Row>) {
    for (label, bin) in binaries() {
        let mut header = [0u8; 18];
        std::fs::File::open(&bin)
            .and_then(|mut f| f.read_exact(&mut header))
            .unwrap();
        // e_type: 2 is a fixed-address executable, 3 a position-independent one.
        let kind = match u16::from_le_bytes([header[16], header[17]]) {
            2 => "fixed-address executable (ET_EXEC)",
            3 => "position-independent executable (ET_DYN)",
            _ => "unexpected ELF type",
        };
        let size = std::fs::metadata(&bin).unwrap().len();
        row(
            rows,
            &format!("{label}the `hpc-host` binary"),
            format!("{:.1} MB", size as f64 / 1e6),
            kind.into(),
        );
        let (mut relocations, mut cycles, mut total) = (None, u64::MAX, u64::MAX);
        for _ in 0..20 {
            let out = Command::new(&bin)
                .arg("--version")
                .env("LD_DEBUG", "statistics")
                .output()
                .unwrap();
            let stats = String::from_utf8_lossy(&out.stderr);
            let number = |name: &str| -> Option<u64> {
                stats.lines().find_map(|l| {
                    let (_, v) = l.split_once(name)?;
                    v.split_whitespace().next()?.parse().ok()
                })
            };
            relocations = number("number of relative relocations:");
            cycles = cycles.min(number("time needed for relocation:").unwrap_or(u64::MAX));
            total = total.min(number("total startup time in dynamic loader:").unwrap_or(u64::MAX));
        }
        match relocations {
            Some(n) => row(
                rows,
                &format!("{label}relative relocations at start-up"),
                n.to_string(),
                format!(
                    "dynamic loader: {cycles} cycles relocating of {total} in all (least of 20 runs)"
                ),
            ),
            None => eprintln!("the dynamic loader gave no statistics (not glibc?)"),
        }
    }
}

/// How far a CLI call gets before it exits: each step adds a part of the
/// client's path to the one before.
#[derive(Clone, Copy)]
enum Step {
    /// `--version`: the process starts and clap answers.
    Version,
    /// `submit`, `HPC_DAEMON = "require"`, no socket at `HPC_SOCKET`.
    NoSocket,
    /// The same, to a daemon whose settings differ: it stops after the
    /// health answer's fingerprint.
    OtherDaemon,
    /// `submit` through the daemon.
    Submit,
}

impl Step {
    const ALL: [Step; 4] = [
        Step::Version,
        Step::NoSocket,
        Step::OtherDaemon,
        Step::Submit,
    ];

    fn what(self) -> &'static str {
        match self {
            Step::Version => "`hpc-host --version`",
            Step::NoSocket => "`hpc-host submit`, `require`, no socket",
            Step::OtherDaemon => "`hpc-host submit`, `require`, daemon with other settings",
            Step::Submit => "local: `hpc-host submit` through the daemon (CLI)",
        }
    }

    /// What this step adds to the one before.
    fn adds(self) -> &'static str {
        match self {
            Step::Version => "",
            Step::NoSocket => "+ parse, logging, runtime, settings, socket check",
            Step::OtherDaemon => "+ connect, SO_PEERCRED, health, fingerprint",
            Step::Submit => "+ the submit request (the daemon's work)",
        }
    }
}

/// The local daemons the steps talk to.
struct Daemons {
    env: Env,
    own: Served,
    other: Served,
    other_socket: String,
    missing_socket: String,
}

impl Daemons {
    fn start() -> Daemons {
        let env = Env::new("local", &[]);
        let own = env.serve(&[]);
        // Another node name: other settings, another fingerprint.
        let other_socket = env.home.join("other.sock").display().to_string();
        let other = env.serve_on(
            &[
                ("CCAT_WORKFLOW_MANAGER_HPC_SOCKET", &other_socket),
                ("CCAT_WORKFLOW_MANAGER_HPC_NODE", "bench-other"),
            ],
            Path::new(&other_socket),
        );
        let missing_socket = env.home.join("missing.sock").display().to_string();
        Daemons {
            env,
            own,
            other,
            other_socket,
            missing_socket,
        }
    }

    /// The command of `step` with `bin`, and the exit code it must end with.
    fn command(&self, step: Step, bin: &Path) -> (Command, i32) {
        let socket = |s: &str| [("CCAT_WORKFLOW_MANAGER_HPC_SOCKET", s.to_owned())];
        match step {
            Step::Version => (self.env.cmd_of(bin, &["--version"]), 0),
            Step::NoSocket => (submit(&self.env, bin, &socket(&self.missing_socket)), 3),
            Step::OtherDaemon => (submit(&self.env, bin, &socket(&self.other_socket)), 3),
            Step::Submit => (submit(&self.env, bin, &[]), 0),
        }
    }

    fn stop(self) {
        drop(self.other);
        drop(self.own);
        let _ = std::fs::remove_dir_all(&self.env.home);
    }
}

/// A process that does nothing, as a floor: `/bin/true` or this bench.
fn floor(rust: bool) -> Command {
    let mut c = if rust {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.arg("__floor");
        c
    } else {
        Command::new("/bin/true")
    };
    c.env_clear();
    c
}

/// The client taken apart on the local backend: each round runs every row
/// once, floors first, then each binary's steps.
fn local(rows: &mut Vec<Row>) {
    let daemons = Daemons::start();
    let clients = binaries();
    let sbatch = has("sbatch");
    let mut c = Conn::new(&daemons.env.socket());
    let spec = r#"{"execution_command": ["true"]}"#;

    let mut floors = [Runs::default(), Runs::default(), Runs::default()];
    let mut steps: Vec<[Runs; 4]> = clients.iter().map(|_| Default::default()).collect();
    let mut socket = Runs::default();
    for round in 0..LOCAL_ROUNDS + 2 {
        // The first two rounds warm the page cache and the daemons.
        let keep = round >= 2;
        let mut one = vec![run(&mut floor(false), 0), run(&mut floor(true), 0)];
        if sbatch {
            one.push(run(Command::new("sbatch").arg("--version"), 0));
        }
        for (runs, r) in floors.iter_mut().zip(one) {
            if keep {
                runs.0.push(r);
            }
        }
        for ((_, bin), runs) in clients.iter().zip(&mut steps) {
            for (step, runs) in Step::ALL.into_iter().zip(runs) {
                let (mut cmd, expect) = daemons.command(step, bin);
                let r = run(&mut cmd, expect);
                if keep {
                    runs.0.push(r);
                }
            }
        }
        let t = Instant::now();
        assert_eq!(c.call("POST", "/v1/jobs", spec).0, 201);
        let wall = t.elapsed();
        if keep {
            socket.0.push(Run {
                wall,
                cpu: Duration::ZERO,
                faults: 0,
            });
        }
    }
    daemons.stop();

    let n = format!("; median of {LOCAL_ROUNDS}, interleaved");
    process_row(rows, "floor: `/bin/true` (C)", &floors[0], &n);
    process_row(rows, "floor: a Rust binary that returns", &floors[1], &n);
    if sbatch {
        process_row(rows, "`sbatch --version`", &floors[2], &n);
    }
    for ((label, _), runs) in clients.iter().zip(&steps) {
        let mut before: Option<&Runs> = None;
        for (step, runs) in Step::ALL.into_iter().zip(runs) {
            let adds = match before {
                Some(b) => format!(
                    "; {}: {}",
                    step.adds(),
                    ms(runs.median().saturating_sub(b.median()))
                ),
                None => String::new(),
            };
            process_row(
                rows,
                &format!("{label}{}", step.what()),
                runs,
                &format!("{adds}{n}"),
            );
            before = Some(runs);
        }
    }
    row(
        rows,
        "local: `submit` over the socket (running client)",
        ms(socket.median()),
        format!(
            "p10 {}; the CLI's own share: {} (CLI − socket, medians){n}",
            ms(socket.quantile(0.1)),
            ms(steps[0][3].median().saturating_sub(socket.median()))
        ),
    );
}

/// Whether `program` runs (found on `PATH`).
fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The goal's own measure: submits to SLURM, raw `sbatch`, over the socket
/// and through the CLI, interleaved, median of 20 each.
fn slurm(rows: &mut Vec<Row>) {
    if !has("sbatch") {
        eprintln!("no sbatch on PATH: skipping the SLURM rows");
        return;
    }
    let env = Env::new(
        "slurm",
        &[
            ("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "slurm"),
            ("CCAT_WORKFLOW_MANAGER_SLURM_PARTITION", "debug"),
        ],
    );
    let daemon = env.serve(&[]);
    let mut c = Conn::new(&env.socket());
    let workdir = env.home.join("raw");
    std::fs::create_dir_all(&workdir).unwrap();
    let spec = r#"{"execution_command": ["true"]}"#;
    let mut sbatch = Command::new("sbatch");
    sbatch
        .args(["--parsable", "-p", "debug", "-D"])
        .arg(&workdir)
        .args(["--wrap", "true"]);
    let clients = binaries();
    let (mut raw, mut sock) = (Runs::default(), Runs::default());
    let mut cli: Vec<Runs> = clients.iter().map(|_| Runs::default()).collect();
    for round in 0..SLURM_ROUNDS + 2 {
        let r = run(&mut sbatch, 0);
        let t = Instant::now();
        assert_eq!(c.call("POST", "/v1/jobs", spec).0, 201);
        let s = t.elapsed();
        let l: Vec<Run> = clients
            .iter()
            .map(|(_, bin)| run(&mut submit(&env, bin, &[]), 0))
            .collect();
        // The first two rounds warm the daemon's plugin and the page cache.
        if round >= 2 {
            raw.0.push(r);
            sock.0.push(Run {
                wall: s,
                cpu: Duration::ZERO,
                faults: 0,
            });
            for (all, one) in cli.iter_mut().zip(l) {
                all.0.push(one);
            }
        }
    }
    drop(daemon);
    let n = format!("; median of {SLURM_ROUNDS}, interleaved");
    process_row(
        rows,
        "raw `sbatch --parsable --wrap true`",
        &raw,
        &format!("; baseline{n}"),
    );
    let ratio = |d: Duration| d.as_secs_f64() / raw.median().as_secs_f64();
    row(
        rows,
        "`submit` over the socket (running client)",
        ms(sock.median()),
        format!("{:.2}x raw sbatch{n}", ratio(sock.median())),
    );
    for ((label, _), cli) in clients.iter().zip(&cli) {
        let goal = if ratio(cli.median()) <= 1.5 {
            "met"
        } else {
            "**missed**"
        };
        process_row(
            rows,
            &format!("{label}`hpc-host submit` through the daemon (CLI)"),
            cli,
            &format!(
                "; {:.2}x raw sbatch, goal ≤ 1.5x: {goal}; CLI − socket {}{n}",
                ratio(cli.median()),
                ms(cli.median().saturating_sub(sock.median()))
            ),
        );
    }
    let _ = std::fs::remove_dir_all(&env.home);
}
