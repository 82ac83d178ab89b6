//! The stores behind the `kv` capability: Redis when a URL is configured,
//! else an embedded SQLite file in the state folder (no server needed).
//!
//! Keys reaching this module are full keys: the plugin's prefix has already
//! been added by the `kv` capability (`runtime::capabilities::kv`). A plugin's writes go through
//! [`quota`], which keeps each plugin within its `kv_max_bytes` and
//! `kv_max_keys` across calls; the raw methods here are for the host's own
//! records.

pub mod quota;
pub use quota::{Quota, Usage};

use redis::AsyncCommands;
use rusqlite::{OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::OnceCell;

/// Where the host keeps records of its own (the submission ledger, poll
/// leases). Plugins' keys start with `hpc-host:<plugin>:` (plugin names are
/// never empty) or a site prefix that the policy keeps out of this namespace.
pub const HOST_NAMESPACE: &str = "hpc-host::";

/// How long to wait for Redis to accept a connection or answer a command:
/// a CLI call must fail with `unavailable`, not hang, when Redis is down.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a writer waits for another process's SQLite transaction.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the store failed. Opening keeps its cause as a typed source; the
/// per-call variants carry the message a plugin sees through `kv-error`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state folder that holds the embedded store cannot be made.
    #[error("cannot create the state folder `{}`: {source}", .path.display())]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The embedded SQLite file cannot be opened or set up.
    #[error("cannot open the embedded store `{}`: {source}", .path.display())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// `HPC_REDIS_URL` is not a Redis URL (a settings mistake, not an outage).
    #[error("bad Redis URL `HPC_REDIS_URL`: {source}")]
    RedisUrl {
        #[source]
        source: redis::RedisError,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
}

/// One compare-and-swap of [`Store::swap_many`]: if `key` holds `expected`
/// (`None`: absent), make it hold `new` (`None`: delete it).
#[derive(Debug, Clone)]
pub struct Swap {
    pub key: String,
    pub expected: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
}

/// A key-value store: one of the two backends.
#[derive(Clone)]
pub enum Store {
    Redis(Arc<RedisStore>),
    Embedded(Arc<EmbeddedStore>),
}

impl Store {
    /// Redis if `redis_url` is set, else the embedded store under `state_dir`.
    pub fn open(redis_url: Option<&str>, state_dir: &Path) -> Result<Store, StoreError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(state_dir)
            .map_err(|source| StoreError::StateDir {
                path: state_dir.to_owned(),
                source,
            })?;
        Ok(match redis_url {
            Some(url) => Store::Redis(Arc::new(RedisStore::new(url)?)),
            None => Store::Embedded(Arc::new(EmbeddedStore::open(
                &state_dir.join("store.sqlite3"),
            )?)),
        })
    }

    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        match self {
            Store::Redis(r) => {
                let mut c = r.conn().await?;
                // MGET with one key returns a bare value, not a list: ask for a list.
                let values: Vec<Option<Vec<u8>>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut c).await.map_err(redis_error)?;
                Ok(values)
            }
            Store::Embedded(e) => e.run(move |c| {
                let now = unix_now();
                let mut stmt = c.prepare_cached(
                    "SELECT value FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                )?;
                keys.iter()
                    .map(|k| stmt.query_row(params![k, now], |r| r.get(0)).optional())
                    .collect()
            }).await,
        }
    }

    pub async fn set(
        &self,
        key: String,
        value: Vec<u8>,
        ttl: Option<u32>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn().await?;
                match ttl {
                    Some(t) => c.set_ex::<_, _, ()>(key, value, t.into()).await,
                    None => c.set::<_, _, ()>(key, value).await,
                }
                .map_err(redis_error)
            }
            Store::Embedded(e) => e.run(move |c| {
                let expires = ttl.map(|t| unix_now() + i64::from(t));
                c.execute(
                    "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    params![key, value, expires],
                )?;
                Ok(())
            }).await,
        }
    }

    pub async fn delete(&self, key: String) -> Result<bool, StoreError> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn().await?;
                let n: u64 = c.del(key).await.map_err(redis_error)?;
                Ok(n > 0)
            }
            Store::Embedded(e) => {
                e.run(move |c| Ok(c.execute("DELETE FROM kv WHERE key = ?1", [key])? > 0))
                    .await
            }
        }
    }

    pub async fn list_keys(&self, prefix: String) -> Result<Vec<String>, StoreError> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn().await?;
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch) = scan_page(&mut c, cursor, &prefix).await?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                keys.sort();
                Ok(keys)
            }
            Store::Embedded(e) => {
                e.run(move |c| {
                    let now = unix_now();
                    let mut stmt = c.prepare_cached(
                        "SELECT key FROM kv WHERE substr(key, 1, length(?1)) = ?1
                     AND (expires_at IS NULL OR expires_at > ?2) ORDER BY key",
                    )?;
                    let rows = stmt.query_map(params![prefix, now], |r| r.get(0))?;
                    rows.collect()
                })
                .await
            }
        }
    }

    /// Compare and swap: if `key` holds `expected` (`None`: the key is
    /// absent), make it hold `new` (`None`: delete it) and return `true`;
    /// else change nothing and return `false`. Atomic against every other
    /// writer of the store, in this process or another.
    pub async fn swap(
        &self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let swapped = self.swap_many(vec![Swap { key, expected, new }]).await?;
        Ok(swapped.first().copied().unwrap_or(false))
    }

    /// Many [`Store::swap`]s in one round trip: each is atomic on its own
    /// (not all or none), and the answers come in order.
    pub async fn swap_many(&self, swaps: Vec<Swap>) -> Result<Vec<bool>, StoreError> {
        if swaps.is_empty() {
            return Ok(vec![]);
        }
        match self {
            Store::Redis(r) => {
                // One script runs atomically in Redis; a pipeline of them is
                // one round trip. A missing key reads as `false` in Lua.
                const SWAP: &str = r"
                    local cur = redis.call('GET', KEYS[1])
                    if ARGV[1] == '0' then
                        if cur then return 0 end
                    elseif cur ~= ARGV[2] then
                        return 0
                    end
                    if ARGV[3] == '0' then
                        redis.call('DEL', KEYS[1])
                    else
                        redis.call('SET', KEYS[1], ARGV[4])
                    end
                    return 1";
                let mut c = r.conn().await?;
                let flag = |v: &Option<Vec<u8>>| if v.is_some() { "1" } else { "0" };
                let mut pipe = redis::pipe();
                for s in &swaps {
                    pipe.cmd("EVAL")
                        .arg(SWAP)
                        .arg(1)
                        .arg(&s.key)
                        .arg(flag(&s.expected))
                        .arg(s.expected.as_deref().unwrap_or_default())
                        .arg(flag(&s.new))
                        .arg(s.new.as_deref().unwrap_or_default());
                }
                let swapped: Vec<i64> = pipe.query_async(&mut c).await.map_err(redis_error)?;
                Ok(swapped.into_iter().map(|n| n == 1).collect())
            }
            Store::Embedded(e) => {
                e.run(move |c| {
                    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let now = unix_now();
                    let mut swapped = Vec::with_capacity(swaps.len());
                    for Swap { key, expected, new } in swaps {
                        let current: Option<Vec<u8>> = tx
                            .query_row(
                                "SELECT value FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                                params![key, now],
                                |r| r.get(0),
                            )
                            .optional()?;
                        if current != expected {
                            swapped.push(false);
                            continue;
                        }
                        match new {
                            Some(v) => tx.execute(
                                "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, NULL)
                                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = NULL",
                                params![key, v],
                            )?,
                            None => tx.execute("DELETE FROM kv WHERE key = ?1", [&key])?,
                        };
                        swapped.push(true);
                    }
                    tx.commit()?;
                    Ok(swapped)
                })
                .await
            }
        }
    }

    pub async fn increment(&self, key: String, delta: i64) -> Result<i64, StoreError> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn().await?;
                c.incr(key, delta).await.map_err(redis_error)
            }
            Store::Embedded(e) => {
                let result = e
                    .run(move |c| {
                        let tx =
                            c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                        let current: Option<Vec<u8>> = tx
                            .query_row("SELECT value FROM kv WHERE key = ?1", [&key], |r| r.get(0))
                            .optional()?;
                        let current = match current {
                            None => 0,
                            Some(v) => match std::str::from_utf8(&v)
                                .ok()
                                .and_then(|s| s.parse::<i64>().ok())
                            {
                                Some(n) => n,
                                None => {
                                    return Ok(Err(format!("`{key}` does not hold an integer")));
                                }
                            },
                        };
                        let Some(next) = current.checked_add(delta) else {
                            return Ok(Err(format!("incrementing `{key}` would overflow")));
                        };
                        tx.execute(
                            "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, NULL)
                         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                            params![key, next.to_string().into_bytes()],
                        )?;
                        tx.commit()?;
                        Ok(Ok(next))
                    })
                    .await?;
                result.map_err(StoreError::Invalid)
            }
        }
    }
}

