//! The daemon's settings (`HPC_SOCKET`, `HPC_DAEMON`, `HPC_POLL_SECONDS`, ...):
//! read with the rest of the settings, so they live here; service mode
//! itself is the `daemon` module.

use crate::runtime::error::HostError;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The setting: where the daemon listens, and where batch scripts send.
pub const PUSH_ADDRESS: &str = "HPC_PUSH_ADDRESS";

/// Whether the CLI goes through a daemon (`HPC_DAEMON`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DaemonMode {
    /// Use a daemon when one answers on the socket with the same settings.
    #[default]
    Auto,
    /// Always run in-process.
    Never,
    /// Fail when no daemon with the same settings answers.
    Require,
}

/// The daemon's settings: where its socket is, how the CLI uses it, and how
/// often each backend is polled.
#[derive(Clone, Default)]
pub struct DaemonSettings {
    /// `HPC_SOCKET`, default `$XDG_RUNTIME_DIR/hpc-host/hpc-host.sock`, else
    /// `<HPC_STATE_DIR>/hpc-host.sock`.
    pub socket: PathBuf,
    /// `HPC_DAEMON`.
    pub mode: DaemonMode,
    /// `HPC_POLL_SECONDS = { slurm = 10 }`: the poll interval per backend.
    pub poll_seconds: BTreeMap<String, f64>,
    /// `HPC_NODE`: this daemon's name among those sharing a Redis (default: the host name).
    pub node: Option<String>,
    /// `HPC_DAEMON_IDLE_SECONDS`: how long a daemon a client started
    /// (`serve --auto`) stays without a connection or an open job.
    pub idle_exit: Duration,
    /// `HPC_PUSH_ADDRESS`: where batch jobs send their end and the daemon
    /// listens (a plugin reads it through its request's
    /// `${HPC_PUSH_ADDRESS}`; see `daemon::push`).
    pub push_address: Option<std::net::SocketAddr>,
    /// `HPC_DAEMON_POOLING` (default `true`): the daemon's engine takes
    /// instances from wasmtime's pooling allocator (see
    /// [`HostOptions::pooling`](crate::runtime::host::HostOptions::pooling)).
    pub pooling: bool,
}

/// Default of `HPC_DAEMON_IDLE_SECONDS`.
pub const DEFAULT_IDLE_SECONDS: f64 = 900.0;

/// `mode` is the caller's choice and `pooling` how the daemon runs, not
/// what it serves: they stay out of the settings' fingerprint.
impl std::fmt::Debug for DaemonSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonSettings")
            .field("socket", &self.socket)
            .field("poll_seconds", &self.poll_seconds)
            .field("node", &self.node)
            .field("push_address", &self.push_address)
            .finish()
    }
}

/// Default poll interval of a backend without an `HPC_POLL_SECONDS` entry.
/// SLURM: slurmctld's limiter gives each user a bucket of 30 RPCs refilled
/// at 2 per second; one poll costs 2 (squeue + at most one sacct), so 10 s
/// spends a tenth of the refill rate, leaving the rest to sbatch, scancel and
/// the user's own commands. The local backend costs a store read per poll.
/// The poll interval of a backend whose policy names none. A plugin's
/// request sets its own (`poll_seconds`: SLURM's asks for 10 s, see
/// `plugins/slurm/policy.toml`); `HPC_POLL_SECONDS` overrides both.
pub const DEFAULT_POLL_SECONDS: f64 = 5.0;

