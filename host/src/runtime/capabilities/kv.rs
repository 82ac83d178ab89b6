//! `ccat:hpc/kv`: a key-value store under a prefix the host enforces.
//!
//! The plugin names keys relative to its prefix (`job/<id>`); the host stores
//! `<prefix><key>`. No key a plugin can write reaches outside its prefix, and
//! `list-keys` never shows another plugin's keys. What the plugin keeps
//! across calls is bounded by its quota (`kv_max_bytes`, `kv_max_keys`; see
//! [`crate::store::quota`]), what one call writes or reads by
//! [`super::kv_budget`].

use super::Has;
use crate::runtime::bindings::kv::{self, KvError};
use crate::runtime::policy::Policy;
use crate::runtime::state::State;
use crate::store::{Quota, Store, StoreError};
use serde::Deserialize;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest key a plugin may use.
const MAX_KEY: usize = 1024;
/// Largest value a plugin may store (job records are far smaller).
const MAX_VALUE: usize = 1 << 20;
/// Most keys in one `get-many`.
const MAX_KEYS: usize = 10_000;

/// `ccat:hpc/kv`: every plugin has a namespace of its own.
pub struct Kv;

/// The kv keys of a policy table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvSection {
    pub kv_prefix: Option<String>,
    pub kv_max_bytes: Option<u64>,
    pub kv_max_keys: Option<u64>,
}

/// A plugin's namespace in the kv store and its quota.
#[derive(Debug, Clone)]
pub struct KvGrant {
    /// Prefix the host puts before every kv key of this plugin.
    pub prefix: String,
    /// Bytes (keys and values) the plugin may keep, across all its calls
    /// (see [`crate::store`]'s `quota` module).
    pub max_bytes: u64,
    /// Keys the plugin may keep, across all its calls.
    pub max_keys: u64,
}

/// The largest kv quota a policy may set (1 PiB of bytes, or of keys): the
/// Redis side counts in Lua numbers, exact only below 2^53.
pub const MAX_KV_QUOTA: u64 = 1 << 50;

impl super::Capability for Kv {
    const INTERFACE: Option<&'static str> = Some("kv");
    type Section = KvSection;
    type Grant = KvGrant;
    type Ctx = KvCtx;

    fn least_privilege(plugin: &str) -> KvGrant {
        KvGrant {
            prefix: format!("hpc-host:{plugin}:"),
            // A job record is ~1 KiB: 64 MiB holds tens of thousands, far more
            // than any backend keeps open, and is small next to a Redis server.
            max_bytes: 64 << 20,
            max_keys: 100_000,
        }
    }

    fn apply(g: &mut KvGrant, s: KvSection, plugin: &str) -> Result<(), String> {
        if let Some(prefix) = s.kv_prefix {
            if prefix.is_empty() {
                return Err(format!("`plugins.{plugin}.kv_prefix` must not be empty"));
            }
            // The host's own records (the submission ledger, poll leases)
            // live under this namespace: no plugin may write into it.
            let host = crate::store::HOST_NAMESPACE;
            if prefix.starts_with(host) || host.starts_with(prefix.as_str()) {
                return Err(format!(
                    "`plugins.{plugin}.kv_prefix` = `{prefix}` overlaps `{host}`, where the host keeps its own records"
                ));
            }
            g.prefix = prefix;
        }
        for (key, value, target) in [
            ("kv_max_bytes", s.kv_max_bytes, &mut g.max_bytes),
            ("kv_max_keys", s.kv_max_keys, &mut g.max_keys),
        ] {
            if let Some(v) = value {
                if v > MAX_KV_QUOTA {
                    return Err(format!(
                        "`plugins.{plugin}.{key}` must be at most {MAX_KV_QUOTA}, not `{v}`"
                    ));
                }
                *target = v;
            }
        }
        Ok(())
    }

    fn inspect(g: &KvGrant, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("kv_prefix".into(), serde_json::json!(g.prefix));
    }

