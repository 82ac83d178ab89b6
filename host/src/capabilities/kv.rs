//! `ccat:hpc/kv`: a key-value store under a prefix the host enforces.
//!
//! The plugin names keys relative to its prefix (`job/<id>`); the host stores
//! `<prefix><key>`. No key a plugin can write reaches outside its prefix, and
//! `list-keys` never shows another plugin's keys. What the plugin keeps
//! across calls is bounded by its quota (`kv_max_bytes`, `kv_max_keys`; see
//! [`crate::store::quota`]), what one call writes or reads by
//! [`super::kv_budget`].

use crate::bindings::kv::{self, KvError};
use crate::state::State;
use crate::store::{Quota, Store, StoreError};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Longest key a plugin may use.
const MAX_KEY: usize = 1024;
/// Largest value a plugin may store (job records are far smaller).
const MAX_VALUE: usize = 1 << 20;
/// Most keys in one `get-many`.
const MAX_KEYS: usize = 10_000;

#[derive(Clone)]
pub struct KvCtx {
    store: Store,
    prefix: Arc<str>,
    quota: Quota,
    /// This call's writes (the context is cloned for every call).
    written: super::kv_budget::WriteBudget,
}

impl KvCtx {
    pub fn new(store: Store, policy: &crate::policy::Policy) -> Self {
        KvCtx {
            store,
            prefix: policy.kv_prefix.as_str().into(),
            quota: Quota::of(policy),
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

/// `ccat:hpc/kv`: every plugin has a namespace of its own.
pub const CAPABILITY: super::Capability = super::Capability {
    interface: Some("kv"),
    grant_keys: &[],
    granted: |_| true,
    inspect: |p| {
        let mut m = serde_json::Map::new();
        m.insert("kv_prefix".into(), serde_json::json!(p.kv_prefix));
        m
    },
    add_to_linker,
};

fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    kv::add_to_linker::<State, HasKv>(linker, |s| &mut s.kv).map_err(anyhow::Error::from)
}
