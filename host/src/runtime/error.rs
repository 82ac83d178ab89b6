//! The host's errors: what went wrong ([`HostError`]), its kind (the one
//! table the CLI's exit status, the daemon's HTTP status and the Python
//! exceptions are read off, [`ErrorKind`]) and how people read it
//! ([`report`]).

use crate::runtime::bindings::BackendError;
use std::error::Error;
use std::process::ExitCode;

/// A cause an error keeps, typed: an I/O error, a TOML or figment error, ...
/// Shared, so that [`HostError::duplicate`] copies the whole chain.
pub type Cause = std::sync::Arc<dyn Error + Send + Sync + 'static>;

/// A cause from anything the standard library boxes as an error (an
/// `std::error::Error`, an `anyhow::Error`, a `String`).
pub fn cause(e: impl Into<Box<dyn Error + Send + Sync + 'static>>) -> Cause {
    Cause::from(e.into())
}

/// Everything that can go wrong between a request and a plugin's answer.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The settings file, an environment override or a policy is wrong.
    #[error(transparent)]
    Settings(#[from] SettingsError),

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
    PluginLoad {
        plugin: String,
        message: String,
        /// What wasmtime or the file system said, shown as `caused by:`.
        #[source]
        cause: Option<Cause>,
    },

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

    /// An error the daemon answered a request with: its kind and its message
    /// (the daemon's own `{e:#}` of the error, so it prints as in-process).
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
}

/// A settings error: what is wrong, in the settings' words, and the error
/// that found it (the TOML parser's, figment's, the file system's), if any.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SettingsError {
    pub message: String,
    #[source]
    pub cause: Option<Cause>,
}

impl HostError {
    /// A settings error without a cause of its own.
    pub fn settings(message: impl Into<String>) -> HostError {
        HostError::Settings(SettingsError {
            message: message.into(),
            cause: None,
        })
    }

    /// A settings error and the error that found it (shown as `caused by:`).
    pub fn settings_caused(
        message: impl Into<String>,
        cause: impl Into<Box<dyn Error + Send + Sync + 'static>>,
    ) -> HostError {
        HostError::Settings(SettingsError {
            message: message.into(),
            cause: Some(self::cause(cause)),
        })
    }

    /// The error as people read it: see [`report`].
    pub fn report(&self) -> String {
        report(self)
    }

    /// [`HostError::report`] on one line (its lines joined by `; `), for a
    /// table cell or one element's line of a batch.
    pub fn report_line(&self) -> String {
        report(self).replace('\n', "; ")
    }

