//! `hpc-host serve`: the socket (0600 in a 0700 folder, one daemon per
//! socket, a stale one taken over), the peer-uid check on every connection,
//! signals (SIGTERM/SIGINT drain and exit, SIGHUP reloads) and the runtime.

use super::{Config, Daemon};
use crate::runtime::error::HostError;
use crate::runtime::settings::Overrides;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// How long in-flight requests get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(30);

/// Run the daemon in the foreground until SIGTERM.
pub fn main(overrides: Overrides, auto: bool) -> Result<(), HostError> {
    // How the daemon runs its plugins (pooling, the zygote, programs that
    // may outlive it) is `HostOptions::daemon()`, which `Config::load` gives
    // every host it builds.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            HostError::Internal(anyhow::Error::new(e).context("cannot start the async runtime"))
        })?;
    runtime.block_on(serve(overrides, auto))
}

async fn serve(overrides: Overrides, auto: bool) -> Result<(), HostError> {
    let config = tokio::task::spawn_blocking({
        let o = overrides.clone();
        move || Config::load(&o)
    })
    .await
    .map_err(|e| HostError::Internal(e.into()))??;
    let socket = config.settings.daemon.socket.clone();
    let listener = bind(&socket).await?;
    let daemon = Arc::new(Daemon::new(overrides, config));
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "serving");
    eprintln!(
        "hpc-host: serving on {} (pid {})",
        crate::runtime::sanitize::escape(&socket.display().to_string()),
        std::process::id()
    );

    tokio::spawn(signals(daemon.clone()));
    let app = super::routes::router(daemon.clone());
    let limits =
        super::conn::Limits::from_rlimit(auto.then(|| daemon.config().settings.daemon.idle_exit));
    tracing::info!(
        max_connections = limits.max_connections,
        idle_exit_seconds = limits.idle_exit.map(|d| d.as_secs_f64()),
        "connection limits"
    );
    let server = super::conn::serve(
        listener,
        app,
        daemon.clone(),
        limits,
        daemon.shutdown.subscribe(),
    );
    let mut stop = daemon.shutdown.subscribe();
    let drained = async {
        let _ = stop.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        () = server => {}
        _ = drained => {
            tracing::warn!("requests still running {} s after SIGTERM; exiting", DRAIN.as_secs());
        }
    };
    if crate::sys::fsperm::check_own_socket(&socket) == Ok(true) {
        let _ = std::fs::remove_file(&socket);
    }
    Ok(())
}

/// SIGTERM/SIGINT: stop taking connections, let requests finish. SIGHUP: reload.
async fn signals(daemon: Arc<Daemon>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let d = daemon.clone();
                match tokio::task::spawn_blocking(move || d.reload()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("reload refused, the old settings stay: {e:#}"),
                    Err(e) => tracing::error!("reload failed: {e}"),
                }
            }
        }
    }
    tracing::info!("shutting down: finishing requests in flight");
    let _ = daemon.shutdown.send(true);
}

/// Bind the socket: its folder must be one only this user controls (made
/// 0700 where missing, never chmodded: see [`crate::sys::fsperm::make_private_dir`]);
/// refuse when a daemon answers; take over a stale socket of this user's,
/// and nothing else; make the socket 0600.
async fn bind(socket: &Path) -> Result<UnixListener, HostError> {
    let dir = socket
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let refuse = |why: String| {
        HostError::settings(format!(
            "refusing to serve on `{}`: {why}\nhint: set `HPC_SOCKET` to a path in a folder only you can write (the default is under $XDG_RUNTIME_DIR)",
            socket.display()
        ))
    };
    crate::sys::fsperm::make_private_dir(&dir).map_err(&refuse)?;
    if crate::sys::fsperm::check_own_socket(socket).map_err(&refuse)? {
        match super::client::Client::connect(socket).await {
            Ok(mut c) => {
                let pid = c.health().await.ok().and_then(|h| h["pid"].as_u64());
                let pid = pid.map_or_else(|| "unknown".into(), |p| p.to_string());
                return Err(HostError::settings(format!(
                    "a daemon already serves {} (pid {pid})",
                    socket.display()
                )));
            }
            Err(_) => {
                tracing::info!(socket = %socket.display(), "taking over a stale socket");
                std::fs::remove_file(socket).map_err(|e| {
                    HostError::settings(format!(
                        "cannot remove the stale socket `{}`: {e}",
                        socket.display()
                    ))
                })?;
            }
        }
    }
    let listener = UnixListener::bind(socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            HostError::settings(format!(
                "a daemon already serves {} (pid unknown)",
                socket.display()
            ))
        } else {
            HostError::settings(format!("cannot listen on `{}`: {e}", socket.display()))
        }
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        HostError::settings(format!("cannot make `{}` 0600: {e}", socket.display()))
    })?;
    Ok(listener)
}

/// What `hpc-host serve` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// Served in the foreground until told to stop.
    Stopped,
    /// Started a daemon in the background that now answers: its pid.
    Detached(u32),
}

/// `hpc-host serve [--detach]` (`--identify` is the CLI's: it starts nothing).
pub fn start(overrides: Overrides, detach: bool, auto: bool) -> Result<Served, HostError> {
    if detach {
        return detach_daemon(&overrides).map(Served::Detached);
    }
    main(overrides, auto).map(|()| Served::Stopped)
}

/// Start `hpc-host serve` in its own session, its log in the state folder,
/// and return its pid once it answers on its socket.
fn detach_daemon(overrides: &Overrides) -> Result<u32, HostError> {
    let settings = crate::runtime::settings::Settings::load(overrides)?;
    let log = settings.state_dir.join("hpc-host-serve.log");
    // The log names jobs and settings: private, like everything the host
    // writes (0700 folder, 0600 file, whatever the umask).
    let log_file =
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&settings.state_dir)
            .and_then(|()| {
                std::os::unix::fs::OpenOptionsExt::mode(
                    std::fs::OpenOptions::new().create(true).append(true),
                    0o600,
                )
                .open(&log)
            })
            .and_then(|f| {
                crate::sys::fsperm::make_private(&log)?;
                Ok(f)
            })
            .map_err(|e| {
                HostError::settings_caused(
                    format!("cannot open the daemon's log `{}`", log.display()),
                    e,
                )
            })?;
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hpc-host"));
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log_file);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        HostError::Internal(anyhow::Error::new(e).context("cannot start the daemon"))
    })?;
    let socket = settings.daemon.socket;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(HostError::Internal(anyhow::anyhow!(
                "the daemon exited ({status}); see `{}`",
                log.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            return Ok(child.id());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(HostError::Internal(anyhow::anyhow!(
        "the daemon did not answer on `{}` within 30 s; see `{}`",
        socket.display(),
        log.display()
    )))
}
