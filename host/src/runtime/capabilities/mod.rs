//! One module per host interface a plugin may import. Each module owns, in
//! one [`Capability`] impl: its WIT interface, its section of a plugin's
//! policy table (a typed struct with `deny_unknown_fields`) and the grant it
//! resolves to, its grant check and its part of `plugins inspect`, its
//! per-call context and its linker wiring. The host lists capabilities once,
//! in the [`capabilities!`] line at the end of this file; the macro makes the
//! policy's [`Grants`], a call's [`Contexts`] and the [`ALL`] table from it.
//! See ARCHITECTURE.md for the recipe.
//!
//! This is Spin's `Factor` shape (crates/factors): a trait with associated
//! types for the configuration a capability reads, the state it keeps per
//! instance and the linker wiring, composed into one runtime state. Spin
//! composes factors with a derive macro because embedders pick their own
//! set; this host has one fixed set, so a declarative macro over one list
//! does the same. Host-call time and tracing are not per capability at all:
//! the store's call hook ([`crate::runtime::state::HostClock`]) and the bindings'
//! `tracing` option cover every host function.

pub mod config;
pub mod confine;
pub mod kube;
pub mod kube_security;
pub mod kv;
pub mod kv_budget;
pub mod logging;
pub mod process;

use crate::runtime::policy::Policy;
use crate::runtime::state::State;
use crate::store::Store;
use crate::supervise::jobs::Jobs;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use wasmtime::component::Linker;

/// A host interface, as the host knows it.
pub trait Capability: 'static {
    /// Its interface in the `ccat:hpc` package (`kv`), or `None` for one
    /// every plugin may import (WASI config and logging).
    const INTERFACE: Option<&'static str>;
    /// The policy keys (`plugins.<name>.<key>`) that grant it, for hints.
    const GRANT_KEYS: &'static [&'static str] = &[];
    /// Its keys of a `[<env>.plugins.<name>]` table (or of a policy
    /// request): a struct of `Option`s with `#[serde(deny_unknown_fields)]`.
    /// A table is split among the host's own section and every capability's
    /// by their field names (see [`crate::runtime::policy::PolicyFile`]), read from
    /// the derived `Deserialize`: so no `#[serde(flatten)]` in a section.
    type Section: DeserializeOwned + std::fmt::Debug;
    /// What the section resolves to in a plugin's [`Policy`].
    type Grant: std::fmt::Debug + Clone + Send + Sync + 'static;
    /// Its part of one call's store data; made once per loaded plugin by
    /// [`Capability::context`] and cloned into every call.
    type Ctx: Clone + Send + 'static;

    /// The least-privilege grant every plugin starts from.
    fn least_privilege(plugin: &str) -> Self::Grant;
    /// Apply a table's section on top of a grant; errors name the key.
    fn apply(grant: &mut Self::Grant, section: Self::Section, plugin: &str) -> Result<(), String>;
    /// Whether a grant lets a plugin import the interface (checked at load).
    fn granted(_grant: &Self::Grant) -> bool {
        true
    }
    /// Its keys in `plugins inspect`'s view of a policy, each under its
    /// policy key, so that the view shows every key and the provenance of
    /// each (see [`crate::runtime::policy::layers::provenance`]) lines up with it.
    fn inspect(grant: &Self::Grant, out: &mut Map<String, Value>);
    /// Its numeric limits (key -> value), shown under `limits` and compared
    /// with least privilege: a site plugin may ask for no more without a grant.
    fn limits(_grant: &Self::Grant, _out: &mut Map<String, Value>) {}
    /// Its context for a loaded plugin.
    fn context(policy: &Arc<Policy>, grant: &Self::Grant, setup: &Setup) -> Self::Ctx;
    /// Link its host functions; [`Has`] projects a call's state onto its context.
    fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()>;
}

/// What capabilities are built on, once per loaded plugin.
pub struct Setup {
    /// The host's kv store.
    pub store: Store,
    /// The plugin's supervised jobs.
    pub jobs: Jobs,
    /// This binary (it is also the job supervisor).
    pub exe: PathBuf,
    /// Programs get `SIGKILL` when the host dies
    /// ([`HostOptions`](crate::HostOptions::programs_die_with_host)).
    pub programs_die_with_host: bool,
}

/// A call's state holds capability `C`'s context (implemented for
/// [`State`] by [`capabilities!`]): a module's linker wiring projects with it.
pub trait Has<C: Capability> {
    fn ctx(&mut self) -> &mut C::Ctx;
}