    /// The same error again, for each element of a batch one failed call
    /// answered for: every variant a plugin call can fail with is copied
    /// whole; the others (which no plugin call returns) keep their message.
    pub fn duplicate(&self) -> HostError {
        match self {
            HostError::Settings(e) => HostError::Settings(SettingsError {
                message: e.message.clone(),
                cause: e.cause.clone(),
            }),
            HostError::Input(m) => HostError::Input(m.clone()),
            HostError::PluginLoad {
                plugin,
                message,
                cause,
            } => HostError::PluginLoad {
                plugin: plugin.clone(),
                message: message.clone(),
                cause: cause.clone(),
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
            HostError::Remote { kind, message } => HostError::Remote {
                kind: *kind,
                message: message.clone(),
            },
            other => HostError::Internal(anyhow::anyhow!("{other}")),
        }
    }

    /// Its kind: what the CLI's exit status, the daemon's HTTP status and
    /// the Python exception class are made from.
    pub fn kind(&self) -> ErrorKind {
        match self {
            HostError::Settings(_) | HostError::Input(_) | HostError::PluginNotFound { .. } => {
                ErrorKind::InvalidRequest
            }
            HostError::PluginDenied { .. } => ErrorKind::Denied,
            HostError::Backend { error, .. } => ErrorKind::of_backend(error),
            // A malformed URL is a settings mistake; anything else is the store failing.
            HostError::Store(crate::store::StoreError::RedisUrl { .. }) => {
                ErrorKind::InvalidRequest
            }
            HostError::Store(_) => ErrorKind::Unavailable,
            HostError::PluginLoad { .. }
            | HostError::PluginTrap { .. }
            | HostError::PluginTimeout { .. } => ErrorKind::PluginError,
            HostError::Internal(_) => ErrorKind::Internal,
            HostError::Remote { kind, .. } => *kind,
        }
    }

    /// The exit status of a command that failed with it.
    pub fn exit_status(&self) -> ExitStatus {
        self.kind().exit_status()
    }
}

/// The one taxonomy of errors every front end speaks: the CLI (exit status,
/// `kind` in `--output json`), the daemon (HTTP status, `kind` in the error
/// body) and the Python package (one exception class per kind, tested
/// against `python/src/hpc_host/error_kinds.json`, which a unit test here
/// keeps equal to [`ErrorKind::table`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Bad input (a spec, an argument, the settings): retrying unchanged fails again.
    InvalidRequest,
    /// No such job or submission.
    NotFound,
    /// A policy refuses it.
    Denied,
    /// The scheduler, the store or the daemon is down: retry later.
    Unavailable,
    /// The plugin trapped, timed out or could not be loaded.
    PluginError,
    /// A bug or a local failure of the host or the plugin.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::InvalidRequest,
        ErrorKind::NotFound,
        ErrorKind::Denied,
        ErrorKind::Unavailable,
        ErrorKind::PluginError,
        ErrorKind::Internal,
    ];

    /// Its name on the wire and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid-request",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Denied => "denied",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PluginError => "plugin-error",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind a name stands for.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The CLI's exit status for it.
    pub fn exit_status(self) -> ExitStatus {
        match self {
            ErrorKind::InvalidRequest => ExitStatus::Usage,
            ErrorKind::Denied => ExitStatus::Denied,
            _ => ExitStatus::Backend,
        }
    }

    /// The daemon's HTTP status for it.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Denied => 403,
            ErrorKind::Unavailable => 503,
            ErrorKind::PluginError => 502,
            ErrorKind::Internal => 500,
        }
    }

    /// Whether the same request may succeed later, unchanged.
    pub fn retryable(self) -> bool {
        self == ErrorKind::Unavailable
    }

    /// The kind of a plugin's own error.
    pub fn of_backend(e: &BackendError) -> ErrorKind {
        match e {
            BackendError::InvalidRequest(_) => ErrorKind::InvalidRequest,
            BackendError::NotFound(_) => ErrorKind::NotFound,
            BackendError::Denied(_) => ErrorKind::Denied,
            BackendError::Unavailable(_) => ErrorKind::Unavailable,
            BackendError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// A plugin's error of this kind (a plugin has no `plugin-error`: internal).
    pub fn backend_error(self, message: String) -> BackendError {
        match self {
            ErrorKind::InvalidRequest => BackendError::InvalidRequest(message),
            ErrorKind::NotFound => BackendError::NotFound(message),
            ErrorKind::Denied => BackendError::Denied(message),
            ErrorKind::Unavailable => BackendError::Unavailable(message),
            ErrorKind::PluginError | ErrorKind::Internal => BackendError::Internal(message),
        }
    }

    /// The table as JSON, as the Python package ships it.
    pub fn table() -> serde_json::Value {
        let kinds: Vec<_> = ErrorKind::ALL
            .into_iter()
            .map(|k| {
                serde_json::json!({
                    "kind": k.as_str(), "exit_code": k.exit_status() as u8,
                    "http_status": k.http_status(), "retryable": k.retryable(),
                })
            })
            .collect();
        serde_json::json!({ "kinds": kinds })
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a backend error as the CLI and JSON name it, and its message.
pub fn kind_and_message(e: &BackendError) -> (&'static str, &str) {
    let message = match e {
        BackendError::InvalidRequest(m)
        | BackendError::NotFound(m)
        | BackendError::Denied(m)
        | BackendError::Unavailable(m)
        | BackendError::Internal(m) => m,
    };
    (ErrorKind::of_backend(e).as_str(), message)
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
        ErrorKind::of_backend(e).exit_status()
    }
}

/// An error as people read it: the CLI's and `serve`'s `error:` text and the
/// message of the daemon's error answers (so a client prints what the CLI
/// would have). Its message; then `caused by: ` and each cause in its chain
/// ([`Error::source`]) whose text the lines before do not already carry
/// (many messages quote their cause), its own lines indented; then every
/// hint, each on a line of its own, last. A hint is the text after `; hint: `
/// or a line starting `hint: ` in any of them. A report read back as a
/// message (the daemon's answer) reports as itself.
pub fn report(e: &(dyn Error + 'static)) -> String {
    let text = e.to_string();
    let (message, hints) = split_hints(&text);
    let mut hints: Vec<String> = hints.into_iter().map(str::to_owned).collect();
    let mut out = message.to_owned();
    let mut seen = text.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        let (message, more) = split_hints(&text);
        if !message.trim().is_empty() && !seen.contains(message) {
            out.push_str("\ncaused by: ");
            out.push_str(&message.trim_end().replace('\n', "\n  "));
        }
        seen.push_str(&text);
        for h in more {
            if !hints.iter().any(|k| k == h) {
                hints.push(h.to_owned());
            }
        }
        cause = c.source();
    }
    for h in hints {
        out.push_str("\nhint: ");
        out.push_str(&h);
    }
    out
}

/// A message and its hints (see [`report`]).
fn split_hints(text: &str) -> (&str, Vec<&str>) {
    const MARKS: [&str; 2] = ["; hint: ", "\nhint: "];
    let next = |t: &str| {
        MARKS
            .iter()
            .filter_map(|m| t.find(m).map(|at| (at, m.len())))
            .min()
    };
    let Some((at, len)) = next(text) else {
        return (text, Vec::new());
    };
    let (message, mut rest) = (&text[..at], &text[at + len..]);
    let mut hints = Vec::new();
    while let Some((at, len)) = next(rest) {
        hints.push(&rest[..at]);
        rest = &rest[at + len..];
    }
    hints.push(rest.trim_end());
    (message, hints)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python package's table is this one: its exceptions are tested
    /// against the file, so the two cannot drift.
    #[test]
    fn the_python_packages_table_is_this_one() {
        let shipped: serde_json::Value = serde_json::from_str(include_str!(
            "../../../python/src/hpc_host/error_kinds.json"
        ))
        .expect("error_kinds.json is JSON");
        assert_eq!(
            shipped,
            ErrorKind::table(),
            "python/src/hpc_host/error_kinds.json differs from ErrorKind::table(); write it again from the table"
        );
    }

    #[test]
    fn every_kind_round_trips_and_a_plugin_error_keeps_its_kind() {
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
            let e = k.backend_error("m".into());
            let back = ErrorKind::of_backend(&e);
            assert_eq!(
                back,
                if k == ErrorKind::PluginError {
                    ErrorKind::Internal
                } else {
                    k
                }
            );
            // An error the daemon answered is what it was, here too.
            let remote = HostError::Remote {
                kind: k,
                message: "m".into(),
            };
            assert_eq!(remote.kind(), k);
            assert_eq!(remote.exit_status(), k.exit_status());
        }
        assert_eq!(ErrorKind::parse("timeout"), None);
    }

    #[test]
    fn host_errors_have_the_kinds_the_cli_documents() {
        let denied = HostError::PluginDenied {
            plugin: "p".into(),
            message: "m".into(),
        };
        assert_eq!(
            (denied.kind(), denied.exit_status() as u8),
            (ErrorKind::Denied, 4)
        );
        let bad = HostError::Input("x".into());
        assert_eq!(
            (bad.kind(), bad.exit_status() as u8),
            (ErrorKind::InvalidRequest, 2)
        );
        let trap = HostError::PluginTrap {
            plugin: "p".into(),
            function: "submit",
            message: "m".into(),
        };
        assert_eq!(
            (trap.kind(), trap.exit_status() as u8),
            (ErrorKind::PluginError, 3)
        );
    }

    #[test]
    fn a_report_shows_each_cause_once_and_the_hints_last() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = HostError::settings_caused("cannot read settings file `s.toml`", io);
        assert_eq!(
            e.report(),
            "cannot read settings file `s.toml`\ncaused by: no such file"
        );
        // A cause the message quotes is not repeated; a hint in the message
        // goes last, whatever marks it; a multi-line cause is indented.
        let inner = anyhow::anyhow!("line one\nline two");
        let e = HostError::Internal(inner.context("reading x: line one\nline two; hint: try y"));
        assert_eq!(e.report(), "reading x: line one\nline two\nhint: try y");
        let e = HostError::Internal(anyhow::anyhow!("line one\nline two").context("reading x"));
        assert_eq!(e.report(), "reading x\ncaused by: line one\n  line two");
        let e = HostError::Internal(
            anyhow::anyhow!("disk full\nhint: free space").context("cannot write; hint: or not"),
        );
        assert_eq!(
            e.report(),
            "cannot write\ncaused by: disk full\nhint: or not\nhint: free space"
        );
    }

    /// What the daemon sends (a report) is what a client prints: a report of
    /// a report is itself.
    #[test]
    fn a_report_read_back_reports_as_itself() {
        let io = std::io::Error::other("refused");
        let e = HostError::settings_caused("`x` is wrong; hint: set y", io);
        let once = e.report();
        assert_eq!(once, "`x` is wrong\ncaused by: refused\nhint: set y");
        // A batch's copy of the error keeps its chain.
        assert_eq!(e.duplicate().report(), once);
        let remote = HostError::Remote {
            kind: e.kind(),
            message: once.clone(),
        };
        assert_eq!(remote.report(), once);
    }
}
