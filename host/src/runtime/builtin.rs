//! The plugins built into this binary (`plugins/*`, compiled by build.rs).

/// A plugin compiled with the host and embedded in it.
pub struct BuiltinPlugin {
    pub name: &'static str,
    pub wasm: &'static [u8],
    pub sha256: &'static str,
    /// Its policy request (`plugins/<name>/policy.toml`), see [`super::request`].
    pub policy: &'static str,
}
include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

pub fn find(name: &str) -> Option<&'static BuiltinPlugin> {
    BUILTIN_PLUGINS.iter().find(|p| p.name == name)
}
