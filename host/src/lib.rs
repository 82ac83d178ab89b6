//! hpc-host: submit and track HPC jobs through WebAssembly backend plugins.
//!
//! The host loads one backend plugin (a component exporting
//! `ccat:hpc/hpc-backend@0.3.0`, or an older contract), grants it the
//! capabilities its policy names, and calls it once per request in a fresh,
//! bounded store. The folders are layers (ARCHITECTURE.md): [`cli`] over
//! [`daemon`] over [`submit`] over [`runtime`] over [`store`] and
//! [`supervise`] over [`sys`].
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use hpc_host::runtime::bindings::JobSpec;
//! use hpc_host::{Host, Settings, Submit};
//! let settings = Settings::load(&Default::default())?;
//! let host = Host::new(&settings)?;
//! let plugin = host.backend()?;
//! let id = plugin.submit(&JobSpec::command(["echo", "hi"])).await?;
//! let info = plugin.get_status(&id).await?;
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
