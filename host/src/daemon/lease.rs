//! Several login nodes: daemons that share `HPC_REDIS_URL` poll a backend
//! once between them. One holds a lease in Redis (`SET NX PX`, renewed each
//! interval; when it dies another takes over within two lease periods), polls
//! the union of every daemon's open jobs and publishes what it sees; the
//! others read those observations instead of asking the scheduler.
//!
//! Correctness never depends on the lease: any Redis failure makes a daemon
//! poll on its own, and two pollers at once only cost load.

use super::api::WireJob;
use crate::runtime::bindings::HpcJobInfo;
use crate::store::RedisConn;
use redis::AsyncCommands;
use std::time::Duration;

/// How long Redis waits before a call counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Observations and wanted ids expire when no daemon touches them for this long.
const KEEP: Duration = Duration::from_secs(24 * 3600);

const TAKE_OR_RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1
elseif redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0";

/// This daemon's handle on the shared Redis.
pub struct Shared {
    redis: RedisConn,
    /// Who this daemon is in the lease: `HPC_NODE` and pid.
    pub me: String,
}

type R<T> = Result<T, redis::RedisError>;

impl Shared {
    pub fn new(url: &str, node: &str) -> Option<Shared> {
        Some(Shared {
            redis: RedisConn::open(url, REDIS_TIMEOUT).ok()?,
            me: format!("{node}:{}", std::process::id()),
        })
    }

    async fn conn(&self) -> R<redis::aio::MultiplexedConnection> {
        self.redis.get().await
    }

    /// Take or renew the lease of `scope`; true while this daemon holds it.
    pub async fn hold(&self, scope: &str, lease: Duration) -> R<bool> {
        let mut c = self.conn().await?;
        let held: i64 = redis::cmd("EVAL")
            .arg(TAKE_OR_RENEW)
            .arg(1)
            .arg(format!("{scope}:lease"))
            .arg(&self.me)
            .arg(lease.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(held == 1)
    }

    /// Who holds the lease of `scope`, if anyone.
    pub async fn holder(&self, scope: &str) -> R<Option<String>> {
        self.conn().await?.get(format!("{scope}:lease")).await
    }

    /// Ask the holder to poll these ids too.
    pub async fn want(&self, scope: &str, ids: &[String]) -> R<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let key = format!("{scope}:open");
        redis::pipe()
            .sadd(&key, ids)
            .pexpire(&key, KEEP.as_millis() as i64)
            .query_async::<()>(&mut c)
            .await
    }

    /// The ids other daemons want polled.
    pub async fn wanted(&self, scope: &str) -> R<Vec<String>> {
        self.conn().await?.smembers(format!("{scope}:open")).await
    }

    /// Publish what a poll saw; final jobs leave the wanted set.
    pub async fn publish(&self, scope: &str, seen: &[(HpcJobInfo, f64)]) -> R<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let obs = format!("{scope}:observed");
        let mut pipe = redis::pipe();
        for (info, at) in seen {
            let json = serde_json::to_string(&WireJob::known(info, *at, "")).unwrap_or_default();
            pipe.hset(&obs, &info.job_id, json);
            if info.status.is_terminal() {
                pipe.srem(format!("{scope}:open"), &info.job_id);
            }
        }
        pipe.pexpire(&obs, KEEP.as_millis() as i64);
        pipe.query_async::<()>(&mut c).await
    }

    /// What the holder last saw of these ids.
    pub async fn observed(&self, scope: &str, ids: &[String]) -> R<Vec<Option<(HpcJobInfo, f64)>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(format!("{scope}:observed"))
            .arg(ids)
            .query_async(&mut c)
            .await?;
        Ok(raw
            .into_iter()
            .map(|r| {
                let w: WireJob = serde_json::from_str(&r?).ok()?;
                let at = w.observed_at?;
                w.into_result().ok().map(|i| (i, at))
            })
            .collect())
    }
}
