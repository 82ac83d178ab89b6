//! Batch submit: many specs, each keyed one made at most once for its key,
//! in as few store round trips and scheduler calls as the batch allows.

use super::entry::{Entry, settle, slot};
use super::{Scheduler, check_key, found_while_recovering, recovering_since, refused, store_error};
use crate::runtime::bindings::JobSpec;
use crate::runtime::contract::Contract;
use crate::runtime::error::HostError;
use crate::store::Swap;
use std::collections::{HashMap, HashSet};

pub use crate::runtime::plugin::SUBMIT_CHUNK;

/// One element of [`submit_many`]: its job's id and whether this call made
/// it, or why it has none.
pub type Submitted = Result<(String, bool), HostError>;

/// A claim of this batch: the spec's index, its slot, the entry and its bytes.
type Held = (usize, String, Entry, Vec<u8>);

/// Submit many specs, each keyed one at most once for its key, with as few
/// store round trips and scheduler calls as the batch allows. Per chunk of
/// [`SUBMIT_CHUNK`] specs (one `submit-many` call: a claim's deadline is one
/// call's time limit), every fresh key is claimed in one round trip, every
/// spec this call may make goes to the scheduler in one call, and every id is
/// recorded in one round trip. A key claimed before (a repeat, or a submit at
/// work elsewhere) goes the way of [`super::submit`]: its job's id, without a
/// new job. A scheduler older than contract 0.3.0 gets one [`super::submit`]
/// per spec (each claimed on its own, as a single submit is).
///
/// Per spec, in order: its result. A spec with an invalid key gets its own
/// error and the others go on; two specs with one key are refused whole
/// (which of them the key names would be a guess), before any is made.
pub async fn submit_many<S: Scheduler>(
    s: &S,
    specs: &[JobSpec],
) -> Result<Vec<Submitted>, HostError> {
    let mut seen = HashSet::new();
    for key in specs.iter().filter_map(|s| s.idempotency_key.as_deref()) {
        if !seen.insert(key) {
            return Err(HostError::Input(format!(
                "two specs of the batch have the idempotency key `{}`: each job needs its own",
                crate::runtime::sanitize::escape(key)
            )));
        }
    }
    let mut all = Vec::with_capacity(specs.len());
    if s.contract() < Contract::V0_3 {
        for spec in specs {
            all.push(match &spec.idempotency_key {
                None => s.submit_once(spec).await.map(|id| (id, true)),
                Some(key) => super::submit(s, spec, key).await,
            });
        }
        return Ok(all);
    }
    for chunk in specs.chunks(SUBMIT_CHUNK) {
        match submit_chunk(s, chunk).await {
            Ok(r) => all.extend(r),
            // Nothing of this chunk was made (its keys could not be
            // claimed); the chunks before keep their jobs.
            Err(e) => all.extend(chunk.iter().map(|_| Err(e.duplicate()))),
        }
    }
    Ok(all)
}

/// [`submit_many`] for a batch some of whose elements are not specs (they
/// did not parse): each of those keeps its error, the rest are submitted.
pub async fn submit_parsed<S: Scheduler>(
    s: &S,
    items: Vec<Result<JobSpec, HostError>>,
) -> Result<Vec<Submitted>, HostError> {
    let specs: Vec<JobSpec> = items
        .iter()
        .filter_map(|i| i.as_ref().ok().cloned())
        .collect();
    let mut made = submit_many(s, &specs).await?.into_iter();
    Ok(items
        .into_iter()
        .map(|item| match item {
            Ok(_) => made.next().expect("one result per spec"),
            Err(e) => Err(e),
        })
        .collect())
}

