//! `wasi:config/store`: the plugin's settings (the seed keys it needs and its
//! own `config` table), through wasmtime-wasi-config. Nothing else of the
//! settings file, which may hold the workflow manager's secrets, is visible.

use super::Has;
use crate::runtime::policy::Policy;
use crate::runtime::state::State;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_config::{WasiConfig, WasiConfigVariables};

/// `wasi:config/store`: every plugin may read its own config.
pub struct Config;

/// The `[config]` table of a policy table: what the plugin reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSection {
    pub config: Option<BTreeMap<String, toml::Value>>,
}

impl super::Capability for Config {
    const INTERFACE: Option<&'static str> = None;
    type Section = ConfigSection;
    /// Key -> value, as the plugin reads them (non-string TOML values as TOML text).
    type Grant = BTreeMap<String, String>;
    type Ctx = Arc<WasiConfigVariables>;

    fn least_privilege(_plugin: &str) -> Self::Grant {
        BTreeMap::new()
    }

    fn apply(g: &mut Self::Grant, s: ConfigSection, plugin: &str) -> Result<(), String> {
        for (k, v) in s.config.unwrap_or_default() {
            let v = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            // It ends up in batch scripts and is where the daemon listens:
            // checked wherever it is set.
            if k == crate::runtime::settings::daemon::PUSH_ADDRESS {
                crate::runtime::settings::daemon::parse_push_address(&v)
                    .map_err(|e| format!("plugins.{plugin}.config.{k}: {e}"))?;
            }
            g.insert(k, v);
        }
        Ok(())
    }

    fn inspect(g: &Self::Grant, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("config".into(), serde_json::json!(g));
    }

    fn context(_: &Arc<Policy>, g: &Self::Grant, _: &super::Setup) -> Self::Ctx {
        Arc::new(WasiConfigVariables::from_iter(
            g.iter().map(|(k, v)| (k.clone(), v.clone())),
        ))
    }

    fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
        wasmtime_wasi_config::add_to_linker(linker, |s: &mut State| {
            WasiConfig::from(&**<State as Has<Config>>::ctx(s))
        })
        .map_err(anyhow::Error::from)
    }
}
