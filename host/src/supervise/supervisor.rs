//! The job supervisor: the `hpc-host __supervise <job dir>` process.
//!
//! It forks: the child calls `setsid` (so it outlives the caller and its
//! terminal), starts the job in a process group of its own, and tells its
//! parent "ok" (or why it could not start) through a pipe; the parent relays
//! that as its exit status, so a bad command fails `submit` at once and no
//! zombie is left. The supervisor then waits for the job with `wait4` and
//! writes `result.json` (exit status and rusage) atomically. The job gets
//! SIGKILL if the supervisor dies (`PR_SET_PDEATHSIG`), and whatever the job
//! left behind is killed when it ends, as a batch scheduler does: the supervisor
//! is a child subreaper and ends every descendant ([`crate::supervise::reaper`]).

use crate::supervise::jobs::{
    CANCEL_GRACE, Request, SupervisorRecord, Usage, boot_id, now, proc_stat, read_json,
    write_atomically,
};
use crate::supervise::slots::{Slot, Slots, Taken};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

/// How long the supervisor keeps hunting the job's descendants at its end.
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// The `__supervise <dir>` entry point. Runs before any thread exists, since it forks.
pub fn supervise_main(dir: &Path) -> i32 {
    match start(dir) {
        Ok(()) => 0,
        Err(why) => {
            eprintln!("{why}");
            1
        }
    }
}

/// Fork the supervisor of the job in `dir` and wait until it has started the
/// job (or said why it could not). The calling process must have one thread.
///
/// Starts of one job are serialised by `start.lock` in its folder, held
/// from before the fork until the supervisor has recorded the job's start
/// (`supervisor.json`) or given up; a start that finds the record returns
/// `ok` without starting anything. So asking again after an answer was lost
/// (a zygote killed mid-request) never starts a job twice.
fn start(dir: &Path) -> Result<(), String> {
    let lock = lock_start(dir)?;
    if dir.join("supervisor.json").exists() {
        return Ok(());
    }
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on fresh descriptors; this process has one thread.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("error: pipe: {}", std::io::Error::last_os_error()));
    }
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    match unsafe { libc::fork() } {
        -1 => Err(format!("error: fork: {}", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            let lock = lock;
            // SAFETY: plain syscalls in the new, single-threaded child. A
            // zygote ignores SIGCHLD (its children reap themselves); the
            // supervisor must see its job's end.
            unsafe {
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                libc::setsid();
            }
            let code = match supervise(dir, write_end, lock) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("supervisor: {e}");
                    1
                }
            };
            std::process::exit(code)
        }
        _child => {
            // The child holds the lock (the same open file) until the job's
            // start is recorded or refused.
            drop(lock);
            drop(write_end);
            let mut word = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut word);
            match word.as_str() {
                "ok" => Ok(()),
                "" => Err("the supervisor died before starting the job".into()),
                why => Err(why.to_owned()),
            }
        }
    }
}

/// The `__zygote` entry point: a single-threaded process that the daemon
/// starts once and that forks job supervisors on request, so a submit
/// through the daemon does not `exec` this (large) binary again for each
/// job (the relocation of a fresh `exec` is most of a local submit's cost).
///
/// Protocol on stdin and stdout: a request is one line, a job folder's path;
/// its answer one line, `ok` or `err <why>`. The zygote ends at the end of its
/// input (the daemon closed it, or died: it also gets `SIGKILL` then). Its
/// children, the supervisors, are reaped by the kernel (`SIGCHLD` ignored);
/// each supervisor restores `SIGCHLD` for its own job.
pub fn zygote_main() -> i32 {
    use std::io::BufRead;
    // SAFETY: plain syscall; this process has one thread.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match start(Path::new(&line)) {
            Ok(()) => "ok".to_owned(),
            Err(why) => format!("err {}", why.replace(['\n', '\r'], " ")),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    0
}

/// Take `start.lock` in the job's folder (waiting for a start in flight).
fn lock_start(dir: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("start.lock");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot open `{}`: {e}", path.display()))?;
    loop {
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(f);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("cannot lock `{}`: {e}", path.display()));
        }
    }
}

/// The caller's side of a start in progress: the pipe it reads its answer
/// from and the job folder's start lock, both let go once the job is
/// accepted (running, or recorded as waiting for a slot).
struct Start {
    ready: Option<std::fs::File>,
    lock: Option<std::fs::File>,
}

impl Start {
    /// Refuse the start, telling the caller why (if it still listens): the message.
    fn refuse(&mut self, why: String) -> String {
        if let Some(ready) = &mut self.ready {
            let _ = ready.write_all(why.as_bytes());
        }
        why
    }

    /// The job is accepted and recorded: another start may look now (and
    /// find it), and the caller hears `ok`.
    fn accept(&mut self) {
        self.lock = None;
        if let Some(mut ready) = self.ready.take() {
            let _ = ready.write_all(b"ok");
        }
    }

