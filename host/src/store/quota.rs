//! Each plugin's kv quota across calls: the bytes (keys and values) and the
//! keys it keeps in the store, bounded by its policy's `kv_max_bytes` and
//! `kv_max_keys` (issue 11: a plugin's footprint in the host stays within
//! its policy, including what the host stores for it).
//!
//! ```no_run
//! # async fn f(store: hpc_host::store::Store) -> Result<(), hpc_host::store::StoreError> {
//! let q = hpc_host::store::Quota::new("slurm", "hpc-host:slurm:", 64 << 20, 100_000);
//! store.set_within(&q, "hpc-host:slurm:job/1".into(), b"{}".to_vec(), None).await?;
//! # Ok(()) }
//! ```
//!
//! # Design
//!
//! **One usage record per prefix**, `hpc-host::usage:<prefix>` in the host's
//! namespace (no plugin reaches it): the bytes and keys counted under the
//! prefix, the earliest time a counted key may expire (`expiry`), and when it
//! was last recounted (`counted`). Every plugin write (`set`, `increment`,
//! `delete`) updates the record in the same atomic step as the write — one
//! Lua script in Redis, one immediate transaction in SQLite — so a check
//! costs no extra round trip, and two writers (threads, daemons, CLI
//! processes) can never both pass a check that only one of them fits.
//!
//! **Only growth is checked.** A write that would take the bytes or keys over
//! the quota is refused before anything is written; a write that keeps or
//! shrinks them (a delete, an overwrite with a value no larger) always
//! passes, so a plugin over a quota an admin lowered can get back under it.
//!
//! **The record may overestimate, never underestimate.** Keys that expire
//! leave it without telling it (Redis drops them; SQLite rows stay, counted,
//! until purged), and keys removed behind the host's back (an admin's `DEL`,
//! Redis eviction) do too. So when a write would exceed the quota by the
//! record and the record may be stale — it is missing (first use, or lost), a
//! key it counts may have expired by now, or it was last recounted more than
//! [`RECOUNT_AFTER`] ago — the prefix is recounted exactly and the record
//! corrected before the write is checked again, and refused only then. A
//! refusal by a fresh record costs nothing more, so a plugin at its quota
//! cannot make the host scan the store on every call.
//!
//! **Recounting.** SQLite: inside the writer's transaction, delete the
//! prefix's expired rows and sum what is left; exact. Redis: `SCAN MATCH
//! <prefix>*` in batches, each batch measured by a script (`STRLEN`, `PTTL`).
//! A scan is not atomic, so the record also keeps running totals of every
//! growth (`gbytes`, `gkeys`, never decreased); the recount reads them at its
//! start and sets the record to its count plus the growth since. Each key
//! alive at the end was either counted by the scan at its current size or
//! less (and the growth since covers the rest), or written after its slot
//! was scanned (and the growth covers it whole): an upper bound, which is
//! what the check needs. Concurrent recounts each produce one, so whichever
//! finishes last is right. Writes with a TTL during a scan also go to
//! `sexpiry`, so the recount's `expiry` keeps them.
//!
//! Prefixes nest only if a site sets `kv_prefix` that way; then the outer
//! plugin's record does not see the inner one's writes until its next
//! recount (the inner plugin's own quota still bounds them).

use super::{Store, StoreError, redis_error, unix_now};
use std::sync::Arc;

mod on_redis;
mod on_sqlite;
use on_redis::{redis_recount, redis_write};
use on_sqlite::{sqlite_record, sqlite_recount, sqlite_write};

/// How old a usage record may get before a refusal recounts it anyway: keys
/// removed behind the host's back (an admin, Redis eviction) are noticed
/// within this time, and a plugin at its quota costs at most one recount
/// per this interval (plus one per key of it that may have expired).
pub const RECOUNT_AFTER: i64 = 60;

/// A plugin's kv quota (policy keys `kv_max_bytes`, `kv_max_keys`).
#[derive(Clone, Debug)]
pub struct Quota {
    plugin: Arc<str>,
    prefix: Arc<str>,
    max_bytes: u64,
    max_keys: u64,
}

impl Quota {
    pub fn new(plugin: &str, prefix: &str, max_bytes: u64, max_keys: u64) -> Quota {
        Quota {
            plugin: plugin.into(),
            prefix: prefix.into(),
            max_bytes,
            max_keys,
        }
    }

    /// The prefix every key of the plugin starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn record(&self) -> String {
        format!("{}usage:{}", super::HOST_NAMESPACE, self.prefix)
    }

    /// The message a refused write answers with.
    fn refusal(&self, over: Over, would: u64) -> String {
        let plugin = &self.plugin;
        let prefix = &self.prefix;
        match over {
            Over::Bytes => format!(
                "kv quota: the keys under `{prefix}` would take {would} bytes, over the policy's \
                 `kv_max_bytes` of {} (`plugins.{plugin}.kv_max_bytes`); delete keys to make room",
                self.max_bytes
            ),
            Over::Keys => format!(
                "kv quota: there would be {would} keys under `{prefix}`, over the policy's \
                 `kv_max_keys` of {} (`plugins.{plugin}.kv_max_keys`); delete keys to make room",
                self.max_keys
            ),
        }
    }
}