/// The store's trust model: whoever can use it as this user can read every
/// job's command and environment, forge a job's state and hand a keyed
/// submit another job's id. So a Redis URL must authenticate (a password or
/// ACL user, `redis://USER:PASSWORD@host`; `rediss://` adds TLS), or be a
/// Unix socket only this user can open; anything else is refused unless the
/// settings accept it explicitly (`HPC_REDIS_ALLOW_UNAUTHENTICATED = true`:
/// a Redis that only this user can reach, a network namespace, a test).
pub fn check_redis_url(url: &str, allow_unauthenticated: bool) -> Result<(), String> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("bad Redis URL `HPC_REDIS_URL`: {e}"))?;
    if info.redis_settings().password().is_some() || allow_unauthenticated {
        return Ok(());
    }
    if let redis::ConnectionAddr::Unix(path) = info.addr()
        && private_socket(path)
    {
        return Ok(());
    }
    Err(format!(
        "refusing `HPC_REDIS_URL` at {}: it has no password, so any user of this machine who can reach that Redis could read this user's job commands, rewrite their states and plant submissions\n\
         hint: give Redis a password or an ACL user (`requirepass`, `redis://USER:PASSWORD@host:port/db`, `rediss://` for TLS), use a Unix socket only you can open, or set `HPC_REDIS_ALLOW_UNAUTHENTICATED = true` if nobody else can reach it",
        info.addr()
    ))
}

