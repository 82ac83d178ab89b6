//! `wasi:config/store`: the plugin's settings (the seed keys it needs and its
//! own `config` table), through wasmtime-wasi-config. Nothing else of the
//! settings file, which may hold the workflow manager's secrets, is visible.

use crate::state::State;
use wasmtime::component::Linker;
use wasmtime_wasi_config::WasiConfig;

/// `wasi:config/store`: every plugin may read its own config.
pub const CAPABILITY: super::Capability = super::Capability {
    interface: None,
    grant_keys: &[],
    granted: |_| true,
    inspect: |p| {
        let mut m = serde_json::Map::new();
        m.insert("config".into(), serde_json::json!(p.config));
        m
    },
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, |s: &mut State| WasiConfig::from(&s.config))
        .map_err(anyhow::Error::from)
}
