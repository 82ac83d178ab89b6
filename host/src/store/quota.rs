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

use super::{RedisStore, Store, StoreError, redis_error, unix_now};
use rusqlite::{OptionalExtension, params};
use std::sync::Arc;

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

    /// The quota of a plugin's policy.
    pub fn of(policy: &crate::policy::Policy) -> Quota {
        Quota::new(
            &policy.plugin,
            &policy.kv_prefix,
            policy.limits.kv_bytes,
            policy.limits.kv_keys,
        )
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

// ---- Redis ------------------------------------------------------------------

/// One plugin write and its accounting, atomically. KEYS: the usage record,
/// the key. ARGV: `set`/`incr`/`del`, the value or delta, the TTL (`''`:
/// none), the quota's bytes and keys, now (unix seconds). Answers
/// `{'done', result}`, `{'stale'}` (no record: recount first),
/// `{'invalid', message}`, or `{'over', 'bytes'|'keys', would, expiry, counted}`.
const WRITE: &str = r"
local u, k, op = KEYS[1], KEYS[2], ARGV[1]
local rec = redis.call('HMGET', u, 'bytes', 'keys', 'expiry', 'counted')
local bytes, keys = tonumber(rec[1]), tonumber(rec[2])
local existed = redis.call('EXISTS', k) == 1
local old = 0
if existed then
  local n = redis.pcall('STRLEN', k)
  if type(n) ~= 'number' then n = 0 end
  old = #k + n
end
if op == 'del' then
  if not existed then return {'done', '0'} end
  redis.call('DEL', k)
  if bytes and keys then
    redis.call('HINCRBY', u, 'bytes', -old)
    redis.call('HINCRBY', u, 'keys', -1)
  end
  return {'done', '1'}
end
if not (bytes and keys) then return {'stale'} end
local dk = 1
if existed then dk = 0 end
local db, result, prev = 0, '', false
if op == 'set' then
  db = #k + #ARGV[2] - old
else
  if existed then prev = redis.call('GET', k) end
  local r = redis.pcall('INCRBY', k, ARGV[2])
  if type(r) == 'table' and r.err then return {'invalid', r.err} end
  result = redis.call('GET', k)
  db = #k + #result - old
end
local over, would = false, 0
if db > 0 and bytes + db > tonumber(ARGV[4]) then
  over, would = 'bytes', bytes + db
elseif dk > 0 and keys + dk > tonumber(ARGV[5]) then
  over, would = 'keys', keys + dk
end
if over then
  if op == 'incr' then
    if prev then redis.call('SET', k, prev, 'KEEPTTL') else redis.call('DEL', k) end
  end
  return {'over', over, string.format('%d', would), rec[3] or '', rec[4] or '0'}
end
if op == 'set' then
  if ARGV[3] ~= '' then
    redis.call('SET', k, ARGV[2], 'EX', ARGV[3])
  else
    redis.call('SET', k, ARGV[2])
  end
end
redis.call('HINCRBY', u, 'bytes', db)
redis.call('HINCRBY', u, 'keys', dk)
if db > 0 then redis.call('HINCRBY', u, 'gbytes', db) end
if dk > 0 then redis.call('HINCRBY', u, 'gkeys', dk) end
if op == 'set' and ARGV[3] ~= '' then
  local e = tonumber(ARGV[6]) + tonumber(ARGV[3])
  local s = redis.call('HMGET', u, 'expiry', 'sexpiry')
  if not s[1] or e < tonumber(s[1]) then redis.call('HSET', u, 'expiry', e) end
  if not s[2] or e < tonumber(s[2]) then redis.call('HSET', u, 'sexpiry', e) end
end
return {'done', result}";

/// A recount's start: the growth totals so far; TTL writes from now on are
/// collected in `sexpiry`.
const RECOUNT_START: &str = r"
local g = redis.call('HMGET', KEYS[1], 'gbytes', 'gkeys')
redis.call('HDEL', KEYS[1], 'sexpiry')
return {tonumber(g[1]) or 0, tonumber(g[2]) or 0}";

/// Measure a batch of scanned keys: their bytes, how many still exist, and
/// the earliest expiry among them (-1: none). ARGV[1]: now.
const RECOUNT_BATCH: &str = r"
local b, n, e, now = 0, 0, -1, tonumber(ARGV[1])
for _, k in ipairs(KEYS) do
  local len = redis.pcall('STRLEN', k)
  if type(len) == 'number' and redis.call('EXISTS', k) == 1 then
    b = b + #k + len
    n = n + 1
    local t = redis.call('PTTL', k)
    if t > 0 then
      local x = now + math.ceil(t / 1000)
      if e < 0 or x < e then e = x end
    end
  end
end
return {b, n, e}";

/// A recount's end. ARGV: the growth totals at its start, the bytes, keys
/// and earliest expiry it counted, now. Answers `{'ok', bytes, keys}`, or
/// `{'lost'}` if the record was lost meanwhile (the totals went back): the
/// count is then no bound.
const RECOUNT_END: &str = r"
local u = KEYS[1]
local g = redis.call('HMGET', u, 'gbytes', 'gkeys', 'sexpiry')
local gb, gk = tonumber(g[1]) or 0, tonumber(g[2]) or 0
local g0b, g0k = tonumber(ARGV[1]), tonumber(ARGV[2])
if gb < g0b or gk < g0k then return {'lost'} end
local b = tonumber(ARGV[3]) + gb - g0b
local n = tonumber(ARGV[4]) + gk - g0k
redis.call('HSET', u, 'bytes', string.format('%d', b), 'keys', string.format('%d', n),
  'counted', ARGV[6])
local e = tonumber(ARGV[5])
if g[3] and (e < 0 or tonumber(g[3]) < e) then e = tonumber(g[3]) end
if e >= 0 then redis.call('HSET', u, 'expiry', e) else redis.call('HDEL', u, 'expiry') end
return {'ok', string.format('%d', b), string.format('%d', n)}";

async fn redis_write(r: &RedisStore, q: &Quota, key: &str, op: &Op) -> Result<String, StoreError> {
    let (name, arg, ttl) = match op {
        Op::Set(v, ttl) => ("set", v.clone(), ttl.map(|t| t.to_string())),
        Op::Incr(d) => ("incr", d.to_string().into_bytes(), None),
        Op::Del => ("del", Vec::new(), None),
    };
    let mut recounted = false;
    // At most two recounts: a record lost twice during one write is an outage.
    for _ in 0..3 {
        let mut c = r.conn().await?;
        let now = unix_now();
        let answer: Vec<Vec<u8>> = redis::cmd("EVAL")
            .arg(WRITE)
            .arg(2)
            .arg(q.record())
            .arg(key)
            .arg(name)
            .arg(&arg)
            .arg(ttl.as_deref().unwrap_or(""))
            .arg(q.max_bytes)
            .arg(q.max_keys)
            .arg(now)
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        let text = |i: usize| {
            answer
                .get(i)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        match text(0).as_str() {
            "done" => return Ok(text(1)),
            "invalid" => return Err(StoreError::Invalid(format!("`{key}`: {}", text(1)))),
            "stale" => {}
            "over" => {
                let over = if text(1) == "keys" {
                    Over::Keys
                } else {
                    Over::Bytes
                };
                let would = text(2).parse().unwrap_or(u64::MAX);
                let expired = text(3).parse::<i64>().is_ok_and(|e| e <= now);
                let old = text(4).parse::<i64>().unwrap_or(0) + RECOUNT_AFTER <= now;
                if recounted || !(expired || old) {
                    return Err(StoreError::Invalid(q.refusal(over, would)));
                }
            }
            other => {
                return Err(StoreError::Other(format!(
                    "Redis: unexpected kv quota answer `{other}`"
                )));
            }
        }
        redis_recount(r, q).await?;
        recounted = true;
    }
    Err(StoreError::Unavailable(format!(
        "the kv usage of `{}` could not be counted (its record keeps disappearing): try again",
        q.prefix
    )))
}

async fn redis_recount(r: &RedisStore, q: &Quota) -> Result<Usage, StoreError> {
    let mut c = r.conn().await?;
    let record = q.record();
    let (g0b, g0k): (i64, i64) = redis::cmd("EVAL")
        .arg(RECOUNT_START)
        .arg(1)
        .arg(&record)
        .query_async(&mut c)
        .await
        .map_err(redis_error)?;
    let pattern = format!("{}*", super::redis_glob_escape(&q.prefix));
    let (mut bytes, mut keys, mut expiry) = (0i64, 0i64, -1i64);
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .map_err(redis_error)?;
        if !batch.is_empty() {
            let (b, n, e): (i64, i64, i64) = redis::cmd("EVAL")
                .arg(RECOUNT_BATCH)
                .arg(batch.len())
                .arg(&batch)
                .arg(unix_now())
                .query_async(&mut c)
                .await
                .map_err(redis_error)?;
            bytes += b;
            keys += n;
            if e >= 0 && (expiry < 0 || e < expiry) {
                expiry = e;
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let done: Vec<String> = redis::cmd("EVAL")
        .arg(RECOUNT_END)
        .arg(1)
        .arg(&record)
        .arg(g0b)
        .arg(g0k)
        .arg(bytes)
        .arg(keys)
        .arg(expiry)
        .arg(unix_now())
        .query_async(&mut c)
        .await
        .map_err(redis_error)?;
    match done.as_slice() {
        [ok, b, n] if ok == "ok" => Ok(Usage {
            bytes: b.parse().unwrap_or(u64::MAX),
            keys: n.parse().unwrap_or(u64::MAX),
        }),
        _ => Err(StoreError::Unavailable(format!(
            "the kv usage record of `{}` was lost while it was recounted: try again",
            q.prefix
        ))),
    }
}

// ---- SQLite -----------------------------------------------------------------

/// The usage record as the embedded store keeps it: a row of `kv`, its value
/// `"<bytes> <keys> <expiry or -> <counted>"`.
struct Record {
    bytes: i64,
    keys: i64,
    expiry: Option<i64>,
    counted: i64,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let expiry = self.expiry.map_or("-".to_owned(), |e| e.to_string());
        format!("{} {} {expiry} {}", self.bytes, self.keys, self.counted).into_bytes()
    }

    fn decode(v: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(v).ok()?;
        let mut f = text.split(' ');
        let (b, k, e, c) = (f.next()?, f.next()?, f.next()?, f.next()?);
        Some(Record {
            bytes: b.parse().ok()?,
            keys: k.parse().ok()?,
            expiry: if e == "-" {
                None
            } else {
                Some(e.parse().ok()?)
            },
            counted: c.parse().ok()?,
        })
    }
}

fn sqlite_record(c: &rusqlite::Connection, record: &str) -> rusqlite::Result<Option<Record>> {
    let v: Option<Vec<u8>> = c
        .query_row("SELECT value FROM kv WHERE key = ?1", [record], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.as_deref().and_then(Record::decode))
}

fn sqlite_store_record(c: &rusqlite::Connection, q: &Quota, rec: &Record) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, NULL)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = NULL",
        params![q.record(), rec.encode()],
    )?;
    Ok(())
}