/// One capability, type-erased: what the load check, hints, `inspect` and
/// the linker read.
pub struct Entry {
    pub interface: Option<&'static str>,
    pub grant_keys: &'static [&'static str],
    /// Its section's keys (from the `Section` type's fields).
    pub keys: fn() -> &'static [&'static str],
    pub granted: fn(&Policy) -> bool,
    pub inspect: fn(&Policy, &mut Map<String, Value>),
    pub limits: fn(&Policy, &mut Map<String, Value>),
    pub add_to_linker: fn(&mut Linker<State>) -> anyhow::Result<()>,
}

/// Lists the capabilities, once: `field: Type` per capability, where
/// `field` names its grant in [`Grants`] and its context in [`Contexts`].
macro_rules! capabilities {
    ($($field:ident: $cap:ty),* $(,)?) => {
        /// Every capability's grant in one plugin's policy.
        #[derive(Debug, Clone)]
        pub struct Grants {
            $(pub $field: <$cap as Capability>::Grant,)*
        }

        /// Every capability's section of one policy table, parsed.
        #[derive(Debug)]
        pub struct Sections {
            $($field: <$cap as Capability>::Section,)*
        }

        /// Every capability's context in one call's store.
        #[derive(Clone)]
        pub struct Contexts {
            $($field: <$cap as Capability>::Ctx,)*
        }

        impl Grants {
            pub fn least_privilege(plugin: &str) -> Grants {
                Grants { $($field: <$cap as Capability>::least_privilege(plugin),)* }
            }

            pub fn apply(&mut self, sections: Sections, plugin: &str) -> Result<(), String> {
                $(<$cap as Capability>::apply(&mut self.$field, sections.$field, plugin)?;)*
                Ok(())
            }
        }

        impl Sections {
            /// Take each capability's keys out of `table` and parse them.
            pub fn take(table: &mut toml::Table) -> Result<Sections, String> {
                Ok(Sections {
                    $($field: crate::runtime::policy::take_section(table)?,)*
                })
            }
        }

        impl Contexts {
            pub fn new(policy: &Arc<Policy>, setup: &Setup) -> Contexts {
                Contexts {
                    $($field: <$cap as Capability>::context(policy, &policy.grants.$field, setup),)*
                }
            }
        }

        $(impl Has<$cap> for State {
            fn ctx(&mut self) -> &mut <$cap as Capability>::Ctx {
                &mut self.caps.$field
            }
        })*

        /// Every capability, once.
        pub const ALL: &[Entry] = &[$(Entry {
            interface: <$cap as Capability>::INTERFACE,
            grant_keys: <$cap as Capability>::GRANT_KEYS,
            keys: crate::runtime::policy::section_keys::<<$cap as Capability>::Section>,
            granted: |p| <$cap as Capability>::granted(&p.grants.$field),
            inspect: |p, out| <$cap as Capability>::inspect(&p.grants.$field, out),
            limits: |p, out| <$cap as Capability>::limits(&p.grants.$field, out),
            add_to_linker: <$cap as Capability>::add_to_linker,
        },)*];
    };
}

/// Interfaces of `ccat:hpc` that hold only types: importing them needs no grant.
const TYPES_ONLY: &[&str] = &["types"];

/// The capability of a `ccat:hpc` interface.
pub fn find(interface: &str) -> Option<&'static Entry> {
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
    confine::deny_symlinks(linker)?;
    Ok(())
}

/// A policy as `plugins inspect` shows it: the host's own keys (folders, pin,
/// limits) and each capability's.
pub fn inspect(p: &Policy) -> Value {
    let mut map = Map::new();
    map.insert("dirs".into(), serde_json::json!(p.dirs));
    map.insert("sha256".into(), serde_json::json!(p.sha256));
    map.insert("poll_seconds".into(), serde_json::json!(p.poll_seconds));
    map.insert("limits".into(), Value::Object(p.limit_values()));
    for c in ALL {
        (c.inspect)(p, &mut map);
    }
    Value::Object(map)
}

/// Log a denial where a site admin will see it, and return the message.
pub(crate) fn denied(plugin: &str, capability: &str, target: &str, message: String) -> String {
    tracing::warn!(plugin, capability, target, "denied: {message}");
    message
}

// The one list. Adding a capability: its module above, and a line here.
capabilities! {
    process: process::Process,
    kv: kv::Kv,
    kube: kube::Kube,
    config: config::Config,
    logging: logging::Logging,
}
