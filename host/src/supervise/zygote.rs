//! The daemon's side of `hpc-host __zygote` ([`crate::supervise::supervisor::zygote_main`]):
//! one pre-started, single-threaded process that forks job supervisors, so a
//! local submit through the daemon does not `exec` the host binary once more.
//!
//! A host has one [`Zygote`] when its options ask for it
//! ([`HostOptions::zygote`](crate::HostOptions::zygote): the daemon,
//! not the CLI, which makes one submit per process), shared by the jobs of
//! every plugin it loads. The zygote process is started on the first request
//! (it is `exec`'d, so it is single-threaded whatever the caller's threads)
//! and ends when the last handle is dropped, or with the daemon. If it cannot
//! be started or has died before it read a request, the supervisor is
//! started the usual way (an `exec`), and the next request starts a new
//! zygote. A zygote that dies after it read a request may have started the
//! job: the start is then asked again with an `exec`, which the job folder's
//! start lock makes safe (`supervisor::start`). Supervisors outlive their
//! zygote (they call `setsid`).

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Mutex;

/// A forker of supervisors for `exe`; clones share one zygote process.
#[derive(Debug, Clone)]
pub struct Zygote(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    exe: PathBuf,
    conn: Mutex<Option<Conn>>,
}

#[derive(Debug)]
struct Conn {
    /// Killed when dropped (and by `PR_SET_PDEATHSIG` if the daemon dies).
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Zygote {
    /// A zygote of `exe` (this binary), started on first use.
    pub fn new(exe: PathBuf) -> Zygote {
        Zygote(Arc::new(Inner {
            exe,
            conn: Mutex::new(None),
        }))
    }

    /// Start the supervisor of the job in `dir` through the zygote: `None`
    /// when it cannot be asked (the caller then starts it itself), else its
    /// answer: `Ok` once the job runs, or why it could not start.
    pub async fn start(&self, dir: &Path) -> Option<Result<(), String>> {
        let bytes = dir.as_os_str().as_bytes();
        if std::str::from_utf8(bytes).is_err() || bytes.contains(&b'\n') {
            return None;
        }
        let mut conn = self.0.conn.lock().await;
        if conn.is_none() {
            match spawn(&self.0.exe) {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    tracing::warn!("cannot start the zygote ({e}); starting supervisors with exec");
                    return None;
                }
            }
        }
        let c = conn.as_mut()?;
        let mut request = bytes.to_vec();
        request.push(b'\n');
        if let Err(e) = c.stdin.write_all(&request).await {
            // It never saw the request: nothing started.
            tracing::warn!("the zygote is gone ({e}); starting this supervisor with exec");
            *conn = None;
            return None;
        }
        let mut answer = String::new();
        let read = c.stdout.read_line(&mut answer).await;
        if read.is_err() || answer.is_empty() {
            *conn = None;
            // It read the request and died: the supervisor it forked may be
            // starting the job right now. Ask again the usual way: that start
            // waits for the job folder's start lock and answers `ok` without a
            // second job if the first one started (`supervisor::start`).
            tracing::warn!("the zygote died mid-request; settling this start with exec");
            return None;
        }
        let answer = answer.trim_end();
        Some(match answer.strip_prefix("err ") {
            None if answer == "ok" => Ok(()),
            None => Err(format!("unexpected answer from the zygote: {answer}")),
            Some(why) => Err(why.to_owned()),
        })
    }
}

fn spawn(exe: &Path) -> std::io::Result<Conn> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("__zygote")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe. The zygote ends with the daemon.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().expect("piped");
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    Ok(Conn {
        _child: child,
        stdin,
        stdout,
    })
}