/// Purge the prefix's expired rows and count the rest: exact, inside the
/// caller's transaction. The record counts rows, expired or not, so it stays
/// exact between recounts: only expiry makes it larger than what is visible.
fn sqlite_recount(c: &rusqlite::Connection, q: &Quota, now: i64) -> rusqlite::Result<Record> {
    const UNDER: &str = "substr(key, 1, length(?1)) = ?1";
    c.execute(
        &format!("DELETE FROM kv WHERE {UNDER} AND expires_at IS NOT NULL AND expires_at <= ?2"),
        params![q.prefix(), now],
    )?;
    let (bytes, keys, expiry) = c.query_row(
        &format!(
            "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB))), 0),
                    COUNT(*), MIN(expires_at) FROM kv WHERE {UNDER}"
        ),
        [q.prefix()],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let rec = Record {
        bytes,
        keys,
        expiry,
        counted: now,
    };
    sqlite_store_record(c, q, &rec)?;
    Ok(rec)
}

/// One plugin write and its accounting in one immediate transaction. The
/// outer error is the store's; the inner one a refusal or a bad increment.
fn sqlite_write(
    c: &mut rusqlite::Connection,
    q: &Quota,
    key: &str,
    op: Op,
    now: i64,
) -> rusqlite::Result<Result<String, String>> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut fresh = false;
    let mut rec = match sqlite_record(&tx, &q.record())? {
        Some(r) => r,
        None if matches!(op, Op::Del) => Record {
            bytes: 0,
            keys: 0,
            expiry: None,
            counted: 0,
        },
        None => {
            fresh = true;
            sqlite_recount(&tx, q, now)?
        }
    };
    let answer = loop {
        // The row as stored, expired or not: that is what the record counts.
        let old: Option<(i64, Vec<u8>, Option<i64>)> = tx
            .query_row(
                "SELECT length(CAST(value AS BLOB)), value, expires_at FROM kv WHERE key = ?1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let live = old
            .as_ref()
            .is_some_and(|(_, _, e)| e.is_none_or(|e| e > now));
        let old_size = old.as_ref().map_or(0, |(n, _, _)| key.len() as i64 + n);
        let (new_value, expires, answer) = match &op {
            Op::Del => {
                if old.is_none() {
                    return Ok(Ok("0".into()));
                }
                tx.execute("DELETE FROM kv WHERE key = ?1", [key])?;
                rec.bytes -= old_size;
                rec.keys -= 1;
                if rec.counted > 0 {
                    sqlite_store_record(&tx, q, &rec)?;
                }
                tx.commit()?;
                return Ok(Ok(if live { "1" } else { "0" }.into()));
            }
            Op::Set(v, ttl) => (v.clone(), ttl.map(|t| now + i64::from(t)), String::new()),
            Op::Incr(delta) => {
                // An expired counter starts again from 0, without a TTL, as in Redis.
                let current = match &old {
                    Some((_, v, _)) if live => {
                        match std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.parse::<i64>().ok())
                        {
                            Some(n) => n,
                            None => return Ok(Err(format!("`{key}` does not hold an integer"))),
                        }
                    }
                    _ => 0,
                };
                let Some(next) = current.checked_add(*delta) else {
                    return Ok(Err(format!("incrementing `{key}` would overflow")));
                };
                let keep = old.as_ref().and_then(|(_, _, e)| *e).filter(|_| live);
                let text = next.to_string();
                (text.clone().into_bytes(), keep, text)
            }
        };
        let db = key.len() as i64 + new_value.len() as i64 - old_size;
        let dk = i64::from(old.is_none());
        let over = if db > 0 && (rec.bytes + db) as u64 > q.max_bytes {
            Some((Over::Bytes, (rec.bytes + db) as u64))
        } else if dk > 0 && (rec.keys + dk) as u64 > q.max_keys {
            Some((Over::Keys, (rec.keys + dk) as u64))
        } else {
            None
        };
        if let Some((over, would)) = over {
            let stale = rec.expiry.is_some_and(|e| e <= now) || rec.counted + RECOUNT_AFTER <= now;
            if fresh || !stale {
                // Keep a correction made by a recount, even when refusing.
                tx.commit()?;
                return Ok(Err(q.refusal(over, would)));
            }
            rec = sqlite_recount(&tx, q, now)?;
            fresh = true;
            continue;
        }
        tx.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            params![key, new_value, expires],
        )?;
        rec.bytes += db;
        rec.keys += dk;
        if let Some(e) = expires {
            rec.expiry = Some(rec.expiry.map_or(e, |x| x.min(e)));
        }
        break answer;
    };
    sqlite_store_record(&tx, q, &rec)?;
    tx.commit()?;
    Ok(Ok(answer))
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