impl DaemonSettings {
    /// Read `HPC_SOCKET`, `HPC_DAEMON`, `HPC_POLL_SECONDS`, `HPC_NODE`,
    /// `HPC_DAEMON_IDLE_SECONDS`, `HPC_PUSH_ADDRESS` and `HPC_DAEMON_POOLING`
    /// from the merged settings table.
    pub fn from_merged(
        merged: &toml::Table,
        state_dir: &Path,
        runtime_dir: Option<String>,
    ) -> Result<DaemonSettings, HostError> {
        let string = |key: &str| match merged.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.is_empty() => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(HostError::settings(format!(
                "`{key}` must be a string, not `{other}`"
            ))),
        };
        let socket = match string("HPC_SOCKET")? {
            Some(s) => PathBuf::from(s),
            None => match runtime_dir {
                Some(r) => Path::new(&r).join("hpc-host/hpc-host.sock"),
                None => state_dir.join("hpc-host.sock"),
            },
        };
        let mode = match string("HPC_DAEMON")?.as_deref() {
            None | Some("auto") => DaemonMode::Auto,
            Some("never") => DaemonMode::Never,
            Some("require") => DaemonMode::Require,
            Some(other) => {
                return Err(HostError::settings(format!(
                    "`HPC_DAEMON` is `{other}`; it must be `auto`, `never` or `require`"
                )));
            }
        };
        let mut poll_seconds = BTreeMap::new();
        match merged.get("HPC_POLL_SECONDS") {
            None => {}
            Some(toml::Value::Table(t)) => {
                for (name, v) in t {
                    let secs = match v {
                        toml::Value::Integer(i) => *i as f64,
                        toml::Value::Float(f) => *f,
                        _ => f64::NAN,
                    };
                    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
                        return Err(HostError::settings(format!(
                            "`HPC_POLL_SECONDS.{name}` must be a number of seconds above 0, not `{v}`"
                        )));
                    }
                    poll_seconds.insert(name.to_ascii_lowercase(), secs);
                }
            }
            Some(other) => {
                return Err(HostError::settings(format!(
                    "`HPC_POLL_SECONDS` must be a table of seconds per backend, not `{other}`"
                )));
            }
        }
        let idle = match merged.get("HPC_DAEMON_IDLE_SECONDS") {
            None => DEFAULT_IDLE_SECONDS,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(other) => {
                return Err(HostError::settings(format!(
                    "`HPC_DAEMON_IDLE_SECONDS` must be a number of seconds, not `{other}`"
                )));
            }
        };
        if !(idle.is_finite() && idle > 0.0 && idle <= 7.0 * 86_400.0) {
            return Err(HostError::settings(format!(
                "`HPC_DAEMON_IDLE_SECONDS` must be above 0 and at most a week, not `{idle}`"
            )));
        }
        let pooling = match merged.get("HPC_DAEMON_POOLING") {
            None => true,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                return Err(HostError::settings(format!(
                    "`HPC_DAEMON_POOLING` must be `true` or `false`, not `{other}`"
                )));
            }
        };
        Ok(DaemonSettings {
            socket,
            mode,
            poll_seconds,
            node: string("HPC_NODE")?,
            idle_exit: Duration::from_secs_f64(idle),
            push_address: string(PUSH_ADDRESS)?
                .map(|a| parse_push_address(&a))
                .transpose()
                .map_err(HostError::settings)?,
            pooling,
        })
    }

    /// The configured poll interval of a backend.
    /// The interval `HPC_POLL_SECONDS` sets for a backend, if any.
    pub fn poll_override(&self, backend: &str) -> Option<Duration> {
        self.poll_seconds
            .get(backend)
            .map(|s| Duration::from_secs_f64(*s))
    }
}

/// Check an `HPC_PUSH_ADDRESS`: an IP address (not unspecified, multicast
/// or broadcast) and a port other than 0. A host name is refused: batch
/// scripts would resolve it at every job's end, and a slow DNS would hold
/// the job's allocation. The SLURM plugin checks the same again.
pub fn parse_push_address(text: &str) -> Result<SocketAddr, String> {
    let bad = |why: &str| {
        format!(
            "`{PUSH_ADDRESS}` must be an IP address and a port that compute nodes reach (`10.0.0.5:7878`, `[fd00::5]:7878`), not `{}`: {why}",
            text.escape_debug()
        )
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        bad("not an address and port (host names are not accepted: every job would resolve it at its end)")
    })?;
    if addr.port() == 0 {
        return Err(bad("port 0"));
    }
    let ip = addr.ip();
    if ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
    {
        return Err(bad("jobs must reach one listening daemon"));
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_strictly() {
        for ok in ["127.0.0.1:7878", "[::1]:1", "10.0.0.5:65535"] {
            assert!(parse_push_address(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "login1:7878",
            "127.0.0.1",
            "127.0.0.1:0",
            "0.0.0.0:7878",
            "[::]:7878",
            "239.1.1.1:7878",
            "255.255.255.255:7878",
            "127.0.0.1:7878 ",
            "127.0.0.1:7878'; id '",
        ] {
            let e = parse_push_address(bad).unwrap_err();
            assert!(e.starts_with("`HPC_PUSH_ADDRESS` must be"), "{bad:?}: {e}");
        }
    }
}
