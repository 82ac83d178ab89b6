//! Supervised jobs: the host side of `process.spawn-job` and the supervisor.
//!
//! `spawn-job` starts `hpc-host __supervise <job dir>`. That process forks: the
//! child calls `setsid` (so it outlives the caller and its terminal), starts
//! the job in a process group of its own, and tells its parent "ok" (or why
//! it could not start) through a pipe; the parent relays that as its exit
//! status, so a bad command fails `submit` at once and no zombie is left. The
//! supervisor then waits for the job with `wait4` and writes `result.json`
//! (exit status and rusage) atomically.
//!
//! Layout of `<state>/jobs/<plugin>/<id>/`: `request.json`, `supervisor.json`
//! (pids, process start time, boot id), `result.json`, `cancel` (a marker),
//! `stdout.log`, `stderr.log`, `supervisor.log`.
//!
//! A job is running while its supervisor is: same pid, same start time, not a
//! zombie, same boot. A supervisor that vanished without a result means the
//! job is lost, never running forever; its job got SIGKILL with it
//! (`PR_SET_PDEATHSIG`).

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// After SIGTERM, how long a cancelled job may take before SIGKILL.
const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// The `PATH` of a job: the system's own folders, nothing of the caller's.
pub const JOB_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// What the host asks the supervisor to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub argv: Vec<String>,
    /// The complete environment of the job.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    pub time_limit_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SupervisorRecord {
    supervisor_pid: i32,
    supervisor_start_ticks: u64,
    job_pid: i32,
    boot_id: String,
    started_at: f64,
}

/// How a job ended, as `wait4` told the supervisor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub wall_time_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    pub cancelled: bool,
    pub timed_out: bool,
}

/// What the host can say about a job.
#[derive(Debug, Clone)]
pub enum State {
    Running { since: f64 },
    Exited(Usage),
    Lost(String),
}

/// The jobs of one plugin.
#[derive(Debug, Clone)]
pub struct Jobs {
    root: PathBuf,
}

impl Jobs {
    pub fn new(state_dir: &Path, plugin: &str) -> Jobs {
        Jobs {
            root: state_dir.join("jobs").join(plugin),
        }
    }

