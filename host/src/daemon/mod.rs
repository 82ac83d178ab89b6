//! Service mode: one long-lived `hpc-host serve` per user that every caller
//! shares over a Unix socket (docs/daemon-api.md is the contract).
//!
//! The daemon keeps plugins loaded (one [`Plugin`] per backend, reloaded when
//! its file changes), remembers every job it has seen, and polls each backend
//! with one batched `get-statuses` per interval however many callers ask
//! (`tracker`). Its memory is a cache of the store and the scheduler: a
//! restarted daemon answers from them again.

pub mod api;
pub mod client;
pub mod conn;
pub mod lease;
pub mod push;
pub mod routes;
pub mod server;
pub mod tracker;

use crate::error::HostError;
use crate::plugin::{Host, HostOptions, Plugin};
use crate::settings::{Overrides, Settings, check_plugin_name};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

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
    /// `${HPC_PUSH_ADDRESS}`; see [`push`]).
    pub push_address: Option<std::net::SocketAddr>,
    /// `HPC_DAEMON_POOLING` (default `true`): the daemon's engine takes
    /// instances from wasmtime's pooling allocator (see
    /// [`HostOptions::pooling`](crate::plugin::HostOptions::pooling)).
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
            Some(other) => Err(HostError::Settings(format!(
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
                return Err(HostError::Settings(format!(
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
                        return Err(HostError::Settings(format!(
                            "`HPC_POLL_SECONDS.{name}` must be a number of seconds above 0, not `{v}`"
                        )));
                    }
                    poll_seconds.insert(name.to_ascii_lowercase(), secs);
                }
            }
            Some(other) => {
                return Err(HostError::Settings(format!(
                    "`HPC_POLL_SECONDS` must be a table of seconds per backend, not `{other}`"
                )));
            }
        }
        let idle = match merged.get("HPC_DAEMON_IDLE_SECONDS") {
            None => DEFAULT_IDLE_SECONDS,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(other) => {
                return Err(HostError::Settings(format!(
                    "`HPC_DAEMON_IDLE_SECONDS` must be a number of seconds, not `{other}`"
                )));
            }
        };
        if !(idle.is_finite() && idle > 0.0 && idle <= 7.0 * 86_400.0) {
            return Err(HostError::Settings(format!(
                "`HPC_DAEMON_IDLE_SECONDS` must be above 0 and at most a week, not `{idle}`"
            )));
        }
        let pooling = match merged.get("HPC_DAEMON_POOLING") {
            None => true,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => {
                return Err(HostError::Settings(format!(
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
            push_address: string(push::SETTING)?
                .map(|a| push::parse_address(&a))
                .transpose()
                .map_err(HostError::Settings)?,
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

/// What identifies the settings a daemon serves: a client with another
/// fingerprint runs in-process instead (`hpc-host serve --identify` prints
/// it for other clients). The backend is left out (every request names its
/// own, `?backend=`), and so is the socket: where a daemon listens is how a
/// client found it, not what it serves (a client that names the socket
/// starts its daemon with `HPC_SOCKET` set, and still matches).
pub fn fingerprint(settings: &Settings) -> String {
    let mut s = settings.clone();
    s.backend = String::new();
    s.daemon.socket = PathBuf::new();
    crate::engine::sha256_hex(format!("{s:?}").as_bytes())
}

/// One configuration: settings, the host built from them, and the plugins
/// loaded so far. A reload builds a new one; calls in flight keep theirs.
pub struct Config {
    pub settings: Settings,
    pub host: Host,
    pub fingerprint: String,
    plugins: Mutex<HashMap<String, Loaded>>,
}

struct Loaded {
    key: FileKey,
    plugin: Arc<Plugin>,
}

/// What a plugin was loaded from; a change means "load it again".
#[derive(Clone, PartialEq, Eq)]
enum FileKey {
    Builtin,
    File {
        len: u64,
        modified: Option<SystemTime>,
        inode: u64,
    },
}

impl Config {
    /// Read the settings and build a host; fails on what a reload must refuse.
    pub fn load(overrides: &Overrides) -> Result<Config, HostError> {
        let settings = Settings::load(overrides)?;
        let options = HostOptions {
            pooling: settings.daemon.pooling,
            ..HostOptions::daemon()
        };
        let host = Host::with_options(&settings, options)?;
        let config = Config {
            fingerprint: fingerprint(&settings),
            settings,
            host,
            plugins: Mutex::new(HashMap::new()),
        };
        // The default backend must load: a reload that breaks it is refused.
        config.plugin(&config.settings.backend.clone())?;
        Ok(config)
    }

    /// A loaded plugin, reused across calls while its file is unchanged; a
    /// changed file is read, its sha256 checked and compiled again.
    /// How often a backend's open jobs are polled: `HPC_POLL_SECONDS`, else
    /// the plugin's `poll_seconds`, else [`DEFAULT_POLL_SECONDS`].
    pub fn poll_interval(&self, backend: &str) -> Duration {
        if let Some(d) = self.settings.daemon.poll_override(backend) {
            return d;
        }
        let asked = self
            .plugin(backend)
            .ok()
            .and_then(|p| p.policy().poll_seconds);
        Duration::from_secs_f64(asked.unwrap_or(DEFAULT_POLL_SECONDS))
    }

    /// Whether a backend's jobs live on this machine only (it supervises
    /// them): daemons on other login nodes cannot poll them, so its poll is
    /// never shared through Redis.
    pub fn node_local(&self, backend: &str) -> bool {
        self.plugin(backend)
            .is_ok_and(|p| p.policy().grants.process.supervise)
    }

    pub fn plugin(&self, name: &str) -> Result<Arc<Plugin>, HostError> {
        check_plugin_name(name)?;
        let path = self.settings.plugin_path(name);
        let key = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => FileKey::File {
                len: m.len(),
                modified: m.modified().ok(),
                inode: std::os::unix::fs::MetadataExt::ino(&m),
            },
            _ => FileKey::Builtin,
        };
        let mut plugins = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = plugins.get(name)
            && l.key == key
        {
            return Ok(l.plugin.clone());
        }
        let plugin = Arc::new(self.host.load(name)?);
        if plugins.contains_key(name) {
            tracing::info!(plugin = name, "plugin file changed: loaded again");
        }
        plugins.insert(
            name.to_owned(),
            Loaded {
                key,
                plugin: plugin.clone(),
            },
        );
        Ok(plugin)
    }
}

/// The running daemon: its configuration (swapped by reload), its memory of
/// jobs, and the socket it serves.
pub struct Daemon {
    overrides: Overrides,
    config: RwLock<Arc<Config>>,
    pub tracker: tracker::Tracker,
    pub socket: PathBuf,
    pub started_at: f64,
    /// Set when the daemon is shutting down: streams and waits end.
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The Redis shared with daemons on other login nodes (`HPC_REDIS_URL`).
    pub shared: Option<lease::Shared>,
    /// Held while a reload builds its configuration: each one reserves a
    /// pooled engine's address space, so concurrent reloads (a SIGHUP storm)
    /// take turns instead of exhausting it.
    reloading: Mutex<()>,
}

impl Daemon {
    pub fn new(overrides: Overrides, config: Config) -> Daemon {
        let node = config
            .settings
            .daemon
            .node
            .clone()
            .unwrap_or_else(crate::request::hostname);
        let shared = config
            .settings
            .redis_url
            .as_deref()
            .and_then(|url| lease::Shared::new(url, &node));
        Daemon {
            overrides,
            shared,
            socket: config.settings.daemon.socket.clone(),
            config: RwLock::new(Arc::new(config)),
            tracker: tracker::Tracker::new(),
            started_at: now(),
            shutdown: tokio::sync::watch::channel(false).0,
            reloading: Mutex::new(()),
        }
    }

    /// The configuration in force now.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read the settings; on failure the old ones stay and the error says why.
    pub fn reload(&self) -> Result<(), HostError> {
        let _turn = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = Config::load(&self.overrides)?;
        if fresh.settings.daemon.socket != self.socket {
            tracing::warn!(
                "`HPC_SOCKET` changed to `{}`; the daemon keeps serving `{}` until restarted",
                fresh.settings.daemon.socket.display(),
                self.socket.display()
            );
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        tracing::info!("settings reloaded");
        Ok(())
    }
}

/// Unix time in seconds.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Daemon {
    /// The Redis keys' prefix for polling `backend`: daemons of the same user
    /// with the same policy for it share one poll.
    pub fn scope(&self, backend: &str) -> String {
        let policy = self
            .config()
            .settings
            .policy(backend)
            .map(|p| format!("{p:?}"))
            .unwrap_or_default();
        let uid = unsafe { libc::geteuid() };
        let digest = crate::engine::sha256_hex(format!("{uid}\n{backend}\n{policy}").as_bytes());
        format!(
            "{}poll:{uid}:{backend}:{}",
            crate::store::HOST_NAMESPACE,
            &digest[..16]
        )
    }
}
