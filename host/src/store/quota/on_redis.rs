//! The quota's Redis side: one Lua script per write, and the recount by
//! `SCAN` (see the design in [`super`]).

use super::{Over, Quota, RECOUNT_AFTER, Usage};
use crate::store::{RedisStore, StoreError, redis_error, unix_now};

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

pub(super) async fn redis_write(
    r: &RedisStore,
    q: &Quota,
    key: &str,
    op: &super::Op,
) -> Result<String, StoreError> {
    let (name, arg, ttl) = match op {
        super::Op::Set(v, ttl) => ("set", v.clone(), ttl.map(|t| t.to_string())),
        super::Op::Incr(d) => ("incr", d.to_string().into_bytes(), None),
        super::Op::Del => ("del", Vec::new(), None),
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

pub(super) async fn redis_recount(r: &RedisStore, q: &Quota) -> Result<Usage, StoreError> {
    let mut c = r.conn().await?;
    let record = q.record();
    let (g0b, g0k): (i64, i64) = redis::cmd("EVAL")
        .arg(RECOUNT_START)
        .arg(1)
        .arg(&record)
        .query_async(&mut c)
        .await
        .map_err(redis_error)?;
    let (mut bytes, mut keys, mut expiry) = (0i64, 0i64, -1i64);
    let mut cursor: u64 = 0;
    loop {
        let (next, batch) = crate::store::scan_page(&mut c, cursor, &q.prefix).await?;
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