/// What the store holds under a prefix, per its usage record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub keys: u64,
}

#[derive(Clone, Copy, Debug)]
enum Over {
    Bytes,
    Keys,
}

/// One write of a plugin key.
enum Op {
    Set(Vec<u8>, Option<u32>),
    Incr(i64),
    Del,
}

impl Store {
    /// `set` of a plugin key, refused with [`StoreError::Invalid`] naming the
    /// policy key if it would take the plugin over its quota.
    pub async fn set_within(
        &self,
        q: &Quota,
        key: String,
        value: Vec<u8>,
        ttl: Option<u32>,
    ) -> Result<(), StoreError> {
        self.write(q, key, Op::Set(value, ttl)).await.map(drop)
    }

    /// `increment` of a plugin key, within its quota (the number's digits count).
    pub async fn increment_within(
        &self,
        q: &Quota,
        key: String,
        delta: i64,
    ) -> Result<i64, StoreError> {
        let key2 = key.clone();
        let v = self.write(q, key, Op::Incr(delta)).await?;
        v.parse()
            .map_err(|_| StoreError::Other(format!("`{key2}` holds `{v}` after incrementing")))
    }

    /// `delete` of a plugin key, giving its bytes back to the quota.
    pub async fn delete_counted(&self, q: &Quota, key: String) -> Result<bool, StoreError> {
        Ok(self.write(q, key, Op::Del).await? == "1")
    }

    /// Count the prefix exactly, correct its usage record, and return it.
    pub async fn recount(&self, q: &Quota) -> Result<Usage, StoreError> {
        match self {
            Store::Redis(r) => redis_recount(r, q).await,
            Store::Embedded(e) => {
                let q = q.clone();
                e.run(move |c| {
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let rec = sqlite_recount(&tx, &q, unix_now())?;
                    tx.commit()?;
                    Ok(Usage {
                        bytes: rec.bytes as u64,
                        keys: rec.keys as u64,
                    })
                })
                .await
            }
        }
    }

