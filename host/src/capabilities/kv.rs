//! `ccat:hpc/kv`: a key-value store under a prefix the host enforces.
//!
//! The plugin names keys relative to its prefix (`job/<id>`); the host stores
//! `<prefix><key>`. No key a plugin can write reaches outside its prefix, and
//! `list-keys` never shows another plugin's keys.

use crate::bindings::ccat::hpc::kv::{self, KvError};
use crate::state::{HostClock, State};
use crate::store::{Store, StoreError};
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
    pub(crate) clock: HostClock,
    /// This call's writes (the context is cloned for every call).
    written: super::kv_budget::WriteBudget,
}

impl KvCtx {
    pub fn new(store: Store, prefix: &str) -> Self {
        KvCtx {
            store,
            prefix: prefix.into(),
            clock: HostClock::default(),
            written: Default::default(),
        }
    }

    fn key(&self, key: &str) -> Result<String, KvError> {
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(KvError::Invalid(format!(
                "a key must have 1 to {MAX_KEY} bytes"
            )));
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

fn kv_error(e: StoreError) -> KvError {
    match e {
        StoreError::Unavailable(m) => KvError::Unavailable(m),
        StoreError::Invalid(m) => KvError::Invalid(m),
        StoreError::Other(m) => {
            tracing::warn!("kv store error: {m}");
            KvError::Other(m)
        }
    }
}

type R<T> = wasmtime::Result<Result<T, KvError>>;

impl kv::Host for KvCtx {
    async fn get(&mut self, key: String) -> R<Option<Vec<u8>>> {
        Ok(self
            .get_many(vec![key])
            .await?
            .map(|mut v| v.pop().flatten()))
    }

    async fn get_many(&mut self, keys: Vec<String>) -> R<Vec<Option<Vec<u8>>>> {
        if keys.len() > MAX_KEYS {
            return Ok(Err(KvError::Invalid(format!(
                "at most {MAX_KEYS} keys per call"
            ))));
        }
        let keys = match keys
            .iter()
            .map(|k| self.key(k))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let clock = self.clock.clone();
        let _t = clock.enter();
        Ok(super::kv_budget::get_many_bounded(&self.store, keys, kv_error).await)
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl: Option<u32>) -> R<()> {
        if value.len() > MAX_VALUE {
            return Ok(Err(KvError::Invalid(format!(
                "a value must be at most {MAX_VALUE} bytes"
            ))));
        }
        let key = match self.key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.written.spend(key.len() + value.len()) {
            return Ok(Err(e));
        }
        let clock = self.clock.clone();
        let _t = clock.enter();
        Ok(self.store.set(key, value, ttl).await.map_err(kv_error))
    }

    async fn delete(&mut self, key: String) -> R<bool> {
        let key = match self.key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        let clock = self.clock.clone();
        let _t = clock.enter();
        Ok(self.store.delete(key).await.map_err(kv_error))
    }

    async fn list_keys(&mut self, prefix: String) -> R<Vec<String>> {
        let full = format!("{}{prefix}", self.prefix);
        let clock = self.clock.clone();
        let _t = clock.enter();
        let own = self.prefix.len();
        Ok(self
            .store
            .list_keys(full)
            .await
            .map_err(kv_error)
            .map(|keys| keys.into_iter().map(|k| k[own..].to_owned()).collect()))
    }

    async fn increment(&mut self, key: String, delta: i64) -> R<i64> {
        let key = match self.key(&key) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e)),
        };
        if let Err(e) = self.written.spend(key.len()) {
            return Ok(Err(e));
        }
        let clock = self.clock.clone();
        let _t = clock.enter();
        Ok(self.store.increment(key, delta).await.map_err(kv_error))
    }
}

struct HasKv;
impl HasData for HasKv {
    type Data<'a> = &'a mut KvCtx;
}

pub fn add_to_linker(linker: &mut Linker<State>) -> anyhow::Result<()> {
    kv::add_to_linker::<State, HasKv>(linker, |s| &mut s.kv).map_err(anyhow::Error::from)
}