    fn limits(g: &KvGrant, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("kv_max_bytes".into(), g.max_bytes.into());
        out.insert("kv_max_keys".into(), g.max_keys.into());
    }

    fn context(policy: &Arc<Policy>, _: &KvGrant, setup: &super::Setup) -> KvCtx {
        KvCtx::new(setup.store.clone(), policy)
    }

    fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
        kv::add_to_linker::<State, HasKv>(linker, <State as Has<Kv>>::ctx)
            .map_err(anyhow::Error::from)
    }
}

#[derive(Clone)]
pub struct KvCtx {
    store: Store,
    prefix: Arc<str>,
    quota: Quota,
    /// This call's writes (the context is cloned for every call).
    written: super::kv_budget::WriteBudget,
}

impl KvCtx {
    pub fn new(store: Store, policy: &crate::runtime::policy::Policy) -> Self {
        KvCtx {
            store,
            prefix: policy.grants.kv.prefix.as_str().into(),
            quota: Quota::new(
                &policy.plugin,
                &policy.grants.kv.prefix,
                policy.grants.kv.max_bytes,
                policy.grants.kv.max_keys,
            ),
            written: Default::default(),
        }
    }

    fn key(&self, key: &str) -> Result<String, KvFault> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(KvFault::Invalid(format!(
                "a key must have 1 to {MAX_KEY} bytes"
            )));
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

/// A kv call's failure on the host side, turned into the WIT `kv-error` the
/// plugin sees by [`kv::Host::convert_kv_error`] (bindgen's
/// `trappable_error_type`), so the host functions below can use `?`.
#[derive(Debug, thiserror::Error)]
pub enum KvFault {
    /// The plugin's request is not acceptable (a key too long, too many keys).
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type R<T> = Result<T, KvFault>;

impl kv::Host for KvCtx {
    async fn get(&mut self, key: String) -> R<Option<Vec<u8>>> {
        Ok(self.get_many(vec![key]).await?.pop().flatten())
    }

    async fn get_many(&mut self, keys: Vec<String>) -> R<Vec<Option<Vec<u8>>>> {
        if keys.len() > MAX_KEYS {
            return Err(KvFault::Invalid(format!(
                "at most {MAX_KEYS} keys per call"
            )));
        }
        let keys = keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>, _>>()?;
        super::kv_budget::get_many_bounded(&self.store, keys).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl: Option<u32>) -> R<()> {
        if value.len() > MAX_VALUE {
            return Err(KvFault::Invalid(format!(
                "a value must be at most {MAX_VALUE} bytes"
            )));
        }
        let key = self.key(&key)?;
        self.written.spend(key.len() + value.len())?;
        Ok(self.store.set_within(&self.quota, key, value, ttl).await?)
    }

    async fn delete(&mut self, key: String) -> R<bool> {
        let key = self.key(&key)?;
        Ok(self.store.delete_counted(&self.quota, key).await?)
    }

    async fn list_keys(&mut self, prefix: String) -> R<Vec<String>> {
        let full = format!("{}{prefix}", self.prefix);
        let own = self.prefix.len();
        let keys = self.store.list_keys(full).await?;
        Ok(keys.into_iter().map(|k| k[own..].to_owned()).collect())
    }

    async fn increment(&mut self, key: String, delta: i64) -> R<i64> {
        let key = self.key(&key)?;
        self.written.spend(key.len())?;
        Ok(self.store.increment_within(&self.quota, key, delta).await?)
    }

    fn convert_kv_error(&mut self, e: KvFault) -> wasmtime::Result<KvError> {
        Ok(match e {
            KvFault::Invalid(m) | KvFault::Store(StoreError::Invalid(m)) => KvError::Invalid(m),
            KvFault::Store(StoreError::Unavailable(m)) => KvError::Unavailable(m),
            KvFault::Store(other) => {
                tracing::warn!("kv store error: {other}");
                KvError::Other(other.to_string())
            }
        })
    }
}

struct HasKv;
impl HasData for HasKv {
    type Data<'a> = &'a mut KvCtx;
}
