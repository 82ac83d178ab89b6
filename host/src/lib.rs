//! hpc-host: submit and track HPC jobs through WebAssembly backend plugins.
//!
//! The host loads one backend plugin (a component exporting
//! `ccat:hpc/hpc-backend@0.1.0`), grants it the capabilities its policy names,
//! and calls it once per request in a fresh, bounded store.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use hpc_host::{Host, settings::Settings};
//! let settings = Settings::load(&Default::default())?;
//! let host = Host::new(&settings)?;
//! let plugin = host.backend()?;
//! let info = plugin.get_status("0b0c...").await?;
//! println!("{:?}", info.status);
//! # Ok(()) }
//! ```

pub mod bindings;
pub mod capabilities;
pub mod cli;
pub mod contract;
pub mod daemon;
pub mod digests;
pub mod engine;
pub mod error;
pub mod fsperm;
pub mod jobs;
pub mod ledger;
pub mod limits;
pub mod plugin;
pub mod policy;
pub mod reaper;
pub mod request;
pub mod sanitize;
pub mod settings;
pub mod slots;
pub mod spec;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod zygote;

pub use error::HostError;
pub use plugin::{Host, HostOptions, Plugin};

/// The plugins built into this binary.
pub mod builtin {
    /// A plugin compiled with the host and embedded in it.
    pub struct BuiltinPlugin {
        pub name: &'static str,
        pub wasm: &'static [u8],
        pub sha256: &'static str,
        /// Its policy request (`plugins/<name>/policy.toml`), see [`crate::request`].
        pub policy: &'static str,
    }
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

    pub fn find(name: &str) -> Option<&'static BuiltinPlugin> {
        BUILTIN_PLUGINS.iter().find(|p| p.name == name)
    }
}