    fn dir(&self, id: &str) -> Result<PathBuf, JobError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(JobError::Invalid(format!(
                "job id `{id}` is not valid (letters, digits, `-`, `_`; at most 64)"
            )));
        }
        Ok(self.root.join(id))
    }

    /// The folder of a job, for tests and diagnostics.
    pub fn job_dir(&self, id: &str) -> Option<PathBuf> {
        self.dir(id).ok()
    }

    /// Start a supervised job; returns once the job's process exists.
    pub async fn spawn(&self, id: &str, request: &Request, exe: &Path) -> Result<(), JobError> {
        if request.argv.is_empty() {
            return Err(JobError::Invalid("the job has no command".into()));
        }
        let dir = self.dir(id)?;
        let fail = |what: &str, e: std::io::Error| {
            JobError::Failed(format!("{what} `{}`: {e}", dir.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)
            .map_err(|e| fail("cannot create", e))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail("cannot create job folder", e))?;
        write_atomically(
            &dir.join("request.json"),
            &serde_json::to_vec(request).expect("serialisable"),
        )
        .map_err(|e| fail("cannot write to", e))?;

        let out = tokio::process::Command::new(exe)
            .arg("__supervise")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .map_err(|e| {
                JobError::Failed(format!(
                    "cannot start the supervisor `{}`: {e}",
                    exe.display()
                ))
            })?;
        if out.status.success() {
            Ok(())
        } else {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Err(JobError::Invalid(if why.is_empty() {
                format!("the supervisor failed: {}", out.status)
            } else {
                why
            }))
        }
    }

    pub fn state(&self, id: &str) -> Result<State, JobError> {
        let dir = self.dir(id)?;
        if let Some(usage) = read_json::<Usage>(&dir.join("result.json"))? {
            return Ok(State::Exited(usage));
        }
        let Some(sup) = read_json::<SupervisorRecord>(&dir.join("supervisor.json"))? else {
            return if dir.is_dir() {
                Ok(State::Lost(
                    "the job has no supervisor record: it never started".into(),
                ))
            } else {
                Err(JobError::NotFound(format!("no job `{id}`")))
            };
        };
        if boot_id() != sup.boot_id {
            return Ok(State::Lost(
                "the machine rebooted while the job was running".into(),
            ));
        }
        if process_alive(sup.supervisor_pid, sup.supervisor_start_ticks) {
            return Ok(State::Running {
                since: sup.started_at,
            });
        }
        // The supervisor may have written its result between the two reads.
        if let Some(usage) = read_json::<Usage>(&dir.join("result.json"))? {
            return Ok(State::Exited(usage));
        }
        Ok(State::Lost(format!(
            "the job's supervisor (pid {}) died without recording how the job ended (killed, or out of memory)",
            sup.supervisor_pid
        )))
    }

    /// Stop a running job's process group: SIGTERM, then SIGKILL after a grace period.
    pub async fn kill(&self, id: &str) -> Result<bool, JobError> {
        if !matches!(self.state(id)?, State::Running { .. }) {
            return Ok(false);
        }
        let dir = self.dir(id)?;
        let sup: SupervisorRecord = read_json(&dir.join("supervisor.json"))?
            .ok_or_else(|| JobError::Failed("supervisor record vanished".into()))?;
        std::fs::write(dir.join("cancel"), b"")
            .map_err(|e| JobError::Failed(format!("cannot mark the job cancelled: {e}")))?;
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            // SAFETY: plain syscall; the group is the job's own (its leader's pid),
            // which cannot be reused while the supervisor has not reaped it.
            unsafe { libc::killpg(sup.job_pid, signal) };
            let deadline = tokio::time::Instant::now() + CANCEL_GRACE;
            while tokio::time::Instant::now() < deadline {
                if !matches!(self.state(id)?, State::Running { .. }) {
                    return Ok(true);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(JobError::Failed(format!(
            "job `{id}` did not stop after SIGKILL"
        )))
    }

    /// The last `max` bytes of a job's stdout or stderr.
    pub fn read_log(&self, id: &str, stderr: bool, max: u64) -> Result<String, JobError> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(JobError::NotFound(format!("no job `{id}`")));
        }
        let path = dir.join(if stderr { "stderr.log" } else { "stdout.log" });
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
            Err(e) => {
                return Err(JobError::Failed(format!(
                    "cannot read `{}`: {e}",
                    path.display()
                )));
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut buf = Vec::new();
        f.seek(SeekFrom::Start(len.saturating_sub(max)))
            .and_then(|_| f.take(max).read_to_end(&mut buf))
            .map_err(|e| JobError::Failed(format!("cannot read `{}`: {e}", path.display())))?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The environment every job starts from; the spec's variables go on top.
/// Nothing else of the caller's environment (tokens, passwords) reaches a job.
pub fn base_environment(id: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), JOB_PATH.to_owned()),
        ("HPC_JOB_ID".to_owned(), id.to_owned()),
    ];
    for key in ["HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR"] {
        if let Ok(v) = std::env::var(key) {
            env.push((key.to_owned(), v));
        }
    }
    env
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, JobError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| JobError::Failed(format!("`{}` is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JobError::Failed(format!(
            "cannot read `{}`: {e}",
            path.display()
        ))),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// State letter and start time (clock ticks since boot) of a process.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

fn process_alive(pid: i32, start_ticks: u64) -> bool {
    matches!(proc_stat(pid), Some((state, start)) if start == start_ticks && state != 'Z' && state != 'X')
}

/// The `__supervise <dir>` entry point. Runs before any thread exists, since it forks.
pub fn supervise_main(dir: &Path) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on fresh descriptors; this process has one thread.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("error: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("error: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            drop(read_end);
            unsafe { libc::setsid() };
            let code = match supervise(dir, write_end) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("supervisor: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
        _child => {
            drop(write_end);
            let mut word = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut word);
            if word == "ok" {
                0
            } else {
                eprintln!(
                    "{}",
                    if word.is_empty() {
                        "the supervisor died before starting the job"
                    } else {
                        word.as_str()
                    }
                );
                1
            }
        }
    }
}

