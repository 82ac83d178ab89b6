//! `wasi:config/store`: the plugin's settings (the seed keys it needs and its
//! own `config` table), through wasmtime-wasi-config. Nothing else of the
//! settings file, which may hold the workflow manager's secrets, is visible.

use crate::state::State;
use wasmtime::component::Linker;
use wasmtime_wasi_config::WasiConfig;

pub fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    wasmtime_wasi_config::add_to_linker(linker, |s: &mut State| WasiConfig::from(&s.config))
        .map_err(anyhow::Error::from)
}
