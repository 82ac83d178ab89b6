//! One module per host interface a plugin may import. Each module owns its
//! per-call context and `Host` impl, and describes itself in one
//! [`Capability`] value: its WIT interface, the policy keys that grant it, its
//! grant check, its part of `plugins inspect`, and its linker wiring. The host
//! lists capabilities once, in [`ALL`]; see ARCHITECTURE.md for the recipe.
//!
//! This is the shape of Spin's `Factor` without its generics: Spin composes
//! factors into a typed runtime state at compile time because embedders pick
//! their own set; this host has one fixed set, so a table of plain function
//! pointers says the same with less machinery. Host-call time and tracing are
//! not per capability at all: the store's call hook
//! ([`crate::state::HostClock`]) and the bindings' `tracing` option cover
//! every host function.

pub mod config;
pub mod confine;
pub mod kube;
pub mod kube_security;
pub mod kv;
pub mod kv_budget;
pub mod logging;
pub mod process;

use crate::policy::Policy;
use crate::state::State;
use wasmtime::component::Linker;

/// What the host knows of one capability.
pub struct Capability {
    /// Its interface in the `ccat:hpc` package (`kv`), or `None` for one
    /// every plugin may import (WASI config and logging).
    pub interface: Option<&'static str>,
    /// The policy keys (`plugins.<name>.<key>`) that grant it, for hints.
    pub grant_keys: &'static [&'static str],
    /// Whether a policy grants it; checked at load against the imports.
    pub granted: fn(&Policy) -> bool,
    /// Its keys in `plugins inspect`'s view of a policy.
    pub inspect: fn(&Policy) -> serde_json::Map<String, serde_json::Value>,
    /// Link its host functions.
    pub add_to_linker: fn(&mut Linker<State>) -> anyhow::Result<()>,
}

/// Every capability, once. Adding one is adding its module and a line here.
pub const ALL: &[Capability] = &[
    process::CAPABILITY,
    kv::CAPABILITY,
    kube::CAPABILITY,
    config::CAPABILITY,
    logging::CAPABILITY,
];

/// Interfaces of `ccat:hpc` that hold only types: importing them needs no grant.
const TYPES_ONLY: &[&str] = &["types"];

/// The capability of a `ccat:hpc` interface.
pub fn find(interface: &str) -> Option<&'static Capability> {
    ALL.iter().find(|c| c.interface == Some(interface))
}

/// Whether a policy grants a `ccat:hpc` interface (unknown ones: no).
pub fn grants(policy: &Policy, interface: &str) -> bool {
    TYPES_ONLY.contains(&interface) || find(interface).is_some_and(|c| (c.granted)(policy))
}

/// Link every interface of the `hpc-plugin` world, plus base WASI.
pub fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(anyhow::Error::from)?;
    for c in ALL {
        (c.add_to_linker)(linker)?;
    }
    crate::fsperm::deny_symlinks(linker)?;
    Ok(())
}

/// A policy as `plugins inspect` shows it: the host's own keys (folders, pin,
/// limits) and each capability's.
pub fn inspect(p: &Policy) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("dirs".into(), serde_json::json!(p.dirs));
    map.insert("sha256".into(), serde_json::json!(p.sha256));
    map.insert("poll_seconds".into(), serde_json::json!(p.poll_seconds));
    map.insert(
        "limits".into(),
        serde_json::json!({
            "memory_mb": p.limits.memory_bytes >> 20, "cpu_seconds": p.limits.cpu_time.as_secs_f64(),
            "wall_seconds": p.limits.wall_time.as_secs_f64(), "output_bytes": p.limits.output_bytes,
            "max_processes": p.limits.processes, "max_runs_per_call": p.limits.runs_per_call,
            "kv_max_bytes": p.limits.kv_bytes, "kv_max_keys": p.limits.kv_keys,
        }),
    );
    for c in ALL {
        map.extend((c.inspect)(p));
    }
    serde_json::Value::Object(map)
}

/// Log a denial where a site admin will see it, and return the message.
pub(crate) fn denied(plugin: &str, capability: &str, target: &str, message: String) -> String {
    tracing::warn!(plugin, capability, target, "denied: {message}");
    message
}
