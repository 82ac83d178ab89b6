//! The host's errors, and the exit code each one maps to.

use crate::bindings::BackendError;
use std::process::ExitCode;

/// Everything that can go wrong between a request and a plugin's answer.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The settings file, an environment override or a policy is wrong.
    #[error("{0}")]
    Settings(String),

    /// The request itself is malformed (a spec, an argument).
    #[error("{0}")]
    Input(String),

    /// No built-in plugin and no `<name>.wasm` in the plugins folder.
    #[error("plugin `{name}` not found: no built-in plugin has that name and there is no `{}`", .path.display())]
    PluginNotFound {
        name: String,
        path: std::path::PathBuf,
    },

    /// The plugin could not be loaded: not a component, another contract version, ...
    #[error("plugin `{plugin}` could not be loaded: {message}")]
    PluginLoad { plugin: String, message: String },

    /// The plugin needs something its policy does not grant.
    #[error("plugin `{plugin}` refused: {message}")]
    PluginDenied { plugin: String, message: String },

    /// The plugin trapped (panic, out of memory, out of CPU time) in a call.
    #[error("plugin `{plugin}` failed in `{function}`: {message}")]
    PluginTrap {
        plugin: String,
        function: &'static str,
        message: String,
    },

    /// The call did not finish within the policy's wall-clock limit.
    #[error("plugin `{plugin}` did not answer `{function}` within {seconds} s")]
    PluginTimeout {
        plugin: String,
        function: &'static str,
        seconds: u64,
    },

    /// The plugin answered with an error.
    #[error("plugin `{plugin}`: {function}: {}", describe(.error))]
    Backend {
        plugin: String,
        function: &'static str,
        error: BackendError,
    },

    /// The kv store cannot be opened or reached. The message shows the cause
    /// so that every caller (CLI, daemon) prints it; `source()` keeps it typed.
    #[error("{0}")]
    Store(#[source] crate::store::StoreError),

    /// A local failure of the host itself (files, the cache, the runtime).
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl HostError {
    /// The same error again, for each element of a batch one failed call
    /// answered for: every variant a plugin call can fail with is copied
    /// whole; the others (which no plugin call returns) keep their message.
    pub fn duplicate(&self) -> HostError {
        match self {
            HostError::Settings(m) => HostError::Settings(m.clone()),
            HostError::Input(m) => HostError::Input(m.clone()),
            HostError::PluginLoad { plugin, message } => HostError::PluginLoad {
                plugin: plugin.clone(),
                message: message.clone(),
            },
            HostError::PluginDenied { plugin, message } => HostError::PluginDenied {
                plugin: plugin.clone(),
                message: message.clone(),
            },
            HostError::PluginTrap {
                plugin,
                function,
                message,
            } => HostError::PluginTrap {
                plugin: plugin.clone(),
                function,
                message: message.clone(),
            },
            HostError::PluginTimeout {
                plugin,
                function,
                seconds,
            } => HostError::PluginTimeout {
                plugin: plugin.clone(),
                function,
                seconds: *seconds,
            },
            HostError::Backend {
                plugin,
                function,
                error,
            } => HostError::Backend {
                plugin: plugin.clone(),
                function,
                error: error.clone(),
            },
            other => HostError::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

/// The kind of a backend error as the CLI and JSON name it, and its message.
pub fn kind_and_message(e: &BackendError) -> (&'static str, &str) {
    match e {
        BackendError::InvalidRequest(m) => ("invalid-request", m),
        BackendError::NotFound(m) => ("not-found", m),
        BackendError::Denied(m) => ("denied", m),
        BackendError::Unavailable(m) => ("unavailable", m),
        BackendError::Internal(m) => ("internal", m),
    }
}

fn describe(e: &BackendError) -> String {
    let (kind, message) = kind_and_message(e);
    format!("{kind}: {message}")
}

/// Exit codes a script can act on (the CLI contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExitStatus {
    Success = 0,
    /// `wait --timeout` ran out before every job ended; a check of
    /// `plugins test` failed.
    WaitTimeout = 1,
    /// Bad usage or input.
    Usage = 2,
    /// The backend (plugin, scheduler, store) failed.
    Backend = 3,
    /// Denied by policy.
    Denied = 4,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(s as u8)
    }
}

impl ExitStatus {
    pub fn of_backend_error(e: &BackendError) -> Self {
        match e {
            BackendError::InvalidRequest(_) => ExitStatus::Usage,
            BackendError::Denied(_) => ExitStatus::Denied,
            _ => ExitStatus::Backend,
        }
    }
}

impl HostError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            HostError::Settings(_) | HostError::Input(_) | HostError::PluginNotFound { .. } => {
                ExitStatus::Usage
            }
            HostError::PluginDenied { .. } => ExitStatus::Denied,
            HostError::Backend { error, .. } => ExitStatus::of_backend_error(error),
            // A malformed URL is a settings mistake; anything else is the store failing.
            HostError::Store(crate::store::StoreError::RedisUrl { .. }) => ExitStatus::Usage,
            HostError::Store(_) => ExitStatus::Backend,
            HostError::PluginLoad { .. }
            | HostError::PluginTrap { .. }
            | HostError::PluginTimeout { .. }
            | HostError::Internal(_) => ExitStatus::Backend,
        }
    }
}
