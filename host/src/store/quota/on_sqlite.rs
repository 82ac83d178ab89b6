//! The quota's SQLite side: one immediate transaction per write, the
//! recount inside it (see the design in [`super`]).

use super::{Op, Over, Quota, RECOUNT_AFTER};
use rusqlite::{OptionalExtension, params};

/// The usage record as the embedded store keeps it: a row of `kv`, its value
/// `"<bytes> <keys> <expiry or -> <counted>"`.
pub(super) struct Record {
    pub(super) bytes: i64,
    pub(super) keys: i64,
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

pub(super) fn sqlite_record(
    c: &rusqlite::Connection,
    record: &str,
) -> rusqlite::Result<Option<Record>> {
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
pub(super) fn sqlite_recount(
    c: &rusqlite::Connection,
    q: &Quota,
    now: i64,
) -> rusqlite::Result<Record> {
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
pub(super) fn sqlite_write(
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