/// A Unix socket that this user owns and nobody else may open.
fn private_socket(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: plain syscall.
    let uid = unsafe { libc::geteuid() };
    std::fs::metadata(path).is_ok_and(|m| m.uid() == uid && m.mode() & 0o077 == 0)
}

/// A Redis server, connected on first use and then shared by every call of
/// this process (one multiplexed connection), each command bounded by
/// `timeout`. The store and the daemon's lease both use one.
pub struct RedisConn {
    client: redis::Client,
    conn: OnceCell<redis::aio::MultiplexedConnection>,
    timeout: Duration,
}

impl RedisConn {
    pub fn open(url: &str, timeout: Duration) -> redis::RedisResult<RedisConn> {
        Ok(RedisConn {
            client: redis::Client::open(url)?,
            conn: OnceCell::new(),
            timeout,
        })
    }

    /// The shared connection, made on the first call.
    pub async fn get(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        self.conn
            .get_or_try_init(|| {
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
            })
            .await
            .cloned()
    }

    /// The server's address, for messages.
    pub fn addr(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }
}

/// The kv store on Redis.
pub struct RedisStore {
    redis: RedisConn,
}

impl RedisStore {
    fn new(url: &str) -> Result<Self, StoreError> {
        let redis = RedisConn::open(url, REDIS_TIMEOUT)
            .map_err(|source| StoreError::RedisUrl { source })?;
        Ok(RedisStore { redis })
    }

    async fn conn(&self) -> Result<redis::aio::MultiplexedConnection, StoreError> {
        self.redis.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "Redis at {} is unreachable: {e}",
                self.redis.addr()
            ))
        })
    }
}

fn redis_error(e: redis::RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(format!("Redis: {e}"))
    } else {
        StoreError::Other(format!("Redis: {e}"))
    }
}

/// Escape Redis glob characters so a prefix matches only itself.
/// One page of `SCAN MATCH <prefix>*`: the next cursor (0 at the end) and
/// the keys (a key may come twice across pages, as SCAN promises no more).
pub(crate) async fn scan_page(
    c: &mut redis::aio::MultiplexedConnection,
    cursor: u64,
    prefix: &str,
) -> Result<(u64, Vec<String>), StoreError> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(format!("{}*", redis_glob_escape(prefix)))
        .arg("COUNT")
        .arg(1000)
        .query_async(c)
        .await
        .map_err(redis_error)
}

