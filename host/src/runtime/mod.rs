//! Loading and calling plugins: the wasmtime engine and its compile cache,
//! the contract versions, the capabilities a policy grants and the settings
//! and policies that decide them. A [`plugin::Plugin`] here makes one call
//! per request and nothing more: exactly-once submission is `submit`'s.

pub mod bindings;
pub mod builtin;
pub mod capabilities;
pub mod contract;
pub mod digests;
pub mod engine;
pub mod error;
pub mod host;
pub mod limits;
pub mod plugin;
pub mod policy;
pub mod request;
pub mod sanitize;
pub mod settings;
pub mod state;
