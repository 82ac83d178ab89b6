//! Exactly-once submit: the host's ledger of idempotency keys.
//!
//! A submit with an idempotency key first claims the key in the store, then
//! asks the plugin to make the job (the plugin attaches the key to it in the
//! scheduler), then records the job's id under the key. The claim is written
//! before the job can exist, so whatever moment a submitter dies at, the next
//! submit with the same key finds one of:
//!
//! - **an id**: the job exists; its id is the answer (however long ago it ran);
//! - **a claim whose submitter is still at work** (the same process on this
//!   machine, alive; or, from another machine, before the claim's deadline):
//!   wait for it to record the id;
//! - **a claim whose submitter is gone**: ask the plugin (`find-job`) whether
//!   the scheduler holds a job with this key. If it does, record it and
//!   answer it; if it does not, the job was never made: take the claim over
//!   (compare-and-swap, so only one taker wins) and submit.
//!
//! Two submits racing for one key meet at the claim: one makes the job, the
//! other waits for its id. The store's compare-and-swap
//! ([`Store::swap`](crate::store::Store::swap)) makes every step atomic across
//! processes and login nodes that share the store.
//!
//! A CLI submitter's programs get `SIGKILL` when it dies (`PR_SET_PDEATHSIG`,
//! see `capabilities::process`), so a dead submitter makes no job later; a
//! request it had already sent is in the scheduler within [`GRACE`], which is
//! why a gone submitter's claim is looked up twice, [`GRACE`] apart, before
//! it is taken over. The daemon's programs are started without it (it costs a
//! `fork` of the daemon per program): a dead daemon's claim is honoured until
//! its deadline (the plugin's `wall_seconds` + 15 s), by when every program
//! it started has ended. A claim records which of the two its claimant is,
//! from [`Ledger::programs_die_with_host`], which the host's options set
//! ([`crate::HostOptions`]).
//!
//! The ledger calls the backend through [`Scheduler`] (a loaded
//! [`crate::Plugin`] is one): `submit_once`, `submit_many_once` and
//! `find_job`, each one call of the backend with nothing of the ledger in it.
//! Its unit tests (`ledger/tests.rs`) run every path here against a fake
//! scheduler and the embedded store.
//!
//! **A store that lost its keys.** The ledger lives in the store, and a Redis
//! without persistence comes back empty after a restart: a submit with a key
//! used before would find no claim, and a backend that does not derive the
//! job from the key (SLURM) would make a second job. So the store carries a
//! birth record ([`BORN`]: when the ledger first found it without one), and
//! each machine keeps, in its state folder ([`Births`]), the birth it last
//! saw of each store it used. A store whose birth changed came back empty:
//! for [`RECOVERY`] after this machine noticed, a fresh claim asks the
//! plugin's `find-job` (back to the lost store's birth) before it submits.
//! A store this machine has not used before is taken as new. Otherwise a
//! fresh claim costs a store read and a small file read.
//!
//! A plugin built against contract 0.1.0 has no `find-job`: its claims still
//! make concurrent and repeated submits return one job, but a submitter that
//! died between making the job and recording its id leaves a claim that is
//! taken over (and the job may be made twice). The host logs a warning then.

use crate::runtime::bindings::{BackendError, JobSpec};
use crate::runtime::contract::Contract;
use crate::runtime::error::HostError;
use crate::store::Store;
use entry::{Entry, settle, slot};
use std::future::Future;
use std::time::{Duration, Instant};

mod batch;
mod births;
mod entry;
#[cfg(test)]
mod tests;

pub use batch::{SUBMIT_CHUNK, Submitted, submit_many, submit_parsed};
pub use births::Births;

