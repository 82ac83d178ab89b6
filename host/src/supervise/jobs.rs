//! Supervised jobs: the host side of `process.spawn-job` and the supervisor.
//!
//! `spawn-job` starts `hpc-host __supervise <job dir>` ([`crate::supervise::supervisor`]),
//! which starts the job and records how it ended; this module is the host's
//! side: starting it, reading its records, stopping the job, reading its logs.
//!
//! Layout of `<state>/jobs/<plugin>/<id>/`: `request.json`, `supervisor.json`
//! (pids, process start time, boot id), `result.json`, `cancel` (a marker),
//! `stdout.log`, `stderr.log`, `supervisor.log`. Beside the jobs,
//! `.slots/<host>/` holds the locks of the bound on running jobs
//! ([`crate::supervise::slots`]).
//!
//! A job is running while its supervisor is: same pid, same start time, not a
//! zombie, same boot. A supervisor that vanished without a result means the
//! job is lost, never running forever; its job got SIGKILL with it
//! (`PR_SET_PDEATHSIG`). A supervisor whose record has no job pid yet is
//! waiting for a slot: the job is accepted but has not started.

use crate::supervise::slots::Slots;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// After SIGTERM, how long a cancelled job may take before SIGKILL.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// The `PATH` of a job: the system's own folders, nothing of the caller's.
pub const JOB_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// What `process.job-states` answers as the start time (`running(since)`)
/// of a job that waits for a slot: it is accepted and will run, but has not
/// started. The 0.1.0 `job-state` has no case of its own for it, and the
/// interface is frozen; a start in the future is what reads right to a
/// plugin that does not know this (running, for no time yet: its
/// `max(now - since, 0)` is 0). The SDK names it `NOT_STARTED` too, and the
/// local plugin reports such a job `pending`.
pub const NOT_STARTED: f64 = f64::INFINITY;

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
    /// The bound on running jobs the job counts against: it starts once it
    /// holds one of these slots. (`None` in requests of hosts before the bound.)
    #[serde(default)]
    pub slots: Option<Slots>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SupervisorRecord {
    pub(crate) supervisor_pid: i32,
    pub(crate) supervisor_start_ticks: u64,
    /// The job's process (and process group): `None` while it waits for a slot.
    pub(crate) job_pid: Option<i32>,
    pub(crate) boot_id: String,
    /// When the job started (Unix seconds): `None` while it waits for a slot.
    pub(crate) started_at: Option<f64>,
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
    /// Accepted, waiting for a slot of the bound on running jobs.
    Waiting,
    Running {
        since: f64,
    },
    Exited(Usage),
    Lost(String),
}

impl State {
    /// Not ended: running, or waiting to run.
    pub fn is_live(&self) -> bool {
        matches!(self, State::Waiting | State::Running { .. })
    }
}

/// The jobs of one plugin.
#[derive(Debug, Clone)]
pub struct Jobs {
    root: PathBuf,
    /// What forks their supervisors, if not an `exec` each (the daemon).
    zygote: Option<crate::supervise::zygote::Zygote>,
}

impl Jobs {
    pub fn new(state_dir: &Path, plugin: &str) -> Jobs {
        Jobs {
            root: state_dir.join("jobs").join(plugin),
            zygote: None,
        }
    }