fn redis_glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The embedded store: one SQLite file, shared safely by concurrent `hpc-host`
/// processes (WAL mode, a busy timeout).
pub struct EmbeddedStore {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let fail = |source: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        // Job argv and records live here: private to the user whatever the
        // folder's mode (SQLite gives its -wal and -shm files the same mode).
        crate::sys::fsperm::make_private(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open the embedded store `{}`: {e}",
                path.display()
            ))
        })?;
        let conn = rusqlite::Connection::open(path).map_err(fail)?;
        conn.busy_timeout(SQLITE_BUSY_TIMEOUT).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at INTEGER)",
        )
        .map_err(fail)?;
        Ok(EmbeddedStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Other(format!("embedded store task failed: {e}")))?
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StoreError::Unavailable(format!("embedded store busy: {e}"))
            }
            e => StoreError::Other(format!("embedded store: {e}")),
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_keeps_prefix_literal() {
        assert_eq!(redis_glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[tokio::test]
    async fn embedded_store_round_trip() {
        let dir = tempdir();
        let s = Store::open(None, &dir).unwrap();
        s.set("p:a".into(), b"1".to_vec(), None).await.unwrap();
        s.set("p:b".into(), b"2".to_vec(), Some(3600))
            .await
            .unwrap();
        s.set("q:c".into(), b"3".to_vec(), None).await.unwrap();
        let got = s
            .get_many(vec!["p:a".into(), "nope".into(), "p:b".into()])
            .await
            .unwrap();
        assert_eq!(got, vec![Some(b"1".to_vec()), None, Some(b"2".to_vec())]);
        assert_eq!(s.list_keys("p:".into()).await.unwrap(), vec!["p:a", "p:b"]);
        assert_eq!(s.increment("p:a".into(), 41).await.unwrap(), 42);
        assert!(matches!(s.increment("q:x".into(), 1).await, Ok(1)));
        s.set("q:text".into(), b"abc".to_vec(), None).await.unwrap();
        assert!(matches!(
            s.increment("q:text".into(), 1).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(s.delete("p:a".into()).await.unwrap());
        assert!(!s.delete("p:a".into()).await.unwrap());
        // `%` and `_` are not wildcards here (no LIKE).
        s.set("p%x".into(), b"".to_vec(), None).await.unwrap();
        assert_eq!(s.list_keys("p%".into()).await.unwrap(), vec!["p%x"]);
    }

    #[tokio::test]
    async fn embedded_swap_is_compare_and_set() {
        let s = Store::open(None, &tempdir()).unwrap();
        let k = || "ledger:a".to_string();
        assert!(s.swap(k(), None, Some(b"1".to_vec())).await.unwrap());
        assert!(!s.swap(k(), None, Some(b"2".to_vec())).await.unwrap());
        assert!(
            !s.swap(k(), Some(b"2".to_vec()), Some(b"3".to_vec()))
                .await
                .unwrap()
        );
        assert!(
            s.swap(k(), Some(b"1".to_vec()), Some(b"3".to_vec()))
                .await
                .unwrap()
        );
        assert_eq!(
            s.get_many(vec![k()]).await.unwrap(),
            vec![Some(b"3".to_vec())]
        );
        assert!(s.swap(k(), Some(b"3".to_vec()), None).await.unwrap());
        assert_eq!(s.get_many(vec![k()]).await.unwrap(), vec![None]);
    }

    #[tokio::test]
    async fn embedded_swap_many_answers_each_in_order() {
        let s = Store::open(None, &tempdir()).unwrap();
        s.set("b".into(), b"x".to_vec(), None).await.unwrap();
        let claim = |k: &str| Swap {
            key: k.into(),
            expected: None,
            new: Some(b"mine".to_vec()),
        };
        // "b" is taken: its claim fails, the others hold.
        let got = s
            .swap_many(vec![claim("a"), claim("b"), claim("c")])
            .await
            .unwrap();
        assert_eq!(got, vec![true, false, true]);
        assert_eq!(
            s.get_many(vec!["a".into(), "b".into(), "c".into()])
                .await
                .unwrap(),
            vec![
                Some(b"mine".to_vec()),
                Some(b"x".to_vec()),
                Some(b"mine".to_vec())
            ]
        );
        assert_eq!(s.swap_many(vec![]).await.unwrap(), Vec::<bool>::new());
    }

    #[tokio::test]
    async fn expired_keys_are_gone() {
        let dir = tempdir();
        let s = Store::open(None, &dir).unwrap();
        let Store::Embedded(e) = &s else {
            unreachable!()
        };
        e.run(|c| {
            c.execute("INSERT INTO kv VALUES ('old', x'00', 1)", [])?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(s.get_many(vec!["old".into()]).await.unwrap(), vec![None]);
    }

    fn tempdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hpc-host-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
