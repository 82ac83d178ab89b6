//! `wasi:logging`: a plugin's log lines become `tracing` events tagged with
//! the plugin's name.
//!
//! A plugin must not flood or forge the host's log: each message and context
//! is bounded and shown with its control characters (newlines included)
//! escaped, and one call may log at most [`MAX_LINES_PER_CALL`] lines and
//! [`MAX_BYTES_PER_CALL`] bytes. What goes over is dropped and counted; one
//! line at the end of the call says how much.

use super::Has;
use crate::runtime::bindings::wasi::logging::logging::{self, Level};
use crate::runtime::policy::Policy;
use crate::runtime::sanitize::{bound, escape};
use crate::runtime::state::State;
use serde::Deserialize;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest log message kept.
const MAX_MESSAGE: usize = 4096;
/// Longest context kept (a module name, a job id).
const MAX_CONTEXT: usize = 128;
/// Lines one call may log.
pub const MAX_LINES_PER_CALL: u64 = 1000;
/// Bytes (messages and contexts, once bounded) one call may log.
pub const MAX_BYTES_PER_CALL: u64 = 1 << 20;

/// The logging context of one call: the plugin's name and what it logged.
/// The context made at load logs nothing; each call's clone counts from zero.
#[derive(Clone)]
pub struct LoggingCtx {
    pub plugin: Arc<str>,
    lines: u64,
    bytes: u64,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LoggingCtx {
    /// A fresh context: a call's volume is counted from zero.
    pub fn new(plugin: Arc<str>) -> Self {
        LoggingCtx {
            plugin,
            lines: 0,
            bytes: 0,
            dropped_lines: 0,
            dropped_bytes: 0,
        }
    }
}

impl Drop for LoggingCtx {
    fn drop(&mut self) {
        if self.dropped_lines > 0 {
            let plugin = &*self.plugin;
            tracing::warn!(
                plugin,
                dropped_lines = self.dropped_lines,
                dropped_bytes = self.dropped_bytes,
                "dropped {} log lines ({} bytes) over the per-call cap of {MAX_LINES_PER_CALL} lines / {MAX_BYTES_PER_CALL} bytes",
                self.dropped_lines,
                self.dropped_bytes
            );
        }
    }
}

impl logging::Host for LoggingCtx {
    async fn log(
        &mut self,
        level: Level,
        mut context: String,
        mut message: String,
    ) -> wasmtime::Result<()> {
        let received = (context.len() + message.len()) as u64;
        bound(&mut message, MAX_MESSAGE);
        bound(&mut context, MAX_CONTEXT);
        let size = (context.len() + message.len()) as u64;
        if self.lines >= MAX_LINES_PER_CALL || self.bytes + size > MAX_BYTES_PER_CALL {
            self.dropped_lines += 1;
            self.dropped_bytes += received;
            return Ok(());
        }
        self.lines += 1;
        self.bytes += size;
        let (message, context) = (escape(&message), escape(&context));
        let (plugin, context) = (&*self.plugin, &*context);
        match level {
            Level::Trace => tracing::trace!(plugin, context, "{message}"),
            Level::Debug => tracing::debug!(plugin, context, "{message}"),
            Level::Info => tracing::info!(plugin, context, "{message}"),
            Level::Warn => tracing::warn!(plugin, context, "{message}"),
            Level::Error | Level::Critical => tracing::error!(plugin, context, "{message}"),
        }
        Ok(())
    }
}

struct HasLogging;
impl HasData for HasLogging {
    type Data<'a> = &'a mut LoggingCtx;
}

/// `wasi:logging`: every plugin may log; it has no policy keys.
pub struct Logging;

/// Logging has no keys in a policy table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingSection {}

impl super::Capability for Logging {
    const INTERFACE: Option<&'static str> = None;
    type Section = LoggingSection;
    type Grant = ();
    type Ctx = LoggingCtx;

    fn least_privilege(_plugin: &str) {}

    fn apply(_: &mut (), _: LoggingSection, _: &str) -> Result<(), String> {
        Ok(())
    }

    fn inspect(_: &(), _: &mut serde_json::Map<String, serde_json::Value>) {}

    fn context(policy: &Arc<Policy>, _: &(), _: &super::Setup) -> LoggingCtx {
        LoggingCtx::new(policy.plugin.as_str().into())
    }

    fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
        logging::add_to_linker::<State, HasLogging>(linker, <State as Has<Logging>>::ctx)
            .map_err(anyhow::Error::from)
    }
}