    /// These jobs, their supervisors forked by `zygote` when there is one.
    pub fn with_zygote(self, zygote: Option<crate::supervise::zygote::Zygote>) -> Jobs {
        Jobs { zygote, ..self }
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

    /// The slots of a bound of `count` running jobs on this machine. Named
    /// by the host, since the state folder may be in a home that several
    /// login nodes share (NFS locks reach across machines): each machine
    /// gets its own bound.
    pub fn slots(&self, count: NonZeroUsize) -> Slots {
        let host: String = crate::sys::hostname()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let host = match host.trim_start_matches('.') {
            "" => "this-machine",
            h => h,
        };
        Slots::new(self.root.join(".slots").join(host), count)
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
        if let Err(e) = std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            // The remains of a start that never got as far as the supervisor
            // (its submitter was killed) may be reused: its id is the key's
            // (see the local plugin), and the caller holds the key's claim.
            let started = dir.join("supervisor.json").exists() || dir.join("result.json").exists();
            if e.kind() != std::io::ErrorKind::AlreadyExists || started {
                return Err(fail("cannot create job folder", e));
            }
            tracing::info!(
                job = id,
                "reusing the folder of a start that never happened"
            );
        }
        write_atomically(
            &dir.join("request.json"),
            &serde_json::to_vec(request).expect("serialisable"),
            false,
        )
        .map_err(|e| fail("cannot write to", e))?;

        if let Some(zygote) = &self.zygote
            && let Some(started) = zygote.start(&dir).await
        {
            return started.map_err(JobError::Invalid);
        }
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
            // A folder without a supervisor record is a start that failed or
            // was interrupted (the submit never returned its id): no job.
            return Err(JobError::NotFound(if dir.is_dir() {
                format!("job `{id}` never started")
            } else {
                format!("no job `{id}`")
            }));
        };
        if boot_id() != sup.boot_id {
            return Ok(State::Lost(
                "the machine rebooted before the job ended".into(),
            ));
        }
        if process_alive(sup.supervisor_pid, sup.supervisor_start_ticks) {
            return Ok(match (sup.job_pid, sup.started_at) {
                (Some(_), Some(since)) => State::Running { since },
                _ => State::Waiting,
            });
        }
        // The supervisor may have written its result between the two reads.
        if let Some(usage) = read_json::<Usage>(&dir.join("result.json"))? {
            return Ok(State::Exited(usage));
        }
        Ok(State::Lost(match sup.job_pid {
            Some(_) => format!(
                "the job's supervisor (pid {}) died without recording how the job ended (killed, or out of memory)",
                sup.supervisor_pid
            ),
            None => format!(
                "the job's supervisor (pid {}) died while the job waited for a free slot: the job never started",
                sup.supervisor_pid
            ),
        }))
    }

    /// Stop a job: a running job's process group gets SIGTERM, then SIGKILL
    /// after a grace period; a job waiting for a slot ends without starting.
    /// `false` if it had already ended.
    pub async fn kill(&self, id: &str) -> Result<bool, JobError> {
        if !self.state(id)?.is_live() {
            return Ok(false);
        }
        let dir = self.dir(id)?;
        std::fs::write(dir.join("cancel"), b"")
            .map_err(|e| JobError::Failed(format!("cannot mark the job cancelled: {e}")))?;
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            let mut sent = false;
            let deadline = tokio::time::Instant::now() + CANCEL_GRACE;
            while tokio::time::Instant::now() < deadline {
                if !self.state(id)?.is_live() {
                    return Ok(true);
                }
                let sup: SupervisorRecord = read_json(&dir.join("supervisor.json"))?
                    .ok_or_else(|| JobError::Failed("supervisor record vanished".into()))?;
                match sup.job_pid {
                    Some(job) if !sent => {
                        // SAFETY: plain syscall; the group is the job's own (its
                        // leader's pid), which cannot be reused while the
                        // supervisor has not reaped it.
                        unsafe { libc::killpg(job, signal) };
                        sent = true;
                    }
                    Some(_) => {}
                    // Waiting: the supervisor ends the job unstarted when a
                    // wake-up finds the marker. Again every round, since one
                    // that came just before it went to sleep is lost; at the
                    // last, the supervisor itself (the job is then lost).
                    None => {
                        let wake = if signal == libc::SIGKILL && !sent {
                            sent = true;
                            libc::SIGKILL
                        } else {
                            crate::supervise::supervisor::WAKE_SIGNAL
                        };
                        if process_alive(sup.supervisor_pid, sup.supervisor_start_ticks) {
                            // SAFETY: plain syscall on the live supervisor just checked.
                            unsafe { libc::kill(sup.supervisor_pid, wake) };
                        }
                    }
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

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, JobError> {
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

/// Write a file whole or not at all. `durable` also waits for the disk: only
/// for what must survive a crash (a job's result). Records that a crash makes
/// moot anyway (the request, the supervisor's pids, void after a reboot) skip
/// it, which keeps `submit` fast.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    if durable {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// The datagram socket, in a plugin's jobs folder, on which a daemon serving
/// that plugin hears of every job's end at once (instead of at its next poll).
pub const ENDED_SOCKET: &str = ".ended.sock";

/// Tell the daemon listening on the jobs folder's [`ENDED_SOCKET`], if any,
/// that the job in `job_dir` has ended (its name as the message). Best effort:
/// no daemon, no listener, or a full queue changes nothing, since the daemon
/// also polls.
pub fn announce_end(job_dir: &Path) {
    let (Some(folder), Some(name)) = (job_dir.parent(), job_dir.file_name()) else {
        return;
    };
    if let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to(name.as_encoded_bytes(), folder.join(ENDED_SOCKET));
    }
}

pub(crate) fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

pub(crate) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// State letter and start time (clock ticks since boot) of a process.
pub(crate) fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(19)?.parse().ok()?,
    ))
}

pub(crate) fn process_alive(pid: i32, start_ticks: u64) -> bool {
    matches!(proc_stat(pid), Some((state, start)) if start == start_ticks && state != 'Z' && state != 'X')
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
