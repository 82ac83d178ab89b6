//! `wasi:logging`: a plugin's log lines become `tracing` events tagged with
//! the plugin's name.

use crate::bindings::wasi::logging::logging::{self, Level};
use crate::state::State;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest log message kept; a plugin must not flood the host's log.
const MAX_MESSAGE: usize = 4096;

pub struct LoggingCtx {
    pub plugin: Arc<str>,
}

impl logging::Host for LoggingCtx {
    async fn log(
        &mut self,
        level: Level,
        context: String,
        mut message: String,
    ) -> wasmtime::Result<()> {
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [truncated]");
        }
        let plugin = &*self.plugin;
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

/// `wasi:logging`: every plugin may log.
pub const CAPABILITY: super::Capability = super::Capability {
    interface: None,
    grant_keys: &[],
    granted: |_| true,
    inspect: |_| serde_json::Map::new(),
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    logging::add_to_linker::<State, HasLogging>(linker, |s| &mut s.logging)
        .map_err(anyhow::Error::from)
}