fn supervise(dir: &Path, ready: OwnedFd) -> Result<(), String> {
    let mut ready = std::fs::File::from(ready);
    let mut refuse = |msg: String| {
        let _ = ready.write_all(msg.as_bytes());
        msg
    };
    // From here on the caller does not wait for us: let go of its pipes
    // (stdin and stdout to /dev/null, stderr to a file).
    let log = std::fs::File::create(dir.join("supervisor.log"))
        .map_err(|e| refuse(format!("cannot create supervisor.log: {e}")))?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| refuse(format!("/dev/null: {e}")))?;
    // SAFETY: plain syscalls on descriptors we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    let request: Request = read_json(&dir.join("request.json"))
        .map_err(|e| e.to_string())
        .and_then(|r| r.ok_or_else(|| "request.json is missing".to_owned()))
        .map_err(&mut refuse)?;
    let open = |name: &str| {
        std::fs::File::create(dir.join(name)).map_err(|e| format!("cannot create {name}: {e}"))
    };
    let stdout = open("stdout.log").map_err(&mut refuse)?;
    let stderr = open("stderr.log").map_err(&mut refuse)?;

    let mut cmd = std::process::Command::new(&request.argv[0]);
    cmd.args(&request.argv[1..])
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(request.working_dir.as_deref().unwrap_or(dir))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let supervisor_pid = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setpgid(0, 0) != 0 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died before prctl took effect.
            if libc::getppid() != supervisor_pid {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    let started = std::time::Instant::now();
    let started_at = now();
    let child = cmd
        .spawn()
        .map_err(|e| refuse(format!("cannot start `{}`: {e}", request.argv[0])))?;
    let job_pid = child.id() as i32;
    let record = SupervisorRecord {
        supervisor_pid,
        supervisor_start_ticks: proc_stat(supervisor_pid).map(|(_, t)| t).unwrap_or(0),
        job_pid,
        boot_id: boot_id(),
        started_at,
    };
    write_atomically(
        &dir.join("supervisor.json"),
        &serde_json::to_vec(&record).expect("serialisable"),
    )
    .map_err(|e| refuse(format!("cannot write supervisor.json: {e}")))?;
    let _ = ready.write_all(b"ok");
    drop(ready);

    let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(limit) = request.time_limit_seconds {
        let flag = timed_out.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(limit));
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            unsafe { libc::killpg(job_pid, libc::SIGTERM) };
            std::thread::sleep(CANCEL_GRACE);
            unsafe { libc::killpg(job_pid, libc::SIGKILL) };
        });
    }

    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(job_pid, &mut status, 0, &mut rusage) };
        if r == job_pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
    let wall = started.elapsed().as_secs_f64();
    // Like a batch scheduler, end what the job left behind in its group.
    unsafe { libc::killpg(job_pid, libc::SIGKILL) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let usage = Usage {
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        wall_time_seconds: wall,
        cpu_seconds: tv(rusage.ru_utime) + tv(rusage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_bytes: (rusage.ru_maxrss.max(0) as u64) * 1024,
        cancelled: dir.join("cancel").exists(),
        timed_out: timed_out.load(std::sync::atomic::Ordering::SeqCst),
    };
    write_atomically(
        &dir.join("result.json"),
        &serde_json::to_vec(&usage).expect("serialisable"),
    )
    .map_err(|e| format!("cannot write result.json: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_reads_this_process() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(state == 'R' || state == 'S');
        assert!(start > 0);
        assert!(process_alive(std::process::id() as i32, start));
        assert!(
            !process_alive(std::process::id() as i32, start + 1),
            "a reused pid is not our process"
        );
    }

    #[test]
    fn ids_cannot_escape_the_jobs_folder() {
        let jobs = Jobs::new(Path::new("/state"), "local");
        for bad in ["", "../x", "a/b", ".", "x y", &"a".repeat(65)] {
            assert!(
                matches!(jobs.dir(bad), Err(JobError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            jobs.dir("0b1c-x_2").unwrap(),
            Path::new("/state/jobs/local/0b1c-x_2")
        );
    }
}