    fn accepted(&self) -> bool {
        self.ready.is_none()
    }
}

fn supervise(dir: &Path, ready: OwnedFd, lock: std::fs::File) -> Result<(), String> {
    let mut start = Start {
        ready: Some(std::fs::File::from(ready)),
        lock: Some(lock),
    };
    // From here on the caller does not wait for us: let go of its pipes
    // (stdin and stdout to /dev/null, stderr to a file).
    let log = create_private(&dir.join("supervisor.log"))
        .map_err(|e| start.refuse(format!("cannot create supervisor.log: {e}")))?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| start.refuse(format!("/dev/null: {e}")))?;
    // SAFETY: plain syscalls on descriptors we own.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(null.as_raw_fd(), 1);
        libc::dup2(log.as_raw_fd(), 2);
    }
    let request: Request = read_json(&dir.join("request.json"))
        .map_err(|e| e.to_string())
        .and_then(|r| r.ok_or_else(|| "request.json is missing".to_owned()))
        .map_err(|e| start.refuse(e))?;
    let open = |name: &str| {
        create_private(&dir.join(name)).map_err(|e| format!("cannot create {name}: {e}"))
    };
    let stdout = open("stdout.log").map_err(|e| start.refuse(e))?;
    let stderr = open("stderr.log").map_err(|e| start.refuse(e))?;

    let mut cmd = std::process::Command::new(&request.argv[0]);
    cmd.args(&request.argv[1..])
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .current_dir(working_dir(&request, dir))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // Descendants that leave the job's group or session stay ours to end.
    crate::supervise::reaper::become_subreaper()
        .map_err(|e| start.refuse(format!("cannot become a subreaper: {e}")))?;
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
    // Held while the job runs (and, if this process is killed, until it dies).
    let slot = match &request.slots {
        None => None,
        Some(slots) => match take_slot(dir, slots, &request, &mut start) {
            Ok(Some(slot)) => Some(slot),
            Ok(None) => return end_unstarted(dir, None),
            // Accepted, then the wait failed: the submit has returned.
            Err(why) if start.accepted() => return end_unstarted(dir, Some(why)),
            Err(why) => return Err(why),
        },
    };
    let started = std::time::Instant::now();
    let started_at = now();
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let why = cannot_start(&request, dir, e);
            // Accepted while it waited for a slot: the submit has returned.
            return if start.accepted() {
                end_unstarted(dir, Some(why))
            } else {
                Err(start.refuse(why))
            };
        }
    };
    let job_pid = child.id() as i32;
    record_start(dir, Some((job_pid, started_at)))
        .map_err(|e| start.refuse(format!("cannot write supervisor.json: {e}")))?;
    start.accept();

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
    // Like a batch scheduler, end what the job left behind: its group, then
    // every other descendant (those that called `setsid`, double forks).
    unsafe { libc::killpg(job_pid, libc::SIGKILL) };
    let leftovers = crate::supervise::reaper::end_descendants(REAP_LIMIT);
    if leftovers > 0 {
        eprintln!("supervisor: killed {leftovers} processes the job left behind");
    }
    // Nothing of the job runs any more: the next job may start while the
    // result is written (and synced).
    drop(slot);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    record_end(
        dir,
        &Usage {
            exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
            signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
            wall_time_seconds: wall,
            cpu_seconds: tv(rusage.ru_utime) + tv(rusage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            peak_rss_bytes: (rusage.ru_maxrss.max(0) as u64) * 1024,
            cancelled: cancel_requested(dir),
            timed_out: timed_out.load(std::sync::atomic::Ordering::SeqCst),
        },
    )
}

/// The signal `kill-job` sends a supervisor whose job waits for a slot: it
/// only interrupts the wait, which then finds the job's `cancel` marker.
/// (Handled, not ignored, so that the job's own disposition stays the
/// default: an ignored signal would stay ignored across `exec`.)
pub(crate) const WAKE_SIGNAL: libc::c_int = libc::SIGUSR1;

/// A slot of the job's bound ([`crate::supervise::slots`]): at once if one is free and
/// no job waits, else after accepting the job (recorded as waiting, `ok` to
/// the caller) and waiting in line. `None`: cancelled while it waited.
fn take_slot(
    dir: &Path,
    slots: &Slots,
    request: &Request,
    start: &mut Start,
) -> Result<Option<Slot>, String> {
    let no_slot = |e: std::io::Error| {
        format!(
            "cannot take a slot of the running-jobs bound in `{}`: {e}",
            slots.dir.display()
        )
    };
    let place = match slots.take().map_err(no_slot).map_err(|e| start.refuse(e))? {
        Taken::Now(slot) => return Ok(Some(slot)),
        Taken::Wait(place) => place,
    };
    // A command that cannot start fails its submit now, not after the wait.
    startable(request, dir).map_err(|e| start.refuse(e))?;
    extern "C" fn wake(_: libc::c_int) {}
    // SAFETY: installs a handler that does nothing, without SA_RESTART, so
    // that the signal interrupts a blocking `flock`.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(WAKE_SIGNAL, &action, std::ptr::null_mut());
    }
    record_start(dir, None)
        .map_err(|e| start.refuse(format!("cannot write supervisor.json: {e}")))?;
    start.accept();
    let slot = slots
        .wait(place, || cancel_requested(dir))
        .map_err(no_slot)?;
    // A cancel may have come after the last look.
    Ok(slot.filter(|_| !cancel_requested(dir)))
}

