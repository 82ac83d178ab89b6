//! One module per host interface a plugin may import. Each holds a context
//! type, its `Host` impl and an `add_to_linker` function.

pub mod config;
pub mod confine;
pub mod kube;
pub mod kube_security;
pub mod kv;
pub mod kv_budget;
pub mod logging;
pub mod process;

use crate::state::State;
use wasmtime::component::Linker;

/// Link every interface of the `hpc-plugin` world, plus base WASI.
pub fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(anyhow::Error::from)?;
    process::add_to_linker(linker)?;
    kv::add_to_linker(linker)?;
    kube::add_to_linker(linker)?;
    config::add_to_linker(linker)?;
    logging::add_to_linker(linker)?;
    crate::fsperm::deny_symlinks(linker)?;
    Ok(())
}

/// Log a denial where a site admin will see it, and return the message.
pub(crate) fn denied(plugin: &str, capability: &str, target: &str, message: String) -> String {
    tracing::warn!(plugin, capability, target, "denied: {message}");
    message
}