/// [`submit_many`] for at most one scheduler call's specs.
async fn submit_chunk<S: Scheduler>(s: &S, specs: &[JobSpec]) -> Result<Vec<Submitted>, HostError> {
    let ledger = s.ledger();
    let store = &ledger.store;
    let mut results: Vec<Option<Submitted>> = specs.iter().map(|_| None).collect();
    // Claim every valid key in one round trip.
    let mut claims: Vec<Held> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let Some(key) = &spec.idempotency_key else {
            continue;
        };
        if let Err(e) = check_key(key) {
            results[i] = Some(Err(HostError::Input(e)));
            continue;
        }
        let mine = Entry::claim(key, s.wall_time(), ledger.programs_die_with_host);
        let bytes = mine.encode();
        claims.push((i, slot(s.name(), key), mine, bytes));
    }
    let won = store
        .swap_many(
            claims
                .iter()
                .map(|(_, slot, _, bytes)| Swap {
                    key: slot.clone(),
                    expected: None,
                    new: Some(bytes.clone()),
                })
                .collect(),
        )
        .await
        .map_err(store_error)?;
    let mut held = Vec::new();
    let mut taken = Vec::new(); // indices whose key was claimed before
    for (claim, won) in claims.into_iter().zip(won) {
        if won {
            held.push(claim)
        } else {
            taken.push(claim.0)
        }
    }
    // A store that lost its keys: the scheduler may hold a fresh key's job.
    let recovering = match held.is_empty() {
        true => None,
        false => match recovering_since(s).await {
            Ok(since) => since,
            Err(e) => {
                // Nothing was made: free the claims.
                let free = held
                    .iter()
                    .map(|(_, slot, _, bytes)| Swap {
                        key: slot.clone(),
                        expected: Some(bytes.clone()),
                        new: None,
                    })
                    .collect();
                let _ = store.swap_many(free).await;
                return Err(e);
            }
        },
    };
    if let Some(since) = recovering {
        let mut still = Vec::new();
        for (i, slot, mine, bytes) in held {
            let key = specs[i].idempotency_key.as_deref().unwrap_or_default();
            match found_while_recovering(s, &slot, key, &bytes, since).await {
                Ok(None) => still.push((i, slot, mine, bytes)),
                Ok(Some(id)) => results[i] = Some(Ok((id, false))),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        held = still;
    }
    // Make, in one scheduler call, every job this call holds the key of and
    // every unkeyed one.
    let claimed: HashMap<usize, usize> = held.iter().enumerate().map(|(n, c)| (c.0, n)).collect();
    let order: Vec<usize> = (0..specs.len())
        .filter(|&i| {
            results[i].is_none() && (specs[i].idempotency_key.is_none() || claimed.contains_key(&i))
        })
        .collect();
    let to_make: Vec<JobSpec> = order.iter().map(|&i| specs[i].clone()).collect();
    let made = match to_make.is_empty() {
        true => Vec::new(),
        false => s.submit_many_once(&to_make).await,
    };
    let mut updates = Vec::new();
    for (&i, r) in order.iter().zip(made) {
        if let Some(&n) = claimed.get(&i) {
            let (_, slot, mine, bytes) = &held[n];
            let id = r.as_ref().ok().map(String::as_str);
            let refused = r.as_ref().err().is_some_and(refused);
            updates.push(settle(slot, mine, bytes, id, refused));
        }
        results[i] = Some(r.map(|id| (id, true)));
    }
    match store.swap_many(updates).await {
        Ok(done) if done.iter().all(|&d| d) => {}
        Ok(_) => tracing::warn!(
            plugin = %s.name(),
            "a claim of this batch was taken over while its submit ran"
        ),
        // The jobs exist and their ids go to the caller; the claims stay,
        // and the next submit with a key finds its job.
        Err(e) => tracing::warn!(plugin = %s.name(), "cannot record a batch's jobs: {e}"),
    }
    // Keys claimed before: each finds its job (or waits for it) on its own.
    for i in taken {
        let key = specs[i].idempotency_key.as_deref().unwrap_or_default();
        results[i] = Some(super::submit(s, &specs[i], key).await);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every spec of a batch has a result"))
        .collect())
}
