//! The daemon's connections: who may connect, how many at once, and how long
//! a connection may sit idle or half-sent.
//!
//! - Only this user's processes (`SO_PEERCRED`); others are closed unread.
//! - Request heads must arrive within [`HEADER_TIMEOUT`], which also closes a
//!   keep-alive connection idle that long (hyper starts the timer whenever
//!   the connection waits for a request head); bodies within
//!   [`super::routes::BODY_TIMEOUT`].
//! - At most [`Limits::max_connections`] at once, from the descriptor limit
//!   (raised to its hard limit at start); one more is answered `503
//!   unavailable` and closed, so a flood of idle connections can neither
//!   exhaust descriptors nor hang the daemon.
//! - A daemon a client started by itself (`serve --auto`) exits after
//!   `HPC_DAEMON_IDLE_SECONDS` with no connection and no open job.

use super::Daemon;
use super::api::ApiError;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};

/// How long a connection may take to send a request head, or sit idle
/// between requests. httpx drops its idle connections after 5 s, so a
/// client's pool never meets this.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Descriptors kept for everything else the daemon opens (job files, Redis,
/// plugins, the zygote's pipes).
const RESERVED_FDS: u64 = 256;
/// The most connections served at once, whatever the descriptor limit.
const MAX_CONNECTIONS: u64 = 8192;

/// What the accept loop allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Exit after this long without a connection or an open job (`serve --auto`).
    pub idle_exit: Option<Duration>,
}

impl Limits {
    /// Raise the soft descriptor limit to the hard one, and allow as many
    /// connections as the descriptors left after [`RESERVED_FDS`].
    pub fn from_rlimit(idle_exit: Option<Duration>) -> Limits {
        let fds = raise_nofile();
        let max = fds.saturating_sub(RESERVED_FDS).clamp(16, MAX_CONNECTIONS);
        Limits {
            max_connections: max as usize,
            idle_exit,
        }
    }
}

/// Raise `RLIMIT_NOFILE`'s soft limit to its hard limit; the soft limit now.
fn raise_nofile() -> u64 {
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
            tracing::warn!(
                "cannot raise the descriptor limit from {} to {}",
                r.rlim_cur,
                r.rlim_max
            );
        }
        r.rlim_cur
    }
}

/// Serve `app` on `listener` until `stop` turns true, then let the open
/// connections finish their requests (the caller bounds how long).
pub async fn serve(
    listener: UnixListener,
    app: Router,
    daemon: Arc<Daemon>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open = Arc::new(AtomicUsize::new(0));
    let last_seen = Arc::new(std::sync::Mutex::new(Instant::now()));
    if let Some(idle) = limits.idle_exit {
        tokio::spawn(exit_when_idle(
            daemon.clone(),
            idle,
            open.clone(),
            last_seen.clone(),
        ));
    }
    let busy = Router::new().fallback(move || async move {
        ApiError::unavailable(format!(
            "the daemon serves {} connections already; try again",
            limits.max_connections
        ))
    });
    loop {
        let stream = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == uid => {}
            Ok(c) => {
                tracing::warn!(
                    peer_uid = c.uid(),
                    peer_pid = c.pid(),
                    "refused a connection from another user (uid {}); nothing was read",
                    c.uid()
                );
                continue;
            }
            Err(e) => {
                tracing::warn!("refused a connection whose peer is unknown: {e}");
                continue;
            }
        }
        *last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "{} connections open: answering one more `unavailable`",
                limits.max_connections
            );
            tokio::spawn(serve_one(stream, busy.clone(), stop.clone(), false));
            continue;
        };
        let open = open.clone();
        let last_seen = last_seen.clone();
        open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn({
            let app = app.clone();
            let stop = stop.clone();
            async move {
                serve_one(stream, app, stop, true).await;
                *last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                open.fetch_sub(1, Ordering::SeqCst);
                drop(slot);
            }
        });
    }
    // Wait for the connections still open (their requests finish; idle
    // ones close at once on the graceful shutdown).
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// One HTTP/1.1 connection, closed gracefully when `stop` turns true.
async fn serve_one(
    stream: UnixStream,
    app: Router,
    mut stop: watch::Receiver<bool>,
    keep_alive: bool,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(keep_alive);
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("connection ended: {e}");
            }
            return;
        }
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::debug!("connection ended: {e}");
    }
}

/// Shut the daemon down once it has had no connection and no open job for `idle`.
async fn exit_when_idle(
    daemon: Arc<Daemon>,
    idle: Duration,
    open: Arc<AtomicUsize>,
    last_seen: Arc<std::sync::Mutex<Instant>>,
) {
    let tick = (idle / 10).clamp(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        tokio::time::sleep(tick).await;
        let (_, open_jobs) = daemon.tracker.counts();
        if open.load(Ordering::SeqCst) > 0 || open_jobs > 0 {
            *last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            continue;
        }
        let since = last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if since >= idle {
            tracing::info!(
                "no connection and no open job for {} s: exiting (started by a client, `serve --auto`)",
                idle.as_secs()
            );
            let _ = daemon.shutdown.send(true);
            return;
        }
    }
}