/// Whether `kill-job` asked for the job's end (its `cancel` marker).
fn cancel_requested(dir: &Path) -> bool {
    dir.join("cancel").exists()
}

fn working_dir<'a>(request: &'a Request, dir: &'a Path) -> &'a Path {
    request.working_dir.as_deref().unwrap_or(dir)
}

/// Why `exec` failed, in words: a missing working folder is named (exec's
/// own ENOENT would blame the program).
fn cannot_start(request: &Request, dir: &Path, e: std::io::Error) -> String {
    let cwd = working_dir(request, dir);
    if !cwd.is_dir() {
        return format!(
            "cannot start `{}`: its working folder `{}` does not exist (the spec's `workspace_dir`)",
            request.argv[0],
            cwd.display()
        );
    }
    format!("cannot start `{}`: {e}", request.argv[0])
}

/// Why the job's command could not start, as `exec` would find it: no such
/// program (in the job's `PATH`), not executable, or no working folder.
/// Asked before a job is accepted to wait, so that a typo still fails its
/// submit at once.
fn startable(request: &Request, dir: &Path) -> Result<(), String> {
    let cannot = |e: std::io::Error| cannot_start(request, dir, e);
    let cwd = working_dir(request, dir);
    if !cwd.is_dir() {
        return Err(cannot(std::io::Error::from_raw_os_error(libc::ENOENT)));
    }
    let program = Path::new(&request.argv[0]);
    let candidates: Vec<std::path::PathBuf> = if request.argv[0].contains('/') {
        vec![cwd.join(program)]
    } else {
        // The last `PATH` wins, as in the job's environment.
        let path = request
            .env
            .iter()
            .rfind(|(k, _)| k == "PATH")
            .map_or(crate::supervise::jobs::JOB_PATH, |(_, v)| v.as_str());
        path.split(':').map(|d| cwd.join(d).join(program)).collect()
    };
    let mut why = std::io::Error::from_raw_os_error(libc::ENOENT);
    for candidate in candidates {
        match executable(&candidate) {
            Ok(()) => return Ok(()),
            // A match that cannot run is what exec would report.
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => why = e,
            Err(_) => {}
        }
    }
    Err(cannot(why))
}

fn executable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if path.is_dir() {
        return Err(std::io::Error::from_raw_os_error(libc::EACCES));
    }
    Ok(())
}

/// Record that the job runs (its pid and start time), or, with `None`, that
/// it is accepted and waits for a slot.
fn record_start(dir: &Path, job: Option<(i32, f64)>) -> std::io::Result<()> {
    let pid = std::process::id() as i32;
    let record = SupervisorRecord {
        supervisor_pid: pid,
        supervisor_start_ticks: proc_stat(pid).map(|(_, t)| t).unwrap_or(0),
        job_pid: job.map(|(pid, _)| pid),
        boot_id: boot_id(),
        started_at: job.map(|(_, at)| at),
    };
    write_atomically(
        &dir.join("supervisor.json"),
        &serde_json::to_vec(&record).expect("serialisable"),
        false,
    )
}

/// Record how the job ended, and tell the daemon.
fn record_end(dir: &Path, usage: &Usage) -> Result<(), String> {
    write_atomically(
        &dir.join("result.json"),
        &serde_json::to_vec(usage).expect("serialisable"),
        true,
    )
    .map_err(|e| format!("cannot write result.json: {e}"))?;
    crate::supervise::jobs::announce_end(dir);
    Ok(())
}

/// End a job that was accepted but never ran: cancelled while it waited for
/// a slot (`None`), or it could not start after the wait (why, also written
/// to the job's stderr, with exit code 127 as a shell gives a missing
/// command).
fn end_unstarted(dir: &Path, failed: Option<String>) -> Result<(), String> {
    if let Some(why) = &failed {
        eprintln!("supervisor: {why}");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("stderr.log"))
        {
            let _ = writeln!(f, "hpc-host: {why}");
        }
    }
    record_end(
        dir,
        &Usage {
            exit_code: failed.is_some().then_some(127),
            signal: None,
            wall_time_seconds: 0.0,
            cpu_seconds: 0.0,
            peak_rss_bytes: 0,
            cancelled: cancel_requested(dir),
            timed_out: false,
        },
    )
}

/// A new (or emptied) file readable by this user only, whatever the umask.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
