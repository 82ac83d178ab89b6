//! What this machine knows of the stores it used: a store that came back
//! empty (it lost its keys) is told apart from a new one by its birth record
//! ([`BORN`]), compared with the birth this machine last saw ([`Births`]).

use super::{BORN, LOOKBACK, RECOVERY, get, store_error};
use crate::runtime::error::HostError;
use crate::store::Store;
use serde::{Deserialize, Serialize};

/// What this machine saw of the stores it used: for each (by a digest of
/// its Redis URL or its file), the birth it last saw, and when it found the
/// store reborn (it lost its keys) and the birth before. A JSON file in the
/// state folder, private to the user; unreadable or missing is "never seen".
#[derive(Debug, Clone)]
pub struct Births {
    path: std::path::PathBuf,
    store: String,
}

/// One store's entry in [`Births`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Seen {
    /// The store's birth record (Unix milliseconds).
    born: i64,
    /// When this machine found the store reborn (Unix seconds), and the
    /// birth it had before (Unix milliseconds).
    reborn: Option<(f64, i64)>,
}

impl Births {
    /// The record of the store at `redis_url` (else the embedded store under
    /// `state_dir`), kept in `state_dir`.
    pub fn new(state_dir: &std::path::Path, redis_url: Option<&str>) -> Births {
        let store = match redis_url {
            Some(url) => format!("redis:{url}"),
            None => format!("embedded:{}", state_dir.join("store.sqlite3").display()),
        };
        Births {
            path: state_dir.join("ledger-births.json"),
            store: crate::runtime::engine::sha256_hex(store.as_bytes()),
        }
    }

    fn load(&self) -> std::collections::BTreeMap<String, Seen> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Note the store's birth as seen now; `Some(since)` while the store is
    /// recovering from a loss (`find-job` should look back to `since`).
    pub(super) fn observe(&self, born: i64, now: f64) -> Option<f64> {
        let mut all = self.load();
        let seen = match all.get(&self.store) {
            None => Seen { born, reborn: None },
            Some(s) if s.born == born => *s,
            Some(s) => Seen {
                born,
                reborn: Some((now, s.born)),
            },
        };
        if all.get(&self.store) != Some(&seen) {
            all.insert(self.store.clone(), seen);
            if let Err(e) = self.save(&all) {
                tracing::warn!(
                    "cannot record the store's birth in `{}`: {e}",
                    self.path.display()
                );
            }
        }
        let (noticed, before) = seen.reborn?;
        (now - noticed < RECOVERY).then_some((before as f64 / 1000.0).max(noticed - LOOKBACK))
    }

    /// Written whole or not at all (a temporary file of this writer's own,
    /// renamed), 0600; two writers at once each leave a whole file.
    fn save(&self, all: &std::collections::BTreeMap<String, Seen>) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self
            .path
            .with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(all)?)?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// When the ledger first found this store without its birth record.
/// In Unix milliseconds: an integer, compared exactly (a float read back
/// from JSON may differ in its last bit, which would look like a new birth).
pub(super) async fn born(store: &Store) -> Result<i64, HostError> {
    let parse = |b: Vec<u8>| String::from_utf8_lossy(&b).parse::<i64>().ok();
    if let Some(t) = get(store, BORN).await?.and_then(parse) {
        return Ok(t);
    }
    let now = (crate::supervise::jobs::now() * 1000.0) as i64;
    // Whoever writes it first, every host reads the same birth (a record
    // that is not a number is replaced: the store's birth is unknown).
    let old = get(store, BORN).await?;
    store
        .swap(BORN.to_owned(), old, Some(now.to_string().into_bytes()))
        .await
        .map_err(store_error)?;
    Ok(get(store, BORN).await?.and_then(parse).unwrap_or(now))
}