    /// The usage record as it stands (`None`: not made yet), without recounting.
    pub async fn usage(&self, q: &Quota) -> Result<Option<Usage>, StoreError> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn().await?;
                let v: (Option<u64>, Option<u64>) = redis::cmd("HMGET")
                    .arg(q.record())
                    .arg("bytes")
                    .arg("keys")
                    .query_async(&mut c)
                    .await
                    .map_err(redis_error)?;
                Ok(v.0.zip(v.1).map(|(bytes, keys)| Usage { bytes, keys }))
            }
            Store::Embedded(e) => {
                let q = q.clone();
                e.run(move |c| {
                    Ok(sqlite_record(c, &q.record())?.map(|r| Usage {
                        bytes: r.bytes as u64,
                        keys: r.keys as u64,
                    }))
                })
                .await
            }
        }
    }

    /// The written value (`increment`), `"1"`/`"0"` (`delete`: existed or
    /// not), or `""` (`set`).
    async fn write(&self, q: &Quota, key: String, op: Op) -> Result<String, StoreError> {
        debug_assert!(key.starts_with(q.prefix()));
        match self {
            Store::Redis(r) => redis_write(r, q, &key, &op).await,
            Store::Embedded(e) => {
                let q = q.clone();
                e.run(move |c| sqlite_write(c, &q, &key, op, unix_now()))
                    .await?
                    .map_err(StoreError::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let d = std::env::temp_dir().join(format!("hpc-host-quota-{}", uuid::Uuid::new_v4()));
        Store::open(None, &d).unwrap()
    }

    fn refused(r: Result<impl std::fmt::Debug, StoreError>, needle: &str) -> String {
        match r {
            Err(StoreError::Invalid(m)) if m.contains(needle) => m,
            other => panic!("expected a refusal naming {needle}: {other:?}"),
        }
    }

    #[tokio::test]
    async fn embedded_bytes_quota_refuses_growth_and_delete_frees_it() {
        let s = store();
        // Keys `p:a`.. (3 bytes) + 100-byte values: three fit in 310 bytes.
        let q = Quota::new("t", "p:", 310, 100);
        let v = || vec![0u8; 100];
        for k in ["p:a", "p:b", "p:c"] {
            s.set_within(&q, k.into(), v(), None).await.unwrap();
        }
        assert_eq!(
            s.usage(&q).await.unwrap(),
            Some(Usage {
                bytes: 309,
                keys: 3
            })
        );
        let m = refused(
            s.set_within(&q, "p:d".into(), v(), None).await,
            "kv_max_bytes",
        );
        assert!(
            m.contains("412 bytes") && m.contains("`plugins.t.kv_max_bytes`"),
            "{m}"
        );
        // Overwriting with no growth, and shrinking, pass at the quota.
        s.set_within(&q, "p:a".into(), v(), None).await.unwrap();
        s.set_within(&q, "p:a".into(), vec![1], None).await.unwrap();
        s.set_within(&q, "p:a".into(), v(), None).await.unwrap();
        assert!(s.delete_counted(&q, "p:b".into()).await.unwrap());
        assert!(!s.delete_counted(&q, "p:b".into()).await.unwrap());
        s.set_within(&q, "p:d".into(), v(), None).await.unwrap();
        // Another prefix and the raw store are not counted.
        s.set("x:a".into(), vec![0; 1000], None).await.unwrap();
        assert_eq!(
            s.recount(&q).await.unwrap(),
            Usage {
                bytes: 309,
                keys: 3
            }
        );
    }

    #[tokio::test]
    async fn embedded_keys_quota_and_increment() {
        let s = store();
        let q = Quota::new("t", "p:", 1 << 20, 2);
        assert_eq!(s.increment_within(&q, "p:n".into(), 9).await.unwrap(), 9);
        // 9 -> 10 grows the value by one byte: counted.
        assert_eq!(s.increment_within(&q, "p:n".into(), 1).await.unwrap(), 10);
        s.set_within(&q, "p:m".into(), b"x".to_vec(), None)
            .await
            .unwrap();
        refused(s.increment_within(&q, "p:o".into(), 1).await, "kv_max_keys");
        let m = refused(
            s.set_within(&q, "p:o".into(), vec![], None).await,
            "kv_max_keys",
        );
        assert!(
            m.contains("3 keys") && m.contains("`plugins.t.kv_max_keys`"),
            "{m}"
        );
        s.set_within(&q, "p:o".into(), vec![], None)
            .await
            .unwrap_err();
        assert_eq!(
            s.usage(&q).await.unwrap(),
            Some(Usage { bytes: 9, keys: 2 })
        );
        s.set_within(&q, "p:m".into(), b"abc".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(
            s.get_many(vec!["p:n".into()]).await.unwrap(),
            vec![Some(b"10".to_vec())]
        );
        assert!(matches!(
            s.increment_within(&q, "p:m".into(), 1).await,
            Err(StoreError::Invalid(m)) if m.contains("integer")
        ));
    }

    #[tokio::test]
    async fn embedded_expired_keys_are_recounted_before_a_refusal() {
        let s = store();
        let q = Quota::new("t", "p:", 1 << 20, 2);
        s.set_within(&q, "p:a".into(), vec![1], Some(1))
            .await
            .unwrap();
        s.set_within(&q, "p:b".into(), vec![1], None).await.unwrap();
        refused(
            s.set_within(&q, "p:c".into(), vec![1], None).await,
            "kv_max_keys",
        );
        std::thread::sleep(std::time::Duration::from_millis(2100));
        // The record still counts `p:a`; the write recounts and fits.
        s.set_within(&q, "p:c".into(), vec![1], None).await.unwrap();
        assert_eq!(
            s.usage(&q).await.unwrap(),
            Some(Usage { bytes: 8, keys: 2 })
        );
        assert_eq!(s.get_many(vec!["p:a".into()]).await.unwrap(), vec![None]);
        // A record lost (or from before quotas) is rebuilt from the rows.
        let Store::Embedded(e) = &s else {
            unreachable!()
        };
        let record = q.record();
        e.run(move |c| c.execute("DELETE FROM kv WHERE key = ?1", [record]))
            .await
            .unwrap();
        refused(
            s.set_within(&q, "p:d".into(), vec![1], None).await,
            "kv_max_keys",
        );
        assert_eq!(
            s.usage(&q).await.unwrap(),
            Some(Usage { bytes: 8, keys: 2 })
        );
    }

    #[tokio::test]
    async fn embedded_concurrent_writers_cannot_both_take_the_last_key() {
        let dir = std::env::temp_dir().join(format!("hpc-host-quota-{}", uuid::Uuid::new_v4()));
        // Two connections to one file: two processes, as far as SQLite knows.
        let (a, b) = (
            Store::open(None, &dir).unwrap(),
            Store::open(None, &dir).unwrap(),
        );
        let q = Quota::new("t", "p:", 1 << 20, 10);
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (s, q) = (if i % 2 == 0 { a.clone() } else { b.clone() }, q.clone());
                tokio::spawn(
                    async move { s.set_within(&q, format!("p:{i}"), vec![0; 10], None).await },
                )
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap().is_ok());
        }
        assert_eq!(ok, 10);
        assert_eq!(a.list_keys("p:".into()).await.unwrap().len(), 10);
        assert_eq!(
            a.usage(&q).await.unwrap(),
            Some(a.recount(&q).await.unwrap())
        );
    }
}
