//! What the benches share: a throw-away HOME to run `hpc-host` in, a
//! daemon started there, timing, the Markdown table they print for
//! BENCHMARKS.md, and for the SLURM rows, wrappers that count the scheduler
//! commands the host runs and a wait for an empty queue.
//!
//! Each bench is a crate of its own that includes this module (`mod support;`)
//! and uses a part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The integration tests' wrappers of the scheduler's commands (counting
/// calls): the benches count the queries a daemon makes with the same ones.
#[path = "../../tests/all/common/wrappers.rs"]
pub mod wrappers;

pub const BIN: &str = env!("CARGO_BIN_EXE_hpc-host");

pub fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// One row of the table: what was measured, the value, a note (the sample
/// size, the baseline, a goal).
pub type Row = (String, String, String);

/// Log a row to stderr as it is measured (a long bench shows progress), and
/// keep it for [`print_table`].
pub fn row(rows: &mut Vec<Row>, what: &str, value: String, note: String) {
    eprintln!("{what}: {value} ({note})");
    rows.push((what.to_owned(), value, note));
}

/// The rows as the Markdown table BENCHMARKS.md quotes, on stdout.
pub fn print_table(rows: impl IntoIterator<Item = Row>) {
    println!("| measurement | value | note |\n|---|---|---|");
    for (what, value, note) in rows {
        println!("| {what} | {value} | {note} |");
    }
}

/// A throw-away HOME for `hpc-host` (its state, plugins folder, compile
/// cache and socket), and the environment every run of the binary gets.
pub struct Env {
    pub home: PathBuf,
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A fresh HOME named after `tag` (and this process), a minimal `PATH`,
    /// and `vars` (settings, mostly).
    pub fn new(tag: &str, vars: &[(&str, &str)]) -> Env {
        let home =
            std::env::temp_dir().join(format!("hpc-host-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        let mut all = vec![
            ("HOME".to_owned(), home.display().to_string()),
            ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Env { home, vars: all }
    }

    /// Set a variable for every later run (settings, mostly).
    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `hpc-host ARGS` with only this environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(Path::new(BIN), args)
    }

    /// [`Env::cmd`] of another `hpc-host` binary (a baseline build).
    pub fn cmd_of(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .env_clear()
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join(".local/state/hpc-host/hpc-host.sock")
    }

    /// `hpc-host serve` with `extra` variables, once its socket takes
    /// connections.
    pub fn serve(&self, extra: &[(&str, &str)]) -> Served {
        self.serve_on(extra, &self.socket())
    }

    /// [`Env::serve`] for `extra` variables that name another socket.
    pub fn serve_on(&self, extra: &[(&str, &str)], socket: &Path) -> Served {
        let child = self
            .cmd(&["serve"])
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        while UnixStream::connect(socket).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Served(child)
    }
}

/// A running daemon, stopped (SIGTERM, then reaped) when dropped.
pub struct Served(Child);

impl Served {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a pid this process spawned and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A keep-alive HTTP/1.1 connection to the daemon.
pub struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Conn {
    pub fn new(socket: &Path) -> Conn {
        let w = UnixStream::connect(socket).unwrap();
        Conn {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// One request and its answer: the status code and the JSON body.
    pub fn call(&mut self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        write!(
            self.w,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let code: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).unwrap();
            let l = line.trim();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0; len];
        self.r.read_exact(&mut buf).unwrap();
        (code, serde_json::from_slice(&buf).unwrap())
    }

    /// Submit `spec` (a job spec's JSON): the new job's id.
    pub fn submit(&mut self, spec: &str) -> String {
        let (code, v) = self.call("POST", "/v1/jobs", spec);
        assert_eq!(code, 201, "{v}");
        v["job_id"].as_str().unwrap().to_owned()
    }
}

/// Wait until none of this user's jobs is pending or running.
pub fn drain_queue() {
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

/// The baseline a scheduler's user would write: `sacct` every 0.2 s until
/// every job of `ids` is final. Returns how many `sacct` calls that took.
pub fn sacct_until_final(ids: &[String]) -> usize {
    const FINAL: [&str; 4] = ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"];
    let list = ids.join(",");
    let mut calls = 0;
    loop {
        calls += 1;
        let out = Command::new("sacct")
            .args(["-X", "-n", "-P", "-o", "State", "-j", &list])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let states: Vec<&str> = text.lines().collect();
        if states.len() == ids.len()
            && states
                .iter()
                .all(|s| FINAL.iter().any(|f| s.starts_with(f)))
        {
            return calls;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
