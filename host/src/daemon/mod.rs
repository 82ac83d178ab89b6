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

use crate::runtime::error::HostError;
use crate::runtime::host::{Host, HostOptions};
use crate::runtime::plugin::Plugin;
pub use crate::runtime::settings::daemon::{
    DEFAULT_IDLE_SECONDS, DEFAULT_POLL_SECONDS, DaemonMode, DaemonSettings,
};
use crate::runtime::settings::{Overrides, Settings, check_plugin_name};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

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
    crate::runtime::engine::sha256_hex(format!("{s:?}").as_bytes())
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
            .unwrap_or_else(crate::sys::hostname);
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
        let digest =
            crate::runtime::engine::sha256_hex(format!("{uid}\n{backend}\n{policy}").as_bytes());
        format!(
            "{}poll:{uid}:{backend}:{}",
            crate::store::HOST_NAMESPACE,
            &digest[..16]
        )
    }
}