/// The store namespace of the ledger, inside the host's own
/// ([`crate::store::HOST_NAMESPACE`]), which no plugin can write.
pub const NAMESPACE: &str = "hpc-host::submit:";
/// The longest idempotency key.
pub const MAX_KEY_LEN: usize = 200;
/// How long after its submitter died a request it sent may take to show in
/// the scheduler (the default of [`Scheduler::grace`]).
pub const GRACE: Duration = Duration::from_secs(1);
/// How often a waiting submit looks at a claim another submitter holds.
const POLL: Duration = Duration::from_millis(200);
/// Beyond the scheduler's [`wall_time`](Scheduler::wall_time), how long a
/// claim from another machine is honoured.
const DEADLINE_MARGIN: Duration = Duration::from_secs(15);
/// The ledger's birth record: when the host first found the store without
/// it (a new store, or one that lost its data), in Unix seconds.
pub const BORN: &str = "hpc-host::ledger-born";
/// How long after a machine found the store reborn (it lost its keys) a
/// fresh claim asks the scheduler first whether the key's job exists already
/// (a retry after the store was lost comes within hours; a day covers it).
pub const RECOVERY: f64 = 86_400.0;
/// How far back `find-job` looks for a job the store no longer knows: as
/// far as a scheduler's records are worth asking.
pub const LOOKBACK: f64 = 30.0 * 86_400.0;

/// What the ledger needs of a backend: the three calls that make and find
/// jobs, what bounds them, and where their records go. A loaded
/// [`crate::Plugin`] is one; the ledger's unit tests have a fake.
///
/// The calls are the backend's own, one each, with nothing of the ledger in
/// them: the ledger decides when to call which.
pub trait Scheduler: Sync {
    /// Its name: each scheduler's keys are kept apart in the store.
    fn name(&self) -> &str;
    /// The contract it speaks: whether it can find a job by key
    /// ([`Contract::finds_jobs`]) and whether it takes a batch in one call
    /// (0.3.0 and later).
    fn contract(&self) -> Contract;
    /// The longest one call may take (the policy's `wall_seconds`): a claim
    /// of another machine is honoured for this plus [`DEADLINE_MARGIN`].
    fn wall_time(&self) -> Duration;
    /// Where its submissions are recorded.
    fn ledger(&self) -> &Ledger;
    /// How long a request sent by a submitter that then died may take to
    /// show in the scheduler: a dead submitter's claim is looked up twice,
    /// this far apart, before it is taken over.
    fn grace(&self) -> Duration {
        GRACE
    }
    /// Make one job: one call, its id or why not.
    fn submit_once(&self, spec: &JobSpec)
    -> impl Future<Output = Result<String, HostError>> + Send;
    /// Make many jobs (at most [`SUBMIT_CHUNK`] are asked at once): exactly
    /// one result per spec, in order. A call that failed whole fails each of
    /// its specs; no id may be paired with another spec. Asked only of a
    /// scheduler of contract 0.3.0 or later.
    fn submit_many_once(
        &self,
        specs: &[JobSpec],
    ) -> impl Future<Output = Vec<Result<String, HostError>>> + Send;
    /// The job a submit with `key` made after `since` (Unix seconds), if the
    /// scheduler holds one. Asked only of a scheduler whose contract
    /// [finds jobs](Contract::finds_jobs).
    fn find_job(
        &self,
        key: &str,
        since: f64,
    ) -> impl Future<Output = Result<Option<String>, HostError>> + Send;
}

/// A scheduler shared by the daemon's calls is still the scheduler.
impl<S: Scheduler + Send> Scheduler for std::sync::Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn contract(&self) -> Contract {
        (**self).contract()
    }
    fn wall_time(&self) -> Duration {
        (**self).wall_time()
    }
    fn ledger(&self) -> &Ledger {
        (**self).ledger()
    }
    fn grace(&self) -> Duration {
        (**self).grace()
    }
    fn submit_once(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = Result<String, HostError>> + Send {
        (**self).submit_once(spec)
    }
    fn submit_many_once(
        &self,
        specs: &[JobSpec],
    ) -> impl Future<Output = Vec<Result<String, HostError>>> + Send {
        (**self).submit_many_once(specs)
    }
    fn find_job(
        &self,
        key: &str,
        since: f64,
    ) -> impl Future<Output = Result<Option<String>, HostError>> + Send {
        (**self).find_job(key, since)
    }
}

/// Where a scheduler's submissions are recorded, and what a claim made by
/// this process promises about the programs it starts.
#[derive(Clone)]
pub struct Ledger {
    /// The host's store: claims and ids, under [`NAMESPACE`].
    pub store: Store,
    /// What this machine knows of the store's past (a store that lost its keys).
    pub births: Births,
    /// The programs this process starts die with it (`PR_SET_PDEATHSIG`:
    /// the CLI), so its claim is free to take over as soon as it is dead.
    /// Else (the daemon) a dead claimant's claim is honoured to its deadline.
    pub programs_die_with_host: bool,
}

