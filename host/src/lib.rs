//! hpc-host: submit and track HPC jobs through WebAssembly backend plugins.
//!
//! The host loads one backend plugin (a component exporting
//! `ccat:hpc/hpc-backend@0.1.0`), grants it the capabilities its policy names,
//! and calls it once per request in a fresh, bounded store.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use hpc_host::{Host, runtime::settings::Settings};
//! let settings = Settings::load(&Default::default())?;
//! let host = Host::new(&settings)?;
//! let plugin = host.backend()?;
//! let info = plugin.get_status("0b0c...").await?;
//! println!("{:?}", info.status);
//! # Ok(()) }
//! ```

pub mod cli;
pub mod daemon;
pub mod runtime;
pub mod store;
pub mod submit;
pub mod supervise;
pub mod sys;

pub use runtime::error::HostError;
pub use runtime::host::{Host, HostOptions};
pub use runtime::plugin::Plugin;
pub use runtime::settings::Settings;
pub use submit::Submit;
