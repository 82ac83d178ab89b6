//! The kv quota (issue 11) next to the write it guards: `Store::set` (the raw
//! write) vs `Store::set_within` (the write, the check and the usage record
//! in one script or transaction), in process, on both stores.

use hpc_host::store::{Quota, Store};
use std::time::{Duration, Instant};

/// Median time of one `set` over `n` rounds, alternating raw and checked so
/// that both see the same load.
async fn pair(store: &Store, q: &Quota, n: usize) -> (Duration, Duration) {
    // A job record is ~1 KiB.
    let value = vec![b'x'; 1024];
    let raw_key = format!("{}bench/raw", q.prefix());
    let key = format!("{}bench/checked", q.prefix());
    let (mut raw, mut checked) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 50 {
        let t = Instant::now();
        store
            .set(raw_key.clone(), value.clone(), None)
            .await
            .unwrap();
        let r = t.elapsed();
        let t = Instant::now();
        store
            .set_within(q, key.clone(), value.clone(), None)
            .await
            .unwrap();
        let c = t.elapsed();
        // The first rounds warm the connection and the statement cache.
        if i >= 50 {
            raw.push(r);
            checked.push(c);
        }
    }
    (super::median(raw), super::median(checked))
}

/// Rows for both stores; `call` is the in-process `get-status` median.
pub fn run(rt: &tokio::runtime::Runtime, call: Duration, row: &dyn Fn(&str, String, String)) {
    let n = 2000;
    for (tag, redis) in [("embedded", false), ("redis", true)] {
        let dir = std::env::temp_dir().join(format!("hpc-host-bench-quota-{}", std::process::id()));
        let url = redis.then_some("redis://127.0.0.1:6379/0");
        let store = Store::open(url, &dir).unwrap();
        let prefix = format!("hpc-host-bench:{}:quota:", std::process::id());
        let q = Quota::new("bench", &prefix, 64 << 20, 100_000);
        let (raw, checked, recount) = rt.block_on(async {
            let r = pair(&store, &q, n).await;
            // The rare path: a refusal with a stale record recounts the prefix.
            for i in 0..10_000 {
                let key = format!("{prefix}many/{i}");
                store.set(key, vec![b'y'; 100], None).await.unwrap();
            }
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                assert!(store.recount(&q).await.unwrap().keys >= 10_000);
                times.push(t.elapsed());
            }
            let recount = super::median(times);
            for key in store.list_keys(prefix.clone()).await.unwrap() {
                store.delete(key).await.unwrap();
            }
            store
                .delete(format!("hpc-host::usage:{prefix}"))
                .await
                .unwrap();
            (r.0, r.1, recount)
        });
        row(
            &format!("kv `set` of 1 KiB, raw store write, {tag} store"),
            super::ms(raw),
            format!("median of {n}"),
        );
        let extra = checked.saturating_sub(raw);
        row(
            &format!("kv `set` of 1 KiB with the quota check and usage record, {tag} store"),
            super::ms(checked),
            format!(
                "median of {n}; the quota adds {} ({:.2}x the raw write; {:.1}% of an in-process call, {})",
                super::ms(extra),
                checked.as_secs_f64() / raw.as_secs_f64(),
                100.0 * extra.as_secs_f64() / call.as_secs_f64(),
                super::ms(call)
            ),
        );
        row(
            &format!(
                "recount of a prefix of 10,000 keys (refusal with a stale record only), {tag} store"
            ),
            super::ms(recount),
            "median of 5".into(),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