impl Ledger {
    /// A claim by this process on `key`, for one call of `s`.
    fn claim(&self, s: &impl Scheduler, key: &str) -> Entry {
        Entry::claim(key, s.wall_time(), self.programs_die_with_host)
    }

    /// The record of a job found in the scheduler (no call of this process
    /// is at work on it).
    fn found(&self, key: &str, id: &str) -> Entry {
        Entry {
            job_id: Some(id.to_owned()),
            ..Entry::claim(key, Duration::ZERO, self.programs_die_with_host)
        }
    }
}

/// Check an idempotency key: 1 to [`MAX_KEY_LEN`] characters of
/// `A-Z a-z 0-9 . _ : @ / + = -`, safe in a scheduler comment, a label value
/// (after hashing) and a file name (after hashing), and never shell syntax.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._:@/+=-".contains(c);
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(ok_char) {
        return Err(format!(
            "idempotency key `{}`{} is not valid: use 1 to {MAX_KEY_LEN} of `A-Z a-z 0-9 . _ : @ / + = -`",
            crate::runtime::sanitize::escape(&key.chars().take(64).collect::<String>()),
            if key.chars().count() > 64 {
                " (cut)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

fn store_error(e: crate::store::StoreError) -> HostError {
    HostError::Store(e)
}

/// What a pending claim turned out to be.
enum Pending {
    /// The scheduler has the job.
    Found(String),
    /// Its submitter may still make the job: wait.
    InFlight,
    /// No job was made and none will be: the claim may be taken over.
    NeverMade,
}

/// Submit `spec` at most once for `key`: the id of the one job, and whether
/// this call made it (`false`: an earlier submit with the key did).
pub async fn submit<S: Scheduler>(
    s: &S,
    spec: &JobSpec,
    key: &str,
) -> Result<(String, bool), HostError> {
    check_key(key).map_err(HostError::Input)?;
    let ledger = s.ledger();
    let store = &ledger.store;
    let slot = slot(s.name(), key);
    // A waiting submit never waits longer than a claim can live.
    let give_up = Instant::now() + s.wall_time() + DEADLINE_MARGIN + s.grace() * 4;
    loop {
        let mine = ledger.claim(s, key);
        let mine_bytes = mine.encode();
        if store
            .swap(slot.clone(), None, Some(mine_bytes.clone()))
            .await
            .map_err(store_error)?
        {
            if let Some(id) = made_before_the_store_was_lost(s, &slot, key, &mine_bytes).await? {
                return Ok((id, false));
            }
            return submit_claimed(s, &slot, spec, mine, mine_bytes)
                .await
                .map(|id| (id, true));
        }
        let Some(bytes) = get(store, &slot).await? else {
            continue; // the claim was released meanwhile: claim again
        };
        let entry = read_entry(&slot, key, &bytes)?;
        if let Some(id) = entry.job_id {
            tracing::info!(plugin = %s.name(), key, job_id = %id, "idempotency key already used: its job");
            return Ok((id, false));
        }
        match pending(s, &entry).await? {
            Pending::Found(id) => {
                let done = Entry {
                    job_id: Some(id.clone()),
                    ..entry
                };
                // Whoever records it first, the id is the same job's.
                store
                    .swap(slot.clone(), Some(bytes), Some(done.encode()))
                    .await
                    .map_err(store_error)?;
                tracing::info!(plugin = %s.name(), key, job_id = %id, "found the job of an interrupted submit");
                return Ok((id, false));
            }
            Pending::InFlight => {
                if Instant::now() > give_up {
                    return Err(HostError::Backend {
                        plugin: s.name().to_owned(),
                        function: "submit",
                        error: BackendError::Unavailable(format!(
                            "another submit with idempotency key `{key}` is still at work; try again later"
                        )),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
            Pending::NeverMade => {
                if !s.contract().finds_jobs() {
                    tracing::warn!(
                        plugin = %s.name(), key,
                        "an earlier submit with this key was interrupted; the plugin (contract 0.1.0) \
                         cannot tell whether it made a job, so this submit may make a second one"
                    );
                }
                let mine = ledger.claim(s, key);
                let mine_bytes = mine.encode();
                if store
                    .swap(slot.clone(), Some(bytes), Some(mine_bytes.clone()))
                    .await
                    .map_err(store_error)?
                {
                    return submit_claimed(s, &slot, spec, mine, mine_bytes)
                        .await
                        .map(|id| (id, true));
                }
                // Another submitter took it over first: look again.
            }
        }
    }
}

/// The entry in `slot`, which must be `key`'s.
fn read_entry(slot: &str, key: &str, bytes: &[u8]) -> Result<Entry, HostError> {
    let entry: Entry = serde_json::from_slice(bytes).map_err(|e| {
        HostError::Internal(anyhow::anyhow!(
            "the submission ledger entry `{slot}` is not readable: {e}"
        ))
    })?;
    if entry.key != key {
        return Err(HostError::Internal(anyhow::anyhow!(
            "the submission ledger entry `{slot}` belongs to another key"
        )));
    }
    Ok(entry)
}

/// Whether the store may have lost keys (it came back empty less than
/// [`RECOVERY`] ago): since when `find-job` should look, or `None`.
async fn recovering_since<S: Scheduler>(s: &S) -> Result<Option<f64>, HostError> {
    if !s.contract().finds_jobs() {
        return Ok(None);
    }
    let ledger = s.ledger();
    let born = births::born(&ledger.store).await?;
    Ok(ledger.births.observe(born, crate::supervise::jobs::now()))
}

/// With a fresh claim on `key` held (`mine`): if the store may have lost the
/// key's record, ask the scheduler whether it holds the key's job, and if it
/// does, record and return its id. A failed question frees the claim
/// (nothing was submitted) and fails.
async fn made_before_the_store_was_lost<S: Scheduler>(
    s: &S,
    slot: &str,
    key: &str,
    mine: &[u8],
) -> Result<Option<String>, HostError> {
    match recovering_since(s).await? {
        Some(since) => found_while_recovering(s, slot, key, mine, since).await,
        None => Ok(None),
    }
}

/// [`made_before_the_store_was_lost`] once the store is known to be recovering.
async fn found_while_recovering<S: Scheduler>(
    s: &S,
    slot: &str,
    key: &str,
    mine: &[u8],
    since: f64,
) -> Result<Option<String>, HostError> {
    let ledger = s.ledger();
    let found = match s.find_job(key, since).await {
        Ok(found) => found,
        Err(e) => {
            let _ = ledger
                .store
                .swap(slot.to_owned(), Some(mine.to_vec()), None)
                .await;
            return Err(e);
        }
    };
    let Some(id) = found else {
        return Ok(None);
    };
    ledger
        .store
        .swap(
            slot.to_owned(),
            Some(mine.to_vec()),
            Some(ledger.found(key, &id).encode()),
        )
        .await
        .map_err(store_error)?;
    tracing::info!(plugin = %s.name(), key, job_id = %id, "found the job of a key the store had lost");
    Ok(Some(id))
}

/// Whether a failed submit was refused (it made no job: free the key).
fn refused(e: &HostError) -> bool {
    matches!(
        e,
        HostError::Backend {
            error: BackendError::InvalidRequest(_) | BackendError::Denied(_),
            ..
        } | HostError::Input(_)
            | HostError::PluginDenied { .. }
    )
}

/// What became of the submission with a key, as [`lookup`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// The job exists (or existed): its id.
    Made(String),
    /// A submit with the key is still at work (its submitter lives, or its
    /// claim from another machine has not expired): ask again shortly.
    InProgress,
    /// No job was made with the key, and none will be: a submit with it now
    /// makes the job.
    NeverMade,
}

impl Submission {
    /// The name of the state in JSON: `made`, `in-progress`, `never-made`.
    pub fn state(&self) -> &'static str {
        match self {
            Submission::Made(_) => "made",
            Submission::InProgress => "in-progress",
            Submission::NeverMade => "never-made",
        }
    }

    pub fn job_id(&self) -> Option<&str> {
        match self {
            Submission::Made(id) => Some(id),
            _ => None,
        }
    }
}

/// What became of the submission with `key`, settling an interrupted one:
/// a claim whose submitter is gone is resolved by the scheduler (the job
/// found is recorded; no job found clears the claim). Without any record,
/// the scheduler is asked too (the store may have been emptied). Makes no job.
pub async fn lookup<S: Scheduler>(s: &S, key: &str) -> Result<Submission, HostError> {
    check_key(key).map_err(HostError::Input)?;
    let ledger = s.ledger();
    let store = &ledger.store;
    let slot = slot(s.name(), key);
    let Some(bytes) = get(store, &slot).await? else {
        // Nothing recorded: the store may have lost it.
        let since = crate::supervise::jobs::now() - LOOKBACK;
        return Ok(match find(s, key, since).await? {
            Some(id) => {
                let done = ledger.found(key, &id);
                let _ = store.swap(slot, None, Some(done.encode())).await;
                Submission::Made(id)
            }
            None => Submission::NeverMade,
        });
    };
    let entry = read_entry(&slot, key, &bytes)?;
    if let Some(id) = entry.job_id {
        return Ok(Submission::Made(id));
    }
    Ok(match pending(s, &entry).await? {
        Pending::Found(id) => {
            let done = Entry {
                job_id: Some(id.clone()),
                ..entry
            };
            store
                .swap(slot, Some(bytes), Some(done.encode()))
                .await
                .map_err(store_error)?;
            Submission::Made(id)
        }
        Pending::InFlight => Submission::InProgress,
        Pending::NeverMade => {
            // Clear the claim (unless a submit took it over meanwhile).
            store
                .swap(slot, Some(bytes), None)
                .await
                .map_err(store_error)?;
            Submission::NeverMade
        }
    })
}

async fn get(store: &Store, slot: &str) -> Result<Option<Vec<u8>>, HostError> {
    Ok(store
        .get_many(vec![slot.to_owned()])
        .await
        .map_err(store_error)?
        .pop()
        .flatten())
}

/// The scheduler's job for `key` made after `since`; `None` from one whose
/// contract cannot tell (0.1.0).
async fn find<S: Scheduler>(s: &S, key: &str, since: f64) -> Result<Option<String>, HostError> {
    if !s.contract().finds_jobs() {
        return Ok(None);
    }
    s.find_job(key, since).await
}

/// Settle a claim that has no id yet.
async fn pending<S: Scheduler>(s: &S, entry: &Entry) -> Result<Pending, HostError> {
    if entry.may_still_submit(crate::supervise::jobs::now()) {
        return Ok(Pending::InFlight);
    }
    if !s.contract().finds_jobs() {
        return Ok(Pending::NeverMade);
    }
    if let Some(id) = s.find_job(&entry.key, entry.claimed_at).await? {
        return Ok(Pending::Found(id));
    }
    // A request the dead submitter sent may reach the scheduler a moment later.
    tokio::time::sleep(s.grace()).await;
    Ok(match s.find_job(&entry.key, entry.claimed_at).await? {
        Some(id) => Pending::Found(id),
        None => Pending::NeverMade,
    })
}

/// Make the job under a claim this process holds, and record its id.
async fn submit_claimed<S: Scheduler>(
    s: &S,
    slot: &str,
    spec: &JobSpec,
    mine: Entry,
    mine_bytes: Vec<u8>,
) -> Result<String, HostError> {
    let r = s.submit_once(spec).await;
    let update = match &r {
        Ok(id) => settle(slot, &mine, &mine_bytes, Some(id), false),
        Err(e) => settle(slot, &mine, &mine_bytes, None, refused(e)),
    };
    match (&r, s.ledger().store.swap_many(vec![update]).await) {
        (_, Ok(done)) if done == [true] => {}
        (Ok(id), Ok(_)) => tracing::warn!(
            plugin = %s.name(), job_id = %id,
            "the claim on this idempotency key was taken over while the submit ran"
        ),
        // The job exists and its id goes to the caller; the claim stays,
        // and the next submit with this key finds the job.
        (Ok(id), Err(e)) => tracing::warn!(
            plugin = %s.name(), job_id = %id,
            "cannot record the job of an idempotency key: {e}"
        ),
        (Err(_), Ok(_)) => {}
        (Err(_), Err(se)) => {
            tracing::warn!(plugin = %s.name(), "cannot update the submission ledger: {se}")
        }
    }
    r
}
