//! The seam between the backend's logic and the host: settings, programs,
//! the key-value store, logging. [`SdkHost`] is the real one (host imports
//! through `hpc_plugin_sdk`); tests use a fake that records every call.
//!
//! Files are not behind this seam: the backend reads and writes them with
//! `std::fs` at absolute paths, which the host preopens at the same paths
//! inside the guest, and which native tests point at a temporary folder.

use hpc_plugin_sdk::host::kv::KvError;
use hpc_plugin_sdk::host::process::{ProcessError, RunOutput, RunRequest};

/// What the backend needs from the host.
pub trait Host {
    /// A setting (`wasi:config/store`), e.g. `SLURM_PARTITION`.
    fn setting(&self, key: &str) -> Option<String>;
    /// Run a program the policy names (`sbatch`, `squeue`, `sacct`, `scancel`).
    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError>;
    /// Read a key of the plugin's own key space.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Write a key, optionally expiring after `ttl_seconds`.
    fn kv_set(&mut self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError>;
    /// Delete a key; whether it existed.
    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError>;
    /// Log a warning through the host.
    fn warn(&mut self, msg: &str);
    /// Milliseconds since the Unix epoch.
    fn now_millis(&mut self) -> u64;
    /// A random number, for unique file names.
    fn random(&mut self) -> u64;
}

/// The host, through the guest bindings. Only usable inside a component.
pub struct SdkHost;

impl Host for SdkHost {
    fn setting(&self, key: &str) -> Option<String> {
        hpc_plugin_sdk::setting(key)
    }

    fn run(&mut self, req: &RunRequest) -> Result<RunOutput, ProcessError> {
        hpc_plugin_sdk::host::process::run(req)
    }

    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        hpc_plugin_sdk::host::kv::get(key)
    }

    fn kv_set(&mut self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        hpc_plugin_sdk::host::kv::set(key, value, ttl_seconds)
    }

    fn kv_delete(&mut self, key: &str) -> Result<bool, KvError> {
        hpc_plugin_sdk::host::kv::delete(key)
    }

    fn warn(&mut self, msg: &str) {
        hpc_plugin_sdk::log::warn(msg);
    }

    fn now_millis(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    fn random(&mut self) -> u64 {
        // std seeds every `RandomState` from the platform's randomness
        // (`wasi:random` in a component), and no other crate is needed.
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }
}

#[cfg(test)]
#[path = "fake_host.rs"]
pub(crate) mod fake;
